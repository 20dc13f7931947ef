"""Selection kernels: which endpoint serves the next call.

Owns the per-endpoint state arrays (weight, calls in flight, reported load,
peak-EWMA latency, eligibility) and one kernel per strategy that picks an
index from them. No policy lives here: the balancer decides what is
eligible, what the weights are and when to rebuild.

This file is Cython pure-Python mode: `_select.pxd` types it and setup.py
compiles it, while the very same source runs uncompiled as the reference
implementation the tests and benchmarks compare against. Both draw the same
pseudo-random numbers from the same seed, so they pick the same endpoints.
"""
import math
import time

try:
    import cython
except ImportError:                 # run uncompiled without Cython installed
    from fastrpc._core import cython_shim as cython
import numpy as np

if cython.compiled:
    from cython.cimports.libc.math import exp, log
    from cython.cimports.cpython.bytes import PyBytes_FromStringAndSize
    from cython.cimports.cpython.long import PyLong_AsLongLongAndOverflow
    from cython.cimports.cpython.unicode import PyUnicode_AsUTF8String
else:
    from math import exp, log

_M64 = cython.declare(cython.ulonglong, 0xFFFFFFFFFFFFFFFF)   # 64-bit wrap (no-op when compiled)
_P1 = cython.declare(cython.ulonglong, 0x9E3779B185EBCA87)    # xxh64 primes
_P2 = cython.declare(cython.ulonglong, 0xC2B2AE3D27D4EB4F)
_P3 = cython.declare(cython.ulonglong, 0x165667B19E3779F9)
_P4 = cython.declare(cython.ulonglong, 0x85EBCA77C2B2AE63)
_P5 = cython.declare(cython.ulonglong, 0x27D4EB2F165667C5)
_XS = cython.declare(cython.ulonglong, 0x2545F4914F6CDD1D)    # xorshift64* multiplier
_G = cython.declare(cython.ulonglong, 0x9E3779B97F4A7C15)     # splitmix64 constants
_S1 = cython.declare(cython.ulonglong, 0xBF58476D1CE4E5B9)
_S2 = cython.declare(cython.ulonglong, 0x94D049BB133111EB)
_INF = cython.declare(cython.double, math.inf)

#: Smooth weighted round robin precomputes one period when it is at most this long.
MAX_PERIOD = 1 << 20


def _now() -> cython.double:
    if cython.compiled:
        return frpc_monotonic()  # noqa: F821 (declared in _select.pxd)
    return time.monotonic()


class EndpointTable:
    """The state of n endpoints as arrays the kernels read.

    `weight`, `inflight`, `reported`, `ewma`, `stamp`, `mask` and
    `eligible` are exposed (read-only) as buffers: ``numpy.asarray(t.inflight)``.
    """

    def __init__(self, n: cython.Py_ssize_t, seed: cython.ulonglong = 1, tau: float = 10.0):
        if n < 0:
            raise ValueError("n must be >= 0")
        self.n = n
        self.weight = np.ones(n, dtype=np.float64)
        self.inflight = np.zeros(n, dtype=np.int64)
        self.reported = np.full(n, -1, dtype=np.int64)
        self.ewma = np.zeros(n, dtype=np.float64)
        self.stamp = np.zeros(n, dtype=np.float64)
        self.mask = np.ones(n, dtype=np.uint8)
        self.eligible = np.arange(n, dtype=np.int32)
        self.n_eligible = n
        self.total_inflight = 0
        self.tau = tau
        self.rng = mix64(seed) | 1
        self.tracking = False
        self.tree_size = 0
        self.tree = np.zeros(0, dtype=np.int32)
        self.tiebreak = np.zeros(n, dtype=np.float64)

    # random numbers: xorshift64*, identical compiled and uncompiled ------------
    @cython.cdivision(True)
    def next_random(self):
        """The next 64-bit pseudo-random number."""
        x: cython.ulonglong = self.rng
        x ^= x >> 12
        x ^= (x << 25) & _M64
        x ^= x >> 27
        self.rng = x
        return (x * _XS) & _M64

    def rand_below(self, bound: cython.Py_ssize_t):
        """A pseudo-random integer in [0, bound) (multiply-shift, no division)."""
        r: cython.ulonglong = self.next_random() >> 32
        return cython.cast(cython.Py_ssize_t, (r * cython.cast(cython.ulonglong, bound)) >> 32)

    def next_unit(self):
        """A pseudo-random double in [0, 1)."""
        return (self.next_random() >> 11) * (1.0 / 9007199254740992.0)

    # state updates ------------------------------------------------------------
    def load(self, i: cython.Py_ssize_t):
        """Calls in flight at endpoint i: ours, or what the server last reported if more."""
        own: cython.longlong = self.inflight[i]
        rep: cython.longlong = self.reported[i]
        return cython.cast(cython.double, rep if rep > own else own)

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def begin(self, i: cython.Py_ssize_t):
        """A call to endpoint i starts."""
        self.inflight[i] += 1
        self.total_inflight += 1
        if self.tracking:
            self.update_tree(i)
        return 0

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def end(self, i: cython.Py_ssize_t, rtt: cython.double, now: cython.double,
            reported: cython.longlong = -1):
        """A call to endpoint i ended after `rtt` seconds (< 0: no latency sample).

        Latency feeds a peak EWMA: a slower sample is taken at once, a faster
        one blends in with weight exp(-elapsed / tau).
        """
        return self.end_many(i, 1, rtt, now, reported)

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def end_many(self, i: cython.Py_ssize_t, count: cython.Py_ssize_t, rtt: cython.double,
                 now: cython.double, reported: cython.longlong = -1):
        """`count` calls to endpoint i ended together, each after `rtt`
        seconds (a map batch): as many end() calls, at the cost of one. Their
        latency samples after the first change nothing (the same latency at
        the same time blends in with weight exp(0) = 1), so one is taken;
        a tracking kernel's tree is updated once (its ties are redrawn once,
        not `count` times: the same odds)."""
        w: cython.double
        old: cython.double
        ended: cython.longlong = min(count, self.inflight[i])
        if count <= 0:
            return 0
        if ended > 0:
            self.inflight[i] -= ended
            self.total_inflight -= ended
        if rtt >= 0.0:
            old = self.ewma[i]
            if rtt > old:
                self.ewma[i] = rtt
            else:
                w = exp(-max(now - self.stamp[i], 0.0) / self.tau)
                self.ewma[i] = old * w + rtt * (1.0 - w)
            self.stamp[i] = now
        if reported >= 0:
            self.reported[i] = reported
        if self.tracking:
            self.update_tree(i)
        return 0

    def latency(self, i: cython.Py_ssize_t, now: cython.double):
        """Endpoint i's peak-EWMA latency, decayed toward 0 since its last sample."""
        lat: cython.double = self.ewma[i]
        if lat == 0.0:
            return 0.0
        return lat * exp(-max(now - self.stamp[i], 0.0) / self.tau)

    def set_mask(self, mask):
        """Set which endpoints may be picked (a sequence of n 0/1 values)."""
        i: cython.Py_ssize_t
        m: cython.Py_ssize_t = 0
        values = np.ascontiguousarray(mask, dtype=np.uint8)
        if values.shape[0] != self.n:
            raise ValueError(f"mask has {values.shape[0]} entries for {self.n} endpoints")
        for i in range(self.n):
            self.mask[i] = 1 if values[i] else 0
            if values[i]:
                self.eligible[m] = i
                m += 1
        self.n_eligible = m
        if self.tracking:
            self.rebuild_tree()
        return 0

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def carry_over(self, old: "EndpointTable", src, dst):
        """Copy the calls in flight, reported load and latency of endpoint src[k]
        in `old` to endpoint dst[k] here (a membership change keeps the state)."""
        k: cython.Py_ssize_t
        a: cython.Py_ssize_t
        b: cython.Py_ssize_t
        total: cython.longlong = 0
        for k in range(len(src)):
            a = src[k]
            b = dst[k]
            self.inflight[b] = old.inflight[a]
            self.reported[b] = old.reported[a]
            self.ewma[b] = old.ewma[a]
            self.stamp[b] = old.stamp[a]
        for k in range(self.n):
            total += self.inflight[k]
        self.total_inflight = total
        if self.tracking:
            self.rebuild_tree()
        return 0

    def set_reported(self, i: cython.Py_ssize_t, reported: cython.longlong):
        """Record the load endpoint i's server reported (e.g. on a health-check PONG)."""
        self.reported[i] = reported
        if self.tracking:
            self.update_tree(i)
        return 0

    def set_weights(self, weights):
        """Set every endpoint's effective weight (each must be > 0)."""
        i: cython.Py_ssize_t
        values = np.ascontiguousarray(weights, dtype=np.float64)
        if values.shape[0] != self.n:
            raise ValueError(f"{values.shape[0]} weights for {self.n} endpoints")
        if self.n and not bool(np.all(values > 0)):
            raise ValueError("weights must be > 0")
        for i in range(self.n):
            self.weight[i] = values[i]
        if self.tracking:
            self.rebuild_tree()
        return 0

    # least-load tournament tree ---------------------------------------------
    def track_load(self):
        """Keep a tree whose root is the eligible endpoint of least load per weight."""
        size: cython.Py_ssize_t = 1
        while size < self.n:
            size *= 2
        self.tree_size = size
        self.tree = np.full(2 * size, -1, dtype=np.int32)
        self.tracking = True
        self.rebuild_tree()
        return 0

    def score(self, i: cython.int):
        """Load per unit of weight (lower is better); infinite when not eligible."""
        if i < 0 or not self.mask[i]:
            return _INF
        return self.load(i) / self.weight[i]

    def draw_tiebreak(self, i: cython.Py_ssize_t):
        # An exponential variate of rate weight[i]: the smallest of these is
        # endpoint i with probability weight[i] / total, so equally loaded
        # endpoints share calls in proportion to weight.
        self.tiebreak[i] = -log(1.0 - self.next_unit()) / self.weight[i]
        return 0

    def advance_tiebreak(self, i: cython.Py_ssize_t):
        # Each update moves endpoint i's tie-break forward by such a variate
        # (a virtual finishing time, as in fair queueing): an endpoint that
        # keeps winning ties falls behind the others, so none is starved.
        self.tiebreak[i] += -log(1.0 - self.next_unit()) / self.weight[i]
        return 0

    def better(self, a: cython.int, b: cython.int):
        """Of endpoints a and b (-1: none), the one with less load per weight."""
        sa: cython.double
        sb: cython.double
        if b < 0 or (a >= 0 and not self.mask[b]):
            return a if a >= 0 and self.mask[a] else -1
        if a < 0 or not self.mask[a]:
            return b
        sa = self.score(a)
        sb = self.score(b)
        if sa < sb or (sa == sb and self.tiebreak[a] <= self.tiebreak[b]):
            return a
        return b

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def update_tree(self, i: cython.Py_ssize_t):
        # A fresh tie-break per update spreads calls over equally loaded endpoints.
        node: cython.Py_ssize_t = (self.tree_size + i) >> 1
        self.advance_tiebreak(i)
        while node >= 1:
            self.tree[node] = self.better(self.tree[2 * node], self.tree[2 * node + 1])
            node >>= 1
        return 0

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def rebuild_tree(self):
        i: cython.Py_ssize_t
        size: cython.Py_ssize_t = self.tree_size
        for i in range(size):
            self.tree[size + i] = i if i < self.n and self.mask[i] else -1
            if i < self.n:
                self.draw_tiebreak(i)
        i = size - 1
        while i >= 1:
            self.tree[i] = self.better(self.tree[2 * i], self.tree[2 * i + 1])
            i -= 1
        return 0


class Kernel:
    """Base of the selection kernels: pick() returns an endpoint index or -1."""

    def __init__(self, table: EndpointTable):
        self.table = table

    def rebuild(self):
        """Recompute derived state after the table's mask or weights changed."""
        return 0

    def choose(self, key: cython.ulonglong):
        return -1

    def pick(self, key: cython.ulonglong = 0):
        """The index of the endpoint for the next call (`key`: a 64-bit key hash), or -1."""
        return self.choose(key)

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def pick_many(self, out):
        """Fill `out` (int64 array) with consecutive picks; return how many."""
        j: cython.Py_ssize_t
        for j in range(out.shape[0]):
            out[j] = self.choose(0)
        return out.shape[0]


class RandomKernel(Kernel):
    """Uniform over the eligible endpoints."""

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def choose(self, key: cython.ulonglong):
        t: EndpointTable = self.table
        if t.n_eligible == 0:
            return -1
        return t.eligible[t.rand_below(t.n_eligible)]


class RoundRobinKernel(Kernel):
    """Each eligible endpoint in index order, from `start` (negative: a random offset)."""

    def __init__(self, table: EndpointTable, start: cython.longlong = -1):
        self.table = table
        if start < 0:
            self.counter = table.next_random() >> 33
        else:
            self.counter = start

    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.cdivision(True)
    def choose(self, key: cython.ulonglong):
        t: EndpointTable = self.table
        c: cython.ulonglong = self.counter
        if t.n_eligible == 0:
            return -1
        self.counter = c + 1
        return t.eligible[c % cython.cast(cython.ulonglong, t.n_eligible)]


class WeightedRandomKernel(Kernel):
    """Random in proportion to weight, by Vose's alias method: O(1) per pick."""

    def __init__(self, table: EndpointTable):
        self.table = table
        self.rebuild()

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def rebuild(self):
        t: EndpointTable = self.table
        m: cython.Py_ssize_t = t.n_eligible
        j: cython.Py_ssize_t
        s: cython.Py_ssize_t
        l: cython.Py_ssize_t
        n_small: cython.Py_ssize_t = 0
        n_large: cython.Py_ssize_t = 0
        total: cython.double = 0.0
        for j in range(m):
            total += t.weight[t.eligible[j]]
        scaled = np.zeros(m, dtype=np.float64)
        small = np.zeros(m, dtype=np.int32)
        large = np.zeros(m, dtype=np.int32)
        self.prob = np.ones(m, dtype=np.float64)
        self.primary = np.zeros(m, dtype=np.int32)
        self.alias = np.zeros(m, dtype=np.int32)
        self.columns = m
        for j in range(m):
            self.primary[j] = t.eligible[j]
            self.alias[j] = t.eligible[j]
            scaled[j] = t.weight[t.eligible[j]] * m / total
            if scaled[j] < 1.0:
                small[n_small] = j
                n_small += 1
            else:
                large[n_large] = j
                n_large += 1
        while n_small > 0 and n_large > 0:
            n_small -= 1
            s = small[n_small]
            l = large[n_large - 1]
            self.prob[s] = scaled[s]
            self.alias[s] = t.eligible[l]
            scaled[l] = (scaled[l] + scaled[s]) - 1.0
            if scaled[l] < 1.0:
                n_large -= 1
                small[n_small] = l
                n_small += 1
        return 0

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def choose(self, key: cython.ulonglong):
        t: EndpointTable = self.table
        col: cython.Py_ssize_t
        if self.columns == 0:
            return -1
        col = t.rand_below(self.columns)
        if t.next_unit() < self.prob[col]:
            return self.primary[col]
        return self.alias[col]


class SmoothWeightedKernel(Kernel):
    """nginx's smooth weighted round robin: weights {5, 1, 1} give a a b a c a a.

    Exactly nginx's rule (add each weight to its current value, take the
    largest, first in index order on ties, subtract the total), computed per
    group of equal weights: within a group the members take turns in index
    order, so a pick costs O(distinct weights), and with integer weights one
    whole period is precomputed when it is at most MAX_PERIOD picks long,
    making a pick O(1).
    """

    def __init__(self, table: EndpointTable, random_phase: bool = False):
        self.table = table
        self.random_phase = random_phase
        self.rebuild()

    def rebuild(self):
        t: EndpointTable = self.table
        j: cython.Py_ssize_t
        m: cython.Py_ssize_t = t.n_eligible
        members = np.asarray(t.eligible)[:m].copy()
        weights = np.asarray(t.weight)[members]
        order = np.lexsort((members, weights))
        members = members[order]
        weights = weights[order]
        starts = np.flatnonzero(np.diff(weights, prepend=-1.0)) if m else np.zeros(0, np.int64)
        self.members = members.astype(np.int32)
        self.group_start = np.append(starts, m).astype(np.int32)
        self.group_weight = weights[starts].astype(np.float64)
        self.group_pos = np.zeros(len(starts), dtype=np.int32)
        self.group_current = np.zeros(len(starts), dtype=np.float64)
        self.groups = len(starts)
        self.total = float(weights.sum())
        self.period = 0
        self.position = 0
        self.sequence = np.zeros(0, dtype=np.int32)
        if m and bool(np.all(weights == np.floor(weights))):
            ints = weights.astype(np.int64)
            period = int(ints.sum() // np.gcd.reduce(ints))
            if period <= MAX_PERIOD:
                sequence = np.zeros(period, dtype=np.int32)
                out: cython.int[::1] = sequence
                for j in range(period):
                    out[j] = self.step()
                self.sequence = sequence
                self.period = period
        if self.random_phase and m:
            if self.period:
                self.position = t.rand_below(self.period)
            else:
                for j in range(t.rand_below(m)):
                    self.step()
        return 0

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def step(self):
        """One step of nginx's rule over the weight groups; return the endpoint picked."""
        g: cython.Py_ssize_t
        best: cython.Py_ssize_t = -1
        cand: cython.int
        best_cand: cython.int = -1
        cur: cython.double
        best_cur: cython.double = 0.0
        for g in range(self.groups):
            cur = self.group_current[g] + self.group_weight[g]
            self.group_current[g] = cur
            cand = self.members[self.group_start[g] + self.group_pos[g]]
            if best < 0 or cur > best_cur or (cur == best_cur and cand < best_cand):
                best = g
                best_cur = cur
                best_cand = cand
        if best < 0:
            return -1
        # The candidate's turn is used: the next member of its group has the
        # same current value, unless the group wrapped around (all members
        # picked once more), which costs the group one total.
        self.group_pos[best] += 1
        if self.group_start[best] + self.group_pos[best] == self.group_start[best + 1]:
            self.group_pos[best] = 0
            self.group_current[best] -= self.total
        return best_cand

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def choose(self, key: cython.ulonglong):
        i: cython.Py_ssize_t
        if self.period:
            i = self.sequence[self.position]
            self.position += 1
            if self.position == self.period:
                self.position = 0
            return i
        return self.step()


class LeastConnectionsKernel(Kernel):
    """Least load per weight: in flight / weight; ties at random in proportion to weight.

    The table keeps a tournament tree updated on every begin/end, so a pick
    reads the root: O(1), and O(log n) per state change.
    """

    def __init__(self, table: EndpointTable):
        self.table = table
        table.track_load()

    def rebuild(self):
        self.table.rebuild_tree()
        return 0

    def choose(self, key: cython.ulonglong):
        t: EndpointTable = self.table
        if t.n_eligible == 0:
            return -1
        return t.tree[1]


class P2CKernel(Kernel):
    """Power of two choices: two distinct random endpoints, the less loaded wins."""

    def two(self):
        """Draw two distinct eligible endpoints into first/second; return how many exist."""
        t: EndpointTable = self.table
        m: cython.Py_ssize_t = t.n_eligible
        a: cython.Py_ssize_t
        b: cython.Py_ssize_t
        if m == 0:
            return 0
        if m == 1:
            self.first = self.second = t.eligible[0]
            return 1
        a = t.rand_below(m)
        b = t.rand_below(m - 1)
        if b >= a:
            b += 1
        self.first = t.eligible[a]
        self.second = t.eligible[b]
        return 2

    def choose(self, key: cython.ulonglong):
        t: EndpointTable = self.table
        if self.two() == 0:
            return -1
        if t.score(self.second) < t.score(self.first):
            return self.second
        return self.first


class P2CEwmaKernel(P2CKernel):
    """P2C on peak-EWMA latency x (in flight + 1) / weight (Finagle's PeakEwma).

    The latency estimate decays toward 0 while an endpoint gets no calls, so
    a slow endpoint is retried once it may have recovered. An endpoint with
    calls in flight but no sample yet costs `penalty` + its load.
    """

    def __init__(self, table: EndpointTable, penalty: float = 1.0):
        self.table = table
        self.penalty = penalty

    def cost(self, i: cython.Py_ssize_t, now: cython.double):
        t: EndpointTable = self.table
        lat: cython.double = t.latency(i, now)
        load: cython.double = t.load(i)
        if lat == 0.0 and load > 0.0:
            return self.penalty + load
        return lat * (load + 1.0) / t.weight[i]

    def choose(self, key: cython.ulonglong):
        now: cython.double
        if self.two() == 0:
            return -1
        if self.first == self.second:
            return self.first
        now = _now()
        if self.cost(self.second, now) < self.cost(self.first, now):
            return self.second
        return self.first


class RingKernel(Kernel):
    """Consistent hashing on a ring of virtual nodes, with optional bounded load.

    `points` (sorted uint64) and `owners` (endpoint per point) come from the
    balancer. A key goes to the owner of the first point at or after its
    hash; an ineligible owner, or one at capacity when `load_factor` c > 0
    (capacity: c x the weighted mean of calls in flight), passes the key on
    to the next point.
    """

    def __init__(self, table: EndpointTable, points, owners, load_factor: float = 0.0):
        self.table = table
        self.points = np.ascontiguousarray(points, dtype=np.uint64)
        self.owners = np.ascontiguousarray(owners, dtype=np.int32)
        if self.points.shape[0] != self.owners.shape[0]:
            raise ValueError("points and owners differ in length")
        self.size = self.points.shape[0]
        self.load_factor = load_factor
        self.rebuild()

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def rebuild(self):
        t: EndpointTable = self.table
        j: cython.Py_ssize_t
        total: cython.double = 0.0
        for j in range(t.n_eligible):
            total += t.weight[t.eligible[j]]
        self.eligible_weight = total
        return 0

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def locate(self, key: cython.ulonglong):
        """The first ring position whose point is >= key (wrapping to 0)."""
        lo: cython.Py_ssize_t = 0
        hi: cython.Py_ssize_t = self.size
        mid: cython.Py_ssize_t
        while lo < hi:
            mid = (lo + hi) >> 1
            if self.points[mid] < key:
                lo = mid + 1
            else:
                hi = mid
        return 0 if lo == self.size else lo

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def choose(self, key: cython.ulonglong):
        t: EndpointTable = self.table
        pos: cython.Py_ssize_t
        owner: cython.int
        first: cython.int = -1
        steps: cython.Py_ssize_t
        cap: cython.double
        if self.size == 0 or t.n_eligible == 0:
            return -1
        pos = self.locate(key)
        for steps in range(self.size):
            owner = self.owners[pos]
            if t.mask[owner]:
                if self.load_factor <= 0.0:
                    return owner
                if first < 0:
                    first = owner
                # room for one more call: inflight + 1 <= ceil(cap), i.e. inflight < cap
                cap = self.load_factor * (t.total_inflight + 1) * t.weight[owner] / self.eligible_weight
                if t.inflight[owner] < cap:
                    return owner
            pos += 1
            if pos == self.size:
                pos = 0
        return first


class GeoKernel(Kernel):
    """Nearest first: P2C inside the nearest tier that has an eligible endpoint.

    `tier_members` lists endpoints tier by tier (nearest tier first) and
    `tier_start` the offset of each tier (plus the end). When the P2C winner
    of a tier has load >= `overload` x its weight (overload > 0), the call
    spills to the next tier; if every tier is overloaded the nearest wins.
    """

    def __init__(self, table: EndpointTable, tier_members, tier_start, overload: float = 0.0):
        self.table = table
        self.tier_members = np.ascontiguousarray(tier_members, dtype=np.int32)
        self.tier_start = np.ascontiguousarray(tier_start, dtype=np.int32)
        self.tiers = self.tier_start.shape[0] - 1
        if self.tiers < 0 or self.tier_start[self.tiers] != self.tier_members.shape[0]:
            raise ValueError("tier_start must end at len(tier_members)")
        self.overload = overload
        self.rebuild()

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def rebuild(self):
        t: EndpointTable = self.table
        g: cython.Py_ssize_t
        j: cython.Py_ssize_t
        m: cython.Py_ssize_t = 0
        i: cython.int
        self.live_members = np.zeros(self.tier_members.shape[0], dtype=np.int32)
        self.live_start = np.zeros(self.tiers + 1, dtype=np.int32)
        for g in range(self.tiers):
            self.live_start[g] = m
            for j in range(self.tier_start[g], self.tier_start[g + 1]):
                i = self.tier_members[j]
                if t.mask[i]:
                    self.live_members[m] = i
                    m += 1
        self.live_start[self.tiers] = m
        return 0

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def p2c_in(self, g: cython.Py_ssize_t):
        t: EndpointTable = self.table
        lo: cython.Py_ssize_t = self.live_start[g]
        m: cython.Py_ssize_t = self.live_start[g + 1] - lo
        a: cython.Py_ssize_t
        b: cython.Py_ssize_t
        if m == 0:
            return -1
        if m == 1:
            return self.live_members[lo]
        a = t.rand_below(m)
        b = t.rand_below(m - 1)
        if b >= a:
            b += 1
        a = self.live_members[lo + a]
        b = self.live_members[lo + b]
        return b if t.score(b) < t.score(a) else a

    def choose(self, key: cython.ulonglong):
        t: EndpointTable = self.table
        g: cython.Py_ssize_t
        i: cython.Py_ssize_t
        fallback: cython.Py_ssize_t = -1
        for g in range(self.tiers):
            i = self.p2c_in(g)
            if i < 0:
                continue
            if self.overload <= 0.0 or t.load(i) < self.overload * t.weight[i]:
                return i
            if fallback < 0:
                fallback = i
        return fallback


# hashing ------------------------------------------------------------------------
def _rotl(x: cython.ulonglong, r: cython.int):
    return ((x << r) & _M64) | (x >> (64 - r))


def _round(acc: cython.ulonglong, lane: cython.ulonglong):
    acc = (acc + lane * _P2) & _M64
    return (_rotl(acc, 31) * _P1) & _M64


def _merge(acc: cython.ulonglong, val: cython.ulonglong):
    acc ^= _round(0, val)
    return (acc * _P1 + _P4) & _M64


@cython.boundscheck(False)
@cython.wraparound(False)
def _read64(data, p: cython.Py_ssize_t):
    return (cython.cast(cython.ulonglong, data[p]) | (cython.cast(cython.ulonglong, data[p + 1]) << 8)
            | (cython.cast(cython.ulonglong, data[p + 2]) << 16)
            | (cython.cast(cython.ulonglong, data[p + 3]) << 24)
            | (cython.cast(cython.ulonglong, data[p + 4]) << 32)
            | (cython.cast(cython.ulonglong, data[p + 5]) << 40)
            | (cython.cast(cython.ulonglong, data[p + 6]) << 48)
            | (cython.cast(cython.ulonglong, data[p + 7]) << 56))


@cython.boundscheck(False)
@cython.wraparound(False)
def _read32(data, p: cython.Py_ssize_t):
    return (cython.cast(cython.ulonglong, data[p]) | (cython.cast(cython.ulonglong, data[p + 1]) << 8)
            | (cython.cast(cython.ulonglong, data[p + 2]) << 16)
            | (cython.cast(cython.ulonglong, data[p + 3]) << 24))


@cython.boundscheck(False)
@cython.wraparound(False)
def xxh64(data, seed=0):
    """XXH64 of a bytes object (the reference algorithm, little-endian lanes)."""
    n: cython.Py_ssize_t = len(data)
    p: cython.Py_ssize_t = 0
    h: cython.ulonglong
    s: cython.ulonglong = seed
    v1: cython.ulonglong
    v2: cython.ulonglong
    v3: cython.ulonglong
    v4: cython.ulonglong
    if n >= 32:
        v1 = (s + _P1 + _P2) & _M64
        v2 = (s + _P2) & _M64
        v3 = s
        v4 = (s - _P1) & _M64
        while p + 32 <= n:
            v1 = _round(v1, _read64(data, p))
            v2 = _round(v2, _read64(data, p + 8))
            v3 = _round(v3, _read64(data, p + 16))
            v4 = _round(v4, _read64(data, p + 24))
            p += 32
        h = (_rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)) & _M64
        h = _merge(h, v1)
        h = _merge(h, v2)
        h = _merge(h, v3)
        h = _merge(h, v4)
    else:
        h = (s + _P5) & _M64
    h = (h + cython.cast(cython.ulonglong, n)) & _M64
    while p + 8 <= n:
        h ^= _round(0, _read64(data, p))
        h = (_rotl(h, 27) * _P1 + _P4) & _M64
        p += 8
    if p + 4 <= n:
        h ^= (_read32(data, p) * _P1) & _M64
        h = (_rotl(h, 23) * _P2 + _P3) & _M64
        p += 4
    while p < n:
        h ^= (cython.cast(cython.ulonglong, data[p]) * _P5) & _M64
        h = (_rotl(h, 11) * _P1) & _M64
        p += 1
    h ^= h >> 33
    h = (h * _P2) & _M64
    h ^= h >> 29
    h = (h * _P3) & _M64
    h ^= h >> 32
    return h


@cython.cfunc
def _decimal_text(key: object) -> bytes:
    """str(key).encode("ascii") for an int (compiled only): the digits are
    written straight into the bytes, without the str in between (a third of
    what a keyed call cost more than one without a key)."""
    overflow: cython.int = 0
    v: cython.longlong = PyLong_AsLongLongAndOverflow(key, cython.address(overflow))
    digits = cython.declare(cython.char[24])
    at: cython.int = 24
    u: cython.ulonglong
    if overflow:
        return str(key).encode("ascii")
    u = (cython.cast(cython.ulonglong, 0) - cython.cast(cython.ulonglong, v)) if v < 0 else v
    while True:
        at -= 1
        digits[at] = cython.cast(cython.char, 48 + u % 10)     # '0' + digit
        u = u // 10
        if u == 0:
            break
    if v < 0:
        at -= 1
        digits[at] = 45                                        # '-'
    return PyBytes_FromStringAndSize(cython.address(digits[at]), 24 - at)


def hash_key(key):
    """The 64-bit hash of a call's balancing key (what consistent_hash places
    it by): XXH64 of a str's UTF-8 text, of bytes, or of an int's decimal
    text. Compiled because a keyed balanced call hashes its key on every
    call."""
    if cython.compiled:
        if type(key) is int:
            return xxh64(_decimal_text(key))
        if type(key) is str:                    # key.encode("utf-8") without the method call
            return xxh64(PyUnicode_AsUTF8String(key))
    if isinstance(key, str):
        return xxh64(key.encode("utf-8"))
    if isinstance(key, bytes):
        return xxh64(key)
    if isinstance(key, (bytearray, memoryview)):
        return xxh64(bytes(key))
    if isinstance(key, int) and not isinstance(key, bool):
        return xxh64(str(key).encode("ascii"))
    raise TypeError(f"a balancing key must be str, bytes or int, not {type(key).__name__}")


def mix64(x: cython.ulonglong):
    """splitmix64's finalizer: a 64-bit integer hash (seeds, virtual-node points)."""
    z: cython.ulonglong = (x + _G) & _M64
    z = ((z ^ (z >> 30)) * _S1) & _M64
    z = ((z ^ (z >> 27)) * _S2) & _M64
    return z ^ (z >> 31)
