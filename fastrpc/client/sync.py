"""Client: the blocking, thread-safe, pipelined client of one server.

Many threads share one connection; calls are matched to replies by sequence
id. Waiting is the engine's business (fastrpc.client.engine): a thread that
waits for its reply reads for everyone, so a reply normally reaches its
caller without a thread hand-off.
"""
from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Tuple

from fastrpc._core.calltable import Batch, Caller, CallFuture, CallTable, call_args, client_call, client_go
from fastrpc.client.proxy import Proxying
from fastrpc.client import engine as engines
from fastrpc.client.batching import give_up, map_steps
from fastrpc.client.connection import Connection
from fastrpc.client.stream import ClientRoute, Stream
from fastrpc._core.codec import packb
from fastrpc.context import bound_timeout
from fastrpc.interceptors import (ClientCall, base_metadata, chain_pool, check_interceptors, client_chain,
                                  map_through)
from fastrpc.observability import registry as observed
from fastrpc.errors import ConnectError, ConnectionClosedError, TimeoutError, UnsupportedError
from fastrpc.net.settings import ClientSettings

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from fastrpc.net.options import ClientOptions

__all__ = ["Client", "CallFuture"]

class Client(ClientSettings, Proxying):
    """A blocking RPC client for one server, safe to share between threads.

    ``call("Service.Method", *args)`` returns the result or raises
    RemoteError / TimeoutError / ConnectionError; ``go(...)`` returns a
    future (a concurrent.futures.Future); ``map(...)`` pipelines many calls
    of one method; ``notify(...)`` sends without waiting for a reply. Calls
    from all threads are pipelined on one connection, in any mix. A lost
    connection fails every pending call at once; the next call dials again.

    ``Client(address, codec="gob")`` or ``codec="jsonrpc"`` (and
    ``http=True`` for Go's rpc.DialHTTP) calls stock Go net/rpc servers:
    it returns a fastrpc.GoClient, a Client with Go's codec and typing.
    """

    def __new__(cls, address: str, *, codec: str = "fastrpc", http: bool = False,
                **settings: Unpack[ClientOptions]) -> "Client":
        if cls is Client and (codec != "fastrpc" or http):
            from fastrpc.go.client import GoClient
            return GoClient.__new__(GoClient, address, codec=codec, **settings)
        return super().__new__(cls)

    def __init__(self, address: str, *, codec: str = "fastrpc", http: bool = False,
                 **settings: Unpack[ClientOptions]) -> None:
        """Connect to `address`. Keyword settings (see ClientSettings):
        timeout, connect_timeout, max_frame_size, max_depth, max_len,
        max_bytes, bytes_views, send_deadline, ssl (an ssl.SSLContext),
        server_hostname, auth_secret, metadata, heartbeat,
        heartbeat_timeout, reconnect_backoff."""
        if codec == "fastrpc" and type(self) is not Client and not http:
            codec = "gob"                       # GoClient(address): Go's default codec
        super().__init__(address, codec=codec, http=http, **settings)
        self._lock = threading.Lock()          # dialing, closing
        self._closed = False
        self._retired: List[Connection] = []   # GOAWAY: their calls finish, then they close
        self._caller = Caller(self.per_call, self)   # the compiled call path
        self.interceptors = check_interceptors(self.interceptors, allow_async=False)
        #: The interceptors around the call (None: none, the fast path).
        self._chain = client_chain(self.interceptors, self._send_intercepted) if self.interceptors else None
        self._conn: Connection = self._dial()   # dial now, like net/rpc's Dial
        self._use(self._conn)
        observed.clients.add(self)              # reported by /metrics and /status while open
        if self.heartbeat is not None:
            self._beat()

    # connections -----------------------------------------------------------------
    def _dial(self) -> Connection:
        sock = self.open_socket()
        return Connection(self.address, sock, self.new_call_table(), engines.engine())

    def connection(self) -> Connection:
        """The connection for a new call: the current one while it is usable,
        else a new one, dialled now (ConnectError when that fails)."""
        conn = self._conn
        if conn.ready():
            return conn
        with self._lock:
            if self._closed:
                raise ConnectionClosedError("client is closed")
            conn = self._conn
            if conn.ready():
                return conn
            self.check_backoff()
            try:
                new = self._dial()
            except ConnectError as exc:
                self.dial_failed(exc)
                raise
            self.dial_succeeded()
            if conn.error is None and conn.generation == engines.generation:
                # GOAWAY: its calls finish, then it closes.
                if conn.table.pending:
                    self._retired.append(conn)
                    conn.engine.schedule(0.05, self._close_retired)
                else:
                    conn.close()
            self._conn = new
            self._use(new)
            if self.heartbeat is not None:
                self._beat()
            return new

    def _use(self, conn: Connection) -> None:
        """New calls go on `conn` (the compiled call path reads fastrpc's table)."""
        if isinstance(conn.table, CallTable):        # fastrpc's codec (Go's have their own path)
            self._caller.table = conn.table

    def _close_retired(self) -> None:
        still = []
        for conn in self._retired:
            if conn.table.pending and conn.error is None:
                still.append(conn)
            else:
                conn.close()              # its calls are done: tell the server we left
        self._retired = still
        if still:
            still[0].engine.schedule(0.05, self._close_retired)

    @property
    def draining(self) -> bool:
        """The server sent GOAWAY on the current connection: it is going away."""
        return self._conn.draining

    @property
    def connected(self) -> bool:
        """The current connection is up (the next call dials again when it is not)."""
        return self._conn.error is None

    @property
    def server_load(self) -> Optional[int]:
        """Calls in flight at the server, as its last reply or PONG reported (None: unknown)."""
        load: Optional[int] = self._conn.table.last_load
        return load

    # calls ---------------------------------------------------------------------------
    # call() and go() are compiled (fastrpc._core.calltable): no Python frame per call.
    call = client_call
    go = client_go

    def _call_intercepted(self, method: str, args: Tuple[Any, ...], kwargs: Dict[str, Any],
                          timeout: Optional[float]) -> Any:
        """call() through the interceptors."""
        assert self._chain is not None          # the compiled call() comes here only with interceptors
        return self._chain(ClientCall(method, args, kwargs, base_metadata(self.metadata), timeout, self.address))

    def _go_intercepted(self, method: str, args: Tuple[Any, ...], kwargs: Dict[str, Any],
                        timeout: Optional[float]) -> CallFuture:
        """go() through the interceptors: call() in the interceptors' pool."""
        return chain_pool().submit(self.call, method, *args, timeout=timeout, **kwargs)  # type: ignore[return-value]

    def _send_intercepted(self, call: ClientCall) -> Any:
        """The end of the interceptor chain: the call as the interceptors left it."""
        payload = call.args if not call.kwargs else call_args(call.args, call.kwargs)
        return self._caller.call(call.method, payload, call.timeout, packb(call.metadata) if call.metadata else None)

    def notify(self, method: str, *args: Any, **kwargs: Any) -> None:
        """Send a one-way call: no reply, no error report."""
        conn = self.connection()
        payload = args if not kwargs else call_args(args, kwargs)
        conn.submit(method, payload, None, None, self.call_metadata())
        conn.flush()

    def stream(self, method: str, *args: Any, timeout: Optional[float] = None,
               send: Optional[Iterable[Any]] = None, window: Optional[Tuple[int, int]] = None,
               **kwargs: Any) -> Stream:
        """Open a stream on a streaming method (a generator, or a handler taking
        an iterator of the client's items); return a Stream at once.

        ``for item in client.stream("Svc.Items", n)`` iterates the server's
        items; `send` (an iterable) is sent to the handler's iterator by a
        thread, or send items yourself with ``stream.send()`` and
        ``stream.done_writing()``. `timeout` bounds the whole stream (the
        client's default timeout does not: streams are long). `window`:
        the (items, bytes) this client buffers at most before the server
        waits for it to take some (default 1024 items, 4 MiB).
        """
        if self.codec != "fastrpc":
            raise UnsupportedError(f"streams need the fastrpc protocol; {self.codec} has none")
        intercepted = None if self._chain is None else (
            self.interceptors, ClientCall(method, args, kwargs, base_metadata(self.metadata), timeout, self.address))
        return Stream(ClientRoute(self), method, args if not kwargs else call_args(args, kwargs),
                      timeout=timeout, window=window or (None, None), settings=self, send=send,
                      intercepted=intercepted)

    def map(self, method: str, args_iterable: Iterable[Any], *, timeout: Optional[float] = None,
            return_exceptions: bool = False, window: int = 1024) -> List[Any]:
        """Call `method` once per item of `args_iterable`, pipelined; return the results in order.

        An item that is a tuple is the argument list, a dict the keyword
        arguments, a ``fastrpc.Arguments(*args, **kwargs)`` both, anything
        else the single argument. At most `window` calls are in flight. Every call
        carries the timeout and metadata a single call would. Every call
        completes before this returns; the first error is then raised,
        unless `return_exceptions` puts exceptions in the result list.
        """
        items = args_iterable if isinstance(args_iterable, (list, tuple)) else list(args_iterable)
        n = len(items)
        if n == 0:
            return []
        if self._chain is not None:
            return map_through(self.go, method, items, return_exceptions, timeout=timeout)
        timeout = bound_timeout(timeout, self.timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        conn = self.connection()
        batch = Batch(n, return_exceptions)
        batch.stats = self._caller.stats.method(method)
        for _ in map_steps(conn, batch, method, items, window,
                           None if timeout is None else self.deadline_ms(timeout), self.call_metadata()):
            conn.engine.wait(batch, deadline)
            if deadline is not None and not batch.done and time.monotonic() >= deadline:
                give_up(conn, batch, method)
        if batch.first_error is not None and not return_exceptions:
            raise batch.first_error
        return batch.results

    def ping(self, timeout: Optional[float] = 5.0) -> float:
        """Round-trip a PING frame; return the round-trip time in seconds."""
        conn = self.connection()
        fut = CallFuture("PING")
        fut.engine = conn.engine
        start = time.perf_counter()
        seq = conn.table.ping(fut)
        conn.flush()
        try:
            fut.result(timeout)
        except TimeoutError:
            conn.table.forget(seq)
            raise TimeoutError(f"ping to {self.address} timed out after {timeout}s") from None
        return time.perf_counter() - start

    # heartbeats ------------------------------------------------------------------
    def _beat(self) -> None:
        """PING the connection when it has been silent for `heartbeat`; fail it
        when nothing arrives within `heartbeat_timeout`. Runs on the engine's timers."""
        conn = self._conn
        if self._closed or conn.error is not None:
            if not self._closed and conn.error is not None:
                pass                      # the next call dials; that connection beats anew
            return
        now = time.monotonic()
        heartbeat, heartbeat_timeout = self.heartbeat, self.heartbeat_timeout
        assert heartbeat is not None and heartbeat_timeout is not None     # only scheduled with heartbeats on
        interval = min(1.0, heartbeat / 4)
        if conn.ping_sent is not None:
            if conn.last_io >= conn.ping_sent:
                conn.ping_sent = None     # anything received proves the peer alive
            elif now - conn.ping_sent >= heartbeat_timeout:
                conn.fail(self.heartbeat_lost())
                return
        if conn.ping_sent is None and now - conn.last_io >= heartbeat:
            try:
                conn.table.ping(CallFuture("PING"))   # the PONG completes a future nobody reads
                conn.flush()
            except ConnectionClosedError:
                return
            conn.ping_sent = now
        conn.engine.schedule(interval, self._beat_if_current(conn))

    def _beat_if_current(self, conn: Connection) -> Callable[[], None]:
        def beat() -> None:
            if self._conn is conn:
                self._beat()
        return beat

    # lifecycle ---------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection; pending calls fail with ConnectionClosedError."""
        with self._lock:
            self._closed = True
            conns, self._retired = [self._conn] + self._retired, []
        for conn in conns:
            conn.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """close() was called."""
        return self._closed

    def stats(self) -> Dict[str, Any]:
        """This client's numbers: its target, whether it is connected, and per
        method the calls that ended, errors (by type), seconds (summed) and
        the latency histogram (fastrpc.LATENCY_BUCKETS, then the rest)."""
        return {"target": self.address, "connected": self.connected, "methods": self._caller.stats.snapshot()}

    def __repr__(self) -> str:
        return f"<fastrpc.Client {self.address}>"
