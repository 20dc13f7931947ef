# cython: language_level=3
# The compiled contract of fastrpc/_gob.py (Cython pure-Python mode): the
# same source runs uncompiled as the reference implementation. Types here
# make the byte loops C loops; everything else stays Python objects.
cimport cython


cdef class GoType:
    cdef public int kind            # a K_* constant
    cdef public object name         # the Go name sent with the definition
    cdef public object elem         # GoType of slice/array/map elements, or None
    cdef public object key          # GoType of map keys, or None
    cdef public Py_ssize_t length   # array length
    cdef public list fields         # struct fields: [(go name, attribute, GoType)]
    cdef public object cls          # the class a struct decodes to / encodes from, or None
    cdef public int builtin_id      # predefined id of a basic type, 0 for user types


cpdef _put_uint(bytearray out, object x)
cpdef _put_int(bytearray out, object i)
cpdef bint _is_zero(GoType t, object v) except -1


cdef class GobEncoder:
    cdef public dict ids            # GoType -> type id on this stream
    cdef public dict names          # GoType -> name sent with its definition
    cdef public set sent            # GoTypes already defined on this stream
    cdef public object next_id
    cdef public int max_depth
    cdef public bytearray out       # encoded messages waiting to be written
    cdef public set assigning       # GoTypes whose elements are being given ids

    cpdef _struct(self, bytearray out, GoType t, object v, int depth)
    cpdef _value(self, bytearray out, GoType t, object v, int depth)


cdef class _WireType:
    cdef public int kind
    cdef public object name
    cdef public object elem         # type ids
    cdef public object key
    cdef public object length
    cdef public list fields         # [(name, type id)]


@cython.final
cdef class _Reader:
    cdef readonly bytes data
    cdef public Py_ssize_t pos
    cdef public Py_ssize_t end

    cpdef object uint(self)
    cpdef object signed(self)
    cpdef bytes raw(self, Py_ssize_t n)
    cpdef Py_ssize_t count(self) except -1
    cpdef str string(self)


cdef class GobDecoder:
    cdef public dict types          # type id -> _WireType defined by the peer
    cdef public bytearray buf       # bytes of a message not yet complete
    cdef public object max_message
    cdef public int max_depth
    cdef public object broken       # why the stream failed, or None

    cpdef object _message(self, bytes data)
    cpdef object _top(self, object tid, _Reader r)
    cpdef _define(self, object tid, _Reader r)
    cpdef tuple _name_and_id(self, _Reader r, str what)
    cpdef object _value(self, object tid, _Reader r, int depth)
    cpdef dict _struct(self, _WireType wt, _Reader r, int depth)
    cpdef object _zero(self, object tid, int depth)
    cpdef object _interface(self, _Reader r, int depth)
