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

from cpython.exc cimport PyErr_CheckSignals, PyErr_SetFromErrno
from cpython.pythread cimport PyThread_get_thread_ident
from libc.math cimport ceil

from fastrpc._core.calltable cimport Slot, drain_callbacks, frpc_monotonic
from fastrpc._core.transport cimport ConnectionIO


cdef extern from * nogil:
    """
    #include <errno.h>
    #ifdef __linux__
    #include <sys/epoll.h>
    #else
    /* No epoll here: the engine polls through its Python poller (epoll_fd
       stays -1), and this stand-in is never called. */
    typedef union epoll_data { void *ptr; int fd; } epoll_data_t;
    struct epoll_event { unsigned int events; epoll_data_t data; };
    static int epoll_wait(int epfd, struct epoll_event *ev, int n, int ms) { errno = ENOSYS; return -1; }
    #endif
    """
    ctypedef union epoll_data_t:
        int fd
    struct epoll_event:
        unsigned int events
        epoll_data_t data
    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout)
    int errno
    int EINTR

cdef enum:
    MAX_EVENTS = 64     # events taken per epoll_wait(2): more ready connections wait for the next

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
        self.epoll_fd = -1

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
        conn = _unwritten(slot)
        if conn is not None:
            _flush(conn)                          # our request first
        # (Other buffered frames go out when enough wait, or on the helper's
        # next tick: writing every connection at every wait would cost a
        # system call, and a wake-up of its server, each.)
        if self.leader == me:
            self._lead(slot, deadline)            # a callback of ours waits: read on
            return
        lock = None
        while not _is_ready(slot):
            if self._take_lead():
                self.leader = me
                try:
                    self._lead(slot, deadline)
                finally:
                    self.leader = 0
                    self.lead_taken = False
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
        if not _set_waiter(slot, lock):
            return                                # ready meanwhile
        self.followers.append(slot)
        try:
            # A leader leaving checks followers after releasing `lead`; we
            # check `lead` after registering: one of us sees the other.
            if self.lead_taken and not _is_ready(slot):
                if self.helper_leading:
                    self.interrupt()              # the helper yields to a waiting thread
                if deadline is None:
                    timeout = -1.0
                else:
                    timeout = min(_MAX_SLEEP, max(0.0, <double>deadline - frpc_monotonic()))
                if lock.acquire(True, timeout):
                    return                        # released: our slot is ready, or we lead next
            if _take_waiter(slot) is None:
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
        if not self._take_lead():
            return
        self.leader = me
        try:
            _read(conn)
        finally:
            self.leader = 0
            self.lead_taken = False
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

    def take_lead(self):
        """Become the thread that reads, unless one is: True if taken (give it back with give_lead())."""
        return self._take_lead()

    cdef bint _take_lead(self):
        # No call between the test and the set: under the GIL, the flag is the lock.
        if self.lead_taken:
            return False
        self.lead_taken = True
        return True

    def give_lead(self):
        """Stop being the thread that reads (after take_lead())."""
        self.lead_taken = False

    def promote(self):
        """Wake one follower to take the lead."""
        self._promote()

    cdef _promote(self):
        for slot in list(self.followers):
            lock = _take_waiter(slot)
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
        if not _set_waiter(slot, token):
            return
        try:
            self._read_until(slot, deadline)
        finally:
            _take_waiter(slot)

    cdef _read_until(self, slot, deadline):
        cdef double timeout
        while not _is_ready(slot):
            if self.dirty and self._poll_dispatch(0.0):
                continue
            # About to block: now write what every connection holds back.
            # Batches grow while this thread is busy (fewer system calls,
            # fewer wake-ups of the servers) and go out as soon as it would
            # otherwise sit idle.
            if self.dirty:
                self._flush_dirty()
            if deadline is None:
                self._poll_dispatch(-1.0)
            else:
                timeout = <double>deadline - frpc_monotonic()
                if timeout <= 0.0:
                    return
                self._poll_dispatch(timeout)

    def poll_dispatch(self, timeout):
        """Wait up to `timeout` seconds (None: until one is; at most
        MAX_SLEEP at a time) for connections to become readable, read them
        (draining interrupts), then run the done callbacks of the calls
        that finished; return how many were ready."""
        return self._poll_dispatch(-1.0 if timeout is None else max(0.0, <double>timeout))

    cdef int _poll_dispatch(self, double timeout) except -1:
        """poll_dispatch(); `timeout` < 0: none."""
        cdef epoll_event events[MAX_EVENTS]
        cdef int ms, n, i, fd
        if timeout > _MAX_SLEEP:
            timeout = _MAX_SLEEP
        if self.epoll_fd < 0:
            ready = self.poller.poll(None if timeout < 0.0 else timeout)
            for fd, _ in ready:
                self._ready(fd)
            n = len(ready)
        else:
            # epoll_wait(2) itself, as select.epoll.poll would call it, into
            # an array on the stack: no list of tuples to build and take apart.
            ms = -1 if timeout < 0.0 else <int>ceil(timeout * 1000.0)
            if ms == 0:
                n = epoll_wait(self.epoll_fd, events, MAX_EVENTS, 0)
            else:
                with nogil:
                    n = epoll_wait(self.epoll_fd, events, MAX_EVENTS, ms)
            if n < 0:
                if errno != EINTR:
                    PyErr_SetFromErrno(OSError)
                PyErr_CheckSignals()              # a handler may raise; else the caller polls again
                return 0
            for i in range(n):
                self._ready(events[i].data.fd)
        self.reads += 1
        drain_callbacks()
        return n

    cdef int _ready(self, int fd) except -1:
        conn = self.conns.get(fd)
        if conn is not None:
            _read(conn)
        elif fd == self.wake_r:
            self._drain_wakeup()
        return 0

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


# What the engine asks of the slot a thread waits on: a compiled Slot (a
# call, a batch, a stream) answers through C calls; anything else (a
# stream's credit wait) through its Python methods.
cdef inline bint _is_ready(slot) except -1:
    if isinstance(slot, Slot):
        return (<Slot>slot).ready()
    return slot.is_ready


cdef inline bint _set_waiter(slot, lock) except -1:
    if isinstance(slot, Slot):
        return (<Slot>slot).set_waiter(lock)
    return slot.set_waiter(lock)


cdef inline object _take_waiter(slot):
    if isinstance(slot, Slot):
        return (<Slot>slot).take_waiter()
    return slot.take_waiter()


cdef inline object _unwritten(slot):
    if isinstance(slot, Slot):
        return (<Slot>slot).unwritten()
    return slot.unwritten()
