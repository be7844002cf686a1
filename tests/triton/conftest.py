"""The triton tier: the worker against a real tritonserver (tests/harness/triton_server.py)."""

from tests.harness.triton_server import triton_server  # noqa: F401 - fixture found by name
