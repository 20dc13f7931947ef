"""Server: listeners, the event loop, discovery registrations and graceful close.

The handlers and how they run are the dispatcher's (fastrpc.server.dispatch);
each connection is a protocol object (fastrpc.server.connection for
fastrpc's own protocol, fastrpc.go.server for Go's), whose hot loop is
compiled. This module decides everything around them: where to listen, on
which loop, and how to drain on close.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import stat
import ssl as _ssl
import signal
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from fastrpc._core import codec
from fastrpc._core import frame as wire
from fastrpc.discovery.base import Discovery, Registration
from fastrpc.extensions import check_hooks
from fastrpc.go.server import GO_CODECS, GoConnection
from fastrpc.interceptors import Interceptor
from fastrpc.observability import registry as observed
from fastrpc.net.address import parse_address, tcp_url
from fastrpc.net.auth import check_secret
from fastrpc.net import flow
from fastrpc.net.endpoint import Endpoint
from fastrpc.net.loop import new_event_loop
from fastrpc.server.accept import BACKLOG, Listener, bind_tcp, bind_unix
from fastrpc.server.connection import LINGER, ConnectionSet, FastConnection
from fastrpc.server.dispatch import Dispatcher
from fastrpc.server.reflection import SERVICE as REFLECTION_SERVICE, Reflection
from fastrpc.server.watchdog import StallWatchdog

__all__ = ["Server"]

log = logging.getLogger("fastrpc.server")


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

    A connection with no call running that sent no whole frame for
    `idle_timeout` seconds (default None: never) is sent GOAWAY, and closed
    once it has been silent for LINGER more; a call that arrives meanwhile
    is served. (A peer trickling out a frame that never completes is idle.)
    With `auth_secret`, a peer has `handshake_timeout` seconds to
    authenticate, whatever it sends; with TLS, to complete its handshake.

    With `bytes_views`, bytes arguments reach handlers as read-only
    memoryviews over the receive buffer instead of bytes: no copy, which
    pays for large ones (a handler that keeps one keeps that buffer).

    Backpressure: a connection with `max_inflight` calls running (tasks
    and thread-pool calls), or whose peer does not read its replies, is not
    read from until that eases, so one client cannot make the server buffer
    without bound. Streams do not count towards it (their own frames must
    still be read, and flow control bounds them); a connection has at most
    `max_inflight` streams open, further ones are answered ``TooManyStreams``.

    Settings (keyword arguments; defaults in the signature):

    - ``max_frame_size`` (64 MiB): the largest request frame. The server
      announces it when a connection starts; a larger request is answered
      ``FrameTooLarge`` alone.
    - ``max_depth`` (256, at most 2,048), ``max_len`` (2**24 items),
      ``max_bytes`` (64 MiB): decoding limits on arguments; a call over one
      is answered ``DecodeError``.
    - ``bytes_views`` (False): bytes arguments as memoryviews, see above.
    - ``max_workers`` (None: the executor's default): the thread pool of
      ``@fastrpc.blocking`` handlers.
    - ``max_inflight`` (1024) and ``max_connections`` (10,000): see above.
    - ``idle_timeout`` (None) and ``handshake_timeout`` (10 s): see above.
    - ``grace`` (5 s): how long ``close()`` lets running calls finish.
    - ``report_load`` (True): stamp the number of calls running on each
      reply, for the balancers' least-loaded strategies.
    - ``use_uvloop`` (None: when installed): run the event loop on uvloop.
    - ``ssl`` (None): an ``ssl.SSLContext`` every listener serves TLS with.
    - ``auth_secret`` (None): require the shared-secret handshake (at least
      16 bytes) on fastrpc listeners.
    - ``authorize`` (None): ``authorize(method, metadata)`` runs before each
      call; raising refuses it as ``PermissionDenied``.
    - ``send_tracebacks`` (False): error replies carry the handler's
      traceback, which clients show as the error's cause. For development:
      a traceback tells a caller about the server's code (SECURITY.md).
    - ``default``, ``ext_hook``, ``keep_tuples``: the codec's hooks for
      your own types, and tuples kept as tuples in results (as Client's).
    - ``reuse_port`` (False): bind TCP listeners with SO_REUSEPORT, so that
      several processes serve one port and the kernel spreads connections
      over them (what ``fastrpc serve --workers N`` does; use it to run the
      processes yourself).
    - ``stall_warning`` (0.5 s; None: off): a plain handler that holds the
      event loop longer than this (it sleeps, waits on I/O, calls another
      server with a blocking client) is named in a warning, once per
      method, with the advice to make it ``async def`` or ``@blocking``.
    - ``reflection`` (True): serve the built-in ``_fastrpc`` service, which
      lists the services and describes their methods (``client.describe()``,
      ``fastrpc list``); it goes through TLS, the secret and ``authorize``
      like any call.
    - ``interceptors`` (()): callables ``interceptor(call, proceed)`` run
      around every handler, the first outermost: they see a
      ``fastrpc.ServerCall`` (method, arguments, metadata, peer, deadline),
      may change it, refuse the call by raising, time it, or change its
      outcome (see fastrpc.interceptors).
    - ``metrics_address`` (None): an ``http://host:port`` to serve only the
      Prometheus ``/metrics`` and the ``/status`` page on, once the server
      listens (every ``http://`` listener serves them too).
    - ``stream_window`` ((1024, 4 MiB)): the credit a stream's client gets for
      the items it sends, as (items, bytes): what one stream can hold in
      the server's memory (see "Streams" in the README).

    ``stats()`` gives the server's numbers: per method calls, errors by
    type and a latency histogram; connections, calls in flight, bytes.

    A handler's exception reaches the caller under its class name, or the
    name given to ``fastrpc.register_error``; clients raise the common
    builtin exceptions and registered ones as classes that are both that
    exception and a RemoteError.
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
                 handshake_timeout: float = 10.0,
                 send_tracebacks: bool = False,
                 default: Optional[Callable[[Any], Any]] = None,
                 ext_hook: Optional[Callable[[int, bytes], Any]] = None,
                 keep_tuples: bool = False,
                 reflection: bool = True,
                 reuse_port: bool = False,
                 stall_warning: Optional[float] = 0.5,
                 interceptors: Sequence[Interceptor] = (),
                 metrics_address: Optional[str] = None,
                 stream_window: Tuple[int, int] = (flow.DEFAULT_WINDOW_ITEMS, flow.DEFAULT_WINDOW_BYTES)) -> None:
        self.max_frame_size = max_frame_size
        #: The credit a stream's client gets for its items: (items, bytes) in flight at most.
        self.stream_window = flow.window(*stream_window)
        self.max_depth = codec.check_max_depth(max_depth)
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
        self._sweeper: Optional[asyncio.Task[Any]] = None
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
        self.send_tracebacks = send_tracebacks  # error replies carry the handler's traceback
        check_hooks(default, ext_hook)
        self.default = default                  # stand-ins for types the codec cannot encode
        self.ext_hook = ext_hook                # values of ext codes it does not know
        self.keep_tuples = keep_tuples          # tuples in results travel as tuples
        #: The registered services and how their handlers run (shared by every connection).
        self.dispatcher = Dispatcher(max_workers, interceptors)
        if metrics_address is not None and not metrics_address.startswith("http://"):
            raise ValueError(f"metrics_address is an http://host:port address, not {metrics_address!r}")
        self.metrics_address = metrics_address  # an HTTP listener of /metrics and /status only
        self._started_at = time.time()
        self.reuse_port = reuse_port            # SO_REUSEPORT on TCP listeners (several processes, one port)
        if stall_warning is not None and stall_warning <= 0:
            raise ValueError("stall_warning must be > 0 seconds (or None: off)")
        self.stall_warning = stall_warning      # name plain handlers that block the loop this long
        self._watchdog: Optional[StallWatchdog] = None
        if reflection:
            self.dispatcher.register(Reflection(self.dispatcher), REFLECTION_SERVICE)
        #: The open connections, and whether the server is closing.
        self.connections = ConnectionSet()
        self._listeners: List[Listener] = []
        self._unix_paths: List[str] = []
        self._addresses: List[str] = []
        self._metrics_listener: Optional[str] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._registrations: List[Registration] = []   # discovery entries, removed on close
        self._closed = threading.Event()
        self._close_started = False             # a close was started from the server's own loop
        self._lock = threading.Lock()
        observed.servers.add(self)

    # registry -------------------------------------------------------------
    def register(self, obj: Any, name: Optional[str] = None) -> None:
        """Expose the public methods of `obj` (an instance) as ``"<name>.<Method>"``.

        `name` defaults to the class name. Registering a name twice raises
        ValueError; registering a class instead of an instance, TypeError.
        Services may be registered while serving.
        """
        self.dispatcher.register(obj, name)

    def register_function(self, func: Callable[..., Any], name: str) -> None:
        """Expose one callable as ``name`` ("Service.Method")."""
        self.dispatcher.register_function(func, name)

    @property
    def methods(self) -> List[str]:
        """Every registered "Service.Method" name, sorted."""
        return self.dispatcher.methods

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop serving the connections (once listening)."""
        if self._loop is None:
            raise RuntimeError("the server is not listening yet")
        return self._loop

    @property
    def addresses(self) -> List[str]:
        """The addresses this server listens on (ports resolved)."""
        return list(self._addresses)

    @property
    def inflight(self) -> int:
        """Calls running as tasks or in the thread pool right now."""
        return self.dispatcher.load.value

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
              ssl: Optional[_ssl.SSLContext] = None, *, sock: Optional[socket.socket] = None) -> str:
        """Listen on `address` and serve from a background thread.

        Returns the bound address (with the real port when 0 was given).
        May be called several times to listen on several addresses.

        `codec` picks the protocol of this listener: "fastrpc" (the
        default), or Go net/rpc's "gob" or "jsonrpc" to serve Go clients.
        An ``http://host:port`` address serves Go's rpc.DialHTTP (HTTP
        CONNECT to /_goRPC_, then gob), Go's /debug/rpc page, and JSON-RPC
        2.0 on ``POST /rpc`` for any HTTP client (``authorize`` gets the
        request's headers, lower-cased, as the call's metadata).

        `sock` serves a socket bound elsewhere (see listen()).

        `ssl` (an ssl.SSLContext, default the server's) serves TLS; with
        ``verify_mode = CERT_REQUIRED`` and a CA, clients must present a
        certificate (mutual TLS).
        """
        loop = self._ensure_loop_thread()
        fut = asyncio.run_coroutine_threadsafe(self.listen(address, codec, ssl, sock=sock), loop)
        return fut.result()

    def serve_forever(self, address: Union[str, Sequence[str]], codec: Optional[str] = None,
                      ssl: Optional[_ssl.SSLContext] = None,
                      ready: Optional[Callable[[List[str]], None]] = None) -> None:
        """Listen on `address` (or on each of several) and serve in this thread until close().

        In the main thread, SIGTERM and SIGINT (Ctrl-C) close the server
        gracefully, as close() does: GOAWAY, in-flight calls finish within
        `grace`, then this returns. `codec` and `ssl` are as for start();
        `ready(bound_addresses)` is called once every listener is up, on the
        running loop with the signal handlers in place (a SIGTERM sent as
        soon as it announces the address closes gracefully); what it raises,
        serve_forever() raises.
        """
        if self._thread is not None:
            raise RuntimeError("server already runs in a background thread")
        loop = self._loop = new_event_loop(self.use_uvloop)
        asyncio.set_event_loop(loop)
        handled = []
        try:
            addresses = [address] if isinstance(address, str) else list(address)
            bound = [loop.run_until_complete(self.listen(a, codec, ssl)) for a in addresses]
            if threading.current_thread() is threading.main_thread():
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(sig, self._begin_close, None)
                    handled.append(sig)
            # ready() runs on the running loop, after the handlers: whoever
            # learns the address from it (a process manager, a test) may send
            # SIGTERM at once, and that must close gracefully. Before the
            # handlers it killed the process; before run_forever() (uvloop)
            # the signal was lost.
            failed: List[BaseException] = []
            if ready is not None:
                loop.call_soon(_announce, loop, ready, bound, failed)
            loop.run_forever()
            if failed:
                raise failed[0]
        except KeyboardInterrupt:
            loop.run_until_complete(self._aclose(self.grace))
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)
            self._finish_loop(loop)

    def _begin_close(self, grace: Optional[float]) -> None:
        """On the server's loop: start a graceful close (once) without waiting for it."""
        if not self._close_started:
            self._close_started = True
            log.info("closing: draining calls in flight (grace %.1fs)", self.grace if grace is None else grace)
            self.loop.create_task(self.aclose(grace))

    async def listen(self, address: str = "tcp://127.0.0.1:0", codec: Optional[str] = None,
                     ssl: Optional[_ssl.SSLContext] = None, *, sock: Optional[socket.socket] = None) -> str:
        """Listen on `address` on the running event loop (for asyncio programs); see start().

        With `sock`, serve that socket instead of binding one (a TCP or Unix
        stream socket, already bound; listen() is called on it if needed):
        for process managers that bind before forking or pass sockets in
        (systemd). `address` then only says the scheme ("http://" for an
        HTTP listener). The server closes it when it closes."""
        if self.connections.closing:
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
        if self.stall_warning is not None and self._watchdog is None:
            self._watchdog = StallWatchdog(asyncio.get_running_loop(), self.dispatcher, self.stall_warning)
            self._watchdog.start()
        if self.idle_timeout is not None and self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_idle())
        addr = parse_address(address)
        loop = asyncio.get_running_loop()
        factory: Callable[[], asyncio.BaseProtocol]
        if codec == "fastrpc":
            factory = functools.partial(FastConnection, self)
        else:
            factory = functools.partial(GoConnection, self, codec, http)
        ssl = ssl if ssl is not None else self.ssl
        if sock is not None:
            if sock.type != socket.SOCK_STREAM:
                raise ValueError("sock must be a stream (TCP or Unix) socket")
            sock.listen(BACKLOG)                # harmless if it already listens
            sock.setblocking(False)
            sockets = [sock]
            name = sock.getsockname()
            if sock.family == socket.AF_UNIX:
                bound = f"unix://{name}"
            else:
                bound = tcp_url(name[0], name[1], "http" if http else "tcp")
        elif addr.scheme == "unix":
            _remove_stale_socket(addr.path)
            sockets = [bind_unix(addr.path)]
            self._unix_paths.append(addr.path)
            bound = f"unix://{addr.path}"
        else:
            sockets = bind_tcp(addr.host, addr.port, self.reuse_port)
            bound = tcp_url(addr.host, sockets[0].getsockname()[1], "http" if http else "tcp")
        listener = Listener(loop, sockets, factory, ssl=ssl, handshake_timeout=self.handshake_timeout)
        listener.start()
        self._listeners.append(listener)
        self._addresses.append(bound)
        log.info("listening on %s (%s)", bound, codec)
        if self.metrics_address is not None and self._metrics_listener is None:
            self._metrics_listener = await self._listen_metrics(self.metrics_address)
        return bound

    async def _listen_metrics(self, address: str) -> str:
        """The metrics_address listener: /metrics and /status, nothing else."""
        addr = parse_address("tcp://" + address[len("http://"):])
        sockets = bind_tcp(addr.host, addr.port, self.reuse_port)
        listener = Listener(asyncio.get_running_loop(), sockets,
                            functools.partial(GoConnection, self, "gob", True, True),
                            handshake_timeout=self.handshake_timeout)
        listener.start()
        self._listeners.append(listener)
        bound = tcp_url(addr.host, sockets[0].getsockname()[1], "http")
        log.info("metrics and status on %s", bound)
        return bound

    @property
    def closed(self) -> bool:
        """The server has closed (its loop has ended)."""
        return self._closed.is_set()

    @property
    def metrics_url(self) -> Optional[str]:
        """The URL of the Prometheus page on metrics_address (with its real
        port, ``http://host:port/metrics``) once listening; else None."""
        return None if self._metrics_listener is None else self._metrics_listener + "/metrics"

    @property
    def status_url(self) -> Optional[str]:
        """The URL of the status page on metrics_address (``/status``; add
        ``?format=json`` for JSON) once listening; else None."""
        return None if self._metrics_listener is None else self._metrics_listener + "/status"

    def stats(self) -> Dict[str, Any]:
        """The server's numbers now: addresses, connections (open, accepted),
        calls in flight, bytes received and sent, and per method ("Service.Method")
        calls, errors, errors by type, seconds (summed) and the latency
        histogram (counts per fastrpc.LATENCY_BUCKETS bucket, then the rest)."""
        c = self.connections
        return {"addresses": list(self._addresses), "connections": len(c), "connections_total": c.accepted,
                "in_flight": self.dispatcher.load.value, "bytes_received": c.bytes_received,
                "bytes_sent": c.bytes_sent, "started": self._started_at, "methods": self.dispatcher.stats()}

    def _ensure_loop_thread(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self.connections.closing:
                raise RuntimeError("server is closed")
            if self._thread is None:
                if self._loop is not None:
                    raise RuntimeError("server already runs on another event loop")
                loop = self._loop = new_event_loop(self.use_uvloop)
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    try:
                        loop.run_forever()
                    finally:
                        self._finish_loop(loop)

                self._thread = threading.Thread(target=run, name="fastrpc-server", daemon=True)
                self._thread.start()
                ready.wait()
            assert self._loop is not None, "the server's thread set its loop"
            return self._loop

    def _finish_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()
            self._closed.set()

    # closing ----------------------------------------------------------------
    def close(self, grace: Optional[float] = None) -> None:
        """Stop accepting, let in-flight calls finish (up to `grace` seconds), close.

        Connections are told GOAWAY first, so clients send new calls
        elsewhere. Safe to call more than once and from any thread. From
        the server's own event loop (a handler, a callback, a signal
        handler while serve_forever() runs) it starts the close and returns
        at once; serve_forever() returns when the close is done (``await
        server.aclose()`` waits for it there).
        """
        grace = self.grace if grace is None else grace
        loop = self._loop
        if loop is None or loop.is_closed():
            self._deregister()
            self.connections.closing = True
            return
        try:
            running_here = asyncio.get_running_loop() is loop
        except RuntimeError:
            running_here = False
        if running_here or (self._thread is not None and threading.current_thread() is self._thread):
            loop.call_soon_threadsafe(self._begin_close, grace)
            return
        self._deregister()                  # first: balancers stop picking us
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
        assert self.idle_timeout is not None        # only started with an idle_timeout
        period = max(0.02, min(self.idle_timeout / 4.0, 5.0))
        while not self.connections.closing:
            await asyncio.sleep(period)
            now = loop.time()
            for conn in self.connections:
                if conn.tasks or conn.transport is None or conn.transport.is_closing():
                    continue
                if conn.idle_goaway_at is None:
                    if now - conn.last_read >= self.idle_timeout:
                        conn.idle_goaway_at = now
                        conn.goaway("idle timeout")
                elif now - max(conn.last_read, conn.idle_goaway_at) >= LINGER:
                    conn.flush()
                    conn.transport.close()

    async def _aclose(self, grace: float) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self.connections.closing and not self._listeners and not self.connections:
            self._stop_loop()
            return
        self.connections.closing = True
        for listener in self._listeners:
            listener.close()
        # Connections accepted just before (their protocol not made yet) are
        # served too: their clients may have sent calls already. Each is told
        # GOAWAY as it is made (connection_made sees closing).
        making = [task for listener in self._listeners for task in listener.making]
        if making:
            await asyncio.wait(making, timeout=grace)
        for conn in self.connections:
            conn.goaway("server is shutting down")
        # Clients close a connection once GOAWAY arrived and their calls on it
        # are done; requests already on the way are still served meanwhile.
        # A connection with nothing running that has been silent for LINGER
        # seconds (an idle client that will read GOAWAY later) is closed by
        # us; at the grace deadline, every connection is.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        linger = min(grace, LINGER)
        for conn in self.connections:
            conn.last_read = loop.time()
        while self.connections and loop.time() < deadline:
            now = loop.time()
            for conn in self.connections:
                if not conn.tasks and now - conn.last_read >= linger and conn.transport is not None:
                    conn.flush()
                    conn.transport.close()
            self.connections.idle_waiter = loop.create_future()
            try:
                await asyncio.wait_for(self.connections.idle_waiter, min(0.05, max(0.0, deadline - now)))
            except asyncio.TimeoutError:
                pass
            finally:
                self.connections.idle_waiter = None
        for conn in self.connections:
            for task in list(conn.tasks.values()):
                task.cancel()
            if conn.transport is not None:
                conn.flush()
                conn.transport.close()
        self._listeners.clear()
        for path in self._unix_paths:
            try:
                os.unlink(path)
            except OSError:
                pass
        await asyncio.sleep(0)  # let transports run their close callbacks
        self.dispatcher.shutdown()
        if self._watchdog is not None:
            self._watchdog.stop()
        self._stop_loop()

    def _stop_loop(self) -> None:
        if self._loop is not None and (self._thread is not None or self._loop.is_running()):
            self._loop.call_soon(self._loop.stop)

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<fastrpc.Server {self._addresses or 'not listening'} services={sorted(s.decode() for s in self.dispatcher.services)}>"


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


def _announce(loop: asyncio.AbstractEventLoop, ready: Callable[[List[str]], None], bound: List[str],
              failed: List[BaseException]) -> None:
    """serve_forever()'s ready(bound), on its loop: an exception stops the
    loop and is raised by serve_forever()."""
    try:
        ready(bound)
    except BaseException as exc:                # raised again where serve_forever() was called
        failed.append(exc)
        loop.stop()
