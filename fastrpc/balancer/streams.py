"""Streams through a balancer: which endpoint a stream goes to, and how it is counted.

Owns the route of a balanced stream (see fastrpc.client.stream): the
strategy picks an endpoint (a `key` picks as it does for calls) and the
stream stays pinned to it for its life, counted in flight there the whole
time, so least-loaded strategies see it. A stream that fails before it
received anything and sent nothing is opened again on an endpoint it has
not tried, by the balancer's rules for a call (failover, max_attempts, the
retry budget; a stream that may have run only when idempotent). Its
outcome feeds the endpoint's health like a call's: a transport failure
counts towards ejection, an answer (its result or the handler's error) is
a sign of life, with the time to the first item as its latency.
"""
from __future__ import annotations

import time
from typing import Any, Dict, List, Optional, Tuple

from fastrpc._core.calltable import StreamSlot, call_args
from fastrpc.context import bound_timeout
from fastrpc.errors import ConnectionError, RemoteError, TimeoutError
from fastrpc.interceptors import ClientCall, base_metadata

__all__ = ["BalancedRoute", "AsyncBalancedRoute", "balanced_stream"]


class BalancedRoute:
    """The route of one stream through a blocking Balancer."""

    def __init__(self, balancer: Any, key: Any, idempotent: Optional[bool],
                 timeout: Optional[float] = None) -> None:
        self.balancer = balancer
        self.key_hash = balancer.pool.key_hash_for(key)
        self.idempotent = balancer.idempotent if idempotent is None else idempotent
        self.member: Any = None
        self.tried: List[Any] = []
        self.opened_at = 0.0
        self.deadline = 0.0 if timeout is None else time.monotonic() + timeout   # 0: none (as the planner takes it)
        #: Where each stream's outcome is counted, by method (the balancer's call_stats()).
        self.stats: Any = balancer.pool.stats

    def _pick(self) -> Any:
        b = self.balancer
        if not self.tried:
            member = b.pool.pick(self.key_hash)
        else:
            member = b.untried(self.key_hash, {id(m) for m in self.tried})
            b.pool.begin(member)
        self.member = member
        self.tried.append(member)
        return member

    def _open_on(self, conn: Any, method: str, args: Any, slot: StreamSlot, deadline_ms: Optional[int],
                 meta: Optional[bytes]) -> Any:
        conn.table.open_stream(method, args, slot, deadline_ms, meta or self.balancer.call_settings.call_metadata())
        conn.flush()
        self.opened_at = time.monotonic()
        return conn

    def _not_opened(self, member: Any, exc: BaseException) -> None:
        """No connection to `member` took the stream: a failure there, nothing sent."""
        self.balancer.count_failure(member, 0.0, exc)
        self.member = None

    def open(self, method: str, args: Any, slot: StreamSlot, deadline_ms: Optional[int],
             meta: Optional[bytes] = None) -> Any:
        member = self._pick()
        try:
            return self._open_on(self.balancer._ready(member), method, args, slot, deadline_ms, meta)
        except (ConnectionError, TimeoutError) as exc:
            self._not_opened(member, exc)
            raise

    def ended(self, slot: StreamSlot, error: Optional[BaseException], withdrawn: bool) -> None:
        member, self.member = self.member, None
        if member is None:
            return
        b = self.balancer
        if withdrawn:
            b.pool.release_withdrawn(member)
        elif error is None or isinstance(error, RemoteError):
            rtt = max(0.0, time.monotonic() - self.opened_at)
            if error is not None:
                b.count_remote(member, error)
            b.pool.release_answered_many(member, 1, 0 if error is None else 1, rtt)
        else:
            b.count_failure(member, self.opened_at, error)

    def may_reopen(self, error: BaseException, opened: int) -> bool:
        if isinstance(error, RemoteError) and not isinstance(error, ConnectionError):
            return False
        return bool(self.balancer.planner.may_retry(error, self.idempotent, opened, self.deadline))


class AsyncBalancedRoute(BalancedRoute):
    """The route of one stream through an AsyncBalancer."""

    async def open_async(self, method: str, args: Any, slot: StreamSlot, deadline_ms: Optional[int],
                         meta: Optional[bytes] = None) -> Any:
        member = self._pick()
        try:
            return self._open_on(await self.balancer._ready(member), method, args, slot, deadline_ms, meta)
        except (ConnectionError, TimeoutError) as exc:
            self._not_opened(member, exc)
            raise


def balanced_stream(balancer: Any, route_class: Any, stream_class: Any, method: str, args: Tuple[Any, ...],
                    kwargs: Dict[str, Any], key: Any, timeout: Optional[float], idempotent: Optional[bool],
                    send: Any, window: Optional[Tuple[int, int]]) -> Any:
    """Balancer.stream and AsyncBalancer.stream: a stream of `stream_class` on a
    route of `route_class`, through the balancer's interceptors if it has any."""
    timeout = bound_timeout(timeout)
    intercepted = None if balancer._chain is None else (
        balancer.interceptors,
        ClientCall(method, args, kwargs, base_metadata(balancer.call_settings.metadata), timeout, balancer.name,
                   key=key, idempotent=idempotent, balanced=True))
    return stream_class(route_class(balancer, key, idempotent, timeout), method,
                        args if not kwargs else call_args(args, kwargs), timeout=timeout,
                        window=window or (None, None), settings=balancer.call_settings, send=send,
                        intercepted=intercepted)
