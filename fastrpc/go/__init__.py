"""Go's net/rpc wire formats: gob (its default), jsonrpc and HTTP CONNECT, so
stock Go programs and Python services call each other.

    _gob        encoding/gob's bytes (compiled, pure-Python mode)
    types       which Go type a Python value travels as, and back
    gobcodec    net/rpc's gob codec (request/response headers and bodies)
    jsonrpc     net/rpc/jsonrpc's codec
    calltable   Go's codecs behind fastrpc's call-table interface (the client side)
    client      calling Go servers: GoClient, AsyncGoClient
    server      serving Go clients, HTTP CONNECT and /debug/rpc
"""
from fastrpc._core import require_compiled
from fastrpc.go import _gob

require_compiled(_gob)

from fastrpc.go.client import AsyncGoClient, GoClient  # noqa: E402
from fastrpc.go.types import GoArray, GoFloat, GoInt, GoUint  # noqa: E402

__all__ = ["AsyncGoClient", "GoArray", "GoClient", "GoFloat", "GoInt", "GoUint"]
