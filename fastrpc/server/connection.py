"""The server's connections: what every one shares, and fastrpc's own protocol.

Owns: the set of a server's open connections and its part in closing
(ConnectionSet); what every connection does whatever protocol it speaks,
the calls it runs, backpressure, batched output and closing
(ServedConnection); and the connection speaking fastrpc's protocol, with its
authentication handshake (FastConnection). Go's protocols have theirs in
fastrpc.go.server. Connections reach the server only through its public
parts: loop, dispatcher, connections and settings.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import select
import time
from typing import Any, Callable, Dict, Iterator, Optional, Protocol, Set

from fastrpc._core import codec
from fastrpc._core.buffer import output_size
from fastrpc._core import frame as wire
from fastrpc._core.servercore import Handler, ServerCore, format_traceback
from fastrpc.server.accept import RateLimitedLog
from fastrpc.server.memory import TRIM_AFTER, trim_memory_soon
from fastrpc.server.streams import ServerStream
from fastrpc.errors import DeadlineExceeded, RemoteError, RPCError, error_message, error_type_name
from fastrpc.net.auth import ServerHandshake, rejection
from fastrpc.net.loop import feed_buffered

__all__ = ["ConnectionSet", "FastConnection", "Host", "ServedConnection", "LINGER", "REFUSED_LINGER"]

log = logging.getLogger("fastrpc.server")

# Graceful close: a connection with no call running that received nothing
# for this long after GOAWAY is closed by the server.
LINGER = 1.0
# A connection over max_connections is answered "Unavailable" this long, then closed.
REFUSED_LINGER = 5.0
# The encoded hello (settings map) per max_frame_size.
HELLO_CACHE: Dict[int, bytes] = {}
# How often a connection whose reading is paused is checked for its peer leaving.
PEER_CHECK = 0.05
# The largest frame read from a peer that skipped the authentication
# handshake (only to answer it "Unauthenticated").
UNAUTHENTICATED_FRAME = 64 * 1024


def write_output(transport: Any, data: Any, connections: "ConnectionSet") -> None:
    """Write what a core's take_output() returned: a buffer, or a list of
    them (large bytes payloads sent from their own memory, in one writev)."""
    if type(data) is list:
        connections.bytes_sent += output_size(data)
        transport.writelines(data)
    else:
        connections.bytes_sent += len(data)
        transport.write(data)


def _peer_gone(transport: Any) -> bool:
    """The peer of `transport` closed its side or reset the connection (Linux:
    POLLRDHUP; elsewhere only a reset or hang-up is seen)."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN | _POLLRDHUP)
    try:
        events = poller.poll(0)
    except (OSError, ValueError):
        return True
    return any(ev & (select.POLLHUP | select.POLLERR | _POLLRDHUP) for _, ev in events)


_POLLRDHUP = getattr(select, "POLLRDHUP", 0)


class Host(Protocol):
    """What a connection uses of its server (fastrpc.Server is one)."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop serving the connections."""
    dispatcher: Any                         # fastrpc.server.dispatch.Dispatcher
    connections: "ConnectionSet"
    max_frame_size: int
    max_depth: int
    max_len: int
    max_bytes: int
    bytes_views: bool
    max_inflight: int
    max_connections: int
    idle_timeout: Optional[float]
    report_load: bool
    authorize: Any
    auth_secret: Optional[bytes]
    handshake_timeout: float
    send_tracebacks: bool
    default: Optional[Callable[[Any], Any]]
    ext_hook: Optional[Callable[[int, bytes], Any]]
    keep_tuples: bool
    stream_window: tuple[int, int]


class ConnectionSet:
    """A server's open connections, and whether it is closing."""

    def __init__(self) -> None:
        self._open: Set[Any] = set()
        self.closing = False                     # close() began: no new calls, GOAWAY to all
        self.idle_waiter: Optional[asyncio.Future[Any]] = None   # close() waits on it for calls to end
        self.refusals = RateLimitedLog()
        self.refusing: Set[Any] = set()          # connections over max_connections, until they close
        self.peak = 0                            # most connections at a time since memory was last trimmed
        self.accepted = 0                        # connections opened since the server started
        self.bytes_received = 0                  # by every connection, whatever its protocol
        self.bytes_sent = 0

    def add(self, conn: Any) -> None:
        """A connection opened."""
        self._open.add(conn)
        self.accepted += 1
        self.peak = max(self.peak, len(self._open) + len(self.refusing))

    def discard(self, conn: Any) -> None:
        """A connection closed."""
        self._open.discard(conn)
        self.refusing.discard(conn)
        if self.peak >= TRIM_AFTER and len(self._open) + len(self.refusing) <= self.peak // 4:
            # Most of a crowd has gone: give the memory it used back to the
            # system (the allocator would keep it for the next crowd).
            self.peak = len(self._open) + len(self.refusing)
            trim_memory_soon()

    def refused(self, conn: Any, reason: str) -> None:
        """`conn` is over max_connections: it is refused (logged, rate-limited) until it closes."""
        self.refusing.add(conn)
        self.peak = max(self.peak, len(self._open) + len(self.refusing))
        self.refusals.warning("refusing calls from %s: %s", conn.peer, reason)

    def idle(self, conn: Any) -> None:
        """A connection has no call running any more (close() may be waiting for that)."""
        waiter = self.idle_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def __len__(self) -> int:
        return len(self._open)

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._open))

    def __bool__(self) -> bool:
        return bool(self._open)


class ServedConnection:
    """Base of the server's connection protocols.

    Subclasses give _take_output() (the replies encoded so far) and may
    override _hold() (told when reading pauses or resumes) and goaway().
    """

    def __init__(self, server: Host) -> None:
        self.server = server                          # its public parts: loop, dispatcher, connections, settings
        # Set by connection_made; None only before it.
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.tasks: Dict[Any, asyncio.Future[Any]] = {}     # calls running as tasks or in the pool
        self.closing = False
        self.peer = None
        self.last_read = 0.0        # loop time of the last bytes received (graceful close, idle)
        self.idle_goaway_at: Optional[float] = None   # when GOAWAY was sent for idleness
        self.flush_scheduled = False
        # Backpressure: reading pauses while too many calls run or the peer
        # does not read its replies; each reason is held separately.
        self.over_limit = False
        self.write_blocked = False
        self.reading_paused = False
        self.writable_waiters: list[asyncio.Future[Any]] = []   # streams waiting for the transport to drain
        self.open_streams = 0       # of the tasks, the streams (they do not pause reading)

    # hooks ----------------------------------------------------------------
    def _take_output(self) -> Optional[bytes]:
        raise NotImplementedError

    def _hold(self, paused: bool) -> None:
        """Reading pauses (True) or resumes (False); called before the transport is told."""

    def goaway(self, reason: str) -> None:
        """Tell the client to send new calls elsewhere (where the protocol can)."""

    # calls ------------------------------------------------------------------
    def _start_task(self, key: Any, fut: asyncio.Future[Any], on_done: Callable[[asyncio.Future[Any]], None],
                    stream: bool = False) -> None:
        """Track a call now running as `fut`; past max_inflight calls, stop reading.

        A `stream` is tracked (cancelled with the connection) but does not
        count towards that limit: while reading pauses, its own frames
        (credit, items, END) could not arrive, and it would never end.
        Streams have a limit of their own (see FastConnection.open_stream)."""
        self.tasks[key] = fut
        self.server.dispatcher.load.value += 1
        if stream:
            self.open_streams += 1
        fut.add_done_callback(on_done)
        if len(self.tasks) - self.open_streams >= self.server.max_inflight and not self.over_limit:
            # Calls already read from the buffer still start; no more are read.
            self.over_limit = True
            self._update_reading()

    def _end_task(self, key: Any, fut: asyncio.Future[Any], stream: bool = False) -> bool:
        """Forget a finished call; return whether it was still tracked under `key`."""
        tracked = self.tasks.get(key) is fut
        if tracked:
            del self.tasks[key]
        self.server.dispatcher.load.value -= 1
        if stream:
            self.open_streams -= 1
        return tracked

    def _calls_eased(self) -> None:
        """After a call's reply: resume reading at half the limit, report idleness."""
        if self.over_limit and len(self.tasks) - self.open_streams <= self.server.max_inflight // 2:
            self.over_limit = False         # resume at half, not at every completion
            self._update_reading()
        if not self.tasks:
            self.server.connections.idle(self)

    # backpressure -------------------------------------------------------------
    def pause_writing(self) -> None:
        # The peer is not reading its replies: stop reading its requests, so
        # replies cannot pile up in memory without bound.
        self.write_blocked = True
        self._update_reading()

    def resume_writing(self) -> None:
        self.write_blocked = False
        self._update_reading()
        self._wake_writers()

    def _wake_writers(self) -> None:
        waiters, self.writable_waiters = self.writable_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def writable(self) -> None:
        """Return once the transport takes more output (a stream waits here
        while the peer does not read)."""
        if self.write_blocked and not self.closing:
            waiter = self.server.loop.create_future()
            self.writable_waiters.append(waiter)
            await waiter

    def _update_reading(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        paused = self.over_limit or self.write_blocked
        if paused == self.reading_paused:
            return
        self.reading_paused = paused
        self._hold(paused)
        if paused:
            transport.pause_reading()
            self._watch_peer()
        elif not self.reading_paused and not transport.is_closing():   # _hold may pause again
            transport.resume_reading()

    def _watch_peer(self) -> None:
        """While reading is paused, asyncio would not notice the peer leave:
        look at the socket every PEER_CHECK for a close or a reset (without
        reading what it sent) and drop the connection, cancelling its calls."""
        if not self.reading_paused or self.closing or self.transport is None:
            return
        if _peer_gone(self.transport):
            log.info("%s went away while its calls ran; cancelling them", self.peer)
            self.transport.abort()
            return
        self.server.loop.call_later(PEER_CHECK, self._watch_peer)

    # output -------------------------------------------------------------------
    def _schedule_flush(self) -> None:
        # Replies completed in one loop pass go out in one write.
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.server.loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write the replies encoded so far."""
        self.flush_scheduled = False
        if not self.closing:
            self._write(self._take_output())

    def _write(self, data: Any) -> None:
        if data and self.transport is not None and not self.transport.is_closing():
            write_output(self.transport, data, self.server.connections)

    #: Whether the calls still running stop when the peer hangs up. fastrpc's
    #: own protocol: yes (nobody is left to receive their replies, and its
    #: clients hang up on purpose to cancel). Go's protocols say no (see
    #: GoConnection).
    cancel_on_hangup = True

    # closing ------------------------------------------------------------------
    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.closing = True
        self._wake_writers()
        self.server.connections.discard(self)
        if self.cancel_on_hangup:
            for task in list(self.tasks.values()):
                task.cancel()
        self.server.connections.idle(self)


class FastConnection(ServedConnection, asyncio.BufferedProtocol):
    """One connection speaking fastrpc's own protocol: feeds the ServerCore
    (frames in, inline handlers, replies out) and runs the other handlers
    through the server's dispatcher."""

    def __init__(self, server: Host) -> None:
        super().__init__(server)
        # Set by connection_made; None before it and once closed (nothing uses it then).
        self.core: ServerCore = None  # type: ignore[assignment]
        # Authentication (Server(auth_secret=...)): until it succeeds, bytes
        # go to the handshake, never to the core, so no handler can run.
        self.handshake: ServerHandshake = None  # type: ignore[assignment]  # set while authenticating
        self.handshake_buf: Optional[bytearray] = None
        self.handshake_timer: Optional[asyncio.TimerHandle] = None
        self.refused_timer: Optional[asyncio.TimerHandle] = None   # closes a refused connection
        self.unauthenticated: wire.FrameReader = None  # type: ignore[assignment]  # set once refused
        self.streams: Dict[int, ServerStream] = {}         # streams open on this connection, by seq

    # asyncio protocol -------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.peer = transport.get_extra_info("peername")
        s = self.server
        self.last_read = s.loop.time()
        refused = len(s.connections) >= s.max_connections and not s.connections.closing
        if refused and s.auth_secret is not None:
            # Over the limit, and the client reads the handshake first.
            reason = f"too many connections (max_connections={s.max_connections})"
            s.connections.refused(self, reason)
            transport.write(rejection(f"Unavailable: {reason}"))
            transport.close()
            return
        self.core = ServerCore(
            s.dispatcher.handlers, s.dispatcher.services, self,
            # A refused connection reads frames only to answer them.
            max_frame_size=min(s.max_frame_size, UNAUTHENTICATED_FRAME) if refused else s.max_frame_size,
            max_depth=s.max_depth, max_len=s.max_len, max_bytes=s.max_bytes, bytes_views=s.bytes_views,
            default=s.default, ext_hook=s.ext_hook, keep_tuples=s.keep_tuples, vectored=True)
        if s.report_load:
            self.core.load = s.dispatcher.load
        self.core.authorize = s.authorize
        self.core.send_tracebacks = s.send_tracebacks
        if refused:
            # Every call gets a clear "Unavailable" (nothing runs, so clients
            # may send it elsewhere), then the connection goes.
            reason = f"too many connections (max_connections={s.max_connections})"
            s.connections.refused(self, reason)
            self.core.refuse = reason
            self.goaway(reason)
            self.refused_timer = s.loop.call_later(REFUSED_LINGER, transport.close)
            return
        if s.auth_secret is not None:
            self.handshake = ServerHandshake(s.auth_secret)
            self.handshake_buf = bytearray(4096)
            self.handshake_timer = s.loop.call_later(s.handshake_timeout, self._handshake_expired)
        else:
            self._hello()
        s.connections.add(self)
        if s.connections.closing:
            self.goaway("server is shutting down")

    def get_buffer(self, sizehint: int) -> Any:
        if self.handshake_buf is not None:
            return self.handshake_buf
        return self.core.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        if self.handshake_buf is not None:
            self._authenticate(bytes(self.handshake_buf[:nbytes]))
            return
        self._process(nbytes)
        server = self.server
        server.connections.bytes_received += nbytes
        if (server.idle_timeout is not None or server.connections.closing) \
                and self.core is not None and self.core.buffered == 0:
            # Activity is whole frames: a peer trickling out a frame that
            # never ends is as idle as a silent one (idle_timeout applies).
            self.last_read = server.loop.time()

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
        if state == "done":
            self._end_handshake()
            rest = self.handshake.rest
            self.handshake = None
            self._hello()
            feed_buffered(self, self.transport, rest)       # calls sent right after the proof
        elif state == "failed":
            self._end_handshake()
            log.warning("closing connection from %s: %s", self.peer, self.handshake.reason)
            self.transport.close()
        else:
            # A client speaking fastrpc without authenticating: tell it why
            # once its first frame is whole. The handshake's timer still runs:
            # a peer that never completes that frame is closed at it, and its
            # frame may not be larger than an unauthenticated peer deserves.
            self.unauthenticated = wire.FrameReader(min(self.server.max_frame_size, UNAUTHENTICATED_FRAME))
            self._answer_unauthenticated(self.handshake.buf)

    def _hello(self) -> None:
        """Tell the client our settings as it starts calling: the largest frame
        we accept, so that a call too large fails alone at the client, and
        that we bind keyword arguments."""
        self.core.hello(HELLO_CACHE.get(self.server.max_frame_size)
                        or HELLO_CACHE.setdefault(self.server.max_frame_size, codec.packb(
                            {"max_frame_size": self.server.max_frame_size, "kwargs": True})))
        self.flush()

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
            write_output(self.transport, out, self.server.connections)

    def eof_received(self) -> Optional[bool]:
        return False  # close our side too; replies already written still go out

    def _hold(self, paused: bool) -> None:
        self.core.hold = paused
        if not paused:
            self._process(0)                # frames held back in the buffer go first

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        # Pending timers would keep this connection (and its buffers) alive.
        for timer in (self.handshake_timer, self.refused_timer):
            if timer is not None:
                timer.cancel()
        self.handshake_timer = self.refused_timer = None
        super().connection_lost(exc)
        # The core refers back to this connection: break the cycle now, so
        # both go as soon as the transport lets go of us (not at the next
        # garbage collection).
        self.core = None  # type: ignore[assignment]
        self.handshake = self.unauthenticated = None  # type: ignore[assignment]

    # called by ServerCore ---------------------------------------------
    def spawn(self, handler: Handler, seq: int, args: tuple[Any, ...], notify: bool,
              deadline_ms: Optional[int], meta: Any, kwargs: Optional[dict[Any, Any]] = None) -> None:
        """Run a handler that does not run inline (see Dispatcher.start)."""
        started = time.monotonic()
        deadline = None if deadline_ms is None else started + deadline_ms / 1000.0
        try:
            fut = self.server.dispatcher.start(self.server.loop, handler, args, deadline, meta, kwargs, self.peer)
        except Exception as exc:
            self.server.dispatcher.finished(handler, started, exc)
            self._done(seq, handler.name, notify, None, exc)
            return
        self._track(seq, handler, notify, fut, deadline, started)

    def spawn_awaitable(self, handler: Handler, seq: int, awaitable: Any, notify: bool) -> None:
        """A plain handler returned an awaitable: await it as a task."""
        self._track(seq, handler, notify, self.server.dispatcher.start_awaitable(self.server.loop, awaitable),
                    None, time.monotonic())

    def _track(self, seq: int, handler: Handler, notify: bool, fut: asyncio.Future[Any], deadline: Optional[float],
               started: float) -> None:
        self._start_task(seq, fut, functools.partial(self._finished, seq, handler, notify, deadline, started))

    def _finished(self, seq: int, handler: Handler, notify: bool, deadline: Optional[float], started: float,
                  fut: asyncio.Future[Any]) -> None:
        self._end_task(seq, fut)
        dispatcher = self.server.dispatcher
        result, exc = dispatcher.outcome(handler.name, deadline, fut)
        dispatcher.finished(handler, started, exc)
        self._done(seq, handler.name, notify, result, exc)
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
            self.core.reply_error(seq, error_type_name(exc), error_message(exc),
                                  format_traceback(exc) if self.server.send_tracebacks else None)
            self.log_handler_error(name, exc)
        self._schedule_flush()

    # streams -------------------------------------------------------------
    def open_stream(self, handler: Handler, seq: int, args: tuple[Any, ...], kwargs: Optional[dict[Any, Any]],
                    deadline_ms: Optional[int], meta: Any) -> None:
        """A client opened a stream on a streaming method: run it (see fastrpc.server.streams)."""
        if len(self.streams) >= self.server.max_inflight:
            handler.record(0.0, "TooManyStreams")
            self.core.reply_error(seq, "TooManyStreams", f"{handler.name}: {len(self.streams)} streams are open "
                                  f"on this connection, the server's max_inflight")
            self._schedule_flush()
            return
        started = time.monotonic()
        deadline = None if deadline_ms is None else started + deadline_ms / 1000.0
        stream = ServerStream(self, handler, seq, self.server.stream_window)
        self.streams[seq] = stream
        fut = self.server.dispatcher.start_stream(self.server.loop, handler.name, stream.run(args, kwargs),
                                                  deadline, meta, self.peer)
        self._start_task(seq, fut, functools.partial(self._stream_finished, stream, deadline, started), stream=True)

    def _stream_finished(self, stream: ServerStream, deadline: Optional[float], started: float,
                         fut: asyncio.Future[Any]) -> None:
        seq = stream.seq
        self._end_task(seq, fut, stream=True)
        if self.streams.get(seq) is stream:
            del self.streams[seq]
        stream.ended()
        dispatcher = self.server.dispatcher
        result, exc = dispatcher.outcome(stream.handler.name, deadline, fut)
        if stream.failure is not None:
            exc = RemoteError(*stream.failure)
        dispatcher.finished(stream.handler, started, exc)
        self._done(seq, stream.handler.name, False, result, exc)
        self._calls_eased()

    def stream_item(self, seq: int, value: Any, nbytes: int) -> None:
        """An ITEM of a client stream (dropped once the stream ended)."""
        stream = self.streams.get(seq)
        if stream is not None:
            stream.on_item(value, nbytes)

    def stream_end(self, seq: int) -> None:
        """The client sends no more items on stream `seq`."""
        stream = self.streams.get(seq)
        if stream is not None:
            stream.on_end()

    def stream_credit(self, seq: int, items: int, nbytes: int) -> None:
        """The client takes `items` more items and `nbytes` more bytes on stream `seq`."""
        stream = self.streams.get(seq)
        if stream is not None:
            stream.on_credit(items, nbytes)

    def stream_failed(self, seq: int, type_name: str, message: str) -> None:
        """A frame of stream `seq` was malformed: end the stream with that error."""
        stream = self.streams.get(seq)
        if stream is not None:
            stream.fail(type_name, message)

    def cancel(self, seq: int) -> None:
        """The client withdrew call `seq`: cancel its handler."""
        task = self.tasks.get(seq)
        if task is not None:
            task.cancel()

    def on_goaway(self) -> None:
        """The client sends nothing new; replies still go out."""

    def on_pong(self, seq: int) -> None:
        """A PONG arrived (the server sends no PINGs of its own yet)."""

    def log_notify_error(self, name: str, exc: BaseException) -> None:
        """A notification failed: nobody gets a reply, so it is logged."""
        self.server.dispatcher.log_failure(name, exc, True)

    def log_handler_error(self, name: str, exc: BaseException) -> None:
        """A call's handler raised (the caller got the error): logged too."""
        self.server.dispatcher.log_failure(name, exc, False)

    # output -------------------------------------------------------------
    def _take_output(self) -> Optional[bytes]:
        out: Optional[bytes] = self.core.take_output()
        return out

    def goaway(self, reason: str) -> None:
        """Tell the client to send new calls elsewhere."""
        if not self.closing and self.core is not None:
            self.core.goaway(reason)
            self.flush()
