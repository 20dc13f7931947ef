# The compiled half of a blocking client connection
# (fastrpc.client.connection.Connection): writing what its call table
# encoded and reading what arrived.
from cpython.pythread cimport PyThread_type_lock

from fastrpc._core.calltable cimport CallTable


cdef enum:
    WRITES_KEPT = 256                     # recent writes remembered (see ConnectionIO.writes)


cdef struct WriteRecord:
    long long offset                      # where in the stream the write began
    unsigned long long first_seq          # the calls it carried: first_seq..last_seq
    unsigned long long last_seq


cdef class ConnectionIO:
    """A blocking connection's socket, call table and write bookkeeping (its base class)."""
    cdef public str address
    cdef public object sock               # the connected socket (an SSLSocket when tls)
    cdef public object table              # its call table: fastrpc's CallTable or a Go codec's
    cdef public int fd                    # sock.fileno()
    cdef public bint tls                  # sock may hold decrypted bytes poll() cannot see
    cdef public long long sent            # bytes written so far
    cdef public object error              # why the connection failed, or None
    cdef CallTable direct                 # `table` when bytes move by system calls here, else None
    cdef PyThread_type_lock write_lock    # one writer at a time, in the order frames were taken
    cdef WriteRecord recent[WRITES_KEPT]  # a ring of the most recent writes
    cdef int recent_next                  # where the next one goes
    cdef int recent_count                 # how many it holds
    cdef int _flush(self) except -1
    cdef int _on_readable(self) except -1
    cdef bint _read_python(self) except -1
    cdef int _send_all(self, object data) except -1
    cdef int _send_pieces(self, list pieces) except -1
