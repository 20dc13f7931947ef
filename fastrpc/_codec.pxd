# The codec's contract: the shared write buffer that framing and codec both
# fill, and the MessagePack encode/decode entry points other compiled modules
# cimport.

cdef extern from "fastrpc_endian.h":
    unsigned short frpc_load_u16(const char *p) nogil
    unsigned int frpc_load_u32(const char *p) nogil
    unsigned long long frpc_load_u64(const char *p) nogil
    float frpc_load_f32(const char *p) nogil
    double frpc_load_f64(const char *p) nogil
    void frpc_store_u16(char *p, unsigned short v) nogil
    void frpc_store_u32(char *p, unsigned int v) nogil
    void frpc_store_u64(char *p, unsigned long long v) nogil
    void frpc_store_f64(char *p, double v) nogil


# Extension type code used for numpy arrays (see docs/PROTOCOL.md).
cdef enum:
    NDARRAY_EXT = 1
    DETACH_SIZE = 32768     # output this large is handed over as a buffer, not copied


cdef struct DecodeLimits:
    Py_ssize_t max_depth      # deepest container nesting accepted
    Py_ssize_t max_len        # most elements (or pairs) in one array or map
    Py_ssize_t max_bytes      # longest payload, str, bin or ext accepted


cdef class WriteBuffer:
    """Growable byte buffer; frames and payloads are appended in place."""
    cdef char *data           # start of storage (heap, grown by doubling)
    cdef Py_ssize_t size      # bytes written so far
    cdef Py_ssize_t cap       # bytes allocated
    cdef Py_ssize_t frames    # frames completed since the last reset
    cdef int exports          # live buffer exports; growth refused while > 0

    cdef int _grow(self, Py_ssize_t extra) except -1
    cdef inline int ensure(self, Py_ssize_t extra) except -1:
        if self.size + extra > self.cap:
            return self._grow(extra)
        return 0
    cdef int write(self, const char *p, Py_ssize_t n) except -1
    cdef bytes take(self)
    cdef object take_output(self)
    cdef void reset(self)


cdef int pack(WriteBuffer buf, object obj, int depth) except -1
cdef object unpack(const char *p, Py_ssize_t n, object base, const char *base_ptr,
                   DecodeLimits *limits)
cdef tuple unpack_args(const char *p, Py_ssize_t n, object base, const char *base_ptr,
                       DecodeLimits *limits)
cdef DecodeLimits default_limits()
