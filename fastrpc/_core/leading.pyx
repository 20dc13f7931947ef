# cython: language_level=3
"""Who reads a blocking engine's connections: the leader/follower protocol of
fastrpc.client.engine, compiled because every blocking call that waits runs
through it (a sequential Client.call waits once per call).

Leading is the base class of the engine: it owns the lead lock, the
followers, the poll set's poll function and the connections, and the
methods a waiting thread runs. The rest of the engine (the helper thread,
timers, dialing, fork handling) stays in Python. The protocol itself is
described in the engine's module docstring.
"""
import os
import threading

from cpython.pythread cimport PyThread_get_thread_ident

from fastrpc._core.calltable cimport drain_callbacks, frpc_monotonic
from fastrpc._core.transport cimport ConnectionIO

#: The longest single sleep in poll() or on a lock: a longer timeout (any
#: finite one works) is waited out in slices, as the OS limits each.
MAX_SLEEP = 3600.0
cdef double _MAX_SLEEP = MAX_SLEEP


cdef class LeaderToken:
    """What a leader registers as its slot's waiter: released by another
    thread, it interrupts the leader's poll (by the leader itself: nothing)."""

    def release(self):
        if PyThread_get_thread_ident() != self.thread:
            self.engine.interrupt()


cdef class Leading:
    """The reading half of a blocking call engine (fastrpc.client.engine.Engine)."""

    def __cinit__(self):
        self.followers = []
        self.dirty = set()
        self.conns = {}
        self._local = threading.local()
        self.wake_r = -1
        self.wake_w = -1

    # connections -------------------------------------------------------------------
    def output_waiting(self, conn):
        """`conn` has frames buffered that nobody flushed yet.

        Nobody is woken for it: a thread that waits for its call writes it
        first, enough frames are written at once, and the helper writes the
        rest within a tick (IDLE_TICK when it had nothing to do).
        """
        self.dirty.add(conn)

    def flush_dirty(self):
        """Write every connection's buffered frames."""
        self._flush_dirty()

    cdef _flush_dirty(self):
        cdef set dirty = self.dirty
        while dirty:
            try:
                conn = dirty.pop()
            except KeyError:
                return
            _flush(conn)

    # waiting -------------------------------------------------------------------------
    cdef object _thread_lock(self):
        lock = getattr(self._local, "lock", None)
        if lock is None:
            lock = self._local.lock = threading.Lock()
            lock.acquire()
        return lock

    def wait(self, slot, deadline):
        """Return once `slot` is ready or monotonic `deadline` (None: none)
        passes, reading as the leader or sleeping as a follower."""
        cdef unsigned long me = PyThread_get_thread_ident()
        conn = slot.unwritten()
        if conn is not None:
            _flush(conn)                          # our request first
        # (Other buffered frames go out when enough wait, or on the helper's
        # next tick: writing every connection at every wait would cost a
        # system call, and a wake-up of its server, each.)
        if self.leader == me:
            self._lead(slot, deadline)            # a callback of ours waits: read on
            return
        lock = None
        lead = self.lead
        while not slot.is_ready:
            if lead.acquire(False):
                self.leader = me
                try:
                    self._lead(slot, deadline)
                finally:
                    self.leader = 0
                    lead.release()
                    if self.followers:
                        self._promote()
            else:
                if lock is None:
                    lock = self._thread_lock()
                self._follow(slot, deadline, lock)
            if deadline is not None and frpc_monotonic() >= deadline:
                return

    cdef _follow(self, slot, deadline, lock):
        cdef double timeout
        if not slot.set_waiter(lock):
            return                                # ready meanwhile
        self.followers.append(slot)
        try:
            # A leader leaving checks followers after releasing `lead`; we
            # check `lead` after registering: one of us sees the other.
            if self.lead.locked() and not slot.is_ready:
                if self.helper_leading:
                    self.interrupt()              # the helper yields to a waiting thread
                if deadline is None:
                    timeout = -1.0
                else:
                    timeout = min(_MAX_SLEEP, max(0.0, <double>deadline - frpc_monotonic()))
                if lock.acquire(True, timeout):
                    return                        # released: our slot is ready, or we lead next
            if slot.take_waiter() is None:
                lock.acquire()                    # it is being released right now: consume that
        finally:
            try:
                self.followers.remove(slot)
            except ValueError:
                pass

    def read_now(self, conn):
        """Read `conn` at once unless another thread is reading (it sees the bytes
        too). Taking the lead for this read, this thread also hands it on: a
        follower that began waiting meanwhile must not sleep with nobody
        reading."""
        cdef unsigned long me = PyThread_get_thread_ident()
        if self.leader == me:
            _read(conn)                           # we read for everyone already
            return
        if not self.lead.acquire(False):
            return
        self.leader = me
        try:
            _read(conn)
        finally:
            self.leader = 0
            self.lead.release()
            if self.followers:
                self._promote()
        drain_callbacks()

    def let_waiters_in(self):
        """A thread busy with work of its own (a stream's consumer handing out
        items) gives the CPU away for a moment if another thread waits for a
        call: that thread needs the GIL to take its reply, and a thread that
        only releases the GIL for an instant would keep it."""
        cdef unsigned long leader = self.leader
        if self.followers or (leader != 0 and leader != PyThread_get_thread_ident()):
            os.sched_yield()

    def promote(self):
        """Wake one follower to take the lead."""
        self._promote()

    cdef _promote(self):
        for slot in list(self.followers):
            lock = slot.take_waiter()
            if lock is not None:
                lock.release()
                return

    cdef _lead(self, slot, deadline):
        """Read every connection until `slot` is ready or `deadline` passes.

        Another thread may complete `slot` (a dial that failed, a timer, a
        cancel): the token it then releases interrupts our poll.
        """
        cdef LeaderToken token = LeaderToken.__new__(LeaderToken)
        token.engine = self
        token.thread = PyThread_get_thread_ident()
        if not slot.set_waiter(token):
            return
        try:
            self._read_until(slot, deadline)
        finally:
            slot.take_waiter()

    cdef _read_until(self, slot, deadline):
        cdef double timeout
        while not slot.is_ready:
            events = self._poll(0.0) if self.dirty else None
            if not events:
                # About to block: now write what every connection holds
                # back. Batches grow while this thread is busy (fewer system
                # calls, fewer wake-ups of the servers) and go out as soon as
                # it would otherwise sit idle.
                if self.dirty:
                    self._flush_dirty()
                if deadline is None:
                    events = self._poll(None)
                else:
                    timeout = <double>deadline - frpc_monotonic()
                    if timeout <= 0.0:
                        return
                    events = self._poll(timeout)
            self._dispatch(events)

    def poll(self, timeout):
        """The ready (fd, events) of the poll set, waiting up to `timeout`
        seconds (None: until one is; at most MAX_SLEEP at a time)."""
        return self._poll(timeout)

    cdef _poll(self, timeout):
        if timeout is not None and timeout > _MAX_SLEEP:
            timeout = _MAX_SLEEP
        if self.epoll_poll is None:
            return self.poller.poll(timeout)
        return self.epoll_poll(-1 if timeout is None else timeout)

    def dispatch(self, events):
        """Read the connections `events` name (draining interrupts), then run
        the done callbacks of the calls that finished."""
        self._dispatch(events)

    cdef _dispatch(self, events):
        cdef dict conns = self.conns
        for fd, _ in events:
            conn = conns.get(fd)
            if conn is not None:
                _read(conn)
            elif fd == self.wake_r:
                self._drain_wakeup()
        self.reads += 1
        drain_callbacks()

    def interrupt(self):
        """Make a poll in progress return: the helper yields to a waiting
        thread, or another thread completed the leader's own call."""
        try:
            os.write(self.wake_w, b"x")
        except OSError:
            pass                                  # the pipe is full: a wake-up is pending anyway

    cdef _drain_wakeup(self):
        try:
            while os.read(self.wake_r, 512):
                pass
        except OSError:
            pass


cdef inline int _flush(conn) except -1:
    """conn.flush(), without a Python call for a ConnectionIO."""
    if isinstance(conn, ConnectionIO):
        return (<ConnectionIO>conn)._flush()
    conn.flush()
    return 0


cdef inline int _read(conn) except -1:
    """conn.on_readable(), without a Python call for a ConnectionIO."""
    if isinstance(conn, ConnectionIO):
        return (<ConnectionIO>conn)._on_readable()
    conn.on_readable()
    return 0
