"""AsyncBalancer: the asyncio twin of Balancer, over one AsyncClient per endpoint."""
from __future__ import annotations

import asyncio
import logging
import time
import weakref
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

from fastrpc.client.aio import AsyncClient
from fastrpc.balancer.sync import _FAILED, _OK, BalancerCore, _MapJob, _Member, _is_answer, _remaining
from fastrpc.net.endpoint import Endpoint
from fastrpc.context import bound_timeout
from fastrpc.errors import ConnectionClosedError, ConnectionError, RemoteError, RPCError, TimeoutError

__all__ = ["AsyncBalancer"]

log = logging.getLogger("fastrpc.balancer")

Key = Union[str, bytes, int, None]


class AsyncBalancer(BalancerCore):
    """Spreads asyncio calls over many endpoints; same settings and semantics as Balancer.

    ``async with AsyncBalancer([...], strategy="p2c_ewma") as b: await b.call(...)``.
    Health checks run as a task on the loop of the first call (or of
    ``async with``); ``await close()`` stops them and closes the connections.
    """

    def __init__(self, endpoints: Iterable[Union[str, Endpoint]] = (), **settings: Any) -> None:
        self._health_task: Optional[asyncio.Task] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None   # where the connections live
        super().__init__(endpoints, **self._take_client_settings(settings))

    def _client(self, member: _Member) -> AsyncClient:
        client = member.client
        if client is None:
            if member.removed or self._closed:
                raise ConnectionClosedError(f"endpoint {member.endpoint.address} was removed")
            self._loop = asyncio.get_running_loop()
            client = member.client = AsyncClient(member.endpoint.address, **self._client_settings)
        return client

    def _close_member(self, member: _Member) -> None:
        client, member.client = member.client, None
        if client is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None:
            running.create_task(client.close())
        elif self._loop is not None and not self._loop.is_closed():
            # Removed from another thread (a discovery watch): close on the
            # connections' own loop.
            try:
                asyncio.run_coroutine_threadsafe(client.close(), self._loop)
            except RuntimeError:
                pass    # the loop stopped meanwhile: the connection went with it

    def _ensure_health(self) -> None:
        if self._health_task is None and self.health_interval > 0 and not self._closed:
            self._health_task = asyncio.get_running_loop().create_task(
                _health_loop(weakref.ref(self), self.health_interval))

    # calls -----------------------------------------------------------------------
    async def call(self, method: str, *args: Any, key: Key = None, timeout: Optional[float] = None,
                   idempotent: Optional[bool] = None) -> Any:
        """Call `method` on the endpoint the strategy picks (see Balancer.call)."""
        if self._health_task is None:
            self._ensure_health()
        timeout = bound_timeout(timeout, self.timeout)
        idempotent = self.idempotent if idempotent is None else idempotent
        if self.failure == "backup" and idempotent:
            return await self._hedged(method, args, key, timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        key_hash = self._key_hash(key)
        self.retry_budget.deposit()
        tried: List[Tuple[_Member, BaseException]] = []
        pinned = None
        while True:
            member = self._next_member(method, key_hash, tried, pinned)
            client = None
            start = time.perf_counter()
            try:
                client = member.client or self._client(member)
                value = await client.call(method, *args, timeout=_remaining(deadline))
            except (ConnectionError, TimeoutError) as exc:   # incl. DeadlineExceeded: not an answer
                self._release(member, -1.0, _FAILED, None, since=start)
                tried.append((member, exc))
                if not self._may_retry(exc, idempotent, len(tried), deadline):
                    raise self._final_error(method, tried) from None
                pinned = member if self.failure == "failtry" else None
                continue
            except RemoteError as exc:
                self._release(member, time.perf_counter() - start, _OK, client.server_load)
                raise self._final_error(method, tried + [(member, exc)])
            except BaseException:           # cancelled, or an argument that cannot be encoded
                self._release(member, -1.0, _OK, None)
                raise
            self._release(member, time.perf_counter() - start, _OK, client.server_load)
            if client.draining:
                self._going_away(member)
            return value

    async def _hedged(self, method: str, args: tuple, key: Key, timeout: Optional[float]) -> Any:
        """"backup": a second attempt after backup_after; the first reply wins."""
        deadline = None if timeout is None else time.monotonic() + timeout
        key_hash = self._key_hash(key)
        self.retry_budget.deposit()
        tried: List[Tuple[_Member, BaseException]] = []
        running: Dict[asyncio.Task, Tuple[_Member, float, AsyncClient]] = {}

        def launch() -> None:
            busy = tried + [(m, None) for m, _, _ in running.values()]
            member = self._next_member(method, key_hash, busy)
            try:
                client = member.client or self._client(member)
            except RPCError as exc:
                self._release(member, -1.0, _FAILED, None)
                tried.append((member, exc))
                return
            task = asyncio.ensure_future(client.call(method, *args, timeout=_remaining(deadline)))
            running[task] = (member, time.perf_counter(), client)

        def finish(task: asyncio.Task) -> Optional[BaseException]:
            member, start, client = running.pop(task)
            exc = task.exception()
            if exc is None or _is_answer(exc):
                self._release(member, time.perf_counter() - start, _OK, client.server_load)
            else:
                self._release(member, -1.0, _FAILED, None, since=start)
            tried.append((member, exc))
            return exc

        try:
            launch()
            hedge_at = time.monotonic() + self.backup_after
            while True:
                if not running:
                    if not self._may_retry(tried[-1][1], True, len(tried), deadline):
                        raise self._final_error(method, tried)
                    launch()
                    hedge_at = time.monotonic() + self.backup_after
                    continue
                can_hedge = len(tried) + len(running) < self.max_attempts
                until = min(hedge_at if can_hedge else float("inf"),
                            float("inf") if deadline is None else deadline)
                wait = None if until == float("inf") else max(0.0, until - time.monotonic())
                done, _ = await asyncio.wait(list(running), timeout=wait,
                                             return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    exc = finish(task)
                    if exc is None:
                        return task.result()
                    if _is_answer(exc):
                        raise self._final_error(method, tried)
                now = time.monotonic()
                if running and can_hedge and now >= hedge_at:
                    hedge_at = float("inf")
                    if self.retry_budget.withdraw():
                        launch()
        finally:
            for task in list(running):
                member, _, _ = running.pop(task)
                task.cancel()
                self._release(member, -1.0, _OK, None)

    def go(self, method: str, *args: Any, key: Key = None, timeout: Optional[float] = None,
           idempotent: Optional[bool] = None) -> asyncio.Task:
        """Start a call as a task (cancel it to withdraw the call)."""
        return asyncio.get_running_loop().create_task(
            self.call(method, *args, key=key, timeout=timeout, idempotent=idempotent))

    async def map(self, method: str, args_iterable: Iterable, *, keys: Optional[Iterable] = None,
                  timeout: Optional[float] = None, idempotent: Optional[bool] = None,
                  return_exceptions: bool = False, window: int = 1024) -> List[Any]:
        """Call `method` once per item, spread over the endpoints; results in order.

        As Balancer.map: each endpoint's share of a window goes out as one
        pipelined AsyncClient.map, the shares concurrently. An item that
        cannot be encoded fails its endpoint's share of the window.
        """
        if self._health_task is None:
            self._ensure_health()
        job = self._map_job(method, args_iterable, keys, timeout, idempotent)
        for chunk in job.chunks(window):
            retry: List[int] = []
            shares = job._pick(chunk).values()
            await asyncio.gather(*(self._map_share(job, member, positions, retry)
                                   for member, positions in shares))
            job.retry(retry)
        return job.outcome(return_exceptions)

    async def _map_share(self, job: _MapJob, member: _Member, positions: List[int], retry: List[int]) -> None:
        started = time.perf_counter()
        client = None
        try:
            client = member.client or self._client(member)
            values = await client.map(job.method, [job.items[p] for p in positions],
                                      timeout=_remaining(job.deadline), return_exceptions=True,
                                      window=len(positions))
        except (ConnectionError, TimeoutError) as exc:
            values = [exc] * len(positions)     # cannot connect, or the share timed out
        except BaseException as exc:            # cancelled, or an item that cannot be encoded
            self._release(member, -1.0, _OK, None, len(positions))
            if not isinstance(exc, Exception):
                raise
            for p in positions:
                job.failed[p] = exc
            return
        job.settle_batch(member, client, positions, values, time.perf_counter() - started, retry)

    async def notify(self, method: str, *args: Any, key: Key = None) -> None:
        """Send a one-way call to the picked endpoint (retried elsewhere only if not sent)."""
        key_hash = self._key_hash(key)
        tried: List[Tuple[_Member, BaseException]] = []
        while True:
            member = self._next_member(method, key_hash, tried)
            try:
                await (member.client or self._client(member)).notify(method, *args)
            except (ConnectionError, TimeoutError) as exc:
                self._release(member, -1.0, _FAILED, None)
                tried.append((member, exc))
                if not self._may_retry(exc, False, len(tried), None):
                    raise self._final_error(method, tried) from None
                continue
            self._release(member, -1.0, _OK, None)
            return

    # health --------------------------------------------------------------------------
    async def check_health(self) -> None:
        """Ping every endpoint once now (what the health task does every health_interval)."""
        await asyncio.gather(*(self._check(m) for m in list(self._members)))

    async def _check(self, member: _Member) -> None:
        try:
            client = member.client or self._client(member)
            await client.ping(self.health_timeout)
        except (RPCError, OSError):
            self._health_result(member, False, None)
            return
        self._health_result(member, not client.draining, client.server_load)

    # lifecycle -----------------------------------------------------------------------
    async def close(self) -> None:
        """Stop health checks and close every connection; pending calls fail."""
        with self._lock:
            self._closed = True
            members = list(self._members)
        self._stop_discovery()
        if self._health_task is not None:
            self._health_task.cancel()
        for member in members:
            client, member.client = member.client, None
            if client is not None:
                await client.close()

    async def __aenter__(self) -> "AsyncBalancer":
        self._ensure_health()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()


async def _health_loop(ref, interval: float) -> None:
    """Ping every endpoint each `interval` while the balancer lives."""
    while True:
        await asyncio.sleep(interval)
        balancer = ref()
        if balancer is None or balancer._closed:
            return
        try:
            await balancer.check_health()
            balancer._maintain()
        except Exception:
            log.exception("health check failed")
        del balancer
