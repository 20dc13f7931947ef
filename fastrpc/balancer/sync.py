"""Balancer: the blocking, thread-safe balancer, the driver of BalancerCore over Clients.

Owns the I/O of balanced calls in blocking code: one Client per endpoint
(dialled on first use), sending attempts on their connections, dialing
off the reading thread when a retry needs a new connection, hedges on the
engine's timers, and the health-check thread. What a call does is the
compiled call path's and the Planner's.
"""
from __future__ import annotations

import concurrent.futures
import functools
import logging
import queue
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Tuple, Union, cast

from fastrpc._core.balance import Attempt, Member, balancer_call, balancer_go
from fastrpc._core.calltable import CallFuture, Progress, call_args
from fastrpc._core.codec import packb
from fastrpc.balancer import fleet
from fastrpc.balancer.core import BalancerCore
from fastrpc.balancer.map import MapWindow
from fastrpc.balancer.plan import RetryBudget
from fastrpc.balancer.streams import BalancedRoute, balanced_stream
from fastrpc.client import engine as engines
from fastrpc.client.stream import Stream
from fastrpc.client.sync import Client
from fastrpc.errors import ConnectionClosedError, ConnectionError, RPCError, TimeoutError
from fastrpc.interceptors import (ClientCall, base_metadata, chain_pool, check_interceptors, client_chain,
                                  map_through, tell_endpoint)
from fastrpc.net.endpoint import Endpoint

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from fastrpc.net.options import BalancerOptions

__all__ = ["Balancer", "RetryBudget"]

log = logging.getLogger("fastrpc.balancer")

Key = Union[str, bytes, int, None]


class Balancer(BalancerCore):
    """A blocking, thread-safe client that spreads calls over many endpoints.

    ``Balancer(["tcp://127.0.0.1:7001", Endpoint("tcp://...", weight=5)],
    strategy="p2c")`` then ``call``, ``go``, ``map`` and ``notify`` as on
    Client, plus ``key=`` (consistent_hash) and ``idempotent=`` per call.
    Each endpoint gets one Client, dialled on first use. See BalancerCore
    for the balancing settings; other keyword arguments (timeout,
    connect_timeout, max_frame_size...) configure those Clients.
    """

    def __init__(self, endpoints: Iterable[Union[str, Endpoint]] = (), **settings: Unpack[BalancerOptions]) -> None:
        super().__init__(endpoints, **settings)
        self.interceptors = check_interceptors(self.interceptors, allow_async=False)
        self._chain = client_chain(self.interceptors, self._send_intercepted) if self.interceptors else None
        self.planner.driver = self
        self.pool.engine = engines.engine()
        self._health_stop = threading.Event()
        self._health_thread: Optional[threading.Thread] = None
        self._pool_executor: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self._fleet_executor: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self._start_health()
        engines.reset_after_fork(self)

    # connections --------------------------------------------------------------------
    def _client(self, member: Member) -> Client:
        client: Optional[Client] = member.client
        if client is not None:
            return client
        with member.dial_lock:
            if member.client is None:
                if member.removed or self._closed:
                    raise ConnectionClosedError(f"endpoint {member.endpoint.address} was removed")
                member.client = Client(member.endpoint.address, **self.client_settings)
            return cast(Client, member.client)

    def _ready(self, member: Member) -> Any:
        """A usable connection to `member` (dialing if needed); ConnectError when none."""
        conn = self._client(member).connection()
        member.conn = conn
        return conn

    def _ready_by(self, member: Member, deadline: float) -> Any:
        """_ready(member), or None when `deadline` (monotonic; 0: none) passes
        first: a dial needed then runs on the engine's dial threads and goes on
        (connect_timeout bounds it), so a call's timeout bounds its wait."""
        conn = member.conn
        if not deadline or (conn is not None and conn.usable):
            return self._ready(member)
        dialing: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def dial() -> None:
            try:
                dialing.set_result(self._ready(member))
            except BaseException as exc:
                dialing.set_exception(exc)
        engines.engine().dial(dial)
        concurrent.futures.wait([dialing], max(0.0, deadline - time.monotonic()))
        return dialing.result() if dialing.done() else None

    def _close_client(self, client: Any) -> None:
        client.close()

    def resend(self, attempt: Attempt) -> None:
        """Send an attempt whose endpoint is chosen (a retry or a hedge).

        Called where a reply or a failure was just processed: a dial would
        stall every caller waiting on that thread, so it happens on the
        engine's dial threads instead.
        """
        conn = attempt.member.conn
        if conn is not None and conn.usable:
            self._send(attempt, conn, flush=True)
        else:
            self.dial_later(attempt)

    def dial_later(self, attempt: Attempt) -> None:
        """Connect to the endpoint picked for `attempt` on the engine's dial
        threads, then send it (unless the call has ended meanwhile)."""
        engines.engine().dial(functools.partial(self.dial_and_send, attempt, True))

    def _send(self, attempt: Attempt, conn: Any, flush: bool) -> None:
        try:
            self.pool.send(attempt, conn)
        except Exception as exc:
            self.planner.give_up_unsent(attempt, exc)
            return
        if flush:
            conn.flush()        # a retry or hedge: whoever waits may be polling already

    def dial_and_send(self, attempt: Attempt, flush: bool = False) -> None:
        """Connect to the endpoint picked for `attempt` (blocking), then send it;
        failures go to the planner like any failed attempt."""
        try:
            conn = self._ready(attempt.member)
        except (ConnectionError, TimeoutError) as exc:
            if self.planner.still_wanted(attempt):
                self.planner.give_up_unsent(attempt, exc)
            return
        if self.planner.still_wanted(attempt):
            self._send(attempt, conn, flush)

    # calls ----------------------------------------------------------------------------
    # go() and call() are compiled (fastrpc._core.balance): no Python frame per call.
    go = balancer_go
    call = balancer_call

    def _go_intercepted(self, method: str, args: Tuple[Any, ...], kwargs: Dict[str, Any], key: Key,
                        timeout: Optional[float], idempotent: Optional[bool]) -> CallFuture:
        """go() through the interceptors: call() in the interceptors' pool."""
        return chain_pool().submit(self.call, method, *args, key=key, timeout=timeout,  # type: ignore[return-value]
                                   idempotent=idempotent, **kwargs)

    def _call_intercepted(self, method: str, args: Tuple[Any, ...], kwargs: Dict[str, Any], key: Key,
                          timeout: Optional[float], idempotent: Optional[bool]) -> Any:
        """call() through the interceptors."""
        assert self._chain is not None          # the compiled call() comes here only with interceptors
        return self._chain(ClientCall(method, args, kwargs, base_metadata(self.call_settings.metadata), timeout,
                                      self.name, key=key, idempotent=idempotent, balanced=True))

    def stream(self, method: str, *args: Any, key: Key = None, timeout: Optional[float] = None,
               idempotent: Optional[bool] = None, send: Optional[Iterable[Any]] = None,
               window: Optional[Tuple[int, int]] = None, **kwargs: Any) -> Stream:
        """Open a stream on the endpoint the strategy picks (see Client.stream);
        it stays there for its life. One that fails before anything was
        received or sent is opened again elsewhere, by the rules for a call
        (fastrpc.balancer.streams)."""
        stream: Stream = balanced_stream(self, BalancedRoute, Stream, method, args, kwargs, key, timeout, idempotent,
                                   send, window)
        return stream

    @staticmethod
    def _wait(future: CallFuture) -> Any:
        try:
            return future.result()
        except BaseException:
            if not future.done():               # interrupted (KeyboardInterrupt): withdraw
                future.cancel()
            raise

    def _send_intercepted(self, call: ClientCall) -> Any:
        """The end of the interceptor chain: the balanced call as the
        interceptors left it; tells `call` which endpoint answered."""
        payload = call.args if not call.kwargs else call_args(call.args, call.kwargs)
        future = self.pool.go(self.call_settings.per_call, call.method, payload, call.key, call.timeout,
                              call.idempotent, packb(call.metadata) if call.metadata else None, call.attempts)
        head = future.source
        try:
            return self._wait(future)
        except BaseException as exc:
            tell_endpoint(call, head, exc)
            raise
        finally:
            if call.endpoint is None:
                tell_endpoint(call, head, None)

    def map(self, method: str, args_iterable: Iterable[Any], *, keys: Optional[Iterable[Any]] = None,
            timeout: Optional[float] = None, idempotent: Optional[bool] = None,
            return_exceptions: bool = False, window: int = 1024) -> List[Any]:
        """Call `method` once per item, spread over the endpoints; return the results in order.

        Items are as in Client.map (a tuple is the argument list, anything
        else the one argument); `keys` gives each item its key for
        consistent_hash. Each item is picked as a call() would be, and the
        items picked for one endpoint go out as one pipelined batch that
        carries the call's deadline and metadata; at most `window` items
        are in flight (as in Client.map), more are picked as batches
        complete, so a fast endpoint takes more of a long map than a slow
        one under the load-aware strategies. Failed items are retried
        as call() retries. Every item completes before this returns; the
        first error (by position, naming the endpoints its item tried) is
        then raised, unless `return_exceptions` puts exceptions in the list.
        """
        if self._chain is not None:
            items = list(args_iterable)
            if keys is not None:
                raise TypeError("map(keys=...) through interceptors: call() with key= per item instead")
            return map_through(self.go, method, items, return_exceptions, timeout=timeout, idempotent=idempotent)
        job = self.map_job(method, args_iterable, keys, timeout, idempotent)
        engine = engines.engine()
        flight = MapWindow(window)
        progress = Progress()                   # fired as each share completes
        try:
            while True:
                if flight.wants(job):
                    for member, positions in job.pick(job.take(flight.room)):
                        try:
                            conn = self._ready_by(member, job.deadline)
                        except (ConnectionError, TimeoutError) as exc:   # not sent
                            job.unsent(member, positions, exc)
                            continue
                        if conn is None:
                            job.still_connecting(member, positions)
                            continue
                        share = job.send(member, conn, positions)
                        if share is not None:
                            share.batch.on_progress = progress.fire
                            flight.add(share)
                if not flight.live:
                    if job.pending:
                        continue                    # items to send again (retries)
                    break
                progress.reset()
                if not flight.done():
                    engine.wait(progress, job.deadline or None)
                flight.settle(job)
        except BaseException:                   # interrupted: nothing of it may stay in flight
            job.abandon(flight.live)
            raise
        return job.outcome(return_exceptions)

    def notify(self, method: str, *args: Any, key: Key = None, **kwargs: Any) -> None:
        """Send a one-way call to the picked endpoint (retried elsewhere only if not sent)."""
        plan = self.planner.notify_plan(self.pool.key_hash_for(key))
        member = next(plan)
        while True:
            try:
                self._client(member).notify(method, *args, **kwargs)
            except (ConnectionError, TimeoutError) as exc:
                member = plan.send(exc)             # the next endpoint, or the final error
                continue
            for _ in plan:                          # sent: the plan accounts for it and ends
                pass
            return

    # fleet-wide calls --------------------------------------------------------------------
    def broadcast(self, method: str, *args: Any, timeout: Optional[float] = None,
                  return_exceptions: bool = False, **kwargs: Any) -> Dict[str, Any]:
        """Call `method` on every endpoint at once; return each one's result by address.

        Every endpoint the balancer knows is called, ejected ones included
        (they answer with their error). The call succeeds only if every
        endpoint's does: otherwise FleetCallError, whose ``results`` hold
        every result and exception (``return_exceptions=True`` returns that
        dict instead). `timeout` (default: the balancer's) bounds the whole
        call, connecting included; an endpoint that has not answered by then
        has a TimeoutError and its call is cancelled. Nothing is retried.
        """
        deadline = fleet.deadline_for(self, timeout)
        calls = self._fan_out(method, args, kwargs, deadline)
        try:
            results = {address: self._settle(method, address, started, deadline)
                       for address, started in calls.items()}
        finally:
            for started in calls.values():
                _cancel(started)            # only those still running (interrupted, timed out)
        return fleet.broadcast_outcome(method, results, return_exceptions)

    def fork(self, method: str, *args: Any, timeout: Optional[float] = None, **kwargs: Any) -> Any:
        """Call `method` on every endpoint at once; return the first success and
        cancel the other calls.

        Raises FleetCallError (``results``: each endpoint's exception) when
        every endpoint failed or `timeout` (default: the balancer's) passed
        first. A RemoteError from one endpoint does not end the call while
        another may still succeed.
        """
        deadline = fleet.deadline_for(self, timeout)
        calls = self._fan_out(method, args, kwargs, deadline)
        finished: "queue.SimpleQueue[str]" = queue.SimpleQueue()
        for address, started in calls.items():
            _when_done(started, functools.partial(finished.put, address))
        results: Dict[str, Any] = {}
        try:
            while len(results) < len(calls):
                try:
                    address = finished.get(timeout=fleet.remaining(deadline))
                except queue.Empty:
                    break
                outcome = self._settle(method, address, calls[address], deadline)
                if not isinstance(outcome, BaseException):
                    return outcome
                results[address] = outcome
        finally:
            for started in calls.values():
                _cancel(started)
        for address in calls:
            results.setdefault(address, fleet.timed_out(method, address))
        raise fleet.fork_failure(method, results)

    def _fan_out(self, method: str, args: tuple[Any, ...], kwargs: Dict[str, Any],
                 deadline: Optional[float]) -> Dict[str, Any]:
        """Start the call on every endpoint: at once where a connection is up,
        on the fleet threads where one must be dialled (so a slow dial does not
        hold up the others). Each value is the CallFuture, or a Future of it."""
        calls: Dict[str, Any] = {}
        for member in fleet.members_for(self):
            conn = member.conn
            if conn is not None and conn.usable:
                calls[member.endpoint.address] = self._start_one(member, method, args, kwargs, deadline)
            else:
                calls[member.endpoint.address] = self._fleet_pool().submit(
                    self._start_one, member, method, args, kwargs, deadline)
        return calls

    def _start_one(self, member: Member, method: str, args: tuple[Any, ...], kwargs: Dict[str, Any],
                   deadline: Optional[float]) -> Any:
        try:
            return self._client(member).go(method, *args, timeout=fleet.remaining(deadline), **kwargs)
        except Exception as exc:
            failed: concurrent.futures.Future[Any] = concurrent.futures.Future()
            failed.set_exception(exc)
            return failed

    @staticmethod
    def _settle(method: str, address: str, started: Any, deadline: Optional[float]) -> Any:
        """One endpoint's result or exception, waiting until `deadline` at most."""
        try:
            call = started if isinstance(started, CallFuture) else started.result(fleet.remaining(deadline))
            return call.result(fleet.remaining(deadline))
        except (concurrent.futures.TimeoutError, TimeoutError) as exc:
            if isinstance(exc, RPCError):
                return exc                  # the call's own timeout (it carries the deadline)
            return fleet.timed_out(method, address)
        except concurrent.futures.CancelledError:
            return fleet.timed_out(method, address)
        except Exception as exc:
            return exc

    def _fleet_pool(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._lock:
            if self._fleet_executor is None:
                self._fleet_executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=16, thread_name_prefix="fastrpc-fleet")
            return self._fleet_executor

    # health ----------------------------------------------------------------------------
    def _start_health(self) -> None:
        if self.health_interval > 0:
            self._health_stop = threading.Event()
            self._health_thread = threading.Thread(
                target=_health_loop, args=(weakref.ref(self), self._health_stop, self.health_interval),
                name="fastrpc-health", daemon=True)
            self._health_thread.start()

    def check_health(self) -> None:
        """Ping every endpoint once now (what the health thread does every health_interval)."""
        members = list(self._members)
        if not members:
            return
        list(self._executor().map(self._check, members))

    def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._pool_executor is None:
            self._pool_executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=8, thread_name_prefix="fastrpc-health")
        return self._pool_executor

    def _check(self, member: Member) -> None:
        method, args, options = self.health_call()
        try:
            client = self._client(member)
            if method is None:
                client.ping(self.health_timeout)
            else:
                client.call(method, *args, timeout=self.health_timeout, **options)
        except (RPCError, OSError):
            self.health_result(member, False, None)
            return
        self.health_result(member, not client.draining, client.server_load)

    def reset_after_fork(self) -> None:
        """In a forked child: the health thread stayed with the parent; start ours.
        (Connections are abandoned by the engine and dialled anew.)"""
        self._pool_executor = None
        self._fleet_executor = None
        self.pool.engine = engines.engine()
        for member in list(self._members):
            member.conn = None
        if not self._closed:
            self._start_health()

    # lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        """Stop health checks and close every connection; pending calls fail."""
        members = self._mark_closed()
        self._health_stop.set()
        for member in members:
            self.close_member(member)
        for executor in (self._pool_executor, self._fleet_executor):
            if executor is not None:
                executor.shutdown(wait=False)

    def __enter__(self) -> "Balancer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _when_done(started: Any, fn: Callable[[], Any]) -> None:
    """Run fn() once the call behind `started` (a CallFuture, or a Future of
    one while it dials) has completed."""
    def dialled(future: Any) -> None:
        try:
            call = future.result()
        except BaseException:
            fn()
            return
        call.add_done_callback(lambda _: fn())
    if isinstance(started, CallFuture):
        started.add_done_callback(lambda _: fn())
    else:
        started.add_done_callback(dialled)


def _cancel(started: Any) -> None:
    """Withdraw the call behind `started` if it is still running (a call still
    dialling is cancelled as soon as it has been sent)."""
    if isinstance(started, CallFuture):
        started.cancel()
    else:
        started.add_done_callback(lambda future: _cancel(future.result()) if future.exception() is None else None)


def _health_loop(ref: Any, stop: threading.Event, interval: float) -> None:
    """Ping every endpoint each `interval` while the balancer lives."""
    while not stop.wait(interval):
        balancer = ref()
        if balancer is None or balancer.closed:
            return
        try:
            balancer.check_health()
            balancer.maintain()
        except Exception:
            log.exception("health check failed")
        del balancer
