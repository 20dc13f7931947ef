"""Client: the blocking, thread-safe, pipelined client.

Many threads share one connection; calls are matched to replies by sequence
id. There is no reader thread in the common path: a thread that waits for a
reply reads the socket itself and completes every call whose reply it sees
(leader/follower), which avoids a thread hand-off per call. A helper thread
steps in only for futures that nobody waits on.
"""
from __future__ import annotations

import concurrent.futures
import heapq
import select
import socket
import ssl
import threading
import time
import weakref
from typing import Any, Iterable, List, Optional

from fastrpc._core import frame as wire
from fastrpc._core.calltable import Batch, Slot
from fastrpc.net.settings import ClientSettings
from fastrpc.context import bound_timeout
from fastrpc.errors import (ConnectError, ConnectionClosedError, ConnectionLostError, RPCError,
                            TimeoutError)

__all__ = ["Client", "CallFuture"]

# Buffered go() frames are written once this many accumulate (or on a wait):
# writing every call separately costs a syscall each.
FLUSH_FRAMES = 32
FLUSH_BYTES = 64 * 1024
HELPER_TICK = 0.002
# A connection with nothing received for this long is checked for a GOAWAY or
# a close before it carries a new call.
IDLE_CHECK = 0.5
_PENDING = concurrent.futures._base.PENDING


class SharedConditionFuture(concurrent.futures.Future):
    """A concurrent.futures.Future that uses a Condition shared with others.

    The base initializer builds a Condition (and its lock) per future, a
    large share of a pipelined call's cost. Futures that share one
    Condition stay correct: waiters re-check their own state on wake-up,
    and cf.wait() and as_completed() take the (reentrant) lock as usual.
    """

    def __init__(self, condition: threading.Condition) -> None:
        self._condition = condition
        self._state = _PENDING
        self._result = None
        self._exception = None
        self._waiters = []
        self._done_callbacks = []


class CallFuture(SharedConditionFuture):
    """The result of Client.go(): a concurrent.futures.Future.

    ``result()`` drives the connection itself when nobody else is reading;
    ``cancel()`` withdraws the call and tells the server to cancel it.
    """

    def __init__(self, conn: "_Conn", method: str) -> None:
        super().__init__(conn.future_condition)     # one Condition per connection
        self._conn = conn
        self._seq = 0
        self._deadline: Optional[float] = None
        self._method = method

    def result(self, timeout: Optional[float] = None) -> Any:
        self._drive(timeout)
        return super().result(0)

    def exception(self, timeout: Optional[float] = None):
        self._drive(timeout)
        return super().exception(0)

    def _drive(self, timeout: Optional[float]) -> None:
        """Read replies until done; expire the call at its own deadline."""
        if self.done():
            return
        self._conn.wait(self.done, self._limit(timeout))
        if not self.done() and self._deadline is not None and time.monotonic() >= self._deadline:
            self._expire()
        if not self.done():
            raise TimeoutError(f"{self._method} did not complete within {timeout}s")

    def _expire(self) -> None:
        """The call's timeout passed: withdraw it and fail with TimeoutError."""
        self._conn.withdraw(self._seq)
        try:
            self.set_exception(TimeoutError(f"{self._method} did not complete in time"))
        except concurrent.futures.InvalidStateError:
            pass   # completed or cancelled meanwhile

    def _limit(self, timeout: Optional[float]) -> Optional[float]:
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._deadline is not None and (deadline is None or self._deadline < deadline):
            deadline = self._deadline
        return deadline

    def cancel(self) -> bool:
        if not super().cancel():
            return False
        self._conn.withdraw(self._seq)
        return True


class _Conn:
    """One connection: socket, call table, and the locks that share them."""

    def __init__(self, client: "Client") -> None:
        self.client = client
        self.address = client.address
        self.sock = client.open_socket()
        # TLS may hold decrypted bytes that poll() cannot see
        self.tls = isinstance(self.sock, ssl.SSLSocket)
        self.table = client.new_call_table()
        self.table.on_control = self._on_control
        self.poller = select.poll()
        self.poller.register(self.sock, select.POLLIN)
        self.send_lock = threading.Lock()     # encoding into table.out and writing
        self.io_lock = threading.Lock()       # reading: held by the current leader
        self.cond = threading.Condition(threading.Lock())  # followers wait here
        self.waiters = 0
        self.progress = 0                     # read batches processed (helper watches it)
        self.error: Optional[BaseException] = None
        self.draining = False                 # GOAWAY received: no new calls here
        self.last_io = time.monotonic()       # last bytes received (idle check)
        self.deadlines: list = []             # heap of (deadline, seq, future) for go(timeout=)
        self.future_condition = threading.Condition(threading.RLock())  # shared by CallFutures
        self.ping_sent: Optional[float] = None  # when an unanswered heartbeat PING went out

    # sending ------------------------------------------------------------
    def submit(self, method: str, args: tuple, slot, deadline_ms, flush: bool, meta=None) -> int:
        with self.send_lock:
            if self.error is not None:
                raise ConnectionClosedError(f"connection to {self.address} is closed: {self.error}")
            seq = self.table.request(method, args, slot, deadline_ms, meta)
            if flush or self.table.out_frames >= FLUSH_FRAMES or self.table.out_bytes >= FLUSH_BYTES:
                self._flush_locked()
        return seq

    def _flush_locked(self) -> None:
        out = self.table.out
        if len(out) == 0:
            return
        try:
            with memoryview(out) as view:
                self.sock.sendall(view)
        except OSError as exc:
            self.table.clear_output()
            self.fail(ConnectionLostError(f"sending to {self.address} failed: {exc}"))
            return
        self.table.clear_output()

    def flush(self, blocking: bool = False) -> None:
        """Write buffered frames; without `blocking`, skip if another thread is writing."""
        if len(self.table.out) and self.send_lock.acquire(blocking):
            try:
                self._flush_locked()
            finally:
                self.send_lock.release()

    def withdraw(self, seq: int) -> None:
        """Forget a call (timed out or cancelled) and ask the server to cancel it."""
        if self.table.forget(seq) is not None and self.error is None:
            with self.send_lock:
                self.table.control(wire.CANCEL, seq)
                self._flush_locked()

    # reading --------------------------------------------------------------
    def wait(self, is_done, deadline: Optional[float]) -> None:
        """Return when is_done() is true or `deadline` (monotonic) passes."""
        self.flush()
        while not is_done():
            if self.io_lock.acquire(False):
                try:
                    self._lead(is_done, deadline)
                finally:
                    self.io_lock.release()
                    if self.waiters:
                        with self.cond:
                            self.cond.notify_all()
            else:
                with self.cond:
                    self.waiters += 1
                    try:
                        # Re-check after registering: a leader that completed
                        # our call before seeing waiters > 0 did not notify.
                        if not is_done() and self.io_lock.locked():
                            self.cond.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
                    finally:
                        self.waiters -= 1
            if deadline is not None and time.monotonic() >= deadline:
                return

    def _lead(self, is_done, deadline: Optional[float]) -> None:
        while not is_done():
            if self.error is not None:
                # A call registered just after fail() emptied the table would
                # wait forever: fail what is still pending now.
                self.table.fail_all(self.error)
                return
            if deadline is None:
                self.read(None)
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self.read(remaining)
            if self.waiters:
                with self.cond:
                    self.cond.notify_all()

    def read(self, timeout: Optional[float]) -> bool:
        """Receive once (caller holds io_lock) and complete what arrived."""
        if timeout is not None and not self._readable(max(1, int(timeout * 1000 + 0.999))):
            return False
        try:
            view = self.table.get_buffer()
            n = self.sock.recv_into(view)
            del view
        except OSError as exc:
            self.fail(ConnectionLostError(f"connection to {self.address} lost: {exc}"))
            return False
        if n == 0:
            self.fail(ConnectionLostError(f"connection to {self.address} closed by the server"))
            return False
        try:
            self.table.process(n)
        except RPCError as exc:
            self.fail(ConnectionLostError(f"protocol error from {self.address}: {exc}"))
            return False
        self.progress += 1
        self.last_io = time.monotonic()
        return True

    def _readable(self, timeout_ms: int) -> bool:
        """Bytes can be read now, or within `timeout_ms`."""
        return (self.tls and self.sock.pending() > 0) or bool(self.poller.poll(timeout_ms))

    def check_idle(self) -> None:
        """Before reusing a connection nobody has read for a while, take in
        what the server sent meanwhile (a GOAWAY, or the close of an idle
        connection), so the next call does not go to a connection that is gone."""
        if self.io_lock.acquire(False):
            try:
                if self.error is None and self._readable(0):
                    self.read(None)
            finally:
                self.io_lock.release()
            self.last_io = time.monotonic()

    def _on_control(self, kind: int, seq: int, payload: bytes) -> None:
        if kind == wire.GOAWAY:
            self.draining = True
        elif kind == wire.PING:
            # The reader is not the only writer of table.out: take the send lock.
            with self.send_lock:
                self.table.control(wire.PONG, seq, payload)
                self._flush_locked()

    # failure ----------------------------------------------------------------
    def fail(self, exc: BaseException) -> None:
        """The connection is gone: fail every pending call at once."""
        if self.error is None:
            self.error = exc
            try:
                # shutdown() first: it wakes a thread blocked in poll() or
                # recv() on this socket, which close() alone does not.
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                self.sock.close()
            except OSError:
                pass
        # The first error is the reason; a reader woken by the shutdown above
        # reports a mere "closed", which must not replace it.
        self.table.fail_all(self.error)
        with self.cond:
            self.cond.notify_all()

    def close(self) -> None:
        self.fail(ConnectionClosedError(f"client closed the connection to {self.address}"))

    @property
    def usable(self) -> bool:
        return self.error is None and not self.draining


class Client(ClientSettings):
    """A blocking RPC client for one server, safe to share between threads.

    ``call("Service.Method", *args)`` returns the result or raises
    RemoteError / TimeoutError / ConnectionError; ``go(...)`` returns a
    concurrent.futures.Future; ``map(...)`` pipelines many calls of one
    method; ``notify(...)`` sends without waiting for a reply. Calls from all
    threads are pipelined on one connection. A lost connection fails every
    pending call at once; the next call dials again.

    ``Client(address, codec="gob")`` or ``codec="jsonrpc"`` (and
    ``http=True`` for Go's rpc.DialHTTP) returns a fastrpc.GoClient that
    calls stock Go net/rpc servers instead.
    """

    def __new__(cls, address: str, *, codec: str = "fastrpc", http: bool = False, **settings: Any):
        if codec != "fastrpc" or http:
            from fastrpc.go.client import GoClient
            return GoClient(address, codec="gob" if codec == "fastrpc" else codec, http=http, **settings)
        return super().__new__(cls)

    def __init__(self, address: str, *, codec: str = "fastrpc", http: bool = False, **settings: Any) -> None:
        """Connect to `address`. Keyword settings (see ClientSettings):
        timeout, connect_timeout, max_frame_size, max_depth, max_len,
        max_bytes, send_deadline, ssl (an ssl.SSLContext), server_hostname,
        auth_secret, metadata, heartbeat, heartbeat_timeout, reconnect_backoff."""
        super().__init__(address, **settings)
        self._closed = False
        self._conn_lock = threading.Lock()
        self._old: List[_Conn] = []          # draining connections with calls still pending
        self._helper: Optional[threading.Thread] = None
        self._helper_wake = threading.Event()
        self._conn = _Conn(self)              # dial now, like net/rpc's Dial
        if self.heartbeat is not None:
            self._wake_helper()               # the helper sends the heartbeats

    # connection management --------------------------------------------------
    def _connection(self) -> _Conn:
        conn = self._conn
        if conn.usable and not conn.table.pending and time.monotonic() - conn.last_io > IDLE_CHECK:
            conn.check_idle()
        if conn.usable:
            return conn
        retired = False
        with self._conn_lock:
            if self._closed:
                raise ConnectionClosedError("client is closed")
            conn = self._conn
            if not conn.usable:
                self.check_backoff()
                try:
                    new = _Conn(self)
                except ConnectError as exc:
                    self.dial_failed(exc)
                    raise
                self.dial_succeeded()
                if conn.error is None:        # GOAWAY: finish its calls, then close it
                    if conn.table.pending:
                        self._old.append(conn)
                        retired = True
                    else:
                        conn.close()
                self._conn = conn = new
        if retired:
            self._wake_helper()               # takes _conn_lock itself: call it outside
        return conn

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
        return self._conn.table.last_load

    # calls --------------------------------------------------------------------
    def call(self, method: str, *args: Any, timeout: Optional[float] = None) -> Any:
        """Call `method` with `args` and return its result.

        Raises RemoteError (the handler raised or the method does not
        exist), TimeoutError (no reply within `timeout`, default the
        client's), ConnectionError (the connection failed).
        """
        timeout = bound_timeout(timeout, self.timeout)
        conn = self._connection()
        slot = Slot()
        seq = conn.submit(method, args, slot, self.deadline_ms(timeout), True, self.call_metadata())
        if not slot.done:
            deadline = None if timeout is None else time.monotonic() + timeout
            conn.wait(lambda: slot.done, deadline)
            if not slot.done:
                conn.withdraw(seq)
                if not slot.done:
                    raise TimeoutError(f"{method} did not complete within {timeout}s")
        if slot.error is not None:
            _raise(slot.error)
        return slot.value

    def go(self, method: str, *args: Any, timeout: Optional[float] = None) -> CallFuture:
        """Start a call and return a concurrent.futures.Future for its result.

        Like net/rpc's Go. Frames are written in batches; waiting on the
        future (result(), exception()) sends at once.
        """
        timeout = bound_timeout(timeout, self.timeout)
        conn = self._connection()
        fut = CallFuture(conn, method)
        fut._seq = conn.submit(method, args, fut, self.deadline_ms(timeout), False, self.call_metadata())
        if timeout is not None:
            fut._deadline = time.monotonic() + timeout
            with conn.cond:
                heap = conn.deadlines
                heapq.heappush(heap, (fut._deadline, fut._seq, fut))
                if len(heap) > 2 * len(conn.table.pending) + 1024:
                    # Entries stay until their deadline, holding finished
                    # futures and their results: at high rates and long
                    # timeouts that is a lot of memory. Drop the finished
                    # ones once they are most of the heap (amortised O(1)).
                    heap[:] = [entry for entry in heap if not entry[2].done()]
                    heapq.heapify(heap)
        self._wake_helper()
        return fut

    def notify(self, method: str, *args: Any) -> None:
        """Send a one-way call: no reply, no error report."""
        self._connection().submit(method, args, None, None, True, self.call_metadata())

    def map(self, method: str, args_iterable: Iterable, *, timeout: Optional[float] = None,
            return_exceptions: bool = False, window: int = 1024) -> List[Any]:
        """Call `method` once per item of `args_iterable`, pipelined; return the results in order.

        An item that is a tuple is the argument list, anything else the
        single argument. At most `window` calls are in flight. Every call
        completes before this returns; the first error is then raised,
        unless `return_exceptions` puts exceptions in the result list.
        """
        items = args_iterable if isinstance(args_iterable, (list, tuple)) else list(args_iterable)
        n = len(items)
        if n == 0:
            return []
        timeout = bound_timeout(timeout, self.timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        batch = Batch(n, return_exceptions)
        conn = self._connection()
        meta = self.call_metadata()
        source = iter(items)
        window = max(1, window)
        step = max(1, window // 2)

        def in_flight() -> int:
            return batch.issued - (n - batch.remaining)

        def can_continue() -> bool:
            return batch.remaining == 0 or (batch.issued < n and in_flight() <= window - step)

        while not batch.done:
            if batch.issued < n and in_flight() < window:
                with conn.send_lock:
                    if conn.error is None:
                        conn.table.request_batch(method, batch, source, window - in_flight(), meta)
                        conn._flush_locked()
            if conn.error is not None:
                batch.fail_unsent(conn.error)   # sent ones were failed by fail_all
                break
            conn.wait(can_continue, deadline)
            if deadline is not None and not batch.done and time.monotonic() >= deadline:
                for seq in range(batch.first_seq, batch.first_seq + batch.issued):
                    conn.withdraw(seq)
                raise TimeoutError(f"map({method}) did not complete within {timeout}s")
        if batch.first_error is not None and not return_exceptions:
            _raise(batch.first_error)
        return batch.results

    def ping(self, timeout: Optional[float] = 5.0) -> float:
        """Round-trip a PING frame; return the round-trip time in seconds."""
        conn = self._connection()
        slot = Slot()
        start = time.perf_counter()
        with conn.send_lock:
            seq = conn.table.ping(slot)
            conn._flush_locked()
        conn.wait(lambda: slot.done, None if timeout is None else time.monotonic() + timeout)
        if not slot.done:
            conn.table.forget(seq)
            raise TimeoutError(f"ping to {self.address} timed out after {timeout}s")
        if slot.error is not None:
            _raise(slot.error)
        return time.perf_counter() - start

    # helper thread: completes futures nobody waits on ------------------------
    def _wake_helper(self) -> None:
        if self._helper is None:
            with self._conn_lock:
                if self._helper is None and not self._closed:
                    # The thread holds only a weak reference, so a client the
                    # program forgot to close can still be collected.
                    self._helper = threading.Thread(
                        target=_helper_loop, args=(weakref.ref(self), self._helper_wake),
                        name="fastrpc-client", daemon=True)
                    self._helper.start()
        if not self._helper_wake.is_set():
            self._helper_wake.set()

    def _tend_all(self) -> bool:
        """One helper pass over every connection; True while work remains."""
        busy = False
        for conn in [self._conn] + self._old:
            busy |= self._tend(conn)
        finished = []
        with self._conn_lock:             # _connection() appends concurrently
            still = []
            for conn in self._old:
                (still if conn.table.pending and conn.error is None else finished).append(conn)
            self._old = still
        for conn in finished:
            conn.close()                  # its calls are done: tell the server we left
        return busy or bool(still)

    def _tend(self, conn: _Conn) -> bool:
        """Expire timed-out futures; read if calls are pending and nobody reads."""
        now = time.monotonic()
        if conn.deadlines:
            with conn.cond:
                expired = []
                while conn.deadlines and conn.deadlines[0][0] <= now:
                    expired.append(heapq.heappop(conn.deadlines))
            for _, seq, fut in expired:
                if not fut.done():
                    fut._expire()
        if not conn.table.pending and not len(conn.table.out):
            if conn.deadlines:
                with conn.cond:
                    if not conn.table.pending:
                        conn.deadlines.clear()  # every future in it has finished
            return False
        seen = conn.progress
        conn.flush()
        if conn.io_lock.acquire(False):
            try:
                # Read only while nobody else wants to lead.
                while conn.table.pending and conn.error is None and not conn.waiters:
                    if not conn.read(HELPER_TICK) and conn.progress == seen:
                        break
                    seen = conn.progress
            finally:
                conn.io_lock.release()
                if conn.waiters:
                    with conn.cond:
                        conn.cond.notify_all()
        return bool(conn.table.pending)

    # heartbeats ---------------------------------------------------------------------
    def _heartbeat(self) -> bool:
        """PING the connection when it has been silent for `heartbeat`; declare it
        dead when nothing arrives within `heartbeat_timeout`. True while a PING waits."""
        conn = self._conn
        if conn.error is not None:
            return False
        now = time.monotonic()
        if conn.ping_sent is not None:
            if conn.last_io >= conn.ping_sent:
                conn.ping_sent = None           # anything received proves the peer alive
            elif now - conn.ping_sent >= self.heartbeat_timeout:
                conn.fail(self.heartbeat_lost())
                return False
            else:
                return True
        if now - conn.last_io < self.heartbeat:
            return False
        with conn.send_lock:
            if conn.error is not None:
                return False
            conn.table.ping(Slot())             # the PONG completes a slot nobody reads
            conn._flush_locked()
        conn.ping_sent = now
        return True

    # lifecycle ------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection; pending calls fail with ConnectionClosedError."""
        with self._conn_lock:             # no new connection can appear after this
            self._closed = True
            conns, self._old = [self._conn] + self._old, []
        for conn in conns:
            conn.close()
        self._helper_wake.set()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<fastrpc.Client {self.address}>"


def _helper_loop(client_ref, wake: threading.Event) -> None:
    """Complete futures nobody waits on, expire their timeouts, send heartbeats."""
    client = client_ref()
    period = 1.0 if client is None or client.heartbeat is None else min(1.0, client.heartbeat / 4)
    del client
    while True:
        woken = wake.wait(period)
        client = client_ref()
        if client is None or client._closed:
            return
        if woken:
            wake.clear()
        beating = client.heartbeat is not None and client._heartbeat()
        if not woken and not beating:
            del client
            continue
        while not client._closed and (client._tend_all() | beating):
            del client
            time.sleep(HELPER_TICK)
            client = client_ref()
            if client is None:
                return
            beating = client.heartbeat is not None and client._heartbeat()
        del client


def _raise(error: BaseException):
    # A transport error is shared by every call it failed; raise a fresh one
    # per caller so tracebacks do not pile up on one object.
    if isinstance(error, (ConnectionLostError, ConnectionClosedError)):
        raise type(error)(str(error)) from error
    raise error
