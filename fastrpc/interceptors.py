"""Interceptors: code that runs around every call, on the server or the client.

An interceptor is a callable ``interceptor(call, proceed)``: `call`
describes the call (a ServerCall or a ClientCall), and ``proceed(call)``
runs the rest of the chain (the next interceptor, at the end the handler or
the remote call) and returns its result or raises its error. An interceptor
may look at or change the call's arguments and metadata before it
proceeds, time it, look at the result or the exception, replace either, or
refuse the call by raising instead of proceeding (the caller gets that
error as from a handler). Several interceptors nest in the order given:
the first is the outermost.

Plain functions and ``async def`` are both interceptors:

- on a Server, a plain interceptor runs where the handler runs (on the loop
  for plain handlers, in the pool for ``@blocking`` ones); around an
  ``async def`` handler its ``proceed`` returns an awaitable, which it
  returns (to time those, write the interceptor ``async def``). An ``async
  def`` interceptor wraps every handler: plain and ``@blocking`` ones then
  run as tasks (``@blocking`` ones still in the pool).
- on a Client or Balancer, interceptors are plain functions around
  ``call``; ``go`` and ``map`` run each call's chain on a small thread
  pool. On an AsyncClient or AsyncBalancer they may be either, and ``go``
  runs the chain as a task.

Nothing here runs when no interceptor is installed: the call paths check
once per call that there are none.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import inspect
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence, Tuple

from fastrpc._core.calltable import Arguments
from fastrpc._core.servercore import MODE_ASYNC, MODE_BLOCKING, Handler
from fastrpc.context import CURRENT, CallContext, current_call
from fastrpc.errors import PermissionDeniedError

__all__ = ["ClientCall", "Interceptor", "ServerCall", "async_client_chain", "client_chain", "intercept_handler",
           "tell_endpoint"]


@dataclass
class ServerCall:
    """A call a server is about to serve, as its interceptors see it.

    `metadata` is the caller's metadata (a new dict when it sent none):
    what an interceptor adds there, the handler reads in
    ``fastrpc.current_call().metadata``.
    """

    method: str
    args: Tuple[Any, ...]
    kwargs: Dict[str, Any]
    metadata: Dict[str, Any]
    peer: Optional[str] = None
    deadline: Optional[float] = None        # time.monotonic() at which the caller stops waiting


@dataclass
class ClientCall:
    """A call a client is about to make, as its interceptors see it.

    What an interceptor adds to `metadata` travels with the call (merged
    over the client's own metadata). Through a balancer, `endpoint` and
    `attempt` tell which endpoint served the call and which attempt that
    was (1: the first); they are filled in when ``proceed`` returns or
    raises.
    """

    method: str
    args: Tuple[Any, ...]
    kwargs: Dict[str, Any]
    metadata: Dict[str, Any] = field(default_factory=dict)
    timeout: Optional[float] = None
    target: str = ""                        # the client's address, or the balancer's name
    endpoint: Optional[str] = None
    attempt: int = 0
    key: Any = None                         # a balanced call's key (consistent_hash)
    idempotent: Optional[bool] = None       # a balanced call's idempotent= (None: the balancer's)
    balanced: bool = False                  # made through a Balancer or AsyncBalancer
    #: Through a balancer, an interceptor may set an attempt observer: an
    #: object whose ``sent(attempt)`` returns the encoded metadata of that
    #: attempt (bytes) as it goes out and whose ``ended(attempt, error)`` is
    #: told how it ended (None: answered; an exception; or "withdrawn": a
    #: hedge that lost or a call taken back). ``attempt.number`` counts from 1,
    #: ``attempt.member.endpoint.address`` is where it went. Called from the
    #: threads that send and complete calls: keep it short and thread-safe.
    attempts: Any = None


#: An interceptor: interceptor(call, proceed) -> result (or an awaitable of it).
Interceptor = Callable[[Any, Callable[[Any], Any]], Any]


def _is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))


def check_interceptors(interceptors: Optional[Sequence[Interceptor]], allow_async: bool) -> Tuple[Interceptor, ...]:
    """The interceptors as a tuple; TypeError for one that is not callable
    (or is ``async def`` where only plain ones can run)."""
    if not interceptors:
        return ()
    result = tuple(interceptors)
    for ic in result:
        if not callable(ic):
            raise TypeError(f"an interceptor is a callable interceptor(call, proceed), not {ic!r}")
        if not allow_async and _is_async(ic):
            raise TypeError(f"{getattr(ic, '__name__', ic)!r} is async def: a blocking client runs plain "
                            "interceptors only (use it with an AsyncClient or AsyncBalancer)")
    return result


# server ----------------------------------------------------------------------------------
def serving_context(call: ServerCall) -> CallContext:
    """What fastrpc.current_call() gives a handler serving `call`, as the
    interceptors left it."""
    return CallContext(call.method, call.deadline, call.metadata, call.peer)


def _server_call(name: str, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> ServerCall:
    ctx = current_call()
    if ctx is None:                             # called from outside a server (a test, say)
        return ServerCall(name, args, kwargs, {})
    return ServerCall(name, args, kwargs, dict(ctx.metadata or {}), ctx.peer, ctx.deadline)


def intercept_handler(handler: Handler, interceptors: Sequence[Interceptor],
                      executor: Callable[[], Any]) -> Handler:
    """`handler` with `interceptors` around it: a new Handler of the same
    name and arity (its counts carried over). `executor()` gives the pool
    a @blocking handler runs in when an async interceptor makes it a task.
    Streaming handlers are returned as they are: their interceptors run as
    the stream opens (see open_stream_through)."""
    if handler.stream:
        return handler
    func = handler.func
    name = handler.name
    any_async = any(_is_async(ic) for ic in interceptors)
    if handler.mode != MODE_ASYNC and not any_async:
        def innermost(call: ServerCall) -> Any:
            token = CURRENT.set(serving_context(call))     # what interceptors added, the handler sees
            try:
                return func(*call.args, **call.kwargs)
            finally:
                CURRENT.reset(token)

        chain = client_chain(interceptors, innermost)

        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            return chain(_server_call(name, args, kwargs))
        mode = handler.mode
    else:
        blocking = handler.mode == MODE_BLOCKING

        async def innermost_async(call: ServerCall) -> Any:
            token = CURRENT.set(serving_context(call))
            try:
                if blocking:
                    ctx = contextvars.copy_context()
                    return await asyncio.get_running_loop().run_in_executor(
                        executor(), functools.partial(ctx.run, func, *call.args, **call.kwargs))
                result = func(*call.args, **call.kwargs)
                if inspect.isawaitable(result):
                    result = await result
                return result
            finally:
                CURRENT.reset(token)

        achain = async_client_chain(interceptors, innermost_async)

        @functools.wraps(func)
        async def run(*args: Any, **kwargs: Any) -> Any:
            return await achain(_server_call(name, args, kwargs))
        mode = MODE_ASYNC
    wrapped = Handler(run, name, mode, handler.min_args, handler.max_args, handler.bind, handler.kw_required)
    wrapped.inherit(handler)
    return wrapped


async def open_stream_through(interceptors: Sequence[Interceptor], name: str, args: Tuple[Any, ...],
                              kwargs: Dict[str, Any]) -> ServerCall:
    """Run the server's interceptors as a stream opens: each may refuse it
    (raise), read or change its arguments and metadata; ``proceed(call)``
    returns None at once, the items flowing afterwards. Returns the call as
    the interceptors passed it on. An interceptor that returns without
    proceeding refuses the stream (PermissionDenied): a stream has no
    single result to answer with instead."""
    opened: List[ServerCall] = []

    async def innermost(call: ServerCall) -> None:
        opened.append(call)

    await async_client_chain(interceptors, innermost)(_server_call(name, args, kwargs))
    if not opened:
        raise PermissionDeniedError("PermissionDenied", f"{name}: an interceptor did not let the stream open")
    return opened[-1]


def _link(ic: Interceptor, proceed: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def step(call: Any) -> Any:
        return ic(call, proceed)
    return step


def _alink(ic: Interceptor, proceed: Callable[[Any], Awaitable[Any]]) -> Callable[[Any], Awaitable[Any]]:
    async def step(call: Any) -> Any:
        result = ic(call, proceed)
        if inspect.isawaitable(result):
            result = await result
        return result
    return step


# client ------------------------------------------------------------------------------------
def client_chain(interceptors: Sequence[Interceptor], terminal: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """The blocking chain: interceptors around `terminal` (which makes the
    call or runs the handler)."""
    chain = terminal
    for ic in reversed(interceptors):
        chain = _link(ic, chain)
    return chain


def async_client_chain(interceptors: Sequence[Interceptor],
                       terminal: Callable[[Any], Awaitable[Any]]) -> Callable[[Any], Awaitable[Any]]:
    """The asyncio chain: plain or async interceptors around `terminal`
    (server and client alike)."""
    chain = terminal
    for ic in reversed(interceptors):
        chain = _alink(ic, chain)
    return chain


def tell_endpoint(call: ClientCall, head: Any, exc: Optional[BaseException]) -> None:
    """Fill in `call.endpoint` and `call.attempt` after a balanced call whose
    first attempt is `head`: the endpoint that answered, or else the last
    one the error names (its ``endpoints``)."""
    member = getattr(head, "answered_by", None)
    if member is not None:
        call.endpoint = member.endpoint.address
        call.attempt = head.answered_number
    elif exc is not None and getattr(exc, "endpoints", None):
        endpoints = getattr(exc, "endpoints")
        call.endpoint = endpoints[-1]
        call.attempt = len(endpoints)


def base_metadata(metadata: Any) -> Dict[str, Any]:
    """A client's own metadata setting (a dict, a callable returning one, or
    None) as a new dict an interceptor may change."""
    value = metadata() if callable(metadata) else metadata
    return dict(value) if value else {}


_pool: Optional[concurrent.futures.ThreadPoolExecutor] = None
_pool_lock = threading.Lock()
#: Threads that run the interceptor chains of blocking go() and map() calls.
CHAIN_THREADS = 32


def chain_pool() -> concurrent.futures.ThreadPoolExecutor:
    """The process's pool for blocking go()/map() calls through interceptors
    (an interceptor wraps a call that blocks: it needs a thread to wait in)."""
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = concurrent.futures.ThreadPoolExecutor(CHAIN_THREADS, thread_name_prefix="fastrpc-intercept")
    return _pool


def _forget_pool_after_fork() -> None:
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()     # the parent's threads do not exist in the child


os.register_at_fork(after_in_child=_forget_pool_after_fork)


def map_through(go: Callable[..., Any], method: str, items: Sequence[Any], return_exceptions: bool,
                **options: Any) -> List[Any]:
    """A blocking map() whose calls go through interceptors: each item as a
    go() call (`options` passed on); results in order, as map() gives them."""
    futures = []
    for item in items:
        if isinstance(item, tuple):
            futures.append(go(method, *item, **options))
        elif isinstance(item, dict):
            futures.append(go(method, **{**item, **options}))
        elif isinstance(item, Arguments):
            futures.append(go(method, *item.args, **{**item.kwargs, **options}))
        else:
            futures.append(go(method, item, **options))
    results: List[Any] = []
    first_error: Optional[BaseException] = None
    for fut in futures:
        try:
            results.append(fut.result())
        except Exception as exc:
            first_error = first_error or exc
            results.append(exc if return_exceptions else None)
    if first_error is not None and not return_exceptions:
        raise first_error
    return results


async def amap_through(call: Callable[..., Awaitable[Any]], method: str, items: Sequence[Any],
                       return_exceptions: bool, window: int, **options: Any) -> List[Any]:
    """map() of an asyncio client or balancer whose calls go through
    interceptors: each item as a call(), at most `window` at a time."""
    gate = asyncio.Semaphore(max(1, window))

    async def one(item: Any) -> Any:
        async with gate:
            if isinstance(item, tuple):
                return await call(method, *item, **options)
            if isinstance(item, dict):
                return await call(method, **{**item, **options})
            if isinstance(item, Arguments):
                return await call(method, *item.args, **{**item.kwargs, **options})
            return await call(method, item, **options)

    outcomes = await asyncio.gather(*(one(item) for item in items), return_exceptions=True)
    first_error = next((o for o in outcomes if isinstance(o, BaseException)), None)
    if first_error is not None and not return_exceptions:
        raise first_error
    return list(outcomes)


def interceptor_names(interceptors: Sequence[Interceptor]) -> List[str]:
    """Names of interceptors, for reprs and the status page."""
    return [getattr(ic, "__qualname__", None) or type(ic).__name__ for ic in interceptors]
