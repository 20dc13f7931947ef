"""One blocking client connection: its socket, its call table, and its state.

Owns: writing what the call table encoded (one writer at a time, in the
order it was taken), reading when the engine says the socket is readable,
answering the server's PINGs, noticing its GOAWAY, and failing every call
at once when the connection breaks. The codec is the call table's business:
fastrpc's own (fastrpc._core.calltable) or one of Go's (fastrpc.go.codecs),
behind the same methods.
"""
from __future__ import annotations

import os
import socket
import ssl
import struct
from typing import TYPE_CHECKING, Any, Iterable, Optional, Tuple, Union

try:
    import fcntl
    import termios
except ImportError:                      # not POSIX: every call pending at a failure may have run
    pass

from fastrpc._core import frame as wire
from fastrpc._core.calltable import drain_callbacks, fd_readable, settle, table_is_ready
from fastrpc._core.transport import ConnectionIO
from fastrpc.client import engine as engines
from fastrpc.errors import ConnectionClosedError, ConnectionLostError, TimeoutError

if TYPE_CHECKING:
    from fastrpc._core.calltable import CallTable
    from fastrpc.go.calltable import GoCallTable

__all__ = ["TableCalls", "Connection", "acknowledged_bytes", "fail_undelivered", "stream_acknowledged"]


class TableCalls:
    """What a balancer sends through, the same on the blocking and the
    asyncio connection (each keeps its call table in `table` and writes
    what it encodes with its next flush)."""

    table: Union[CallTable, GoCallTable]

    @property
    def draining(self) -> bool:
        """The server sent GOAWAY: it takes no new calls on this connection."""
        return self.table.draining

    def submit(self, method: str, args: tuple[Any, ...], slot: Any, deadline_ms: Optional[int] = None,
               meta: Optional[bytes] = None) -> int:
        """Encode one call whose reply completes `slot` (None: a notification);
        return its seq. It is written with the next batch (see flush())."""
        return self.table.request(method, args, slot, deadline_ms, meta)

    def submit_batch(self, method: str, batch: Any, items: Any, limit: int, deadline_ms: Optional[int] = None,
                     meta: Optional[bytes] = None) -> int:
        """Encode up to `limit` more items of a map's `batch`, each with the
        call's deadline and metadata; return how many."""
        return self.table.request_batch(method, batch, items, limit, deadline_ms, meta)


class Connection(ConnectionIO, TableCalls):
    """A connected blocking socket and the calls in flight on it.

    `table` encodes calls and completes them from replies (its `owner` is
    this connection); the engine calls on_readable() when bytes arrive.
    Writing (flush()) and reading (on_readable()) are compiled, in the base
    class ConnectionIO (fastrpc._core.transport); `last_io`, the monotonic
    time bytes last arrived, is the table's.
    """

    def __init__(self, address: str, sock: socket.socket, table: Any, engine: Any) -> None:
        self.address = address
        self.sock = sock
        self.fd = sock.fileno()
        self.tls = isinstance(sock, ssl.SSLSocket)   # may hold decrypted bytes poll() cannot see
        self.table = table
        self.engine = engine
        self.generation = engines.generation
        self.acked_base = stream_acknowledged(sock) or 0   # a handshake's bytes, already acknowledged
        self.ping_sent: Optional[float] = None       # an unanswered heartbeat PING went out then
        self.start_io()
        table.owner = self
        table.engine = engine
        table.on_control = self._on_control
        engine.register(self)

    def fileno(self) -> int:
        """The socket's file descriptor (what the engine polls)."""
        return self.fd

    @property
    def usable(self) -> bool:
        """New calls may go here: not failed, no GOAWAY, made in this process."""
        table = self.table
        return not table.closed and not table.draining and self.generation == engines.generation

    def ready(self) -> bool:
        """usable, after checking an idle connection for a close or GOAWAY that
        arrived unread (fastrpc._core.calltable's IDLE_CHECK)."""
        table = self.table
        if table_is_ready(table):
            return True
        if table.closed or table.draining or self.generation != engines.generation:
            return False
        self.check_idle()
        return not table.closed and not table.draining

    # writing ------------------------------------------------------------------
    def on_output(self) -> None:
        """The table holds frames nobody flushed yet (called as the first is encoded)."""
        self.engine.output_waiting(self)

    def withdraw(self, seq: int) -> None:
        """Forget a call (timed out or cancelled) and ask the server to cancel it."""
        if self.table.forget(seq) is not None and self.error is None:
            self.table.control(wire.CANCEL, seq)
            self.flush()

    def withdraw_call(self, future: Any) -> None:
        """withdraw() for a CallFuture registered here (it was cancelled)."""
        self.withdraw(future.seq)

    def unwritten_for(self, future: Any) -> Optional["Connection"]:
        """This connection, if `future`'s request is encoded but not written yet."""
        return self if future.seq > self.table.written_seq else None

    def expire_call(self, future: Any) -> None:
        """A CallFuture registered here timed out: fail it, withdraw the call."""
        future.set_exception(TimeoutError(f"{future.method} did not complete in time"))
        self.withdraw(future.seq)

    # reading ------------------------------------------------------------------
    def check_idle(self) -> None:
        """Take in what a server sent to a connection nobody read for a while (a
        GOAWAY, the close of an idle connection) before it carries a new call."""
        self.read_arrived()

    def read_arrived(self) -> None:
        """Take in what already arrived, without blocking, unless another thread
        is reading (it sees it): a stream's consumer calls this between
        batches of items it had, so that replies to other calls on the
        connection are not held back behind the stream."""
        if self.error is None and ((self.tls and self.sock.pending())
                                   or fd_readable(self.fd)):
            self.engine.read_now(self)

    def _on_control(self, kind: int, seq: int, payload: bytes) -> None:
        if kind == wire.GOAWAY:
            self.table.draining = True
        elif kind == wire.PING:
            self.table.control(wire.PONG, seq, payload)
            self.flush()

    # failure --------------------------------------------------------------------
    def fail(self, exc: BaseException) -> None:
        """The connection is gone: fail every pending call at once."""
        first = self.error is None
        if first:
            self.error = exc
            self.table.closed = True
            self.engine.unregister(self)
            if isinstance(exc, ConnectionLostError):
                fail_undelivered(self.table, self.sock, self.sent, self.writes, 0, self.acked_base,
                                 self.address)
            try:
                # shutdown() first: it wakes a thread blocked on this socket,
                # which close() alone does not.
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                self.sock.close()
            except OSError:
                pass
        # The first error is the reason; a later one (a reader woken by the
        # shutdown above) must not replace it.
        self.table.clear_output()
        self.table.fail_all(self.error if self.error is not None else exc)
        drain_callbacks()

    def close(self) -> None:
        """Close the connection; calls still pending fail with ConnectionClosedError."""
        self.fail(ConnectionClosedError(f"client closed the connection to {self.address}"))

    def abandon(self) -> None:
        """In a forked child: this socket is the parent's. Fail the calls copied
        with the process and drop the descriptor without touching the connection."""
        if self.error is None:
            self.error = ConnectionLostError(
                f"the connection to {self.address} was made before os.fork(); it stays with the parent")
            self.table.closed = True
            try:
                os.close(self.sock.detach())
            except OSError:
                pass
        self.table.fail_all(self.error)


def acknowledged_bytes(sock: Any, sent: int, unsent: int, base: int) -> Optional[int]:
    """How many of the `sent` bytes written to `sock` since it started
    carrying calls its peer acknowledged (`unsent`: bytes still queued in
    user space; `base`: stream_acknowledged(sock) when it started); None
    when the system cannot tell.

    TCP: the kernel's count of bytes the peer acknowledged (TCP_INFO's
    bytes_acked, Linux 4.2 and later), which a reset does not erase. Other
    sockets: what left our send queue (TIOCOUTQ).
    """
    try:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            acked = stream_acknowledged(sock)
            return None if acked is None else acked - base
        queued: int = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
        return sent - queued - unsent
    except (OSError, AttributeError, NameError, struct.error):
        return None


def stream_acknowledged(sock: Any) -> Optional[int]:
    """Bytes of a TCP stream its peer acknowledged so far (None: not TCP, or unknown)."""
    try:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return None
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 192)
    except (OSError, AttributeError):
        return None
    if len(info) < _TCPI_BYTES_ACKED + 8:
        return None
    # The count includes the SYN, which carried no data.
    acked: int = struct.unpack_from("Q", info, _TCPI_BYTES_ACKED)[0]
    return max(0, acked - 1)


# Offset of tcpi_bytes_acked in Linux's struct tcp_info.
_TCPI_BYTES_ACKED = 120


def fail_undelivered(table: Any, sock: Any, sent: int, writes: Iterable[Tuple[int, int, int]],
                     unsent: int, base: int, address: str) -> None:
    """The peer went away: fail the calls it never received as not sent.

    Calls encoded but not written yet were not sent. A server that died before our last writes reached it acknowledges none
    of their bytes (its kernel answers them with a reset): the calls whose
    bytes lie past what it acknowledged never ran, and a balancer may send
    them elsewhere, idempotent or not (the rule gRPC's transparent retry
    follows). `writes` holds (stream offset, first seq, last seq) of recent
    writes, `sent` the bytes written in all, `base` what the stream had
    acknowledged before (a handshake, HTTP CONNECT). Where the system cannot
    tell (not Linux), every pending call may have run.
    """
    error = ConnectionClosedError(f"{address} closed the connection before it received the call (not sent)")
    written = table.written_seq
    for seq in [seq for seq in table.pending if seq > written]:   # encoded, never written
        slot = table.forget(seq)
        if slot is not None:
            settle(slot, seq, error, True)
    acknowledged = acknowledged_bytes(sock, sent, unsent, base)
    if acknowledged is None or acknowledged >= sent:
        return
    for offset, first, last in list(writes):
        if offset >= acknowledged:
            for seq in range(first, last + 1):
                slot = table.forget(seq)
                if slot is not None:
                    settle(slot, seq, error, True)
