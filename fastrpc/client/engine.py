"""The blocking call engine: one per process, shared by every Client and Balancer.

Owns: the poll set over every blocking connection, who reads it, the one
helper thread, and timers (call deadlines, heartbeats, hedges, deferred
work). Calls themselves are compiled (fastrpc._core.calltable), and so is
who reads when a thread waits (fastrpc._core.leading, this engine's base
class: a blocking call waits through it every time).

There is no reader thread in the common path. A thread that waits for a call
becomes the *leader*: it polls every connection, reads whatever arrived and
completes every call it sees, so most replies reach their caller without a
thread hand-off. Other waiting threads are *followers*: each sleeps on its
own lock, released by whoever completes its call, or by a leader leaving, to
take its place. The helper thread reads only when calls are pending and
nobody else has read for a tick (futures nobody waits on, done callbacks);
a thread that wants to wait while the helper reads interrupts it and takes
over.

After os.fork() the child gets a fresh engine: its clients' inherited
connections belong to the parent, so they are abandoned (never written,
never shut down) and the next call dials anew.
"""
from __future__ import annotations

import concurrent.futures
import heapq
import itertools
import logging
import os
import select
import threading
import time
import weakref
from typing import Any, Callable, List, Optional

from fastrpc._core.calltable import close_inherited_tables, drain_callbacks
from fastrpc._core.leading import MAX_SLEEP, Leading

__all__ = ["Engine", "engine", "generation", "reset_after_fork"]

log = logging.getLogger("fastrpc.client")

# While calls are pending and nobody else reads, the helper starts reading
# after this long; it also bounds how late a go() timeout fires.
TICK = 0.002
# With no call pending the helper still looks at the connections this often,
# for frames of calls nobody waits on (fire-and-forget go()).
IDLE_TICK = 0.02


class _Poller:
    """epoll where there is one (Linux), poll elsewhere; timeouts in seconds."""

    def __init__(self) -> None:
        self._epoll = getattr(select, "epoll", None)
        if self._epoll is not None:
            self._p = self._epoll()
            self._mask = select.EPOLLIN
        else:
            self._p = select.poll()
            self._mask = select.POLLIN

    def register(self, fd: int) -> None:
        self._p.register(fd, self._mask)

    def unregister(self, fd: int) -> None:
        try:
            self._p.unregister(fd)
        except (OSError, KeyError, ValueError):
            pass

    def poll(self, timeout: Optional[float]) -> List[Any]:
        """poll(2), where there is no epoll (seconds, None: no timeout; the
        leader caps it at MAX_SLEEP). With epoll the leader calls epoll_wait(2)
        on epoll_fd() itself."""
        events: List[Any] = self._p.poll(None if timeout is None else max(0, int(timeout * 1000 + 0.999)))
        return events

    def epoll_fd(self) -> int:
        """The epoll descriptor the compiled leader waits on, or -1 where there is no epoll."""
        return self._p.fileno() if self._epoll is not None else -1

    def close(self) -> None:
        if self._epoll is not None:
            self._p.close()


class Engine(Leading):
    """The process's blocking call engine (see the module docstring). Who
    reads when a thread waits (wait(), read_now(), the leader and its
    followers) is compiled: fastrpc._core.leading.Leading."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.poller = _Poller()
        self.epoll_fd = self.poller.epoll_fd()   # the compiled leader waits on it directly
        self.leader = 0                          # its thread id, 0: nobody
        self._timers: List[Any] = []                  # heap of (when, n, fn)
        self._count = itertools.count()
        self._deadlines: List[Any] = []               # heap of (deadline, n, future) for go(timeout=)
        self._deadlines_kept = 0                 # its size after the last sweep of finished futures
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.poller.register(self.wake_r)
        self._helper: Optional[threading.Thread] = None
        self._helper_cond = threading.Condition(threading.Lock())
        self._helper_idle = False                # the helper sleeps longer than TICK
        self._helper_lock = threading.Lock()
        self._dialer: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self._stopped = False

    # connections -------------------------------------------------------------
    def register(self, conn: Any) -> None:
        """Start polling `conn` (a connection with fileno(), on_readable(), fail())."""
        fd = conn.fileno()
        self.conns[fd] = conn
        self.poller.register(fd)
        self._ensure_helper()
        self.need_reader()

    def unregister(self, conn: Any) -> None:
        """Stop polling `conn` (closed or failed)."""
        fd = conn.fd
        if self.conns.get(fd) is conn:
            del self.conns[fd]
            self.poller.unregister(fd)
        self.dirty.discard(conn)

    # the helper thread ----------------------------------------------------------
    def need_reader(self) -> None:
        """Someone needs calls completed without waiting for them (a done
        callback, concurrent.futures.wait()): make sure the helper is not in
        a long sleep (in a short one it looks within TICK anyway)."""
        if self._helper_idle:
            self._wake_helper()

    def _wake_helper(self) -> None:
        with self._helper_cond:
            self._helper_idle = False
            self._helper_cond.notify()

    def schedule(self, delay: float, fn: Callable[[], Any]) -> None:
        """Run fn() on the helper thread in `delay` seconds."""
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._count), fn))
        if self._helper is None:                # no connection yet started it
            self._ensure_helper()
        if self._helper_idle or delay < IDLE_TICK:
            self._wake_helper()

    def dial(self, fn: Callable[[], Any]) -> None:
        """Run fn() on a dial thread: work that may block for a connect timeout,
        which a thread that reads for others must not do."""
        with self._helper_lock:
            if self._dialer is None:
                self._dialer = concurrent.futures.ThreadPoolExecutor(max_workers=4,
                                                                     thread_name_prefix="fastrpc-dial")
            dialer = self._dialer
        dialer.submit(_logged, fn)

    def defer(self, fn: Callable[[], Any]) -> None:
        """Run fn() on the helper thread soon (work a reader must not block on, e.g. a dial)."""
        self.schedule(0.0, fn)

    def watch_deadline(self, future: Any) -> None:
        """Expire `future` at its deadline if nobody else does."""
        heap = self._deadlines
        heapq.heappush(heap, (future.deadline, next(self._count), future))
        kept = self._deadlines_kept
        if len(heap) - kept > max(1024, kept // 8):
            # Entries stay until their deadline, holding finished futures and
            # their results: drop the finished ones every 1,024 calls (or an
            # eighth of what the last sweep kept): at most that many finished
            # futures are held, whatever the process's other clients have
            # pending, for O(1) amortised work per call.
            heap[:] = [entry for entry in heap if not entry[2].done()]
            heapq.heapify(heap)
            self._deadlines_kept = len(heap)
        if self._helper is None:                # a call that is still dialing, say
            self._ensure_helper()
        if self._helper_idle:
            self.need_reader()

    def _pending_calls(self) -> int:
        return sum(len(conn.table.pending) for conn in list(self.conns.values()))

    def _ensure_helper(self) -> None:
        if self._helper is None:
            with self._helper_lock:
                if self._helper is None and not self._stopped:
                    self._helper = threading.Thread(target=self._helper_loop, name="fastrpc-engine",
                                                    daemon=True)
                    self._helper.start()

    def _helper_loop(self) -> None:
        seen = -1
        while not self._stopped:
            try:
                self._run_timers()
                pending = self._pending_calls()
                if pending and self.reads == seen and not self.lead_taken:
                    self._helper_read()
                seen = self.reads
                if self.dirty:
                    self.flush_dirty()            # frames of calls nobody waits on yet
                self._helper_sleep(pending)
            except Exception:                     # the helper must never die
                log.exception("fastrpc engine helper failed; continuing")
                time.sleep(TICK)

    def _helper_sleep(self, pending: int) -> None:
        now = time.monotonic()
        soonest = self._timers[0][0] if self._timers else None
        if self._deadlines and (soonest is None or self._deadlines[0][0] < soonest):
            soonest = self._deadlines[0][0]
        if pending or self.dirty:
            cap = TICK
        elif self.conns:
            cap = IDLE_TICK
        else:
            cap = MAX_SLEEP                       # nothing to watch: register() wakes us
        timeout = cap if soonest is None else min(cap, max(0.0, soonest - now))
        with self._helper_cond:
            self._helper_idle = timeout > TICK
            if timeout > 0:
                self._helper_cond.wait(timeout)
            self._helper_idle = False

    def _helper_read(self) -> None:
        """Read while calls are pending and no thread waits to lead."""
        if not self.take_lead():
            return
        self.leader = threading.get_ident()
        self.helper_leading = True
        try:
            while self._pending_calls() and not self.followers and not self._stopped:
                if self.dirty:
                    self.flush_dirty()
                timeout = 0.05
                if self._timers:
                    timeout = min(timeout, max(0.0, self._timers[0][0] - time.monotonic()))
                if self._deadlines:
                    timeout = min(timeout, max(0.0, self._deadlines[0][0] - time.monotonic()))
                self.poll_dispatch(timeout)
                self._run_timers()
        finally:
            self.helper_leading = False
            self.leader = 0
            self.give_lead()
            if self.followers:
                self.promote()

    def _run_timers(self) -> None:
        now = time.monotonic()
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, _, future = heapq.heappop(deadlines)
            if not future.done():
                future.expire()
        if not deadlines:
            pass
        elif not self._pending_calls():
            deadlines.clear()                     # every future in it has finished
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, fn = heapq.heappop(timers)
            try:
                fn()
            except Exception:
                log.exception("fastrpc engine timer %r failed", fn)
        drain_callbacks()

    # after fork -------------------------------------------------------------------
    def abandon(self) -> None:
        """In a forked child: this engine's connections and thread belong to the parent."""
        self._stopped = True
        for conn in list(self.conns.values()):
            conn.abandon()
        self.conns.clear()
        for fd in (self.wake_r, self.wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self.poller.close()


def _logged(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except Exception:
        log.exception("fastrpc engine task %r failed", fn)


_engine: Optional[Engine] = None
_engine_lock = threading.Lock()
#: Bumped in a forked child: connections made before compare it to know they are the parent's.
generation = 0


def engine() -> Engine:
    """This process's engine (made on first use, and anew after a fork)."""
    global _engine
    current = _engine
    if current is not None:
        return current
    with _engine_lock:
        if _engine is None:
            _engine = Engine()
        return _engine


_forked: "weakref.WeakSet[Any]" = weakref.WeakSet()


def reset_after_fork(obj: Any) -> None:
    """Have obj.reset_after_fork() called in a forked child (held weakly):
    for objects with threads of their own, such as a balancer's health checks."""
    _forked.add(obj)


def _after_fork_in_child() -> None:
    global _engine, _engine_lock, generation
    generation += 1
    _engine_lock = threading.Lock()
    old, _engine = _engine, None
    if old is not None:
        old.abandon()
    close_inherited_tables()
    for obj in list(_forked):
        try:
            obj.reset_after_fork()
        except Exception:
            log.exception("fastrpc: resetting %r after fork failed", obj)

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
