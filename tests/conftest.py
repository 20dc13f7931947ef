import os

import pytest

import fastrpc
from support import server_process

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_configure(config):
    # Test what ships: the installed package with its compiled backend, not
    # the source tree (which has no built extensions).
    if not os.environ.get("FASTRPC_TEST_INPLACE"):
        location = os.path.dirname(os.path.abspath(fastrpc.__file__))
        if location == os.path.join(REPO, "fastrpc"):
            raise pytest.UsageError("tests must import the installed fastrpc, not the source tree "
                                    "(run pytest from the repository root with `pytest`, not `python -m pytest`)")


@pytest.fixture(scope="module")
def server():
    """A tests/serve.py server process shared by a module's tests."""
    with server_process() as proc:
        yield proc


@pytest.fixture
def fresh_server():
    """A server process of the test's own (for tests that kill or stop it)."""
    with server_process() as proc:
        yield proc
