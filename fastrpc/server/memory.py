"""Giving memory back to the system after a crowd of connections has left.

Each connection's buffers and objects are freed as it closes, but glibc's
allocator keeps the freed memory for reuse, so a server's RSS would stay at
its flood-time peak. After most of a large crowd has gone, the server asks
the allocator (malloc_trim) to return what it no longer uses. Elsewhere
(musl, macOS) there is no such call and nothing is done.
"""
from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from typing import Any, Optional

log = logging.getLogger("fastrpc.server")

# A trim is considered once this many connections were open at a time...
TRIM_AFTER = 256
# ... and done this long after most of them closed (one trim per wave).
TRIM_DELAY = 1.0

_malloc_trim: Any = None        # None: not looked up yet; False: not available
_scheduled = False


def _lookup() -> Any:
    global _malloc_trim
    if _malloc_trim is None:
        _malloc_trim = False
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
            _malloc_trim = getattr(libc, "malloc_trim", False)
        except OSError:
            pass
    return _malloc_trim


def trim_memory() -> bool:
    """Return freed heap memory to the system now; whether the allocator could."""
    trim = _lookup()
    if not trim:
        return False
    trim(0)
    return True


def trim_memory_soon(loop: Optional[asyncio.AbstractEventLoop] = None) -> None:
    """Trim after TRIM_DELAY on the running loop (several requests make one trim)."""
    global _scheduled
    if _scheduled or not _lookup():
        return
    try:
        loop = loop or asyncio.get_running_loop()
    except RuntimeError:
        return

    def run() -> None:
        global _scheduled
        _scheduled = False
        trim_memory()
        log.debug("returned freed memory to the system after connections closed")

    _scheduled = True
    loop.call_later(TRIM_DELAY, run)
