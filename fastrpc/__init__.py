"""fastrpc: fast RPC in the style of Go's net/rpc, with client-side load balancing.

    server = fastrpc.Server(); server.register(Arith()); addr = server.start()
    with fastrpc.Client(addr) as c: c.call("Arith.Sum", 1, 2)
    with fastrpc.Balancer([addr1, addr2], strategy="p2c") as b: b.call("Arith.Sum", 1, 2)
"""
# The compiled core is required: fastrpc._core refuses to import when its
# extensions were not built. There is no silent pure-Python fallback.
from fastrpc._core.codec import ExtType, packb, unpackb
from fastrpc.balancer import STRATEGIES, AsyncBalancer, Balancer, RetryBudget, Strategy
from fastrpc.balancer.subset import Aperture
from fastrpc.client import AsyncClient, CallFuture, Client
from fastrpc.client.stream import AsyncStream, Stream
from fastrpc.context import CallContext, current_call
from fastrpc.discovery import (Discovery, EtcdDiscovery, FileDiscovery, Registration,
                               StaticDiscovery)
from fastrpc._core.calltable import Arguments
from fastrpc.errors import ConnectionError, RemoteError, RPCError, TimeoutError, register_error
from fastrpc.extensions import register_type
from fastrpc.go import AsyncGoClient, GoArray, GoClient, GoFloat, GoInt, GoUint
from fastrpc.interceptors import ClientCall, ServerCall
from fastrpc.observability.histogram import LATENCY_BUCKETS
from fastrpc.net.endpoint import Endpoint
from fastrpc.server import Server, blocking

#: The implementation of the hot paths. fastrpc._core (and fastrpc.go) refuse
#: to import unless every one of its modules is a compiled extension, so
#: this is true whenever the import succeeds.
backend = "cython"

__version__ = "0.1.0"

# ConnectionError and TimeoutError subclass the builtins of the same names;
# they are attributes (fastrpc.TimeoutError) but not in __all__, so that
# `from fastrpc import *` does not shadow the builtins.
__all__ = [
    "Aperture",
    "Arguments",
    "AsyncBalancer",
    "AsyncClient",
    "AsyncGoClient",
    "AsyncStream",
    "Balancer",
    "CallContext",
    "CallFuture",
    "Client",
    "ClientCall",
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
    "LATENCY_BUCKETS",
    "RPCError",
    "Registration",
    "RemoteError",
    "RetryBudget",
    "STRATEGIES",
    "Server",
    "ServerCall",
    "StaticDiscovery",
    "Stream",
    "Strategy",
    "backend",
    "blocking",
    "current_call",
    "packb",
    "register_error",
    "register_type",
    "unpackb",
]
