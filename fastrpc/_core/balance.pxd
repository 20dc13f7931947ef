# The balancer's compiled contract: per-endpoint state (Member), the
# balancer's pick-and-account core (Pool) and one try of a balanced call
# (Attempt), which is what a connection's call table holds for it. A reply
# completes the caller's future directly and updates the endpoint's
# counters and latency here; only failures, ejections and membership go to
# the Python policy (fastrpc.balancer.core).
from fastrpc._core.calltable cimport Slot, CallFuture, CallSettings, ClientStats, FRPC_NBUCKETS
from fastrpc._core.select cimport EndpointTable, Kernel


cdef class Attempt


cdef class Member:
    """A balancer's view of one endpoint."""
    cdef public object endpoint        # the Endpoint (address, weight, zone, coordinates)
    cdef public Py_ssize_t index       # position in the pool's table; -1 once removed
    cdef public object client          # the endpoint's client (dials, backs off, beats)
    cdef public object conn            # its current connection, for the fast path (None: ask the client)
    cdef public object dial_lock       # one dial at a time
    cdef public long long active       # calls in flight through this member
    cdef public long long calls        # attempts that ended
    cdef public long long errors       # attempts that failed: transport errors, timeouts
    cdef public long long remote_errors  # attempts the handler answered with an error
    cdef public long long failures     # consecutive failures counting towards ejection
    cdef public double last_answer     # monotonic time of its last reply, 0: none
    cdef public object last_error      # the last failure (text), or None
    cdef public bint removed           # no longer in the balancer; closes once idle
    cdef public bint healthy           # active health checks pass
    cdef public long long misses       # health checks missed in a row
    cdef public double ejected_until   # monotonic end of an ejection, 0: not ejected
    cdef public long long times_ejected
    cdef public long long ejections    # ejections in all
    cdef public bint eject_refused     # an ejection was refused (cap reached); warned once
    cdef public object ramp_from       # slow start: ramping since this time (None: full weight)
    cdef long long hist[FRPC_NBUCKETS] # answered attempts by round-trip time (fastrpc_hist.h buckets)
    cdef public double rtt_seconds     # the round-trip times of answered attempts, summed


cdef class Pool:
    """The balancer's state the call path reads: table, picker, members."""
    cdef public EndpointTable table    # per-endpoint arrays the kernels read
    cdef public object picker          # what picks: a compiled Kernel or a custom Strategy
    cdef Kernel kernel                 # picker, when compiled: picks need no Python
    cdef public list members           # Member by table index
    cdef public bint keyed             # picks depend on the call's key
    cdef public unsigned long long started   # calls started since the retry budget was credited
    cdef public double next_check      # monotonic: an ejection expiry or slow-start step is due
    cdef public object policy          # the Python balancer: failures, ejection, membership
    cdef public object lock            # the policy's lock (custom pickers run under it)
    cdef public bint closed
    cdef public object engine          # blocking balancers: the engine their futures wait on
    cdef public bint idempotent        # calls are idempotent unless they say otherwise
    cdef public double hedge_after     # seconds before an idempotent call is hedged, < 0: never
    cdef public ClientStats stats      # the balancer's calls by method, as its callers saw them
    cdef public CallSettings settings  # the balancer's per-call settings (timeout, deadline, metadata)
    cdef public bint start_health      # asyncio: the next call starts the health-check task
    cdef public object loop            # asyncio: the loop the connections live on (None: none yet)

    cpdef Member pick(self, unsigned long long key_hash)
    cpdef unsigned long long key_hash_for(self, object key) except? 0
    cpdef CallFuture go(self, CallSettings settings, str method, object args, object key, object timeout,
                        object idempotent, bytes meta=*, object observer=*)
    cdef list _go_async(self, Attempt a, object loop, CallSettings settings, str method, object args, object key,
                        object timeout, object idempotent, object driver, bytes meta, object observer,
                        bint *sent)
    cpdef bint start(self, Attempt a) except? False
    cdef int _send(self, Attempt a, object conn, object table) except -1
    cdef int release(self, Member m, double rtt, double now, long long load, bint answered,
                     bint remote) except -1
    cdef int release_n(self, Member m, Py_ssize_t count, Py_ssize_t remote, double rtt, double now,
                       long long load, bint answered) except -1


cdef class Attempt(Slot):
    """One try of a balanced call on one endpoint; registered in that endpoint's call table."""
    cdef public Pool pool
    cdef public Member member
    cdef public object sink            # the caller's future: a CallFuture or an asyncio future
    cdef public object conn            # the connection it went out on
    cdef object table                  # ... and that connection's call table
    cdef public unsigned long long seq
    cdef public double started         # monotonic time it was sent
    cdef public bint running           # sent and neither answered, failed nor withdrawn
    # the call, shared by its attempts
    cdef public str method
    cdef public object args       # a tuple, or an Args with keywords
    cdef public unsigned long long key_hash
    cdef public double deadline        # monotonic, 0: none
    cdef public object deadline_ms
    cdef public bytes meta
    cdef public bint idempotent
    cdef public Py_ssize_t number      # 1 for the first attempt
    cdef public list tried             # [(member, error)] of failed attempts, or None
    cdef public list peers             # the call's attempts in flight together (hedging), or None
    cdef public Attempt head           # the call's first attempt (None: this is it)
    cdef public Attempt current        # on the first attempt: the latest one sent (withdraw)
    cdef public object observer        # None, or told of each attempt: sent(a) -> its metadata, ended(a, error)
    cdef public Member answered_by     # on the first attempt: the endpoint that answered (None: none yet)
    cdef public Py_ssize_t answered_number   # ... and which attempt that was
    cpdef int end_call(self) except -1
