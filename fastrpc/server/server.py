"""Server: the service registry, listeners, connections and graceful close.

The per-connection hot loop (frames in, inline handlers, replies out) is the
compiled ServerCore; this module decides everything around it: which handler
runs where, when to flush, how to drain on close.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import os
import socket
import stat
import ssl as _ssl
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Set, Union

from fastrpc._core import codec
from fastrpc._core import frame as wire
from fastrpc._core.servercore import MODE_ASYNC, Handler, LoadGauge, ServerCore
from fastrpc.net.address import parse_address
from fastrpc.net.auth import ServerHandshake, check_secret, rejection
from fastrpc.context import serving
from fastrpc.discovery.base import Discovery, Registration
from fastrpc.net.endpoint import Endpoint
from fastrpc.errors import DeadlineExceeded, RPCError
from fastrpc.go.server import GO_CODECS, GoConnection, GoSignature
from fastrpc.net.loop import feed_buffered, new_event_loop
from fastrpc.server.handlers import build_handler, public_methods, service_name
from fastrpc.server.connection import ServedConnection

__all__ = ["Server"]

log = logging.getLogger("fastrpc.server")


def _unless_late(deadline: float, name: str, call: Callable[[], Any]) -> Any:
    """Run `call` in a pool thread unless monotonic `deadline` already passed."""
    if time.monotonic() >= deadline:
        raise DeadlineExceeded(message=f"{name} was not started: its deadline passed while it waited")
    return call()


# Graceful close: a connection with no call running that received nothing
# for this long after GOAWAY is closed by the server.
LINGER = 1.0
# A connection over max_connections is answered "Unavailable" this long, then closed.
REFUSED_LINGER = 5.0


class _Connection(ServedConnection, asyncio.BufferedProtocol):
    """One client connection: feeds the ServerCore and runs non-inline handlers."""

    def __init__(self, server: "Server") -> None:
        super().__init__(server)
        self.core: Optional[ServerCore] = None
        self.deadline_timers: Dict[int, asyncio.TimerHandle] = {}   # async calls with a deadline
        self.expired: Set[int] = set()     # seqs cancelled because their deadline passed
        # Authentication (Server(auth_secret=...)): until it succeeds, bytes
        # go to the handshake, never to the core, so no handler can run.
        self.handshake: Optional[ServerHandshake] = None
        self.handshake_buf: Optional[bytearray] = None
        self.handshake_timer: Optional[asyncio.TimerHandle] = None
        self.unauthenticated: Optional[wire.FrameReader] = None

    # asyncio protocol -------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.peer = transport.get_extra_info("peername")
        s = self.server
        self.last_read = s._loop.time()
        self.core = ServerCore(
            s._handlers, s._services, self,
            max_frame_size=s.max_frame_size, max_depth=s.max_depth,
            max_len=s.max_len, max_bytes=s.max_bytes, bytes_views=s.bytes_views)
        if s.report_load:
            self.core.load = s._load
        self.core.authorize = s.authorize
        if len(s._connections) >= s.max_connections and not s._closing:
            # Over the limit: every call gets a clear "Unavailable" (nothing
            # runs, so clients may send it elsewhere), then the connection goes.
            reason = f"too many connections (max_connections={s.max_connections})"
            log.warning("refusing calls from %s: %s", self.peer, reason)
            if s.auth_secret is not None:       # the client reads the handshake first
                transport.write(rejection(f"Unavailable: {reason}"))
                transport.close()
                return
            self.core.refuse = reason
            self.goaway(reason)
            s._loop.call_later(REFUSED_LINGER, transport.close)
            return
        if s.auth_secret is not None:
            self.handshake = ServerHandshake(s.auth_secret)
            self.handshake_buf = bytearray(4096)
            self.handshake_timer = s._loop.call_later(s.handshake_timeout, self._handshake_expired)
        s._connections.add(self)
        if s._closing:
            self.goaway("server is shutting down")

    def get_buffer(self, sizehint: int):
        if self.handshake_buf is not None:
            return self.handshake_buf
        return self.core.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        server = self.server
        if server.idle_timeout is not None or server._closing:
            self.last_read = server._loop.time()
        if self.handshake_buf is not None:
            self._authenticate(bytes(self.handshake_buf[:nbytes]))
            return
        self._process(nbytes)

    # authentication -----------------------------------------------------
    def _authenticate(self, data: bytes) -> None:
        if self.unauthenticated is not None:
            self._answer_unauthenticated(data)
            return
        reply, state = self.handshake.feed(data)
        if reply:
            self.transport.write(reply)
        if state == "more":
            return
        self._end_handshake()
        if state == "done":
            rest = self.handshake.rest
            self.handshake = None
            feed_buffered(self, self.transport, rest)       # calls sent right after the proof
        elif state == "failed":
            log.warning("closing connection from %s: %s", self.peer, self.handshake.reason)
            self.transport.close()
        else:
            # A client speaking fastrpc without authenticating: tell it why.
            self.handshake_buf = bytearray(4096)
            self.unauthenticated = wire.FrameReader(self.server.max_frame_size)
            self._answer_unauthenticated(self.handshake.buf)

    def _answer_unauthenticated(self, data: bytes) -> None:
        try:
            frames = self.unauthenticated.feed(data)
        except RPCError:
            frames = None
        if frames == []:
            return                              # wait for a whole frame
        for frame in frames or ():
            if frame.kind == wire.REQUEST:
                self.transport.write(wire.encode_frame(wire.ERROR, frame.seq, "", codec.packb(
                    ["Unauthenticated", "this server requires authentication (auth_secret)"])))
        log.warning("closing connection from %s: it did not authenticate", self.peer)
        self.transport.close()

    def _end_handshake(self) -> None:
        self.handshake_buf = None
        if self.handshake_timer is not None:
            self.handshake_timer.cancel()
            self.handshake_timer = None

    def _handshake_expired(self) -> None:
        self.handshake_timer = None
        if self.handshake is not None and self.transport is not None and not self.transport.is_closing():
            log.warning("closing connection from %s: no authentication within %.1fs",
                        self.peer, self.server.handshake_timeout)
            self.transport.close()

    def _process(self, nbytes: int) -> None:
        """Handle the frames received (nbytes more; 0: those held back earlier)."""
        try:
            out = self.core.process(nbytes)
        except RPCError as exc:
            # Framing is lost (oversized or malformed frame): reply what was
            # already computed, then drop this connection only.
            log.warning("closing connection from %s: %s", self.peer, exc)
            self._write(self.core.take_output())
            self.transport.close()
            return
        except Exception:
            # A bug must cost one connection, never the server.
            log.exception("internal error on connection from %s; closing it", self.peer)
            self.transport.abort()
            return
        if out is not None:
            self.transport.write(out)

    def eof_received(self):
        return False  # close our side too; replies already written still go out

    def _hold(self, paused: bool) -> None:
        self.core.hold = paused
        if not paused:
            self._process(0)                # frames held back in the buffer go first

    def connection_lost(self, exc) -> None:
        if self.handshake_timer is not None:
            self.handshake_timer.cancel()
        super().connection_lost(exc)

    # called by ServerCore ---------------------------------------------
    def spawn(self, handler: Handler, seq: int, args: tuple, notify: bool,
              deadline_ms: Optional[int], meta: Any) -> None:
        loop = self.server._loop
        try:
            # The handler's context (fastrpc.current_call()) carries the
            # caller's deadline and metadata to the calls it makes in turn.
            deadline = None if deadline_ms is None else time.monotonic() + deadline_ms / 1000.0
            ctx = None if deadline is None and meta is None else serving(handler.name, deadline, meta)
            if handler.mode == MODE_ASYNC:
                coro = handler.func(*args)
                fut = loop.create_task(coro) if ctx is None else ctx.run(loop.create_task, coro)
            else:
                call = functools.partial(handler.func, *args)
                if deadline is not None:
                    # A call that waited in the pool's queue past its
                    # caller's timeout is not started: nobody wants its result.
                    call = functools.partial(_unless_late, deadline, handler.name, call)
                if ctx is not None:
                    call = functools.partial(ctx.run, call)
                fut = loop.run_in_executor(self.server._executor(), call)
        except Exception as exc:
            self._done(seq, handler.name, notify, None, exc)
            return
        self._track(seq, handler.name, notify, fut, deadline)
        if deadline_ms is not None and handler.mode == MODE_ASYNC:
            # The caller stops waiting at its deadline: stop the work too.
            self.deadline_timers[seq] = loop.call_later(deadline_ms / 1000.0, self._expire, seq, fut)

    def _expire(self, seq: int, fut: asyncio.Future) -> None:
        self.deadline_timers.pop(seq, None)
        if self.tasks.get(seq) is fut and not fut.done():
            self.expired.add(seq)
            fut.cancel()

    def spawn_awaitable(self, handler: Handler, seq: int, awaitable, notify: bool) -> None:
        self._track(seq, handler.name, notify, self.server._loop.create_task(awaitable))

    def _track(self, seq: int, name: str, notify: bool, fut: asyncio.Future,
               deadline: Optional[float] = None) -> None:
        self._start_task(seq, fut, functools.partial(self._finished, seq, name, notify, deadline))

    def _finished(self, seq: int, name: str, notify: bool, deadline: Optional[float],
                  fut: asyncio.Future) -> None:
        if self._end_task(seq, fut):
            timer = self.deadline_timers.pop(seq, None)
            if timer is not None:
                timer.cancel()              # done first: the timer need not live on
        if fut.cancelled():
            exc = DeadlineExceeded(message=f"{name} was cancelled at its deadline") if seq in self.expired \
                else asyncio.CancelledError("call cancelled")
            self.expired.discard(seq)
        else:
            exc = fut.exception()
            if isinstance(exc, TimeoutError) and not isinstance(exc, DeadlineExceeded) \
                    and deadline is not None and time.monotonic() >= deadline:
                # A call the handler made timed out with the caller's deadline
                # (which bounded it): the caller's call ran out of time.
                exc = DeadlineExceeded(message=f"{name} ran out of its caller's deadline: {exc}")
        self._done(seq, name, notify, None if exc is not None else fut.result(), exc)
        self._calls_eased()

    def _done(self, seq: int, name: str, notify: bool, result: Any, exc: Optional[BaseException]) -> None:
        if self.closing:
            return
        if notify:
            if exc is not None:
                self.log_notify_error(name, exc)
            return
        if exc is None:
            self.core.reply(seq, result)
        elif isinstance(exc, asyncio.CancelledError):
            self.core.reply_error(seq, "Cancelled", f"{name} was cancelled")
        elif isinstance(exc, DeadlineExceeded):
            self.core.reply_error(seq, exc.type, exc.message)
        else:
            self.core.reply_error(seq, type(exc).__name__, str(exc))
        self._schedule_flush()

    def cancel(self, seq: int) -> None:
        task = self.tasks.get(seq)
        if task is not None:
            task.cancel()

    def on_goaway(self) -> None:
        pass  # the client will send nothing new; replies still go out

    def on_pong(self, seq: int) -> None:
        pass

    def log_notify_error(self, name: str, exc: BaseException) -> None:
        log.warning("notification %s failed: %s: %s", name, type(exc).__name__, exc)

    # output -------------------------------------------------------------
    def _take_output(self) -> Optional[bytes]:
        return self.core.take_output()

    def goaway(self, reason: str) -> None:
        if not self.closing and self.core is not None:
            self.core.goaway(reason)
            self._flush()


class Server:
    """An RPC server: register objects, then serve them on TCP or Unix sockets.

    ``register(obj)`` exposes obj's public methods as ``"Class.Method"``.
    Plain functions run inline on the event loop, ``async def`` methods run
    as tasks, methods marked ``@fastrpc.blocking`` run in a thread pool.
    ``start()`` serves from a background thread and returns the bound
    address; ``serve_forever()`` blocks; ``close()`` drains in-flight calls.

    Beyond `max_connections`, a new connection's calls are answered
    ``Unavailable`` without running (UnavailableError, which balancers send
    elsewhere) and the connection is closed.

    A connection with no call running that sent nothing for `idle_timeout`
    seconds (default None: never) is sent GOAWAY, and closed once it has
    been silent for LINGER more; a call that arrives meanwhile is served.

    With `bytes_views`, bytes arguments reach handlers as read-only
    memoryviews over the receive buffer instead of bytes: no copy, which
    pays for large ones (a handler that keeps one keeps that buffer).

    Backpressure: a connection with `max_inflight` calls running (tasks
    and thread-pool calls), or whose peer does not read its replies, is not
    read from until that eases, so one client cannot make the server buffer
    without bound.
    """

    def __init__(self, *, max_frame_size: int = wire.DEFAULT_MAX_FRAME_SIZE,
                 max_depth: int = codec.DEFAULT_MAX_DEPTH,
                 max_len: int = codec.DEFAULT_MAX_LEN,
                 max_bytes: int = codec.DEFAULT_MAX_BYTES,
                 bytes_views: bool = False,
                 max_workers: Optional[int] = None,
                 max_inflight: int = 1024,
                 max_connections: int = 10_000,
                 idle_timeout: Optional[float] = None,
                 grace: float = 5.0,
                 report_load: bool = True,
                 use_uvloop: Optional[bool] = None,
                 ssl: Optional[_ssl.SSLContext] = None,
                 auth_secret: Union[bytes, str, None] = None,
                 authorize: Optional[Callable[[str, Any], None]] = None,
                 handshake_timeout: float = 10.0) -> None:
        self.max_frame_size = max_frame_size
        self.max_depth = max_depth
        self.max_len = max_len
        self.max_bytes = max_bytes
        self.bytes_views = bytes_views          # bytes arguments arrive as memoryviews (no copy)
        self.max_workers = max_workers
        if max_inflight < 1:
            raise ValueError("max_inflight must be >= 1")
        self.max_inflight = max_inflight        # per connection: beyond it, reading pauses
        if max_connections < 1:
            raise ValueError("max_connections must be >= 1")
        self.max_connections = max_connections  # beyond it, calls are refused as Unavailable
        if idle_timeout is not None and idle_timeout <= 0:
            raise ValueError("idle_timeout must be > 0 (or None: never)")
        self.idle_timeout = idle_timeout
        self._sweeper: Optional[asyncio.Task] = None
        self.grace = grace
        self.report_load = report_load          # stamp the in-flight count on replies
        self.use_uvloop = use_uvloop
        if ssl is not None and not isinstance(ssl, _ssl.SSLContext):
            raise TypeError("ssl must be an ssl.SSLContext (ssl.create_default_context(ssl.Purpose.CLIENT_AUTH))")
        self.ssl = ssl                          # default TLS context of every listener
        self.auth_secret = check_secret(auth_secret)   # shared-secret handshake on fastrpc listeners
        if authorize is not None and not callable(authorize):
            raise TypeError("authorize must be a callable (method, metadata)")
        self.authorize = authorize              # per-call hook: raise to refuse (PermissionDenied)
        self.handshake_timeout = handshake_timeout
        self._handlers: Dict[bytes, Handler] = {}
        self._services: Set[bytes] = set()      # shared with every ServerCore
        self._listeners: List[asyncio.AbstractServer] = []
        self._unix_paths: List[str] = []
        self._addresses: List[str] = []
        self._connections: Set[_Connection] = set()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._pool: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self._load = LoadGauge()                # calls running as tasks or in the pool
        self._registrations: List[Registration] = []   # discovery entries, removed on close
        self._go_calls: Dict[str, int] = {}     # calls served to Go clients, per method (/debug/rpc)
        self._go_signatures: Dict[str, GoSignature] = {}
        self._closing = False
        self._closed = threading.Event()
        self._idle_waiter: Optional[asyncio.Future] = None
        self._lock = threading.Lock()

    # registry -------------------------------------------------------------
    def register(self, obj: Any, name: Optional[str] = None) -> None:
        """Expose the public methods of `obj` as ``"<name>.<Method>"``.

        `name` defaults to the class name. Registering a name twice raises
        ValueError. Services may be registered while serving.
        """
        service = service_name(obj, name)
        methods = public_methods(obj)
        if not methods:
            raise ValueError(f"{service} has no public methods to register")
        handlers = {f"{service}.{m}": build_handler(fn, f"{service}.{m}") for m, fn in methods.items()}
        self._install(service, handlers)

    def register_function(self, func: Callable, name: str) -> None:
        """Expose one callable as ``name`` ("Service.Method")."""
        service, dot, method = name.rpartition(".")
        if not dot or not service or not method:
            raise ValueError(f"function name must be 'Service.Method', got {name!r}")
        self._install(service, {name: build_handler(func, name)}, allow_existing_service=True)

    def _install(self, service: str, handlers: Dict[str, Handler], allow_existing_service=False) -> None:
        with self._lock:
            if service.encode() in self._services and not allow_existing_service:
                raise ValueError(f"service {service!r} is already registered")
            for full in handlers:
                if full.encode() in self._handlers:
                    raise ValueError(f"method {full!r} is already registered")
            # Connections hold these objects themselves, so update in place.
            self._handlers.update({k.encode(): v for k, v in handlers.items()})
            self._services.add(service.encode())

    def _go_signature(self, handler: Handler) -> GoSignature:
        sig = self._go_signatures.get(handler.name)
        if sig is None or sig.handler is not handler:
            sig = self._go_signatures[handler.name] = GoSignature(handler)
        return sig

    @property
    def methods(self) -> List[str]:
        """Every registered "Service.Method" name, sorted."""
        return sorted(k.decode() for k in self._handlers)

    @property
    def addresses(self) -> List[str]:
        """The addresses this server listens on (ports resolved)."""
        return list(self._addresses)

    @property
    def inflight(self) -> int:
        """Calls running as tasks or in the thread pool right now."""
        return self._load.value

    # discovery --------------------------------------------------------------
    def register_with(self, discovery: Discovery, service: str, address: Optional[str] = None, *,
                      weight: float = 1, zone: Optional[str] = None, lat: Optional[float] = None,
                      lon: Optional[float] = None, metadata: Optional[Dict[str, Any]] = None,
                      ttl: float = 10.0) -> Registration:
        """Announce this server under `service` in `discovery` (fastrpc.discovery).

        `address` is what clients dial (default: the first address this
        server listens on; a wildcard host such as 0.0.0.0 must be replaced
        by a reachable one). Where the registry has leases (etcd), the entry
        lives `ttl` seconds past the last keep-alive, so a crashed server
        disappears on its own. close() deregisters before draining, so
        balancers stop picking this server at once. Returns the Registration
        (``close()`` it to deregister early).
        """
        if address is None:
            if not self._addresses:
                raise RuntimeError("start() the server before register_with(), or give address=")
            address = self._addresses[0]
        parsed = parse_address(address)
        if parsed.scheme == "tcp" and parsed.host in ("", "0.0.0.0", "::"):
            raise ValueError(f"{address} is a wildcard address: register the address clients should dial")
        endpoint = Endpoint(address, weight=weight, zone=zone, lat=lat, lon=lon, metadata=metadata)
        registration = discovery.register(service, endpoint, ttl)
        self._registrations.append(registration)
        return registration

    def _deregister(self) -> None:
        registrations, self._registrations = self._registrations, []
        for registration in registrations:
            try:
                registration.close()
            except Exception:               # the registry is down: its lease will expire
                log.exception("could not deregister %s", registration)

    # serving --------------------------------------------------------------
    def start(self, address: str = "tcp://127.0.0.1:0", codec: Optional[str] = None,
              ssl: Optional[_ssl.SSLContext] = None) -> str:
        """Listen on `address` and serve from a background thread.

        Returns the bound address (with the real port when 0 was given).
        May be called several times to listen on several addresses.

        `codec` picks the protocol of this listener: "fastrpc" (the
        default), or Go net/rpc's "gob" or "jsonrpc" to serve Go clients.
        An ``http://host:port`` address serves Go's rpc.DialHTTP (HTTP
        CONNECT to /_goRPC_, then gob) and Go's /debug/rpc page.

        `ssl` (an ssl.SSLContext, default the server's) serves TLS; with
        ``verify_mode = CERT_REQUIRED`` and a CA, clients must present a
        certificate (mutual TLS).
        """
        loop = self._ensure_loop_thread()
        fut = asyncio.run_coroutine_threadsafe(self.listen(address, codec, ssl), loop)
        return fut.result()

    def serve_forever(self, address: str, codec: Optional[str] = None) -> None:
        """Listen on `address` and serve in this thread until close() (or Ctrl-C)."""
        if self._thread is not None:
            raise RuntimeError("server already runs in a background thread")
        loop = self._loop = new_event_loop(self.use_uvloop)
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self.listen(address, codec))
            loop.run_forever()
        except KeyboardInterrupt:
            loop.run_until_complete(self._aclose(self.grace))
        finally:
            self._finish_loop(loop)

    async def listen(self, address: str, codec: Optional[str] = None,
                     ssl: Optional[_ssl.SSLContext] = None) -> str:
        """Listen on `address` on the running event loop (for asyncio programs); see start()."""
        if self._closing:
            raise RuntimeError("server is closed")
        http = isinstance(address, str) and address.startswith("http://")
        if http:
            address = "tcp://" + address[len("http://"):]
            codec = codec or "gob"
            if codec != "gob":
                raise ValueError(f"an http:// listener speaks gob (Go's rpc.DialHTTP), not {codec!r}")
        codec = codec or "fastrpc"
        if codec != "fastrpc" and codec not in GO_CODECS:
            raise ValueError(f"unknown codec {codec!r}: 'fastrpc', 'gob' or 'jsonrpc'")
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        if self.idle_timeout is not None and self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_idle())
        addr = parse_address(address)
        loop = asyncio.get_running_loop()
        if codec == "fastrpc":
            factory = functools.partial(_Connection, self)
        else:
            factory = functools.partial(GoConnection, self, codec, http)
        ssl = ssl if ssl is not None else self.ssl
        tls = {} if ssl is None else {"ssl": ssl, "ssl_handshake_timeout": self.handshake_timeout}
        if addr.scheme == "unix":
            _remove_stale_socket(addr.path)
            listener = await loop.create_unix_server(factory, addr.path, backlog=1024, **tls)
            self._unix_paths.append(addr.path)
            bound = f"unix://{addr.path}"
        else:
            listener = await loop.create_server(factory, addr.host, addr.port, backlog=1024,
                                                reuse_address=True, **tls)
            sockname = listener.sockets[0].getsockname()
            host = addr.host
            bound = f"{'http' if http else 'tcp'}://{'[' + host + ']' if ':' in host else host}:{sockname[1]}"
        self._listeners.append(listener)
        self._addresses.append(bound)
        log.info("listening on %s (%s)", bound, codec)
        return bound

    def _ensure_loop_thread(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._closing:
                raise RuntimeError("server is closed")
            if self._thread is None:
                if self._loop is not None:
                    raise RuntimeError("server already runs on another event loop")
                loop = self._loop = new_event_loop(self.use_uvloop)
                ready = threading.Event()

                def run():
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    try:
                        loop.run_forever()
                    finally:
                        self._finish_loop(loop)

                self._thread = threading.Thread(target=run, name="fastrpc-server", daemon=True)
                self._thread.start()
                ready.wait()
            return self._loop

    def _finish_loop(self, loop) -> None:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()
            self._closed.set()

    def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.max_workers, thread_name_prefix="fastrpc-handler")
        return self._pool

    # closing ----------------------------------------------------------------
    def close(self, grace: Optional[float] = None) -> None:
        """Stop accepting, let in-flight calls finish (up to `grace` seconds), close.

        Connections are told GOAWAY first, so clients send new calls
        elsewhere. Safe to call more than once and from any thread.
        """
        grace = self.grace if grace is None else grace
        self._deregister()                  # first: balancers stop picking us
        loop = self._loop
        if loop is None or loop.is_closed():
            self._closing = True
            return
        if self._thread is not None and threading.current_thread() is self._thread:
            raise RuntimeError("close() called from the server's own thread; use aclose()")
        try:
            running_here = asyncio.get_running_loop() is loop
        except RuntimeError:
            running_here = False
        if running_here:
            raise RuntimeError("close() called from the server's event loop; use 'await aclose()'")
        try:
            fut = asyncio.run_coroutine_threadsafe(self._aclose(grace), loop)
        except RuntimeError:
            return  # loop already stopped
        fut.result()
        if self._thread is not None:
            self._thread.join()
        else:
            self._closed.wait(grace + 5)

    async def aclose(self, grace: Optional[float] = None) -> None:
        """close() for code running on the server's own event loop."""
        if self._registrations:
            await asyncio.get_running_loop().run_in_executor(None, self._deregister)
        await self._aclose(self.grace if grace is None else grace)

    async def _sweep_idle(self) -> None:
        """GOAWAY to connections idle for idle_timeout; close them once silent LINGER more."""
        loop = asyncio.get_running_loop()
        period = max(0.02, min(self.idle_timeout / 4.0, 5.0))
        while not self._closing:
            await asyncio.sleep(period)
            now = loop.time()
            for conn in list(self._connections):
                if conn.tasks or conn.transport is None or conn.transport.is_closing():
                    continue
                if conn.idle_goaway_at is None:
                    if now - conn.last_read >= self.idle_timeout:
                        conn.idle_goaway_at = now
                        conn.goaway("idle timeout")
                elif now - max(conn.last_read, conn.idle_goaway_at) >= LINGER:
                    conn._flush()
                    conn.transport.close()

    async def _aclose(self, grace: float) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._closing and not self._listeners and not self._connections:
            self._stop_loop()
            return
        self._closing = True
        for listener in self._listeners:
            listener.close()
        for conn in list(self._connections):
            conn.goaway("server is shutting down")
        # Clients close a connection once GOAWAY arrived and their calls on it
        # are done; requests already on the way are still served meanwhile.
        # A connection with nothing running that has been silent for LINGER
        # seconds (an idle client that will read GOAWAY later) is closed by
        # us; at the grace deadline, every connection is.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        linger = min(grace, LINGER)
        for conn in self._connections:
            conn.last_read = loop.time()
        while self._connections and loop.time() < deadline:
            now = loop.time()
            for conn in list(self._connections):
                if not conn.tasks and now - conn.last_read >= linger and conn.transport is not None:
                    conn._flush()
                    conn.transport.close()
            self._idle_waiter = loop.create_future()
            try:
                await asyncio.wait_for(self._idle_waiter, min(0.05, max(0.0, deadline - now)))
            except asyncio.TimeoutError:
                pass
            finally:
                self._idle_waiter = None
        for conn in list(self._connections):
            for task in list(conn.tasks.values()):
                task.cancel()
            if conn.transport is not None:
                conn._flush()
                conn.transport.close()
        for listener in self._listeners:
            try:
                await asyncio.wait_for(listener.wait_closed(), 1.0)
            except (asyncio.TimeoutError, Exception):
                pass
        self._listeners.clear()
        for path in self._unix_paths:
            try:
                os.unlink(path)
            except OSError:
                pass
        await asyncio.sleep(0)  # let transports run their close callbacks
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._stop_loop()

    def _stop_loop(self) -> None:
        if self._loop is not None and (self._thread is not None or self._loop.is_running()):
            self._loop.call_soon(self._loop.stop)

    def _connection_idle(self, conn: _Connection) -> None:
        waiter = self._idle_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<fastrpc.Server {self._addresses or 'not listening'} services={sorted(s.decode() for s in self._services)}>"


def _remove_stale_socket(path: str) -> None:
    """Remove a leftover Unix socket file (never a regular file)."""
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(path)
            except OSError:
                os.unlink(path)   # nobody listening: stale
            else:
                raise OSError(f"address already in use: unix://{path}")
            finally:
                probe.close()
    except FileNotFoundError:
        pass
