"""Test harness: local Kubernetes control plane, test node agent, Triton server."""
