"""fastrpc: fast RPC in the style of Go's net/rpc, with client-side load balancing.

    server = fastrpc.Server(); server.register(Arith()); addr = server.start()
    with fastrpc.Client(addr) as c: c.call("Arith.Sum", 1, 2)
    with fastrpc.Balancer([addr1, addr2], strategy="p2c") as b: b.call("Arith.Sum", 1, 2)
"""
# The compiled modules are required: importing them fails loudly when the
# extensions were not built. There is no silent pure-Python fallback.
from fastrpc import _calls, _codec, _select, _serve, _wire  # noqa: F401
from fastrpc._codec import ExtType, packb, unpackb
from fastrpc.async_balancer import AsyncBalancer
from fastrpc.async_client import AsyncClient
from fastrpc.balancer import Balancer, RetryBudget
from fastrpc.client import CallFuture, Client
from fastrpc.context import CallContext, current_call
from fastrpc.discovery import Discovery, FileDiscovery, Registration, StaticDiscovery
from fastrpc.etcd import EtcdDiscovery
from fastrpc.goclient import GoClient
from fastrpc.gotypes import GoArray, GoFloat, GoInt, GoUint
from fastrpc.endpoint import Endpoint
from fastrpc.errors import (ConnectionError, RemoteError, RPCError, TimeoutError)
from fastrpc.registry import blocking
from fastrpc.server import Server
from fastrpc.strategies import STRATEGIES, Strategy

#: Which implementation of the hot paths is active; always "cython" here.
backend = "cython"

__version__ = "0.1.0"

__all__ = [
    "AsyncBalancer",
    "AsyncClient",
    "Balancer",
    "CallContext",
    "CallFuture",
    "Client",
    "ConnectionError",
    "Discovery",
    "Endpoint",
    "EtcdDiscovery",
    "ExtType",
    "FileDiscovery",
    "GoArray",
    "GoClient",
    "GoFloat",
    "GoInt",
    "GoUint",
    "RPCError",
    "Registration",
    "RemoteError",
    "RetryBudget",
    "STRATEGIES",
    "Server",
    "StaticDiscovery",
    "Strategy",
    "TimeoutError",
    "backend",
    "blocking",
    "current_call",
    "packb",
    "unpackb",
]
