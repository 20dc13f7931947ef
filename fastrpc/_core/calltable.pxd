# The client call engine's compiled contract: what a connection's call table
# holds for each call in flight (a Slot), the future of a blocking call
# (CallFuture), the results of a map (Batch), and the per-connection
# CallTable that encodes requests and completes slots from replies.
#
# Thread safety: these objects are shared by the threads of a blocking
# client. Their state changes happen in compiled code that holds the GIL and
# runs no Python code between reading and writing a field, so each change is
# atomic; the output buffer, which encoding can leave mid-way through Python
# code (a numpy array's methods, an object's finalizer), has a lock of its own.
from cpython.pythread cimport PyThread_type_lock

from fastrpc._core.buffer cimport WriteBuffer
from fastrpc._core.codec cimport DecodeLimits
from fastrpc._core.frame cimport FrameReader, FrameView

cdef extern from "fastrpc_clock.h":
    double frpc_monotonic() nogil

cdef extern from "fastrpc_hist.h":
    enum: FRPC_NBUCKETS
    const double *frpc_bounds
    int frpc_bucket(double seconds) nogil


# The garbage collector's view of a call's objects (see untrack() in calltable.pyx).
cdef int untrack(object o) except -1
cdef int track(object o) except -1


cdef enum SlotState:
    PENDING = 0
    FINISHED = 1
    CANCELLED = 2


cdef class CallTable


cdef class Slot:
    """What a call table holds for a sequence id until its reply arrives."""
    cdef object waiter        # lock of the thread blocked until ready(); released once, by take_waiter()
    cdef int complete(self, unsigned long long seq, object value, bint is_error, long long load) except -1
    cdef bint ready(self)
    cdef int wake(self) except -1
    cpdef bint set_waiter(self, lock) except -1
    cpdef object take_waiter(self)
    cpdef object unwritten(self)


cdef class CallStats:
    """One method's calls as a client saw them: counts, errors, latency."""
    cdef public long long calls        # calls that ended (answered, failed, timed out, cancelled)
    cdef public long long errors       # of those, the ones that did not return a result
    cdef public dict error_types       # error type name -> count
    cdef public double seconds         # their durations, summed
    cdef long long hist[FRPC_NBUCKETS] # their durations by latency bucket
    cdef int observe(self, double seconds, object error) except -1


cdef class ClientStats:
    """A client's or balancer's CallStats by method (created as methods are called)."""
    cdef readonly dict methods         # method name -> CallStats
    cdef str last_method               # one-entry cache in front of methods
    cdef CallStats last_stats
    cdef CallStats of(self, str method)     # None while counting is off (set_metrics)


cdef class CallFuture(Slot):
    """The future of one blocking call (Client.go, Balancer.go)."""
    cdef int state            # SlotState
    cdef object value         # the result, when FINISHED without error
    cdef object error         # the exception, when FINISHED with one
    cdef list callbacks       # add_done_callback() functions not yet called, or None
    cdef list cf_waiters      # concurrent.futures.wait()/as_completed() waiters, or None
    cdef bint watched         # _condition was handed out: finish under it
    cdef readonly str method
    cdef public object engine     # drives I/O while result() waits: engine.wait(future, deadline)
    cdef public object source     # withdraws the call: a connection (withdraw(seq)) or a balanced call
    cdef CallTable table          # the table it was encoded in (a direct call, until it finishes), or None
    cdef public unsigned long long seq
    cdef public double deadline   # monotonic time the call times out, 0: none
    cdef public CallStats stats   # where its outcome is counted as it finishes, or None
    cdef public double started    # monotonic time it was sent (for stats)
    cdef object __weakref__
    cdef int finish(self, object value, object error, int state) except -1
    cdef int _finish_watched(self, object value, object error, int state) except -1
    cdef int _wait(self, object timeout) except -1


cdef class Progress(Slot):
    """Ready once fired since the last reset (the first of several batches done)."""
    cdef bint fired


cdef class Batch(Slot):
    """The results of a map(): one list slot per item, filled in reply order."""
    cdef readonly list results
    # Which seq answers which item, without a dict entry per item: runs of
    # consecutive seqs encoded together (one per request_batch()), as their
    # first seqs (ascending) and their first positions; answered[] marks the
    # items settled.
    cdef list run_seqs
    cdef list run_positions
    cdef bytearray answered
    cdef Py_ssize_t hint                 # the run the last reply fell in (replies come in order)
    cdef int register(self, unsigned long long seq) except -1
    cdef Py_ssize_t position_of(self, unsigned long long seq)
    cdef readonly Py_ssize_t remaining   # calls not answered yet
    cdef readonly Py_ssize_t issued      # calls encoded so far
    cdef readonly object first_error
    cdef public Py_ssize_t wake_below    # ready() once fewer than this many are in flight
    cdef public object on_progress       # called with no arguments when ready() becomes true
    cdef bint return_exceptions
    cdef public CallStats stats          # where each item's outcome is counted, or None
    cdef list run_times                  # monotonic time each run was registered (sent)
    cdef int observe(self, Py_ssize_t run, object error) except -1
    cdef Py_ssize_t _run_of(self, Py_ssize_t position)
    cdef int settle(self, Py_ssize_t position, object value, bint is_error) except -1


cdef class StreamSlot(Slot):
    """A stream call's state on the client: items received and not yet taken,
    the end (result or error), the credit each side has left."""
    cdef list ring                     # the items received and not taken: a ring of window_items slots
    cdef Py_ssize_t *sizes             # their payloads' sizes, in the same slots
    cdef Py_ssize_t head               # the slot of the oldest item
    cdef readonly Py_ssize_t buffered  # items in the ring
    cdef readonly int state            # SlotState: PENDING until the RESPONSE or ERROR (or a failure)
    cdef readonly object value         # the handler's return value, once FINISHED without error
    cdef readonly object error         # the exception, once FINISHED with one
    cdef readonly long long received   # items received so far
    cdef public unsigned long long seq
    cdef public object source          # the connection the stream is on
    cdef public long long send_items   # credit the server granted: items we may still send
    cdef public long long send_bytes   # and bytes (an item may be sent while this is > 0)
    cdef public object credit_waiter   # released (once) when credit arrives or the stream ends
    cdef long long window_items        # what we granted the server: items
    cdef long long window_bytes        # and bytes
    cdef readonly long long owed_items # taken since the last CREDIT we sent back
    cdef readonly long long owed_bytes
    cdef int push(self, object value, Py_ssize_t nbytes) except -1
    cdef object _pop(self)
    cdef int grant(self, long long items, long long nbytes) except -1
    cdef int _wake_sender(self) except -1


cdef class CallSettings:
    """What every call of one client carries, read once for the call path."""
    cdef public object default_timeout  # seconds, or None: no timeout
    cdef public bint send_deadline      # the timeout travels with the call
    cdef public bytes meta              # encoded metadata sent with every call, or None
    cdef public object meta_fn          # callable returning the metadata of a call, or None
    cdef double timeout(self, object timeout) except? -2.0
    cdef object deadline_ms(self, double timeout)
    cdef bytes metadata(self)


cdef class Arguments:
    """A call's positional and keyword arguments."""
    cdef readonly tuple args
    cdef readonly dict kwargs


cdef Arguments make_arguments(tuple args, dict kwargs)


cdef class CallTable:
    """One connection's calls: sequence ids, the output buffer, pending slots, the frame reader."""
    cdef readonly FrameReader reader
    cdef WriteBuffer out
    cdef PyThread_type_lock out_lock   # guards `out` (encoding, taking output)
    cdef readonly dict pending         # seq -> Slot or future-like object
    cdef unsigned long long next_seq
    cdef DecodeLimits limits
    cdef dict method_cache             # str -> UTF-8 bytes
    cdef str last_method               # one-entry cache in front of method_cache
    cdef bytes last_method_bytes
    cdef public unsigned long long written_seq   # requests up to this seq were taken for writing
    cdef public object on_control      # callback(kind, seq, payload) for PING, GOAWAY
    cdef public object last_load       # in-flight count the server last reported, or None
    cdef public bint closed            # the connection failed or was closed: nothing new is sent
    cdef public bint draining          # the server sent GOAWAY: no new calls here
    cdef public Py_ssize_t flush_frames   # a submit asks for a flush once this many frames wait
    cdef public Py_ssize_t flush_frames_max  # ... raised up to this while many calls are in flight
    cdef Py_ssize_t in_flight_at_read     # calls pending when the last bytes arrived (before completing any)
    cdef public Py_ssize_t flush_bytes    # ... or this many bytes
    cdef public object owner           # the connection: flush(), on_output(), withdraw_call(); None: none
    cdef public object engine          # drives the futures of calls made here (blocking clients)
    cdef public double last_io         # monotonic time bytes last arrived
    cdef public Py_ssize_t peer_max_frame  # largest frame the server accepts (its hello), 0: not known
    cdef public int peer_kwargs        # the server binds keyword arguments: 1 yes (its hello), -1 no, 0 not known
    cdef readonly object ext_hook      # None, or the client's ext_hook (kept alive for self.limits)
    cdef public unsigned long generation  # fork generation it was made in
    cdef object __weakref__

    cdef int lock_out(self) except -1
    cdef void unlock_out(self)
    cdef bytes _method(self, str method)
    cdef int _encoded(self, bint was_empty) except -1
    cdef Py_ssize_t _flush_limit(self)
    cdef int _encode_request(self, int kind, unsigned long long seq, bytes method,
                             object args, object deadline_ms, bytes meta, int flags=*) except -1
    cdef int _encode_other_args(self, bytes method, object args) except -1
    cdef int _stream_item(self, FrameView *f) except -1
    cdef int _stream_credit(self, FrameView *f) except -1
    cdef int _fail_stream(self, StreamSlot slot, object error) except -1
    cpdef unsigned long long request(self, str method, object args, object slot,
                                     object deadline_ms=*, bytes meta=*) except? 0
    cpdef CallFuture go(self, str method, object args, object deadline_ms, bytes meta, object engine,
                        bint flush=*, CallStats stats=*)
    cdef Py_ssize_t _complete_frames(self) except -1
    cdef object take_out(self)
    cpdef Py_ssize_t receive(self, int fd) except -2
    cdef Py_ssize_t _process(self, Py_ssize_t nbytes) except -1
    cdef object _remote_error(self, FrameView *f)
    cdef int _oversized(self, FrameView *f) except -1
    cdef int _hello(self, FrameView *f) except -1


cdef class Caller:
    """A blocking client's call path: its settings and its current connection."""
    cdef public CallSettings settings
    cdef public ClientStats stats      # the client's per-method counts
    cdef public CallTable table        # the current connection's table (None: dial first)
    cdef public object client          # the Client: connection() when table is not ready
    cdef CallTable _table(self)
    cpdef CallFuture go(self, str method, object args, object timeout, bytes meta=*)
    cpdef object call(self, str method, object args, object timeout, bytes meta=*)


cdef class AsyncCaller:
    """An asyncio client's call path: its settings and its current connection."""
    cdef public CallSettings settings
    cdef public ClientStats stats      # the client's per-method counts
    cdef public CallTable table        # the current connection's table (None: connect first)
    cdef public object loop            # the connection's event loop (its calls' futures are made there)
    cdef public object expire          # expire(table, seq, future, method, timeout): a call timed out
    cdef public object client          # the AsyncClient: connection(), address


cdef int count_since(CallStats stats, double begun, object error) except -1
cdef object new_future(object loop)
cdef int complete(object slot, unsigned long long seq, object value, bint is_error, long long load) except -1
cpdef int drain_callbacks() except -1
cdef double remaining(double deadline)
cdef bint table_ready(CallTable t)
