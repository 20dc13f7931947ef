"""The stall watchdog: names a plain handler that holds the event loop too long.

A plain (inline) handler runs on the server's event loop, so while it
sleeps, waits on I/O or calls another server with a blocking client, every
other call of every connection waits. The loop stamps a time every quarter
of the threshold; a watchdog thread that finds the stamp older than the
threshold looks at what the loop's thread is running and, if it is a
registered plain handler, logs it once per method with the fix. Nothing is
added to the call path.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import sys
import threading
import time
from types import CodeType, FrameType
from typing import Any, Dict, Optional, Set

from fastrpc._core.servercore import MODE_INLINE

__all__ = ["StallWatchdog"]

log = logging.getLogger("fastrpc.server")


class StallWatchdog:
    """Watches `loop` for plain handlers of `dispatcher` that run longer than `threshold` seconds."""

    def __init__(self, loop: asyncio.AbstractEventLoop, dispatcher: Any, threshold: float) -> None:
        self.loop = loop
        self.dispatcher = dispatcher
        self.threshold = threshold
        self.period = threshold / 4
        self.stamp = time.monotonic()
        self.loop_thread: Optional[int] = None
        self.reported: Set[str] = set()
        self._codes: Dict[CodeType, str] = {}
        self._known = -1                            # handlers the code map was built from
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="fastrpc-stall-watchdog", daemon=True)

    def start(self) -> None:
        """Begin stamping on the loop (call from its thread) and watching."""
        self.loop_thread = threading.get_ident()
        self._tick()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _tick(self) -> None:
        self.stamp = time.monotonic()
        if not self._stop.is_set():
            self.loop.call_later(self.period, self._tick)

    def _watch(self) -> None:
        while not self._stop.wait(self.period):
            stalled = time.monotonic() - self.stamp
            if stalled < self.threshold or self.loop_thread is None:
                continue
            frame = sys._current_frames().get(self.loop_thread)
            name = self._handler_in(frame)
            if name is not None and name not in self.reported:
                self.reported.add(name)
                log.warning("%s has held the server's event loop for %.2fs so far: every other call waited. "
                            "Make it `async def`, or mark it @fastrpc.blocking to run in the thread pool "
                            "(a plain handler runs on the event loop)", name, stalled)

    def _handler_in(self, frame: Optional[FrameType]) -> Optional[str]:
        """The plain handler whose code `frame` (or a caller of it) runs, if any."""
        if len(self.dispatcher.handlers) != self._known:
            handlers = list(self.dispatcher.handlers.values())
            codes = {}
            for h in handlers:
                if h.mode != MODE_INLINE:
                    continue
                func = inspect.unwrap(getattr(h.func, "__func__", h.func))
                code = getattr(func, "__code__", None)
                if code is not None:
                    codes[code] = h.name
            self._codes, self._known = codes, len(handlers)
        while frame is not None:
            name = self._codes.get(frame.f_code)
            if name is not None:
                return name
            frame = frame.f_back
        return None
