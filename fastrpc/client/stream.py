"""Streams on the client: Stream (blocking) and AsyncStream (asyncio).

Owns a stream call as its caller sees it: iterating the server's items,
sending the caller's (from an iterable, or with send() / done_writing()),
its final result, cancellation (cancel(), leaving a ``with`` block, or
dropping the stream), its timeout, flow control (credit given back as the
caller takes items, sends held while the server's credit is out), and
re-opening a stream elsewhere when a balancer may (a route decides).

The frames are the compiled call table's business (CallTable.open_stream,
send_item; a StreamSlot holds what arrived). A *route* opens the stream on
a connection and is told how it ended: a client's route always uses the
client's connection; a balancer's picks an endpoint, counts the stream
there and may pick another one for a stream that failed before anything
was received or sent (see fastrpc.balancer.streams).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from typing import Any, AsyncIterator, Iterable, Iterator, List, Optional, Tuple

from fastrpc._core import frame as wire
from fastrpc._core.calltable import StreamSlot, call_args
from fastrpc._core.codec import packb
from fastrpc.context import bound_timeout
from fastrpc.errors import StreamClosedError, TimeoutError
from fastrpc.interceptors import ClientCall, async_client_chain, client_chain
from fastrpc.net import flow

__all__ = ["Stream", "AsyncStream", "ClientRoute", "AsyncClientRoute"]

_PENDING = 0
# Items handed out between two looks at the connection: a consumer busy with
# a stream still takes in what else arrived (replies to other calls on the
# same connection) at least this often, so those are not held behind it;
# SHARED_TAKE while other calls are in flight on the connection.
TAKE = 128
SHARED_TAKE = 16


def _take_size(conn: Any) -> int:
    """How many items to hand out before looking at `conn` again."""
    return TAKE if conn is None or len(conn.table.pending) <= 1 else SHARED_TAKE


class _CreditWait:
    """What a thread waiting for the server's credit hands the engine: the
    slot-like view of a stream's send side."""

    __slots__ = ("slot",)

    def __init__(self, slot: StreamSlot) -> None:
        self.slot = slot

    @property
    def is_ready(self) -> bool:
        slot = self.slot
        return bool(slot.can_send or slot.state != _PENDING)

    def set_waiter(self, lock: Any) -> bool:
        return bool(self.slot.set_credit_waiter(lock))

    def take_waiter(self) -> Any:
        return self.slot.take_credit_waiter()

    def unwritten(self) -> Any:
        return self.slot.source


class _FutureWaiter:
    """A slot waiter that wakes an asyncio task (released on the loop's thread)."""

    __slots__ = ("future",)

    def __init__(self, future: "asyncio.Future[Any]") -> None:
        self.future = future

    def release(self) -> None:
        if not self.future.done():
            self.future.set_result(None)


class ClientRoute:
    """A blocking client's streams: always on its connection."""

    def __init__(self, client: Any) -> None:
        self.client = client
        #: Where each stream's outcome is counted, by method (the client's stats()).
        self.stats: Any = client._caller.stats

    def open(self, method: str, args: Any, slot: StreamSlot, deadline_ms: Optional[int],
             meta: Optional[bytes] = None) -> Any:
        """Open the stream on a connection; return that connection. `meta`:
        its encoded metadata (None: the client's own)."""
        conn = self.client.connection()
        conn.table.open_stream(method, args, slot, deadline_ms, meta or self.client.call_metadata())
        conn.flush()
        return conn

    def ended(self, slot: StreamSlot, error: Optional[BaseException], withdrawn: bool) -> None:
        """The stream ended (`withdrawn`: cancelled or timed out here)."""

    def may_reopen(self, error: BaseException, opened: int) -> bool:
        """Whether a stream that failed before anything went either way opens again."""
        return False


class AsyncClientRoute(ClientRoute):
    """An AsyncClient's streams: on its connection (connecting when needed)."""

    async def open_async(self, method: str, args: Any, slot: StreamSlot, deadline_ms: Optional[int],
                         meta: Optional[bytes] = None) -> Any:
        conn = await self.client.connection()
        conn.table.open_stream(method, args, slot, deadline_ms, meta or self.client.call_metadata())
        conn.flush()
        return conn


class _StreamState:
    """What the blocking and asyncio streams share: the call, its window and
    deadline, the slot of the current attempt, and the bookkeeping of its end."""

    def __init__(self, route: Any, method: str, args: Any, timeout: Optional[float],
                 window: Tuple[Optional[int], Optional[int]], settings: Any,
                 intercepted: Optional[Tuple[Any, ClientCall]] = None) -> None:
        self._route = route
        # (the client's interceptors, the call they see): they run once, around
        # the stream's opening; proceed() returns the stream.
        self._intercepted = intercepted
        self._meta: Optional[bytes] = None     # the metadata they left, encoded (None: the client's)
        self.method = method
        self._args = args
        self._window = flow.window(*window)
        timeout = bound_timeout(timeout)
        self.timeout = timeout
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._deadline_ms = settings.deadline_ms(timeout)
        self._slot: StreamSlot = StreamSlot(*self._window)
        self._conn: Any = None
        self._opened = 0                       # attempts made
        self._sent = 0                         # items sent
        self._writing_done = False
        self._reported = False                 # the route was told how it ended
        self._started = time.monotonic()

    # state ---------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        """The stream ended (its result or error is known); items may still be buffered."""
        return bool(self._slot.state != _PENDING)

    @property
    def received(self) -> int:
        """Items received so far (taken or not)."""
        return int(self._slot.received)

    @property
    def sent(self) -> int:
        """Items sent so far."""
        return self._sent

    def _as_intercepted(self, call: ClientCall) -> None:
        """Open the stream as the interceptors passed `call` on."""
        self.method = call.method
        self._args = call.args if not call.kwargs else call_args(call.args, call.kwargs)
        self._meta = bytes(packb(call.metadata)) if call.metadata else None

    def _new_slot(self) -> StreamSlot:
        self._slot = StreamSlot(*self._window)
        self._opened += 1
        return self._slot

    def _may_reopen(self, slot: StreamSlot) -> bool:
        """The attempt failed before any item went either way, and the route may retry."""
        return (slot.error is not None and slot.received == 0 and self._sent == 0
                and not self._writing_done and self._route.may_reopen(slot.error, self._opened))

    def _report(self, withdrawn: bool = False, final: bool = True) -> None:
        """Tell the route how this attempt ended (once); count the stream when
        it is `final` (no other attempt follows)."""
        if not self._reported:
            self._reported = True
            error = self._slot.error
            self._route.ended(self._slot, error, withdrawn)
            if final:
                method_stats = self._route.stats.method(self.method)
                if method_stats is not None:
                    method_stats.record(time.monotonic() - self._started, error)

    def _timed_out(self) -> TimeoutError:
        return TimeoutError(f"stream {self.method} did not complete within {self.timeout}s")

    # what both drivers do the same way -------------------------------------------------
    def _take_batch(self, slot: StreamSlot) -> Tuple[List[Any], bool]:
        """Up to a batch of the items received (giving credit back when due),
        and whether it was a full one (then the driver looks at the connection
        before handing out more)."""
        size = _take_size(self._conn)
        batch = slot.take(size)
        if batch and slot.credit_due:
            self._give_credit(slot)
        return batch, len(batch) == size

    def _pop(self, slot: StreamSlot) -> Any:
        value = slot.pop()
        if slot.credit_due:
            self._give_credit(slot)
        return value

    def _give_credit(self, slot: StreamSlot) -> None:
        conn = self._conn
        if conn is not None and conn.error is None:
            items, nbytes = slot.take_owed()
            conn.table.control(wire.CREDIT, slot.seq, bytes(packb([items, nbytes])))
            conn.flush()

    def _ended(self, slot: StreamSlot) -> bool:
        """The attempt in `slot` ended with nothing left to take: True when it
        is to be opened again elsewhere; False when the stream finished;
        raises its error otherwise. The route is told either way."""
        retry = slot.error is not None and self._may_reopen(slot)
        self._report(final=not retry)
        if retry:
            self._reported = False              # the next attempt reports for itself
            return True
        if slot.error is not None:
            raise slot.error
        return False

    def _check_sendable(self) -> None:
        if self._writing_done:
            raise StreamClosedError(f"stream {self.method}: done_writing() was called, no more items")
        if self._slot.state != _PENDING:
            raise self._send_blocked(self._slot)

    def _send_blocked(self, slot: StreamSlot) -> BaseException:
        """Why an item cannot go: the stream ended."""
        if slot.error is not None:
            error: BaseException = slot.error
            return error
        return StreamClosedError(f"stream {self.method} has ended: it takes no more items")

    def _send_now(self, slot: StreamSlot, item: Any) -> None:
        """Send one item on the server's credit (there is some)."""
        slot.spend(self._conn.table.send_item(slot.seq, item))
        self._sent += 1

    def _end_writing(self) -> None:
        self._writing_done = True
        conn = self._conn
        if self._slot.state == _PENDING and conn is not None and conn.error is None:
            conn.table.control(wire.END, self._slot.seq)
            conn.flush()

    def _abort(self, error: BaseException) -> None:
        """End the stream here with `error` and have the server cancel it."""
        slot = self._slot
        if slot.finish(error):
            conn = self._conn
            if conn is not None:
                conn.withdraw(slot.seq)
                conn.flush()
            self._report(withdrawn=True)
        self._stop_feeding()

    def _stop_feeding(self) -> None:
        """The stream ended: stop sending the caller's iterable (where that can be done)."""

    def cancel(self) -> bool:
        """End the stream on both sides (the handler is cancelled); False if it had ended."""
        if self._slot.state != _PENDING:
            return False
        self._abort(concurrent.futures.CancelledError(f"stream {self.method} was cancelled"))
        return True

    def __del__(self) -> None:
        # Dropped while open (a loop left early): end it on both sides. Not
        # here and now: a finalizer may run in any thread, in the middle of
        # code holding the connection's locks; the cancel is handed to the
        # thread that owns such work (it keeps the stream alive until then).
        try:
            if self._slot.state == _PENDING and self._conn is not None:
                self._cancel_later()
        except Exception:
            pass

    def _cancel_later(self) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        state = "open" if self._slot.state == _PENDING else "ended"
        return (f"<{type(self).__name__} {self.method} {state} received={self._slot.received} "
                f"sent={self._sent}>")


class Stream(_StreamState):
    """A stream call on a blocking client or balancer (``client.stream(...)``).

    Iterate it for the server's items; ``send(item)`` and ``done_writing()``
    send the caller's (or pass ``send=iterable`` to stream() and a thread
    sends them); ``result()`` waits for the end and returns the handler's
    return value. ``recv()`` returns one item, raising EOFError at the end.
    Errors raised by the handler mid-stream are raised here, typed as for
    unary calls, once the items before them were taken. ``cancel()`` (or
    leaving a ``with`` block, or dropping the stream) ends it on both sides.
    One thread may iterate while another sends.
    """

    def __init__(self, route: Any, method: str, args: Any, *, timeout: Optional[float] = None,
                 window: Tuple[Optional[int], Optional[int]] = (None, None), settings: Any,
                 send: Optional[Iterable[Any]] = None,
                 intercepted: Optional[Tuple[Any, ClientCall]] = None) -> None:
        super().__init__(route, method, args, timeout, window, settings, intercepted)
        if intercepted is None:
            self._open()
        else:
            interceptors, call = intercepted
            client_chain(interceptors, self._open_intercepted)(call)
        self._feeder: Optional[threading.Thread] = None
        if send is not None:
            self._feeder = threading.Thread(target=self._feed, args=(iter(send),),
                                            name=f"fastrpc-stream-{method}", daemon=True)
            self._feeder.start()

    def _open_intercepted(self, call: ClientCall) -> "Stream":
        self._as_intercepted(call)
        self._open()
        return self

    def _open(self) -> None:
        while True:
            slot = self._new_slot()
            try:
                self._conn = self._route.open(self.method, self._args, slot, self._deadline_ms, self._meta)
                return
            except Exception as exc:
                slot.finish(exc)
                if not self._may_reopen(slot):
                    self._report()
                    raise

    # receiving --------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Any]:
        # Items are taken in batches, then handed out one by one: a
        # generator's resume costs less than a call per item.
        while True:
            batch, full = self._take_batch(self._slot)
            if batch:
                yield from batch
                if full and self._conn is not None:
                    self._conn.read_arrived()
                    if len(batch) == SHARED_TAKE:
                        self._conn.engine.let_waiters_in()
                continue
            try:
                yield self.__next__()
            except StopIteration:
                return

    def __next__(self) -> Any:
        slot = self._slot
        while True:
            if slot.buffered:
                return self._pop(slot)
            if slot.state != _PENDING:
                if not self._ended(slot):
                    raise StopIteration
                self._open()
                slot = self._slot
                continue
            self._wait(slot)

    def recv(self) -> Any:
        """The next item; EOFError once the stream ended without more (its error, if it failed)."""
        try:
            return next(self)
        except StopIteration:
            raise EOFError(f"stream {self.method} has ended") from None

    def result(self, timeout: Optional[float] = None) -> Any:
        """Wait for the end of the stream and return the handler's return value
        (items not taken yet are dropped); raise its error."""
        if timeout is not None:
            give_up = time.monotonic() + timeout
        for _ in self:
            if timeout is not None and time.monotonic() >= give_up:
                raise TimeoutError(f"stream {self.method} did not end within {timeout}s")
        return self._slot.value

    def _wait(self, waitable: Any) -> None:
        self._conn.engine.wait(waitable, self._deadline)
        if self._deadline is not None and time.monotonic() >= self._deadline and not waitable.is_ready:
            self._abort(self._timed_out())

    # sending ------------------------------------------------------------------------------
    def send(self, item: Any) -> None:
        """Send one item to the handler, waiting while the server's credit is out.
        Raises the stream's error (or StreamClosedError) once it ended."""
        self._check_sendable()
        slot = self._slot
        while not slot.can_send:
            if slot.state != _PENDING:
                raise self._send_blocked(slot)
            self._wait(_CreditWait(slot))
        self._send_now(slot, item)

    def done_writing(self) -> None:
        """Tell the handler no more items come (its iterator ends)."""
        if not self._writing_done:
            self._end_writing()

    def _feed(self, items: Iterator[Any]) -> None:
        slot = self._slot
        try:
            for item in items:
                if slot.state != _PENDING:
                    return
                self.send(item)
            self.done_writing()
        except Exception as exc:
            if slot.state == _PENDING:
                self._abort(exc)                # the caller's iterable failed: so does the stream

    # ending -------------------------------------------------------------------------------
    def close(self) -> None:
        """cancel() unless the stream ended."""
        self.cancel()

    def _cancel_later(self) -> None:
        self._conn.engine.defer(self.cancel)        # the engine's helper thread, within a tick

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.cancel()


class AsyncStream(_StreamState):
    """A stream call on an AsyncClient or AsyncBalancer (``client.stream(...)``).

    ``async for`` its items; ``await send(item)`` / ``await done_writing()``
    (or ``send=`` an iterable or async iterable, sent by a task); ``await
    result()``; ``await recv()`` (EOFError at the end); ``cancel()``. The
    stream opens on first use (or ``await stream.open()``).
    """

    def __init__(self, route: Any, method: str, args: Any, *, timeout: Optional[float] = None,
                 window: Tuple[Optional[int], Optional[int]] = (None, None), settings: Any,
                 send: Any = None, intercepted: Optional[Tuple[Any, ClientCall]] = None) -> None:
        super().__init__(route, method, args, timeout, window, settings, intercepted)
        self._send_source = send
        self._feeder: Optional[asyncio.Task[Any]] = None
        self._opening: Optional[asyncio.Future[Any]] = None

    async def open(self) -> "AsyncStream":
        """Open the stream now (it opens on first use otherwise)."""
        if self._conn is None and not (self._opened and self.done):
            if self._opening is None:
                if self._intercepted is not None and not self._opened:
                    interceptors, call = self._intercepted
                    self._opening = asyncio.ensure_future(
                        async_client_chain(interceptors, self._open_intercepted)(call))
                else:
                    self._opening = asyncio.ensure_future(self._open())
            await asyncio.shield(self._opening)
        return self

    async def _open_intercepted(self, call: ClientCall) -> "AsyncStream":
        self._as_intercepted(call)
        await self._open()
        return self

    async def _open(self) -> None:
        while True:
            slot = self._new_slot()
            try:
                self._conn = await self._route.open_async(self.method, self._args, slot, self._deadline_ms,
                                                          self._meta)
                break
            except Exception as exc:
                slot.finish(exc)
                if not self._may_reopen(slot):
                    self._report()
                    raise
        if self._send_source is not None and self._feeder is None:
            self._feeder = asyncio.get_running_loop().create_task(self._feed(self._send_source))

    # receiving ----------------------------------------------------------------------------
    async def __aiter__(self) -> AsyncIterator[Any]:
        # Batches of what arrived, handed out one by one (see Stream.__iter__).
        while True:
            batch, full = self._take_batch(self._slot)
            if batch:
                for item in batch:
                    yield item
                if full:
                    await asyncio.sleep(0)     # let the loop take in what else arrived
                continue
            try:
                item = await self.__anext__()
            except StopAsyncIteration:
                return
            yield item

    async def __anext__(self) -> Any:
        if self._conn is None:
            await self.open()
        slot = self._slot
        while True:
            if slot.buffered:
                return self._pop(slot)
            if slot.state != _PENDING:
                if not self._ended(slot):
                    raise StopAsyncIteration
                self._conn = None
                self._opening = None
                await self.open()
                slot = self._slot
                continue
            await self._wait(slot, slot.set_waiter, slot.take_waiter)

    async def recv(self) -> Any:
        """The next item; EOFError once the stream ended without more."""
        try:
            return await self.__anext__()
        except StopAsyncIteration:
            raise EOFError(f"stream {self.method} has ended") from None

    async def result(self) -> Any:
        """Wait for the end; return the handler's return value (items not taken are dropped)."""
        async for _ in self:
            pass
        return self._slot.value

    async def _wait(self, slot: StreamSlot, set_waiter: Any, take_waiter: Any) -> None:
        future = asyncio.get_running_loop().create_future()
        if not set_waiter(_FutureWaiter(future)):
            return
        timeout = None if self._deadline is None else self._deadline - time.monotonic()
        try:
            await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            take_waiter()
            self._abort(self._timed_out())
        except asyncio.CancelledError:
            take_waiter()
            self.cancel()                      # the awaiting task was cancelled: so is the stream
            raise

    # sending -------------------------------------------------------------------------------
    async def send(self, item: Any) -> None:
        """Send one item, waiting while the server's credit is out."""
        self._check_sendable()
        if self._conn is None:
            await self.open()
        slot = self._slot
        while not slot.can_send:
            if slot.state != _PENDING:
                raise self._send_blocked(slot)
            await self._wait(slot, slot.set_credit_waiter, slot.take_credit_waiter)
        self._send_now(slot, item)
        paused = self._conn.paused
        if paused is not None:
            await paused                       # the transport's buffer is full: let it drain

    async def done_writing(self) -> None:
        """Tell the handler no more items come."""
        if self._writing_done:
            return
        if self._conn is None:
            await self.open()
        self._end_writing()

    async def _feed(self, items: Any) -> None:
        slot = self._slot
        try:
            if hasattr(items, "__aiter__"):
                async for item in items:
                    if slot.state != _PENDING:
                        return
                    await self.send(item)
            else:
                for item in items:
                    if slot.state != _PENDING:
                        return
                    await self.send(item)
            await self.done_writing()
        except Exception as exc:
            if slot.state == _PENDING:
                self._abort(exc)

    # ending ---------------------------------------------------------------------------------
    def _cancel_later(self) -> None:
        self._conn.loop.call_soon_threadsafe(self.cancel)    # on the connection's event loop

    def _stop_feeding(self) -> None:
        feeder = self._feeder
        if feeder is not None and not feeder.done() and feeder is not _current_task():
            feeder.cancel()

    async def aclose(self) -> None:
        """cancel() unless the stream ended."""
        self.cancel()

    async def __aenter__(self) -> "AsyncStream":
        return await self.open()

    async def __aexit__(self, *exc: Any) -> None:
        self.cancel()


def _current_task() -> Optional["asyncio.Task[Any]"]:
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None
