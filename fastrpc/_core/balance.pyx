# cython: language_level=3
"""The balancer's call path, compiled: pick an endpoint, send, account for the reply.

Owns: each endpoint's counters (Member), picking and counting a call in
flight (Pool), and one try of a balanced call (Attempt), which is the slot a
connection's call table completes. When a reply arrives, Attempt.complete
updates the endpoint's latency, load and counters and settles the caller's
future, without a Python lock or a Python frame. Everything that is policy
(retries, failover, hedging, ejection, health, membership) stays in Python
(fastrpc.balancer.plan and .core), reached only when a call fails, a hedge
fires, or membership changes.

Atomicity: picks by compiled kernels and counter updates run under the GIL
with no Python code in between, so they need no lock; custom Python
strategies pick under the policy's lock, and install() swaps a new
membership in one step.
"""
cimport cython

from fastrpc._core.calltable cimport (Slot, CallFuture, CallSettings, CallStats, CallTable, ClientStats, FINISHED,
                                      PENDING, complete, count_since, frpc_bucket, frpc_monotonic, new_future,
                                      table_ready, track, untrack, FRPC_NBUCKETS)
from fastrpc._core.select cimport EndpointTable, Kernel, hash_key

import threading
from asyncio import CancelledError as _AsyncCancelled, get_running_loop as _running_loop

from fastrpc._core.calltable import call_args
from fastrpc.errors import ConnectionClosedError, NoEndpointError, RemoteError, TimeoutError


cdef inline bint _is_answer(object exc):
    # A RemoteError is the handler's answer; DeadlineExceeded is remote but a timeout.
    return isinstance(exc, RemoteError) and not isinstance(exc, TimeoutError)


def is_answer(exc):
    """Whether an error is the endpoint's answer (RemoteError, not a timeout)
    rather than a failure of the endpoint or the path to it."""
    return _is_answer(exc)


@cython.final
cdef class Member:
    """A balancer's view of one endpoint: its client, health and counters."""

    def __init__(self, endpoint, ramp_from=None):
        self.endpoint = endpoint
        self.index = -1
        self.dial_lock = threading.Lock()
        self.healthy = True
        self.ramp_from = ramp_from

    def __repr__(self):
        return f"<Member {self.endpoint.address} index={self.index} active={self.active}>"

    def histogram(self):
        """Answered attempts per round-trip-time bucket (fastrpc's
        LATENCY_BUCKETS, then the rest); not cumulative."""
        return [self.hist[i] for i in range(FRPC_NBUCKETS)]


@cython.final
cdef class Pool:
    """What the call path reads: the state table, the picker and the members.

    `policy` is the Python side (fastrpc.balancer.plan.Planner); its lock
    guards membership changes and custom strategies.
    """

    def __init__(self, policy, lock):
        self.policy = policy
        self.lock = lock
        self.members = []
        self.table = EndpointTable(0)
        self.picker = None
        self.kernel = None
        self.keyed = False
        self.next_check = float("inf")
        self.engine = None
        self.idempotent = False
        self.hedge_after = -1.0
        self.stats = ClientStats()

    def install(self, EndpointTable table, picker, list members, bint keyed):
        """Swap in a new membership at once: table, picker, members (by index)."""
        cdef Member m
        cdef Py_ssize_t j
        for j in range(len(members)):
            m = <Member>members[j]
            m.index = j
        self.table = table
        self.picker = picker
        self.kernel = picker if isinstance(picker, Kernel) else None
        self.members = members
        self.keyed = keyed

    cpdef Member pick(self, unsigned long long key_hash):
        """Pick an endpoint for a call and count the call in flight there."""
        cdef Py_ssize_t i
        cdef Member m
        if self.closed:
            raise ConnectionClosedError("balancer is closed")
        if self.kernel is not None:
            i = self.kernel.pick(key_hash)
            if i < 0:
                raise NoEndpointError(self.policy.no_endpoint_reason() if not self.members
                                      else "the strategy picked no endpoint")
            m = <Member>self.members[i]
            self.table.begin(i)
        else:
            with self.lock:                     # a custom strategy runs Python
                i = self.picker.pick(key_hash) if self.picker is not None else -1
                if i < 0:
                    raise NoEndpointError(self.policy.no_endpoint_reason() if not self.members
                                          else "the strategy picked no endpoint")
                m = <Member>self.members[i]
                self.table.begin(i)
        m.active += 1
        self.started += 1
        return m

    def begin(self, Member m):
        """Count a call in flight at `m`, chosen by the policy (a retry's untried endpoint)."""
        if m.index >= 0 and not m.removed:
            self.table.begin(m.index)
        m.active += 1
        self.started += 1

    def assign(self, list positions, object key_hashes):
        """Pick an endpoint for each item position (a map window); return
        [(member, [positions])] grouped by endpoint, each counted in flight.
        `key_hashes`: a list of every item's key hash, or None."""
        cdef dict groups = {}
        cdef list order = []
        cdef list picked = None                 # the positions of the last member picked
        cdef Member m, last = None
        cdef unsigned long long key_hash
        try:
            for p in positions:
                if key_hashes is not None:
                    key_hash = key_hashes[p]
                else:
                    key_hash = self.table.next_random() if self.keyed else 0
                m = self.pick(key_hash)
                if m is not last:               # (runs of one endpoint skip the lookup)
                    group = groups.get(m)
                    if group is None:
                        group = groups[m] = (m, [])
                        order.append(group)
                    last = m
                    picked = <list>(<tuple>group)[1]
                picked.append(p)
        except BaseException:
            for m, picked in order:             # nothing is sent: take the picks back
                for _ in picked:
                    self.release_withdrawn(m)
            raise
        return order

    cpdef unsigned long long key_hash_for(self, object key) except? 0:
        """The hash a call's key picks by: its hash, a random one (keyed
        strategies without a key), or 0."""
        if key is not None:
            return hash_key(key)
        return self.table.next_random() if self.keyed else 0

    cdef int release(self, Member m, double rtt, double now, long long load, bint answered,
                     bint remote) except -1:
        """A call through `m` ended: answered (a result or the handler's
        error, `rtt` seconds after it was sent) or withdrawn (rtt < 0)."""
        return self.release_n(m, 1, 1 if remote else 0, rtt, now, load, answered)

    cdef int release_n(self, Member m, Py_ssize_t count, Py_ssize_t remote, double rtt, double now,
                       long long load, bint answered) except -1:
        """`count` calls through `m` ended alike (`remote` of them with the
        handler's error): release() for a map batch, at the cost of one."""
        m.active -= count
        m.calls += count
        if answered:
            m.hist[frpc_bucket(rtt)] += count
            m.rtt_seconds += rtt * count
            m.last_answer = now
            m.remote_errors += remote
            if m.failures:
                m.failures = 0
                m.eject_refused = False
        if m.index >= 0 and not m.removed:
            self.table.end_many(m.index, count, rtt if answered else -1.0, now, load)
        if m.removed and m.active == 0:
            self.policy.member_idle(m)
        if now >= self.next_check:
            self.policy.maintain()
        return 0

    def release_withdrawn(self, Member m):
        """A call through `m` was withdrawn (cancelled, or it lost a hedge): not a failure."""
        self.release(m, -1.0, frpc_monotonic(), -1, False, False)

    def release_answered_many(self, Member m, Py_ssize_t count, Py_ssize_t remote, double rtt,
                              long long load=-1):
        """`count` calls through `m` were answered (`remote` of them with the
        handler's error), `rtt` seconds after they were sent: a map batch."""
        if count > 0:
            self.release_n(m, count, remote, rtt, frpc_monotonic(), load, True)

    # the call path ---------------------------------------------------------------
    def send(self, Attempt a, object conn):
        """Send attempt `a` (its member picked) on `conn`, a ready connection of
        that member. Raises what encoding raises; ConnectionClosedError when
        the connection closed meanwhile (the call was not sent)."""
        self._send(a, conn, conn.table)

    cdef int _send(self, Attempt a, object conn, object table) except -1:
        a.conn = conn
        a.table = table
        a.started = frpc_monotonic()
        a.running = True
        if a.observer is not None:
            a.meta = a.observer.sent(a)           # this attempt's own metadata (its trace context)
        try:
            if type(table) is CallTable:
                a.seq = (<CallTable>table).request(a.method, a.args, a, a.deadline_ms, a.meta)
            else:
                a.seq = table.request(a.method, a.args, a, a.deadline_ms, a.meta)
        except BaseException:
            a.running = False
            raise
        return 0

    cpdef CallFuture go(self, CallSettings settings, str method, object args, object key, object timeout,
                        object idempotent, bytes meta=None, object observer=None):
        """Start a blocking balanced call; return its future (Balancer.go).

        The first attempt goes out now on the picked endpoint's connection,
        or, when that endpoint has none ready, once the driver has connected
        (dial_later(): on the engine's dial threads). A hedged call's hedge check is scheduled on the engine's timers.
        """
        cdef CallFuture fut = CallFuture.__new__(CallFuture)
        cdef Attempt a = Attempt.__new__(Attempt)
        cdef double t = settings.timeout(timeout)
        cdef object engine = self.engine
        cdef bint hedged
        fut.method = method
        fut.engine = engine
        fut.stats = self.stats.of(method)
        fut.started = frpc_monotonic()
        a.pool = self
        a.sink = fut
        a.method = method
        a.args = args
        a.key_hash = self.key_hash_for(key) if key is not None or self.keyed else 0
        if t >= 0.0:
            a.deadline = frpc_monotonic() + t
            fut.deadline = a.deadline
            a.deadline_ms = settings.deadline_ms(t)
        a.meta = settings.metadata() if meta is None else meta
        a.observer = observer
        if observer is not None:
            track(a)                      # an interceptor's observer may refer to it
        a.idempotent = self.idempotent if idempotent is None else idempotent
        hedged = a.idempotent and self.hedge_after >= 0.0
        a.number = 1
        fut.source = a
        if not self.start(a):
            # Connecting takes up to connect_timeout: not in the caller's
            # thread, where it would outlast the call's own timeout.
            self.policy.driver.dial_later(a)
        if t >= 0.0 and fut.state == PENDING:
            engine.watch_deadline(fut)
        if hedged and fut.state == PENDING:
            engine.schedule(self.hedge_after, a.hedge_check)
        return fut

    def go_async(self, object loop, CallSettings settings, str method, object args, object key,
                 object timeout, object idempotent, object driver, bytes meta=None, object observer=None):
        """Start an asyncio balanced call (AsyncBalancer.call): return (future,
        first attempt, sent, timers). When not sent, the picked endpoint needs
        a connection first (the driver connects, then sends the attempt).
        `timers` (None, or a list to cancel when the call ends) holds the
        call's timeout, which calls driver._expire(attempt, future), and its hedge."""
        cdef Attempt a = Attempt.__new__(Attempt)
        cdef bint sent = False
        timers = self._go_async(a, loop, settings, method, args, key, timeout, idempotent, driver, meta, observer,
                                &sent)
        return a.sink, a, sent, timers

    cdef list _go_async(self, Attempt a, object loop, CallSettings settings, str method, object args, object key,
                        object timeout, object idempotent, object driver, bytes meta, object observer,
                        bint *sent):
        """go_async() with its first attempt given (`a`, whose sink becomes the
        future): returns the timers, sets `sent`."""
        cdef double t = settings.timeout(timeout)
        cdef list timers = None
        fut = new_future(loop)
        a.pool = self
        a.sink = fut
        a.method = method
        a.args = args
        a.key_hash = self.key_hash_for(key) if key is not None or self.keyed else 0
        if t >= 0.0:
            a.deadline = frpc_monotonic() + t
            a.deadline_ms = settings.deadline_ms(t)
        a.meta = settings.metadata() if meta is None else meta
        a.observer = observer
        if observer is not None:
            track(a)
        a.idempotent = self.idempotent if idempotent is None else idempotent
        a.number = 1
        sent[0] = self.start(a)
        if t >= 0.0:
            timers = [loop.call_later(t, driver._expire, a, fut)]
        if a.idempotent and self.hedge_after >= 0.0:
            if timers is None:
                timers = []
            timers.append(loop.call_later(self.hedge_after, self.policy.hedge, a))
        return timers

    cpdef bint start(self, Attempt a) except? False:
        """Pick an endpoint for `a` and send it on that endpoint's connection if
        it has a ready one: True. False: the member is picked (a.member, counted
        in flight) but needs a connection first."""
        cdef Member m = self.pick(a.key_hash)
        cdef CallTable t
        a.member = m
        conn = m.conn
        if conn is None:
            return False
        table = conn.table
        if type(table) is CallTable:
            t = <CallTable>table
            if not table_ready(t) and not conn.ready():   # ready() checks an idle connection
                return False
        elif not conn.ready():
            return False
        try:
            self._send(a, conn, table)
        except ConnectionClosedError:
            return False
        return True


cdef inline int _settle(object sink, object value, bint is_error) except -1:
    if type(sink) is CallFuture:
        if is_error:
            return (<CallFuture>sink).finish(None, value, FINISHED)
        return (<CallFuture>sink).finish(value, None, FINISHED)
    return complete(sink, 0, value, is_error, -1)


@cython.final
cdef class Attempt(Slot):
    """One try of a balanced call; the slot its endpoint's call table completes."""
    # Not tracked by the garbage collector while it only succeeds (one per
    # call, like CallFuture; see untrack() in calltable.pyx): once the
    # caller's future is settled, end_call() drops the references that link
    # a call's attempts. Anything else that may close a cycle through it (a
    # failure and its traceback, a retry or hedge, a withdrawal, an
    # observer) tracks it again first.

    def __cinit__(self):
        untrack(self)

    cdef int complete(self, unsigned long long seq, object value, bint is_error, long long load) except -1:
        cdef Pool pool = self.pool
        cdef Attempt head
        cdef double now
        if not self.running:
            return 0
        self.running = False
        if is_error:
            track(self)
        if is_error and not _is_answer(value):
            pool.policy.attempt_failed(self, value)
            return 0
        now = frpc_monotonic()
        pool.release(self.member, now - self.started, now, load, True, is_error)
        if self.observer is not None:
            self.observer.ended(self, value if is_error else None)
        head = self.head if self.head is not None else self
        head.answered_by = self.member            # for interceptors: who answered, which attempt
        head.answered_number = self.number
        if self.peers is not None:
            pool.policy.hedge_won(self)
        if is_error:
            value = pool.policy.remote_error(self, value)
        _settle(self.sink, value, is_error)
        self.end_call()
        table = self.table
        if table is None:
            return 0
        if (<CallTable>table).draining if type(table) is CallTable else table.draining:
            pool.policy.going_away(self.member)
        return 0

    cdef bint ready(self):
        return not self.running

    def unwritten_for(self, future):
        """The connection holding the call's latest request still unwritten, or None."""
        cdef Attempt current = self.current if self.current is not None else self
        conn = current.conn
        if conn is None or not current.running or current.seq <= conn.table.written_seq:
            return None
        return conn

    def keep_in_view(self):
        """Track this attempt in the garbage collector: it is about to hold
        what may close a cycle (a failure and its traceback)."""
        track(self)

    def hedge_check(self):
        """The hedge delay passed (a timer): the planner decides."""
        self.pool.policy.hedge(self)

    def withdraw_call(self, future):
        """The caller's future was cancelled: withdraw every attempt in flight."""
        track(self)
        self.pool.policy.withdraw(self)

    @property
    def settled(self):
        """The call this attempt belongs to has its outcome (or was withdrawn):
        a connection that arrives late must not send it any more."""
        sink = self.sink
        if sink is None:
            return True
        if type(sink) is CallFuture:
            return (<CallFuture>sink).state != PENDING
        return sink.done()

    def expire_call(self, future):
        """The caller's future timed out: give up the call, naming the endpoints tried."""
        track(self)
        self.pool.policy.expire(self)

    def fail(self, error):
        """Settle the caller's future with `error` (the policy gave up)."""
        track(self)
        _settle(self.sink, error, True)
        self.end_call()

    def succeed(self, value):
        """Settle the caller's future with `value`."""
        _settle(self.sink, value, False)
        self.end_call()

    cpdef int end_call(self) except -1:
        """The call is settled: drop what links its attempts to each other."""
        cdef Attempt head = self.head if self.head is not None else self
        cdef Attempt peer
        head.current = None
        head.tried = None
        if self.peers is not None:
            for p in self.peers:
                peer = <Attempt>p
                peer.peers = None
                peer.tried = None
                peer.head = None
        self.tried = None
        self.head = None
        self.args = None
        return 0

    def follow_up(self):
        """A new attempt of the same call (a retry or a hedge), not yet picked or sent."""
        cdef Attempt a = Attempt.__new__(Attempt)
        track(self)                       # a retry or a hedge: failures and peers link them
        track(a)
        a.pool = self.pool
        a.sink = self.sink
        a.method = self.method
        a.args = self.args
        a.key_hash = self.key_hash
        a.deadline = self.deadline
        a.deadline_ms = self.deadline_ms
        a.meta = self.meta
        a.idempotent = self.idempotent
        a.number = self.number + 1
        a.observer = self.observer
        a.tried = self.tried
        a.peers = self.peers
        a.head = self.head if self.head is not None else self
        return a

    def __repr__(self):
        where = self.member.endpoint.address if self.member is not None else "not picked"
        return f"<Attempt {self.number} of {self.method} at {where}{' running' if self.running else ''}>"


def scatter(list results, list positions, list values):
    """results[positions[k]] = values[k] for every k (a map batch's answers)."""
    cdef Py_ssize_t k, p
    for k in range(len(positions)):
        p = positions[k]
        results[p] = values[k]


def gather(list items, list positions):
    """[items[p] for p in positions]: the items of one endpoint's share of a map window."""
    cdef Py_ssize_t k, p, n = len(positions)
    cdef list out = [None] * n
    for k in range(n):
        p = positions[k]
        out[k] = items[p]
    return out


def new_attempt(Pool pool, object sink, str method, object args, unsigned long long key_hash,
                double deadline, object deadline_ms, bytes meta, bint idempotent):
    """The first attempt of a balanced call (not yet picked or sent)."""
    cdef Attempt a = Attempt.__new__(Attempt)
    a.pool = pool
    a.sink = sink
    a.method = method
    a.args = args
    a.key_hash = key_hash
    a.deadline = deadline
    a.deadline_ms = deadline_ms
    a.meta = meta
    a.idempotent = idempotent
    a.number = 1
    return a


# The balancers' public call methods, compiled -------------------------------------
# Balancer.go, Balancer.call and AsyncBalancer.call are these functions,
# bound as methods like any function in a class body: a balanced call runs no
# Python frame of fastrpc's on its way out nor, asyncio, on its way back.
# With interceptors they take the balancer's Python path.

@cython.embedsignature(False)             # the signature is the method's, not this name's
def balancer_go(self, str method, *args, key=None, timeout=None, idempotent=None, **kwargs):
    """Start a call on the endpoint the strategy picks; return its future
    (a concurrent.futures.Future).

    A failure before the call was sent (cannot connect, connection gone)
    is retried on another endpoint ("failover"), the same one
    ("failtry"), or not at all ("failfast"). A call that may have run
    (timeout, connection lost after sending) is retried only when
    `idempotent`. RemoteError (the handler raised) is never retried.
    Errors name the endpoints tried (``exc.endpoints``). With
    failure="backup", an idempotent call gets a hedged copy on another
    endpoint after backup_after; the first reply wins.
    """
    cdef Pool pool
    if self._chain is not None:
        return self._go_intercepted(method, args, kwargs, key, timeout, idempotent)
    pool = <Pool?>self.pool
    return pool.go(pool.settings, method, args if not kwargs else call_args(args, kwargs), key, timeout, idempotent)


@cython.embedsignature(False)             # the signature is the method's, not this name's
def balancer_call(self, str method, *args, key=None, timeout=None, idempotent=None, **kwargs):
    """Call `method` on the endpoint the strategy picks; return the result
    (failures as in go()). Raises the call's error, or TimeoutError."""
    cdef Pool pool
    cdef CallFuture fut
    if self._chain is not None:
        return self._call_intercepted(method, args, kwargs, key, timeout, idempotent)
    pool = <Pool?>self.pool
    fut = pool.go(pool.settings, method, args if not kwargs else call_args(args, kwargs), key, timeout, idempotent)
    try:
        return fut.result()
    except BaseException:
        if fut.state == PENDING:                # interrupted (KeyboardInterrupt): withdraw
            fut.cancel()
        raise


@cython.embedsignature(False)             # the signature is the method's, not this name's
async def async_balancer_call(self, str method, *args, key=None, timeout=None, idempotent=None, **kwargs):
    """Call `method` on the endpoint the strategy picks (see Balancer.go for
    what happens on failure); return the result or raise."""
    cdef Pool pool
    cdef Attempt a
    cdef CallStats stats
    cdef double begun
    cdef bint sent = False
    if self._chain is not None:
        return await self._call_intercepted(method, args, kwargs, key, timeout, idempotent)
    pool = <Pool?>self.pool
    if pool.start_health:
        self._ensure_health()
    # The call's future is made on the loop its connections live on, as an
    # AsyncClient's is: asyncio.get_running_loop() is a system call on some
    # Pythons (3.11 checks getpid() each time), as costly as the rest of a call.
    loop = pool.loop
    if loop is None:
        loop = _running_loop()
    a = Attempt.__new__(Attempt)
    timers = pool._go_async(a, loop, pool.settings, method, args if not kwargs else call_args(args, kwargs), key,
                            timeout, idempotent, self, None, None, &sent)
    fut = a.sink
    if not sent:
        loop.create_task(self._dial_and_send(a))    # connect first, the call's timeout running meanwhile
    stats = pool.stats.of(method)
    begun = frpc_monotonic()
    try:
        result = await fut
    except _AsyncCancelled:
        if not fut.done() or fut.cancelled():
            pool.policy.withdraw(a)             # the caller's task was cancelled
        count_since(stats, begun, "Cancelled")
        raise
    except BaseException as exc:
        count_since(stats, begun, exc)
        raise
    finally:
        if timers is not None:
            for timer in timers:
                timer.cancel()
    count_since(stats, begun, None)
    return result


# Named as the methods they are (tracebacks, help(), introspection).
for _function, _qualname in ((balancer_go, "Balancer.go"), (balancer_call, "Balancer.call"),
                             (async_balancer_call, "AsyncBalancer.call")):
    _function.__name__ = _qualname.rpartition(".")[2]
    _function.__qualname__ = _qualname
