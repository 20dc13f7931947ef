"""Strategies: how a balancer chooses the endpoint for a call.

A strategy turns the balancer's endpoint list and state table into a picker
(something with ``pick(key) -> index`` and ``rebuild()``); the built-in
ones return compiled kernels from fastrpc._core.select, so a pick never touches
Python objects. Subclass Strategy and implement ``pick`` for your own.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type, Union

import numpy as np

from fastrpc._core import select as kernels
from fastrpc._core.select import EndpointTable
from fastrpc.net.endpoint import Endpoint

__all__ = [
    "Strategy", "Random", "WeightedRandom", "RoundRobin", "WeightedRoundRobin",
    "LeastConnections", "P2C", "P2CEwma", "ConsistentHash", "Geo",
    "STRATEGIES", "make_strategy", "hash_key", "build_ring", "geo_tiers", "haversine_km",
]

log = logging.getLogger("fastrpc.balancer")

EARTH_RADIUS_KM = 6371.0088


class Strategy:
    """The strategy interface. Built-ins are looked up by name (STRATEGIES).

    ``build(table, endpoints)`` is called whenever membership or weights
    change and returns the picker; ``picker.rebuild()`` when only
    eligibility (health) changed; ``picker.pick(key)`` for every call, with
    `key` the 64-bit hash of the call's key (0 without one). A picker
    returns an index into `endpoints`, or -1 when none is eligible.

    A custom strategy subclasses this and implements ``pick``: the default
    build() keeps ``self.table`` (an EndpointTable: read its arrays with
    numpy.asarray, e.g. ``mask``, ``inflight``, ``ewma``) and
    ``self.endpoints``, and returns ``self``.
    """

    #: the name stats and reports show
    name = "custom"
    #: whether picks depend on the call's key (a random key is drawn when none is given)
    keyed = False

    def build(self, table: EndpointTable, endpoints: Sequence[Endpoint]) -> Any:
        """Return the picker for this membership."""
        self.table = table
        self.endpoints = list(endpoints)
        return self

    def rebuild(self) -> None:
        """Eligibility or effective weights changed (custom strategies: recompute here)."""

    def pick(self, key: int) -> int:
        """The index of the endpoint for the next call, or -1."""
        raise NotImplementedError("a custom Strategy implements pick(key)")

    def __repr__(self) -> str:
        return f"<strategy {self.name}>"


class Random(Strategy):
    """Uniform over healthy endpoints."""
    name = "random"

    def build(self, table: EndpointTable, endpoints: Sequence[Endpoint]) -> Any:
        return kernels.RandomKernel(table)


class WeightedRandom(Strategy):
    """Random in proportion to weight (alias method, O(1) per pick)."""
    name = "weighted_random"

    def build(self, table: EndpointTable, endpoints: Sequence[Endpoint]) -> Any:
        return kernels.WeightedRandomKernel(table)


class RoundRobin(Strategy):
    """Each healthy endpoint in turn, from a random offset (`start` fixes it)."""
    name = "round_robin"

    def __init__(self, start: Optional[int] = None) -> None:
        self.start = start

    def build(self, table: EndpointTable, endpoints: Sequence[Endpoint]) -> Any:
        return kernels.RoundRobinKernel(table, -1 if self.start is None else self.start)


class WeightedRoundRobin(Strategy):
    """nginx's smooth weighted round robin ({5, 1, 1}: a a b a c a a).

    `random_phase` starts each balancer at a random point of the sequence,
    so a fleet of clients does not hit the same endpoint together.
    """
    name = "weighted_round_robin"

    def __init__(self, random_phase: bool = False) -> None:
        self.random_phase = random_phase

    def build(self, table: EndpointTable, endpoints: Sequence[Endpoint]) -> Any:
        return kernels.SmoothWeightedKernel(table, self.random_phase)


class LeastConnections(Strategy):
    """Fewest calls in flight per unit of weight; ties at random in proportion to weight."""
    name = "least_connections"

    def build(self, table: EndpointTable, endpoints: Sequence[Endpoint]) -> Any:
        return kernels.LeastConnectionsKernel(table)


class P2C(Strategy):
    """Power of two choices: of two distinct random endpoints, the less loaded."""
    name = "p2c"

    def build(self, table: EndpointTable, endpoints: Sequence[Endpoint]) -> Any:
        return kernels.P2CKernel(table)


class P2CEwma(Strategy):
    """P2C on peak-EWMA latency x (in flight + 1), the estimate decaying while idle.

    The decay time constant is the balancer's `ewma_tau` (default 10 s).
    """
    name = "p2c_ewma"

    def __init__(self, penalty: float = 1.0) -> None:
        self.penalty = penalty

    def build(self, table: EndpointTable, endpoints: Sequence[Endpoint]) -> Any:
        return kernels.P2CEwmaKernel(table, self.penalty)


class ConsistentHash(Strategy):
    """A hash ring: the same key goes to the same endpoint, in every process.

    Each endpoint gets ``vnodes x weight`` points placed by hashing its
    address, so the ring does not depend on the order endpoints were added,
    and adding one of n endpoints moves about 1/(n+1) of the keys. With
    `bounded`, an endpoint already holding more than `load_factor` times its
    share of the calls in flight passes the key to the next one on the ring.
    """
    name = "consistent_hash"
    keyed = True

    def __init__(self, vnodes: int = 100, bounded: bool = False, load_factor: float = 1.25) -> None:
        if vnodes < 1:
            raise ValueError("vnodes must be >= 1")
        if bounded and load_factor < 1.0:
            raise ValueError("load_factor must be >= 1")
        self.vnodes = vnodes
        self.bounded = bounded
        self.load_factor = load_factor

    def build(self, table: EndpointTable, endpoints: Sequence[Endpoint]) -> Any:
        points, owners = build_ring(endpoints, self.vnodes)
        return kernels.RingKernel(table, points, owners, self.load_factor if self.bounded else 0.0)


class Geo(Strategy):
    """Nearest first: P2C inside the nearest tier that has a healthy endpoint.

    With `origin` (lat, lon), endpoints are ranked by great-circle distance
    and grouped into tiers `tier_km` wide; with only `origin_zone`, the
    endpoints of that zone form the first tier and all others the second.
    Distances are computed once per membership change. A tier whose P2C
    winner has `overload` or more calls in flight per unit of weight
    spills to the next tier (0 disables spilling). Endpoints with neither
    coordinates nor a zone to compare rank last, with a warning.
    """
    name = "geo"

    def __init__(self, origin: Optional[Tuple[float, float]] = None, origin_zone: Optional[str] = None,
                 tier_km: float = 500.0, overload: float = 64.0) -> None:
        if origin is None and origin_zone is None:
            raise ValueError("the geo strategy needs origin=(lat, lon) or origin_zone=...")
        if origin is not None:
            lat, lon = (float(v) for v in origin)
            if not (-90.0 <= lat <= 90.0) or not (-180.0 <= lon <= 180.0):
                raise ValueError("origin must be (lat, lon) with lat in [-90, 90], lon in [-180, 180]")
            origin = (lat, lon)
        if tier_km <= 0:
            raise ValueError("tier_km must be > 0")
        self.origin = origin
        self.origin_zone = origin_zone
        self.tier_km = tier_km
        self.overload = overload

    def build(self, table: EndpointTable, endpoints: Sequence[Endpoint]) -> Any:
        members, starts = geo_tiers(endpoints, self.origin, self.origin_zone, self.tier_km)
        return kernels.GeoKernel(table, members, starts, self.overload)


STRATEGIES: Dict[str, Type[Strategy]] = {
    cls.name: cls for cls in (Random, WeightedRandom, RoundRobin, WeightedRoundRobin,
                              LeastConnections, P2C, P2CEwma, ConsistentHash, Geo)
}


def make_strategy(spec: Union[str, Strategy], **options: Any) -> Strategy:
    """A Strategy from a name in STRATEGIES (with its options) or an instance as given."""
    if isinstance(spec, Strategy):
        if options:
            raise TypeError(f"options {sorted(options)} apply to a strategy given by name only")
        return spec
    if not isinstance(spec, str) or spec not in STRATEGIES:
        raise ValueError(f"unknown strategy {spec!r}; choose one of {', '.join(STRATEGIES)} "
                         "or pass a Strategy instance")
    return STRATEGIES[spec](**options)


# keys and rings ----------------------------------------------------------------
# hash_key (re-exported here) is compiled: a keyed call hashes its key every time.
hash_key = kernels.hash_key


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _mix64(x: np.ndarray) -> np.ndarray:
    """kernels.mix64 over a uint64 array (wrapping arithmetic)."""
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def build_ring(endpoints: Sequence[Endpoint], vnodes: int) -> Tuple[np.ndarray, np.ndarray]:
    """Ring points (sorted uint64) and their owners (endpoint indices).

    Endpoint i gets round(vnodes x weight) points (at least 1, at most 100 x
    vnodes), point j at mix64(xxh64(address) + j): a function of the address
    alone, so every process builds the same ring from the same endpoints.
    """
    n = len(endpoints)
    if n == 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.int32)
    ids = np.array([kernels.xxh64(e.address.encode("utf-8")) for e in endpoints], dtype=np.uint64)
    weights = np.array([e.weight for e in endpoints], dtype=np.float64)
    counts = np.clip(np.rint(vnodes * weights), 1, 100 * vnodes).astype(np.int64)
    owners = np.repeat(np.arange(n, dtype=np.int32), counts)
    ordinal = np.arange(owners.shape[0], dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    points = _mix64(ids[owners] + ordinal.astype(np.uint64))
    order = np.lexsort((ids[owners], points))   # equal points: the order of the addresses' hashes
    return points[order], owners[order]


def haversine_km(lat1: np.ndarray, lon1: np.ndarray, lat2: float, lon2: float) -> np.ndarray:
    """Great-circle distances in km from each (lat1, lon1) to (lat2, lon2)."""
    p1, p2 = np.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, np.radians(lon2 - np.asarray(lon1))
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * math.cos(p2) * np.sin(dl / 2) ** 2
    distances: np.ndarray = 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))
    return distances


def geo_tiers(endpoints: Sequence[Endpoint], origin: Optional[Tuple[float, float]],
              origin_zone: Optional[str], tier_km: float) -> Tuple[np.ndarray, np.ndarray]:
    """Endpoint indices tier by tier, nearest first, and each tier's start offset (plus the end).

    A tier opens at the nearest endpoint not yet placed and takes every
    endpoint within `tier_km` beyond it. Without an origin, the origin zone
    is tier 0 and every other zone tier 1. Endpoints that cannot be ranked
    form the last tier, and a warning names them.
    """
    tiers: List[List[int]] = []
    unranked: List[int] = []
    if origin is not None:
        placed = [i for i, e in enumerate(endpoints) if e.has_coordinates]
        unranked = [i for i, e in enumerate(endpoints) if not e.has_coordinates]
        if placed:
            lat = np.array([endpoints[i].lat for i in placed])
            lon = np.array([endpoints[i].lon for i in placed])
            dist = haversine_km(lat, lon, origin[0], origin[1])
            order = np.lexsort((np.array(placed), dist))
            opened = None
            for j in order:
                if opened is None or dist[j] > opened + tier_km:
                    opened = dist[j]
                    tiers.append([])
                tiers[-1].append(placed[j])
    else:
        near = [i for i, e in enumerate(endpoints) if e.zone == origin_zone]
        far = [i for i, e in enumerate(endpoints) if e.zone is not None and e.zone != origin_zone]
        unranked = [i for i, e in enumerate(endpoints) if e.zone is None]
        tiers = [t for t in (near, far) if t]
    if unranked:
        what = "coordinates" if origin is not None else "zone"
        names = ", ".join(endpoints[i].address for i in unranked[:5])
        more = f" and {len(unranked) - 5} more" if len(unranked) > 5 else ""
        log.warning("geo: %d endpoint(s) have no %s and rank last: %s%s",
                    len(unranked), what, names, more)
        tiers.append(unranked)
    members = np.array([i for tier in tiers for i in tier], dtype=np.int32)
    starts = np.cumsum([0] + [len(t) for t in tiers]).astype(np.int32)
    return members, starts
