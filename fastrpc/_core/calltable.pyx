# cython: language_level=3
"""The client call engine's compiled part: a connection's calls in flight.

Owns: sequence ids, encoding requests (single calls, map batches, control
frames) into the connection's output buffer, matching replies to the slots
waiting for them and completing those slots. A slot is a CallFuture (a
blocking call's future), a Batch (a map), a balanced attempt (subclasses
of Slot in fastrpc._core.balance), or any future-like object with
set_result/set_exception (asyncio futures).

Nothing here does I/O: the drivers (fastrpc.client) hand received bytes to
process() and write what take_output() returns (with `vectored`, a list of
buffers when large bytes payloads are attached rather than copied).
"""
cimport cython
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.dict cimport PyDict_GetItem, PyDict_DelItem
from cpython.tuple cimport PyTuple_GET_SIZE, PyTuple_GET_ITEM
from cpython.pythread cimport (PyThread_allocate_lock, PyThread_free_lock, PyThread_acquire_lock,
                               PyThread_release_lock, NOWAIT_LOCK, WAIT_LOCK)
from cpython.contextvars cimport get_value as _context_value
from cpython.ref cimport PyObject
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from cpython.exc cimport PyErr_SetFromErrno

cdef extern from "Python.h":
    void PyObject_GC_Track(object o)
    void PyObject_GC_UnTrack(object o)
    int PyObject_GC_IsTracked(object o)

from fastrpc._core.buffer cimport WriteBuffer, frpc_store_u32
from fastrpc._core.codec cimport DecodeLimits, pack, pack_args, unpack
from fastrpc._core.frame cimport (FrameReader, FrameView, begin_frame, end_frame, write_empty_frame, read_credit,
                                  KIND_REQUEST, KIND_RESPONSE, KIND_ERROR, KIND_NOTIFY, KIND_PING,
                                  KIND_PONG, KIND_OVERSIZED, KIND_ITEM, KIND_END, KIND_CREDIT,
                                  KIND_CANCEL, FLAG_DEADLINE, FLAG_LOAD, FLAG_META, FLAG_STREAM,
                                  LENGTH_FIELD, HEADER_SIZE)
from fastrpc._core.sockets cimport frpc_recv_now, errno, EAGAIN, EWOULDBLOCK

import concurrent.futures
import logging
from collections.abc import Mapping as _Mapping

from fastrpc._core.codec import packb as _packb
import threading
import weakref
from asyncio import (BaseEventLoop as _BaseEventLoop, CancelledError as _AsyncCancelled, Future as _AsyncFuture,
                     InvalidStateError as _AsyncInvalidState)

from fastrpc.context import CURRENT, bound_timeout
from fastrpc.errors import (ConnectionClosedError, ConnectionLostError, DecodeError, FrameTooLargeError,
                            ProtocolError, TimeoutError, UnsupportedError, caller_error_type, remote_error)

log = logging.getLogger("fastrpc.client")

cdef object _CancelledError = concurrent.futures.CancelledError
cdef tuple _invalid_state = (_AsyncInvalidState, concurrent.futures.InvalidStateError)
cdef tuple _shared_errors = (ConnectionLostError, ConnectionClosedError)

# What concurrent.futures.wait() and as_completed() synchronise on. They read
# a future's _condition, _state and _waiters (CPython's Lib/concurrent/
# futures/_base.py, unchanged from 3.9 to 3.13); one reentrant condition
# serves every CallFuture, as those functions take the conditions of all
# their futures at once.
cdef object _CONDITION = threading.Condition(threading.RLock())
# Futures finished while callbacks were registered: their callbacks run at
# the next drain_callbacks(), outside the reader's frame loop.
cdef list _ready_callbacks = []
# Every call table, so that a forked child can close those it inherited.
cdef object _tables = weakref.WeakSet()
# Bumped in a forked child: tables of an older generation are the parent's.
cdef unsigned long _generation = 0
cdef object _CURRENT = CURRENT
cdef double _INF = float("inf")
# A connection with no call pending and nothing received for this long is
# checked for a close or GOAWAY that arrived unread before it carries a new
# call (its owner's ready()), so a call is not written to a connection
# already known to be closed: it goes elsewhere, as one never sent.
cdef double IDLE_CHECK = 0.001
# CallTable.receive reads up to this many bytes holding the GIL (a short
# copy); a larger room is read with the GIL released, as socket.recv_into does.
cdef Py_ssize_t RECV_WITH_GIL = 65536


cdef double remaining(double deadline):
    """Seconds until monotonic `deadline` (never negative)."""
    cdef double left = deadline - frpc_monotonic()
    return left if left > 0.0 else 0.0


def monotonic():
    """time.monotonic(), from the clock the compiled code reads."""
    return frpc_monotonic()


cdef extern from "<poll.h>" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    int poll(pollfd *fds, unsigned long nfds, int timeout)
    enum: POLLIN


def fd_readable(int fd):
    """Whether `fd` has something to read (bytes, a close, an error) right now:
    one poll(2) with no timeout and nothing allocated (a balanced call asks
    this of an idle connection before it carries the call). An error of the
    check itself answers True, so that the read reports it."""
    cdef pollfd p
    p.fd = fd
    p.events = POLLIN
    p.revents = 0
    return poll(&p, 1, 0) != 0


# --------------------------------------------------------------------------
# The garbage collector and the objects of a call
#
# A call allocates a CallFuture (and a balanced call an Attempt). Slot, their
# base, holds objects, so CPython makes every subclass a collected type and
# Cython's no_gc cannot take that back: each one would be tracked, and with
# a few hundred calls in flight the young generation's collections traverse
# them again and again (a third of a balanced go() in a burst, under perf).
# They are untracked as they are made instead. That is safe because a call
# that succeeds closes no reference cycle through them: the references that
# do while it is pending (its source, the table's pending entry, a balanced
# call's attempts) are dropped as it settles. Whatever may close a cycle the
# call path cannot see (an error and its traceback, a done callback, a
# concurrent.futures waiter, a value set from Python, an interceptor's
# observer, a retry's list of failures) tracks the object again first.

cdef int untrack(object o) except -1:
    """Take `o`, a call's object made just now, out of the collector's view."""
    PyObject_GC_UnTrack(o)
    return 0


cdef int track(object o) except -1:
    """Put `o` back in the collector's view: it may now close a cycle."""
    if not PyObject_GC_IsTracked(o):
        PyObject_GC_Track(o)
    return 0


# --------------------------------------------------------------------------
# Slots


cdef class Slot:
    """What a call table holds for one sequence id until its reply arrives.

    A thread waiting for a slot registers a lock with set_waiter(); the
    slot releases it once, when it becomes ready (or the engine hands the
    lock back with take_waiter(), to wake that thread for another reason).
    """

    cdef int complete(self, unsigned long long seq, object value, bint is_error, long long load) except -1:
        raise NotImplementedError

    cdef bint ready(self):
        return True

    cdef int wake(self) except -1:
        cdef object w = self.waiter
        if w is not None:
            self.waiter = None
            w.release()
        return 0

    cpdef bint set_waiter(self, lock) except -1:
        """Register the acquired `lock` of a thread about to block on this slot;
        False (nothing registered) when the slot is ready already."""
        if self.ready():
            return False
        self.waiter = lock
        return True

    cpdef object take_waiter(self):
        """Remove and return the registered lock (None if it was taken, e.g. released)."""
        cdef object w = self.waiter
        self.waiter = None
        return w

    @property
    def is_ready(self):
        """What a thread waiting on this slot waits for has happened."""
        return self.ready()

    cpdef object unwritten(self):
        """The connection holding this slot's request still unwritten, or None
        (a thread about to wait for it writes it first)."""
        return None


class ConcurrentFuture(concurrent.futures.Future):
    """What a CallFuture answers to isinstance(): concurrent.futures.Future.

    A CallFuture is compiled and cannot subclass the pure-Python
    concurrent.futures.Future; its ``__class__`` names this subclass so that
    ``isinstance(f, concurrent.futures.Future)`` holds and functions that
    check it, such as asyncio.wrap_future(), accept it. Never instantiated.
    """


#: Upper bounds (seconds) of every latency histogram; one more bucket takes the rest.
LATENCY_BUCKETS = tuple(frpc_bounds[i] for i in range(FRPC_NBUCKETS - 1))


@cython.final
cdef class CallStats:
    """One method's calls as a client (or balancer) saw them: how many ended,
    how many with an error (by type), and how long they took."""

    def __init__(self):
        self.error_types = {}

    cdef int observe(self, double seconds, object error) except -1:
        self.calls += 1
        self.seconds += seconds
        self.hist[frpc_bucket(seconds)] += 1
        if error is not None:
            self.errors += 1
            name = caller_error_type(error)
            self.error_types[name] = self.error_types.get(name, 0) + 1
        return 0

    def record(self, double seconds, error=None):
        """A call ended after `seconds` with `error` (an exception or a type
        name; None: it returned a result)."""
        self.observe(seconds, error)

    def record_many(self, Py_ssize_t count, double seconds):
        """`count` calls ended with a result, each after `seconds` (a batch)."""
        self.calls += count
        self.seconds += seconds * count
        self.hist[frpc_bucket(seconds)] += count

    def histogram(self):
        """Calls per latency bucket (LATENCY_BUCKETS, then the rest); not cumulative."""
        return [self.hist[i] for i in range(FRPC_NBUCKETS)]

    def snapshot(self):
        """calls, errors, error_types, seconds and histogram, as a dict."""
        return {"calls": self.calls, "errors": self.errors, "error_types": dict(self.error_types),
                "seconds": self.seconds, "histogram": self.histogram()}


# Per-call counting on (the default); off only to measure what it costs.
cdef bint _metrics = True
# The clock as CallTable.process() began completing a read's replies: the
# end time of every call it completes (one clock read per read, not per
# reply). `_completing` says it is current; elsewhere the clock is read.
cdef double _reply_now = 0.0
cdef bint _completing = False


cdef inline double _ended_at():
    return _reply_now if _completing else frpc_monotonic()


def set_metrics(bint enabled):
    """Count calls per method (the default) or not (fastrpc.observability.set_metrics)."""
    global _metrics
    _metrics = enabled


def metrics_enabled():
    """Whether calls are counted (set_metrics)."""
    return _metrics


# Methods a client counts separately at most; past it, the rest share one
# entry (a client calling ever new names must not grow without bound).
MAX_METHODS = 1000
OTHER_METHODS = "(other)"


cdef int count_since(CallStats stats, double begun, object error) except -1:
    """Count in `stats` (None: not counting) a call that began at monotonic
    `begun` and ended now with `error` (None: a result)."""
    if stats is not None:
        stats.observe(frpc_monotonic() - begun, error)
    return 0


@cython.final
cdef class ClientStats:
    """Per-method CallStats of one client or balancer."""

    def __init__(self):
        self.methods = {}

    cdef CallStats of(self, str method):
        if not _metrics:
            return None
        if method is self.last_method:          # most calls repeat the method
            return self.last_stats
        cdef object s = self.methods.get(method)
        if s is None:
            if len(self.methods) >= MAX_METHODS:
                method = OTHER_METHODS
                s = self.methods.get(method)
            if s is None:
                s = self.methods[method] = CallStats()
        self.last_method = method
        self.last_stats = <CallStats>s
        return <CallStats>s

    def method(self, str method):
        """The CallStats of `method` (made on first use); None while counting is off."""
        return self.of(method)

    def snapshot(self):
        """{method: CallStats.snapshot()}."""
        return {name: (<CallStats>s).snapshot() for name, s in list(self.methods.items())}


@cython.final
cdef class CallFuture(Slot):
    """The result of a blocking call started with go(): a concurrent.futures-style future.

    ``result()`` and ``exception()`` drive the connections themselves while
    they wait (no thread hand-off); ``cancel()`` withdraws the call and tells
    the server to cancel it; ``add_done_callback()`` callbacks run in the
    thread that completes the call. It is accepted wherever a
    concurrent.futures.Future is (isinstance, wait(), as_completed(),
    asyncio.wrap_future()).
    """
    # Not tracked by the garbage collector until it may close a cycle (see
    # untrack() above): a call allocates one, and tracking them made
    # collections a fifth of a pipelined call's cost. The references that
    # could close a cycle while it is pending (engine, source) are dropped
    # as the future finishes; an error, a callback or a waiter tracks it.
    # (Cython's no_gc and freelist would do nothing here: no_gc cannot undo
    # what Slot's object field makes a collected type, and free lists are
    # kept only for classes without a compiled base.)

    def __cinit__(self):
        self.state = PENDING
        untrack(self)

    def __init__(self, str method=""):
        self.method = method

    cdef bint ready(self):
        return self.state != PENDING

    cdef int complete(self, unsigned long long seq, object value, bint is_error, long long load) except -1:
        if is_error:
            return self.finish(None, value, FINISHED)
        return self.finish(value, None, FINISHED)

    cdef int finish(self, object value, object error, int state) except -1:
        """Settle the future once; later calls do nothing."""
        if self.state != PENDING:
            return 0
        if error is not None:
            track(self)                   # its traceback may lead back here
        self.engine = None
        self.source = None
        self.table = None
        if self.stats is not None:
            self.stats.observe(_ended_at() - self.started, "Cancelled" if state == CANCELLED else error)
            self.stats = None
        if self.watched:
            return self._finish_watched(value, error, state)
        self.value = value
        self.error = error
        self.state = state
        self.wake()
        if self.callbacks is not None:
            _ready_callbacks.append(self)
        return 0

    cdef int _finish_watched(self, object value, object error, int state) except -1:
        # concurrent.futures.wait() or as_completed() holds this future: settle
        # under their condition and tell their waiters, as Future.set_result does.
        with _CONDITION:
            if self.state != PENDING:
                return 0
            self.value = value
            self.error = error
            self.state = state
            for waiter in self.cf_waiters or ():
                if state == CANCELLED:
                    waiter.add_cancelled(self)
                elif error is not None:
                    waiter.add_exception(self)
                else:
                    waiter.add_result(self)
            _CONDITION.notify_all()
        self.wake()
        if self.callbacks is not None:
            _ready_callbacks.append(self)
        return 0

    # completion from Python (connection loss, timeouts, balancer policy) -------
    def set_result(self, value):
        """Complete with `value` (does nothing once the future is done)."""
        track(self)                       # any value at all: it may refer to this future
        self.finish(value, None, FINISHED)
        drain_callbacks()

    def set_exception(self, exc):
        """Complete with the exception `exc` (does nothing once the future is done)."""
        self.finish(None, exc, FINISHED)
        drain_callbacks()

    def expire(self):
        """The call's own timeout passed: withdraw it and fail with TimeoutError
        (its source words the error: a balanced call names its endpoints)."""
        if self.state != PENDING:
            return
        source = self.source
        if source is not None:
            source.expire_call(self)
        if self.state == PENDING:
            self.finish(None, TimeoutError(f"{self.method} did not complete in time"), FINISHED)
        drain_callbacks()

    # the concurrent.futures.Future API ----------------------------------------
    def result(self, timeout=None):
        """The call's result; raises its error, CancelledError, or TimeoutError
        when `timeout` seconds pass first. Waiting drives the connections."""
        if self.state == PENDING:
            self._wait(timeout)
        if self.state == FINISHED:
            if self.error is None:
                return self.value
            _raise(self.error)
        if self.state == CANCELLED:
            raise _CancelledError()
        raise TimeoutError(f"{self.method} did not complete within {timeout}s")

    def exception(self, timeout=None):
        """The call's exception, or None when it succeeded (waits as result() does)."""
        if self.state == PENDING:
            self._wait(timeout)
        if self.state == FINISHED:
            return self.error
        if self.state == CANCELLED:
            raise _CancelledError()
        raise TimeoutError(f"{self.method} did not complete within {timeout}s")

    def done(self):
        """True once the call has a result, an error, or was cancelled."""
        return self.state != PENDING

    def cancelled(self):
        """True if cancel() withdrew the call."""
        return self.state == CANCELLED

    def running(self):
        """False: a call is either pending at the server or done."""
        return False

    def cancel(self):
        """Withdraw the call (the server is told to cancel it); False if it was done already."""
        if self.state == CANCELLED:
            return True
        if self.state != PENDING:
            return False
        source = self.source
        self.finish(None, None, CANCELLED)
        if source is not None:
            source.withdraw_call(self)
        drain_callbacks()
        return True

    def add_done_callback(self, fn):
        """Call fn(future) when the call completes (now, if it has)."""
        if self.state == PENDING:
            track(self)                   # a closure may refer to this future
            if self.callbacks is None:
                self.callbacks = []
            self.callbacks.append(fn)
            if self.state == PENDING:
                if self.engine is not None:
                    self.engine.need_reader()   # nobody may be waiting: make sure someone reads
                return
        _call_back(fn, self)

    def set_running_or_notify_cancel(self):
        """concurrent.futures API: False when cancelled, else True (the call is running)."""
        return self.state != CANCELLED

    cdef int _wait(self, object timeout) except -1:
        cdef double deadline = 0.0
        if timeout is not None:
            deadline = frpc_monotonic() + max(<double>timeout, 0.0)
        if self.deadline and (deadline == 0.0 or self.deadline < deadline):
            deadline = self.deadline
        if self.engine is None:
            raise RuntimeError("this future has no connection to drive")
        self.engine.wait(self, deadline if deadline else None)
        if self.state == PENDING and self.deadline and frpc_monotonic() >= self.deadline:
            self.expire()
        return 0

    cpdef object unwritten(self):
        """The connection holding this call's request still unwritten, or None."""
        source = self.source
        if source is None or self.state != PENDING:
            return None
        if self.table is not None:        # a direct call: its table says (no Python call to ask)
            return source if self.seq > self.table.written_seq else None
        return source.unwritten_for(self)

    # what concurrent.futures.wait() and as_completed() read -------------------
    @property
    def _condition(self):
        self.watched = True
        if self.engine is not None and self.state == PENDING:
            self.engine.need_reader()      # whoever waits on the condition reads nothing
        return _CONDITION

    @property
    def _state(self):
        if self.state == PENDING:
            return "PENDING"
        if self.state == CANCELLED:
            return "CANCELLED_AND_NOTIFIED"
        return "FINISHED"

    @property
    def _waiters(self):
        track(self)                       # the waiter refers to its futures
        if self.cf_waiters is None:
            self.cf_waiters = []
        return self.cf_waiters

    @property
    def __class__(self):
        return ConcurrentFuture

    def __repr__(self):
        what = "pending" if self.state == PENDING else "cancelled" if self.state == CANCELLED else \
            f"raised {type(self.error).__name__}" if self.error is not None else "finished"
        return f"<CallFuture {self.method} {what}>"


cdef int _call_back(object fn, object future) except -1:
    try:
        fn(future)
    except Exception:
        log.exception("callback %r of %r raised", fn, future)
    return 0


cpdef int drain_callbacks() except -1:
    """Run the done callbacks of futures that finished since the last drain.

    The reader calls it after each batch of replies, outside its frame loop,
    so a callback may start or wait for other calls.
    """
    cdef CallFuture fut
    cdef list callbacks
    while _ready_callbacks:
        fut = <CallFuture>_ready_callbacks.pop(0)
        callbacks, fut.callbacks = fut.callbacks, None
        for fn in callbacks or ():
            _call_back(fn, fut)
    return 0


cdef _raise(object error):
    # A transport error is shared by every call it failed; raise a fresh one
    # per caller so tracebacks do not pile up on one object.
    if isinstance(error, _shared_errors):
        fresh = type(error)(str(error))
        fresh.__dict__.update(error.__dict__)     # e.g. .endpoints of a balanced call
        fresh.__cause__ = error
        raise fresh
    raise error


@cython.final
cdef class Progress(Slot):
    """Ready once fire() was called since the last reset(): a thread waits
    on it for the first of several batches to finish (Balancer.map gives
    each of its batches `fire` as their on_progress)."""

    cdef bint ready(self):
        return self.fired

    def fire(self):
        """Something the waiter waits for happened: wake it."""
        self.fired = True
        self.wake()

    def reset(self):
        """Wait for the next fire() from now on."""
        self.fired = False


@cython.final
cdef class Batch(Slot):
    """The results of a map(): one list entry per item, filled as replies arrive.

    ready() once fewer than `wake_below` calls are in flight (the map sends
    more) or when every item has its answer.
    """

    def __init__(self, Py_ssize_t n, bint return_exceptions=False):
        self.results = [None] * n
        self.run_seqs = []
        self.run_positions = []
        self.answered = bytearray(n)
        self.hint = 0
        self.remaining = n
        self.issued = 0
        self.first_error = None
        self.wake_below = 0
        self.on_progress = None
        self.return_exceptions = return_exceptions
        self.stats = None
        self.run_times = []

    @property
    def done(self):
        """Every item has its result or error."""
        return self.remaining == 0

    @property
    def in_flight(self):
        """Calls sent and not answered yet."""
        return self.issued - (len(self.results) - self.remaining)

    cdef bint ready(self):
        return self.remaining == 0 or self.issued - (len(self.results) - self.remaining) < self.wake_below

    cdef int register(self, unsigned long long seq) except -1:
        """Item number `issued` goes out as call `seq`."""
        cdef Py_ssize_t last = len(self.run_seqs) - 1
        if last >= 0 and <unsigned long long>self.run_seqs[last] + <unsigned long long>(
                self.issued - <Py_ssize_t>self.run_positions[last]) == seq:
            pass                            # the next seq of the current run
        else:
            self.run_seqs.append(seq)
            self.run_positions.append(self.issued)
            if self.stats is not None:
                self.run_times.append(frpc_monotonic())
        self.issued += 1
        return 0

    cdef int observe(self, Py_ssize_t run, object error) except -1:
        """Count an item of run `run` (-1: never sent) ending with `error` (None: a result)."""
        cdef double started
        if run < 0 or run >= len(self.run_times):
            self.stats.observe(0.0, error)
        else:
            started = self.run_times[run]
            self.stats.observe(_ended_at() - started, error)
        return 0

    cdef Py_ssize_t _run_of(self, Py_ssize_t position):
        cdef Py_ssize_t lo = 0, hi = len(self.run_positions), mid
        while lo < hi:
            mid = (lo + hi) // 2
            if <Py_ssize_t>self.run_positions[mid] <= position:
                lo = mid + 1
            else:
                hi = mid
        return lo - 1

    cdef Py_ssize_t position_of(self, unsigned long long seq):
        """The item call `seq` carries, or -1 (not this batch's, or settled)."""
        cdef Py_ssize_t runs = len(self.run_seqs), i = self.hint, lo, hi, mid, position, end
        if runs == 0:
            return -1
        if i >= runs or seq < <unsigned long long>self.run_seqs[i]:
            i = -1
        elif i + 1 < runs and seq >= <unsigned long long>self.run_seqs[i + 1]:
            i = -1 if i + 2 < runs and seq >= <unsigned long long>self.run_seqs[i + 2] else i + 1
        if i < 0:                           # not in the hinted run or the next: search
            lo, hi = 0, runs
            while lo < hi:
                mid = (lo + hi) // 2
                if <unsigned long long>self.run_seqs[mid] <= seq:
                    lo = mid + 1
                else:
                    hi = mid
            i = lo - 1
            if i < 0:
                return -1
        self.hint = i
        position = <Py_ssize_t>self.run_positions[i] + <Py_ssize_t>(seq - <unsigned long long>self.run_seqs[i])
        end = <Py_ssize_t>self.run_positions[i + 1] if i + 1 < runs else self.issued
        if position >= end or self.answered[position]:
            return -1
        return position

    cdef int complete(self, unsigned long long seq, object value, bint is_error, long long load) except -1:
        cdef Py_ssize_t position = self.position_of(seq)
        if position < 0:
            return 0
        self.answered[position] = 1
        if self.stats is not None:
            self.observe(self.hint, value if is_error else None)
        self.settle(position, value, is_error)
        if self.ready():
            self.wake()
            if self.on_progress is not None:
                self.on_progress()
        return 0

    cdef int settle(self, Py_ssize_t position, object value, bint is_error) except -1:
        if is_error:
            if self.first_error is None:
                self.first_error = value
            if not self.return_exceptions:
                value = None
        self.results[position] = value
        self.remaining -= 1
        return 0

    def add(self, seq):
        """Register call `seq` as the batch's next item (call tables written in Python)."""
        self.register(seq)

    def sent_positions(self):
        """Positions of the items sent and not answered, by sequence id."""
        cdef Py_ssize_t r, runs = len(self.run_seqs), start, end, position
        cdef unsigned long long first
        out = {}
        for r in range(runs):
            first = self.run_seqs[r]
            start = self.run_positions[r]
            end = self.run_positions[r + 1] if r + 1 < runs else self.issued
            for position in range(start, end):
                if not self.answered[position]:
                    out[first + <unsigned long long>(position - start)] = position
        return out

    def fail_unsent(self, exc):
        """Fail the items never sent (the connection went away)."""
        cdef Py_ssize_t i
        for i in range(self.issued, len(self.results)):
            self.answered[i] = 1
            if self.stats is not None:
                self.observe(-1, exc)
            self.settle(i, exc, True)
        self.issued = len(self.results)
        self.wake()

    def fail_sent(self, exc):
        """Fail the items sent and not answered (withdrawn at a timeout)."""
        cdef Py_ssize_t position
        for position in range(self.issued):
            if not self.answered[position]:
                self.answered[position] = 1
                if self.stats is not None:
                    self.observe(self._run_of(position), exc)
                self.settle(position, exc, True)
        self.wake()


@cython.final
cdef class StreamSlot(Slot):
    """What a connection's call table holds for a stream (see
    fastrpc.client.stream): the items received and not yet taken, its end,
    and the flow-control credit of both directions.

    The reading thread pushes items and credit; the consumer takes them with
    pop(). A waiter registered with set_waiter() (a thread's lock, or an
    object whose release() wakes a task) is released once something can be
    taken or the stream ended.
    """

    def __cinit__(self):
        self.state = PENDING
        self.sizes = NULL

    def __dealloc__(self):
        PyMem_Free(self.sizes)

    def __init__(self, long long window_items, long long window_bytes):
        if window_items < 1 or window_bytes < 1:
            raise ValueError("a stream window is at least 1 item and 1 byte")
        self.window_items = window_items
        self.window_bytes = window_bytes
        # The sender may not have more than window_items unanswered by our
        # credit: the ring never needs more slots (a sender that overruns it
        # fails its stream, see CallTable._stream_item).
        self.ring = [None] * window_items
        self.sizes = <Py_ssize_t *>PyMem_Malloc(window_items * sizeof(Py_ssize_t))
        if self.sizes == NULL:
            raise MemoryError()

    cdef bint ready(self):
        return self.state != PENDING or self.buffered != 0

    @cython.boundscheck(False)
    @cython.wraparound(False)
    cdef int push(self, object value, Py_ssize_t nbytes) except -1:
        cdef Py_ssize_t cap = len(self.ring), at
        if self.state != PENDING:
            return 0
        if self.buffered >= cap:
            raise ProtocolError("stream item beyond the window")
        at = (self.head + self.buffered) % cap
        self.ring[at] = value
        self.sizes[at] = nbytes
        self.buffered += 1
        self.received += 1
        return self.wake()

    cdef int grant(self, long long items, long long nbytes) except -1:
        self.send_items += items
        self.send_bytes += nbytes
        return self._wake_sender()

    cdef int _wake_sender(self) except -1:
        cdef object w = self.credit_waiter
        if w is not None:
            self.credit_waiter = None
            w.release()
        return 0

    cdef int complete(self, unsigned long long seq, object value, bint is_error, long long load) except -1:
        if self.state != PENDING:
            return 0
        self.state = FINISHED
        if is_error:
            self.error = value
        else:
            self.value = value
        self.source = None
        self.wake()
        return self._wake_sender()

    @cython.boundscheck(False)
    @cython.wraparound(False)
    cdef object _pop(self):
        cdef Py_ssize_t at = self.head
        value = self.ring[at]
        self.ring[at] = None
        self.owed_bytes += self.sizes[at]
        self.head = (at + 1) % len(self.ring)
        self.buffered -= 1
        return value

    def pop(self):
        """Take the next item received; IndexError when none is buffered.
        Counts it towards the credit to give back (credit_due)."""
        if self.buffered == 0:
            raise IndexError("no item buffered")
        self.owed_items += 1
        return self._pop()

    def take(self, Py_ssize_t limit):
        """Take up to `limit` items received so far: a list, empty when none is
        buffered (counted towards the credit to give back, as pop() does)."""
        cdef Py_ssize_t n = min(self.buffered, limit), i
        cdef list out = [None] * n
        for i in range(n):
            out[i] = self._pop()
        self.owed_items += n
        return out

    @property
    def credit_due(self):
        """Half the window was taken since credit was last given back: give it now."""
        return self.state == PENDING and (self.owed_items * 2 >= self.window_items
                                          or self.owed_bytes * 2 >= self.window_bytes)

    def take_owed(self):
        """The credit to give back, (items, bytes), counted as given."""
        owed = (self.owed_items, self.owed_bytes)
        self.owed_items = self.owed_bytes = 0
        return owed

    def spend(self, Py_ssize_t nbytes):
        """One item of `nbytes` was sent on the server's credit."""
        self.send_items -= 1
        self.send_bytes -= nbytes

    @property
    def can_send(self):
        """The server's credit allows one more item now."""
        return self.send_items > 0 and self.send_bytes > 0

    def set_credit_waiter(self, lock):
        """Register a waiter released when credit arrives or the stream ends;
        False (nothing registered) when one of them holds already."""
        if self.state != PENDING or (self.send_items > 0 and self.send_bytes > 0):
            return False
        self.credit_waiter = lock
        return True

    def take_credit_waiter(self):
        """Remove and return the registered credit waiter (None if released)."""
        cdef object w = self.credit_waiter
        self.credit_waiter = None
        return w

    def finish(self, error):
        """End the stream here with `error` (cancelled, timed out); False if it had ended."""
        if self.state != PENDING:
            return False
        self.complete(self.seq, error, True, -1)
        return True

    cpdef object unwritten(self):
        """The connection to write before waiting (its frames may be what the server waits for)."""
        return self.source


cdef int complete(object slot, unsigned long long seq, object value, bint is_error, long long load) except -1:
    """Settle whatever waits for `seq`: a Slot, or a future (asyncio, concurrent.futures)."""
    if isinstance(slot, Slot):
        return (<Slot>slot).complete(seq, value, is_error, load)
    try:
        if is_error:
            slot.set_exception(value)
        else:
            slot.set_result(value)
    except _invalid_state:
        pass  # the caller cancelled this future; its reply is dropped
    return 0


def settle(slot, unsigned long long seq, value, bint is_error, long long load=-1):
    """complete() for call tables written in Python (the Go codecs)."""
    complete(slot, seq, value, is_error, load)


# --------------------------------------------------------------------------
# The per-connection table


@cython.final
cdef class Arguments:
    """The arguments of one call, positional and keyword: ``Arguments(1, 2, key="a")``.

    Client.map and Balancer.map take items of this kind where a call needs
    keyword arguments (or both kinds); a plain tuple is positional
    arguments only, a dict keyword arguments only. Passed alone to call(),
    go() or notify(), it is the call's whole argument list, which is how to
    send keyword arguments named like the call's own options:
    ``balancer.call("KV.Get", Arguments(key="a"), key="a")`` (the second
    ``key`` picks the endpoint).
    """

    def __init__(self, *args, **kwargs):
        self.args = args
        self.kwargs = kwargs

    def __eq__(self, other):
        if type(other) is not Arguments:
            return NotImplemented
        return self.args == (<Arguments>other).args and self.kwargs == (<Arguments>other).kwargs

    def __repr__(self):
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"Arguments({', '.join(parts)})"


cdef Arguments make_arguments(tuple args, dict kwargs):
    """Arguments from what *args and **kwargs collected (no copies)."""
    cdef Arguments a = Arguments.__new__(Arguments)
    a.args = args
    a.kwargs = kwargs
    return a


def call_args(tuple args, dict kwargs):
    """What a call with keyword arguments sends: an Arguments holding both.
    (Callers pass `args` itself when there are none: the fast path. A lone
    Arguments in `args` is the whole argument list, see _encode_request.)"""
    if not kwargs:
        return args
    return make_arguments(args, kwargs)


@cython.final
cdef class CallTable:
    """Sequence ids, pending slots, and the connection's read and write buffers.

    Encoding methods may be called from any thread; process() and
    fail_all() from the one reading the connection.
    """

    def __cinit__(self):
        self.out_lock = PyThread_allocate_lock()
        if self.out_lock == NULL:
            raise MemoryError()

    def __dealloc__(self):
        if self.out_lock != NULL:
            PyThread_free_lock(self.out_lock)
            self.out_lock = NULL

    def __init__(self, *, Py_ssize_t max_frame_size, Py_ssize_t max_depth,
                 Py_ssize_t max_len, Py_ssize_t max_bytes, bint bytes_views=False, owner=None,
                 Py_ssize_t flush_frames=32, Py_ssize_t flush_bytes=65536, Py_ssize_t flush_frames_max=0,
                 default=None, ext_hook=None, bint keep_tuples=False, bint vectored=False):
        self.reader = FrameReader(max_frame_size)
        # A reply above max_frame_size fails its call alone (its bytes are
        # dropped as they come); the connection's other calls go on.
        self.reader.skip_oversized = True
        self.out = WriteBuffer(16384)
        self.peer_max_frame = 0
        self.pending = {}
        self.next_seq = 1
        self.limits.max_depth = max_depth
        self.limits.max_len = max_len
        self.limits.max_bytes = max_bytes
        self.limits.bytes_views = bytes_views
        self.ext_hook = ext_hook
        self.limits.ext_hook = NULL if ext_hook is None else <PyObject *>ext_hook
        self.out.default = default
        self.out.keep_tuples = keep_tuples
        self.out.vectored = vectored
        self.peer_kwargs = 0
        self.method_cache = {}
        self.on_control = None
        self.last_load = None
        self.closed = False
        self.draining = False
        self.flush_frames = flush_frames
        self.flush_frames_max = flush_frames_max
        self.flush_bytes = flush_bytes
        self.owner = owner
        self.engine = None
        self.last_io = frpc_monotonic()
        self.generation = _generation
        _tables.add(self)

    cdef int lock_out(self) except -1:
        # Uncontended, a non-blocking acquire; otherwise wait without the GIL.
        if not PyThread_acquire_lock(self.out_lock, NOWAIT_LOCK):
            with nogil:
                PyThread_acquire_lock(self.out_lock, WAIT_LOCK)
        return 0

    cdef void unlock_out(self):
        PyThread_release_lock(self.out_lock)

    cdef bytes _method(self, str method):
        if method is self.last_method:            # most calls repeat the method
            return self.last_method_bytes
        m = self.method_cache.get(method)
        if m is None:
            m = method.encode("utf-8")
            if len(self.method_cache) < 4096:
                self.method_cache[method] = m
        self.last_method = method
        self.last_method_bytes = <bytes>m
        return <bytes>m

    cdef int _encode_request(self, int kind, unsigned long long seq, bytes method,
                             object args, object deadline_ms, bytes meta, int flags=0) except -1:
        """Append one REQUEST/NOTIFY frame (caller holds out_lock); nothing on error."""
        if deadline_ms is not None:
            flags |= FLAG_DEADLINE
        cdef char ext[4]
        cdef Py_ssize_t start, length
        if meta is not None:
            flags |= FLAG_META
        start = begin_frame(self.out, kind, flags, seq, method, len(method))
        try:
            if deadline_ms is not None:
                frpc_store_u32(ext, <unsigned int>min(max(<long long>deadline_ms, 0), 0xffffffff))
                self.out.write(ext, 4)
            if meta is not None:
                frpc_store_u32(ext, <unsigned int>len(meta))
                self.out.write(ext, 4)
                self.out.write(meta, len(meta))
            if type(args) is not tuple:
                self._encode_other_args(method, args)
            elif PyTuple_GET_SIZE(args) == 1 and type(<object>PyTuple_GET_ITEM(args, 0)) is Arguments:
                # A lone Arguments is the call's whole argument list: how keyword
                # arguments named like the call's own options are sent.
                self._encode_other_args(method, <object>PyTuple_GET_ITEM(args, 0))
            else:
                pack_args(self.out, <tuple>args)
        except BaseException:
            self.out.rollback(start)
            raise
        length = self.out.since(start) - LENGTH_FIELD
        if self.peer_max_frame and length > self.peer_max_frame:
            # The server would refuse it: fail this call here, send nothing.
            self.out.rollback(start)
            raise FrameTooLargeError(
                f"{method.decode('utf-8', 'replace')}: request of {length} bytes is above "
                f"the server's max_frame_size={self.peer_max_frame}")
        end_frame(self.out, start)
        return 0

    cdef int _encode_other_args(self, bytes method, object args) except -1:
        """A payload that is not a plain tuple: Arguments (with keywords), a dict
        (a map item of keywords) or a single value (a map item)."""
        cdef dict kwargs = None
        if type(args) is Arguments:
            pack_args(self.out, (<Arguments>args).args)
            kwargs = (<Arguments>args).kwargs
        elif isinstance(args, _Mapping):
            pack_args(self.out, ())
            kwargs = <dict>args if type(args) is dict else dict(args)
        else:
            return pack_args(self.out, (args,))
        if not kwargs:
            return 0
        if self.peer_kwargs < 0:
            raise UnsupportedError(
                f"{method.decode('utf-8', 'replace')}: the server does not take keyword arguments "
                f"(it predates them): pass the arguments by position")
        # The keyword map follows the positional array (docs/PROTOCOL.md).
        return pack(self.out, kwargs, 1)

    cpdef unsigned long long request(self, str method, object args, object slot,
                                     object deadline_ms=None, bytes meta=None) except? 0:
        """Encode a REQUEST whose reply completes `slot` (a NOTIFY when `slot` is
        None); return its seq.

        `deadline_ms` is the call's time budget for the server, `meta` its
        metadata, already encoded. If the arguments cannot be encoded,
        nothing is written or registered and the error propagates.
        """
        cdef bytes m = self._method(method)
        cdef unsigned long long seq
        cdef bint was_empty
        if self.closed:
            raise ConnectionClosedError("the connection is closed")
        self.lock_out()
        try:
            was_empty = self.out.frames == 0
            seq = self.next_seq
            self._encode_request(KIND_NOTIFY if slot is None else KIND_REQUEST, seq, m, args,
                                 deadline_ms, meta)
            self.next_seq = seq + 1
            if slot is not None:
                self.pending[seq] = slot
        finally:
            self.unlock_out()
        self._encoded(was_empty)
        return seq

    cdef int _encoded(self, bint was_empty) except -1:
        """Frames were added: have the owner write them now, or know that some wait.

        They are written once `flush_frames` (or `flush_bytes`) wait;
        before that by whoever needs them out: a caller waiting for its own
        call, the blocking engine before it sleeps (every connection's),
        the asyncio client at the end of the loop's pass. Writing earlier
        (e.g. as soon as the server has fewer calls queued than we hold
        back) was measured worse: more, smaller writes, and a wake-up of
        the server each (4 backends of a Balancer, sliding window: 0.83M
        -> 0.5M calls/s).
        """
        cdef Py_ssize_t frames = self.out.frames
        if self.owner is None:
            return 0
        if frames >= self._flush_limit() or self.out.total() >= self.flush_bytes:
            self.owner.flush()
        elif was_empty:
            self.owner.on_output()
        return 0

    cdef Py_ssize_t _flush_limit(self):
        """How many frames wait before a submit asks for a write: flush_frames,
        raised up to flush_frames_max (0: never) to half the calls in flight.
        With many in flight, each write then wakes the server for more of
        them, and half stay queued there while we encode the rest (asyncio
        client, 128 coroutines awaiting: 32 -> 64 frames per write, +12%
        calls/s; a fixed 64 would hold 64 in flight to one write per pass,
        -30%). In flight: as many as were pending when the last reply
        arrived, or are now (completing a read's replies first lowers the
        count, then the callers refill it)."""
        cdef Py_ssize_t limit = self.flush_frames, half
        if self.flush_frames_max > limit:
            half = max(self.in_flight_at_read, len(self.pending)) // 2
            if half > limit:
                limit = half if half < self.flush_frames_max else self.flush_frames_max
        return limit

    cpdef CallFuture go(self, str method, object args, object deadline_ms, bytes meta, object engine,
                        bint flush=False, CallStats stats=None):
        """Start a blocking call: encode it, register a new CallFuture, return it.

        With `flush`, the owner writes it at once; otherwise once enough
        output waits (see _encoded). `stats`: where its outcome is counted.
        """
        cdef CallFuture fut = CallFuture.__new__(CallFuture)
        cdef bytes m = self._method(method)
        cdef unsigned long long seq
        cdef bint was_empty
        if self.closed:
            raise ConnectionClosedError("the connection is closed")
        fut.method = method
        fut.engine = engine
        fut.source = self.owner
        fut.table = self
        if stats is not None:
            fut.started = frpc_monotonic()
            fut.stats = stats
        self.lock_out()
        try:
            was_empty = self.out.frames == 0
            seq = self.next_seq
            self._encode_request(KIND_REQUEST, seq, m, args, deadline_ms, meta)
            self.next_seq = seq + 1
            self.pending[seq] = fut
        finally:
            self.unlock_out()
        fut.seq = seq
        if flush:
            self.owner.flush()
        else:
            self._encoded(was_empty)
        return fut

    def request_batch(self, str method, Batch batch, items, Py_ssize_t limit,
                      object deadline_ms=None, bytes meta=None):
        """Encode up to `limit` more items of `batch` from the iterator `items`; return how many.

        An item that is a tuple is the argument list, an Arguments the arguments,
        a mapping the keyword arguments, anything else the one argument.
        Each call carries `deadline_ms` and `meta` like a single
        call. Other calls may be encoded between two batches.
        """
        cdef bytes m = self._method(method)
        cdef Py_ssize_t n = 0
        cdef unsigned long long seq
        cdef bint was_empty
        if self.closed:
            raise ConnectionClosedError("the connection is closed")
        self.lock_out()
        try:
            was_empty = self.out.frames == 0
            while n < limit:
                try:
                    args = next(items)
                except StopIteration:
                    break
                seq = self.next_seq
                self._encode_request(KIND_REQUEST, seq, m, args, deadline_ms, meta)
                self.next_seq = seq + 1
                self.pending[seq] = batch
                batch.register(seq)
                n += 1
        finally:
            self.unlock_out()
        self._encoded(was_empty)
        return n

    def open_stream(self, str method, object args, StreamSlot slot, object deadline_ms=None,
                    bytes meta=None):
        """Encode a REQUEST that opens a stream (flag STREAM) and the CREDIT that
        grants the server the slot's window; register `slot` for its frames;
        return its seq."""
        cdef bytes m = self._method(method)
        cdef unsigned long long seq
        cdef bint was_empty
        cdef Py_ssize_t start
        if self.closed:
            raise ConnectionClosedError("the connection is closed")
        self.lock_out()
        try:
            was_empty = self.out.frames == 0
            seq = self.next_seq
            self._encode_request(KIND_REQUEST, seq, m, args, deadline_ms, meta, FLAG_STREAM)
            start = begin_frame(self.out, KIND_CREDIT, 0, seq, NULL, 0)
            pack_args(self.out, (slot.window_items, slot.window_bytes))
            end_frame(self.out, start)
            self.next_seq = seq + 1
            self.pending[seq] = slot
        finally:
            self.unlock_out()
        slot.seq = seq
        slot.source = self.owner
        self._encoded(was_empty)
        return seq

    def send_item(self, unsigned long long seq, object value):
        """Encode one ITEM of a client stream; return its payload's size in bytes.
        An unencodable value writes nothing and raises."""
        cdef Py_ssize_t start, size
        cdef bint was_empty
        if self.closed:
            raise ConnectionClosedError("the connection is closed")
        self.lock_out()
        try:
            was_empty = self.out.frames == 0
            start = begin_frame(self.out, KIND_ITEM, 0, seq, NULL, 0)
            try:
                pack(self.out, value, 0)
            except BaseException:
                self.out.rollback(start)
                raise
            size = self.out.since(start) - HEADER_SIZE
            if self.peer_max_frame and size + HEADER_SIZE - LENGTH_FIELD > self.peer_max_frame:
                self.out.rollback(start)
                raise FrameTooLargeError(
                    f"stream item of {size} bytes is above the server's max_frame_size={self.peer_max_frame}")
            end_frame(self.out, start)
        finally:
            self.unlock_out()
        self._encoded(was_empty)
        return size

    def control(self, int kind, unsigned long long seq, bytes payload=b""):
        """Encode a PING, PONG, CANCEL or GOAWAY frame."""
        cdef Py_ssize_t start
        cdef bint was_empty
        self.lock_out()
        try:
            was_empty = self.out.frames == 0
            start = begin_frame(self.out, kind, 0, seq, NULL, 0)
            self.out.write(payload, len(payload))
            end_frame(self.out, start)
        finally:
            self.unlock_out()
        self._encoded(was_empty)

    def ping(self, slot):
        """Encode a PING whose PONG completes `slot` (with None); return its seq."""
        cdef unsigned long long seq
        cdef bint was_empty
        self.lock_out()
        try:
            was_empty = self.out.frames == 0
            seq = self.next_seq
            write_empty_frame(self.out, KIND_PING, seq)
            self.next_seq = seq + 1
            self.pending[seq] = slot
        finally:
            self.unlock_out()
        self._encoded(was_empty)
        return seq

    def forget(self, unsigned long long seq):
        """Drop a pending call (timed out or cancelled); return its slot or None."""
        return self.pending.pop(seq, None)

    def get_buffer(self, Py_ssize_t sizehint=-1):
        """Memory to receive into."""
        return self.reader.get_buffer(sizehint)

    def take_output(self):
        """Return and clear the encoded frames (bytes, or a memoryview when
        large), or None when there are none."""
        return self.take_out()

    cdef object take_out(self):
        self.lock_out()
        try:
            self.written_seq = self.next_seq - 1
            return self.out.take_output()
        finally:
            self.unlock_out()

    @property
    def out_frames(self):
        """Frames encoded but not yet taken."""
        return self.out.frames

    @property
    def out_bytes(self):
        """Bytes encoded but not yet taken."""
        return self.out.total()

    @property
    def wants_flush(self):
        """Enough output waits that it should be written now."""
        return self.out.frames >= self._flush_limit() or self.out.total() >= self.flush_bytes

    def clear_output(self):
        """Drop encoded frames not yet taken (the connection is gone)."""
        self.lock_out()
        try:
            self.out.reset()
        finally:
            self.unlock_out()

    def process(self, Py_ssize_t nbytes):
        """Complete the calls whose replies arrived in the last `nbytes`.

        Returns how many calls completed. A reply that cannot be decoded
        fails its own call only, whatever the decoder raised. Raises
        ProtocolError when framing is lost (the caller then fails every
        pending call).
        """
        self.reader.buffer_updated(nbytes)
        return self._process(nbytes)

    cpdef Py_ssize_t receive(self, int fd) except -2:
        """Receive what arrived on the socket `fd` (without waiting) and
        complete the calls it answers, as process() does; return how many
        bytes were read: 0 when the peer closed the stream, -1 when nothing
        had arrived. Raises OSError as recv(2) fails, ProtocolError as
        process() does."""
        cdef FrameReader reader = self.reader
        cdef Py_ssize_t n, room
        reader.make_room()
        room = reader.cap - reader.end
        if room > RECV_WITH_GIL:
            with nogil:                         # a large read copies a while: others may run
                n = frpc_recv_now(fd, reader.data + reader.end, room)
        else:
            n = frpc_recv_now(fd, reader.data + reader.end, room)
        if n < 0:
            if errno == EAGAIN or errno == EWOULDBLOCK:
                return -1
            PyErr_SetFromErrno(OSError)
        if n > 0:
            reader.end += n
            self._process(n)
        return n

    cdef Py_ssize_t _process(self, Py_ssize_t nbytes) except -1:
        global _reply_now, _completing
        cdef Py_ssize_t completed = 0
        _reply_now = frpc_monotonic()
        if nbytes:
            self.last_io = _reply_now
        self.in_flight_at_read = len(self.pending)
        _completing = True
        try:
            completed = self._complete_frames()
        finally:
            _completing = False
        return completed

    cdef Py_ssize_t _complete_frames(self) except -1:
        cdef FrameView f
        cdef PyObject *found
        cdef Py_ssize_t completed = 0
        cdef long long load
        while self.reader.next_frame(&f):
            if f.kind == KIND_RESPONSE or f.kind == KIND_ERROR:
                load = -1
                if f.flags & FLAG_LOAD:
                    load = f.load
                    self.last_load = f.load
                key = f.seq
                found = PyDict_GetItem(self.pending, key)
                if found == NULL:
                    continue        # reply to a call that timed out or was cancelled
                slot = <object>found
                PyDict_DelItem(self.pending, key)
                completed += 1
                if f.kind == KIND_RESPONSE:
                    try:
                        value = unpack(f.payload, f.payload_len, self.reader.buf,
                                       self.reader.data, &self.limits)
                    except Exception as exc:
                        complete(slot, f.seq, _decode_error(exc), True, load)
                        continue
                    complete(slot, f.seq, value, False, load)
                else:
                    complete(slot, f.seq, self._remote_error(&f), True, load)
            elif f.kind == KIND_PONG:
                if f.flags & FLAG_LOAD:
                    self.last_load = f.load
                if f.seq == 0:
                    self._hello(&f)
                    continue
                slot = self.pending.pop(f.seq, None)
                if slot is not None:
                    complete(slot, f.seq, None, False, f.load if f.flags & FLAG_LOAD else -1)
                    completed += 1
            elif f.kind == KIND_ITEM:
                self._stream_item(&f)
            elif f.kind == KIND_CREDIT:
                self._stream_credit(&f)
            elif f.kind == KIND_OVERSIZED:
                completed += self._oversized(&f)
            elif f.kind == KIND_REQUEST or f.kind == KIND_NOTIFY:
                raise ProtocolError("the server sent a request frame")
            elif self.on_control is not None:
                self.on_control(f.kind, f.seq, PyBytes_FromStringAndSize(f.payload, f.payload_len))
        return completed

    cdef int _stream_item(self, FrameView *f) except -1:
        """An ITEM of a server stream: decoded (arrays as views of the receive
        buffer) and pushed to its slot. Beyond the credit we granted, or not
        decodable, it fails its stream alone (and the server is told to stop)."""
        cdef PyObject *found = PyDict_GetItem(self.pending, f.seq)
        cdef StreamSlot slot
        if found == NULL or type(<object>found) is not StreamSlot:
            return 0                        # a stream that ended here (cancelled, timed out)
        slot = <StreamSlot>found
        if slot.buffered >= slot.window_items:
            return self._fail_stream(slot, ProtocolError(
                f"the server sent more than the {slot.window_items} items of credit it had"))
        try:
            value = unpack(f.payload, f.payload_len, self.reader.buf, self.reader.data, &self.limits)
        except Exception as exc:
            return self._fail_stream(slot, _decode_error(exc))
        return slot.push(value, f.payload_len)

    cdef int _stream_credit(self, FrameView *f) except -1:
        cdef PyObject *found = PyDict_GetItem(self.pending, f.seq)
        if found == NULL or type(<object>found) is not StreamSlot:
            return 0
        try:
            grant = read_credit(unpack(f.payload, f.payload_len, None, NULL, &self.limits))
        except Exception as exc:
            return self._fail_stream(<StreamSlot>found, _decode_error(exc))
        return (<StreamSlot>found).grant(grant[0], grant[1])

    cdef int _fail_stream(self, StreamSlot slot, object error) except -1:
        """End a stream here with `error` and tell the server (CANCEL)."""
        cdef Py_ssize_t start
        cdef bint was_empty
        self.pending.pop(slot.seq, None)
        slot.complete(slot.seq, error, True, -1)
        self.lock_out()
        try:
            was_empty = self.out.frames == 0
            start = begin_frame(self.out, KIND_CANCEL, 0, slot.seq, NULL, 0)
            end_frame(self.out, start)
        finally:
            self.unlock_out()
        return self._encoded(was_empty)

    cdef int _oversized(self, FrameView *f) except -1:
        """A frame above our max_frame_size (skipped): a reply fails its call
        alone; return 1 when it completed one. Other kinds are dropped."""
        if f.flags != KIND_RESPONSE and f.flags != KIND_ERROR:
            return 0
        slot = self.pending.pop(f.seq, None)
        if slot is None:
            return 0
        complete(slot, f.seq, FrameTooLargeError(
            f"reply of {f.payload_len} bytes is above this client's max_frame_size="
            f"{self.reader.max_frame_size}"), True, -1)
        return 1

    cdef int _hello(self, FrameView *f) except -1:
        """The server's hello (PONG seq 0): a map of its settings. What is
        not understood is ignored (a hello is advice, never required)."""
        try:
            settings = unpack(f.payload, f.payload_len, None, NULL, &self.limits)
        except Exception:
            return 0
        if type(settings) is dict:
            self.peer_kwargs = 1 if settings.get("kwargs") is True else -1
            size = settings.get("max_frame_size")
            if type(size) is int and size >= 12:
                self.peer_max_frame = min(<object>size, 0xffffffff)
        return 0

    cdef object _remote_error(self, FrameView *f):
        try:
            body = unpack(f.payload, f.payload_len, None, NULL, &self.limits)
            if type(body) is not list or len(body) < 2:
                raise DecodeError("error reply is not [type, message]")
            if len(body) > 2 and type(body[2]) is str:     # the server sends tracebacks
                return remote_error(str(body[0]), str(body[1]), body[2])
            return remote_error(str(body[0]), str(body[1]))
        except Exception as exc:
            return _decode_error(exc)

    def fail_all(self, exc):
        """The connection is gone: fail every pending call with `exc`; return how many."""
        pending = self.pending
        self.pending = {}
        self.closed = True
        n = 0
        for seq, slot in pending.items():
            complete(slot, seq, exc, True, -1)
            n += 1
        return n


def close_inherited_tables():
    """In a forked child: every call table made before the fork belongs to the
    parent's connections; close them (nothing is sent on them again)."""
    global _generation
    _generation += 1
    for table in list(_tables):
        (<CallTable>table).closed = True


def fork_generation():
    """How many forks this process descends from (tables remember theirs)."""
    return _generation


cdef bint table_ready(CallTable t):
    """A call may go on `t` without asking its owner: open, no GOAWAY, made in
    this process, and calls pending or bytes received within IDLE_CHECK."""
    if t.closed or t.draining or t.generation != _generation:
        return False
    return bool(t.pending) or frpc_monotonic() - t.last_io <= IDLE_CHECK


cdef object _base_create_future = _BaseEventLoop.create_future


cdef object new_future(object loop):
    """loop.create_future(), without its Python frame where it is asyncio's
    own (which only makes a Future bound to the loop)."""
    if type(loop).create_future is _base_create_future:
        return _AsyncFuture(loop=loop)
    return loop.create_future()


@cython.final
cdef class AsyncCaller:
    """An asyncio client's call path (AsyncClient.go and AsyncClient.call)."""

    def __init__(self, CallSettings settings, expire, client=None):
        self.settings = settings
        self.expire = expire
        self.client = client
        self.table = None
        self.stats = ClientStats()

    def start(self, str method, object args, object timeout, bytes meta=None):
        """Encode a call on the current connection and return (future, seq); None
        when there is no usable connection (the caller connects, then retries).
        `meta`: the call's encoded metadata (None: the client's)."""
        cdef CallTable table = self.table
        cdef double t
        cdef unsigned long long seq
        if table is None or table.closed or table.draining or table.generation != _generation:
            return None
        t = self.settings.timeout(timeout)
        fut = new_future(self.loop)
        seq = table.request(method, args, fut, self.settings.deadline_ms(t),
                            self.settings.metadata() if meta is None else meta)
        if t >= 0.0:
            self.expire(table, seq, fut, method, t)
        return fut, seq

    async def call(self, str method, object args, object timeout, bytes meta=None):
        """Send a call and return its result (AsyncClient.call): connect first
        when there is no usable connection; count the call in `stats`. A
        compiled coroutine: the call's one await is on its reply."""
        cdef CallStats stats
        cdef double begun
        started = self.start(method, args, timeout, meta)
        if started is None:
            await self.client.connection()
            started = self.start(method, args, timeout, meta)
            if started is None:
                raise ConnectionClosedError(f"connection to {self.client.address} closed before the call was sent")
        fut, seq = started
        conn = self.table.owner                  # what start() sent on (nothing awaited since)
        stats = self.stats.of(method)
        begun = frpc_monotonic()
        try:
            result = await fut
        except _AsyncCancelled:
            conn.withdraw(seq)                   # the caller's task was cancelled: tell the server
            count_since(stats, begun, "Cancelled")
            raise
        except BaseException as exc:
            count_since(stats, begun, exc)
            raise
        count_since(stats, begun, None)
        return result


def table_is_ready(table):
    """table_ready() for the connection classes, for any call table (Go's too)."""
    if type(table) is CallTable:
        return table_ready(<CallTable>table)
    if table.closed or table.draining or table.generation != _generation:
        return False
    return bool(table.pending) or frpc_monotonic() - table.last_io <= IDLE_CHECK


@cython.final
cdef class CallSettings:
    """A client's per-call settings, compiled: what the call path reads per call."""

    def __init__(self, default_timeout=None, bint send_deadline=True, bytes meta=None, meta_fn=None):
        self.default_timeout = default_timeout
        self.send_deadline = send_deadline
        self.meta = meta
        self.meta_fn = meta_fn

    cdef double timeout(self, object timeout) except? -2.0:
        """A call's timeout in seconds, -1 for none: `timeout`, else the
        default, capped by the deadline of the call being served."""
        cdef double t
        if timeout is None:
            timeout = self.default_timeout
        if _context_value(_CURRENT) is not None:
            timeout = bound_timeout(timeout)      # raises DeadlineExceeded once it passed
        if timeout is None:
            return -1.0
        t = timeout
        if t != t:
            raise ValueError("timeout is NaN")
        if t == _INF:
            return -1.0
        return t if t > 0.0 else 0.0

    cdef object deadline_ms(self, double timeout):
        if timeout < 0.0 or not self.send_deadline:
            return None
        return <long long>min(timeout * 1000.0, 4294967295.0)

    cdef bytes metadata(self):
        if self.meta is not None or self.meta_fn is None:
            return self.meta
        value = self.meta_fn()
        return None if value is None else _packb(value)

    def call_timeout(self, timeout):
        """timeout() for Python callers: seconds, or None."""
        cdef double t = self.timeout(timeout)
        return None if t < 0.0 else t


@cython.final
cdef class Caller:
    """A blocking client's call path (Client.go and Client.call)."""

    def __init__(self, CallSettings settings, client):
        self.settings = settings
        self.client = client
        self.table = None
        self.stats = ClientStats()

    cdef CallTable _table(self):
        cdef CallTable t = self.table
        if t is None or not table_ready(t):
            self.client.connection()              # dials when needed; sets our table
            t = self.table
        return t

    cpdef CallFuture go(self, str method, object args, object timeout, bytes meta=None):
        """Client.go: start a call; its future fails at its timeout, waited on or not.
        `meta`: the call's encoded metadata (None: the client's)."""
        cdef double t = self.settings.timeout(timeout)
        cdef CallTable table = self._table()
        cdef CallFuture fut = table.go(method, args, self.settings.deadline_ms(t),
                                       self.settings.metadata() if meta is None else meta,
                                       table.engine, False, self.stats.of(method))
        if t >= 0.0:
            fut.deadline = frpc_monotonic() + t
            table.engine.watch_deadline(fut)
        return fut

    cpdef object call(self, str method, object args, object timeout, bytes meta=None):
        """Client.call: the result, or the call's error; at the timeout the call
        is withdrawn and TimeoutError raised. `meta`: as for go()."""
        cdef double t = self.settings.timeout(timeout)
        cdef CallTable table = self._table()
        cdef CallFuture fut = table.go(method, args, self.settings.deadline_ms(t),
                                       self.settings.metadata() if meta is None else meta,
                                       table.engine, True, self.stats.of(method))
        cdef CallStats stats
        if t < 0.0:
            return fut.result()
        try:
            return fut.result(t)
        except TimeoutError:
            if fut.state != PENDING:
                raise
            stats = fut.stats
            fut.stats = None                      # counted as what it is: a timeout
            if stats is not None:
                stats.observe(frpc_monotonic() - fut.started, "TimeoutError")
            fut.cancel()                          # a late reply is dropped; the server cancels the call
            raise TimeoutError(f"{method} did not complete within {t}s") from None


cdef object _decode_error(object exc):
    if isinstance(exc, DecodeError):
        return exc
    return DecodeError(f"the reply cannot be decoded: {type(exc).__name__}: {exc}")


# The clients' public call methods, compiled ---------------------------------------
# Client.go, Client.call and AsyncClient.call are these functions, bound as
# methods like any function in a class body: a call runs no Python frame of
# fastrpc's before its request is encoded (a frame there cost as much as
# encoding the call). With interceptors they take the client's Python path.

@cython.embedsignature(False)             # the signature is the method's, not this name's
def client_go(self, str method, *args, timeout=None, **kwargs):
    """Start a call and return its future (a concurrent.futures.Future).

    Like net/rpc's Go. Frames are written in batches; waiting on the
    future (result(), exception()) writes at once. With a timeout, the
    future fails with TimeoutError when it passes, waited on or not.
    """
    if self._chain is not None:
        return self._go_intercepted(method, args, kwargs, timeout)
    return (<Caller?>self._caller).go(method, args if not kwargs else call_args(args, kwargs), timeout)


@cython.embedsignature(False)             # the signature is the method's, not this name's
def client_call(self, str method, *args, timeout=None, **kwargs):
    """Call `method` with `args` (and keyword arguments) and return its result.

    Raises RemoteError (the handler raised or the method does not
    exist), TimeoutError (no reply within `timeout`, default the
    client's; the call is then withdrawn), ConnectionError (the
    connection failed).
    """
    if self._chain is not None:
        return self._call_intercepted(method, args, kwargs, timeout)
    return (<Caller?>self._caller).call(method, args if not kwargs else call_args(args, kwargs), timeout)


@cython.embedsignature(False)             # the signature is the method's, not this name's
async def async_client_call(self, str method, *args, timeout=None, **kwargs):
    """Call `method` with `args` (and keyword arguments); return its result
    or raise (see Client.call)."""
    if self._chain is not None:
        return await self._call_intercepted(method, args, kwargs, timeout)
    return await (<AsyncCaller?>self._caller).call(method, args if not kwargs else call_args(args, kwargs), timeout)


# Named as the methods they are (tracebacks, help(), introspection).
for _function, _qualname in ((client_go, "Client.go"), (client_call, "Client.call"),
                             (async_client_call, "AsyncClient.call")):
    _function.__name__ = _qualname.rpartition(".")[2]
    _function.__qualname__ = _qualname
