"""Streams on the server: driving a streaming handler within flow control.

Owns one stream a client opened on a connection (ServerStream): running its
handler as a task (tracked like any call, so the client's CANCEL, its
deadline or a disconnect cancel it, and the handler's generator gets
GeneratorExit or CancelledError), sending the handler's items within the
client's credit and while the transport takes them, and handing the
client's items to the handler through an iterator (AsyncInput for handlers
on the event loop, ThreadInput for handlers in the pool), giving credit
back as the handler takes them. Frames are decoded and encoded by the
compiled ServerCore; this module is policy only.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextvars
import functools
import inspect
import threading
from typing import TYPE_CHECKING, Any, Deque, Dict, Optional, Tuple

from fastrpc._core.servercore import MODE_BLOCKING, STREAM_IN, STREAM_OUT, Handler
from fastrpc.context import CURRENT
from fastrpc.errors import EncodeError
from fastrpc.interceptors import open_stream_through, serving_context
from fastrpc.server.handlers import input_parameter_name

if TYPE_CHECKING:
    from fastrpc.server.connection import FastConnection

__all__ = ["ServerStream", "AsyncInput", "ThreadInput"]

# A generator running on the event loop sends at most this many items (and
# about this many bytes) before it lets the loop run other calls: a large
# stream must not starve the small calls sharing its connection. While
# other calls arrive on the connection, batches are SHARED_BATCH items: a
# reply then waits behind fewer items (the stream's rate gives way a little).
BATCH_ITEMS = 256
SHARED_BATCH = 16
BATCH_BYTES = 256 * 1024

_input_names: Dict[Any, Optional[str]] = {}


class _Cancelled(concurrent.futures.CancelledError):
    """Raised in a handler reading the client's items once its stream ended."""


class AsyncInput:
    """The client's items as an async iterator, for a handler on the event loop.

    Ends when the client calls done_writing(); raises CancelledError if the
    stream is cancelled meanwhile.
    """

    def __init__(self, stream: "ServerStream") -> None:
        self._stream = stream
        self._items: Deque[Tuple[Any, int]] = collections.deque()
        self._done = False
        self._error: Optional[BaseException] = None
        self._waiter: Optional[asyncio.Future[Any]] = None

    def __aiter__(self) -> "AsyncInput":
        return self

    async def __anext__(self) -> Any:
        while not self._items:
            if self._error is not None:
                raise self._error
            if self._done:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        value, nbytes = self._items.popleft()
        self._stream.consumed(nbytes)
        return value

    def __len__(self) -> int:
        return len(self._items)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def put(self, value: Any, nbytes: int) -> None:
        """An item arrived."""
        self._items.append((value, nbytes))
        self._wake()

    def close(self) -> None:
        """The client sends no more items."""
        self._done = True
        self._wake()

    def fail(self, exc: BaseException) -> None:
        """The stream ended: a reader waiting for more gets `exc`."""
        self._error = exc
        self._wake()


class ThreadInput:
    """The client's items as a blocking iterator, for a handler in the thread pool.

    Credit goes back to the client through the event loop, once half a
    window was taken.
    """

    def __init__(self, stream: "ServerStream", loop: asyncio.AbstractEventLoop) -> None:
        self._stream = stream
        self._loop = loop
        self._cond = threading.Condition(threading.Lock())
        self._items: Deque[Tuple[Any, int]] = collections.deque()
        self._done = False
        self._error: Optional[BaseException] = None
        self._owed = [0, 0]

    def __iter__(self) -> "ThreadInput":
        return self

    def __next__(self) -> Any:
        with self._cond:
            while not self._items:
                if self._error is not None:
                    raise self._error
                if self._done:
                    raise StopIteration
                self._cond.wait()
            value, nbytes = self._items.popleft()
            self._owed[0] += 1
            self._owed[1] += nbytes
            owed = None
            if self._stream.credit_due(self._owed[0], self._owed[1]):
                owed, self._owed = self._owed, [0, 0]
        if owed is not None:
            self._loop.call_soon_threadsafe(self._stream.give_credit, owed[0], owed[1])
        return value

    def __len__(self) -> int:
        return len(self._items)

    def put(self, value: Any, nbytes: int) -> None:
        with self._cond:
            self._items.append((value, nbytes))
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._done = True
            self._cond.notify_all()

    def fail(self, exc: BaseException) -> None:
        with self._cond:
            self._error = exc
            self._cond.notify_all()


class ServerStream:
    """One stream a client opened on a fastrpc connection (see the module docstring)."""

    def __init__(self, conn: "FastConnection", handler: Handler, seq: int, window: Tuple[int, int]) -> None:
        self.conn = conn
        self.handler = handler
        self.seq = seq
        self.window_items, self.window_bytes = window    # what the client may send us at a time
        self.items_credit = 0                 # what the client lets us send: items
        self.bytes_credit = 0                 # and bytes
        self.credit_waiter: Optional[asyncio.Future[Any]] = None
        self.owed = [0, 0]                    # client items taken since credit was given back
        self.input: Any = None                # AsyncInput or ThreadInput (STREAM_IN)
        self.failure: Optional[Tuple[str, str]] = None   # why the server ended it (answered instead)
        self.pool_call: Optional[asyncio.Future[Any]] = None   # a generator step running in the pool
        self.sent_items = 0
        self.ended_ = False                   # its task finished (no more credit is given)
        # A plain handler that reads the client's items blocks while it waits
        # for them: it runs in the pool, as @blocking handlers do.
        self.in_pool = handler.mode == MODE_BLOCKING or (
            bool(handler.stream & STREAM_IN) and not _is_async(handler.func))
        if handler.stream & STREAM_IN:
            # Made now, not when the task first runs: the client's first items
            # (and its END) may be in the same read as the request.
            self.input = ThreadInput(self, conn.server.loop) if self.in_pool else AsyncInput(self)
            self.give_credit(self.window_items, self.window_bytes)

    # frames from the client ---------------------------------------------------------
    def on_credit(self, items: int, nbytes: int) -> None:
        self.items_credit += items
        self.bytes_credit += nbytes
        waiter = self.credit_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def on_item(self, value: Any, nbytes: int) -> None:
        if self.input is None:
            self.fail("StreamMismatch", f"{self.handler.name} takes no items from the client")
        elif len(self.input) >= self.window_items:
            self.fail("ProtocolError", f"the client sent more than the {self.window_items} items "
                                       f"of credit it had on {self.handler.name}")
        else:
            self.input.put(value, nbytes)

    def on_end(self) -> None:
        if self.input is not None:
            self.input.close()

    def fail(self, type_name: str, message: str) -> None:
        """End the stream with an error of our own (answered once the handler stops)."""
        if self.failure is None:
            self.failure = (type_name, message)
        task = self.conn.tasks.get(self.seq)
        if task is not None:
            task.cancel()

    # credit we give the client ------------------------------------------------------------
    def credit_due(self, items: int, nbytes: int) -> bool:
        """Half a window of the client's items was taken: give credit back."""
        return items * 2 >= self.window_items or nbytes * 2 >= self.window_bytes

    def consumed(self, nbytes: int) -> None:
        """The handler took one item (on the loop)."""
        owed = self.owed
        owed[0] += 1
        owed[1] += nbytes
        if self.credit_due(owed[0], owed[1]):
            self.give_credit(owed[0], owed[1])
            self.owed = [0, 0]

    def give_credit(self, items: int, nbytes: int) -> None:
        core = self.conn.core
        if core is not None and not self.ended_:
            core.credit(self.seq, items, nbytes)
            self.conn._schedule_flush()

    # running --------------------------------------------------------------------------
    async def run(self, args: Tuple[Any, ...], kwargs: Optional[Dict[str, Any]]) -> Any:
        """The handler's run: its return value is the stream's final RESPONSE."""
        handler = self.handler
        loop = asyncio.get_running_loop()
        in_pool = self.in_pool
        interceptors = self.conn.server.dispatcher.interceptors
        if interceptors:
            call = await open_stream_through(interceptors, handler.name, args, kwargs or {})
            args, kwargs = tuple(call.args), dict(call.kwargs)
            CURRENT.set(serving_context(call))      # the handler sees what they left (this task's context)
        if handler.stream & STREAM_IN:
            args, kwargs = self._with_input(args, kwargs)
        pool = self.conn.server.dispatcher.executor()
        if handler.stream & STREAM_OUT:
            if in_pool:
                gen = handler.func(*args, **(kwargs or {}))
                return await self._pump_pool(gen, pool)
            obj = handler.func(*args, **(kwargs or {}))
            if inspect.isasyncgen(obj):
                return await self._pump_async(obj)
            return await self._pump_loop(obj)
        # Items in only: the handler's return value is the reply.
        if in_pool:
            ctx = contextvars.copy_context()
            return await loop.run_in_executor(pool, functools.partial(ctx.run, handler.func, *args,
                                                                      **(kwargs or {})))
        return await handler.func(*args, **(kwargs or {}))

    def _with_input(self, args: Tuple[Any, ...], kwargs: Optional[Dict[str, Any]]) -> Tuple[Tuple[Any, ...], Optional[Dict[str, Any]]]:
        at = self.handler.input_at
        if len(args) >= at:
            return args[:at] + (self.input,) + args[at:], kwargs
        func = self.handler.func
        name = _input_names.get(func)
        if name is None:
            name = _input_names[func] = input_parameter_name(self.handler)
        assert name is not None
        merged: Dict[str, Any] = dict(kwargs or {})
        merged[name] = self.input
        return args, merged

    async def _sendable(self) -> None:
        """Wait until the client's credit and the transport take one more item."""
        conn = self.conn
        while True:
            if conn.write_blocked:
                await conn.writable()
            elif self.items_credit > 0 and self.bytes_credit > 0:
                return
            else:
                self.credit_waiter = asyncio.get_running_loop().create_future()
                try:
                    await self.credit_waiter
                finally:
                    self.credit_waiter = None

    def _spent(self, items: int, nbytes: int) -> None:
        self.items_credit -= items
        self.bytes_credit -= nbytes
        self.sent_items += items
        self.conn._schedule_flush()

    async def _pump_loop(self, gen: Any) -> Any:
        """A plain generator on the event loop: batches of items, compiled."""
        calls_seen = -1
        try:
            while True:
                await self._sendable()
                core = self.conn.core
                # Requests arrived since the last batch: the connection is shared.
                batch = BATCH_ITEMS if core.calls == calls_seen else SHARED_BATCH
                calls_seen = core.calls
                n, size, finished, returned = core.stream_items(
                    self.seq, gen, min(self.items_credit, batch), min(self.bytes_credit, BATCH_BYTES))
                self._spent(n, size)
                if finished:
                    return returned
                await asyncio.sleep(0)          # let the loop serve the connection's other calls
        finally:
            gen.close()                         # GeneratorExit in the handler when it did not finish

    async def _pump_async(self, agen: Any) -> Any:
        """An async generator: one item per step."""
        try:
            batch = 0
            while True:
                await self._sendable()
                try:
                    item = await agen.__anext__()
                except StopAsyncIteration:
                    return None
                self._spent(1, self._encode(item))
                batch += 1
                if batch >= BATCH_ITEMS:
                    batch = 0
                    await asyncio.sleep(0)
        finally:
            await agen.aclose()

    async def _pump_pool(self, gen: Any, pool: concurrent.futures.Executor) -> Any:
        """A generator that blocks (@blocking, or reading the client's items):
        each step runs in the pool, its item is sent from the loop."""
        loop = asyncio.get_running_loop()
        step = functools.partial(contextvars.copy_context().run, _step, gen)
        try:
            while True:
                await self._sendable()
                self.pool_call = loop.run_in_executor(pool, step)
                finished, value = await self.pool_call
                self.pool_call = None
                if finished:
                    return value
                self._spent(1, self._encode(value))
        finally:
            running = self.pool_call
            if running is not None and not running.done():
                # The generator is mid-step in a thread: close it when that step ends.
                running.add_done_callback(lambda _f: pool.submit(gen.close))
            else:
                pool.submit(gen.close)

    def _encode(self, item: Any) -> int:
        try:
            size: int = self.conn.core.stream_item(self.seq, item)
        except Exception as exc:
            raise EncodeError(f"stream item cannot be encoded: {exc}") from exc
        return size

    def ended(self) -> None:
        """The stream's task finished: a handler still reading items stops."""
        self.ended_ = True
        if self.input is not None:
            self.input.fail(_Cancelled(f"{self.handler.name}: the stream ended"))
        waiter = self.credit_waiter
        if waiter is not None and not waiter.done():
            waiter.cancel()


def _step(gen: Any) -> Tuple[bool, Any]:
    """One step of a generator: (False, item) or (True, its return value)."""
    try:
        return False, next(gen)
    except StopIteration as stop:
        return True, stop.value


def _is_async(func: Any) -> bool:
    target = inspect.unwrap(func)
    return inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target)
