# cython: language_level=3
"""The write buffer that framing and codec share.

Owns: one growable block of bytes that frames and payloads are appended to in
place, the frame length back-patched when a frame ends, and exported as a
read-only buffer so a socket write copies nothing. It refuses to grow while
an export is alive, so an exported view never dangles.
"""
cimport cython
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Malloc, PyMem_Realloc, PyMem_Free
from libc.string cimport memcpy


@cython.final
cdef class WriteBuffer:
    """A growable byte buffer that frames and payloads are appended to.

    It exports its contents as a read-only buffer (``memoryview(buf)``) so a
    blocking socket can send them without a copy; it refuses to grow while
    such a view is alive.
    """

    def __cinit__(self, Py_ssize_t capacity=4096):
        if capacity < 64:
            capacity = 64
        self.data = <char *>PyMem_Malloc(capacity)
        if self.data == NULL:
            raise MemoryError()
        self.cap = capacity
        self.size = 0
        self.frames = 0
        self.exports = 0

    def __dealloc__(self):
        if self.data != NULL:
            PyMem_Free(self.data)
            self.data = NULL

    cdef int _grow(self, Py_ssize_t extra) except -1:
        cdef Py_ssize_t need = self.size + extra
        cdef Py_ssize_t new_cap = self.cap * 2
        cdef char *p
        if self.exports > 0:
            raise BufferError("WriteBuffer cannot grow while a view of it is alive")
        while new_cap < need:
            new_cap *= 2
        p = <char *>PyMem_Realloc(self.data, new_cap)
        if p == NULL:
            raise MemoryError()
        self.data = p
        self.cap = new_cap
        return 0

    cdef int write(self, const char *p, Py_ssize_t n) except -1:
        self.ensure(n)
        memcpy(self.data + self.size, p, n)
        self.size += n
        return 0

    cdef int attach(self, bytes payload) except -1:
        """Add `payload` at the current end without copying it (vectored owners)."""
        cdef Py_ssize_t n = len(payload)
        if self.attached is None:
            self.attached = []
        self.attached.append((self.size, payload, n))
        self.attached_bytes += n
        return 0

    cdef int rollback(self, Py_ssize_t start) except -1:
        """Drop everything encoded after `start` (a frame that failed), attachments too."""
        cdef list attached = self.attached
        self.size = start
        if attached is not None:
            while attached and <Py_ssize_t>attached[-1][0] > start:
                self.attached_bytes -= <Py_ssize_t>attached.pop()[2]
            if not attached:
                self.attached = None
        return 0

    cdef bytes take(self):
        """Return the contents as bytes and empty the buffer."""
        if self.attached is not None:
            raise BufferError("take() of a WriteBuffer holding attachments: use take_output()")
        cdef bytes out = PyBytes_FromStringAndSize(self.data, self.size)
        self.reset()
        return out

    cdef object take_output(self):
        """Return the contents and empty the buffer; None when empty.

        Small contents come back as bytes. Large contents are not copied:
        their memory moves to a new WriteBuffer returned as a read-only
        memoryview (a transport may keep it), and this buffer gets fresh memory.
        """
        cdef WriteBuffer full
        cdef char *fresh
        if self.attached is not None:
            return self._take_pieces()
        if self.size == 0:
            return None
        if self.size < DETACH_SIZE or self.exports > 0:
            return self.take()
        fresh = <char *>PyMem_Malloc(FRESH_SIZE)
        if fresh == NULL:
            raise MemoryError()
        full = WriteBuffer(64)
        PyMem_Free(full.data)
        full.data, full.size, full.cap = self.data, self.size, self.cap
        self.data, self.size, self.cap, self.frames = fresh, 0, FRESH_SIZE, 0
        return memoryview(full)

    cdef list _take_pieces(self):
        """take_output() with attachments: the list of buffers to write in order."""
        cdef list attached = self.attached
        cdef list pieces = []
        cdef Py_ssize_t at = 0, offset
        self.attached = None
        self.attached_bytes = self.frame_attached = 0
        view = memoryview(self.take_output())      # the bytes around the attachments
        for offset, payload, _ in attached:
            if offset > at:
                pieces.append(view[at:offset])
                at = offset
            pieces.append(payload)
        if at < len(view):
            pieces.append(view[at:])
        return pieces

    cdef void reset(self):
        cdef char *p
        self.size = 0
        self.frames = 0
        self.attached = None
        self.attached_bytes = self.frame_attached = 0
        # Give back memory after a very large message, keep it otherwise.
        if self.cap > (1 << 20) and self.exports == 0:
            p = <char *>PyMem_Realloc(self.data, FRESH_SIZE)
            if p != NULL:
                self.data = p
                self.cap = FRESH_SIZE

    def __len__(self):
        return self.size + self.attached_bytes

    def getvalue(self):
        """Return a copy of the contents as bytes."""
        return PyBytes_FromStringAndSize(self.data, self.size)

    def clear(self):
        """Empty the buffer (its memory is kept for reuse)."""
        self.reset()

    def __getbuffer__(self, Py_buffer *view, int flags):
        view.buf = self.data
        view.obj = self
        view.len = self.size
        view.readonly = 1
        view.itemsize = 1
        view.format = NULL
        if flags & 0x0004:  # PyBUF_FORMAT
            view.format = "B"
        view.ndim = 1
        view.shape = NULL
        view.strides = NULL
        view.suboffsets = NULL
        view.internal = NULL
        self.exports += 1

    def __releasebuffer__(self, Py_buffer *view):
        self.exports -= 1


def output_size(data) -> int:
    """Bytes in what take_output() returned: a buffer, or a list of them."""
    if type(data) is list:
        return sum([len(piece) for piece in data])
    return len(data)
