"""Dispatch: the registered handlers, and running one according to its mode.

Owns the server's handler table (shared by every connection, whatever
protocol it speaks), the text of a call to a method that does not exist
(net/rpc's, for fastrpc and Go callers alike), how many calls each method
served, failed and how long they took (each Handler counts its own, the
compiled loop for inline calls and `finished` here for the rest), the
server's interceptors (wrapped around each handler as it is installed), and
the one place where a handler runs: inline, as an asyncio task (cancelled
at its caller's deadline), or in the thread pool (not started once its
caller's deadline passed), with ``fastrpc.current_call()`` set to the
call's method, deadline, metadata and peer. A handler's outcome becomes the
error the caller sees here too.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import threading
import time
import weakref
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from fastrpc._core.servercore import MODE_ASYNC, Handler, LoadGauge, not_found_message
from fastrpc.context import serving
from fastrpc.errors import DeadlineExceeded, RemoteError, error_type_name
from fastrpc.interceptors import Interceptor, check_interceptors, intercept_handler
from fastrpc.server.accept import RateLimitedLog
from fastrpc.server.handlers import build_handler, public_methods, service_name

__all__ = ["Dispatcher", "Outcome"]

#: A handler's outcome: (result, None) or (None, the exception to report).
Outcome = Tuple[Any, Optional[BaseException]]


def _unless_late(deadline: float, name: str, call: Callable[[], Any]) -> Any:
    """Run `call` in a pool thread unless monotonic `deadline` already passed."""
    if time.monotonic() >= deadline:
        raise DeadlineExceeded(message=f"{name} was not started: its deadline passed while it waited")
    return call()


class Dispatcher:
    """A server's services and how their handlers run (see the module docstring)."""

    def __init__(self, max_workers: Optional[int] = None, interceptors: Sequence[Interceptor] = ()) -> None:
        self.interceptors = check_interceptors(interceptors, allow_async=True)
        self.handlers: Dict[bytes, Handler] = {}    # "Service.Method" (UTF-8) -> Handler; shared, updated in place
        self.services: Set[bytes] = set()           # service names (UTF-8); shared likewise
        self.load = LoadGauge()                     # calls running as tasks or in the pool
        self.max_workers = max_workers
        self._pool: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self._lock = threading.Lock()
        self._annotations: Dict[str, Any] = {}      # per-handler data other layers derive once (Go signatures)
        self._docs: Dict[str, Optional[str]] = {}   # service -> the registered object's class docstring
        # Handler failures are logged per method, at most one line (and a
        # summary) per LOG_EVERY seconds each: a hot failing method cannot flood the log.
        self._failure_logs: Dict[str, RateLimitedLog] = {}
        #: Deadline timers of async handlers still running (each goes with its call).
        self.deadline_timers: Dict[asyncio.Future[Any], asyncio.TimerHandle] = {}

    # registering ---------------------------------------------------------------
    def register(self, obj: Any, name: Optional[str] = None) -> str:
        """Register the public methods of `obj` as "<name>.<Method>"; return the service name."""
        if isinstance(obj, type):
            raise TypeError(f"register an instance of {obj.__name__}, not the class itself "
                            f"(server.register({obj.__name__}()))")
        service = service_name(obj, name)
        methods = public_methods(obj)
        if not methods:
            raise ValueError(f"{service} has no public methods to register")
        self.install(service, {f"{service}.{m}": build_handler(fn, f"{service}.{m}") for m, fn in methods.items()})
        self._docs[service] = inspect.getdoc(type(obj))
        return service

    def register_function(self, func: Callable[..., Any], name: str) -> None:
        """Register one callable as `name` ("Service.Method")."""
        service, dot, method = name.rpartition(".")
        if not dot or not service or not method:
            raise ValueError(f"function name must be 'Service.Method', got {name!r}")
        self.install(service, {name: build_handler(func, name)}, allow_existing_service=True)

    def install(self, service: str, handlers: Dict[str, Handler], allow_existing_service: bool = False) -> None:
        """Add `service`'s handlers; a name registered twice raises ValueError."""
        with self._lock:
            if service.encode() in self.services and not allow_existing_service:
                raise ValueError(f"service {service!r} is already registered")
            for full in handlers:
                if full.encode() in self.handlers:
                    raise ValueError(f"method {full!r} is already registered")
            if self.interceptors:
                handlers = {k: self.intercepted(h) for k, h in handlers.items()}
            # Connections hold these objects themselves, so update in place.
            self.handlers.update({k.encode(): v for k, v in handlers.items()})
            self.services.add(service.encode())

    def intercepted(self, handler: Handler) -> Handler:
        """`handler` with the server's interceptors around it (built-in
        services, named "_...", are left as they are)."""
        if handler.name.startswith("_"):
            return handler
        return intercept_handler(handler, self.interceptors, self.executor)

    @staticmethod
    def finished(handler: Handler, started: float, exc: Optional[BaseException]) -> None:
        """A call of `handler` that began at `started` (time.monotonic())
        ended, with `exc` (None: it succeeded): count it."""
        handler.record(time.monotonic() - started, None if exc is None else _error_name(exc))

    def stats(self) -> Dict[str, Dict[str, Any]]:
        """Per method ("Service.Method", built-in ones left out): calls,
        errors, errors by type, total seconds, and the latency histogram."""
        out = {}
        for h in self.handlers_sorted():
            if h.name.startswith("_"):
                continue
            out[h.name] = {"calls": h.calls, "errors": h.errors, "error_types": dict(h.error_types),
                           "seconds": h.seconds, "histogram": h.histogram()}
        return out

    def log_failure(self, name: str, exc: BaseException, notify: bool) -> None:
        """A call or notification of `name` failed with `exc`: log it (WARNING on
        "fastrpc.server", with the traceback when the handler raised it),
        rate-limited per method. Calls and notifications read the same."""
        entry = self._failure_logs.get(name)
        if entry is None:
            if len(self._failure_logs) >= 10_000:        # bounded, whatever names peers send
                self._failure_logs.clear()
            entry = self._failure_logs[name] = RateLimitedLog()
        # A RemoteError is an answer the code chose to give (a refusal, a relayed
        # error): its message says it all, a traceback would only repeat it.
        trace = exc.__traceback__ is not None and not isinstance(exc, RemoteError)
        entry.warning("%s %s failed: %s: %s", "notification" if notify else "call", name,
                      type(exc).__name__, exc, exc_info=exc if trace else None)

    @property
    def methods(self) -> List[str]:
        """Every registered "Service.Method" name, sorted (built-in "_" services left out)."""
        return sorted(k.decode() for k in self.handlers if not k.startswith(b"_"))

    def handlers_sorted(self) -> List[Handler]:
        """Every handler, built-in ones included, by name."""
        return sorted(list(self.handlers.values()), key=lambda h: h.name)

    def service_doc(self, service: str) -> Optional[str]:
        """The docstring of the class registered as `service` (None: a function, or none)."""
        return self._docs.get(service)

    def lookup(self, method: str) -> Optional[Handler]:
        """The handler of `method`, or None."""
        return self.handlers.get(method.encode("utf-8", "surrogateescape"))

    def not_found(self, method: str) -> str:
        """The error text for a call of a method that does not exist (net/rpc's)."""
        return not_found_message(method, self.services)

    def annotation(self, handler: Handler, key: str, make: Callable[[Handler], Any]) -> Any:
        """Data derived from `handler` once (e.g. its Go signature), cached per handler."""
        cache_key = f"{key}:{handler.name}"
        entry = self._annotations.get(cache_key)
        if entry is None or entry[0] is not handler:
            entry = self._annotations[cache_key] = (handler, make(handler))
        return entry[1]

    def call_counts(self) -> Dict[str, int]:
        """Calls each method was asked to serve, by any protocol."""
        return {h.name: h.calls for h in list(self.handlers.values())}

    # running -----------------------------------------------------------------------
    def executor(self) -> concurrent.futures.ThreadPoolExecutor:
        """The pool @blocking handlers run in."""
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = concurrent.futures.ThreadPoolExecutor(
                        max_workers=self.max_workers, thread_name_prefix="fastrpc-handler")
        return self._pool

    def start(self, loop: asyncio.AbstractEventLoop, handler: Handler, args: tuple[Any, ...],
              deadline: Optional[float], meta: Any, kwargs: Optional[dict[Any, Any]] = None,
              peer: Any = None) -> asyncio.Future[Any]:
        """Run a handler that does not run inline: an ``async def`` as a task,
        cancelled at `deadline` (monotonic, None: none); a @blocking one in the
        pool, not started once `deadline` passed. Either sees `deadline` and
        `meta` through fastrpc.current_call(). Raises what calling it raises."""
        # The handler's context carries the caller's deadline and metadata to
        # the calls it makes in turn.
        ctx = serving(handler.name, deadline, meta, peer)
        if handler.mode == MODE_ASYNC:
            coro = handler.func(*args) if kwargs is None else handler.func(*args, **kwargs)
            return self._task(loop, ctx, coro, deadline)
        call = functools.partial(handler.func, *args, **(kwargs or {}))
        if deadline is not None:
            # A call that waited in the pool's queue past its caller's
            # timeout is not started: nobody wants its result.
            call = functools.partial(_unless_late, deadline, handler.name, call)
        return loop.run_in_executor(self.executor(), functools.partial(ctx.run, call))

    def start_stream(self, loop: asyncio.AbstractEventLoop, name: str, coro: Any,
                     deadline: Optional[float], meta: Any, peer: Any = None) -> asyncio.Future[Any]:
        """Run the coroutine driving a stream as a task, seen by
        ``fastrpc.current_call()`` as a call of `name`, cancelled at `deadline`."""
        return self._task(loop, serving(name, deadline, meta, peer), coro, deadline)

    def _task(self, loop: asyncio.AbstractEventLoop, ctx: Any, coro: Any,
              deadline: Optional[float]) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = ctx.run(loop.create_task, coro)
        if deadline is not None:
            # The caller stops waiting at its deadline: stop the work too.
            self.deadline_timers[fut] = loop.call_later(max(0.0, deadline - time.monotonic()), _cancel, fut)
            fut.add_done_callback(self._end_timer)
        return fut

    def _end_timer(self, fut: asyncio.Future[Any]) -> None:
        timer = self.deadline_timers.pop(fut, None)
        if timer is not None:
            timer.cancel()                  # done first: the timer need not live on

    def start_awaitable(self, loop: asyncio.AbstractEventLoop, awaitable: Any) -> asyncio.Future[Any]:
        """A plain handler returned an awaitable: run it as a task."""
        fut: asyncio.Future[Any] = asyncio.ensure_future(awaitable, loop=loop)
        return fut

    @staticmethod
    def outcome(name: str, deadline: Optional[float], fut: asyncio.Future[Any]) -> Outcome:
        """What a finished handler answers: its result, or the error to report.

        Cancelled at or after its deadline: DeadlineExceeded; cancelled
        before (the caller withdrew it): CancelledError. A TimeoutError
        raised once the deadline has passed (a call the handler made ran
        out of the same deadline) is reported as DeadlineExceeded too.
        """
        if fut.cancelled():
            if _cancelled_at_deadline(fut):
                return None, DeadlineExceeded(message=f"{name} was cancelled at its deadline")
            return None, asyncio.CancelledError(f"{name} was cancelled")
        late = deadline is not None and time.monotonic() >= deadline
        exc = fut.exception()
        if exc is None:
            return fut.result(), None
        if late and isinstance(exc, TimeoutError) and not isinstance(exc, DeadlineExceeded):
            return None, DeadlineExceeded(message=f"{name} ran out of its caller's deadline: {exc}")
        return None, exc

    def shutdown(self) -> None:
        """Stop the pool (calls queued there are not started)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


def _error_name(exc: BaseException) -> str:
    """The error type a caller sees for `exc` (as the replies name it)."""
    if isinstance(exc, asyncio.CancelledError):
        return "Cancelled"
    if isinstance(exc, DeadlineExceeded):
        return exc.type
    return error_type_name(exc)


# The message a handler's task is cancelled with when its deadline passes
# (timers may fire a little before time.monotonic() reaches the deadline).
_AT_DEADLINE = "fastrpc: the caller's deadline passed"
# The tasks cancelled because their deadline passed. Kept aside rather than
# read back from the CancelledError's message: before Python 3.11 a task's
# result() raises a CancelledError without the message given to cancel().
_deadline_cancelled: "weakref.WeakSet[asyncio.Future[Any]]" = weakref.WeakSet()


def _cancel(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        _deadline_cancelled.add(fut)
        fut.cancel(_AT_DEADLINE)


def _cancelled_at_deadline(fut: asyncio.Future[Any]) -> bool:
    return fut in _deadline_cancelled
