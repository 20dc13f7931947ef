# The write buffer's contract: byte-order helpers (csrc/fastrpc_endian.h) and
# WriteBuffer, which framing (frame.pxd) and MessagePack (codec.pxd) both
# append to.

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


cdef enum:
    DETACH_SIZE = 32768       # output this large is handed over as a buffer, not copied
    FRESH_SIZE = 8192         # the buffer that replaces one handed over (it grows as needed)


cdef class WriteBuffer:
    """Growable byte buffer; frames and payloads are appended in place."""
    cdef char *data           # start of storage (heap, grown by doubling)
    cdef Py_ssize_t size      # bytes written so far
    cdef Py_ssize_t cap       # bytes allocated
    cdef Py_ssize_t frames    # frames completed since the last reset
    cdef int exports          # live buffer exports; growth refused while > 0
    # Encoding options of whoever owns the buffer (a client's or a server's),
    # read by the codec only off its fast paths:
    cdef public object default     # None, or default(obj) -> an encodable stand-in
    cdef public bint keep_tuples   # tuples travel as the tuple ext (not as arrays)

    cdef int _grow(self, Py_ssize_t extra) except -1
    cdef inline int ensure(self, Py_ssize_t extra) except -1:
        if self.size + extra > self.cap:
            return self._grow(extra)
        return 0
    cdef int write(self, const char *p, Py_ssize_t n) except -1
    cdef bytes take(self)
    cdef object take_output(self)
    cdef void reset(self)
