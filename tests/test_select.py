"""Selection kernels: exact sequences, distributions, and compiled == reference.

Every test runs on the compiled module and on the same source run as plain
Python (the reference); given the same seed both must pick the same endpoints.
"""
import enum
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fastrpc._core.select as compiled
from support import load_reference

reference = load_reference(compiled)


@pytest.fixture(params=["compiled", "reference"])
def sel(request):
    return compiled if request.param == "compiled" else reference


def test_modules_are_what_they_claim():
    assert compiled.__file__.endswith(".so")
    assert reference.__file__.endswith("select.py")
    assert not hasattr(reference, "__pyx_capi__")


def table(sel, n, weights=None, seed=7, mask=None):
    t = sel.EndpointTable(n, seed=seed)
    if weights is not None:
        t.set_weights(weights)
    if mask is not None:
        t.set_mask(mask)
    return t


def picks(kernel, count, key=0):
    return [int(kernel.pick(key)) for _ in range(count)]


def chi_square(counts, expected):
    counts, expected = np.asarray(counts, float), np.asarray(expected, float)
    return float(((counts - expected) ** 2 / expected).sum())


# hashing -----------------------------------------------------------------------------
@pytest.mark.parametrize("data, value", [
    (b"", 0xEF46DB3751D8E999),
    (b"abc", 0x44BC2CF5AD770999),
    (b"Nobody inspects the spammish repetition", 0xFBCEA83C8A378BF1),
])
def test_xxh64_known_values(sel, data, value):
    assert sel.xxh64(data) == value


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 2**64 - 1))
def test_xxh64_compiled_matches_reference(data, seed):
    assert compiled.xxh64(data, seed) == reference.xxh64(data, seed)


def test_hash_key_hashes_text_bytes_and_decimal_ints(sel):
    # The placement of keys on the ring depends on these: they must not change.
    assert sel.hash_key("abc") == sel.hash_key(b"abc") == 0x44BC2CF5AD770999
    assert sel.hash_key(bytearray(b"abc")) == sel.hash_key(memoryview(b"abc")) == 0x44BC2CF5AD770999
    assert sel.hash_key("é") == sel.xxh64("é".encode("utf-8"))
    assert sel.hash_key(12345) == sel.xxh64(b"12345")
    assert sel.hash_key(-7) == sel.xxh64(b"-7")
    assert sel.hash_key(2**70) == sel.xxh64(str(2**70).encode())
    for n in (0, 9, 10, -1, -10, 2**63 - 1, -2**63, 2**63, -2**63 - 1, 2**64, -10**30):
        assert sel.hash_key(n) == sel.xxh64(str(n).encode()), n


def test_hash_key_of_text_that_is_not_utf8_raises_as_encoding_does(sel):
    with pytest.raises(UnicodeEncodeError):
        sel.hash_key("user:\ud800")


def test_hash_key_of_an_int_subclass_is_its_text():
    # Not only plain ints: a subclass hashes its str(), as it always did.
    class Level(enum.IntEnum):
        HIGH = 3
    assert compiled.hash_key(Level.HIGH) == reference.hash_key(Level.HIGH) == compiled.xxh64(str(Level.HIGH).encode())

    class Name(str):
        pass
    assert compiled.hash_key(Name("abc")) == reference.hash_key(Name("abc")) == 0x44BC2CF5AD770999


@pytest.mark.parametrize("key", [True, 1.5, None, ("a",), object()])
def test_hash_key_refuses_other_types(sel, key):
    with pytest.raises(TypeError, match="a balancing key must be str, bytes or int, not"):
        sel.hash_key(key)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=50), st.binary(max_size=50), st.integers()))
def test_hash_key_compiled_matches_reference(key):
    assert compiled.hash_key(key) == reference.hash_key(key)


# round robin --------------------------------------------------------------------------
def test_round_robin_exact_sequence(sel):
    kernel = sel.RoundRobinKernel(table(sel, 4), 0)
    assert picks(kernel, 9) == [0, 1, 2, 3, 0, 1, 2, 3, 0]


def test_round_robin_skips_ineligible(sel):
    kernel = sel.RoundRobinKernel(table(sel, 4, mask=[1, 0, 1, 1]), 0)
    assert picks(kernel, 6) == [0, 2, 3, 0, 2, 3]


def test_round_robin_starts_at_a_random_offset(sel):
    firsts = {int(sel.RoundRobinKernel(table(sel, 16, seed=s)).pick()) for s in range(1, 60)}
    assert len(firsts) > 8       # not every balancer starts at endpoint 0
    kernel = sel.RoundRobinKernel(table(sel, 5, seed=3))
    seq = picks(kernel, 10)
    assert all((b - a) % 5 == 1 for a, b in zip(seq, seq[1:]))


# smooth weighted round robin ----------------------------------------------------------------
def nginx_swrr(weights, count, eligible=None):
    """nginx's ngx_http_upstream_get_peer, literally: O(n) per pick."""
    current = [0.0] * len(weights)
    eligible = eligible or [1] * len(weights)
    out = []
    for _ in range(count):
        total, best = 0.0, -1
        for i, w in enumerate(weights):
            if not eligible[i]:
                continue
            current[i] += w
            total += w
            if best < 0 or current[i] > current[best]:
                best = i
        current[best] -= total
        out.append(best)
    return out


def test_smooth_wrr_nginx_example(sel):
    kernel = sel.SmoothWeightedKernel(table(sel, 3, [5, 1, 1]))
    assert "".join("abc"[i] for i in picks(kernel, 14)) == "aabacaa" * 2
    assert kernel.period == 7


@pytest.mark.parametrize("weights", [
    [1, 1, 1, 1], [3, 1], [4, 2, 2, 1, 7], [10, 10, 5, 5, 1], [2, 3, 5, 7, 11, 13],
    [0.5, 1.5, 2.25],                 # not integers: computed live, no period
])
def test_smooth_wrr_matches_nginx(sel, weights):
    kernel = sel.SmoothWeightedKernel(table(sel, len(weights), weights))
    n = 3 * int(np.ceil(sum(weights))) + 5
    assert picks(kernel, n) == nginx_swrr(weights, n)


def test_smooth_wrr_live_when_the_period_is_too_long(sel, monkeypatch):
    weights = [1000003, 999983, 7]
    monkeypatch.setattr(sel, "MAX_PERIOD", 1000)
    kernel = sel.SmoothWeightedKernel(table(sel, 3, weights))
    assert kernel.period == 0
    assert picks(kernel, 500) == nginx_swrr(weights, 500)


def test_smooth_wrr_over_eligible_only(sel):
    t = table(sel, 4, [5, 1, 1, 3], mask=[1, 1, 0, 1])
    kernel = sel.SmoothWeightedKernel(t)
    assert picks(kernel, 30) == nginx_swrr([5, 1, 1, 3], 30, [1, 1, 0, 1])


def test_smooth_wrr_random_phase_is_a_rotation(sel):
    weights = [5, 1, 1]
    period = nginx_swrr(weights, 7)
    phases = set()
    for seed in range(1, 30):
        kernel = sel.SmoothWeightedKernel(table(sel, 3, weights, seed=seed), True)
        seq = picks(kernel, 7)
        assert any(seq == period[k:] + period[:k] for k in range(7))
        phases.add(tuple(seq))
    assert len(phases) > 2


def test_smooth_wrr_ten_thousand_endpoints_precomputed():
    rng = np.random.default_rng(5)
    weights = rng.integers(1, 11, 10_000).astype(float)
    kernel = compiled.SmoothWeightedKernel(table(compiled, 10_000, weights))
    assert 0 < kernel.period <= compiled.MAX_PERIOD
    out = np.zeros(kernel.period, dtype=np.int64)
    kernel.pick_many(out)
    counts = np.bincount(out, minlength=10_000)
    assert np.array_equal(counts, weights.astype(np.int64))   # each endpoint weight times per period


# random and weighted random --------------------------------------------------------------------
def test_random_is_uniform_over_eligible(sel):
    t = table(sel, 5, mask=[1, 1, 0, 1, 1], seed=11)
    kernel = sel.RandomKernel(t)
    counts = np.bincount(picks(kernel, 20_000), minlength=5)
    assert counts[2] == 0
    # df = 3, p = 0.001 critical value 16.27
    assert chi_square(counts[[0, 1, 3, 4]], [5000] * 4) < 16.27


def test_weighted_random_follows_weights(sel):
    weights = [1, 2, 3, 4, 10]
    kernel = sel.WeightedRandomKernel(table(sel, 5, weights, seed=3))
    n = 40_000
    counts = np.bincount(picks(kernel, n), minlength=5)
    expected = np.array(weights) / sum(weights) * n
    assert chi_square(counts, expected) < 18.47       # df = 4, p = 0.001


def test_weighted_random_excludes_ineligible(sel):
    t = table(sel, 3, [1, 100, 1], mask=[1, 0, 1])
    kernel = sel.WeightedRandomKernel(t)
    assert set(picks(kernel, 2000)) == {0, 2}


def test_no_eligible_endpoint_gives_minus_one(sel):
    t = table(sel, 3, mask=[0, 0, 0])
    t2 = table(sel, 0)
    for make in (sel.RandomKernel, sel.RoundRobinKernel, sel.WeightedRandomKernel,
                 sel.SmoothWeightedKernel, sel.LeastConnectionsKernel, sel.P2CKernel,
                 sel.P2CEwmaKernel):
        assert make(t).pick() == -1
        assert make(t2).pick() == -1
    assert sel.RingKernel(t2, [], []).pick(5) == -1
    assert sel.GeoKernel(t, [0, 1, 2], [0, 3]).pick() == -1


# least loaded ---------------------------------------------------------------------------------
def test_least_connections_picks_least_load_per_weight(sel):
    t = table(sel, 3, [1, 1, 2])
    kernel = sel.LeastConnectionsKernel(t)
    for i, n in ((0, 3), (1, 1), (2, 3)):
        for _ in range(n):
            t.begin(i)
    # load per weight: 3, 1, 1.5
    assert kernel.pick() == 1
    t.begin(1)
    assert kernel.pick() == 2


def test_least_connections_spreads_ties(sel):
    t = table(sel, 4)
    kernel = sel.LeastConnectionsKernel(t)
    seen = set()
    for _ in range(40):
        i = kernel.pick()
        seen.add(int(i))
        t.begin(i)
        t.end(i, 0.001, 1.0)
    assert seen == {0, 1, 2, 3}


def test_least_connections_ties_follow_weights(sel):
    t = table(sel, 3, [1, 2, 5], seed=4)
    kernel = sel.LeastConnectionsKernel(t)
    counts = np.zeros(3)
    for _ in range(16_000):
        i = kernel.pick()
        counts[i] += 1
        t.begin(i)
        t.end(i, 0.001, 1.0)
    shares = counts / counts.sum()
    assert shares[0] < shares[1] < shares[2]
    assert shares[2] > 0.5


@pytest.mark.parametrize("seed", range(1, 21))
def test_least_connections_starves_no_one_at_idle(sel, seed):
    t = table(sel, 3, [1, 1, 4], seed=seed)
    kernel = sel.LeastConnectionsKernel(t)
    counts = np.zeros(3)
    for _ in range(600):
        i = kernel.pick()
        counts[i] += 1
        t.begin(i)
        t.end(i, 0.001, 1.0)
    assert counts.min() >= 40, counts     # expected shares 100, 100, 400


def test_least_connections_uses_reported_load(sel):
    t = table(sel, 2)
    kernel = sel.LeastConnectionsKernel(t)
    t.begin(0)
    t.end(0, 0.001, 1.0, 50)        # the server says 50 calls are in flight there
    assert picks(kernel, 5) == [1] * 5


def test_p2c_never_picks_the_most_loaded_of_three(sel):
    t = table(sel, 3, seed=5)
    for _ in range(5):
        t.begin(1)
    t.begin(2)
    kernel = sel.P2CKernel(t)
    counts = np.bincount(picks(kernel, 3000), minlength=3)
    assert counts[1] == 0
    assert counts[0] > counts[2] > 0      # 0 wins both its pairs, 2 only against 1


def test_p2c_draws_two_distinct_endpoints(sel):
    t = table(sel, 2, seed=9)
    t.begin(0)
    kernel = sel.P2CKernel(t)
    assert set(picks(kernel, 200)) == {1}     # with replacement, (0, 0) would pick 0


def test_p2c_ewma_prefers_fast_and_forgets(sel):
    t = table(sel, 2, seed=2)
    now = time.monotonic()      # the kernel's clock: picks decay the estimates from here
    t.begin(0)
    t.end(0, 0.200, now)      # slow
    t.begin(1)
    t.end(1, 0.010, now)      # fast
    kernel = sel.P2CEwmaKernel(t)
    assert kernel.cost(0, now) > kernel.cost(1, now)
    assert set(picks(kernel, 50)) == {1}
    # the peak is taken at once, lower samples blend in
    t.begin(1)
    t.end(1, 0.5, now)
    assert np.asarray(t.ewma)[1] == pytest.approx(0.5)
    t.begin(1)
    t.end(1, 0.1, now + 10.0)
    w = np.exp(-1.0)
    assert np.asarray(t.ewma)[1] == pytest.approx(0.5 * w + 0.1 * (1 - w))
    # idle for a long time: the estimate decays toward 0
    assert t.latency(0, now + 100.0) < 0.200 * 1e-4


def test_p2c_ewma_penalises_unmeasured_busy_endpoints(sel):
    t = table(sel, 2)
    t.begin(0)
    t.end(0, 0.050, 1.0)
    t.begin(1)                # in flight, never measured
    kernel = sel.P2CEwmaKernel(t, 1.0)
    assert kernel.cost(1, 1.0) == pytest.approx(1.0 + 1.0)
    assert kernel.cost(0, 1.0) == pytest.approx(0.050)


# consistent hashing ---------------------------------------------------------------------------
from fastrpc.net.endpoint import Endpoint  # noqa: E402
from fastrpc.balancer.strategies import build_ring, hash_key, geo_tiers  # noqa: E402


def ring_owner(sel, endpoints, keys, vnodes=100, load_factor=0.0, mask=None):
    points, owners = build_ring(endpoints, vnodes)
    t = table(sel, len(endpoints), [e.weight for e in endpoints], mask=mask)
    kernel = sel.RingKernel(t, points, owners, load_factor)
    return [endpoints[kernel.pick(hash_key(k))].address for k in keys]


def addresses(n, base=7000):
    return [Endpoint(f"tcp://10.0.{i // 250}.{i % 250 + 1}:{base}") for i in range(n)]


def test_ring_points_use_the_kernel_mix():
    points, owners = build_ring([Endpoint("tcp://a:1")], 3)
    seed = compiled.xxh64(b"tcp://a:1")
    assert sorted(points.tolist()) == sorted(compiled.mix64((seed + j) % 2**64) for j in range(3))


def test_ring_same_key_same_endpoint_regardless_of_order(sel):
    eps = addresses(12)
    keys = [f"user:{i}" for i in range(300)]
    first = ring_owner(sel, eps, keys)
    shuffled = [eps[i] for i in np.random.default_rng(1).permutation(len(eps))]
    assert ring_owner(sel, shuffled, keys) == first
    assert ring_owner(sel, eps, keys) == first
    assert len(set(first)) == 12


def test_ring_minimal_movement_on_add_and_remove():
    eps = addresses(20)
    keys = [f"k{i}" for i in range(20_000)]
    before = ring_owner(compiled, eps, keys)
    after = ring_owner(compiled, eps + addresses(1, base=8000), keys)
    moved = sum(a != b for a, b in zip(before, after))
    # about 1/(n+1) = 4.8% of keys move, all of them to the new endpoint
    assert 0.02 < moved / len(keys) < 0.08
    assert all(b == "tcp://10.0.0.1:8000" for a, b in zip(before, after) if a != b)
    # removing one endpoint moves only its own keys
    gone = eps[3].address
    after = ring_owner(compiled, eps[:3] + eps[4:], keys)
    assert all(a == gone for a, b in zip(before, after) if a != b)


def test_ring_weights_scale_the_share():
    eps = [Endpoint("tcp://a:1", weight=1), Endpoint("tcp://b:1", weight=3)]
    owners = ring_owner(compiled, eps, [f"k{i}" for i in range(20_000)], vnodes=200)
    share = owners.count("tcp://b:1") / len(owners)
    assert 0.68 < share < 0.82


def test_ring_skips_ineligible_owner(sel):
    eps = addresses(5)
    keys = [f"k{i}" for i in range(500)]
    before = ring_owner(sel, eps, keys)
    after = ring_owner(sel, eps, keys, mask=[1, 0, 1, 1, 1])
    assert eps[1].address not in after
    assert all(a == b for a, b in zip(before, after) if a != eps[1].address)


def test_ring_bounded_load_is_respected(sel):
    eps = addresses(8)
    points, owners = build_ring(eps, 50)
    t = table(sel, 8)
    kernel = sel.RingKernel(t, points, owners, 1.25)
    hot = hash_key("the-hot-key")
    for _ in range(400):                       # every call has the same key
        i = kernel.pick(hot)
        cap = np.ceil(1.25 * (t.total_inflight + 1) / 8)
        assert np.asarray(t.inflight)[i] + 1 <= cap
        t.begin(i)
    assert np.asarray(t.inflight).max() <= np.ceil(1.25 * 400 / 8)


HASH_SCRIPT = """
import sys
from fastrpc import Balancer
eps = sys.argv[1].split(",")
b = Balancer(eps, strategy="consistent_hash", health_interval=0)
print(",".join(b.pick(f"key-{i}").address for i in range(200)))
"""


def test_ring_is_the_same_in_other_processes():
    eps = [e.address for e in addresses(10)]
    outputs = set()
    for seed, order in (("1", eps), ("2", eps[::-1]), ("3", eps[3:] + eps[:3])):
        out = subprocess.run([sys.executable, "-c", HASH_SCRIPT, ",".join(order)],
                             capture_output=True, text=True, check=True, timeout=60,
                             env={**os.environ, "PYTHONHASHSEED": seed})
        outputs.add(out.stdout.strip())
    assert len(outputs) == 1


# geo -----------------------------------------------------------------------------------------
PARIS = (48.86, 2.35)
CITIES = [
    Endpoint("tcp://dublin:1", lat=53.35, lon=-6.26),      # ~780 km
    Endpoint("tcp://paris:1", lat=48.85, lon=2.35),        # ~0 km
    Endpoint("tcp://tokyo:1", lat=35.68, lon=139.69),      # ~9700 km
    Endpoint("tcp://lyon:1", lat=45.76, lon=4.84),         # ~390 km
    Endpoint("tcp://nyc:1", lat=40.71, lon=-74.0),         # ~5800 km
]


def test_geo_tiers_by_distance():
    members, starts = geo_tiers(CITIES, PARIS, None, 500.0)
    tiers = [[CITIES[i].address.split("//")[1][:-2] for i in members[a:b]]
             for a, b in zip(starts, starts[1:])]
    assert tiers == [["paris", "lyon"], ["dublin"], ["nyc"], ["tokyo"]]


def test_geo_picks_nearest_healthy_and_falls_over(sel):
    members, starts = geo_tiers(CITIES, PARIS, None, 100.0)
    t = table(sel, 5)
    kernel = sel.GeoKernel(t, members, starts, 0.0)
    assert set(picks(kernel, 50)) == {1}                       # paris
    t.set_mask([1, 0, 1, 1, 1])
    kernel.rebuild()
    assert set(picks(kernel, 50)) == {3}                       # lyon
    t.set_mask([1, 0, 1, 0, 1])
    kernel.rebuild()
    assert set(picks(kernel, 50)) == {0}                       # dublin


def test_geo_spills_when_the_near_tier_is_overloaded(sel):
    members, starts = geo_tiers(CITIES, PARIS, None, 100.0)
    t = table(sel, 5)
    kernel = sel.GeoKernel(t, members, starts, 4.0)
    for _ in range(4):
        t.begin(1)                                             # paris at its limit
    assert set(picks(kernel, 20)) == {3}
    for _ in range(4):
        t.begin(3)                                             # lyon too
    assert set(picks(kernel, 20)) == {0}


def test_geo_zones_without_coordinates():
    eps = [Endpoint("tcp://a:1", zone="us"), Endpoint("tcp://b:1", zone="eu"),
           Endpoint("tcp://c:1", zone="eu"), Endpoint("tcp://d:1")]
    members, starts = geo_tiers(eps, None, "eu", 500.0)
    assert members.tolist() == [1, 2, 0, 3]
    assert starts.tolist() == [0, 2, 3, 4]


def test_geo_endpoints_without_coordinates_rank_last_with_a_warning(caplog):
    eps = CITIES + [Endpoint("tcp://nowhere:1")]
    with caplog.at_level("WARNING", logger="fastrpc.balancer"):
        members, starts = geo_tiers(eps, PARIS, None, 500.0)
    assert members[-1] == 5 and starts[-2] == 5
    assert "tcp://nowhere:1" in caplog.text and "rank last" in caplog.text


# the table ------------------------------------------------------------------------------------
def test_table_rejects_bad_input(sel):
    t = sel.EndpointTable(3)
    with pytest.raises(ValueError):
        t.set_mask([1, 1])
    with pytest.raises(ValueError):
        t.set_weights([1, 0, 1])
    with pytest.raises(ValueError):
        sel.EndpointTable(-1)
    with pytest.raises(ValueError):
        sel.RingKernel(t, [1, 2], [0])
    with pytest.raises(ValueError):
        sel.GeoKernel(t, [0, 1, 2], [0, 2])


def test_carry_over_keeps_state(sel):
    old = sel.EndpointTable(3)
    for _ in range(4):
        old.begin(2)
    old.begin(0)
    old.end(0, 0.5, 1.0, 9)
    new = sel.EndpointTable(2)
    new.carry_over(old, [2, 0], [0, 1])
    assert np.asarray(new.inflight).tolist() == [4, 0]
    assert new.total_inflight == 4
    assert np.asarray(new.reported).tolist() == [-1, 9]
    assert np.asarray(new.ewma)[1] == 0.5


def test_pick_many_fills_the_output(sel):
    kernel = sel.RoundRobinKernel(table(sel, 3), 1)
    out = np.zeros(7, dtype=np.int64)
    assert kernel.pick_many(out) == 7
    assert out.tolist() == [1, 2, 0, 1, 2, 0, 1]


# compiled == reference ------------------------------------------------------------------------------
def run_script(sel, ops, n, weights, kind):
    t = sel.EndpointTable(n, seed=99)
    t.set_weights(weights)
    if kind == "ring":
        eps = [Endpoint(f"tcp://h{i}:1", weight=w) for i, w in enumerate(weights)]
        points, owners = build_ring(eps, 10)
        kernel = sel.RingKernel(t, points, owners, 1.25)
    elif kind == "geo":
        kernel = sel.GeoKernel(t, list(range(n)), [0, n // 2, n], 2.0)
    else:
        kernel = getattr(sel, kind)(t)
    out = []
    for op, arg in ops:
        i = arg % n
        if op == "pick":
            j = kernel.pick(arg * 0x9E3779B1)
            out.append(int(j))
            if j >= 0:
                t.begin(j)
        elif op == "end":
            if np.asarray(t.inflight)[i] > 0:
                t.end(i, (arg % 97) / 1000.0, 100.0 + arg, arg % 7)
        else:
            mask = [(arg >> k) & 1 for k in range(n)]
            t.set_mask(mask)
            kernel.rebuild()
    return out


KINDS = ["RandomKernel", "RoundRobinKernel", "WeightedRandomKernel", "SmoothWeightedKernel",
         "LeastConnectionsKernel", "P2CKernel", "ring", "geo"]


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(KINDS),
       n=st.integers(1, 9),
       weights_seed=st.integers(0, 1000),
       ops=st.lists(st.tuples(st.sampled_from(["pick", "pick", "pick", "end", "mask"]),
                              st.integers(0, 2**20)), max_size=80))
def test_compiled_and_reference_pick_the_same(kind, n, weights_seed, ops):
    weights = np.random.default_rng(weights_seed).integers(1, 6, n).astype(float)
    assert run_script(compiled, ops, n, weights, kind) == run_script(reference, ops, n, weights, kind)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 6), st.floats(0.0, 0.5), st.floats(0.0, 0.01),
                          st.integers(-1, 9)), max_size=25))
def test_a_batch_ends_as_its_calls_one_by_one_would(batches):
    # end_many(i, count, ...) (a map batch) leaves the table as `count`
    # end() calls at the same moment do: in-flight counts (never below 0),
    # the latency EWMA, the load the kernels see (reported included).
    for sel in (compiled, reference):
        one, many = sel.EndpointTable(3, seed=3), sel.EndpointTable(3, seed=3)
        now = 1.0
        for i, count, rtt, step, reported in batches:
            for _ in range(4):
                one.begin(i)
                many.begin(i)
            now += step
            for _ in range(count):
                one.end(i, rtt, now, reported)
            many.end_many(i, count, rtt, now, reported)
            assert list(one.inflight) == list(many.inflight)
            assert [one.latency(k, now) for k in range(3)] == [many.latency(k, now) for k in range(3)]
            assert [one.load(k) for k in range(3)] == [many.load(k) for k in range(3)]
