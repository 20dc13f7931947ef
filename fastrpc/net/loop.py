"""Event loop helpers: selection (uvloop when installed, the `uvloop` extra;
plain asyncio otherwise), bytes a protocol receives before it takes over a
connection, and compiled coroutine functions as methods."""
from __future__ import annotations

import asyncio
import functools
import sys

from types import ModuleType
from typing import Any, Callable, Optional, TypeVar, cast

_uvloop: Optional[ModuleType]
try:  # optional dependency
    import uvloop as _uvloop
except ImportError:  # pragma: no cover - depends on the environment
    _uvloop = None

__all__ = ["new_event_loop", "feed_buffered", "coroutine_method"]

F = TypeVar("F", bound=Callable[..., Any])


def new_event_loop(use_uvloop: bool | None = None) -> asyncio.AbstractEventLoop:
    """A new event loop: uvloop's when available (or asked for), asyncio's otherwise."""
    if use_uvloop is None:
        use_uvloop = _uvloop is not None
    if use_uvloop:
        if _uvloop is None:
            raise RuntimeError("use_uvloop=True but uvloop is not installed (pip install fastrpc[uvloop])")
        loop: asyncio.AbstractEventLoop = _uvloop.new_event_loop()
        return loop
    return asyncio.new_event_loop()


def feed_buffered(protocol: asyncio.BufferedProtocol, transport: asyncio.BaseTransport, data: bytes) -> None:
    """Hand `data` to `protocol` as if `transport` had just received it: bytes
    that arrived before the protocol took over the connection (after a
    handshake). Stops if the protocol closes the transport meanwhile."""
    while data and not transport.is_closing():
        buf = memoryview(protocol.get_buffer(len(data)))
        n = min(len(buf), len(data))
        buf[:n] = data[:n]
        data = data[n:]
        protocol.buffer_updated(n)


def coroutine_method(compiled: F) -> F:
    """`compiled`, an ``async def`` compiled by Cython, to be placed in a class
    body as a method. Python 3.9's inspect.iscoroutinefunction() recognises
    only Python functions: there it is wrapped in one (a Python frame per
    call on 3.9 only), so code that asks still learns it is a coroutine
    function."""
    if sys.version_info >= (3, 10):
        return compiled

    @functools.wraps(compiled)
    async def method(*args: Any, **kwargs: Any) -> Any:
        return await compiled(*args, **kwargs)

    return cast(F, method)
