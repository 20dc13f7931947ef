# cython: language_level=3
"""A blocking connection's writes and reads, compiled: every blocking call
writes its request and reads its reply through them (a sequential
Client.call once each per call).

ConnectionIO is the base class of fastrpc.client.connection.Connection. A
plain socket carrying fastrpc's own call table moves its bytes with send(2)
and recv(2), straight from the table's output and into its frame reader; a
TLS socket, or a call table of one of Go's codecs, goes through the
socket's and the table's Python methods. Failing the connection is
Connection.fail's business, in Python.
"""
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.exc cimport PyErr_CheckSignals, PyErr_SetFromErrno
from cpython.pythread cimport (PyThread_allocate_lock, PyThread_free_lock, PyThread_acquire_lock,
                               PyThread_release_lock, WAIT_LOCK, NOWAIT_LOCK)

from fastrpc._core.calltable cimport CallTable
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from fastrpc._core.sockets cimport (frpc_send_now, frpc_send_wait, frpc_sendv_wait, iovec, errno, EAGAIN,
                                    EWOULDBLOCK, EINTR)
from fastrpc._core.buffer import output_size

from fastrpc.errors import ConnectionLostError, RPCError

# Writes up to this size are tried first without waiting, holding the GIL
# (they nearly always fit the socket's buffer); larger ones, and what did
# not fit, are written with the GIL released, as socket.sendall does.
cdef Py_ssize_t SEND_WITH_GIL = 65536
# Buffers per sendmsg(2): well under any system's IOV_MAX (1024 on Linux).
cdef int IOV_BATCH = 512


cdef class ConnectionIO:
    """The socket, call table and write bookkeeping of a blocking connection,
    and the two methods that move its bytes (see the module docstring)."""

    def __cinit__(self):
        self.write_lock = PyThread_allocate_lock()
        if self.write_lock == NULL:
            raise MemoryError()

    def __dealloc__(self):
        if self.write_lock != NULL:
            PyThread_free_lock(self.write_lock)
            self.write_lock = NULL

    def start_io(self):
        """Choose how bytes move, once `sock`, `fd`, `tls` and `table` are set."""
        table = self.table
        self.direct = table if (not self.tls and type(table) is CallTable) else None

    @property
    def last_io(self):
        """Monotonic time bytes last arrived (heartbeats, the idle check)."""
        return self.table.last_io

    # writing ---------------------------------------------------------------------
    def flush(self):
        """Write every frame encoded so far."""
        self._flush()

    cdef int _flush(self) except -1:
        cdef CallTable direct = self.direct
        cdef unsigned long long first_seq, last_seq
        cdef WriteRecord *record
        if not PyThread_acquire_lock(self.write_lock, NOWAIT_LOCK):
            with nogil:
                PyThread_acquire_lock(self.write_lock, WAIT_LOCK)
        try:
            if direct is not None:
                first_seq = direct.written_seq + 1
                data = direct.take_out()
                last_seq = direct.written_seq
            else:
                table = self.table
                first_seq = <unsigned long long>table.written_seq + 1
                data = table.take_output()
                last_seq = table.written_seq
            if data is None or self.error is not None:
                return 0
            # Where in the stream these calls went: if the connection breaks,
            # those the server's side never acknowledged were never received
            # (fastrpc.client.connection.fail_undelivered).
            record = &self.recent[self.recent_next]
            record.offset = self.sent
            record.first_seq = first_seq
            record.last_seq = last_seq
            self.recent_next = (self.recent_next + 1) % WRITES_KEPT
            if self.recent_count < WRITES_KEPT:
                self.recent_count += 1
            try:
                if type(data) is list:            # large bytes payloads sent from their own memory
                    self.sent += output_size(data)
                    if direct is not None:
                        self._send_pieces(data)
                    else:
                        for piece in data:
                            self.sock.sendall(piece)
                    return 0
                self.sent += len(data)
                if direct is not None:
                    self._send_all(data)
                else:
                    self.sock.sendall(data)
            except OSError as exc:
                self.fail(ConnectionLostError(f"sending to {self.address} failed: {exc}"))
        finally:
            PyThread_release_lock(self.write_lock)
        return 0

    @property
    def writes(self):
        """(stream offset, first seq, last seq) of the most recent writes
        (WRITES_KEPT at most), oldest first."""
        cdef int i, at
        cdef WriteRecord *record
        kept = []
        for i in range(self.recent_count):
            at = (self.recent_next - self.recent_count + i + WRITES_KEPT) % WRITES_KEPT
            record = &self.recent[at]
            kept.append((record.offset, record.first_seq, record.last_seq))
        return kept

    cdef int _send_all(self, object data) except -1:
        cdef Py_buffer view
        cdef const char *p
        cdef Py_ssize_t n, r
        cdef int fd = self.fd
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            p = <const char *>view.buf
            n = view.len
            if n <= SEND_WITH_GIL:
                r = frpc_send_now(fd, p, n)
                if r == n:
                    return 0
                if r > 0:
                    p += r
                    n -= r
                elif errno != EAGAIN and errno != EWOULDBLOCK and errno != EINTR:
                    PyErr_SetFromErrno(OSError)
            while n > 0:
                with nogil:
                    r = frpc_send_wait(fd, p, n)
                if r > 0:
                    p += r
                    n -= r
                elif errno == EINTR:
                    if PyErr_CheckSignals() < 0:      # a handler raised (KeyboardInterrupt...)
                        return -1
                else:
                    PyErr_SetFromErrno(OSError)
        finally:
            PyBuffer_Release(&view)
        return 0

    cdef int _send_pieces(self, list pieces) except -1:
        """Write `pieces` (buffers) in order with as few sendmsg(2) calls as
        the kernel allows, the GIL released (they are large: attachments)."""
        cdef Py_ssize_t count = len(pieces), acquired = 0, first = 0, r
        cdef int fd = self.fd, batch
        cdef Py_buffer *views = <Py_buffer *>PyMem_Malloc(count * sizeof(Py_buffer))
        cdef iovec *iov = <iovec *>PyMem_Malloc(count * sizeof(iovec))
        try:
            if views == NULL or iov == NULL:
                raise MemoryError()
            for acquired in range(count):
                PyObject_GetBuffer(pieces[acquired], &views[acquired], PyBUF_SIMPLE)
                iov[acquired].iov_base = views[acquired].buf
                iov[acquired].iov_len = <size_t>views[acquired].len
            acquired = count
            while first < count:
                if iov[first].iov_len == 0:
                    first += 1
                    continue
                batch = <int>min(count - first, IOV_BATCH)
                with nogil:
                    r = frpc_sendv_wait(fd, iov + first, batch)
                if r < 0:
                    if errno == EINTR:
                        if PyErr_CheckSignals() < 0:      # a handler raised (KeyboardInterrupt...)
                            return -1
                        continue
                    PyErr_SetFromErrno(OSError)
                while r > 0:                  # skip what was written
                    if <size_t>r >= iov[first].iov_len:
                        r -= iov[first].iov_len
                        first += 1
                    else:
                        iov[first].iov_base = <char *>iov[first].iov_base + r
                        iov[first].iov_len -= r
                        r = 0
        finally:
            for r in range(acquired):
                PyBuffer_Release(&views[r])
            PyMem_Free(views)
            PyMem_Free(iov)
        return 0

    # reading ---------------------------------------------------------------------
    def on_readable(self):
        """Receive what arrived and complete the calls it answers (the reading thread)."""
        self._on_readable()

    cdef int _on_readable(self) except -1:
        cdef bint closed
        try:
            if self.direct is not None:
                closed = self.direct.receive(self.fd) == 0
            else:
                closed = self._read_python()
        except RPCError as exc:
            self.fail(ConnectionLostError(f"protocol error from {self.address}: {exc}"))
            return 0
        except OSError as exc:
            self.fail(ConnectionLostError(f"connection to {self.address} lost: {exc}"))
            return 0
        if closed:
            self.fail(ConnectionLostError(f"connection to {self.address} closed by the server"))
        return 0

    cdef bint _read_python(self) except -1:
        """Read through the socket's and the table's Python methods (TLS, Go
        codecs): True when the peer closed the stream."""
        table = self.table
        sock = self.sock
        while True:
            n = sock.recv_into(table.get_buffer())
            if n == 0:
                return True
            table.process(n)
            if not (self.tls and sock.pending()):
                return False
