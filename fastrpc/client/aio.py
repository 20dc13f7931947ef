"""AsyncClient: the asyncio client.

Calls are encoded into the connection's buffer and written once per event
loop pass, or as soon as FLUSH_FRAMES are waiting (with many calls in flight,
half of them, up to FLUSH_FRAMES_MAX), so that client and server work at the
same time instead of taking turns.
"""
from __future__ import annotations

import asyncio
import collections
import functools
import io
import ssl
import time
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, Iterable, List, Optional, Tuple

from fastrpc._core import frame as wire
from fastrpc._core.buffer import output_size
from fastrpc._core.calltable import AsyncCaller, Batch, CallTable, async_client_call, call_args
from fastrpc.client.proxy import Proxying
from fastrpc.client import engine as engines
from fastrpc.client.batching import give_up, map_steps
from fastrpc.client.connection import TableCalls, fail_undelivered, stream_acknowledged
from fastrpc.client.stream import AsyncClientRoute, AsyncStream
from fastrpc.net.address import parse_address
from fastrpc.net.auth import DIGEST, NONCE, REJECTED, ClientHandshake
from fastrpc.net.dial import MAX_HTTP_REPLY, connect_request, connected_reply, tls_hostname
from fastrpc.net.settings import ClientSettings
from fastrpc._core.codec import packb
from fastrpc.context import bound_timeout
from fastrpc.interceptors import ClientCall, amap_through, async_client_chain, base_metadata, check_interceptors
from fastrpc.observability import registry as observed
from fastrpc.errors import (AuthenticationError, ConnectError, ConnectionClosedError, ConnectionLostError,
                            ConnectTimeoutError, RPCError, TimeoutError, UnsupportedError)
from fastrpc.net.loop import coroutine_method, feed_buffered

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from fastrpc.net.options import ClientOptions

__all__ = ["AsyncClient"]

FLUSH_FRAMES = 32
# ... raised to half the calls in flight, up to this (CallTable._flush_limit).
FLUSH_FRAMES_MAX = 64
FLUSH_BYTES = 64 * 1024


class _Protocol(asyncio.BufferedProtocol):
    """Feeds received bytes to the CallTable; fails everything on loss."""

    def __init__(self, owner: "AsyncConnection") -> None:
        self.owner = owner

    def connection_made(self, transport: Any) -> None:
        self.owner.transport = transport
        sock = transport.get_extra_info("socket")
        self.owner.acked_base = (stream_acknowledged(sock) if sock is not None else None) or 0

    def get_buffer(self, sizehint: int) -> Any:
        return self.owner.table.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        owner = self.owner
        owner.last_io = owner.loop.time()
        try:
            owner.table.process(nbytes)
        except RPCError as exc:
            owner.fail(ConnectionLostError(f"protocol error from {owner.address}: {exc}"))
            owner.transport.abort()
            return
        if owner.draining and not owner.table.pending:
            owner.leave()

    def eof_received(self) -> Optional[bool]:
        self.owner.peer_closed()
        return False

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        reason = f": {exc}" if exc else " by the server"
        self.owner.fail(ConnectionLostError(f"connection to {self.owner.address} closed{reason}"))

    def pause_writing(self) -> None:
        self.owner.paused = self.owner.loop.create_future()

    def resume_writing(self) -> None:
        waiter, self.owner.paused = self.owner.paused, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _Preamble(asyncio.Protocol):
    """What runs on a new transport before the calls: the shared-secret
    handshake (fastrpc.net.auth) and Go's HTTP CONNECT, as configured."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.buf = b""
        self.waiter: Optional[asyncio.Future[Any]] = None
        self.lost: Optional[BaseException] = None
        self.stage = "the connection's preamble"

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.lost = (AuthenticationError if self.stage.startswith("the authentication") else ConnectError)(
            f"{self.address} closed the connection during {self.stage}")
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def _more(self) -> None:
        if self.lost is not None:
            raise self.lost
        self.waiter = asyncio.get_running_loop().create_future()
        await self.waiter

    async def read(self, n: int) -> bytes:
        while len(self.buf) < n:
            await self._more()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    async def run(self, transport: Any, secret: Optional[bytes], http: bool, codec: str) -> bytes:
        """CONNECT and/or authenticate; return bytes received past them."""
        if http:
            self.stage = "HTTP CONNECT"
            transport.write(connect_request(codec))
            while b"\n\n" not in self.buf and b"\r\n\r\n" not in self.buf:
                if len(self.buf) > MAX_HTTP_REPLY:
                    raise ConnectError(f"{self.address}: HTTP CONNECT reply too long")
                await self._more()
            ends = [i + len(m) for m in (b"\n\n", b"\r\n\r\n") for i in (self.buf.find(m),) if i >= 0]
            end = min(ends)
            connected_reply(self.buf[:end], self.address, codec)
            self.buf = self.buf[end:]
        if secret is not None:
            self.stage = "the authentication handshake (does it expect auth_secret?)"
            hs = ClientHandshake(secret, self.address)
            transport.write(hs.hello())
            await self._verdict(hs)
            transport.write(hs.answer(await self.read(NONCE + DIGEST)))
            await self._verdict(hs)
        return self.buf

    async def _verdict(self, hs: ClientHandshake) -> None:
        first = await self.read(1)
        reason = b""
        if first == REJECTED:
            size = await self.read(2)
            reason = size + await self.read(int.from_bytes(size, "big"))
        hs.verdict(first, io.BytesIO(reason).read)


class AsyncConnection(TableCalls):
    """One connection of an AsyncClient: its transport and its call table."""

    def __init__(self, client: "AsyncClient", loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self.address = client.address
        self.loop = loop
        self.table = client.new_call_table(owner=self, flush_frames=FLUSH_FRAMES, flush_bytes=FLUSH_BYTES,
                                           flush_frames_max=FLUSH_FRAMES_MAX)
        self.table.on_control = self._on_control
        # Set once open() connects; None only before.
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.error: Optional[BaseException] = None
        self.flush_handle: Optional[asyncio.Handle] = None
        self.sent = 0                           # bytes written so far
        self.acked_base = 0                     # bytes the handshakes had acknowledged
        self.writes: Deque[Tuple[int, int, int]] = collections.deque(maxlen=256)   # (offset, first seq, last seq)
        self.paused: Optional[asyncio.Future[Any]] = None
        self.last_io = loop.time()              # last bytes received (heartbeats)
        self.generation = engines.generation    # made in this process (not before a fork)
        self.heartbeats: Optional[asyncio.Task[Any]] = None

    async def open(self, timeout: Optional[float]) -> None:
        client = self.client
        addr = parse_address(self.address)
        secret = client.auth_secret
        preamble = secret is not None or client.http
        # With auth or HTTP CONNECT, a plain Protocol runs them first, then
        # hands the transport to the buffered _Protocol.
        factory: Callable[[], Any] = ((lambda: _Preamble(self.address)) if preamble
                                      else (lambda: _Protocol(self)))  # noqa: E731
        tls: Dict[str, Any] = {}
        if client.ssl is not None:
            tls = {"ssl": client.ssl, "server_hostname": tls_hostname(self.address, client.server_hostname) or ""}
        try:
            if addr.scheme == "unix":
                coro = self.loop.create_unix_connection(factory, addr.path, **tls)
            else:
                coro = self.loop.create_connection(factory, addr.host, addr.port, **tls)
            transport, protocol = await asyncio.wait_for(coro, timeout)
        except asyncio.TimeoutError:
            raise ConnectTimeoutError(f"connecting to {self.address} timed out after {timeout}s") from None
        except ssl.SSLError as exc:
            raise ConnectError(f"TLS handshake with {self.address} failed: {exc}") from exc
        except OSError as exc:
            raise ConnectError(f"cannot connect to {self.address}: {exc.strerror or exc}") from exc
        if preamble:
            try:
                rest = await asyncio.wait_for(protocol.run(transport, secret, client.http, client.codec), timeout)
            except asyncio.TimeoutError:
                transport.abort()
                raise (AuthenticationError if secret is not None else ConnectError)(
                    f"{self.address} did not complete {protocol.stage} within {timeout}s") from None
            except BaseException:
                transport.abort()
                raise
            main = _Protocol(self)
            transport.set_protocol(main)
            main.connection_made(transport)
            feed_buffered(main, transport, rest)    # bytes the server sent right after accepting us

    def on_output(self) -> None:
        """The first frame since the last write was encoded: write once this loop pass ends."""
        if self.flush_handle is None:
            self.flush_handle = self.loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write the frames encoded so far."""
        if self.flush_handle is not None:
            self.flush_handle.cancel()
            self.flush_handle = None
        table = self.table
        first_seq = table.written_seq + 1
        data = table.take_output()
        if data is not None and self.error is None:
            self.writes.append((self.sent, first_seq, table.written_seq))
            if type(data) is list:              # large bytes payloads sent from their own memory
                self.sent += output_size(data)
                self.transport.writelines(data)
            else:
                self.sent += len(data)
                self.transport.write(data)

    def peer_closed(self) -> None:
        """The server closed its side: calls it never received fail as not sent
        (see fastrpc.client.connection.fail_undelivered)."""
        transport = self.transport
        sock = None if transport is None else transport.get_extra_info("socket")
        if sock is not None:
            fail_undelivered(self.table, sock, self.sent, self.writes,
                             transport.get_write_buffer_size(), self.acked_base, self.address)

    def withdraw(self, seq: int) -> None:
        """Forget a call (timed out or cancelled) and ask the server to cancel it."""
        if self.table.forget(seq) is not None and self.error is None:
            self.table.control(wire.CANCEL, seq)

    def leave(self) -> None:
        """After GOAWAY, once no call is pending here: close, so the server can finish."""
        self.flush()
        self.fail(ConnectionClosedError(f"{self.address} sent GOAWAY; connection closed"))

    def _on_control(self, kind: int, seq: int, payload: bytes) -> None:
        if kind == wire.GOAWAY:
            self.table.draining = True
        elif kind == wire.PING:
            self.table.control(wire.PONG, seq, payload)

    async def beat(self, interval: float, timeout: float) -> None:
        """PING when silent for `interval`; fail the connection if nothing arrives within `timeout`."""
        loop = self.loop
        while self.error is None:
            idle = loop.time() - self.last_io
            if idle < interval:
                await asyncio.sleep(interval - idle)
                continue
            pong = loop.create_future()
            self.table.ping(pong)
            sent = loop.time()
            try:
                await asyncio.wait_for(pong, timeout)
            except asyncio.TimeoutError:
                if self.last_io < sent and self.error is None:
                    self.fail(self.client.heartbeat_lost())
                    return
            except Exception:
                return                          # the connection failed meanwhile

    def fail(self, exc: BaseException) -> None:
        if self.heartbeats is not None and self.heartbeats is not asyncio.current_task():
            self.heartbeats.cancel()
        if self.error is None:
            self.error = exc
            if self.transport is not None:
                self.transport.close()
        self.table.clear_output()
        self.table.fail_all(exc)
        if self.paused is not None and not self.paused.done():
            self.paused.set_result(None)

    @property
    def usable(self) -> bool:
        """New calls may go here: not failed, no GOAWAY, made in this process."""
        return self.error is None and not self.table.draining and self.generation == engines.generation

    def ready(self) -> bool:
        """usable (the event loop has already taken in what the server sent)."""
        return self.usable


class AsyncClient(ClientSettings, Proxying):
    """An asyncio RPC client for one server.

    ``await call("Service.Method", *args)``; ``go(...)`` returns an
    asyncio.Future without a coroutine per call; ``await map(...)``
    pipelines many calls of one method; ``notify(...)`` sends one-way.
    Use as ``async with AsyncClient(addr) as c:`` or ``await c.connect()``.
    """

    def __new__(cls, address: str, *, codec: str = "fastrpc", http: bool = False,
                **settings: Unpack[ClientOptions]) -> "AsyncClient":
        if cls is AsyncClient and (codec != "fastrpc" or http):
            from fastrpc.go.client import AsyncGoClient
            return super().__new__(AsyncGoClient)
        return super().__new__(cls)

    def __init__(self, address: str, *, codec: str = "fastrpc", http: bool = False,
                 **settings: Unpack[ClientOptions]) -> None:
        """Set up a client for `address` (it connects on ``connect()``, ``async
        with`` or the first call). Keyword settings (see ClientSettings):
        timeout, connect_timeout, max_frame_size, max_depth, max_len,
        max_bytes, bytes_views, send_deadline, ssl, server_hostname,
        auth_secret, metadata, heartbeat, heartbeat_timeout,
        reconnect_backoff; ``codec="gob"`` or ``"jsonrpc"`` (and
        ``http=True``) call Go net/rpc servers (an AsyncGoClient)."""
        super().__init__(address, codec=codec, http=http, **settings)
        self._conn: Optional[AsyncConnection] = None
        self._connecting: Optional[asyncio.Future[Any]] = None
        self._closed = False
        self._caller = AsyncCaller(self.per_call, self._expire_later, self)   # the compiled call path
        self.interceptors = check_interceptors(self.interceptors, allow_async=True)
        #: The interceptors around the call (None: none, the fast path).
        self._chain = async_client_chain(self.interceptors, self._send_intercepted) if self.interceptors else None
        observed.clients.add(self)

    async def connect(self) -> "AsyncClient":
        """Open the connection (done by ``async with`` and, lazily, by the first call)."""
        await self.connection()
        return self

    async def connection(self) -> AsyncConnection:
        """The connection for a new call: the current one while it is usable,
        else a new one (ConnectError when dialing fails)."""
        conn = self._conn
        if conn is not None and conn.usable:
            return conn
        if self._closed:
            raise ConnectionClosedError("client is closed")
        if self._connecting is not None:
            await asyncio.shield(self._connecting)
            return await self.connection()
        loop = asyncio.get_running_loop()
        self._connecting = loop.create_future()
        try:
            self.check_backoff()
            conn = AsyncConnection(self, loop)
            try:
                await conn.open(self.connect_timeout)
            except ConnectError as exc:
                self.dial_failed(exc)
                raise
            self.dial_succeeded()
            if self.heartbeat is not None and self.heartbeat_timeout is not None:
                conn.heartbeats = loop.create_task(conn.beat(self.heartbeat, self.heartbeat_timeout))
            self._conn = conn
            if isinstance(conn.table, CallTable):   # the compiled call path reads fastrpc's table
                self._caller.table = conn.table
                self._caller.loop = loop
            self._connecting.set_result(None)
            return conn
        except BaseException as exc:
            self._connecting.set_exception(exc)
            self._connecting.exception()  # mark retrieved
            raise
        finally:
            self._connecting = None

    @property
    def connected(self) -> bool:
        """A connection is open and not failed (the next call dials again when it is not)."""
        return self._conn is not None and self._conn.error is None

    @property
    def draining(self) -> bool:
        """The server sent GOAWAY on the current connection: it is going away."""
        return self._conn is not None and self._conn.draining

    @property
    def server_load(self) -> Optional[int]:
        """Calls in flight at the server, as its last reply or PONG reported (None: unknown)."""
        return None if self._conn is None else self._conn.table.last_load

    def _ready_conn(self) -> AsyncConnection:
        conn = self._conn
        if conn is None or not conn.usable:
            raise ConnectionClosedError(
                f"not connected to {self.address}" if conn is None or conn.error is None
                else f"connection to {self.address} is closed: {conn.error}")
        return conn

    def go(self, method: str, *args: Any, timeout: Optional[float] = None, **kwargs: Any) -> asyncio.Future[Any]:
        """Start a call on a connected client; return an asyncio.Future of its result
        (with interceptors, a task running call())."""
        if self._chain is not None:
            self._ready_conn()                       # raises why there is no connection
            return asyncio.get_running_loop().create_task(self.call(method, *args, timeout=timeout, **kwargs))
        started = self._caller.start(method, (args if not kwargs else call_args(args, kwargs)), timeout)
        if started is None:
            self._ready_conn()                       # raises why there is no connection
            raise ConnectionClosedError(f"not connected to {self.address}")
        future: asyncio.Future[Any] = started[0]
        stats = self._caller.stats.method(method)
        if stats is not None:
            future.add_done_callback(functools.partial(_observe, stats, time.monotonic()))
        return future

    # call() is compiled (fastrpc._core.calltable): no Python coroutine per call.
    call = coroutine_method(async_client_call)

    async def _call_intercepted(self, method: str, args: Tuple[Any, ...], kwargs: Dict[str, Any],
                                timeout: Optional[float]) -> Any:
        """call() through the interceptors."""
        assert self._chain is not None          # the compiled call() comes here only with interceptors
        return await self._chain(ClientCall(method, args, kwargs, base_metadata(self.metadata), timeout,
                                            self.address))

    async def _send_intercepted(self, call: ClientCall) -> Any:
        """The end of the interceptor chain: the call as the interceptors left it."""
        payload = call.args if not call.kwargs else call_args(call.args, call.kwargs)
        return await self._caller.call(call.method, payload, call.timeout,
                                       packb(call.metadata) if call.metadata else None)

    def _expire_later(self, table: Any, seq: int, fut: asyncio.Future[Any], method: str, timeout: float) -> None:
        """A call with a timeout was sent on `table`: fail it with TimeoutError then."""
        conn = table.owner
        handle = conn.loop.call_later(timeout, self._expire, conn, seq, fut, method, timeout)
        fut.add_done_callback(lambda _f: handle.cancel())

    def _expire(self, conn: AsyncConnection, seq: int, fut: asyncio.Future[Any], method: str, timeout: float) -> None:
        if not fut.done():
            conn.withdraw(seq)
            fut.set_exception(TimeoutError(f"{method} did not complete within {timeout}s"))

    def stream(self, method: str, *args: Any, timeout: Optional[float] = None, send: Any = None,
               window: Optional[Tuple[int, int]] = None, **kwargs: Any) -> AsyncStream:
        """Open a stream on a streaming method; return an AsyncStream (it
        connects and opens on first use). ``async for item in
        client.stream(...)``; `send`: an iterable or async iterable sent
        by a task; see Client.stream for `timeout` and `window`."""
        if self.codec != "fastrpc":
            raise UnsupportedError(f"streams need the fastrpc protocol; {self.codec} has none")
        intercepted = None if self._chain is None else (
            self.interceptors, ClientCall(method, args, kwargs, base_metadata(self.metadata), timeout, self.address))
        return AsyncStream(AsyncClientRoute(self), method, args if not kwargs else call_args(args, kwargs),
                           timeout=timeout, window=window or (None, None), settings=self, send=send,
                           intercepted=intercepted)

    async def notify(self, method: str, *args: Any, **kwargs: Any) -> None:
        """Send a one-way call: no reply, no error report."""
        conn = await self.connection()
        payload = args if not kwargs else call_args(args, kwargs)
        conn.submit(method, payload, None, None, self.call_metadata())

    async def map(self, method: str, args_iterable: Iterable[Any], *, timeout: Optional[float] = None,
                  return_exceptions: bool = False, window: int = 1024) -> List[Any]:
        """Call `method` once per item, pipelined; return results in order (see Client.map)."""
        items = args_iterable if isinstance(args_iterable, (list, tuple)) else list(args_iterable)
        n = len(items)
        if n == 0:
            return []
        if self._chain is not None:
            return await amap_through(self.call, method, items, return_exceptions, window, timeout=timeout)
        conn = await self.connection()
        timeout = bound_timeout(timeout, self.timeout)
        loop = conn.loop
        batch = Batch(n, return_exceptions)
        batch.stats = self._caller.stats.method(method)
        deadline = None if timeout is None else loop.time() + timeout
        waiter: Optional[asyncio.Future[Any]] = None

        def progress() -> None:
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

        batch.on_progress = progress
        try:
            for _ in map_steps(conn, batch, method, items, window,
                               None if timeout is None else self.deadline_ms(timeout), self.call_metadata()):
                if conn.paused is not None:
                    await conn.paused               # the transport's buffer is full: let it drain
                if batch.is_ready:
                    continue
                waiter = loop.create_future()
                remaining = None if deadline is None else deadline - loop.time()
                try:
                    await asyncio.wait_for(waiter, remaining) if remaining is not None else await waiter
                except asyncio.TimeoutError:
                    give_up(conn, batch, method)
                waiter = None
        except asyncio.CancelledError:
            give_up(conn, batch, method)
            raise
        finally:
            batch.on_progress = None
        if batch.first_error is not None and not return_exceptions:
            raise batch.first_error
        return batch.results

    async def ping(self, timeout: Optional[float] = 5.0) -> float:
        """Round-trip a PING frame; return the round-trip time in seconds."""
        conn = await self.connection()
        fut = conn.loop.create_future()
        start = time.perf_counter()
        seq = conn.table.ping(fut)
        conn.flush()
        try:
            await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            conn.table.forget(seq)
            raise TimeoutError(f"ping to {self.address} timed out after {timeout}s") from None
        return time.perf_counter() - start


    async def close(self) -> None:
        """Close the connection; pending calls fail with ConnectionClosedError."""
        self._closed = True
        conn = self._conn
        if conn is not None:
            conn.flush()
            conn.fail(ConnectionClosedError(f"client closed the connection to {self.address}"))
            await asyncio.sleep(0)

    async def __aenter__(self) -> "AsyncClient":
        return await self.connect()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def stats(self) -> Dict[str, Any]:
        """This client's numbers (as Client.stats())."""
        return {"target": self.address, "connected": self.connected, "methods": self._caller.stats.snapshot()}

    @property
    def closed(self) -> bool:
        """close() was called."""
        return self._closed

    def __repr__(self) -> str:
        return f"<fastrpc.AsyncClient {self.address}>"


def _observe(stats: Any, begun: float, fut: asyncio.Future[Any]) -> None:
    """A go() future settled: count it in its method's stats."""
    if fut.cancelled():
        stats.record(time.monotonic() - begun, "Cancelled")
    else:
        stats.record(time.monotonic() - begun, fut.exception())
