"""batchpredict: batch predictions through NVIDIA Triton, run as Kubernetes Indexed Jobs."""

__version__ = "0.1.0"
