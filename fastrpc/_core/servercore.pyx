# cython: language_level=3
"""The server's per-connection hot loop.

Owns: turning received bytes into calls and replies. Synchronous handlers run
inline here and their replies are encoded straight into the connection's
output buffer; async and blocking handlers, cancels, pings and GOAWAY are
handed to the Python connection object (fastrpc.server), which owns policy;
so are streams (their frames are decoded here, their handlers driven there).
One bad frame payload costs one error reply; only lost framing raises.
"""
cimport cython
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.ref cimport PyObject
from cpython.tuple cimport PyTuple_GET_SIZE
from cpython.pythread cimport PyThread_get_thread_ident
from libc.string cimport memcmp

from fastrpc._core.buffer cimport WriteBuffer, frpc_store_u32
from fastrpc._core.codec cimport DecodeLimits, pack, pack_args, unpack, unpack_args
from fastrpc._core.frame cimport (FrameReader, FrameView, begin_frame, end_frame, read_credit,
                            KIND_REQUEST, KIND_RESPONSE, KIND_ERROR, KIND_NOTIFY, KIND_PING,
                            KIND_PONG, KIND_CANCEL, KIND_GOAWAY, KIND_OVERSIZED,
                            KIND_ITEM, KIND_END, KIND_CREDIT, FLAG_DEADLINE, FLAG_LOAD,
                            FLAG_STREAM, HEADER_SIZE)

from fastrpc.errors import (ProtocolError, DecodeError, EncodeError, FrameTooLargeError, error_message,
                            error_type_name)

import traceback
import types

cdef extern from "fastrpc_clock.h":
    double frpc_monotonic() nogil

cdef extern from "fastrpc_hist.h":
    enum: FRPC_NBUCKETS
    const double *frpc_bounds
    int frpc_bucket(double seconds) nogil

# Per-call counting on (the default); off only to measure what it costs.
cdef bint _metrics = True


def set_metrics(bint enabled):
    """Count calls per handler (the default) or not (fastrpc.observability.set_metrics)."""
    global _metrics
    _metrics = enabled


#: Upper bounds (seconds) of the latency histograms (csrc/fastrpc_hist.h);
#: one more bucket takes the calls above the last.
LATENCY_BUCKETS = tuple(frpc_bounds[i] for i in range(FRPC_NBUCKETS - 1))

cdef object _coroutine_type = types.CoroutineType

cdef enum HandlerMode:
    INLINE = 0      # plain function: called inside the read loop
    ASYNC = 1       # coroutine function: run as a task
    BLOCKING = 2    # @fastrpc.blocking: run in the thread pool

MODE_INLINE = INLINE
MODE_ASYNC = ASYNC
MODE_BLOCKING = BLOCKING

cdef enum StreamBits:
    STREAM_OUT_BIT = 1    # a generator: the server sends items
    STREAM_IN_BIT = 2     # takes an iterator of the client's items

STREAM_OUT = STREAM_OUT_BIT
STREAM_IN = STREAM_IN_BIT


@cython.final
cdef class Handler:
    """A registered method: the callable, how it runs, and its arity."""
    cdef readonly object func
    cdef readonly str name
    cdef readonly int mode
    cdef readonly Py_ssize_t min_args
    cdef readonly Py_ssize_t max_args     # -1: any number (*args)
    cdef readonly object bind             # None, or bind(args, kwargs) -> (args, kwargs); TypeError: they do not fit
    cdef readonly bint kw_required        # it has a keyword-only parameter without a default
    cdef readonly int stream              # STREAM_OUT | STREAM_IN bits: what of it streams (0: unary)
    cdef readonly Py_ssize_t input_at     # STREAM_IN: the position of the parameter the client's items go to
    cdef public long long calls           # calls it was asked to serve, over every protocol
    cdef public long long errors          # of those, the ones answered (or ended, notifications) with an error
    cdef public dict error_types          # error type name -> count (touched only on errors)
    cdef public double seconds            # sum of the finished calls' durations
    cdef long long hist[FRPC_NBUCKETS]    # finished calls by duration, LATENCY_BUCKETS (+ the rest)

    def __init__(self, func, str name, int mode, Py_ssize_t min_args, Py_ssize_t max_args,
                 bind=None, bint kw_required=False, int stream=0, Py_ssize_t input_at=-1):
        self.func = func
        self.stream = stream
        self.input_at = input_at
        self.name = name
        self.mode = mode
        self.min_args = min_args
        self.max_args = max_args
        self.bind = bind
        self.kw_required = kw_required
        self.error_types = {}

    def __repr__(self):
        return f"Handler({self.name!r}, mode={self.mode})"

    cpdef record(self, double seconds, str error=None):
        """A call of this method finished after `seconds`; `error`: the type
        name of the error it was answered with (None: it succeeded)."""
        if not _metrics:
            return
        self.hist[frpc_bucket(seconds)] += 1
        self.seconds += seconds
        if error is not None:
            self.errors += 1
            self.error_types[error] = self.error_types.get(error, 0) + 1

    def histogram(self):
        """Finished calls per latency bucket: a list as long as LATENCY_BUCKETS
        plus one (the calls above the last bound), not cumulative."""
        return [self.hist[i] for i in range(FRPC_NBUCKETS)]

    def inherit(self, Handler other):
        """Take over `other`'s counts (a handler rebuilt, e.g. with interceptors)."""
        self.calls = other.calls
        self.errors = other.errors
        self.error_types = dict(other.error_types)
        self.seconds = other.seconds
        for i in range(FRPC_NBUCKETS):
            self.hist[i] = other.hist[i]


cdef class ServerCore


# The call an inline handler is serving right now, for current_call(): set
# around the handler's run on the loop's thread, read (and its metadata
# decoded) only if the handler asks. Costs a few stores when nobody does.
cdef ServerCore _inline_core = None
cdef FrameView *_inline_frame = NULL
cdef Handler _inline_handler = None
cdef double _inline_start = 0
cdef long _inline_thread = 0


def inline_call():
    """The inline handler running on this thread, as (method, deadline,
    metadata, peer), or None. The deadline is time.monotonic() based."""
    if _inline_core is None or _inline_thread != <long>PyThread_get_thread_ident():
        return None
    return _inline_core._describe(_inline_frame, _inline_handler, _inline_start)


@cython.final
cdef class LoadGauge:
    """Calls a server has in flight (tasks and thread-pool calls), shared by its connections.

    Every reply and PONG carries the current value (FLAG_LOAD), which is what
    the client-side balancers' least-loaded strategies read.
    """
    cdef public long long value

    def __repr__(self):
        return f"LoadGauge({self.value})"


cdef inline str _arity_message(Handler h, Py_ssize_t given):
    if h.max_args == h.min_args:
        want = f"{h.min_args}"
    elif h.max_args < 0:
        want = f"at least {h.min_args}"
    else:
        want = f"{h.min_args} to {h.max_args}"
    return f"{h.name} takes {want} argument{'s' if want != '1' else ''} ({given} given)"


def not_found_message(str name, services):
    """The error text for a call of `name`, which is not registered: net/rpc's
    texts, so that fastrpc and Go callers read the same (`services`: the
    registered service names, UTF-8)."""
    dot = name.rfind(".")
    if dot < 0:
        return f"rpc: service/method request ill-formed: {name}"
    if name[:dot].encode("utf-8", "surrogateescape") not in services:
        return f"rpc: can't find service {name}"
    return f"rpc: can't find method {name}"


cdef inline str _error_type(BaseException exc):
    return error_type_name(exc)         # a registered name, or the class name


def format_traceback(BaseException exc):
    """The traceback text a server sends with send_tracebacks."""
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


@cython.final
cdef class ServerCore:
    """Per-connection state: frame reader, output buffer, dispatch table.

    `conn` is the Python connection object; the core calls its methods
    spawn(handler, seq, args, notify, deadline_ms, meta, kwargs), cancel(seq),
    log_handler_error(name, exc),
    on_goaway(), on_pong(seq) and log_notify_error(name, exc).
    """
    cdef FrameReader reader
    cdef WriteBuffer out
    cdef dict handlers          # method name (UTF-8 bytes) -> Handler
    cdef object services        # set of service names (UTF-8 bytes), for "can't find service"
    cdef object conn            # Python-side connection (policy)
    cdef DecodeLimits limits
    cdef bytes last_name        # one-entry lookup cache: most calls repeat the method
    cdef Handler last_handler
    cdef public Py_ssize_t calls   # requests and notifications received
    cdef public LoadGauge load     # stamped on replies and PONGs; None: no load reports
    cdef public bint hold          # backpressure: leave further frames in the buffer for later
    cdef public object refuse      # None, or why every call is answered "Unavailable" unrun
    cdef public object authorize   # None, or authorize(method, metadata) run before each call; raising refuses it
    cdef public bint send_tracebacks   # error replies carry the handler's traceback (Server(send_tracebacks=True))
    cdef readonly object ext_hook      # None, or the server's ext_hook (kept alive for self.limits)
    cdef double clock                  # when the last inline call of this process() ended (0: none yet)

    def __init__(self, dict handlers, services, conn, *,
                 Py_ssize_t max_frame_size, Py_ssize_t max_depth,
                 Py_ssize_t max_len, Py_ssize_t max_bytes, bint bytes_views=False,
                 default=None, ext_hook=None, bint keep_tuples=False, bint vectored=False):
        self.reader = FrameReader(max_frame_size)
        # A request above max_frame_size fails alone; its bytes are dropped
        # as they come, and the connection's other calls go on.
        self.reader.skip_oversized = True
        self.out = WriteBuffer(2048)          # grows with the replies of a busy connection
        self.handlers = handlers
        self.services = services
        self.conn = conn
        self.limits.max_depth = max_depth
        self.limits.max_len = max_len
        self.limits.max_bytes = max_bytes
        self.limits.bytes_views = bytes_views
        # Extension hooks: the limits hold a borrowed pointer, self.ext_hook the reference.
        self.ext_hook = ext_hook
        self.limits.ext_hook = NULL if ext_hook is None else <PyObject *>ext_hook
        self.out.default = default
        self.out.keep_tuples = keep_tuples
        self.out.vectored = vectored          # take_output() may return a list of buffers
        self.last_name = None
        self.last_handler = None
        self.calls = 0
        self.load = None
        self.hold = False
        self.refuse = None
        self.authorize = None

    def get_buffer(self, Py_ssize_t sizehint=-1):
        """Memory to receive into (asyncio BufferedProtocol.get_buffer)."""
        return self.reader.get_buffer(sizehint)

    def process(self, Py_ssize_t nbytes):
        """Handle every complete frame after `nbytes` more were received.

        Returns the reply bytes to write (or None). Raises ProtocolError (or
        FrameTooLargeError) when framing is lost; the caller then closes.
        While `hold` is set (it may be set by a handler being spawned), the
        remaining frames stay buffered; process(0) takes them up later.
        """
        cdef FrameView f
        self.reader.buffer_updated(nbytes)
        self.clock = 0.0
        while not self.hold and self.reader.next_frame(&f):
            if f.kind == KIND_REQUEST or f.kind == KIND_NOTIFY:
                self.calls += 1
                self._call(&f)
            elif f.kind == KIND_PING:
                self._pong(&f)
            elif f.kind == KIND_CANCEL:
                self.conn.cancel(f.seq)
            elif f.kind == KIND_GOAWAY:
                self.conn.on_goaway()
            elif f.kind == KIND_PONG:
                self.conn.on_pong(f.seq)
            elif f.kind == KIND_ITEM:
                self._stream_item(&f)
            elif f.kind == KIND_CREDIT:
                self._stream_credit(&f)
            elif f.kind == KIND_END:
                self.conn.stream_end(f.seq)
            elif f.kind == KIND_OVERSIZED:
                self._oversized(&f)
            else:
                raise ProtocolError(f"a client sent a frame of kind {f.kind} (a reply kind)")
        return self.take_output()

    def take_output(self):
        """Return and clear the encoded replies, or None when there are none."""
        return self.out.take_output()

    @property
    def buffered(self):
        """Bytes received that are not yet a whole frame (or frames held back)."""
        return self.reader.buffered

    @property
    def pending_output(self):
        """Bytes of encoded replies not yet taken."""
        return self.out.total()

    cdef Handler _lookup(self, FrameView *f):
        cdef bytes name
        if self.last_name is not None and len(self.last_name) == f.method_len \
                and memcmp(<const char *>self.last_name, f.method, f.method_len) == 0:
            return self.last_handler
        name = PyBytes_FromStringAndSize(f.method, f.method_len)
        h = self.handlers.get(name)
        if h is not None:
            self.last_name = name
            self.last_handler = <Handler>h
        return <Handler>h

    cdef int _call(self, FrameView *f) except -1:
        cdef Handler h = self._lookup(f)
        cdef tuple args
        cdef Py_ssize_t nargs, used = 0
        cdef bint notify = f.kind == KIND_NOTIFY
        meta = None
        kwargs = None
        if self.refuse is not None:
            if not notify:
                self._error(f.seq, "Unavailable", self.refuse)
            return 0
        if h is None:
            self._not_found(f, notify)
            return 0
        h.calls += 1
        if h.stream or f.flags & FLAG_STREAM:
            if self._stream_mismatch(f, h, notify):
                return 0
        try:
            args = unpack_args(f.payload, f.payload_len, self.reader.buf, self.reader.data,
                               &self.limits, &used)
            if used < f.payload_len:
                # Keyword arguments: a map after the positional array.
                kwargs = unpack(f.payload + used, f.payload_len - used, self.reader.buf,
                                self.reader.data, &self.limits)
                if type(kwargs) is not dict:
                    raise DecodeError(f"keyword arguments are a map, not {type(kwargs).__name__}")
            if f.meta_len and (h.mode != INLINE or h.stream or self.authorize is not None):
                meta = unpack(f.meta, f.meta_len, None, NULL, &self.limits)
        except Exception as exc:
            # Any failure to decode (a malformed payload, a limit, whatever the
            # decoder raised) fails this call alone, as a DecodeError.
            h.record(0.0, "DecodeError")
            if not notify:
                self._error(f.seq, "DecodeError", f"{h.name}: bad arguments: {exc}")
            return 0
        if kwargs is not None or h.kw_required:
            if h.bind is not None:
                try:
                    args, kwargs = h.bind(args, kwargs)
                except TypeError as exc:
                    h.record(0.0, "InvalidArguments")
                    if not notify:
                        self._error(f.seq, "InvalidArguments", f"{h.name}: {exc}")
                    return 0
        else:
            nargs = PyTuple_GET_SIZE(args)
            if nargs < h.min_args or (h.max_args >= 0 and nargs > h.max_args):
                h.record(0.0, "InvalidArguments")
                if not notify:
                    self._error(f.seq, "InvalidArguments", _arity_message(h, nargs))
                return 0
        if self.authorize is not None:
            try:
                self.authorize(h.name, meta)
            except Exception as exc:
                h.record(0.0, "PermissionDenied")
                if notify:
                    self.conn.log_notify_error(h.name, exc)
                else:
                    self._error(f.seq, "PermissionDenied", str(exc) or type(exc).__name__)
                return 0
        if h.stream:
            self.conn.open_stream(h, f.seq, args, kwargs,
                                  f.deadline_ms if f.flags & FLAG_DEADLINE else None, meta)
            return 0
        if h.mode != INLINE:
            self.conn.spawn(h, f.seq, args, notify,
                            f.deadline_ms if f.flags & FLAG_DEADLINE else None, meta, kwargs)
            return 0
        global _inline_core, _inline_frame, _inline_handler, _inline_start, _inline_thread
        # A call of a batch starts when the one before it ended (one clock
        # read per call): its time includes decoding its arguments.
        cdef double start = self.clock if self.clock > 0.0 else frpc_monotonic()
        cdef double end
        _inline_core = self
        _inline_frame = f
        _inline_handler = h
        _inline_start = start
        _inline_thread = <long>PyThread_get_thread_ident()
        try:
            result = h.func(*args) if kwargs is None else h.func(*args, **kwargs)
        except Exception as exc:
            _inline_core = None
            self.clock = end = frpc_monotonic()
            h.record(end - start, _error_type(exc))
            if notify:
                self.conn.log_notify_error(h.name, exc)
            else:
                self._error(f.seq, _error_type(exc), error_message(exc),
                            format_traceback(exc) if self.send_tracebacks else None)
                self.conn.log_handler_error(h.name, exc)
            return 0
        _inline_core = None
        if type(result) is _coroutine_type:
            # A plain function that returned a coroutine: run it as a task
            # (its duration is recorded when it ends).
            self.conn.spawn_awaitable(h, f.seq, result, notify)
            return 0
        if not notify:
            if self.reply(f.seq, result) == 1:
                self.clock = end = frpc_monotonic()
                h.record(end - start, "EncodeError")
                return 0
        self.clock = end = frpc_monotonic()
        h.record(end - start, None)
        return 0

    cdef bint _stream_mismatch(self, FrameView *f, Handler h, bint notify) except -1:
        """A stream opened on a unary method, or a streaming method called
        without a stream: answer a clear error (True). False: they match."""
        cdef str why
        if notify:
            why = "a streaming method cannot be notified" if h.stream else ""
        elif not h.stream:
            why = f"{h.name} is not a streaming method: call it with call()"
        elif not (f.flags & FLAG_STREAM):
            why = f"{h.name} is a streaming method: call it with stream()"
        else:
            return False
        if not why:
            return False
        h.record(0.0, "StreamMismatch")
        if notify:
            self.conn.log_notify_error(h.name, TypeError(why))
        else:
            self._error(f.seq, "StreamMismatch", why)
        return True

    cdef int _stream_item(self, FrameView *f) except -1:
        """An ITEM of a client's stream: decoded (numpy arrays as views of the
        receive buffer) and handed to the connection; a bad one fails its stream."""
        try:
            value = unpack(f.payload, f.payload_len, self.reader.buf, self.reader.data, &self.limits)
        except Exception as exc:
            self.conn.stream_failed(f.seq, "DecodeError", f"a stream item cannot be decoded: {exc}")
            return 0
        self.conn.stream_item(f.seq, value, f.payload_len)
        return 0

    cdef int _stream_credit(self, FrameView *f) except -1:
        try:
            grant = read_credit(unpack(f.payload, f.payload_len, None, NULL, &self.limits))
        except Exception as exc:
            self.conn.stream_failed(f.seq, "DecodeError", f"bad CREDIT frame: {exc}")
            return 0
        self.conn.stream_credit(f.seq, grant[0], grant[1])
        return 0

    cpdef Py_ssize_t stream_item(self, unsigned long long seq, object value) except -1:
        """Encode one ITEM of a server stream; return its payload's size in
        bytes (what it costs of the client's byte credit). An unencodable
        value writes nothing and raises."""
        cdef Py_ssize_t start = begin_frame(self.out, KIND_ITEM, 0, seq, NULL, 0)
        try:
            pack(self.out, value, 0)
        except BaseException:
            self.out.rollback(start)
            raise
        end_frame(self.out, start)
        return self.out.since(start) - HEADER_SIZE

    def stream_items(self, unsigned long long seq, iterator, Py_ssize_t max_items, Py_ssize_t max_bytes):
        """Encode ITEMs of a server stream from a plain iterator (a sync
        generator), up to `max_items` items and until `max_bytes` bytes were
        encoded; return (items, bytes, finished, returned). `finished`: the
        iterator ended, `returned` its return value (StopIteration.value).
        What next() raises propagates, after the items encoded before it."""
        cdef Py_ssize_t n = 0, size = 0
        while n < max_items and size < max_bytes:
            try:
                value = next(iterator)
            except StopIteration as stop:
                return n, size, True, stop.value
            try:
                size += self.stream_item(seq, value)
            except Exception as exc:
                raise EncodeError(f"stream item cannot be encoded: {exc}") from exc
            n += 1
        return n, size, False, None

    cpdef int credit(self, unsigned long long seq, long long items, long long nbytes) except -1:
        """Encode a CREDIT frame: the client may send `items` more items and
        `nbytes` more bytes on stream `seq`."""
        cdef Py_ssize_t start = begin_frame(self.out, KIND_CREDIT, 0, seq, NULL, 0)
        pack_args(self.out, (items, nbytes))
        return end_frame(self.out, start)

    cdef object _describe(self, FrameView *f, Handler h, double start):
        meta = None
        if f.meta_len:
            try:
                meta = unpack(f.meta, f.meta_len, None, NULL, &self.limits)
            except Exception:
                meta = None
        deadline = start + f.deadline_ms / 1000.0 if f.flags & FLAG_DEADLINE else None
        return (h.name, deadline, meta, getattr(self.conn, "peer", None))

    cdef int _oversized(self, FrameView *f) except -1:
        # f.flags holds the kind the frame declared, f.payload_len its length.
        cdef str message = (f"request of {f.payload_len} bytes is above the server's "
                            f"max_frame_size={self.reader.max_frame_size}")
        if f.flags == KIND_REQUEST:
            self.calls += 1
            return self._error(f.seq, "FrameTooLarge", message)
        if f.flags == KIND_NOTIFY:
            self.calls += 1
            self.conn.log_notify_error("a notification", FrameTooLargeError(message))
        return 0

    cdef int _not_found(self, FrameView *f, bint notify) except -1:
        cdef str name = f.method[:f.method_len].decode("utf-8", "replace")
        if notify:
            self.conn.log_notify_error(name, LookupError("unknown method"))
            return 0
        return self._error(f.seq, "MethodNotFound", not_found_message(name, self.services))

    cdef int _pong(self, FrameView *f) except -1:
        cdef Py_ssize_t start = self._begin_reply(KIND_PONG, f.seq)
        self.out.write(f.payload, f.payload_len)
        return end_frame(self.out, start)

    cdef int _begin_reply(self, int kind, unsigned long long seq) except -1:
        cdef Py_ssize_t start
        cdef unsigned int load
        cdef char ext[4]
        if self.load is None:
            return begin_frame(self.out, kind, 0, seq, NULL, 0)
        load = <unsigned int>min(max(self.load.value, 0), 0xffffffff)
        start = begin_frame(self.out, kind, FLAG_LOAD, seq, NULL, 0)
        frpc_store_u32(ext, load)
        self.out.write(ext, 4)
        return start

    cpdef int reply(self, unsigned long long seq, object value) except -1:
        """Encode a RESPONSE for `seq`; an unencodable value becomes an error
        reply (and 1 is returned; 0 otherwise)."""
        cdef Py_ssize_t start = self._begin_reply(KIND_RESPONSE, seq)
        try:
            pack(self.out, value, 0)
        except Exception as exc:
            self.out.rollback(start)
            self._error(seq, "EncodeError", f"result cannot be encoded: {exc}")
            return 1
        return end_frame(self.out, start)

    cpdef int reply_error(self, unsigned long long seq, str type_name, str message, str traceback=None) except -1:
        """Encode an ERROR reply [type, message] (or [type, message, traceback]) for `seq`."""
        return self._error(seq, type_name, message, traceback)

    cdef int _error(self, unsigned long long seq, str type_name, str message, str traceback=None) except -1:
        cdef Py_ssize_t start = self._begin_reply(KIND_ERROR, seq)
        try:
            if traceback is None:
                pack_args(self.out, (type_name, message))
            else:
                pack_args(self.out, (type_name, message, traceback))
        except Exception:
            # Unencodable text (lone surrogates): fall back to a plain message.
            self.out.rollback(start)
            start = self._begin_reply(KIND_ERROR, seq)
            pack_args(self.out, (type_name, "error message could not be encoded"))
        return end_frame(self.out, start)

    cpdef int goaway(self, str reason="") except -1:
        """Encode a GOAWAY frame telling the client to send no new calls."""
        cdef Py_ssize_t start = begin_frame(self.out, KIND_GOAWAY, 0, 0, NULL, 0)
        pack(self.out, reason, 0)
        return end_frame(self.out, start)

    cpdef int hello(self, bytes payload) except -1:
        """Encode the server's hello: a PONG with seq 0 carrying a MessagePack
        map of its settings (max_frame_size), sent as a connection starts
        carrying calls. Clients that do not know it ignore an unsolicited PONG."""
        cdef Py_ssize_t start = begin_frame(self.out, KIND_PONG, 0, 0, NULL, 0)
        self.out.write(payload, len(payload))
        return end_frame(self.out, start)

    cpdef int ping(self, unsigned long long seq) except -1:
        """Encode a PING frame (heartbeat) to the client."""
        cdef Py_ssize_t start = begin_frame(self.out, KIND_PING, 0, seq, NULL, 0)
        return end_frame(self.out, start)
