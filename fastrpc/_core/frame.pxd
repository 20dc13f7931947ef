# Framing contract: frame kinds and flags, the parsed-frame view the hot loops
# read, the incremental FrameReader, and the frame writers.
from fastrpc._core.buffer cimport WriteBuffer

cdef enum:
    HEADER_SIZE = 16          # u32 length, u8 kind, u8 flags, u16 method length, u64 seq
    LENGTH_FIELD = 4          # bytes of the length prefix itself

cdef enum FrameKind:
    KIND_REQUEST = 1
    KIND_RESPONSE = 2
    KIND_ERROR = 3
    KIND_NOTIFY = 4
    KIND_PING = 5
    KIND_PONG = 6
    KIND_CANCEL = 7
    KIND_GOAWAY = 8
    KIND_ITEM = 9             # one item of a stream, either direction
    KIND_END = 10             # the client sends no more items on a stream
    KIND_CREDIT = 11          # the receiver of a stream takes this many more items and bytes
    KIND_OVERSIZED = 0        # not on the wire: a frame above max_frame_size, skipped (see FrameReader)

cdef enum FrameFlag:
    FLAG_DEADLINE = 0x01      # u32 deadline budget in ms follows the method
    FLAG_LOAD = 0x02          # u32 server in-flight count follows (after the deadline)
    FLAG_META = 0x04          # u32 length + msgpack map of call metadata follows
    FLAG_STREAM = 0x08        # the REQUEST opens a stream (no extension field)
    KNOWN_FLAGS = 0x0F


cdef struct FrameView:
    int kind                  # FrameKind
    int flags                 # FrameFlag bits
    unsigned long long seq    # call sequence id
    const char *method        # UTF-8 method name, not NUL-terminated
    Py_ssize_t method_len
    unsigned int deadline_ms  # valid when flags & FLAG_DEADLINE
    unsigned int load         # valid when flags & FLAG_LOAD
    const char *meta          # msgpack map, valid when flags & FLAG_META
    Py_ssize_t meta_len
    const char *payload       # msgpack payload
    Py_ssize_t payload_len


cdef class FrameReader:
    """Splits a byte stream into frames; the receive buffer is also the
    zero-copy backing store of decoded ndarrays."""
    cdef bytearray buf        # current receive buffer; never rewritten once views of it exist
    cdef char *data           # buf's storage
    cdef Py_ssize_t cap       # len(buf)
    cdef Py_ssize_t start     # first byte not yet consumed as a frame
    cdef Py_ssize_t end       # one past the last byte received
    cdef Py_ssize_t chunk     # default size of a fresh receive buffer
    cdef readonly Py_ssize_t max_frame_size  # largest length field accepted
    cdef public bint skip_oversized  # report a frame above max_frame_size and skip its bytes (else raise)
    cdef Py_ssize_t skipping  # bytes of a skipped frame still to discard as they arrive
    cdef Py_ssize_t largest   # the largest frame received whole (a buffer that large is earned)

    cdef int _new_buffer(self, Py_ssize_t need) except -1
    cdef int make_room(self) except -1
    cdef int next_frame(self, FrameView *f) except -1
    cdef int _check_length(self, Py_ssize_t length, bint whole_header) except -1


cdef Py_ssize_t begin_frame(WriteBuffer b, int kind, int flags, unsigned long long seq,
                            const char *method, Py_ssize_t method_len) except -1
cdef int end_frame(WriteBuffer b, Py_ssize_t start) except -1
cdef int write_empty_frame(WriteBuffer b, int kind, unsigned long long seq) except -1
cdef tuple read_credit(object grant)     # a CREDIT payload decoded: (items, bytes); DecodeError if it is not
