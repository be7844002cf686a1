"""Fixtures shared by every test tier. Each harness module documents its fixtures."""

from tests.harness.fixtures import (  # noqa: F401 - fixtures and hooks are found by name
    cluster,
    namespace,
    pytest_collection_finish,
    pytest_collection_modifyitems,
)

# One tritonserver per session, shared by the triton, e2e and chart tiers.
from tests.harness.triton_server import triton_server  # noqa: F401
