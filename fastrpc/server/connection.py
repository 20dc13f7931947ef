"""What every server-side connection shares, whatever protocol it speaks:
the calls it runs, backpressure, batched output, and its part in closing.

Server's graceful close and idle sweep rely on these attributes and
methods (tasks, transport, last_read, idle_goaway_at, closing, goaway,
_flush), so fastrpc and Go connections are drained alike.
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional

if TYPE_CHECKING:
    from fastrpc.server.server import Server

__all__ = ["ServedConnection"]


class ServedConnection:
    """Base of the server's connection protocols.

    Subclasses give _take_output() (the replies encoded so far) and may
    override _hold() (told when reading pauses or resumes) and goaway().
    """

    def __init__(self, server: "Server") -> None:
        self.server = server
        self.transport: Optional[asyncio.Transport] = None
        self.tasks: Dict[Any, asyncio.Future] = {}     # calls running as tasks or in the pool
        self.closing = False
        self.peer = None
        self.last_read = 0.0        # loop time of the last bytes received (graceful close, idle)
        self.idle_goaway_at: Optional[float] = None   # when GOAWAY was sent for idleness
        self.flush_scheduled = False
        # Backpressure: reading pauses while too many calls run or the peer
        # does not read its replies; each reason is held separately.
        self.over_limit = False
        self.write_blocked = False
        self.reading_paused = False

    # hooks ----------------------------------------------------------------
    def _take_output(self) -> Optional[bytes]:
        raise NotImplementedError

    def _hold(self, paused: bool) -> None:
        """Reading pauses (True) or resumes (False); called before the transport is told."""

    def goaway(self, reason: str) -> None:
        """Tell the client to send new calls elsewhere (where the protocol can)."""

    # calls ------------------------------------------------------------------
    def _start_task(self, key: Any, fut: asyncio.Future, on_done: Callable[[asyncio.Future], None]) -> None:
        """Track a call now running as `fut`; past max_inflight, stop reading."""
        self.tasks[key] = fut
        self.server._load.value += 1
        fut.add_done_callback(on_done)
        if len(self.tasks) >= self.server.max_inflight and not self.over_limit:
            # Calls already read from the buffer still start; no more are read.
            self.over_limit = True
            self._update_reading()

    def _end_task(self, key: Any, fut: asyncio.Future) -> bool:
        """Forget a finished call; return whether it was still tracked under `key`."""
        tracked = self.tasks.get(key) is fut
        if tracked:
            del self.tasks[key]
        self.server._load.value -= 1
        return tracked

    def _calls_eased(self) -> None:
        """After a call's reply: resume reading at half the limit, report idleness."""
        if self.over_limit and len(self.tasks) <= self.server.max_inflight // 2:
            self.over_limit = False         # resume at half, not at every completion
            self._update_reading()
        if not self.tasks:
            self.server._connection_idle(self)

    # backpressure -------------------------------------------------------------
    def pause_writing(self) -> None:
        # The peer is not reading its replies: stop reading its requests, so
        # replies cannot pile up in memory without bound.
        self.write_blocked = True
        self._update_reading()

    def resume_writing(self) -> None:
        self.write_blocked = False
        self._update_reading()

    def _update_reading(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        paused = self.over_limit or self.write_blocked
        if paused == self.reading_paused:
            return
        self.reading_paused = paused
        self._hold(paused)
        if paused:
            transport.pause_reading()
        elif not self.reading_paused and not transport.is_closing():   # _hold may pause again
            transport.resume_reading()

    # output -------------------------------------------------------------------
    def _schedule_flush(self) -> None:
        # Replies completed in one loop pass go out in one write.
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.server._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self.flush_scheduled = False
        if not self.closing:
            self._write(self._take_output())

    def _write(self, data) -> None:
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    # closing ------------------------------------------------------------------
    def connection_lost(self, exc) -> None:
        self.closing = True
        self.server._connections.discard(self)
        for task in list(self.tasks.values()):
            task.cancel()   # nobody is left to receive their replies
        self.server._connection_idle(self)
