"""BalancerCore: a balancer's membership, health and ejection, shared by Balancer and AsyncBalancer.

Owns: which endpoints there are (add, remove, weights, discovery), which
of them may be picked (active health checks, passive outlier ejection,
panic mode, slow start), the state table and picker they are picked by,
and what stats() reports. It does no I/O. The call path itself is compiled
(fastrpc._core.balance: Pool, Member, Attempt); the attempt policy is the
Planner (fastrpc.balancer.plan); the drivers (sync, aio) own the connections.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Tuple, Union

import numpy as np

from fastrpc._core.balance import Member, Pool
from fastrpc._core.select import EndpointTable
from fastrpc.balancer.map import MapJob
from fastrpc.balancer.plan import Planner, RetryBudget
from fastrpc.balancer.strategies import Strategy, make_strategy
from fastrpc.balancer.subset import Aperture
from fastrpc.client.proxy import Proxying
from fastrpc.context import bound_timeout
from fastrpc.discovery.base import Discovery, Watch
from fastrpc.errors import NoEndpointError
from fastrpc.net.endpoint import Endpoint, as_endpoint, check_weight
from fastrpc.net.options import BalancerOptions, BalancingOptions

if TYPE_CHECKING:
    from typing_extensions import Unpack
from fastrpc.net.settings import ClientSettings
from fastrpc.observability import registry as observed
from fastrpc.observability.histogram import quantile

__all__ = ["BalancerCore", "BALANCER_SETTINGS"]

log = logging.getLogger("fastrpc.balancer")

#: Keyword arguments of Balancer and AsyncBalancer that configure balancing;
#: the others configure the per-endpoint clients.
BALANCER_SETTINGS = frozenset(BalancingOptions.__annotations__)


class BalancerCore(Proxying):
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
      health_method ("Service.Method", default None: a PING, or for Go
      servers a call nothing answers but "can't find service"): call this
      instead, with no arguments (Go: an empty struct); any error is a miss.
    - eject_failures (5 consecutive failed calls), eject_base (30 s x times
      ejected), eject_max (300 s), max_ejected (0.5 of the endpoints).
    - slow_start (0 s): a new or recovered endpoint's weight ramps up over
      this window. ewma_tau (10 s): latency estimate decay. seed: picks'
      random seed (default: random).
    - discovery, service: take the endpoints of `service` from a registry
      (fastrpc.discovery) instead of a list, and follow its changes.
    - subset (None): an Aperture; this client then uses only its share of
      the endpoints (deterministic subsetting, fastrpc.balancer.subset),
      recomputed whenever the endpoints change.

    Any other keyword argument configures the client of each endpoint
    (timeout, connect_timeout, ssl, auth_secret, metadata, limits...).
    """

    def __init__(self, endpoints: Iterable[Union[str, Endpoint]] = (),
                 **options: Unpack[BalancerOptions]) -> None:
        settings: Dict[str, Any] = dict(options)
        balancing = {k: settings.pop(k) for k in list(settings) if k in BALANCER_SETTINGS}
        settings.setdefault("connect_timeout", 3.0)
        #: What every call carries (metadata, deadline), from the client settings,
        #: which are checked now: unknown or bad ones raise here.
        self.call_settings = ClientSettings("tcp://127.0.0.1:1", **settings)
        self.timeout: Optional[float] = settings.get("timeout")
        #: Interceptors run around each balanced call (not again by the endpoints' clients).
        self.interceptors: Tuple[Any, ...] = tuple(settings.pop("interceptors", None) or ())
        self.client_settings = settings
        self._configure(**balancing)
        seen: Dict[str, Endpoint] = {}
        for item in endpoints:
            endpoint = as_endpoint(item)
            if endpoint.address in seen:
                raise ValueError(f"endpoint {endpoint.address} is listed twice")
            seen[endpoint.address] = endpoint
        self._known.update(seen)
        for endpoint in self._chosen():
            self._add_member(Member(endpoint, None))
        with self._lock:
            self._rebuild_locked(time.monotonic())
        self._watch: Optional[Watch] = None
        if self.discovery is not None:
            if not self.service:
                raise ValueError("discovery= needs service=, the name the servers register under")
            if seen:
                raise ValueError("give endpoints or discovery=, not both")
            self.set_endpoints(self.discovery.endpoints(self.service))
            self._watch = self.discovery.watch(self.service, self._discovered)
        elif self.service is not None:
            raise ValueError("service= applies with discovery=")
        observed.balancers.add(self)

    def _configure(self, *, strategy: Union[str, Strategy] = "round_robin",
                   origin: Optional[Tuple[float, float]] = None, origin_zone: Optional[str] = None,
                   failure: str = "failover", max_attempts: int = 3,
                   retry_budget: Optional[RetryBudget] = None, idempotent: bool = False,
                   backup_after: float = 0.05,
                   health_interval: float = 5.0, health_timeout: float = 1.0, health_misses: int = 3,
                   health_method: Optional[str] = None,
                   eject_failures: int = 5, eject_base: float = 30.0, eject_max: float = 300.0,
                   max_ejected: float = 0.5, slow_start: float = 0.0, ewma_tau: float = 10.0,
                   seed: Optional[int] = None, discovery: Optional[Discovery] = None,
                   service: Optional[str] = None, subset: Optional[Aperture] = None) -> None:
        options = {}
        if origin is not None or origin_zone is not None:
            if strategy != "geo":
                raise ValueError("origin and origin_zone apply to the geo strategy")
            options = {"origin": origin, "origin_zone": origin_zone}
        self.strategy = make_strategy(strategy, **options)
        if health_misses < 1 or eject_failures < 1:
            raise ValueError("health_misses and eject_failures must be >= 1")
        if not 0.0 <= max_ejected <= 1.0:
            raise ValueError("max_ejected is a fraction in [0, 1]")
        self.retry_budget = retry_budget if retry_budget is not None else RetryBudget()
        self._lock = threading.RLock()
        self.pool = Pool(None, self._lock)
        self.planner = Planner(self, failure, max_attempts, self.retry_budget, backup_after)
        self.pool.policy = self.planner
        self.pool.idempotent = idempotent
        self.pool.hedge_after = backup_after if failure == "backup" and max_attempts > 1 else -1.0
        self.pool.settings = self.call_settings.per_call
        self.failure = failure
        self.max_attempts = max_attempts
        self.idempotent = idempotent
        self.backup_after = backup_after
        self.health_interval = health_interval
        self.health_timeout = health_timeout
        self.health_misses = health_misses
        self.health_method = health_method
        self.eject_failures = eject_failures
        self.eject_base = eject_base
        self.eject_max = eject_max
        self.max_ejected = max_ejected
        self.slow_start = slow_start
        self.ewma_tau = ewma_tau
        self.discovery = discovery
        self.service = service
        if subset is not None and not isinstance(subset, Aperture):
            raise TypeError(f"subset= takes an Aperture, not {type(subset).__name__}")
        self.subset = subset
        #: Every endpoint of the service; the members are derived from it
        #: (all of them, or this client's subset).
        self._known: Dict[str, Endpoint] = {}
        self._membership_lock = threading.Lock()
        self._seed = seed if seed is not None else int.from_bytes(os.urandom(8), "little")
        self._members: List[Member] = []
        self._by_address: Dict[str, Member] = {}
        self._panic = False
        self._eject_check = self._ramp_check = float("inf")
        self._closed = False

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

    # membership ------------------------------------------------------------------
    def _add_member(self, member: Member) -> None:
        self._members.append(member)
        self._by_address[member.endpoint.address] = member

    def add(self, endpoint: Union[str, Endpoint]) -> None:
        """Add an endpoint (or replace the one with the same address); no call is dropped."""
        endpoint = as_endpoint(endpoint)
        with self._membership_lock:
            self._known[endpoint.address] = endpoint
            self._apply_known()

    def _put(self, endpoint: Endpoint) -> None:
        with self._lock:
            old = self._by_address.get(endpoint.address)
            if old is not None:
                if old.endpoint == endpoint:
                    return
                old.endpoint = endpoint        # same server: keep its connection and state
            else:
                self._add_member(Member(endpoint, time.monotonic() if self.slow_start > 0 else None))
            self._rebuild_locked(time.monotonic())

    def remove(self, address: str) -> None:
        """Remove an endpoint: no new calls go to it; its calls in flight finish."""
        with self._membership_lock:
            if self._known.pop(address, None) is None:
                raise KeyError(f"no endpoint {address} in this balancer")
            self._apply_known()

    def _drop(self, address: str) -> None:
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
            self.close_member(member)

    def set_weight(self, address: str, weight: float) -> None:
        """Change an endpoint's weight at runtime."""
        weight = check_weight(weight)
        with self._membership_lock:
            known = self._known.get(address)
            if known is None:
                raise KeyError(f"no endpoint {address} in this balancer")
            self._known[address] = known.replace(weight=weight)
            self._apply_known()

    def set_endpoints(self, endpoints: Iterable[Union[str, Endpoint]]) -> None:
        """Make the endpoint set exactly `endpoints` (adds, removes, updates)."""
        wanted = {e.address: e for e in map(as_endpoint, endpoints)}
        with self._membership_lock:
            self._known = wanted
            self._apply_known()

    def _chosen(self) -> List[Endpoint]:
        """The endpoints to be members: every known one, or this client's subset."""
        if self.subset is not None:
            return self.subset.choose(self._known.values())
        return list(self._known.values())

    def _apply_known(self) -> None:
        """Make the members match _chosen(): drop those no longer chosen, add or
        update the others (a member kept keeps its connection and state)."""
        wanted = {e.address: e for e in self._chosen()}
        for address in [m.endpoint.address for m in self._members if m.endpoint.address not in wanted]:
            self._drop(address)
        for endpoint in wanted.values():
            self._put(endpoint)

    @property
    def endpoints(self) -> List[Endpoint]:
        """The current endpoints, in the order they were added (with subset=,
        this client's subset, weighted by its share of each)."""
        return [m.endpoint for m in self._members]

    @property
    def known_endpoints(self) -> List[Endpoint]:
        """Every endpoint of the service: with subset=, those it chose among;
        otherwise the same endpoints as ``endpoints``."""
        return list(self._known.values())

    def _rebuild_locked(self, now: float) -> None:
        """New table and picker for the current membership; state carries over."""
        old_table = self.pool.table
        table = EndpointTable(len(self._members), self._seed, self.ewma_tau)
        self._seed = (self._seed * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
        kept = [(m.index, j) for j, m in enumerate(self._members) if m.index >= 0]
        if kept:
            table.carry_over(old_table, [a for a, _ in kept], [b for _, b in kept])
        table.set_weights(self._effective_weights(now))
        table.set_mask(self._mask(now))
        picker = self.strategy.build(table, [m.endpoint for m in self._members])
        self.pool.install(table, picker, list(self._members), self.strategy.keyed)
        self.pool.next_check = min(self._eject_check, self._ramp_check)

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
        table = self.pool.table
        if weights:
            table.set_weights(self._effective_weights(now))
        table.set_mask(self._mask(now))
        self.pool.next_check = min(self._eject_check, self._ramp_check)
        self.pool.picker.rebuild()

    def maintain(self) -> None:
        """Ejections that expired, slow-start steps (when one is due)."""
        with self._lock:
            now = time.monotonic()
            if now >= self.pool.next_check:
                self._refresh_locked(now, weights=self._ramp_check <= now)

    # picking ------------------------------------------------------------------------
    def pick(self, key: Union[str, bytes, int, None] = None) -> Endpoint:
        """The endpoint the next call with `key` would go to (state is not changed)."""
        with self._lock:
            i = self.pool.picker.pick(self.pool.key_hash_for(key))
            if i < 0:
                raise NoEndpointError(self.no_endpoint_reason())
            endpoint: Endpoint = self._members[i].endpoint
            return endpoint

    def no_endpoint_reason(self) -> str:
        """Why the balancer has no endpoint: it was given none, or its registry
        has none for its service (naming the services the registry does have)."""
        if self.discovery is None:
            return "the balancer has no endpoints"
        try:
            known = ", ".join(self.discovery.services()) or "none"
        except Exception as exc:             # the registry is unreachable: say so
            known = f"unknown ({type(exc).__name__}: {exc})"
        return (f"{self.discovery!r} has no endpoints for service {self.service!r} "
                f"(services it has: {known})")

    def untried(self, key_hash: int, used: set[Any]) -> Member:
        """An endpoint a call has not tried yet, eligible if one is; NoEndpointError if none."""
        with self._lock:
            pool = self.pool
            members = self._members
            for _ in range(4):
                i = pool.picker.pick(pool.table.next_random() if pool.keyed else key_hash)
                if i >= 0 and id(members[i]) not in used:
                    member: Member = members[i]
                    return member
            mask = np.asarray(pool.table.mask)
            for m in members:
                if id(m) not in used and mask[m.index]:
                    return m
            for m in members:
                if id(m) not in used:
                    return m
        raise NoEndpointError("every endpoint was tried")

    def map_job(self, method: str, args_iterable: Iterable[Any], keys: Optional[Iterable[Any]],
                timeout: Optional[float], idempotent: Optional[bool]) -> MapJob:
        """The bookkeeping of one map() (fastrpc.balancer.map), for either driver."""
        items = args_iterable if type(args_iterable) is list else list(args_iterable)
        key_hashes = None
        if keys is not None:
            keys = list(keys)
            if len(keys) != len(items):
                raise ValueError(f"keys has {len(keys)} entries for {len(items)} items")
            key_hashes = list(map(self.pool.key_hash_for, keys))
        timeout = bound_timeout(timeout, self.timeout)
        settings = self.call_settings
        return MapJob(self, method, items, key_hashes,
                      0.0 if timeout is None else time.monotonic() + timeout,
                      None if timeout is None else settings.deadline_ms(timeout), settings.call_metadata(),
                      self.idempotent if idempotent is None else idempotent)

    # outcomes -------------------------------------------------------------------------
    def count_failure(self, member: Member, sent: float, exc: BaseException) -> None:
        """An attempt through `member` failed (transport error, timeout, not sent).

        `sent` is when it was sent (monotonic; 0: never sent). If the
        endpoint answered anything after that, the failure is not evidence
        of a dead or stalled endpoint (say, a caller's very short timeout)
        and does not count towards ejection.
        """
        self.count_failures(member, sent, exc, 1)

    def count_failures(self, member: Member, sent: float, exc: BaseException, count: int) -> None:
        """`count` attempts through `member` failed alike (a map batch): see count_failure."""
        now = time.monotonic()
        with self._lock:
            member.active -= count
            member.calls += count
            member.errors += count
            member.last_error = f"{type(exc).__name__}: {exc}"
            if member.index >= 0 and not member.removed:
                for _ in range(count):
                    self.pool.table.end(member.index, -1.0, now, -1)
            if not sent or member.last_answer <= sent:
                member.failures += count
                if member.failures >= self.eject_failures and not member.ejected_until:
                    self._eject_locked(member, now)
            if now >= self.pool.next_check:
                self._refresh_locked(now, weights=self._ramp_check <= now)
            closing = member.removed and member.active == 0
        if closing:
            self.close_member(member)

    def count_remote(self, member: Member, exc: BaseException) -> None:
        """The handler at `member` answered with an error (counted by the call path)."""
        member.last_error = f"{type(exc).__name__}: {exc}"

    def _eject_locked(self, member: Member, now: float) -> None:
        ejected = sum(1 for m in self._members if m.ejected_until)
        if ejected + 1 > self.max_ejected * len(self._members):
            if not member.eject_refused:      # say it once per run of failures
                member.eject_refused = True
                log.warning("not ejecting %s after %d failures: %d of %d endpoints are already ejected",
                            member.endpoint.address, member.failures, ejected, len(self._members))
            return
        member.times_ejected += 1
        member.ejections += 1
        duration = min(self.eject_base * member.times_ejected, self.eject_max)
        member.ejected_until = now + duration
        member.failures = 0
        log.warning("ejecting %s for %.0f s after %d consecutive failures",
                    member.endpoint.address, duration, self.eject_failures)
        self._refresh_locked(now)

    def health_result(self, member: Member, ok: bool, load: Optional[int]) -> None:
        """An active health check of `member` succeeded or missed."""
        now = time.monotonic()
        with self._lock:
            if member.removed:
                return
            if ok:
                member.misses = 0
                if load is not None:
                    self.pool.table.set_reported(member.index, load)
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

    def health_call(self) -> Tuple[Optional[str], tuple[Any, ...], Dict[str, Any]]:
        """What a named health check calls: (method, args, options), None method: ping."""
        if self.call_settings.codec == "fastrpc":
            return self.health_method, (), {}
        from fastrpc.go.types import EMPTY_STRUCT
        return self.health_method, ({},), {"arg_type": EMPTY_STRUCT}

    def going_away(self, member: Member) -> None:
        """The endpoint sent GOAWAY: no new calls until a health check finds it serving."""
        with self._lock:
            if member.healthy and not member.removed:
                member.healthy = False
                member.misses = self.health_misses
                log.info("endpoint %s is going away (GOAWAY)", member.endpoint.address)
                self._refresh_locked(time.monotonic())

    def close_member(self, member: Member) -> None:
        """Close a removed member's client (its calls have ended)."""
        client, member.client, member.conn = member.client, None, None
        if client is not None:
            self._close_client(client)

    def _close_client(self, client: Any) -> None:
        raise NotImplementedError

    # reporting ----------------------------------------------------------------------
    def stats(self) -> Dict[str, Dict[str, Any]]:
        """Per endpoint address: calls (attempts that ended there), errors
        (transport failures and timeouts), remote_errors (the handler
        raised), in_flight, latency (EWMA, s), p50 and p99 (round-trip
        seconds from the histogram, None: no answer yet), histogram (answered
        attempts per fastrpc.LATENCY_BUCKETS bucket, then the rest),
        rtt_seconds (their sum), load (server-reported calls in flight, None
        unknown), healthy, ejected, ejected_for (seconds of ejection left),
        ejections, weight, effective_weight, zone, last_error."""
        now = time.monotonic()
        out = {}
        with self._lock:
            t = self.pool.table
            inflight, reported = np.asarray(t.inflight), np.asarray(t.reported)
            weight = np.asarray(t.weight)
            for m in self._members:
                i = m.index
                histogram = m.histogram()
                out[m.endpoint.address] = {
                    "calls": m.calls, "errors": m.errors, "remote_errors": m.remote_errors,
                    "in_flight": int(inflight[i]),
                    "latency": t.latency(i, now), "p50": quantile(histogram, 0.5), "p99": quantile(histogram, 0.99),
                    "histogram": histogram, "rtt_seconds": m.rtt_seconds,
                    "load": None if reported[i] < 0 else int(reported[i]),
                    "healthy": m.healthy, "ejected": bool(m.ejected_until),
                    "ejected_for": max(0.0, m.ejected_until - now) if m.ejected_until else 0.0,
                    "ejections": m.ejections,
                    "weight": m.endpoint.weight, "effective_weight": float(weight[i]),
                    "zone": m.endpoint.zone, "last_error": m.last_error,
                }
        return out

    def call_stats(self) -> Dict[str, Dict[str, Any]]:
        """Per method, the balanced calls as callers saw them (after retries
        and hedges): calls, errors, error_types, seconds, histogram."""
        stats: Dict[str, Dict[str, Any]] = self.pool.stats.snapshot()
        return stats

    @property
    def name(self) -> str:
        """What the balancer is called in metrics: its service, or "balancer"."""
        return self.service or "balancer"

    def snapshot(self) -> Dict[str, Any]:
        """name, strategy, methods (call_stats()) and endpoints (stats())."""
        return {"name": self.name, "strategy": getattr(self.strategy, "name", str(self.strategy)),
                "methods": self.call_stats(), "endpoints": self.stats()}

    @property
    def closed(self) -> bool:
        """close() was called."""
        return self._closed

    @property
    def panic(self) -> bool:
        """True while no endpoint is healthy and calls are spread over all of them."""
        return self._panic

    def _mark_closed(self) -> List[Member]:
        with self._lock:
            self._closed = True
            self.pool.closed = True
            members = list(self._members)
        self._stop_discovery()
        return members

    def __repr__(self) -> str:
        return (f"<fastrpc.{type(self).__name__} {self.strategy.name} over "
                f"{len(self._members)} endpoints>")
