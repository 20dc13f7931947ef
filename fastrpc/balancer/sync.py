"""Balancer: client-side load balancing over many endpoints.

Owns the policy around the selection kernels: membership (add, remove,
weights), health (active pings, passive outlier ejection, panic mode, slow
start), load feedback (latency, calls in flight, server-reported load) and
what happens when a call fails (failover, failfast, failtry, backup). The
per-endpoint state lives in a compiled EndpointTable; the strategy's
compiled picker reads it. BalancerCore holds everything that does no I/O;
Balancer (threads) and AsyncBalancer (asyncio) add the connections.
"""
from __future__ import annotations

import concurrent.futures
import heapq
import logging
import os
import threading
import time
import weakref
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from fastrpc._core.calltable import Batch
from fastrpc._core.select import EndpointTable
from fastrpc.client.sync import Client, SharedConditionFuture
from fastrpc.net.settings import ClientSettings
from fastrpc.discovery.base import Discovery, Watch
from fastrpc.net.endpoint import Endpoint, _check_weight, as_endpoint
from fastrpc.context import bound_timeout
from fastrpc.errors import (ConnectError, ConnectionClosedError, ConnectionError, NoEndpointError,
                            RemoteError, RPCError, TimeoutError)
from fastrpc.balancer.strategies import Strategy, hash_key, make_strategy

__all__ = ["Balancer", "BalancerCore", "RetryBudget", "FAILURE_MODES"]

_PENDING = concurrent.futures._base.PENDING
log = logging.getLogger("fastrpc.balancer")

FAILURE_MODES = ("failover", "failfast", "failtry", "backup")

# Outcomes of one attempt, for health accounting.
_OK = 1        # the endpoint answered (a RemoteError is an answer too)
_FAILED = 2    # transport failure or timeout: counts toward ejection


class RetryBudget:
    """Bounds retries: each call earns `ratio` of a retry, and `min_per_second`
    retries are always allowed (Finagle's RetryBudget), so a failing fleet
    is not hit with a multiple of its normal traffic."""

    def __init__(self, ratio: float = 0.2, min_per_second: float = 10.0, cap: float = 100.0) -> None:
        self.ratio = ratio
        self.min_per_second = min_per_second
        self.cap = cap
        self._earned = 0.0
        self._reserve = min_per_second
        self._stamp = time.monotonic()

    def deposit(self, calls: int = 1) -> None:
        """`calls` calls were made."""
        earned = self._earned + self.ratio * calls
        self._earned = earned if earned < self.cap else self.cap

    def withdraw(self) -> bool:
        """Take one retry if the budget allows it."""
        now = time.monotonic()
        self._reserve = min(self.min_per_second, self._reserve + (now - self._stamp) * self.min_per_second)
        self._stamp = now
        if self._reserve >= 1.0:
            self._reserve -= 1.0
            return True
        if self._earned >= 1.0:
            self._earned -= 1.0
            return True
        return False


class _Member:
    """A balancer's view of one endpoint: connection, health, counters."""

    __slots__ = ("endpoint", "index", "client", "dial_lock", "healthy", "misses", "failures",
                 "ejected_until", "times_ejected", "eject_refused", "calls", "errors", "active",
                 "removed", "ramp_from", "last_answer")

    def __init__(self, endpoint: Endpoint, ramp_from: Optional[float]) -> None:
        self.endpoint = endpoint
        self.index = -1                 # position in the current table, -1 once removed
        self.client: Any = None
        self.dial_lock = threading.Lock()
        self.healthy = True             # active health checks: False after `misses` misses
        self.misses = 0
        self.failures = 0               # consecutive failed calls (passive ejection)
        self.last_answer = 0.0          # perf_counter() of the last reply from this endpoint
        self.ejected_until = 0.0
        self.times_ejected = 0
        self.eject_refused = False      # ejection was refused (cap reached); warned once
        self.calls = 0
        self.errors = 0
        self.active = 0                 # calls in flight through this member
        self.removed = False
        self.ramp_from = ramp_from      # slow start: ramping since this time (None: full weight)


class BalancerCore:
    """Membership, state table, picking, health and ejection: everything but I/O.

    Settings (keyword arguments of Balancer and AsyncBalancer):

    - strategy: a name in fastrpc.balancer.strategies.STRATEGIES or a Strategy.
      origin=(lat, lon) / origin_zone=... are passed to "geo".
    - failure: "failover" (default), "failfast", "failtry" or "backup";
      max_attempts (3), retry_budget (RetryBudget()), idempotent (False:
      calls that may have run are never repeated unless marked),
      backup_after (0.05 s: when "backup" sends the hedged request).
    - health_interval (5 s, 0 disables active checks), health_timeout (1 s),
      health_misses (3): pings missed before an endpoint is unhealthy.
    - eject_failures (5 consecutive failed calls), eject_base (30 s x times
      ejected), eject_max (300 s), max_ejected (0.5 of the endpoints).
    - slow_start (0 s): a new or recovered endpoint's weight ramps up over
      this window. ewma_tau (10 s): latency estimate decay. seed: picks'
      random seed (default: random).
    - discovery, service: take the endpoints of `service` from a registry
      (fastrpc.discovery) instead of a list, and follow its changes.
    """

    def __init__(self, endpoints: Iterable[Union[str, Endpoint]] = (), *,
                 strategy: Union[str, Strategy] = "round_robin",
                 origin: Optional[Tuple[float, float]] = None, origin_zone: Optional[str] = None,
                 failure: str = "failover", max_attempts: int = 3,
                 retry_budget: Optional[RetryBudget] = None, idempotent: bool = False,
                 backup_after: float = 0.05,
                 health_interval: float = 5.0, health_timeout: float = 1.0, health_misses: int = 3,
                 eject_failures: int = 5, eject_base: float = 30.0, eject_max: float = 300.0,
                 max_ejected: float = 0.5, slow_start: float = 0.0, ewma_tau: float = 10.0,
                 seed: Optional[int] = None, discovery: Optional[Discovery] = None,
                 service: Optional[str] = None) -> None:
        options = {}
        if origin is not None or origin_zone is not None:
            if strategy != "geo":
                raise ValueError("origin and origin_zone apply to the geo strategy")
            options = {"origin": origin, "origin_zone": origin_zone}
        self.strategy = make_strategy(strategy, **options)
        if failure not in FAILURE_MODES:
            raise ValueError(f"failure must be one of {', '.join(FAILURE_MODES)}, not {failure!r}")
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if health_misses < 1 or eject_failures < 1:
            raise ValueError("health_misses and eject_failures must be >= 1")
        if not 0.0 <= max_ejected <= 1.0:
            raise ValueError("max_ejected is a fraction in [0, 1]")
        self.failure = failure
        self.max_attempts = max_attempts
        self.retry_budget = retry_budget if retry_budget is not None else RetryBudget()
        self.idempotent = idempotent
        self.backup_after = backup_after
        self.health_interval = health_interval
        self.health_timeout = health_timeout
        self.health_misses = health_misses
        self.eject_failures = eject_failures
        self.eject_base = eject_base
        self.eject_max = eject_max
        self.max_ejected = max_ejected
        self.slow_start = slow_start
        self.ewma_tau = ewma_tau
        self._seed = seed if seed is not None else int.from_bytes(os.urandom(8), "little")
        self._lock = threading.RLock()
        self._members: List[_Member] = []
        self._by_address: Dict[str, _Member] = {}
        self._keyed = self.strategy.keyed
        self._panic = False
        self._next_check = float("inf")    # next ejection expiry or slow-start step
        self._closed = False
        seen = set()
        for item in endpoints:
            endpoint = as_endpoint(item)
            if endpoint.address in seen:
                raise ValueError(f"endpoint {endpoint.address} is listed twice")
            seen.add(endpoint.address)
            self._add_member(_Member(endpoint, None))
        with self._lock:
            self._rebuild_locked(time.monotonic())
        self.discovery = discovery
        self.service = service
        self._watch: Optional[Watch] = None
        if discovery is not None:
            if not service:
                raise ValueError("discovery= needs service=, the name the servers register under")
            if seen:
                raise ValueError("give endpoints or discovery=, not both")
            self.set_endpoints(discovery.endpoints(service))
            self._watch = discovery.watch(service, self._discovered)
        elif service is not None:
            raise ValueError("service= applies with discovery=")

    def _discovered(self, endpoints: List[Endpoint]) -> None:
        """The registry's set for our service changed (called from its thread)."""
        if self._closed:
            return
        try:
            self.set_endpoints(endpoints)
        except Exception:
            log.exception("could not apply the endpoints discovered for %s", self.service)

    def _stop_discovery(self) -> None:
        if self._watch is not None:
            self._watch.stop()

    def _take_client_settings(self, settings: Dict[str, Any]) -> Dict[str, Any]:
        """Keep the per-endpoint client settings (checked now); return the balancing ones."""
        core = {k: settings.pop(k) for k in list(settings) if k in _CORE_SETTINGS}
        settings.setdefault("connect_timeout", 3.0)
        ClientSettings("tcp://127.0.0.1:1", **settings)   # reject unknown settings now
        self.timeout: Optional[float] = settings.get("timeout")
        self._client_settings = settings
        return core

    # membership ------------------------------------------------------------------
    def _add_member(self, member: _Member) -> None:
        self._members.append(member)
        self._by_address[member.endpoint.address] = member

    def add(self, endpoint: Union[str, Endpoint]) -> None:
        """Add an endpoint (or replace the one with the same address); no call is dropped."""
        endpoint = as_endpoint(endpoint)
        with self._lock:
            old = self._by_address.get(endpoint.address)
            if old is not None:
                if old.endpoint == endpoint:
                    return
                old.endpoint = endpoint        # same server: keep its connection and state
            else:
                self._add_member(_Member(endpoint, time.monotonic() if self.slow_start > 0 else None))
            self._rebuild_locked(time.monotonic())

    def remove(self, address: str) -> None:
        """Remove an endpoint: no new calls go to it; its calls in flight finish."""
        with self._lock:
            member = self._by_address.pop(address, None)
            if member is None:
                raise KeyError(f"no endpoint {address} in this balancer")
            self._members.remove(member)
            member.removed = True
            member.index = -1
            self._rebuild_locked(time.monotonic())
            idle = member.active == 0
        if idle:
            self._close_member(member)

    def set_weight(self, address: str, weight: float) -> None:
        """Change an endpoint's weight at runtime."""
        weight = _check_weight(weight)
        with self._lock:
            member = self._by_address.get(address)
            if member is None:
                raise KeyError(f"no endpoint {address} in this balancer")
            member.endpoint = member.endpoint.replace(weight=weight)
            self._rebuild_locked(time.monotonic())

    def set_endpoints(self, endpoints: Iterable[Union[str, Endpoint]]) -> None:
        """Make the endpoint set exactly `endpoints` (adds, removes, updates)."""
        wanted = {e.address: e for e in map(as_endpoint, endpoints)}
        for address in [m.endpoint.address for m in self._members if m.endpoint.address not in wanted]:
            self.remove(address)
        for endpoint in wanted.values():
            self.add(endpoint)

    @property
    def endpoints(self) -> List[Endpoint]:
        """The current endpoints, in the order they were added."""
        return [m.endpoint for m in self._members]

    def _rebuild_locked(self, now: float) -> None:
        """New table and picker for the current membership; state carries over."""
        old_table = getattr(self, "_table", None)
        table = EndpointTable(len(self._members), self._seed, self.ewma_tau)
        self._seed = (self._seed * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
        if old_table is not None:
            kept = [(m.index, j) for j, m in enumerate(self._members) if m.index >= 0]
            table.carry_over(old_table, [a for a, _ in kept], [b for _, b in kept])
        for j, member in enumerate(self._members):
            member.index = j
        table.set_weights(self._effective_weights(now))
        table.set_mask(self._mask(now))
        self._next_check = min(self._eject_check, self._ramp_check)
        self._picker = self.strategy.build(table, [m.endpoint for m in self._members])
        self._table = table

    def _effective_weights(self, now: float) -> List[float]:
        weights = []
        soonest = float("inf")
        for m in self._members:
            w = m.endpoint.weight
            if m.ramp_from is not None:
                done = (now - m.ramp_from) / self.slow_start
                if done >= 1.0:
                    m.ramp_from = None
                else:
                    w *= max(0.1, done)
                    soonest = min(soonest, now + self.slow_start / 10)
            weights.append(w)
        self._ramp_check = soonest
        return weights

    def _mask(self, now: float) -> List[int]:
        mask = []
        soonest = float("inf")
        for m in self._members:
            if m.ejected_until and m.ejected_until <= now:
                m.ejected_until = 0.0                 # ejection over: back, with slow start
                if self.slow_start > 0:
                    m.ramp_from = now
                log.info("endpoint %s is back after ejection", m.endpoint.address)
            if m.ejected_until:
                soonest = min(soonest, m.ejected_until)
            mask.append(1 if m.healthy and not m.ejected_until else 0)
        self._eject_check = soonest
        panic = bool(mask) and not any(mask)
        if panic:
            # Every endpoint looks bad: spread calls over all of them rather
            # than fail every call (Envoy's panic threshold).
            mask = [1] * len(mask)
        if panic != self._panic:
            self._panic = panic
            (log.warning if panic else log.info)(
                "balancer %s panic mode: %s", "entering" if panic else "leaving",
                "no endpoint is healthy, picking among all" if panic else "endpoints are healthy again")
        return mask

    def _refresh_locked(self, now: float, weights: bool = False) -> None:
        """Eligibility (and effective weights) changed: update the table and picker."""
        if weights:
            self._table.set_weights(self._effective_weights(now))
        self._table.set_mask(self._mask(now))
        self._next_check = min(self._eject_check, self._ramp_check)
        self._picker.rebuild()

    def _maintain_locked(self, now: float) -> None:
        """Ejections that expired, slow-start steps."""
        self._refresh_locked(now, weights=self._ramp_check <= now)

    def _maintain(self) -> None:
        """_maintain_locked when an ejection expiry or slow-start step is due (health loops)."""
        with self._lock:
            now = time.monotonic()
            if now >= self._next_check:
                self._maintain_locked(now)

    # picking ------------------------------------------------------------------------
    def pick(self, key: Union[str, bytes, int, None] = None) -> Endpoint:
        """The endpoint the next call with `key` would go to (state is not changed)."""
        with self._lock:
            i = self._picker.pick(self._key_hash(key))
            if i < 0:
                raise NoEndpointError("the balancer has no endpoints")
            return self._members[i].endpoint

    def _key_hash(self, key: Any) -> int:
        if key is not None:
            return hash_key(key)
        return self._table.next_random() if self._keyed else 0

    def _acquire(self, key_hash: int, tried: Optional[List[Tuple[_Member, BaseException]]],
                 pinned: Optional[_Member] = None) -> _Member:
        """Pick an endpoint and count the call as in flight there."""
        with self._lock:
            if self._closed:
                raise ConnectionClosedError("balancer is closed")
            if pinned is not None and not pinned.removed:
                member = pinned
            else:
                i = self._picker.pick(key_hash)
                if i < 0:
                    raise NoEndpointError("the balancer has no endpoints")
                member = self._members[i]
                if tried:
                    member = self._untried_locked(member, key_hash, {id(m) for m, _ in tried})
            self._table.begin(member.index)
            member.active += 1
            return member

    def _next_member(self, method: str, key_hash: int, tried: List[Tuple[_Member, BaseException]],
                     pinned: Optional[_Member] = None) -> _Member:
        """_acquire for attempt len(tried)+1; once every endpoint was tried, the call's final error."""
        try:
            return self._acquire(key_hash, tried, pinned)
        except NoEndpointError:
            if tried:
                raise self._final_error(method, tried) from None
            raise

    def _untried_locked(self, member: _Member, key_hash: int, used: set) -> _Member:
        """A retry goes to an endpoint not tried yet for this call, if one is eligible."""
        for _ in range(4):
            if id(member) not in used:
                return member
            i = self._picker.pick(self._table.next_random() if self._keyed else key_hash)
            if i >= 0:
                member = self._members[i]
        mask = np.asarray(self._table.mask)
        for m in self._members:
            if id(m) not in used and mask[m.index]:
                return m
        for m in self._members:
            if id(m) not in used:
                return m
        raise NoEndpointError("every endpoint was tried")

    def _release(self, member: _Member, rtt: float, outcome: int, load: Optional[int],
                 count: int = 1, since: Optional[float] = None) -> None:
        """`count` calls through `member` ended: update latency, load, counters and health.

        `since` is when a failed call was sent (perf_counter). If the endpoint
        answered anything after that, the failure is not evidence of a dead or
        stalled endpoint (say, a caller's very short timeout) and does not
        count towards ejection.
        """
        if count <= 0:
            return
        if outcome != _FAILED and rtt >= 0:
            member.last_answer = time.perf_counter()
        now = time.monotonic()
        with self._lock:
            member.active -= count
            member.calls += count
            if member.index >= 0 and not member.removed:
                reported = -1 if load is None else load
                for _ in range(count):
                    self._table.end(member.index, rtt, now, reported)
            if outcome == _FAILED:
                member.errors += count
                if since is None or member.last_answer <= since:
                    member.failures += count
                    if member.failures >= self.eject_failures and not member.ejected_until:
                        self._eject_locked(member, now)
            elif member.failures:
                member.failures = 0
                member.eject_refused = False
            if now >= self._next_check:
                self._maintain_locked(now)
            closing = member.removed and member.active == 0
        if closing:
            self._close_member(member)

    def _eject_locked(self, member: _Member, now: float) -> None:
        ejected = sum(1 for m in self._members if m.ejected_until)
        if ejected + 1 > self.max_ejected * len(self._members):
            if not member.eject_refused:      # say it once per run of failures
                member.eject_refused = True
                log.warning("not ejecting %s after %d failures: %d of %d endpoints are already ejected",
                            member.endpoint.address, member.failures, ejected, len(self._members))
            return
        member.times_ejected += 1
        duration = min(self.eject_base * member.times_ejected, self.eject_max)
        member.ejected_until = now + duration
        member.failures = 0
        log.warning("ejecting %s for %.0f s after %d consecutive failures",
                    member.endpoint.address, duration, self.eject_failures)
        self._refresh_locked(now)

    def _health_result(self, member: _Member, ok: bool, load: Optional[int]) -> None:
        """An active health check of `member` succeeded or missed."""
        now = time.monotonic()
        with self._lock:
            if member.removed:
                return
            if ok:
                member.misses = 0
                if load is not None:
                    self._table.set_reported(member.index, load)
                if not member.healthy:
                    member.healthy = True
                    if self.slow_start > 0:
                        member.ramp_from = now
                    log.info("endpoint %s is healthy again", member.endpoint.address)
                    self._refresh_locked(now, weights=True)
            else:
                member.misses += 1
                if member.healthy and member.misses >= self.health_misses:
                    member.healthy = False
                    log.warning("endpoint %s is unhealthy: %d health checks missed",
                                member.endpoint.address, member.misses)
                    self._refresh_locked(now)

    def _going_away(self, member: _Member) -> None:
        """The endpoint sent GOAWAY: no new calls until a health check finds it serving."""
        with self._lock:
            if member.healthy and not member.removed:
                member.healthy = False
                member.misses = self.health_misses
                log.info("endpoint %s is going away (GOAWAY)", member.endpoint.address)
                self._refresh_locked(time.monotonic())

    # reporting ----------------------------------------------------------------------
    def stats(self) -> Dict[str, Dict[str, Any]]:
        """Per endpoint address: calls, errors, in_flight, latency (EWMA, s), load
        (server-reported calls in flight, None unknown), healthy, ejected,
        weight, effective_weight, zone."""
        now = time.monotonic()
        out = {}
        with self._lock:
            t = self._table
            inflight, reported = np.asarray(t.inflight), np.asarray(t.reported)
            weight = np.asarray(t.weight)
            for m in self._members:
                i = m.index
                out[m.endpoint.address] = {
                    "calls": m.calls, "errors": m.errors, "in_flight": int(inflight[i]),
                    "latency": t.latency(i, now), "load": None if reported[i] < 0 else int(reported[i]),
                    "healthy": m.healthy, "ejected": bool(m.ejected_until),
                    "weight": m.endpoint.weight, "effective_weight": float(weight[i]),
                    "zone": m.endpoint.zone,
                }
        return out

    @property
    def panic(self) -> bool:
        """True while no endpoint is healthy and calls are spread over all of them."""
        return self._panic

    # failure policy -----------------------------------------------------------------
    def _may_retry(self, exc: BaseException, idempotent: bool, attempts: int,
                   deadline: Optional[float], budget: bool = True) -> bool:
        """Whether a failed attempt is retried; with `budget`, take the retry from the budget."""
        if self.failure == "failfast" or attempts >= self.max_attempts:
            return False
        # Not sent: the server never saw the call. Anything else may have run.
        if not (isinstance(exc, (ConnectError, ConnectionClosedError)) or idempotent):
            return False
        if deadline is not None and time.monotonic() >= deadline:
            return False
        return self.retry_budget.withdraw() if budget else True

    def _map_job(self, method: str, args_iterable: Iterable, keys: Optional[Iterable],
                 timeout: Optional[float], idempotent: Optional[bool]) -> "_MapJob":
        """The bookkeeping of one map(), shared by Balancer and AsyncBalancer."""
        items = args_iterable if isinstance(args_iterable, (list, tuple)) else list(args_iterable)
        key_hashes = None
        if keys is not None:
            keys = list(keys)
            if len(keys) != len(items):
                raise ValueError(f"keys has {len(keys)} entries for {len(items)} items")
            key_hashes = [self._key_hash(k) for k in keys]
        timeout = bound_timeout(timeout, self.timeout)
        self.retry_budget.deposit(len(items))
        return _MapJob(self, method, items, key_hashes,
                       None if timeout is None else time.monotonic() + timeout,
                       self.idempotent if idempotent is None else idempotent)

    @staticmethod
    def _final_error(method: str, tried: List[Tuple[_Member, BaseException]]) -> BaseException:
        """The last attempt's error, re-worded to name every endpoint tried (``.endpoints``)."""
        last = tried[-1][1]
        addresses = [m.endpoint.address for m, _ in tried]
        if isinstance(last, RemoteError):
            last.endpoints = addresses
            return last
        parts = "; ".join(f"{m.endpoint.address}: {type(e).__name__}: {e}" for m, e in tried)
        what = f"{len(tried)} endpoints" if len(tried) > 1 else "1 endpoint"
        try:
            error = type(last)(f"{method} failed on {what}: {parts}")
        except TypeError:
            error = ConnectionError(f"{method} failed on {what}: {parts}")
        error.endpoints = addresses
        error.__cause__ = last
        return error

    def _close_member(self, member: _Member) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return (f"<fastrpc.{type(self).__name__} {self.strategy.name} over "
                f"{len(self._members)} endpoints>")


class Balancer(BalancerCore):
    """A blocking, thread-safe client that spreads calls over many endpoints.

    ``Balancer(["tcp://127.0.0.1:7001", Endpoint("tcp://...", weight=5)],
    strategy="p2c")`` then ``call``, ``go`` and ``notify`` as on Client, plus
    ``key=`` (consistent_hash) and ``idempotent=`` per call. Each endpoint
    gets one Client, dialled on first use. See BalancerCore for the
    balancing settings; other keyword arguments (timeout, connect_timeout,
    max_frame_size...) configure those Clients.
    """

    def __init__(self, endpoints: Iterable[Union[str, Endpoint]] = (), **settings: Any) -> None:
        super().__init__(endpoints, **self._take_client_settings(settings))
        self._future_condition = threading.Condition(threading.RLock())  # shared by go() futures
        self._hedger = _HedgeTimer()
        self._health_stop = threading.Event()
        self._health_thread: Optional[threading.Thread] = None
        if self.health_interval > 0:
            self._health_thread = threading.Thread(
                target=_health_loop, args=(weakref.ref(self), self._health_stop, self.health_interval),
                name="fastrpc-health", daemon=True)
            self._health_thread.start()

    # connections --------------------------------------------------------------------
    def _client(self, member: _Member) -> Client:
        client = member.client
        if client is not None:
            return client
        with member.dial_lock:
            if member.client is None:
                if member.removed or self._closed:
                    raise ConnectionClosedError(f"endpoint {member.endpoint.address} was removed")
                member.client = Client(member.endpoint.address, **self._client_settings)
            return member.client

    def _close_member(self, member: _Member) -> None:
        client, member.client = member.client, None
        if client is not None:
            client.close()

    # calls ----------------------------------------------------------------------------
    def call(self, method: str, *args: Any, key: Union[str, bytes, int, None] = None,
             timeout: Optional[float] = None, idempotent: Optional[bool] = None) -> Any:
        """Call `method` on the endpoint the strategy picks; return the result.

        A failure before the call was sent (cannot connect, connection gone)
        is retried on another endpoint ("failover"), the same one
        ("failtry"), or not at all ("failfast"). A call that may have run
        (timeout, connection lost after sending) is retried only when
        `idempotent`. RemoteError (the handler raised) is never retried.
        Errors name the endpoints tried (``exc.endpoints``).
        """
        timeout = bound_timeout(timeout, self.timeout)
        idempotent = self.idempotent if idempotent is None else idempotent
        if self.failure == "backup" and idempotent:
            # Hedged: the future runs both attempts; the first reply wins.
            return self.go(method, *args, key=key, timeout=timeout, idempotent=True).result()
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
                value = client.call(method, *args, timeout=_remaining(deadline))
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
            except BaseException:           # e.g. an argument that cannot be encoded
                self._release(member, -1.0, _OK, None)
                raise
            self._release(member, time.perf_counter() - start, _OK, client.server_load)
            if client.draining:
                self._going_away(member)
            return value

    def go(self, method: str, *args: Any, key: Union[str, bytes, int, None] = None,
           timeout: Optional[float] = None, idempotent: Optional[bool] = None) -> concurrent.futures.Future:
        """Start a call; return a concurrent.futures.Future of its result.

        Failures are handled as in call() (retries happen as the failed
        attempt completes). With failure="backup", an idempotent call's
        future sends a hedged copy to another endpoint after backup_after.
        """
        timeout = bound_timeout(timeout, self.timeout)
        idempotent = self.idempotent if idempotent is None else idempotent
        self.retry_budget.deposit()
        future = _BalancedFuture(self, method, args, self._key_hash(key), timeout, idempotent)
        if future._attempt() and self.failure == "backup" and idempotent and self.max_attempts > 1:
            self._hedger.schedule(time.monotonic() + self.backup_after, future)
        return future

    def map(self, method: str, args_iterable: Iterable, *, keys: Optional[Iterable] = None,
            timeout: Optional[float] = None, idempotent: Optional[bool] = None,
            return_exceptions: bool = False, window: int = 1024) -> List[Any]:
        """Call `method` once per item, spread over the endpoints; return the results in order.

        Items are as in Client.map (a tuple is the argument list, anything
        else the one argument); `keys` gives each item its key for
        consistent_hash. Each item is picked as a call() would be, and each
        endpoint's share of a window goes out as one pipelined batch, so the
        balancer's cost is paid per batch rather than per call. Failed items
        are retried as call() retries. Every item completes before this
        returns; the first error (by position, naming the endpoints its item
        tried) is then raised, unless `return_exceptions` puts exceptions in
        the list.
        """
        job = self._map_job(method, args_iterable, keys, timeout, idempotent)
        for chunk in job.chunks(window):
            job.retry(job.round(chunk))
        return job.outcome(return_exceptions)

    def notify(self, method: str, *args: Any, key: Union[str, bytes, int, None] = None) -> None:
        """Send a one-way call to the picked endpoint (retried elsewhere only if not sent)."""
        key_hash = self._key_hash(key)
        tried: List[Tuple[_Member, BaseException]] = []
        while True:
            member = self._next_member(method, key_hash, tried)
            try:
                (member.client or self._client(member)).notify(method, *args)
            except (ConnectionError, TimeoutError) as exc:
                self._release(member, -1.0, _FAILED, None)
                tried.append((member, exc))
                if not self._may_retry(exc, False, len(tried), None):
                    raise self._final_error(method, tried) from None
                continue
            self._release(member, -1.0, _OK, None)
            return

    # health ----------------------------------------------------------------------------
    def check_health(self) -> None:
        """Ping every endpoint once now (what the health thread does every health_interval)."""
        members = list(self._members)
        if not members:
            return
        pool = self._health_pool()
        list(pool.map(self._check, members))

    def _health_pool(self) -> concurrent.futures.ThreadPoolExecutor:
        pool = getattr(self, "_pool", None)
        if pool is None:
            pool = self._pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=8, thread_name_prefix="fastrpc-health")
        return pool

    def _check(self, member: _Member) -> None:
        try:
            client = member.client or self._client(member)
            client.ping(self.health_timeout)
        except (RPCError, OSError):
            self._health_result(member, False, None)
            return
        self._health_result(member, not client.draining, client.server_load)

    # lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        """Stop health checks and close every connection; pending calls fail."""
        with self._lock:
            self._closed = True
            members = list(self._members)
        self._stop_discovery()
        self._health_stop.set()
        self._hedger.stop()
        for member in members:
            self._close_member(member)
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False)

    def __enter__(self) -> "Balancer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_CORE_SETTINGS = {
    "strategy", "origin", "origin_zone", "failure", "max_attempts", "retry_budget", "idempotent",
    "backup_after", "health_interval", "health_timeout", "health_misses", "eject_failures",
    "eject_base", "eject_max", "max_ejected", "slow_start", "ewma_tau", "seed", "discovery", "service",
}


def _is_answer(exc: BaseException) -> bool:
    """A remote error that is the handler's answer (not retried, not a failure
    of the endpoint). DeadlineExceeded is remote but a timeout: a failure."""
    return isinstance(exc, RemoteError) and not isinstance(exc, TimeoutError)


def _remaining(deadline: Optional[float]) -> Optional[float]:
    if deadline is None:
        return None
    return max(0.0, deadline - time.monotonic())


_UNSET = object()


class _MapJob:
    """One Balancer.map(): picks per item, one batch per endpoint per round, retries."""

    def __init__(self, balancer: BalancerCore, method: str, items: Sequence, key_hashes: Optional[List[int]],
                 deadline: Optional[float], idempotent: bool) -> None:
        self.balancer = balancer
        self.method = method
        self.items = items
        self.key_hashes = key_hashes
        self.deadline = deadline
        self.idempotent = idempotent
        self.results: List[Any] = [None] * len(items)
        self.failed: Dict[int, BaseException] = {}
        self.tried: Dict[int, List[Tuple[_Member, BaseException]]] = {}

    def chunks(self, window: int):
        """Item positions in windows of `window`; retried items go out first."""
        self.todo = list(range(len(self.items)))
        window = max(1, window)
        while self.todo:
            chunk, self.todo = self.todo[:window], self.todo[window:]
            yield chunk

    def retry(self, positions: List[int]) -> None:
        self.todo[:0] = positions

    def outcome(self, return_exceptions: bool) -> List[Any]:
        """The results in order; raise the first error unless `return_exceptions`."""
        if self.failed:
            if not return_exceptions:
                raise self.failed[min(self.failed)]
            for position, exc in self.failed.items():
                self.results[position] = exc
        return self.results

    def round(self, chunk: List[int]) -> List[int]:
        """Issue `chunk` (item positions) and collect it; return the positions to retry."""
        b = self.balancer
        retry: List[int] = []
        running = []
        for member, positions in self._pick(chunk).values():
            try:
                client = member.client or b._client(member)
                conn = client._connection()
            except (ConnectionError, TimeoutError) as exc:       # not sent
                self.settle_batch(member, None, positions, [exc] * len(positions), -1.0, retry)
                continue
            batch = Batch(len(positions), True)
            batch.results[:] = [_UNSET] * len(positions)
            started = time.perf_counter()
            with conn.send_lock:
                if conn.error is not None:
                    batch.fail_unsent(ConnectionClosedError(f"connection to {conn.address} is closed"))
                else:
                    try:
                        conn.table.request_batch(self.method, batch, (self.items[p] for p in positions),
                                                 len(positions), client.call_metadata())
                    except BaseException as exc:
                        # An item that cannot be encoded fails alone; those
                        # after it were not sent and go out again.
                        bad = batch.issued
                        batch.fail_unsent(exc)
                        self.failed[positions[bad]] = exc
                        retry.extend(positions[bad + 1:])
                        b._release(member, -1.0, _OK, None, len(positions) - bad)
                        positions = positions[:bad]
                    conn._flush_locked()
            running.append((member, client, conn, batch, positions, started))
        for member, client, conn, batch, positions, started in running:
            self._collect(member, client, conn, batch, positions, started, retry)
        return retry

    def _pick(self, chunk: List[int]) -> Dict[int, Tuple[_Member, List[int]]]:
        """Pick an endpoint per item under one lock; group the items by endpoint."""
        b = self.balancer
        groups: Dict[int, Tuple[_Member, List[int]]] = {}
        with b._lock:
            if b._closed:
                raise ConnectionClosedError("balancer is closed")
            if not b._members:
                raise NoEndpointError("the balancer has no endpoints")
            pick, members, table, keyed = b._picker.pick, b._members, b._table, b._keyed
            begin, key_hashes, retried = table.begin, self.key_hashes, self.tried
            for p in chunk:
                key_hash = key_hashes[p] if key_hashes is not None else \
                    (table.next_random() if keyed else 0)
                i = pick(key_hash)
                if i < 0:                        # a custom strategy found nothing eligible
                    self.failed[p] = NoEndpointError("the strategy picked no endpoint")
                    continue
                member = members[i]
                if retried and p in retried:
                    try:
                        member = b._untried_locked(member, key_hash, {id(m) for m, _ in retried[p]})
                    except NoEndpointError:
                        self.failed[p] = b._final_error(self.method, retried[p])
                        continue
                begin(member.index)
                group = groups.get(member.index)
                if group is None:
                    groups[member.index] = group = (member, [])
                group[1].append(p)
            for member, positions in groups.values():
                member.active += len(positions)
        return groups

    def _collect(self, member: _Member, client: Client, conn, batch: Batch, positions: List[int],
                 started: float, retry: List[int]) -> None:
        """Wait for one endpoint's batch, then sort its outcomes."""
        if not batch.done:
            conn.wait(lambda: batch.done, self.deadline)
            if not batch.done:                   # the deadline passed
                for seq in range(batch.first_seq, batch.first_seq + batch.issued):
                    conn.withdraw(seq)
        self.settle_batch(member, client, positions, batch.results, time.perf_counter() - started, retry)

    def settle_batch(self, member: _Member, client: Any, positions: List[int], values: List[Any],
                     rtt: float, retry: List[int]) -> None:
        """Sort one endpoint's outcomes (a value or an exception per item; _UNSET:
        no reply by the deadline) into results, errors and retries."""
        b = self.balancer
        ok = bad = 0
        grant: List[bool] = []
        for p, value in zip(positions, values):
            if value is _UNSET:
                value = TimeoutError(f"{self.method} did not complete in time")
            if not isinstance(value, BaseException):
                self.results[p] = value
                ok += 1
            elif isinstance(value, (ConnectionError, TimeoutError)):   # incl. DeadlineExceeded
                bad += 1
                self._attempt_failed(p, member, value, retry, grant)
            elif isinstance(value, RemoteError):
                ok += 1
                self.failed[p] = b._final_error(self.method, self.tried.get(p, []) + [(member, value)])
            else:
                ok += 1
                self.failed[p] = value
        b._release(member, rtt, _OK, client.server_load if client is not None else None, ok)
        b._release(member, -1.0, _FAILED, None, bad)
        if client is not None and client.draining:
            b._going_away(member)

    def _attempt_failed(self, p: int, member: _Member, exc: BaseException, retry: List[int],
                        grant: List[bool]) -> None:
        """Item p failed on `member`: queue its retry or settle its error. One
        endpoint's failed batch takes one retry from the budget, not one per
        item (`grant` holds that decision for the batch)."""
        b = self.balancer
        tried = self.tried.setdefault(p, [])
        tried.append((member, exc))
        if b._may_retry(exc, self.idempotent, len(tried), self.deadline, budget=False):
            if not grant:
                grant.append(b.retry_budget.withdraw())
            if grant[0]:
                retry.append(p)
                return
        self.failed[p] = b._final_error(self.method, tried)


class _BalancedFuture(SharedConditionFuture):
    """Balancer.go()'s future. It runs the call's attempts: a retry starts as
    the failed attempt completes, and with failure="backup" a hedged attempt
    starts on another endpoint when the first is slow (the first reply wins,
    the other attempt is withdrawn). Waiting on it drives the connection of
    the attempt in flight, as CallFuture does."""

    def __init__(self, balancer: Balancer, method: str, args: tuple, key_hash: int,
                 timeout: Optional[float], idempotent: bool) -> None:
        super().__init__(balancer._future_condition)     # one Condition per balancer
        self._balancer = balancer
        self._method = method
        self._args = args
        self._key_hash = key_hash
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._idempotent = idempotent
        self._tried: List[Tuple[_Member, BaseException]] = []
        # attempts in flight: inner future -> (member, client, start time)
        self._running: Dict[concurrent.futures.Future, Tuple[_Member, Client, float]] = {}

    # attempts -------------------------------------------------------------------------
    def _attempt(self, pinned: Optional[_Member] = None) -> bool:
        """Start one attempt; False when none could start (the future is then settled)."""
        b = self._balancer
        while True:
            with self._condition:
                busy = self._tried + [(m, None) for m, _, _ in self._running.values()]
            try:
                member = b._acquire(self._key_hash, busy, pinned)
            except RPCError as exc:
                self._settle(None, exc if not self._tried else b._final_error(self._method, self._tried))
                return False
            started = time.perf_counter()
            try:
                client = member.client or b._client(member)
                inner = client.go(self._method, *self._args, timeout=_remaining(self._deadline))
            except (ConnectionError, TimeoutError) as exc:
                b._release(member, -1.0, _FAILED, None, since=started)
                with self._condition:
                    self._tried.append((member, exc))
                    others = bool(self._running)
                if others:
                    return False                 # a hedge that could not start: the first goes on
                if not b._may_retry(exc, self._idempotent, len(self._tried), self._deadline):
                    self._settle(None, b._final_error(self._method, self._tried))
                    return False
                pinned = member if b.failure == "failtry" else None
                continue
            except BaseException as exc:        # e.g. an unencodable argument
                b._release(member, -1.0, _OK, None)
                self._settle(None, exc)
                return False
            with self._condition:
                self._running[inner] = (member, client, started)
                settled = self._state != _PENDING
            inner.add_done_callback(self._attempt_done)
            if settled:                          # a hedge that started as the first one answered
                inner.cancel()
            return True

    def _attempt_done(self, inner: concurrent.futures.Future) -> None:
        b = self._balancer
        with self._condition:
            member, client, started = self._running.pop(inner)
            others = list(self._running)
        if inner.cancelled():                   # withdrawn: the caller cancelled, or it lost
            b._release(member, -1.0, _OK, None)
            if not others and self._state == _PENDING:
                super().cancel()
            return
        exc = inner._exception                  # inner is done: no need for its lock
        if exc is None or _is_answer(exc):
            b._release(member, time.perf_counter() - started, _OK, client.server_load)
            if exc is None:
                self._settle(inner._result, None)
            else:
                self._settle(None, b._final_error(self._method, self._tried + [(member, exc)]))
            for loser in others:                # the hedge lost: tell its server
                loser.cancel()
            if client.draining:
                b._going_away(member)
            return
        b._release(member, -1.0, _FAILED, None, since=started)
        with self._condition:
            self._tried.append((member, exc))
        if others:
            return                              # another attempt may still answer
        if isinstance(exc, (ConnectionError, TimeoutError)) and self._state == _PENDING and \
                b._may_retry(exc, self._idempotent, len(self._tried), self._deadline):
            self._attempt(member if b.failure == "failtry" else None)
        else:
            self._settle(None, b._final_error(self._method, self._tried))

    def _hedge(self) -> None:
        """The backup_after delay passed (called by the balancer's hedge timer)."""
        b = self._balancer
        with self._condition:
            if self._state != _PENDING or len(self._running) != 1 or \
                    len(self._tried) + 1 >= b.max_attempts:
                return
        if b.retry_budget.withdraw():
            self._attempt()

    def _settle(self, value: Any, exc: Optional[BaseException]) -> None:
        try:
            if exc is None:
                self.set_result(value)
            else:
                self.set_exception(exc)
        except concurrent.futures.InvalidStateError:
            pass    # cancelled by the caller, or settled by the other attempt

    # waiting ---------------------------------------------------------------------------
    def _drive(self, timeout: Optional[float]) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._state == _PENDING:
            running = list(self._running)
            if len(running) == 1 and not running[0].done():
                try:
                    running[0].exception(_remaining(deadline))
                except (TimeoutError, concurrent.futures.TimeoutError):
                    return
                except concurrent.futures.CancelledError:
                    pass
            else:
                # Between attempts (the retry is issued by the completing
                # thread) or two in flight (the helper reads both): wait.
                self._wait_briefly(deadline)
            if deadline is not None and time.monotonic() >= deadline:
                return

    def _wait_briefly(self, deadline: Optional[float]) -> None:
        with self._condition:
            if self._state == _PENDING:
                self._condition.wait(0.001 if deadline is None else min(0.001, _remaining(deadline)))

    def result(self, timeout: Optional[float] = None) -> Any:
        """The call's result; waiting drives the connection (see Client.go)."""
        self._drive(timeout)
        return super().result(0 if self.done() else timeout)

    def exception(self, timeout: Optional[float] = None):
        """The call's exception, or None; waiting drives the connection."""
        self._drive(timeout)
        return super().exception(0 if self.done() else timeout)

    def cancel(self) -> bool:
        """Cancel the call; the attempts in flight are withdrawn at their servers."""
        if not super().cancel():
            return False
        for inner in list(self._running):
            inner.cancel()
        return True


class _HedgeTimer:
    """One thread per balancer that starts the hedged attempts of go() calls
    whose first attempt has not answered within backup_after."""

    def __init__(self) -> None:
        self._heap: List[Tuple[float, int, "weakref.ref"]] = []
        self._cond = threading.Condition(threading.Lock())
        self._count = 0
        self._thread: Optional[threading.Thread] = None
        self._stopped = False

    def schedule(self, when: float, future: _BalancedFuture) -> None:
        with self._cond:
            if self._stopped:
                return
            self._count += 1
            heapq.heappush(self._heap, (when, self._count, weakref.ref(future)))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="fastrpc-hedge", daemon=True)
                self._thread.start()
            elif self._heap[0][1] == self._count:
                self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    self._cond.wait(None if not self._heap else self._heap[0][0] - time.monotonic())
                if self._stopped:
                    return
                _, _, ref = heapq.heappop(self._heap)
            future = ref()
            if future is not None:
                try:
                    future._hedge()
                except Exception:               # never let one call stop the timer
                    log.exception("hedged attempt failed to start")


def _health_loop(ref, stop: threading.Event, interval: float) -> None:
    """Ping every endpoint each `interval` while the balancer lives."""
    while not stop.wait(interval):
        balancer = ref()
        if balancer is None or balancer._closed:
            return
        try:
            balancer.check_health()
            balancer._maintain()
        except Exception:
            log.exception("health check failed")
        del balancer
