# cython: language_level=3
"""MessagePack-compatible encoder and decoder, with numpy arrays as an ext type.

Owns: `pack`/`unpack` (into and out of the shared WriteBuffer) for the other
compiled modules, and the Python-level `packb`/`unpackb`. The other extension
types (datetime, Decimal, sets, registered records...) are defined in
fastrpc.extensions; this module only frames them, off its fast paths. Decoding checks every
length against the bytes that remain before allocating anything, so hostile
input cannot make it allocate more than the payload could hold.
"""
cimport cython
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_CheckExact
from cpython.unicode cimport PyUnicode_CheckExact, PyUnicode_DecodeUTF8
from cpython.long cimport PyLong_CheckExact, PyLong_FromLongLong, PyLong_FromUnsignedLongLong
from cpython.float cimport PyFloat_CheckExact, PyFloat_AS_DOUBLE, PyFloat_FromDouble
from cpython.list cimport PyList_CheckExact, PyList_New, PyList_SET_ITEM, PyList_GET_SIZE, PyList_GET_ITEM
from cpython.tuple cimport PyTuple_CheckExact, PyTuple_GET_SIZE, PyTuple_GET_ITEM, PyTuple_New, PyTuple_SET_ITEM
from cpython.dict cimport PyDict_CheckExact, PyDict_Next, PyDict_New, PyDict_SetItem, PyDict_Size
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE, PyBUF_READ
from cpython.ref cimport Py_INCREF, PyObject
from libc.string cimport memcpy, memset
from libc.stdint cimport int64_t, uint64_t, int8_t, int16_t, int32_t

from fastrpc._core.buffer cimport (WriteBuffer, frpc_load_u16, frpc_load_u32, frpc_load_u64,
                                   frpc_load_f32, frpc_load_f64, frpc_store_u16, frpc_store_u32,
                                   frpc_store_u64, frpc_store_f64, ATTACH_SIZE)

import numpy as np
from fastrpc.errors import EncodeError, DecodeError, DecodeLimitError
from fastrpc import extensions as _ext

cdef extern from "Python.h":
    object PyMemoryView_FromObject(object obj)
    const char* PyUnicode_AsUTF8AndSize(object o, Py_ssize_t *size) except NULL
    long long PyLong_AsLongLongAndOverflow(object o, int *overflow) except? -1
    unsigned long long PyLong_AsUnsignedLongLong(object o) except? -1

# Defaults for untrusted input; each can be changed per call, per server and
# per client. Lengths are also checked against the bytes left, always.
DEFAULT_MAX_DEPTH = 256
# The decoder recurses once per nesting level, taking up to ~310 bytes of C
# stack per level (measured, maps being the deepest): 2048 levels need
# under 640 KiB, safe on a 1 MiB thread stack and far below the 8 MiB of a
# Linux thread. A larger max_depth is refused rather than risk a crash.
MAX_DEPTH_LIMIT = 2048
# Dimensions of an ndarray on the wire (docs/PROTOCOL.md), and the largest
# element count times item size an empty array's other dimensions may
# multiply to (numpy's own ceiling is the largest signed 64-bit size).
cdef Py_ssize_t MAX_NDIM = 64
cdef object MAX_EMPTY_EXTENT = 1 << 62
DEFAULT_MAX_LEN = 1 << 24
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
# Read as a C constant on every value encoded (a module global would be a
# dictionary look-up and a Python comparison each time).
cdef int _MAX_ENCODE_DEPTH = 512
MAX_ENCODE_DEPTH = _MAX_ENCODE_DEPTH

cdef object _ndarray = np.ndarray
cdef object _frombuffer = np.frombuffer
cdef object _ascontiguousarray = np.ascontiguousarray
cdef object _np_dtype = np.dtype
cdef dict _dtype_cache = {}
cdef object _ext_encode = _ext.encode
cdef object _ext_decode = _ext.decode
cdef object _ext_decode_nested = _ext.decode_nested
cdef object _nested_codes = _ext.NESTED_CODES
cdef dict _registered_types = _ext.REGISTERED_TYPES
cdef int EXT_TUPLE = _ext.EXT_TUPLE


cdef DecodeLimits default_limits():
    cdef DecodeLimits lim
    lim.max_depth = DEFAULT_MAX_DEPTH
    lim.max_len = DEFAULT_MAX_LEN
    lim.max_bytes = DEFAULT_MAX_BYTES
    lim.bytes_views = False
    lim.ext_hook = NULL
    return lim


class ExtType(tuple):
    """A MessagePack ext value fastrpc has no type for: ``ExtType(code, data)``."""

    __slots__ = ()

    def __new__(cls, int code, data):
        if not -128 <= code <= 127:
            raise ValueError("ext code must be in -128..127")
        return tuple.__new__(cls, (code, bytes(data)))

    @property
    def code(self):
        return self[0]

    @property
    def data(self):
        return self[1]

    def __repr__(self):
        return f"ExtType(code={self[0]}, data={self[1]!r})"


# --------------------------------------------------------------------------
# Encoder


cdef inline int _put1(WriteBuffer b, unsigned char c) except -1:
    b.ensure(1)
    b.data[b.size] = <char>c
    b.size += 1
    return 0


cdef inline int _put_u8(WriteBuffer b, unsigned char tag, unsigned char v) except -1:
    b.ensure(2)
    b.data[b.size] = <char>tag
    b.data[b.size + 1] = <char>v
    b.size += 2
    return 0


cdef inline int _put_u16(WriteBuffer b, unsigned char tag, unsigned short v) except -1:
    b.ensure(3)
    b.data[b.size] = <char>tag
    frpc_store_u16(b.data + b.size + 1, v)
    b.size += 3
    return 0


cdef inline int _put_u32(WriteBuffer b, unsigned char tag, unsigned int v) except -1:
    b.ensure(5)
    b.data[b.size] = <char>tag
    frpc_store_u32(b.data + b.size + 1, v)
    b.size += 5
    return 0


cdef inline int _put_u64(WriteBuffer b, unsigned char tag, unsigned long long v) except -1:
    b.ensure(9)
    b.data[b.size] = <char>tag
    frpc_store_u64(b.data + b.size + 1, v)
    b.size += 9
    return 0


cdef int _pack_int(WriteBuffer b, object o) except -1:
    cdef int overflow = 0
    cdef long long v = PyLong_AsLongLongAndOverflow(o, &overflow)
    cdef unsigned long long u
    if overflow == 0:
        if v >= 0:
            u = <unsigned long long>v
            if u < 0x80:
                return _put1(b, <unsigned char>u)
            if u <= 0xff:
                return _put_u8(b, 0xcc, <unsigned char>u)
            if u <= 0xffff:
                return _put_u16(b, 0xcd, <unsigned short>u)
            if u <= 0xffffffffULL:
                return _put_u32(b, 0xce, <unsigned int>u)
            return _put_u64(b, 0xcf, u)
        if v >= -32:
            return _put1(b, <unsigned char>(<signed char>v))
        if v >= -128:
            return _put_u8(b, 0xd0, <unsigned char>(<signed char>v))
        if v >= -32768:
            return _put_u16(b, 0xd1, <unsigned short>(<short>v))
        if v >= -2147483648LL:
            return _put_u32(b, 0xd2, <unsigned int>(<int>v))
        return _put_u64(b, 0xd3, <unsigned long long>v)
    if overflow > 0:
        try:
            u = PyLong_AsUnsignedLongLong(o)
        except OverflowError:
            raise EncodeError(f"int {o} is above the 64-bit unsigned range") from None
        return _put_u64(b, 0xcf, u)
    raise EncodeError(f"int {o} is below the 64-bit signed range")


cdef inline int _pack_raw_header(WriteBuffer b, Py_ssize_t n, bint is_str) except -1:
    if n > 0xffffffffLL:
        raise EncodeError("str or bytes longer than 4 GiB cannot be encoded")
    if is_str:
        if n < 32:
            return _put1(b, 0xa0 | <unsigned char>n)
        if n <= 0xff:
            return _put_u8(b, 0xd9, <unsigned char>n)
        if n <= 0xffff:
            return _put_u16(b, 0xda, <unsigned short>n)
        return _put_u32(b, 0xdb, <unsigned int>n)
    if n <= 0xff:
        return _put_u8(b, 0xc4, <unsigned char>n)
    if n <= 0xffff:
        return _put_u16(b, 0xc5, <unsigned short>n)
    return _put_u32(b, 0xc6, <unsigned int>n)


cdef inline int _pack_str(WriteBuffer b, object o) except -1:
    cdef Py_ssize_t n
    cdef const char *p
    try:
        p = PyUnicode_AsUTF8AndSize(o, &n)
    except UnicodeEncodeError as exc:
        raise EncodeError(f"str cannot be encoded as UTF-8: {exc}") from None
    _pack_raw_header(b, n, True)
    return b.write(p, n)


cdef int _pack_buffer(WriteBuffer b, object o) except -1:
    cdef Py_buffer view
    PyObject_GetBuffer(o, &view, PyBUF_SIMPLE)
    try:
        _pack_raw_header(b, view.len, False)
        b.write(<const char *>view.buf, view.len)
    finally:
        PyBuffer_Release(&view)
    return 0


cdef inline int _pack_array_header(WriteBuffer b, Py_ssize_t n) except -1:
    if n < 16:
        return _put1(b, 0x90 | <unsigned char>n)
    if n <= 0xffff:
        return _put_u16(b, 0xdc, <unsigned short>n)
    if n > 0xffffffffLL:
        raise EncodeError("sequence longer than 2**32-1 cannot be encoded")
    return _put_u32(b, 0xdd, <unsigned int>n)


cdef inline int _pack_map_header(WriteBuffer b, Py_ssize_t n) except -1:
    if n < 16:
        return _put1(b, 0x80 | <unsigned char>n)
    if n <= 0xffff:
        return _put_u16(b, 0xde, <unsigned short>n)
    if n > 0xffffffffLL:
        raise EncodeError("dict larger than 2**32-1 cannot be encoded")
    return _put_u32(b, 0xdf, <unsigned int>n)


cdef int _pack_ext_header(WriteBuffer b, Py_ssize_t n, signed char code) except -1:
    if n > 0xffffffffLL:
        raise EncodeError("ext payload longer than 4 GiB cannot be encoded")
    b.ensure(6)
    cdef int fixext = -1
    if n == 1:
        fixext = 0xd4
    elif n == 2:
        fixext = 0xd5
    elif n == 4:
        fixext = 0xd6
    elif n == 8:
        fixext = 0xd7
    elif n == 16:
        fixext = 0xd8
    if fixext >= 0:
        b.data[b.size] = <char><unsigned char>fixext
        b.data[b.size + 1] = <char>code
        b.size += 2
        return 0
    if n <= 0xff:
        b.data[b.size] = <char>0xc7
        b.data[b.size + 1] = <char>n
        b.data[b.size + 2] = <char>code
        b.size += 3
    elif n <= 0xffff:
        b.data[b.size] = <char>0xc8
        frpc_store_u16(b.data + b.size + 1, <unsigned short>n)
        b.data[b.size + 3] = <char>code
        b.size += 4
    else:
        b.data[b.size] = <char>0xc9
        frpc_store_u32(b.data + b.size + 1, <unsigned int>n)
        b.data[b.size + 5] = <char>code
        b.size += 6
    return 0


cdef int _pack_ndarray(WriteBuffer b, object arr) except -1:
    """ndarray ext: see docs/PROTOCOL.md, "numpy arrays"."""
    cdef bytes dtype_str
    cdef Py_ssize_t ndim, nbytes, i, meta, pad, body, start
    cdef Py_buffer view
    cdef char order
    dtype = arr.dtype
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None or dtype.itemsize == 0:
        raise EncodeError(f"numpy dtype {dtype} cannot be sent (object, structured or empty dtype)")
    flags = arr.flags
    if flags.c_contiguous:
        order = b'C'
    elif flags.f_contiguous:
        order = b'F'
    else:
        arr = _ascontiguousarray(arr)
        order = b'C'
    dtype_str = dtype.str.encode("ascii")
    ndim = arr.ndim
    shape = arr.shape
    nbytes = arr.nbytes
    if len(dtype_str) > 255 or ndim > 64:
        raise EncodeError("numpy array dtype or rank cannot be encoded")
    # version, order, dtype length, dtype, ndim, shape, pad length, pad, data
    meta = 3 + len(dtype_str) + 1 + 8 * ndim + 1
    start = b.total() + 6 + meta  # ext32 header is 6 bytes
    pad = (-start) & 15        # align the data to 16 bytes within the buffer
    body = meta + pad + nbytes
    b.ensure(6 + body)
    # Always the 32-bit ext header so the layout (and alignment) is predictable.
    b.data[b.size] = <char>0xc9
    frpc_store_u32(b.data + b.size + 1, <unsigned int>body)
    b.data[b.size + 5] = <char>NDARRAY_EXT
    b.size += 6
    b.data[b.size] = 1                     # layout version
    b.data[b.size + 1] = order
    b.data[b.size + 2] = <char>len(dtype_str)
    b.size += 3
    memcpy(b.data + b.size, PyBytes_AS_STRING(dtype_str), len(dtype_str))
    b.size += len(dtype_str)
    b.data[b.size] = <char>ndim
    b.size += 1
    for i in range(ndim):
        frpc_store_u64(b.data + b.size, <unsigned long long>shape[i])
        b.size += 8
    b.data[b.size] = <char>pad
    b.size += 1
    memset(b.data + b.size, 0, pad)
    b.size += pad
    if nbytes:
        PyObject_GetBuffer(arr.reshape(-1, order='A').view(np.uint8), &view, PyBUF_SIMPLE)
        try:
            memcpy(b.data + b.size, view.buf, nbytes)
        finally:
            PyBuffer_Release(&view)
        b.size += nbytes
    return 0


cdef int pack(WriteBuffer b, object o, int depth) except -1:
    """Append the MessagePack encoding of `o` to `b`."""
    cdef Py_ssize_t n, i, pos
    cdef PyObject *k
    cdef PyObject *v
    cdef double d
    if depth > _MAX_ENCODE_DEPTH:
        raise EncodeError(f"value nested deeper than {_MAX_ENCODE_DEPTH} levels (cyclic?)")
    if o is None:
        return _put1(b, 0xc0)
    if o is True:
        return _put1(b, 0xc3)
    if o is False:
        return _put1(b, 0xc2)
    if PyLong_CheckExact(o):
        return _pack_int(b, o)
    if PyUnicode_CheckExact(o):
        return _pack_str(b, o)
    if PyFloat_CheckExact(o):
        b.ensure(9)
        b.data[b.size] = <char>0xcb
        frpc_store_f64(b.data + b.size + 1, PyFloat_AS_DOUBLE(o))
        b.size += 9
        return 0
    if PyList_CheckExact(o):
        n = PyList_GET_SIZE(o)
        _pack_array_header(b, n)
        for i in range(n):
            pack(b, <object>PyList_GET_ITEM(o, i), depth + 1)
        return 0
    if PyTuple_CheckExact(o):
        if b.keep_tuples:
            return _pack_nested(b, EXT_TUPLE, list(o), depth)
        n = PyTuple_GET_SIZE(o)
        _pack_array_header(b, n)
        for i in range(n):
            pack(b, <object>PyTuple_GET_ITEM(o, i), depth + 1)
        return 0
    if PyDict_CheckExact(o):
        _pack_map_header(b, PyDict_Size(o))
        pos = 0
        while PyDict_Next(o, &pos, &k, &v):
            pack(b, <object>k, depth + 1)
            pack(b, <object>v, depth + 1)
        return 0
    if PyBytes_CheckExact(o):
        n = PyBytes_GET_SIZE(o)
        _pack_raw_header(b, n, False)
        if n >= ATTACH_SIZE and b.vectored:
            return b.attach(<bytes>o)        # sent from its own memory, not copied
        return b.write(PyBytes_AS_STRING(o), n)
    return _pack_other(b, o, depth)


cdef int pack_args(WriteBuffer b, tuple args) except -1:
    """Append a call's positional arguments: always an array, whatever the
    buffer's options (keep_tuples applies to the values, not the list)."""
    cdef Py_ssize_t i, n = PyTuple_GET_SIZE(args)
    _pack_array_header(b, n)
    for i in range(n):
        pack(b, <object>PyTuple_GET_ITEM(args, i), 1)
    return 0


cdef int _pack_nested(WriteBuffer b, signed char code, object payload, int depth) except -1:
    """An ext whose content is one MessagePack value: ext32 header, the value,
    then the length patched in (it is not known before)."""
    cdef Py_ssize_t start = b.size, attached = b.attached_bytes, length
    b.ensure(6)
    b.data[start] = <char>0xc9
    b.data[start + 5] = <char>code
    b.size += 6
    pack(b, payload, depth + 1)
    length = b.size - start - 6 + b.attached_bytes - attached     # attached payloads count too
    if length > 0xffffffff:
        raise EncodeError("ext payload longer than 4 GiB cannot be encoded")
    frpc_store_u32(b.data + start + 1, <unsigned int>length)
    return 0


cdef int _pack_extension(WriteBuffer b, object o, int depth, bint *done) except -1:
    """A value fastrpc.extensions knows (registered records, datetime, Decimal,
    sets...): sets done[0] when it was written."""
    try:
        how = _ext_encode(o)
    except (ValueError, TypeError, OverflowError) as exc:
        raise EncodeError(f"cannot encode {type(o).__name__}: {exc}") from None
    if how is None:
        done[0] = False
        return 0
    done[0] = True
    code, payload, nested = how
    if code is None:
        return pack(b, payload, depth + 1)
    if nested:
        return _pack_nested(b, <signed char>code, payload, depth)
    _pack_ext_header(b, len(payload), <signed char>code)
    return b.write(PyBytes_AS_STRING(payload), len(payload))


cdef int _pack_other(WriteBuffer b, object o, int depth) except -1:
    """Subclasses and the less common types, kept off the hot path."""
    cdef bint done = False
    if isinstance(o, _ndarray):
        return _pack_ndarray(b, o)
    if _registered_types and type(o) in _registered_types:
        return _pack_extension(b, o, depth, &done)
    if isinstance(o, bool):
        return _put1(b, 0xc3 if o else 0xc2)
    if isinstance(o, int):
        return _pack_int(b, o)
    if isinstance(o, float):
        b.ensure(9)
        b.data[b.size] = <char>0xcb
        frpc_store_f64(b.data + b.size + 1, <double>o)
        b.size += 9
        return 0
    if isinstance(o, str):
        return _pack_str(b, str(o))
    if isinstance(o, (bytes, bytearray, memoryview)):
        return _pack_buffer(b, o)
    if isinstance(o, ExtType):
        _pack_ext_header(b, len(o[1]), <signed char>o[0])
        return b.write(PyBytes_AS_STRING(o[1]), len(o[1]))
    if isinstance(o, (list, tuple)):
        if b.keep_tuples and isinstance(o, tuple):
            return _pack_nested(b, EXT_TUPLE, list(o), depth)
        _pack_array_header(b, len(o))
        for item in o:
            pack(b, item, depth + 1)
        return 0
    if isinstance(o, dict):
        _pack_map_header(b, len(o))
        for key, value in o.items():
            pack(b, key, depth + 1)
            pack(b, value, depth + 1)
        return 0
    if isinstance(o, np.generic):
        return pack(b, o.item(), depth + 1)
    _pack_extension(b, o, depth, &done)
    if done:
        return 0
    if b.default is not None:
        try:
            stand_in = b.default(o)
        except Exception as exc:
            raise EncodeError(f"cannot encode object of type {type(o).__name__}: default() raised "
                              f"{type(exc).__name__}: {exc}") from exc
        if type(stand_in) is type(o):
            raise EncodeError(f"default() returned a {type(o).__name__} for a {type(o).__name__}: "
                              f"it must return something encodable (e.g. ExtType(code, bytes))")
        return pack(b, stand_in, depth + 1)
    raise EncodeError(f"cannot encode object of type {type(o).__name__} "
                      f"(see register_type, or the default= hook, for your own types)")


# --------------------------------------------------------------------------
# Decoder


cdef struct Reader:
    const char *p             # next byte to read
    const char *end           # one past the last byte
    PyObject *base            # buffer object the bytes live in (for ndarray views), or NULL
    const char *base_ptr      # address of base's first byte
    DecodeLimits *limits


cdef int _truncated() except -1:
    raise DecodeError("truncated payload")


cdef inline int _need(Reader *r, Py_ssize_t n) except -1:
    if r.end - r.p < n:
        return _truncated()
    return 0


cdef int _check_len(Reader *r, Py_ssize_t n, Py_ssize_t min_item) except -1:
    if n > r.limits.max_len:
        raise DecodeLimitError(f"container of {n} items is above the limit max_len={r.limits.max_len}")
    if n * min_item > r.end - r.p:
        raise DecodeError(f"container of {n} items is longer than the payload")
    return 0


cdef int _check_raw(Reader *r, Py_ssize_t n) except -1:
    if n > r.limits.max_bytes:
        raise DecodeLimitError(f"value of {n} bytes is above the limit max_bytes={r.limits.max_bytes}")
    return _need(r, n)


cdef object _unpack_str(Reader *r, Py_ssize_t n):
    _check_raw(r, n)
    cdef const char *p = r.p
    r.p += n
    try:
        return PyUnicode_DecodeUTF8(p, n, NULL)
    except UnicodeDecodeError as exc:
        raise DecodeError(f"str is not valid UTF-8: {exc}") from None


cdef object _unpack_bin(Reader *r, Py_ssize_t n):
    _check_raw(r, n)
    cdef const char *p = r.p
    cdef Py_ssize_t offset
    r.p += n
    if r.limits.bytes_views and r.base != NULL:
        # Zero-copy (opt-in): a read-only view of the buffer the frame arrived
        # in, which it keeps alive (the frame reader then receives into a
        # new buffer rather than reuse this one).
        offset = p - r.base_ptr
        return PyMemoryView_FromObject(<object>r.base)[offset:offset + n].toreadonly()
    return PyBytes_FromStringAndSize(p, n)


cdef object _unpack_array(Reader *r, Py_ssize_t n, int depth):
    _check_len(r, n, 1)
    cdef list out = PyList_New(n)
    cdef Py_ssize_t i
    cdef object item
    for i in range(n):
        item = _unpack(r, depth + 1)
        Py_INCREF(item)
        PyList_SET_ITEM(out, i, item)
    return out


cdef object _unpack_map(Reader *r, Py_ssize_t n, int depth):
    _check_len(r, n, 2)
    cdef dict out = {}
    cdef Py_ssize_t i
    cdef object key
    for i in range(n):
        key = _unpack(r, depth + 1)
        if type(key) is list:
            key = _freeze(key)
        try:
            PyDict_SetItem(out, key, _unpack(r, depth + 1))
        except TypeError:
            raise DecodeError(f"map key of type {type(key).__name__} is not hashable") from None
    return out


cdef object _freeze(object value):
    if type(value) is list:
        return tuple([_freeze(x) for x in value])
    return value


cdef object _dtype_for(bytes name):
    dt = _dtype_cache.get(name)
    if dt is None:
        try:
            dt = _np_dtype(name.decode("ascii"))
        except Exception:
            raise DecodeError(f"unknown numpy dtype {name!r}") from None
        if dt.hasobject:
            raise DecodeError("numpy object arrays are not accepted")
        # Plain scalar dtypes only: a subarray dtype ("2f4") or a structured
        # one would change how many elements the data holds.
        if dt.kind not in "biufcSUMm" or dt.shape != () or dt.names is not None:
            raise DecodeError(f"numpy dtype {name!r} is not accepted (plain numeric, bool, "
                              f"string or datetime dtypes only)")
        if len(_dtype_cache) < 256:
            _dtype_cache[name] = dt
    return dt


cdef object _unpack_ndarray(Reader *r, Py_ssize_t n):
    cdef const char *p = r.p
    cdef const char *end = r.p + n
    cdef Py_ssize_t dlen, ndim, i, pad, count, itemsize, nbytes
    cdef char order
    r.p = end
    if n < 5 or <unsigned char>p[0] != 1:
        raise DecodeError("malformed ndarray ext (unknown layout version)")
    order = p[1]
    if order != b'C' and order != b'F':
        raise DecodeError("malformed ndarray ext (bad order)")
    dlen = <unsigned char>p[2]
    p += 3
    if end - p < dlen + 1:
        raise DecodeError("malformed ndarray ext (truncated dtype)")
    dtype = _dtype_for(PyBytes_FromStringAndSize(p, dlen))
    p += dlen
    ndim = <unsigned char>p[0]
    p += 1
    if ndim > MAX_NDIM:
        raise DecodeError(f"malformed ndarray ext ({ndim} dimensions; at most {MAX_NDIM})")
    if end - p < ndim * 8 + 1:
        raise DecodeError("malformed ndarray ext (truncated shape)")
    itemsize = dtype.itemsize
    if itemsize == 0:
        raise DecodeError("numpy dtypes of zero item size are not accepted")
    shape = []
    for i in range(ndim):
        shape.append(<Py_ssize_t>min(frpc_load_u64(p + 8 * i), <unsigned long long>(1 << 62)))
    p += 8 * ndim
    count = 1
    if 0 not in shape:
        # Each dimension and the running product are checked against the
        # bytes present, so a lying header can neither overflow nor allocate.
        for dim in shape:
            if dim > n:
                raise DecodeError("malformed ndarray ext (shape larger than data)")
            count *= <Py_ssize_t>dim
            if count > n:
                raise DecodeError("malformed ndarray ext (shape larger than data)")
    else:
        # No data, but numpy still multiplies the other dimensions: their
        # product must be a size numpy can hold.
        count = itemsize
        for dim in shape:
            if dim:
                if dim > MAX_EMPTY_EXTENT // count:
                    raise DecodeError("malformed ndarray ext (empty array with a shape too large)")
                count *= <Py_ssize_t>dim
        count = 0
    pad = <unsigned char>p[0]
    p += 1
    nbytes = count * itemsize
    if end - p != pad + nbytes:
        raise DecodeError("malformed ndarray ext (data length does not match shape and dtype)")
    p += pad
    try:
        if r.base != NULL:
            # Zero-copy: a view over the buffer the frame arrived in.
            flat = _frombuffer(<object>r.base, dtype=dtype, count=count, offset=p - r.base_ptr)
        else:
            flat = _frombuffer(PyBytes_FromStringAndSize(p, nbytes), dtype=dtype, count=count)
        return flat.reshape(shape, order='F' if order == b'F' else 'C')
    except (ValueError, TypeError, MemoryError) as exc:
        # What the checks above let through and numpy still refuses (e.g.
        # more dimensions than this numpy supports).
        raise DecodeError(f"malformed ndarray ext ({exc})") from None


cdef object _unpack_ext(Reader *r, Py_ssize_t n, signed char code, int depth):
    cdef Reader inner
    _check_raw(r, n)
    if code == NDARRAY_EXT:
        return _unpack_ndarray(r, n)
    cdef const char *p = r.p
    r.p += n
    if code == -1 or 0 <= code <= 15:
        # MessagePack's Timestamp, or one of fastrpc's (fastrpc.extensions).
        try:
            if code in _nested_codes:
                inner = r[0]
                inner.p = p
                inner.end = p + n
                value = _unpack(&inner, depth + 1)
                if inner.p != inner.end:
                    raise ValueError(f"{inner.end - inner.p} trailing bytes in its payload")
                return _ext_decode_nested(code, value)
            return _ext_decode(code, PyBytes_FromStringAndSize(p, n))
        except DecodeError:
            raise
        except (ValueError, UnicodeDecodeError) as exc:
            raise DecodeError(f"malformed ext {code}: {exc}") from None
    if r.limits.ext_hook != NULL:
        try:
            return (<object>r.limits.ext_hook)(code, PyBytes_FromStringAndSize(p, n))
        except DecodeError:
            raise
        except Exception as exc:
            raise DecodeError(f"ext_hook failed on ext {code}: {type(exc).__name__}: {exc}") from None
    return ExtType(code, PyBytes_FromStringAndSize(p, n))


cdef object _unpack(Reader *r, int depth):
    cdef unsigned char c
    cdef const char *p
    if depth > r.limits.max_depth:
        raise DecodeLimitError(f"payload nested deeper than the limit max_depth={r.limits.max_depth}")
    if r.p >= r.end:
        _truncated()
    c = <unsigned char>r.p[0]
    r.p += 1
    if c < 0x80:
        return PyLong_FromLongLong(c)
    if c >= 0xe0:
        return PyLong_FromLongLong(<signed char>c)
    if 0xa0 <= c <= 0xbf:
        return _unpack_str(r, c & 0x1f)
    if 0x90 <= c <= 0x9f:
        return _unpack_array(r, c & 0x0f, depth)
    if 0x80 <= c <= 0x8f:
        return _unpack_map(r, c & 0x0f, depth)
    if c == 0xc0:
        return None
    if c == 0xc2:
        return False
    if c == 0xc3:
        return True
    p = r.p
    if c == 0xcb:
        _need(r, 8)
        r.p += 8
        return PyFloat_FromDouble(frpc_load_f64(p))
    if c == 0xca:
        _need(r, 4)
        r.p += 4
        return PyFloat_FromDouble(frpc_load_f32(p))
    if c == 0xcc:
        _need(r, 1)
        r.p += 1
        return PyLong_FromLongLong(<unsigned char>p[0])
    if c == 0xcd:
        _need(r, 2)
        r.p += 2
        return PyLong_FromLongLong(frpc_load_u16(p))
    if c == 0xce:
        _need(r, 4)
        r.p += 4
        return PyLong_FromLongLong(frpc_load_u32(p))
    if c == 0xcf:
        _need(r, 8)
        r.p += 8
        return PyLong_FromUnsignedLongLong(frpc_load_u64(p))
    if c == 0xd0:
        _need(r, 1)
        r.p += 1
        return PyLong_FromLongLong(<signed char>p[0])
    if c == 0xd1:
        _need(r, 2)
        r.p += 2
        return PyLong_FromLongLong(<int16_t>frpc_load_u16(p))
    if c == 0xd2:
        _need(r, 4)
        r.p += 4
        return PyLong_FromLongLong(<int32_t>frpc_load_u32(p))
    if c == 0xd3:
        _need(r, 8)
        r.p += 8
        return PyLong_FromLongLong(<int64_t>frpc_load_u64(p))
    if c == 0xd9:
        _need(r, 1)
        r.p += 1
        return _unpack_str(r, <unsigned char>p[0])
    if c == 0xda:
        _need(r, 2)
        r.p += 2
        return _unpack_str(r, frpc_load_u16(p))
    if c == 0xdb:
        _need(r, 4)
        r.p += 4
        return _unpack_str(r, frpc_load_u32(p))
    if c == 0xc4:
        _need(r, 1)
        r.p += 1
        return _unpack_bin(r, <unsigned char>p[0])
    if c == 0xc5:
        _need(r, 2)
        r.p += 2
        return _unpack_bin(r, frpc_load_u16(p))
    if c == 0xc6:
        _need(r, 4)
        r.p += 4
        return _unpack_bin(r, frpc_load_u32(p))
    if c == 0xdc:
        _need(r, 2)
        r.p += 2
        return _unpack_array(r, frpc_load_u16(p), depth)
    if c == 0xdd:
        _need(r, 4)
        r.p += 4
        return _unpack_array(r, frpc_load_u32(p), depth)
    if c == 0xde:
        _need(r, 2)
        r.p += 2
        return _unpack_map(r, frpc_load_u16(p), depth)
    if c == 0xdf:
        _need(r, 4)
        r.p += 4
        return _unpack_map(r, frpc_load_u32(p), depth)
    if 0xd4 <= c <= 0xd8:
        _need(r, 1)
        r.p += 1
        return _unpack_ext(r, 1 << (c - 0xd4), <signed char>p[0], depth)
    if c == 0xc7:
        _need(r, 2)
        r.p += 2
        return _unpack_ext(r, <unsigned char>p[0], <signed char>p[1], depth)
    if c == 0xc8:
        _need(r, 3)
        r.p += 3
        return _unpack_ext(r, frpc_load_u16(p), <signed char>p[2], depth)
    if c == 0xc9:
        _need(r, 5)
        r.p += 5
        return _unpack_ext(r, frpc_load_u32(p), <signed char>p[4], depth)
    raise DecodeError(f"invalid MessagePack type byte 0x{c:02x}")


cdef int _start(Reader *r, const char *p, Py_ssize_t n, object base, const char *base_ptr,
                DecodeLimits *limits) except -1:
    """Point a Reader at `p[0:n]` after checking the payload size limit."""
    if n > limits.max_bytes:
        raise DecodeLimitError(f"payload of {n} bytes is above the limit max_bytes={limits.max_bytes}")
    r.p = p
    r.end = p + n
    r.base = NULL if base is None else <PyObject *>base
    r.base_ptr = base_ptr
    r.limits = limits
    return 0


cdef object unpack(const char *p, Py_ssize_t n, object base, const char *base_ptr,
                   DecodeLimits *limits):
    """Decode exactly one value spanning `p[0:n]`.

    `base` (with `base_ptr`, the address of its first byte) is the buffer
    object that holds the bytes; ndarrays become views over it. Pass None to
    make ndarrays own a copy.
    """
    cdef Reader r
    _start(&r, p, n, base, base_ptr, limits)
    value = _unpack(&r, 0)
    if r.p != r.end:
        raise DecodeError(f"{r.end - r.p} trailing bytes after the payload")
    return value


cdef tuple unpack_args(const char *p, Py_ssize_t n, object base, const char *base_ptr,
                       DecodeLimits *limits, Py_ssize_t *used):
    """Decode a call's argument array straight into a tuple (see `unpack`).

    The array may be followed by more (a call's keyword arguments): `used`
    gets the bytes the array took."""
    cdef Reader r
    cdef unsigned char c
    cdef Py_ssize_t count, i
    cdef tuple out
    _start(&r, p, n, base, base_ptr, limits)
    if n < 1:
        _truncated()
    c = <unsigned char>p[0]
    if 0x90 <= c <= 0x9f:
        count = c & 0x0f
        r.p += 1
    elif c == 0xdc and n >= 3:
        count = frpc_load_u16(p + 1)
        r.p += 3
    elif c == 0xdd and n >= 5:
        count = frpc_load_u32(p + 1)
        r.p += 5
    else:
        raise DecodeError("call arguments are not a MessagePack array")
    _check_len(&r, count, 1)
    out = PyTuple_New(count)
    for i in range(count):
        item = _unpack(&r, 1)
        Py_INCREF(item)
        PyTuple_SET_ITEM(out, i, item)
    used[0] = r.p - p
    return out


# --------------------------------------------------------------------------
# Python API


cdef WriteBuffer _shared = WriteBuffer(65536)
cdef bint _shared_busy = False


def packb(obj, *, default=None, bint keep_tuples=False) -> bytes:
    """Encode `obj` as MessagePack and return the bytes.

    None, bool, int (64-bit signed or unsigned), float, str, bytes,
    bytearray, memoryview, list, tuple, dict, numpy arrays (ext type 1),
    ExtType, and the extension types of fastrpc.extensions (datetime, date,
    Decimal, UUID, set, frozenset, Enum, dataclasses) are supported. Other
    objects go through `default(obj)`, which returns an encodable stand-in
    (e.g. an ExtType); without it they raise EncodeError. With
    `keep_tuples`, tuples travel as the tuple ext and decode as tuples.
    """
    global _shared_busy
    cdef WriteBuffer b
    if _shared_busy or default is not None or keep_tuples:
        # A buffer of its own: the shared one is in use (re-entered from a
        # default hook), or this call's options must not stick to it.
        _ext.check_hooks(default, None)
        b = WriteBuffer(256)
        b.default = default
        b.keep_tuples = keep_tuples
        pack(b, obj, 0)
        return b.take()
    _shared_busy = True
    try:
        pack(_shared, obj, 0)
        return _shared.take()
    finally:
        _shared.reset()
        _shared_busy = False


def pack_into(WriteBuffer buf, obj) -> None:
    """Append the encoding of `obj` to a WriteBuffer."""
    pack(buf, obj, 0)


def check_max_depth(max_depth) -> int:
    """Return `max_depth` if it is a nesting limit the decoders can honour
    without exhausting the C stack (1..MAX_DEPTH_LIMIT); raise ValueError."""
    if not isinstance(max_depth, int) or isinstance(max_depth, bool) \
            or not 1 <= max_depth <= MAX_DEPTH_LIMIT:
        raise ValueError(f"max_depth must be an int from 1 to {MAX_DEPTH_LIMIT} (the nesting the "
                         f"decoder can follow safely on a thread's stack), not {max_depth!r}")
    return max_depth


def unpackb(data, *, Py_ssize_t max_depth=DEFAULT_MAX_DEPTH,
            Py_ssize_t max_len=DEFAULT_MAX_LEN, Py_ssize_t max_bytes=DEFAULT_MAX_BYTES,
            bint bytes_views=False, ext_hook=None):
    """Decode one MessagePack value from a bytes-like object.

    numpy arrays come back as views over `data` (no copy); with
    `bytes_views`, so do bin values (read-only memoryviews instead of
    bytes). Arrays decode to lists, maps to dicts (list keys become tuples).
    Malformed or truncated input raises DecodeError; input over a limit
    raises DecodeLimitError. fastrpc's extension types (datetime, Decimal,
    UUID, sets, registered records: fastrpc.extensions) come back as
    themselves; other ext codes as `ext_hook(code, data)` when given,
    else as ExtType.
    """
    cdef Py_buffer view
    _ext.check_hooks(None, ext_hook)
    cdef DecodeLimits lim
    check_max_depth(max_depth)
    lim.max_depth = max_depth
    lim.max_len = max_len
    lim.max_bytes = max_bytes
    lim.bytes_views = bytes_views
    lim.ext_hook = NULL if ext_hook is None else <PyObject *>ext_hook
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        return unpack(<const char *>view.buf, view.len, data, <const char *>view.buf, &lim)
    finally:
        PyBuffer_Release(&view)
