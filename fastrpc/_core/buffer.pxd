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
    ATTACH_SIZE = 32768       # bytes payloads this large are sent from their own memory (vectored owners)
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
    # Vectored owners write what take_output() returns even when it is a
    # list of buffers: large bytes payloads are then not copied in but
    # attached, [(offset in data, bytes object, its length), ...], and sent
    # from their own memory (writev) after the bytes before them.
    cdef public bint vectored
    cdef list attached            # None, or the attachments since the last take
    cdef Py_ssize_t attached_bytes
    cdef Py_ssize_t frame_attached  # attached_bytes when the current frame began

    cdef int _grow(self, Py_ssize_t extra) except -1
    cdef inline int ensure(self, Py_ssize_t extra) except -1:
        if self.size + extra > self.cap:
            return self._grow(extra)
        return 0
    cdef int write(self, const char *p, Py_ssize_t n) except -1
    cdef int attach(self, bytes payload) except -1
    cdef int rollback(self, Py_ssize_t start) except -1
    cdef inline Py_ssize_t since(self, Py_ssize_t start):
        """Bytes of the current frame (begun at `start`), attachments included."""
        return self.size - start + self.attached_bytes - self.frame_attached
    cdef inline Py_ssize_t total(self):
        """Bytes encoded since the last take, attachments included."""
        return self.size + self.attached_bytes
    cdef bytes take(self)
    cdef object take_output(self)
    cdef list _take_pieces(self)
    cdef void reset(self)
