"""``fastrpc bench``: load a server and report calls/s and latency percentiles.

Closed loop (``--concurrency N``): N calls in flight at all times, each
completion issuing the next, spread over ``--connections`` clients. Open
loop (``--rate R``): calls are issued on a fixed schedule of R per second
whatever the server does, and each latency is measured from the call's
*intended* send time, so a server that stalls is charged for every call the
stall delayed (no coordinated omission).
"""
from __future__ import annotations

import collections
import threading
import time
from typing import Any, Callable, Deque, Dict, List, Sequence

from fastrpc.cli.output import Progress, percentiles

__all__ = ["closed_loop", "open_loop"]

# The most calls an open-loop run keeps in flight before it counts further
# ones as failed (a server that stopped answering must not exhaust memory).
MAX_OUTSTANDING = 100_000


class Recorder:
    """Latencies and errors of finished calls (done callbacks may run on any thread)."""

    def __init__(self) -> None:
        self.latencies: List[float] = []
        self.errors: Dict[str, int] = collections.Counter()
        self.lock = threading.Lock()

    def done_after(self, started: float) -> Callable[[Any], None]:
        latencies, errors = self.latencies, self.errors

        def done(fut: Any) -> None:
            elapsed = time.perf_counter() - started
            exc = fut.exception()
            if exc is None:
                latencies.append(elapsed)           # list.append is atomic under the GIL
            else:
                with self.lock:
                    errors[type(exc).__name__] += 1
        return done

    @property
    def calls(self) -> int:
        return len(self.latencies) + sum(self.errors.values())


def report(recorder: Recorder, elapsed: float, extra: Dict[str, Any]) -> Dict[str, Any]:
    """The run's figures: calls, calls/s, errors, latency percentiles in milliseconds."""
    pct = percentiles(recorder.latencies)
    return {"calls": recorder.calls, "seconds": round(elapsed, 3),
            "calls_per_second": round(recorder.calls / elapsed, 1) if elapsed > 0 else 0.0,
            "errors": dict(recorder.errors),
            "latency_ms": {k: round(v * 1000, 3) for k, v in pct.items()}, **extra}


def closed_loop(callers: Sequence[Any], method: str, args: Sequence[Any], concurrency: int,
                duration: float, progress: Progress) -> Dict[str, Any]:
    """`concurrency` calls in flight over `callers` for `duration` seconds."""
    recorder = Recorder()
    windows: List[Deque[Any]] = [collections.deque() for _ in callers]
    per = [concurrency // len(callers) + (1 if i < concurrency % len(callers) else 0) for i in range(len(callers))]
    start = time.perf_counter()
    end = start + duration
    next_tick = start
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        for caller, window, size in zip(callers, windows, per):
            while len(window) < size:
                t = time.perf_counter()
                fut = caller.go(method, *args)
                fut.add_done_callback(recorder.done_after(t))
                window.append(fut)
            window.popleft().exception()            # wait for the oldest: the window slides
        if now >= next_tick:
            progress.update(now - start, recorder.calls)
            next_tick = now + 0.1
    for window in windows:
        for fut in window:
            fut.exception()
    elapsed = time.perf_counter() - start
    progress.done()
    return report(recorder, elapsed, {"mode": "closed", "concurrency": concurrency})


def open_loop(callers: Sequence[Any], method: str, args: Sequence[Any], rate: float,
              duration: float, progress: Progress) -> Dict[str, Any]:
    """Calls issued at `rate` per second for `duration` seconds, round robin over
    `callers`; latency from each call's intended send time."""
    recorder = Recorder()
    interval = 1.0 / rate
    start = time.perf_counter()
    planned = int(duration * rate)
    sent = 0
    outstanding: Deque[Any] = collections.deque()
    next_tick = start
    while sent < planned:
        now = time.perf_counter()
        due = min(planned, int((now - start) / interval) + 1)
        while sent < due:
            intended = start + sent * interval
            while outstanding and outstanding[0].done():
                outstanding.popleft()
            if len(outstanding) >= MAX_OUTSTANDING:
                recorder.errors["Overloaded"] += 1
            else:
                caller = callers[sent % len(callers)]
                fut = caller.go(method, *args)
                fut.add_done_callback(recorder.done_after(intended))
                outstanding.append(fut)
                # Nobody waits on these futures: write each call now, at its time,
                # instead of in the batches a waiting caller would flush.
                connection = getattr(caller, "connection", None)
                if connection is not None:
                    connection().flush()
            sent += 1
        if now >= next_tick:
            progress.update(now - start, recorder.calls)
            next_tick = now + 0.1
        pause = start + sent * interval - time.perf_counter()
        if pause > 0:
            # Wait for replies until the next send is due: a thread waiting on
            # a call reads the connection itself, so replies are taken in at once.
            while outstanding and outstanding[0].done():
                outstanding.popleft()
            if outstanding:
                try:
                    outstanding[0].exception(timeout=min(pause, 0.01))
                except TimeoutError:
                    pass
            else:
                time.sleep(min(pause, 0.01))
    for fut in outstanding:
        fut.exception()
    elapsed = time.perf_counter() - start
    progress.done()
    return report(recorder, elapsed, {"mode": "open", "rate": rate})
