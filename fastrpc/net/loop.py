"""Event loop selection: uvloop when installed (the `uvloop` extra), plain
asyncio otherwise."""
from __future__ import annotations

import asyncio

from types import ModuleType
from typing import Optional

_uvloop: Optional[ModuleType]
try:  # optional dependency
    import uvloop as _uvloop
except ImportError:  # pragma: no cover - depends on the environment
    _uvloop = None

__all__ = ["new_event_loop", "feed_buffered"]


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
