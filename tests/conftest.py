"""Fixtures shared by every test tier. Each harness module documents its fixtures."""

from tests.harness.fixtures import (  # noqa: F401 - fixtures and hooks are found by name
    cluster,
    namespace,
    pytest_collection_finish,
    pytest_collection_modifyitems,
)
