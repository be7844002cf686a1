"""The triton tier: the worker against a real tritonserver (the session's `triton_server`
fixture from tests/harness/triton_server.py, registered in tests/conftest.py)."""
