# The codec's contract: MessagePack encode/decode entry points the other
# compiled modules cimport, and the decode limits they pass.
from cpython.ref cimport PyObject
from fastrpc._core.buffer cimport WriteBuffer


# Extension type code used for numpy arrays (see docs/PROTOCOL.md).
cdef enum:
    NDARRAY_EXT = 1


cdef struct DecodeLimits:
    Py_ssize_t max_depth      # deepest container nesting accepted
    Py_ssize_t max_len        # most elements (or pairs) in one array or map
    Py_ssize_t max_bytes      # longest payload, str, bin or ext accepted
    bint bytes_views          # bin values become read-only memoryviews over the buffer (no copy)
    PyObject *ext_hook        # NULL, or ext_hook(code, data) for ext codes fastrpc does not know
                              # (borrowed: whoever sets it keeps the callable alive)


cdef int pack(WriteBuffer buf, object obj, int depth) except -1
cdef int pack_args(WriteBuffer buf, tuple args) except -1
cdef object unpack(const char *p, Py_ssize_t n, object base, const char *base_ptr,
                   DecodeLimits *limits)
cdef tuple unpack_args(const char *p, Py_ssize_t n, object base, const char *base_ptr,
                       DecodeLimits *limits, Py_ssize_t *used)
cdef DecodeLimits default_limits()
