"""The installed package: compiled backend, public API, typing marker."""
import importlib
import os

import fastrpc


COMPILED = ["fastrpc._core.buffer", "fastrpc._core.codec", "fastrpc._core.frame", "fastrpc._core.calltable",
            "fastrpc._core.servercore", "fastrpc._core.select", "fastrpc.go._gob"]


def test_compiled_backend_is_active():
    assert fastrpc.backend == "cython"
    for name in COMPILED:
        module = importlib.import_module(name)
        assert module.__file__.endswith((".so", ".pyd")), module.__file__


def test_an_uncompiled_core_refuses_to_load():
    """require_compiled() is what makes fastrpc.backend true: a core module
    loaded from its .py source (no extension built) stops the import."""
    import pytest
    from fastrpc._core import require_compiled
    from support import load_reference
    reference = load_reference(importlib.import_module("fastrpc._core.select"))
    with pytest.raises(ImportError, match="is not compiled"):
        require_compiled(reference)


def test_star_import_does_not_shadow_builtins():
    namespace = {}
    exec("from fastrpc import *", namespace)
    assert "TimeoutError" not in namespace and "ConnectionError" not in namespace
    assert issubclass(fastrpc.TimeoutError, TimeoutError)
    assert issubclass(fastrpc.ConnectionError, ConnectionError)


def test_every_exception_is_an_rpc_error():
    import inspect
    import fastrpc.errors
    for name, obj in vars(fastrpc.errors).items():
        if inspect.isclass(obj) and issubclass(obj, BaseException):
            assert issubclass(obj, fastrpc.RPCError), name
    from fastrpc.discovery.etcd import EtcdError
    from fastrpc.go._gob import GobError
    assert issubclass(EtcdError, fastrpc.RPCError) and issubclass(GobError, fastrpc.RPCError)


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


def test_ships_py_typed_and_the_stubs_of_the_compiled_modules():
    root = os.path.dirname(fastrpc.__file__)
    assert os.path.exists(os.path.join(root, "py.typed"))
    for module in ("_core/balance", "_core/buffer", "_core/calltable", "_core/codec", "_core/frame",
                   "_core/select", "_core/servercore", "go/_gob"):
        assert os.path.exists(os.path.join(root, module + ".pyi")), module


def test_remote_error_is_picklable():
    import pickle
    err = pickle.loads(pickle.dumps(fastrpc.RemoteError("ValueError", "x")))
    assert (err.type, err.message) == ("ValueError", "x")
