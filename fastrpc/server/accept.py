"""Listening sockets and the accept loop.

The event loops' own accept loops take every pending connection in one
pass (asyncio up to the backlog, 1,024 here; libuv until the queue is
empty), so a burst of thousands of connections stalls the calls of those
already connected while their transports are made. A Listener takes at
most ACCEPT_BATCH per readiness event and lets the loop run the others'
callbacks in between: under a flood, established connections wait for
one batch, not for the whole burst.
"""
from __future__ import annotations

import asyncio
import functools
import errno
import logging
import socket
import ssl as _ssl
import time
from typing import Any, Callable, List, Optional, Set

log = logging.getLogger("fastrpc.server")

# Connections accepted per loop pass.
ACCEPT_BATCH = 16
BACKLOG = 1024
# Out of file descriptors or memory: stop accepting this long (the kernel
# keeps the connections queued meanwhile), as asyncio does.
ACCEPT_PAUSE = 0.1
# The same accept failure is logged at most once per this many seconds.
LOG_EVERY = 10.0

_RESOURCE_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class RateLimitedLog:
    """Logs one warning, then at most one summary per LOG_EVERY seconds of the
    events that followed, so a flood cannot flood the log as well."""

    def __init__(self, every: float = LOG_EVERY) -> None:
        self.every = every
        self.last = -1e9
        self.suppressed = 0

    def warning(self, message: str, *args: Any, exc_info: Optional[BaseException] = None) -> None:
        """Log `message` now (with `exc_info`'s traceback), or count it towards the next summary."""
        now = time.monotonic()
        if now - self.last < self.every:
            self.suppressed += 1
            return
        if self.suppressed:
            message += " (and %d more like it in the last %.0fs)"
            args += (self.suppressed, now - self.last)
        self.last = now
        self.suppressed = 0
        log.warning(message, *args, exc_info=exc_info)


def bind_tcp(host: str, port: int, reuse_port: bool = False) -> List[socket.socket]:
    """Listening sockets for `host`:`port` (one per address family the name
    resolves to, as asyncio's create_server binds them). With `reuse_port`,
    several processes bind the same port (SO_REUSEPORT) and the kernel
    spreads new connections over them."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: List[socket.socket] = []
    seen = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def bind_unix(path: str) -> socket.socket:
    """A listening Unix socket at `path`."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class Listener:
    """Accepts connections on listening sockets and hands each to the event
    loop as a transport for a new protocol from `factory`.

    With `ssl`, the TLS handshake runs first and must end within
    `handshake_timeout`; a connection is made (and counted by the server)
    only once it has.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, sockets: List[socket.socket],
                 factory: Callable[[], asyncio.BaseProtocol], *,
                 ssl: Optional[_ssl.SSLContext] = None, handshake_timeout: float = 10.0) -> None:
        self.loop = loop
        self.sockets = sockets
        self.factory = factory
        self.ssl = ssl
        self.handshake_timeout = handshake_timeout
        self.handshaking = 0                     # TLS handshakes in progress
        self.closed = False
        self.making: Set[asyncio.Task[Any]] = set()   # connections accepted, their protocol not made yet
        self._errors = RateLimitedLog()

    def start(self) -> None:
        """Start accepting (again)."""
        if self.closed:
            return
        for sock in self.sockets:
            self.loop.add_reader(sock.fileno(), self._ready, sock)

    def _pause(self) -> None:
        for sock in self.sockets:
            self.loop.remove_reader(sock.fileno())
        self.loop.call_later(ACCEPT_PAUSE, self.start)

    def _ready(self, sock: socket.socket) -> None:
        # Level-triggered: connections still queued after this batch make
        # the socket ready again on the next pass, after other callbacks.
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _RESOURCE_ERRORS:
                    self._errors.warning("cannot accept connections for now (%s); pausing %.1fs",
                                         exc, ACCEPT_PAUSE)
                    self._pause()
                    return
                # The client gave up before we accepted it (ECONNABORTED...).
                continue
            self._serve(conn)

    def _serve(self, conn: socket.socket) -> None:
        conn.setblocking(False)
        if self.ssl is None:
            coro = self.loop.connect_accepted_socket(self.factory, conn)
        else:
            self.handshaking += 1
            coro = self.loop.connect_accepted_socket(self.factory, conn, ssl=self.ssl,
                                                     ssl_handshake_timeout=self.handshake_timeout)
        task = self.loop.create_task(coro)
        self.making.add(task)
        task.add_done_callback(functools.partial(self._served, conn=conn))

    def _served(self, task: asyncio.Task[Any], conn: socket.socket) -> None:
        self.making.discard(task)
        if self.ssl is not None:
            self.handshaking -= 1
        if task.cancelled():
            conn.close()
            return
        exc = task.exception()
        if exc is not None:
            # A failed or timed-out TLS handshake, or a peer gone already:
            # it costs that connection only.
            conn.close()
            log.debug("connection not made: %s: %s", type(exc).__name__, exc)

    def close(self) -> None:
        """Stop accepting and close the listening sockets.

        Connections the kernel has already accepted (queued for us) are taken
        in first and served like any other: their clients consider
        themselves connected and may have sent calls. A graceful close
        answers those calls (see Server.close), then closes them; await
        `making` to know their protocols exist."""
        if self.closed:
            return
        self.closed = True
        for sock in self.sockets:
            try:
                self.loop.remove_reader(sock.fileno())
            except (ValueError, OSError):
                pass
            while True:
                try:
                    conn, _ = sock.accept()
                except OSError:
                    break                           # the queue is empty (or the socket gone)
                self._serve(conn)
            sock.close()
