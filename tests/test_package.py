"""The installed package: compiled backend, public API, typing marker."""
import importlib
import os

import fastrpc


def test_compiled_backend_is_active():
    assert fastrpc.backend == "cython"
    for name in ("_codec", "_wire", "_calls", "_serve", "_select"):
        module = importlib.import_module(f"fastrpc.{name}")
        assert module.__file__.endswith((".so", ".pyd")), module.__file__


def test_public_api_is_exact():
    for name in fastrpc.__all__:
        assert hasattr(fastrpc, name), name
    for name in ("Server", "Client", "AsyncClient", "RemoteError", "blocking"):
        assert name in fastrpc.__all__


def test_public_callables_have_docstrings():
    for name in fastrpc.__all__:
        obj = getattr(fastrpc, name)
        if callable(obj):
            assert obj.__doc__, name
    for cls in (fastrpc.Server, fastrpc.Client, fastrpc.AsyncClient, fastrpc.Balancer,
                fastrpc.AsyncBalancer, fastrpc.Endpoint, fastrpc.Strategy, fastrpc.Discovery,
                fastrpc.StaticDiscovery, fastrpc.FileDiscovery, fastrpc.Registration, fastrpc.EtcdDiscovery):
        for attr in dir(cls):
            if not attr.startswith("_") and callable(getattr(cls, attr)):
                assert getattr(cls, attr).__doc__, f"{cls.__name__}.{attr}"


def test_ships_py_typed():
    assert os.path.exists(os.path.join(os.path.dirname(fastrpc.__file__), "py.typed"))


def test_remote_error_is_picklable():
    import pickle
    err = pickle.loads(pickle.dumps(fastrpc.RemoteError("ValueError", "x")))
    assert (err.type, err.message) == ("ValueError", "x")
