# cython: language_level=3
"""The client's per-connection hot loop: the table of calls in flight.

Owns: sequence ids, encoding requests into the output buffer, matching
replies to pending calls and completing them. A pending call's slot is a
`Slot` (blocking calls), a `Batch` (map), or any future-like object with
set_result/set_exception (asyncio and concurrent.futures futures).
"""
cimport cython
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.dict cimport PyDict_GetItem, PyDict_DelItem
from cpython.ref cimport PyObject

from fastrpc._core.buffer cimport WriteBuffer, frpc_store_u32
from fastrpc._core.codec cimport DecodeLimits, pack, unpack
from fastrpc._core.frame cimport (FrameReader, FrameView, begin_frame, end_frame, write_empty_frame,
                            KIND_REQUEST, KIND_RESPONSE, KIND_ERROR, KIND_NOTIFY, KIND_PING,
                            KIND_PONG, FLAG_DEADLINE, FLAG_LOAD, FLAG_META)

from fastrpc.errors import ProtocolError, DecodeError, remote_error
from asyncio import InvalidStateError as _AsyncInvalidState
from concurrent.futures import InvalidStateError as _CfInvalidState

cdef tuple _invalid_state = (_AsyncInvalidState, _CfInvalidState)


@cython.final
@cython.freelist(256)
cdef class Slot:
    """Result holder of one blocking call; completed by whichever thread reads."""
    cdef public bint done
    cdef public object value
    cdef public object error

    def __cinit__(self):
        self.done = False


@cython.final
cdef class Batch:
    """Results of a map(): one list slot per call, filled in reply order."""
    cdef readonly list results
    cdef readonly unsigned long long first_seq
    cdef readonly Py_ssize_t remaining
    cdef readonly Py_ssize_t issued
    cdef readonly object first_error
    cdef public object on_progress     # called with no args every `step` replies and at the end
    cdef public Py_ssize_t step
    cdef Py_ssize_t since_progress
    cdef bint return_exceptions

    def __init__(self, Py_ssize_t n, bint return_exceptions=False):
        self.results = [None] * n
        self.remaining = n
        self.issued = 0
        self.first_error = None
        self.on_progress = None
        self.step = 0
        self.since_progress = 0
        self.return_exceptions = return_exceptions

    @property
    def done(self):
        return self.remaining == 0

    cdef inline int _settle(self, unsigned long long seq, object value, bint is_error) except -1:
        cdef Py_ssize_t index = <Py_ssize_t>(seq - self.first_seq)
        if is_error:
            if self.first_error is None:
                self.first_error = value
            if not self.return_exceptions:
                value = None
        self.results[index] = value
        self.remaining -= 1
        self.since_progress += 1
        if self.on_progress is not None and (self.remaining == 0 or self.since_progress >= self.step):
            self.since_progress = 0
            self.on_progress()
        return 0

    cpdef fail_unsent(self, exc):
        """Fail the calls that were never issued (the connection went away)."""
        cdef Py_ssize_t i
        for i in range(self.issued, len(self.results)):
            self._settle(self.first_seq + i, exc, True)


cdef inline int _complete(object slot, unsigned long long seq, object value, bint is_error) except -1:
    cdef Slot s
    if type(slot) is Slot:
        s = <Slot>slot
        if is_error:
            s.error = value
        else:
            s.value = value
        s.done = True
    elif type(slot) is Batch:
        (<Batch>slot)._settle(seq, value, is_error)
    else:
        try:
            if is_error:
                slot.set_exception(value)
            else:
                slot.set_result(value)
        except _invalid_state:
            pass  # the caller cancelled this future; its reply is dropped
    return 0


@cython.final
cdef class CallTable:
    """Sequence ids, pending calls, and the connection's read/write buffers."""
    cdef readonly FrameReader reader
    cdef readonly WriteBuffer out
    cdef readonly dict pending          # seq -> slot
    cdef unsigned long long next_seq
    cdef DecodeLimits limits
    cdef dict method_cache              # str -> UTF-8 bytes
    cdef public object on_control       # callback(kind, seq, payload_bytes) for PING/PONG/GOAWAY
    cdef public object last_load        # last in-flight count a reply carried, or None

    def __init__(self, *, Py_ssize_t max_frame_size, Py_ssize_t max_depth,
                 Py_ssize_t max_len, Py_ssize_t max_bytes):
        self.reader = FrameReader(max_frame_size)
        self.out = WriteBuffer(65536)
        self.pending = {}
        self.next_seq = 1
        self.limits.max_depth = max_depth
        self.limits.max_len = max_len
        self.limits.max_bytes = max_bytes
        self.method_cache = {}
        self.on_control = None
        self.last_load = None

    cdef bytes _method(self, str method):
        m = self.method_cache.get(method)
        if m is None:
            m = method.encode("utf-8")
            if len(self.method_cache) < 4096:
                self.method_cache[method] = m
        return <bytes>m

    cpdef unsigned long long request(self, str method, tuple args, object slot,
                                     object deadline_ms=None, bytes meta=None) except? 0:
        """Encode a REQUEST (or a NOTIFY when `slot` is None); return its seq.

        `meta` is the call's metadata, already msgpack-encoded. On an
        encoding error nothing is written or registered and the error
        propagates to the caller.
        """
        cdef bytes m = self._method(method)
        cdef unsigned long long seq = self.next_seq
        cdef Py_ssize_t start
        cdef int flags = 0 if deadline_ms is None else FLAG_DEADLINE
        cdef char ext[4]
        if meta is not None:
            flags |= FLAG_META
        start = begin_frame(self.out, KIND_NOTIFY if slot is None else KIND_REQUEST, flags, seq,
                            m, len(m))
        try:
            if deadline_ms is not None:
                frpc_store_u32(ext, <unsigned int>min(max(<long long>deadline_ms, 0), 0xffffffff))
                self.out.write(ext, 4)
            if meta is not None:
                frpc_store_u32(ext, <unsigned int>len(meta))
                self.out.write(ext, 4)
                self.out.write(meta, len(meta))
            pack(self.out, args, 0)
        except BaseException:
            self.out.size = start
            raise
        end_frame(self.out, start)
        self.next_seq = seq + 1
        if slot is not None:
            self.pending[seq] = slot
        return seq

    def request_batch(self, str method, Batch batch, args_iter, Py_ssize_t limit, bytes meta=None):
        """Encode up to `limit` more calls of `batch` from `args_iter`; return how many.

        Each item of `args_iter` is a tuple of arguments (a non-tuple is one
        argument). Calls share contiguous seqs so a reply's index is seq - first.
        `meta` (encoded metadata) goes with every call.
        """
        cdef bytes m = self._method(method)
        cdef Py_ssize_t n = 0, start
        cdef unsigned long long seq
        cdef char ext[4]
        if batch.issued == 0:
            batch.first_seq = self.next_seq
        elif batch.first_seq + <unsigned long long>batch.issued != self.next_seq:
            raise RuntimeError("batch calls must be issued back to back")
        for args in args_iter:
            seq = self.next_seq
            start = begin_frame(self.out, KIND_REQUEST, 0 if meta is None else FLAG_META, seq, m, len(m))
            try:
                if meta is not None:
                    frpc_store_u32(ext, <unsigned int>len(meta))
                    self.out.write(ext, 4)
                    self.out.write(meta, len(meta))
                pack(self.out, args if type(args) is tuple else (args,), 0)
            except BaseException:
                self.out.size = start
                raise
            end_frame(self.out, start)
            self.next_seq = seq + 1
            self.pending[seq] = batch
            batch.issued += 1
            n += 1
            if n >= limit:
                break
        return n

    def control(self, int kind, unsigned long long seq, bytes payload=b""):
        """Encode a PING, PONG, CANCEL or GOAWAY frame."""
        cdef Py_ssize_t start = begin_frame(self.out, kind, 0, seq, NULL, 0)
        self.out.write(payload, len(payload))
        end_frame(self.out, start)

    def ping(self, slot):
        """Encode a PING whose PONG completes `slot` (with None); return its seq."""
        cdef unsigned long long seq = self.next_seq
        write_empty_frame(self.out, KIND_PING, seq)
        self.next_seq = seq + 1
        self.pending[seq] = slot
        return seq

    def forget(self, unsigned long long seq):
        """Drop a pending call (timed out or cancelled); return its slot or None."""
        return self.pending.pop(seq, None)

    def get_buffer(self, Py_ssize_t sizehint=-1):
        """Memory to receive into."""
        return self.reader.get_buffer(sizehint)

    def take_output(self):
        """Return and clear encoded frames, or None when there are none."""
        return self.out.take_output()

    @property
    def out_frames(self):
        """Frames encoded but not yet taken."""
        return self.out.frames

    @property
    def out_bytes(self):
        return self.out.size

    def clear_output(self):
        self.out.reset()

    def process(self, Py_ssize_t nbytes):
        """Complete the calls whose replies arrived in the last `nbytes`.

        Returns how many calls completed. Raises ProtocolError when framing
        is lost (the caller then fails every pending call).
        """
        cdef FrameView f
        cdef PyObject *found
        cdef Py_ssize_t completed = 0
        self.reader.buffer_updated(nbytes)
        while self.reader.next_frame(&f):
            if f.kind == KIND_RESPONSE or f.kind == KIND_ERROR:
                if f.flags & FLAG_LOAD:
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
                    except DecodeError as exc:
                        _complete(slot, f.seq, exc, True)
                        continue
                    _complete(slot, f.seq, value, False)
                else:
                    _complete(slot, f.seq, self._remote_error(&f), True)
            elif f.kind == KIND_PONG and f.seq in self.pending:
                if f.flags & FLAG_LOAD:
                    self.last_load = f.load
                _complete(self.pending.pop(f.seq), f.seq, None, False)
                completed += 1
            elif f.kind == KIND_REQUEST or f.kind == KIND_NOTIFY:
                raise ProtocolError("the server sent a request frame")
            elif self.on_control is not None:
                self.on_control(f.kind, f.seq, PyBytes_FromStringAndSize(f.payload, f.payload_len))
        return completed

    cdef object _remote_error(self, FrameView *f):
        try:
            body = unpack(f.payload, f.payload_len, None, NULL, &self.limits)
            if type(body) is not list or len(body) < 2:
                raise DecodeError("error reply is not [type, message]")
            return remote_error(str(body[0]), str(body[1]))
        except DecodeError as exc:
            return exc

    def fail_all(self, exc):
        """Fail every pending call with `exc` (connection lost); return how many."""
        pending = self.pending
        self.pending = {}
        n = 0
        for seq, slot in pending.items():
            _complete(slot, seq, exc, True)
            n += 1
        return n
