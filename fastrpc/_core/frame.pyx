# cython: language_level=3
"""Framing: the 16-byte frame header, writing frames into a WriteBuffer, and
the incremental FrameReader (see docs/PROTOCOL.md).

Owns the byte layout of frames and nothing above it: what a frame's payload
means is up to the codec and the client/server cores.
"""
cimport cython
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.bytearray cimport PyByteArray_AS_STRING
from cpython.ref cimport PyObject
from libc.string cimport memcpy

from fastrpc._core.buffer cimport (WriteBuffer, frpc_load_u16, frpc_load_u32, frpc_load_u64,
                                   frpc_store_u16, frpc_store_u32, frpc_store_u64)

from fastrpc.errors import DecodeError, ProtocolError, FrameTooLargeError

DEFAULT_MAX_FRAME_SIZE = 64 * 1024 * 1024
# A connection's receive buffer starts at INITIAL_BUFFER (what an idle one
# holds) and doubles as traffic needs, up to DEFAULT_CHUNK; a frame larger
# than that gets a buffer growing with the bytes that arrived, never with
# the length it declared, so memory is bounded by what a peer sent.
INITIAL_BUFFER = 4096
DEFAULT_CHUNK = 256 * 1024

cdef extern from *:
    """
    /* Whether `o` has no other reference than the one it is reached through.
       Cython takes a new reference to an attribute before passing it to a
       function, so Py_REFCNT(self.buf) in Cython code is never 1: the
       pointer is passed borrowed instead. */
    #define frpc_sole_reference(o) (Py_REFCNT(o) == 1)
    """
    bint frpc_sole_reference(PyObject *o)

MIN_READ = 16 * 1024

REQUEST = KIND_REQUEST
RESPONSE = KIND_RESPONSE
ERROR = KIND_ERROR
NOTIFY = KIND_NOTIFY
PING = KIND_PING
PONG = KIND_PONG
CANCEL = KIND_CANCEL
GOAWAY = KIND_GOAWAY
ITEM = KIND_ITEM
END = KIND_END
CREDIT = KIND_CREDIT
KIND_NAMES = {1: "REQUEST", 2: "RESPONSE", 3: "ERROR", 4: "NOTIFY", 5: "PING",
              6: "PONG", 7: "CANCEL", 8: "GOAWAY", 9: "ITEM", 10: "END", 11: "CREDIT"}
DEADLINE = FLAG_DEADLINE
LOAD = FLAG_LOAD
META = FLAG_META
STREAM = FLAG_STREAM


# --------------------------------------------------------------------------
# Writing


cdef Py_ssize_t begin_frame(WriteBuffer b, int kind, int flags, unsigned long long seq,
                            const char *method, Py_ssize_t method_len) except -1:
    """Write a frame header (length left for end_frame) and the method."""
    cdef Py_ssize_t start = b.size
    cdef char *p
    if method_len > 0xffff:
        raise ValueError("method name longer than 65535 bytes")
    b.ensure(HEADER_SIZE + method_len)
    p = b.data + start
    p[4] = <char>kind
    p[5] = <char>flags
    frpc_store_u16(p + 6, <unsigned short>method_len)
    frpc_store_u64(p + 8, seq)
    if method_len:
        memcpy(p + HEADER_SIZE, method, method_len)
    b.size = start + HEADER_SIZE + method_len
    b.frame_attached = b.attached_bytes
    return start


cdef int end_frame(WriteBuffer b, Py_ssize_t start) except -1:
    """Back-patch the length of the frame begun at `start`."""
    cdef Py_ssize_t length = b.since(start) - LENGTH_FIELD
    if length > 0xffffffffLL:
        b.rollback(start)
        raise FrameTooLargeError(f"frame of {length} bytes cannot be framed (4 GiB max)")
    frpc_store_u32(b.data + start, <unsigned int>length)
    b.frames += 1
    return 0


cdef int write_empty_frame(WriteBuffer b, int kind, unsigned long long seq) except -1:
    cdef Py_ssize_t start = begin_frame(b, kind, 0, seq, NULL, 0)
    return end_frame(b, start)


cdef tuple read_credit(object grant):
    """A CREDIT frame's payload, decoded: [items, bytes], two ints >= 0."""
    if type(grant) is not list or len(grant) != 2 or type(grant[0]) is not int \
            or type(grant[1]) is not int or grant[0] < 0 or grant[1] < 0:
        raise DecodeError("a CREDIT payload is [items, bytes], two ints >= 0")
    return (grant[0], grant[1])


def encode_frame(int kind, unsigned long long seq, str method="", payload=b"", *,
                 deadline_ms=None, load=None, meta=None, bint stream=False) -> bytes:
    """Build one frame from raw parts; `payload` and `meta` are encoded bytes.

    Used for test vectors, tools and peers that speak the wire directly; the
    clients and server write frames through their compiled cores.
    """
    cdef WriteBuffer b = WriteBuffer(64 + len(payload))
    cdef bytes m = method.encode("utf-8")
    cdef int flags = 0
    cdef unsigned char ext[4]
    if deadline_ms is not None:
        flags |= FLAG_DEADLINE
    if load is not None:
        flags |= FLAG_LOAD
    if meta is not None:
        flags |= FLAG_META
    if stream:
        flags |= FLAG_STREAM
    cdef Py_ssize_t start = begin_frame(b, kind, flags, seq, m, len(m))
    if deadline_ms is not None:
        frpc_store_u32(<char *>ext, <unsigned int>deadline_ms)
        b.write(<char *>ext, 4)
    if load is not None:
        frpc_store_u32(<char *>ext, <unsigned int>load)
        b.write(<char *>ext, 4)
    if meta is not None:
        frpc_store_u32(<char *>ext, <unsigned int>len(meta))
        b.write(<char *>ext, 4)
        b.write(meta, len(meta))
    b.write(payload, len(payload))
    end_frame(b, start)
    return b.take()


# --------------------------------------------------------------------------
# Reading


@cython.final
@cython.freelist(64)
cdef class Frame:
    """One received frame, as the Python-level FrameReader.feed() returns it."""
    cdef readonly int kind
    cdef readonly int flags
    cdef readonly unsigned long long seq
    cdef readonly str method
    cdef readonly object deadline_ms
    cdef readonly object load
    cdef readonly bytes meta
    cdef readonly bytes payload

    def __repr__(self):
        return (f"Frame({KIND_NAMES.get(self.kind, self.kind)}, seq={self.seq}, "
                f"method={self.method!r}, flags=0x{self.flags:02x}, payload={self.payload!r})")


@cython.final
cdef class FrameReader:
    """Incremental frame splitter.

    Two ways to use it: ``feed(data)`` returns the list of complete frames in
    `data` (a partial frame is kept for the next call); or, as an asyncio
    BufferedProtocol or with ``socket.recv_into``, ``get_buffer()`` gives the
    memory to receive into and the owner then parses what arrived. A frame
    whose length field is above `max_frame_size` raises FrameTooLargeError;
    a malformed header raises ProtocolError. Either means the stream is lost.
    """

    def __cinit__(self, Py_ssize_t max_frame_size=DEFAULT_MAX_FRAME_SIZE,
                  Py_ssize_t chunk=DEFAULT_CHUNK):
        if max_frame_size < 12:
            raise ValueError("max_frame_size must be at least 12")
        self.max_frame_size = max_frame_size
        self.chunk = max(chunk, MIN_READ * 2)
        self.buf = bytearray(INITIAL_BUFFER)
        self.data = PyByteArray_AS_STRING(self.buf)
        self.cap = INITIAL_BUFFER
        self.start = 0
        self.end = 0

    cdef int _new_buffer(self, Py_ssize_t need) except -1:
        """Move the unconsumed tail to a buffer with room for `need` bytes more
        (twice the size of the last one, up to `chunk`, or what `need` asks)."""
        cdef Py_ssize_t pending = self.end - self.start
        cdef Py_ssize_t size = max(min(2 * self.cap, self.chunk), pending + need)
        cdef bytearray fresh
        if frpc_sole_reference(<PyObject *>self.buf) and self.cap >= pending + need and self.cap <= self.chunk * 4:
            # Nobody else holds this buffer (no decoded ndarray, no view):
            # slide the tail to the front and reuse it.
            if pending:
                memcpy(self.data, self.data + self.start, pending)
            self.start = 0
            self.end = pending
            return 0
        fresh = bytearray(size)
        if pending:
            memcpy(PyByteArray_AS_STRING(fresh), self.data + self.start, pending)
        self.buf = fresh
        self.data = PyByteArray_AS_STRING(fresh)
        self.cap = size
        self.start = 0
        self.end = pending
        return 0

    def get_buffer(self, Py_ssize_t sizehint=-1):
        """Return a writable memoryview to receive the next bytes into."""
        self.make_room()
        return memoryview(self.buf)[self.end:]

    cdef int make_room(self) except -1:
        """Make room to receive into at data + end (cap - end bytes), as get_buffer() does."""
        cdef Py_ssize_t pending = self.end - self.start
        cdef Py_ssize_t need = min(MIN_READ, self.cap // 2)
        cdef Py_ssize_t length
        if self.cap - self.end < need:
            if pending >= LENGTH_FIELD:
                # A frame larger than the room left: room for as many more
                # bytes as have arrived of it (the buffer doubles as they
                # come), or for a frame as large as the largest this peer
                # has sent whole; never for the length it declares, which a
                # peer could lie about.
                length = LENGTH_FIELD + <Py_ssize_t>frpc_load_u32(self.data + self.start)
                if length <= self.max_frame_size + LENGTH_FIELD and length - pending > need:
                    need = min(length - pending, max(need, pending, self.largest - pending))
            self._new_buffer(need)
        elif pending == 0 and self.start > 0 and frpc_sole_reference(<PyObject *>self.buf):
            self.start = self.end = 0
        return 0

    def buffer_updated(self, Py_ssize_t nbytes):
        """Record that `nbytes` were written into the last get_buffer() view."""
        if nbytes < 0 or self.end + nbytes > self.cap:
            raise ValueError("buffer_updated: more bytes than the buffer holds")
        self.end += nbytes

    cdef int next_frame(self, FrameView *f) except -1:
        """Parse the next complete frame into `f`; 1 if one was found, 0 if
        more bytes are needed.

        A frame above max_frame_size raises FrameTooLargeError, unless
        `skip_oversized`: then, once its header is in, it is returned as
        kind KIND_OVERSIZED (flags: the kind it declared, seq: its seq,
        payload_len: its length, payload NULL) and its bytes are dropped as
        they arrive, so the stream goes on and nothing of it is held.
        """
        cdef Py_ssize_t avail = self.end - self.start
        cdef const char *p
        cdef const char *end
        cdef Py_ssize_t length, rest, dropped
        if self.skipping:
            dropped = min(self.skipping, avail)
            self.start += dropped
            self.skipping -= dropped
            avail -= dropped
            if self.skipping:
                return 0
        if avail < HEADER_SIZE:
            if avail >= LENGTH_FIELD:
                self._check_length(frpc_load_u32(self.data + self.start), False)
            return 0
        p = self.data + self.start
        length = frpc_load_u32(p)
        f.kind = <unsigned char>p[4]
        f.flags = <unsigned char>p[5]
        f.method_len = frpc_load_u16(p + 6)
        f.seq = frpc_load_u64(p + 8)
        if f.kind < KIND_REQUEST or f.kind > KIND_CREDIT:
            raise ProtocolError(f"unknown frame kind {f.kind}")
        if self._check_length(length, True):
            f.flags = f.kind
            f.kind = KIND_OVERSIZED
            f.payload = NULL
            f.payload_len = length
            f.method_len = f.meta_len = 0
            f.method = f.meta = NULL
            f.deadline_ms = f.load = 0
            dropped = min(avail, LENGTH_FIELD + length)
            self.start += dropped
            self.skipping = LENGTH_FIELD + length - dropped
            return 1
        if avail < LENGTH_FIELD + length:
            return 0
        end = p + LENGTH_FIELD + length
        if f.flags & ~KNOWN_FLAGS:
            raise ProtocolError(f"unknown frame flags 0x{f.flags:02x}")
        p += HEADER_SIZE
        if end - p < f.method_len:
            raise ProtocolError("frame method name runs past the frame")
        f.method = p
        p += f.method_len
        if f.flags & FLAG_DEADLINE:
            if end - p < 4:
                raise ProtocolError("frame deadline field runs past the frame")
            f.deadline_ms = frpc_load_u32(p)
            p += 4
        else:
            f.deadline_ms = 0
        if f.flags & FLAG_LOAD:
            if end - p < 4:
                raise ProtocolError("frame load field runs past the frame")
            f.load = frpc_load_u32(p)
            p += 4
        else:
            f.load = 0
        if f.flags & FLAG_META:
            if end - p < 4:
                raise ProtocolError("frame metadata runs past the frame")
            rest = frpc_load_u32(p)
            p += 4
            if end - p < rest:
                raise ProtocolError("frame metadata runs past the frame")
            f.meta = p
            f.meta_len = rest
            p += rest
        else:
            f.meta = NULL
            f.meta_len = 0
        f.payload = p
        f.payload_len = end - p
        self.start += LENGTH_FIELD + length
        if length >= self.largest:
            self.largest = LENGTH_FIELD + length
        return 1

    cdef int _check_length(self, Py_ssize_t length, bint whole_header) except -1:
        """Raise for a length that breaks the stream; 1 when the frame is to
        be skipped (above max_frame_size, skip_oversized, header whole)."""
        if length < HEADER_SIZE - LENGTH_FIELD:
            raise ProtocolError(f"frame length {length} is shorter than the frame header")
        if length > self.max_frame_size:
            if self.skip_oversized:
                return 1 if whole_header else 0
            raise FrameTooLargeError(
                f"frame of {length} bytes is above the maximum frame size of {self.max_frame_size}")
        return 0

    @property
    def buffered(self):
        """Bytes received but not yet returned as a frame."""
        return self.end - self.start

    @property
    def capacity(self):
        """Bytes the receive buffer holds room for (the memory it takes)."""
        return self.cap

    def frames(self):
        """Return every complete frame received so far as Frame objects."""
        cdef FrameView f
        cdef Frame fr
        out = []
        while self.next_frame(&f):
            fr = Frame.__new__(Frame)
            fr.kind = f.kind
            fr.flags = f.flags
            fr.seq = f.seq
            fr.method = f.method[:f.method_len].decode("utf-8", "replace") if f.method_len else ""
            fr.deadline_ms = f.deadline_ms if f.flags & FLAG_DEADLINE else None
            fr.load = f.load if f.flags & FLAG_LOAD else None
            fr.meta = PyBytes_FromStringAndSize(f.meta, f.meta_len) if f.flags & FLAG_META else None
            # A skipped frame (KIND_OVERSIZED) has only its declared length.
            fr.payload = PyBytes_FromStringAndSize(f.payload, f.payload_len) if f.payload != NULL else b""
            out.append(fr)
        return out

    def feed(self, data):
        """Add received bytes; return the list of frames now complete."""
        cdef const unsigned char[:] src = memoryview(data).cast("B") if not isinstance(data, bytes) else data
        cdef Py_ssize_t n = src.shape[0], off = 0, take
        out = []
        while off < n:
            view = self.get_buffer()
            take = min(n - off, len(view))
            view[:take] = src[off:off + take]
            del view
            self.end += take
            off += take
            out.extend(self.frames())
        return out
