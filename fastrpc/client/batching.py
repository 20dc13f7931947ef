"""The map() loop without I/O, driven by the blocking and the asyncio client.

Owns: how a map keeps at most `window` calls in flight on one connection,
refills the window when half of it has been answered, and what happens to
its items when the connection fails or the deadline passes. The drivers
(fastrpc.client.sync, fastrpc.client.aio) do the waiting: for each value the
generator yields they wait until the batch is ready() or the deadline passes.
"""
from __future__ import annotations

from typing import Any, Iterator, Optional, Sequence

from fastrpc._core.calltable import Batch
from fastrpc.errors import ConnectionClosedError, TimeoutError

__all__ = ["map_steps", "give_up"]


def map_steps(conn: Any, batch: Batch, method: str, items: Sequence[Any], window: int,
              deadline_ms: Optional[int], meta: Optional[bytes]) -> Iterator[None]:
    """Send `items` as calls of `method` on `conn`; yield whenever the caller
    must wait for replies. Ends when every item has its answer, or when the
    connection failed (the items it never sent then fail with its error)."""
    n = len(items)
    window = max(1, window)
    step = max(1, window // 2)
    source = iter(items)
    while not batch.done:
        if batch.issued < n and batch.in_flight < window:
            try:
                conn.submit_batch(method, batch, source, window - batch.in_flight, deadline_ms, meta)
            except ConnectionClosedError:
                pass                                # the connection failed: below
            conn.flush()
        if conn.error is not None:
            batch.fail_unsent(conn.error)           # the sent ones failed with the connection
            return
        batch.wake_below = window - step + 1 if batch.issued < n else 1
        yield


def give_up(conn: Any, batch: Batch, method: str) -> None:
    """The map's deadline passed: withdraw what is in flight (the server
    cancels it) and fail every item without an answer with TimeoutError."""
    for seq in batch.sent_positions():
        conn.withdraw(seq)
    error = TimeoutError(f"map({method}) did not complete in time")
    batch.fail_sent(error)
    batch.fail_unsent(error)
