"""Proxies (client.proxy("KV"), proxy(KVProtocol)) through every client kind,
and the typed settings staying equal to what the classes take."""
import asyncio
import inspect
from typing import Any, Dict, Protocol

import pytest

import fastrpc
from fastrpc.balancer.core import BalancerCore
from fastrpc.client.proxy import service_of
from fastrpc.errors import InvalidArgumentsError
from fastrpc.net.options import BalancerOptions, BalancingOptions, ClientOptions
from fastrpc.net.settings import ClientSettings
from support import server_process


class KVProtocol(Protocol):
    def Put(self, key: str, value: Any = None, *, ttl: int = 0) -> Dict[str, Any]: ...
    def Options(self, first: Any = None, **options: Any) -> Dict[str, Any]: ...


class AsyncKVProtocol(Protocol):
    __service__ = "KV"

    async def PutLater(self, key: str, value: Any = None, *, ttl: int = 0) -> Dict[str, Any]: ...


@pytest.fixture(scope="module")
def srv():
    with server_process() as server:
        yield server


def test_proxy_by_name_calls_the_service(srv):
    with fastrpc.Client(srv.address, timeout=10) as c:
        kv = c.proxy("KV")
        assert kv.Put("a", 1) == {"key": "a", "value": 1, "ttl": 0}
        assert kv.Put(key="b", ttl=2) == {"key": "b", "value": None, "ttl": 2}
        # Every keyword goes to the handler, even one named like a call option.
        assert kv.Options(timeout=3, key="k") == {"first": None, "options": {"timeout": 3, "key": "k"}}
        assert c.proxy("Arith").Sum(1, 2) == 3
        with pytest.raises(InvalidArgumentsError, match="unexpected keyword argument 'nope'"):
            kv.Put("a", nope=1)
        with pytest.raises(fastrpc.errors.MethodNotFoundError):
            kv.Missing()
        with pytest.raises(AttributeError):
            kv._private
        assert kv.Put is kv.Put                      # bound once
        assert "KV.Put" in repr(kv.Put) and "proxy of KV" in repr(kv)


def test_proxy_options_apply_to_every_call(srv):
    with fastrpc.Client(srv.address) as c:
        slow = c.proxy("Arith", timeout=0.05)
        with pytest.raises(fastrpc.TimeoutError):
            slow.Slow(1.0, "late")
        assert slow.with_options(timeout=5).Slow(0.01, "in time") == "in time"


def test_proxy_from_a_protocol_knows_its_methods(srv):
    assert service_of(KVProtocol) == "KV" and service_of(AsyncKVProtocol) == "KV"
    with fastrpc.Client(srv.address, timeout=10) as c:
        kv = c.proxy(KVProtocol)
        assert kv.Put("a", ttl=1) == {"key": "a", "value": None, "ttl": 1}
        with pytest.raises(AttributeError, match="KV declares no method 'Get' \\(it has: Options, Put\\)"):
            kv.Get("a")                               # type: ignore[attr-defined]
        assert {"Put", "Options"} <= set(dir(kv))
    with pytest.raises(TypeError, match="service name or a Protocol class"):
        fastrpc.Client(srv.address).proxy(3)          # type: ignore[call-overload]
    with pytest.raises(ValueError, match="invalid service name"):
        fastrpc.Client(srv.address).proxy("A.B")


def test_proxies_of_balancers_and_async_callers(srv):
    with fastrpc.Balancer([srv.address], strategy="consistent_hash", timeout=10, health_interval=0) as b:
        kv = b.proxy(KVProtocol, key="route")         # the balancer's key: every call routed by it
        assert kv.Put(key="k", value=1) == {"key": "k", "value": 1, "ttl": 0}

    async def run():
        async with fastrpc.AsyncClient(srv.address, timeout=10) as c:
            kv = c.proxy(AsyncKVProtocol)
            assert await kv.PutLater("a", ttl=2) == {"key": "a", "value": None, "ttl": 2}
        async with fastrpc.AsyncBalancer([srv.address], timeout=10, health_interval=0) as b:
            kv = b.proxy(AsyncKVProtocol)
            assert await kv.PutLater(key="b") == {"key": "b", "value": None, "ttl": 0}
    asyncio.run(run())


def keyword_parameters(function):
    return {name for name, p in inspect.signature(function).parameters.items()
            if p.kind is p.KEYWORD_ONLY}


def test_the_typed_settings_are_what_the_classes_take():
    assert set(ClientOptions.__annotations__) == keyword_parameters(ClientSettings.__init__) - {"codec", "http"}
    assert set(BalancingOptions.__annotations__) == keyword_parameters(BalancerCore._configure)
    assert set(BalancerOptions.__annotations__) == (set(ClientOptions.__annotations__)
                                                    | set(BalancingOptions.__annotations__) | {"codec"})


def test_endpoint_declares_its_attributes():
    hints = fastrpc.Endpoint.__annotations__
    assert set(hints) == set(fastrpc.Endpoint.__slots__)
