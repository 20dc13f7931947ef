"""AsyncBalancer: the asyncio balancer, the driver of BalancerCore over AsyncClients.

Owns the I/O of balanced calls in asyncio code: one AsyncClient per
endpoint (connected on first use), sending attempts on their connections,
dialing in a task when a retry needs a new connection, hedges and
timeouts on the loop's timers, and the health-check task. What a call does
is the compiled call path's and the Planner's, exactly as for Balancer.
"""
from __future__ import annotations

import asyncio
import logging
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

from fastrpc._core.calltable import call_args
from fastrpc._core.codec import packb
from fastrpc._core.balance import Attempt, Member, async_balancer_call
from fastrpc.balancer import fleet
from fastrpc.balancer.core import BalancerCore
from fastrpc.balancer.map import MapWindow
from fastrpc.balancer.streams import AsyncBalancedRoute, balanced_stream
from fastrpc.client.aio import AsyncClient
from fastrpc.client.stream import AsyncStream
from fastrpc.errors import ConnectionClosedError, ConnectionError, RPCError, TimeoutError
from fastrpc.interceptors import ClientCall, amap_through, async_client_chain, base_metadata, check_interceptors, \
    tell_endpoint
from fastrpc.net.endpoint import Endpoint
from fastrpc.net.loop import coroutine_method

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from fastrpc.net.options import BalancerOptions

__all__ = ["AsyncBalancer"]

log = logging.getLogger("fastrpc.balancer")

Key = Union[str, bytes, int, None]


class AsyncBalancer(BalancerCore):
    """Spreads asyncio calls over many endpoints; same settings and semantics as Balancer.

    ``async with AsyncBalancer([...], strategy="p2c_ewma") as b: await b.call(...)``.
    Health checks run as a task on the loop of the first call (or of
    ``async with``); ``await close()`` stops them and closes the connections.
    """

    def __init__(self, endpoints: Iterable[Union[str, Endpoint]] = (), **settings: Unpack[BalancerOptions]) -> None:
        self._health_task: Optional[asyncio.Task[Any]] = None
        super().__init__(endpoints, **settings)
        self.interceptors = check_interceptors(self.interceptors, allow_async=True)
        self._chain = async_client_chain(self.interceptors, self._send_intercepted) if self.interceptors else None
        self.planner.driver = self
        self.pool.start_health = True                    # the first call starts the health checks

    # connections ------------------------------------------------------------------
    def _client(self, member: Member) -> AsyncClient:
        client: Optional[AsyncClient] = member.client
        if client is None:
            if member.removed or self._closed:
                raise ConnectionClosedError(f"endpoint {member.endpoint.address} was removed")
            self.pool.loop = asyncio.get_running_loop()       # where the connections live
            client = member.client = AsyncClient(member.endpoint.address, **self.client_settings)
        return client

    async def _ready(self, member: Member) -> Any:
        """A usable connection to `member` (connecting if needed); ConnectError when none."""
        conn = await self._client(member).connection()
        member.conn = conn
        return conn

    async def _ready_by(self, member: Member, deadline: float) -> Any:
        """_ready(member), or None when `deadline` (monotonic; 0: none) passes
        first: the dial then goes on in its task (connect_timeout bounds it),
        so a call's timeout bounds its wait."""
        conn = member.conn
        if not deadline or (conn is not None and conn.usable):
            return await self._ready(member)
        dialing = asyncio.ensure_future(self._ready(member))
        done, _ = await asyncio.wait([dialing], timeout=max(0.0, deadline - time.monotonic()))
        if dialing in done:
            return dialing.result()
        dialing.add_done_callback(_retrieved)       # its outcome, if an error, is nobody's
        return None

    def _close_client(self, client: AsyncClient) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None:
            running.create_task(client.close())
        elif self.pool.loop is not None and not self.pool.loop.is_closed():
            # Removed from another thread (a discovery watch): close on the
            # connections' own loop.
            try:
                asyncio.run_coroutine_threadsafe(client.close(), self.pool.loop)
            except RuntimeError:
                pass    # the loop stopped meanwhile: the connection went with it

    def resend(self, attempt: Attempt) -> None:
        """Send an attempt whose endpoint is chosen (a retry or a hedge); one that
        needs a connection first connects in a task."""
        conn = attempt.member.conn
        if conn is not None and conn.usable:
            self._send(attempt, conn)
        else:
            asyncio.get_running_loop().create_task(self._dial_and_send(attempt))

    def _send(self, attempt: Attempt, conn: Any) -> None:
        try:
            self.pool.send(attempt, conn)
        except Exception as exc:
            self.planner.give_up_unsent(attempt, exc)

    async def _dial_and_send(self, attempt: Attempt) -> None:
        try:
            conn = await self._ready(attempt.member)
        except (ConnectionError, TimeoutError) as exc:
            if self.planner.still_wanted(attempt):
                self.planner.give_up_unsent(attempt, exc)
            return
        if self.planner.still_wanted(attempt):
            self._send(attempt, conn)

    def _ensure_health(self) -> None:
        if self._health_task is None and self.health_interval > 0 and not self._closed:
            self._health_task = asyncio.get_running_loop().create_task(
                _health_loop(weakref.ref(self), self.health_interval))
        self.pool.start_health = False

    # calls -----------------------------------------------------------------------
    # call() is compiled (fastrpc._core.balance): no Python coroutine per call.
    call = coroutine_method(async_balancer_call)

    async def _call_intercepted(self, method: str, args: Tuple[Any, ...], kwargs: Dict[str, Any], key: Key,
                                timeout: Optional[float], idempotent: Optional[bool]) -> Any:
        """call() through the interceptors."""
        assert self._chain is not None          # the compiled call() comes here only with interceptors
        return await self._chain(ClientCall(method, args, kwargs, base_metadata(self.call_settings.metadata),
                                            timeout, self.name, key=key, idempotent=idempotent, balanced=True))

    async def _send_intercepted(self, call: ClientCall) -> Any:
        """The end of the interceptor chain: the balanced call as the
        interceptors left it; tells `call` which endpoint answered."""
        payload = call.args if not call.kwargs else call_args(call.args, call.kwargs)
        return await self._balanced(call.method, payload, call.key, call.timeout, call.idempotent,
                                    packb(call.metadata) if call.metadata else None, call, call.attempts)

    async def _balanced(self, method: str, payload: Any, key: Key, timeout: Optional[float],
                        idempotent: Optional[bool], meta: Optional[bytes], call: Optional[ClientCall],
                        observer: Any = None) -> Any:
        """One balanced call: pick, send (connecting first if needed), wait, count."""
        if self.pool.start_health:
            self._ensure_health()
        loop = self.pool.loop or asyncio.get_running_loop()   # the connections' loop, as call() uses
        future, attempt, sent, timers = self.pool.go_async(
            loop, self.pool.settings, method, payload, key, timeout, idempotent, self, meta, observer)
        if not sent:
            # Connect in a task: the call's timeout runs meanwhile.
            loop.create_task(self._dial_and_send(attempt))
        stats = self.pool.stats.method(method)
        begun = time.monotonic()
        error: Optional[BaseException] = None
        try:
            result = await future
        except asyncio.CancelledError:
            if not future.done() or future.cancelled():
                self.planner.withdraw(attempt)      # the caller's task was cancelled
            if stats is not None:
                stats.record(time.monotonic() - begun, "Cancelled")
            raise
        except BaseException as exc:
            if stats is not None:
                stats.record(time.monotonic() - begun, exc)
            error = exc
            raise
        finally:
            if timers is not None:
                for timer in timers:
                    timer.cancel()
            if call is not None:
                tell_endpoint(call, attempt, error)
        if stats is not None:
            stats.record(time.monotonic() - begun, None)
        return result

    def _expire(self, attempt: Attempt, future: asyncio.Future[Any]) -> None:
        if not future.done():
            self.planner.expire(attempt)

    def stream(self, method: str, *args: Any, key: Key = None, timeout: Optional[float] = None,
               idempotent: Optional[bool] = None, send: Any = None,
               window: Optional[Tuple[int, int]] = None, **kwargs: Any) -> AsyncStream:
        """Open a stream on the endpoint the strategy picks (see Balancer.stream);
        it opens on first use."""
        stream: AsyncStream = balanced_stream(self, AsyncBalancedRoute, AsyncStream, method, args, kwargs, key, timeout, idempotent,
                                   send, window)
        return stream

    def go(self, method: str, *args: Any, key: Key = None, timeout: Optional[float] = None,
           idempotent: Optional[bool] = None, **kwargs: Any) -> asyncio.Task[Any]:
        """Start a call as a task (cancel it to withdraw the call)."""
        return asyncio.get_running_loop().create_task(
            self.call(method, *args, key=key, timeout=timeout, idempotent=idempotent, **kwargs))

    async def map(self, method: str, args_iterable: Iterable[Any], *, keys: Optional[Iterable[Any]] = None,
                  timeout: Optional[float] = None, idempotent: Optional[bool] = None,
                  return_exceptions: bool = False, window: int = 1024) -> List[Any]:
        """Call `method` once per item, spread over the endpoints; results in order.

        As Balancer.map: the items picked for one endpoint go out as one
        pipelined batch, at most `window` items in flight, more picked as
        batches complete.
        """
        if self._chain is not None:
            if keys is not None:
                raise TypeError("map(keys=...) through interceptors: call() with key= per item instead")
            return await amap_through(self.call, method, list(args_iterable), return_exceptions, window,
                                      timeout=timeout, idempotent=idempotent)
        if self.pool.start_health:
            self._ensure_health()
        job = self.map_job(method, args_iterable, keys, timeout, idempotent)
        loop = asyncio.get_running_loop()
        flight = MapWindow(window)
        try:
            while True:
                if flight.wants(job):
                    for member, positions in job.pick(job.take(flight.room)):
                        try:
                            conn = await self._ready_by(member, job.deadline)
                        except (ConnectionError, TimeoutError) as exc:   # not sent
                            job.unsent(member, positions, exc)
                            continue
                        if conn is None:
                            job.still_connecting(member, positions)
                            continue
                        share = job.send(member, conn, positions)
                        if share is not None:
                            flight.add(share)
                if not flight.live:
                    if job.pending:
                        continue                # items to send again (retries)
                    break
                if not flight.done():
                    waiter = loop.create_future()     # resolved as the first share completes
                    resolve = _resolver(waiter)
                    for share in flight.live:
                        share.batch.on_progress = resolve
                    remaining = None if not job.deadline else max(0.0, job.deadline - time.monotonic())
                    await asyncio.wait([waiter], timeout=remaining)
                flight.settle(job)
        except BaseException:                   # cancelled: nothing of it may stay in flight
            job.abandon(flight.live)
            raise
        return job.outcome(return_exceptions)

    async def notify(self, method: str, *args: Any, key: Key = None, **kwargs: Any) -> None:
        """Send a one-way call to the picked endpoint (retried elsewhere only if not sent)."""
        plan = self.planner.notify_plan(self.pool.key_hash_for(key))
        member = next(plan)
        while True:
            try:
                await self._client(member).notify(method, *args, **kwargs)
            except (ConnectionError, TimeoutError) as exc:
                member = plan.send(exc)             # the next endpoint, or the final error
                continue
            for _ in plan:                          # sent: the plan accounts for it and ends
                pass
            return

    # fleet-wide calls ------------------------------------------------------------------
    async def broadcast(self, method: str, *args: Any, timeout: Optional[float] = None,
                        return_exceptions: bool = False, **kwargs: Any) -> Dict[str, Any]:
        """Call `method` on every endpoint at once; return each one's result by
        address. As Balancer.broadcast: FleetCallError unless every endpoint
        succeeded (or ``return_exceptions=True``), bounded by `timeout`."""
        deadline = fleet.deadline_for(self, timeout)
        tasks = self._fan_out(method, args, kwargs, deadline)
        try:
            await asyncio.wait(tasks.values(), timeout=fleet.remaining(deadline))
            results = {address: _outcome(method, address, task) for address, task in tasks.items()}
        finally:
            await _withdraw(tasks.values())
        return fleet.broadcast_outcome(method, results, return_exceptions)

    async def fork(self, method: str, *args: Any, timeout: Optional[float] = None, **kwargs: Any) -> Any:
        """Call `method` on every endpoint at once; return the first success and
        cancel the other calls. As Balancer.fork: FleetCallError when every
        endpoint failed or `timeout` passed first."""
        deadline = fleet.deadline_for(self, timeout)
        tasks = self._fan_out(method, args, kwargs, deadline)
        address_of = {task: address for address, task in tasks.items()}
        results: Dict[str, Any] = {}
        pending = set(tasks.values())
        try:
            while pending:
                done, pending = await asyncio.wait(pending, timeout=fleet.remaining(deadline),
                                                   return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    break
                for task in done:
                    outcome = _outcome(method, address_of[task], task)
                    if not isinstance(outcome, BaseException):
                        return outcome
                    results[address_of[task]] = outcome
        finally:
            await _withdraw(tasks.values())
        for address in tasks:
            results.setdefault(address, fleet.timed_out(method, address))
        raise fleet.fork_failure(method, results)

    def _fan_out(self, method: str, args: tuple[Any, ...], kwargs: Dict[str, Any],
                 deadline: Optional[float]) -> Dict[str, asyncio.Task[Any]]:
        """A task per endpoint, each connecting if needed and making the call."""
        loop = asyncio.get_running_loop()
        tasks = {}
        for member in fleet.members_for(self):
            task = loop.create_task(self._call_one(member, method, args, kwargs, deadline))
            task.add_done_callback(_retrieve)
            tasks[member.endpoint.address] = task
        return tasks

    async def _call_one(self, member: Member, method: str, args: tuple[Any, ...], kwargs: Dict[str, Any],
                        deadline: Optional[float]) -> Any:
        return await self._client(member).call(method, *args, timeout=fleet.remaining(deadline), **kwargs)

    # health --------------------------------------------------------------------------
    async def check_health(self) -> None:
        """Ping every endpoint once now (what the health task does every health_interval)."""
        await asyncio.gather(*(self._check(m) for m in list(self._members)))

    async def _check(self, member: Member) -> None:
        method, args, options = self.health_call()
        try:
            client = self._client(member)
            if method is None:
                await client.ping(self.health_timeout)
            else:
                await client.call(method, *args, timeout=self.health_timeout, **options)
        except (RPCError, OSError):
            self.health_result(member, False, None)
            return
        self.health_result(member, not client.draining, client.server_load)

    # lifecycle -----------------------------------------------------------------------
    async def close(self) -> None:
        """Stop health checks and close every connection; pending calls fail."""
        members = self._mark_closed()
        if self._health_task is not None:
            self._health_task.cancel()
        for member in members:
            client, member.client, member.conn = member.client, None, None
            if client is not None:
                await client.close()

    async def __aenter__(self) -> "AsyncBalancer":
        self._ensure_health()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


def _outcome(method: str, address: str, task: asyncio.Task[Any]) -> Any:
    """A fleet call's task: its result, its exception, or TimeoutError if it
    had not finished by the deadline."""
    if not task.done() or task.cancelled():
        return fleet.timed_out(method, address)
    exc = task.exception()
    return exc if exc is not None else task.result()


async def _withdraw(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel the fleet tasks still running and let them withdraw their calls
    (the servers are told to cancel) before the fleet call returns."""
    running = [task for task in tasks if not task.done()]
    for task in running:
        task.cancel()
    if running:
        await asyncio.wait(running)


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a fleet task's exception as seen (it is reported in the outcome,
    or the task was cancelled after a fork's first success)."""
    if not task.cancelled():
        task.exception()


def _resolver(waiter: asyncio.Future[Any]) -> Callable[[], None]:
    def resolve() -> None:
        if not waiter.done():
            waiter.set_result(None)
    return resolve


async def _health_loop(ref: Any, interval: float) -> None:
    """Ping every endpoint each `interval` while the balancer lives."""
    while True:
        await asyncio.sleep(interval)
        balancer = ref()
        if balancer is None or balancer.closed:
            return
        try:
            await balancer.check_health()
            balancer.maintain()
        except Exception:
            log.exception("health check failed")
        del balancer


def _retrieved(task: "asyncio.Future[Any]") -> None:
    """Mark a task's outcome as seen (a dial nobody waits for any more)."""
    if not task.cancelled():
        task.exception()
