"""GoClient: calling stock Go net/rpc servers (gob, jsonrpc, gob over HTTP CONNECT).

``fastrpc.Client(address, codec="gob")`` returns one of these. Calls are
pipelined on one connection like Go's rpc.Client: many threads may call at
once, a reader thread completes them. A Go error reply raises RemoteError
with Go's text (MethodNotFoundError for "rpc: can't find ..."). A broken
connection fails the calls on it and is dialled again by the next call.
"""
from __future__ import annotations

import concurrent.futures
import functools
import itertools
import socket
import threading
from typing import Any, Dict, Optional, Tuple

from fastrpc._core import frame as wire
from fastrpc._core.codec import DEFAULT_MAX_DEPTH
from fastrpc.net.dial import dial
from fastrpc.context import bound_timeout
from fastrpc.errors import (ConnectError, ConnectionClosedError, ConnectionLostError,
                            MethodNotFoundError, RemoteError, TimeoutError)
from fastrpc.go.gobcodec import GobClientCodec
from fastrpc.go.types import from_go, go_type
from fastrpc.go.jsonrpc import JSONClientCodec

__all__ = ["GoClient", "GoCallFuture"]

CODECS = {"gob": GobClientCodec, "jsonrpc": JSONClientCodec}
CONNECT_REQUEST = b"CONNECT /_goRPC_ HTTP/1.0\n\n"
CONNECTED_STATUS = "200 Connected to Go RPC"
READ_SIZE = 256 * 1024


def _remote_error(text: str) -> RemoteError:
    if text.startswith(("rpc: can't find service ", "rpc: can't find method ",
                        "rpc: service/method request ill-formed")):
        return MethodNotFoundError("MethodNotFound", text)
    return RemoteError("Error", text)


class GoCallFuture(concurrent.futures.Future):
    """The Future of a GoClient.go() call; cancel() drops its reply when it comes."""

    def __init__(self) -> None:
        super().__init__()
        self._forget = None

    def cancel(self) -> bool:
        if not super().cancel():
            return False
        if self._forget is not None:
            self._forget()
        return True


class _GoConn:
    """One connection: socket, codec, pending calls and the thread reading replies."""

    def __init__(self, client: "GoClient") -> None:
        self.client = client
        self.sock = dial(client.address, client.connect_timeout)
        try:
            if client.http:
                self._connect_http()
        except BaseException:
            self.sock.close()
            raise
        self.codec = CODECS[client.codec](client.max_message, client.max_depth)
        self.pending: Dict[int, Tuple[concurrent.futures.Future, Any]] = {}
        self.lock = threading.Lock()            # pending, codec output and the socket's send side
        self.error: Optional[BaseException] = None
        self.reader = threading.Thread(target=self._read_loop, name="fastrpc-go-reader", daemon=True)
        self.reader.start()

    def _connect_http(self) -> None:
        """Go's rpc.DialHTTP handshake: CONNECT /_goRPC_, expect "200 Connected to Go RPC"."""
        sock = self.sock
        sock.settimeout(self.client.connect_timeout)
        sock.sendall(CONNECT_REQUEST)
        head = b""
        try:
            while b"\n\n" not in head and b"\r\n\r\n" not in head:
                chunk = sock.recv(1)            # byte by byte: what follows belongs to gob
                if not chunk:
                    raise ConnectError(f"{self.client.address} closed the connection during HTTP CONNECT")
                head += chunk
                if len(head) > 8192:
                    raise ConnectError(f"{self.client.address}: HTTP CONNECT reply too long")
        except socket.timeout:
            raise ConnectError(f"{self.client.address}: no reply to HTTP CONNECT") from None
        sock.settimeout(None)
        status_line = head.split(b"\n", 1)[0].rstrip(b"\r").decode("latin-1")
        status = status_line.split(" ", 1)[1] if " " in status_line else ""
        if status != CONNECTED_STATUS:
            raise ConnectError(f"unexpected HTTP response from {self.client.address}: {status_line!r}")

    def submit(self, seq: int, method: str, args: tuple, arg_type: Any,
               future: concurrent.futures.Future, reply_type: Any) -> None:
        with self.lock:
            if self.error is not None:
                raise ConnectionClosedError(f"connection to {self.client.address} is closed: {self.error}")
            self.codec.request(seq, method, args, arg_type)
            self.pending[seq] = (future, reply_type)
            data = self.codec.take()
            try:
                self.sock.sendall(data)
            except OSError as exc:
                self.pending.pop(seq, None)
                self._fail_locked(ConnectionLostError(f"connection to {self.client.address} lost: {exc}"))
                raise self.error from None

    def forget(self, seq: int) -> None:
        with self.lock:
            self.pending.pop(seq, None)

    def _read_loop(self) -> None:
        sock, codec = self.sock, self.codec
        try:
            while True:
                data = sock.recv(READ_SIZE)
                if not data:
                    raise ConnectionLostError(f"{self.client.address} closed the connection")
                for seq, error, body in codec.feed(data):
                    with self.lock:
                        entry = self.pending.pop(seq, None)
                    if entry is not None:
                        self._complete(entry[0], entry[1], error, body)
        except BaseException as exc:
            if not isinstance(exc, ConnectionLostError):
                exc = ConnectionLostError(f"connection to {self.client.address} lost: {exc}")
            with self.lock:
                self._fail_locked(exc)

    @staticmethod
    def _complete(future, reply_type, error, body) -> None:
        if future.done():
            return
        try:
            if error is None:
                future.set_result(body if reply_type is None else from_go(body, reply_type))
            elif isinstance(error, BaseException):
                future.set_exception(error)
            else:
                future.set_exception(_remote_error(error))
        except concurrent.futures.InvalidStateError:
            pass                                # cancelled meanwhile
        except Exception as exc:                # the reply does not fit reply_type
            if not future.done():
                future.set_exception(exc)

    def _fail_locked(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        pending, self.pending = self.pending, {}
        for future, _ in pending.values():
            if not future.done():
                try:
                    future.set_exception(self.error)
                except concurrent.futures.InvalidStateError:
                    pass
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        with self.lock:
            self._fail_locked(ConnectionClosedError("client closed"))
        self.sock.close()
        if self.reader is not threading.current_thread():
            self.reader.join(5)


class GoClient:
    """A client for Go net/rpc servers: ``codec="gob"`` (Go's default) or
    ``"jsonrpc"``; ``http=True`` dials like Go's rpc.DialHTTP.

    ``call("Arith.Sum", Args(10, 20))`` sends one argument (a Go method
    takes exactly one with gob; jsonrpc sends every argument in params).
    Its Go type is inferred (gotypes) or given as ``arg_type=``; the reply
    decodes to plain values, or to ``reply_type=`` (e.g. a dataclass).
    """

    def __init__(self, address: str, *, codec: str = "gob", http: bool = False,
                 timeout: Optional[float] = None, connect_timeout: float = 10.0,
                 max_message: int = wire.DEFAULT_MAX_FRAME_SIZE, max_depth: int = DEFAULT_MAX_DEPTH) -> None:
        if codec not in CODECS:
            raise ValueError(f"unknown Go codec {codec!r}: 'gob' or 'jsonrpc'")
        if http and codec != "gob":
            raise ValueError("Go's HTTP transport (rpc.DialHTTP) carries gob only")
        if address.startswith("http://"):
            address, http = "tcp://" + address[len("http://"):], True
        self.address = address
        self.codec = codec
        self.http = http
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_message = max_message
        self.max_depth = max_depth
        self._seq = itertools.count()
        self._conn: Optional[_GoConn] = None
        self._lock = threading.Lock()
        self._closed = False
        self._connection()                      # fail now if the server is not there

    def _connection(self) -> _GoConn:
        with self._lock:
            if self._closed:
                raise ConnectionClosedError("client is closed")
            conn = self._conn
            if conn is None or conn.error is not None:
                conn = self._conn = _GoConn(self)
            return conn

    def go(self, method: str, *args: Any, reply_type: Any = None, arg_type: Any = None) -> GoCallFuture:
        """Start a call; return a Future for its reply (like Go's Client.Go)."""
        if not isinstance(method, str) or not method:
            raise TypeError(f"method must be a non-empty string, got {method!r}")
        gotype = go_type(arg_type) if arg_type is not None else None
        future = GoCallFuture()
        seq = next(self._seq)
        conn = self._connection()
        conn.submit(seq, method, args, gotype, future, reply_type)
        future._forget = functools.partial(conn.forget, seq)
        return future

    def call(self, method: str, *args: Any, timeout: Optional[float] = None,
             reply_type: Any = None, arg_type: Any = None) -> Any:
        """Call `method` and wait for its reply (like Go's Client.Call)."""
        timeout = bound_timeout(timeout, self.timeout)
        future = self.go(method, *args, reply_type=reply_type, arg_type=arg_type)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future._forget()                    # a late reply is dropped
            raise TimeoutError(f"{method} did not complete within {timeout}s") from None

    def close(self) -> None:
        """Close the connection; calls still waiting fail with ConnectionClosedError."""
        with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def __enter__(self) -> "GoClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<fastrpc.GoClient {self.codec}{' over HTTP' if self.http else ''} {self.address}>"


