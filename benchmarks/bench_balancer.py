"""End to end through the balancer: 4 backend server processes, one balanced
client, calls/s per strategy next to a direct single-endpoint Client in the
same run (the cost of balancing), and next to 4 Clients rotated by hand (the
cost of the balancer's bookkeeping alone, with the same spread). The
steady states are measured twice: as groups of rounds, and as pairs of a
direct round and a balanced round run back to back, which a machine whose
speed drifts skews less."""
import asyncio
import itertools
import os
import statistics
import sys
import time

import pytest

import fastrpc
from fastrpc import AsyncBalancer, Balancer, Endpoint
from conftest import HERE, Proc, median_rate
from shapes import awaiting, calls_awaited, expected_awaiting_sum, expected_window_sum, sliding_window

try:
    import uvloop
    new_loop = uvloop.new_event_loop
except ImportError:  # pragma: no cover
    new_loop = asyncio.new_event_loop

BACKENDS = 4
STRATEGIES = ["random", "round_robin", "weighted_random", "weighted_round_robin",
              "least_connections", "p2c", "p2c_ewma", "consistent_hash", "geo"]
SEQ = "Balancer.call sequential, 4 backends"
STEADY = "Balancer.go, sliding window of 128 (steady state), 4 backends"
ASYNC_STEADY = "AsyncBalancer.call, 128 awaiting coroutines (steady state), 4 backends"
INFLIGHT = "Balancer.go, 128 in flight, bursts, 4 backends"
MAP = "Balancer.map, 128 calls per map, 4 backends"
ASYNC_SEQ = "AsyncBalancer.call sequential, 4 backends"
PAIRED = ("Balancer.go sliding window of 128 / direct Client.go, rounds taken in turn "
          "(median of the per-pair ratios)")
PAIRED_ONE = ("Balancer.go sliding window of 128 over ONE backend / direct Client.go on it: the "
              "balancer's own cost, rounds taken in turn (median of the per-pair ratios)")
ASYNC_PAIRED = ("AsyncBalancer.call 128 awaiting / direct AsyncClient, rounds taken in turn "
                "(median of the per-pair ratios)")
ASYNC_PAIRED_ONE = ("AsyncBalancer.call 128 awaiting over ONE backend / direct AsyncClient on it: the "
                    "balancer's own cost, rounds taken in turn (median of the per-pair ratios)")
MAP_PAIRED = ("Balancer.map 128 per map / direct Client.map, rounds taken in turn "
              "(median of the per-pair ratios)")
MAP_PAIRED_ONE = ("Balancer.map 128 per map over ONE backend / direct Client.map on it: the balancer's own "
                  "cost, rounds taken in turn (median of the per-pair ratios)")
LONG_MAP = ("Balancer.map of 20,000 items, window 1,024, 4 backends / direct Client.map of the same, "
            "rounds taken in turn (median of the per-pair ratios)")
DIRECT = "direct Client, one endpoint"
ROTATED = "4 Clients rotated by hand"
# The spread's cost without any balancer code: 4 plain Clients taken in turn
# call by call, or in runs of a whole window (each backend gets long bursts,
# as one connection would). Next to the balanced rows they show how much of
# the gap to one connection is the balancer and how much is 4 server
# processes sharing the machine's cores with the client.
SPREADS = {"4 Clients rotated by hand, no balancer": 1,
           "4 Clients in runs of 128 calls, no balancer": 128}
# Nearby cities, so geo has real distances to rank (Paris is the origin).
PLACES = [(48.86, 2.35), (50.85, 4.35), (51.51, -0.13), (52.52, 13.40)]


def sizes(quick):
    # (sequential calls per round, 128-call batches per round, rounds)
    return (40, 2, 1) if quick else (2000, 40, 7)


def steady_calls(quick):
    """Calls per round of the steady-state shapes."""
    return 512 if quick else 40_000


@pytest.fixture(scope="module")
def backends():
    procs = [Proc([sys.executable, os.path.join(HERE, "servers.py"), "tcp://127.0.0.1:0"])
             for _ in range(BACKENDS)]
    yield [p.address for p in procs]
    for p in procs:
        p.stop()


@pytest.fixture
def rotation(backends):
    """One Client per backend, taken in turn: the spread without a balancer."""
    clients = [fastrpc.Client(a) for a in backends]
    yield itertools.cycle(clients)
    for c in clients:
        c.close()


@pytest.fixture(scope="module", autouse=True)
def baselines(report):
    for group in (SEQ, STEADY, ASYNC_STEADY, INFLIGHT, MAP, ASYNC_SEQ):
        report.baseline(group, DIRECT, "calls/s")
    for group in (PAIRED, PAIRED_ONE, ASYNC_PAIRED, ASYNC_PAIRED_ONE, MAP_PAIRED, MAP_PAIRED_ONE, LONG_MAP):
        report.baseline(group, DIRECT, "ratio")
        report.add(group, DIRECT, 1.0)


def endpoints(addresses):
    return [Endpoint(a, weight=1, lat=lat, lon=lon) for a, (lat, lon) in zip(addresses, PLACES)]


def balancer_options(strategy):
    # Health checks off: the figure is the call path, not the background pings.
    options = {"strategy": strategy, "health_interval": 0}
    if strategy == "geo":
        options["origin"] = PLACES[0]
    return options


def timed(benchmark, report, group, name, fn, rounds, calls):
    benchmark.group = group
    benchmark.pedantic(fn, rounds=rounds, warmup_rounds=1)
    rate = median_rate(benchmark, calls)
    if rate:
        report.add(group, name, rate)


# sequential, blocking ---------------------------------------------------------------

def test_direct_sequential(benchmark, backends, report, quick):
    n, _, rounds = sizes(quick)
    with fastrpc.Client(backends[0]) as client:
        def run():
            for i in range(n):
                client.call("Arith.Sum", i, 1)
        timed(benchmark, report, SEQ, DIRECT, run, rounds, n)
        assert client.call("Arith.Sum", 2, 3) == 5


def test_rotated_sequential(benchmark, rotation, report, quick):
    n, _, rounds = sizes(quick)

    def run():
        for i in range(n):
            next(rotation).call("Arith.Sum", i, 1)

    timed(benchmark, report, SEQ, ROTATED, run, rounds, n)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_balancer_sequential(benchmark, backends, report, quick, strategy):
    n, _, rounds = sizes(quick)
    keyed = strategy == "consistent_hash"
    with Balancer(endpoints(backends), **balancer_options(strategy)) as b:
        def run():
            for i in range(n):
                b.call("Arith.Sum", i, 1, key=i if keyed else None)
        timed(benchmark, report, SEQ, strategy, run, rounds, n)
        stats = b.stats()
        assert sum(s["calls"] for s in stats.values()) >= n
        if strategy not in ("geo", "consistent_hash", "p2c_ewma", "least_connections"):
            assert all(s["calls"] for s in stats.values()), "every backend takes calls"


# steady state: a sliding window of go(), 128 awaiting coroutines -----------------------

def test_direct_sliding_window(benchmark, backends, report, quick):
    n, (_, _, rounds) = steady_calls(quick), sizes(quick)
    with fastrpc.Client(backends[0]) as client:
        timed(benchmark, report, STEADY, DIRECT, lambda: sliding_window(client.go, "Arith.Sum", n), rounds, n)
        assert sliding_window(client.go, "Arith.Sum", 300) == expected_window_sum(300)


def test_rotated_sliding_window(benchmark, rotation, report, quick):
    n, (_, _, rounds) = steady_calls(quick), sizes(quick)

    def go(method, *args):
        return next(rotation).go(method, *args)

    timed(benchmark, report, STEADY, ROTATED, lambda: sliding_window(go, "Arith.Sum", n), rounds, n)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_balancer_sliding_window(benchmark, backends, report, quick, strategy):
    n, (_, _, rounds) = steady_calls(quick), sizes(quick)
    with Balancer(endpoints(backends), **balancer_options(strategy)) as b:
        go = balanced_call_site(b.go, strategy)
        timed(benchmark, report, STEADY, strategy, lambda: sliding_window(go, "Arith.Sum", n), rounds, n)
        assert sliding_window(go, "Arith.Sum", 300) == expected_window_sum(300)
        assert all(s["in_flight"] == 0 for s in b.stats().values())


def test_direct_async_awaiting(benchmark, backends, report, quick):
    n, (_, _, rounds) = steady_calls(quick), sizes(quick)
    loop = new_loop()
    client = loop.run_until_complete(fastrpc.AsyncClient(backends[0]).connect())
    try:
        timed(benchmark, report, ASYNC_STEADY, DIRECT,
              lambda: loop.run_until_complete(awaiting(client.call, "Arith.Sum", n)), rounds, calls_awaited(n))
        assert loop.run_until_complete(awaiting(client.call, "Arith.Sum", 1280)) == expected_awaiting_sum(1280)
    finally:
        loop.run_until_complete(client.close())
        loop.close()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_async_balancer_awaiting(benchmark, backends, report, quick, strategy):
    n, (_, _, rounds) = steady_calls(quick), sizes(quick)
    loop = new_loop()
    b = AsyncBalancer(endpoints(backends), **balancer_options(strategy))
    call = balanced_call_site(b.call, strategy)
    try:
        timed(benchmark, report, ASYNC_STEADY, strategy,
              lambda: loop.run_until_complete(awaiting(call, "Arith.Sum", n)), rounds, calls_awaited(n))
        assert loop.run_until_complete(awaiting(call, "Arith.Sum", 1280)) == expected_awaiting_sum(1280)
    finally:
        loop.run_until_complete(b.close())
        loop.close()


# 128 in flight, blocking go(), bursts -------------------------------------------------------

def test_direct_in_flight(benchmark, backends, report, quick):
    _, batches, rounds = sizes(quick)
    with fastrpc.Client(backends[0]) as client:
        def run():
            for _ in range(batches):
                for f in [client.go("Arith.Sum", i, 1) for i in range(128)]:
                    f.result()
        timed(benchmark, report, INFLIGHT, DIRECT, run, rounds, 128 * batches)


def test_rotated_in_flight(benchmark, rotation, report, quick):
    _, batches, rounds = sizes(quick)

    def run():
        for _ in range(batches):
            for f in [next(rotation).go("Arith.Sum", i, 1) for i in range(128)]:
                f.result()

    timed(benchmark, report, INFLIGHT, ROTATED, run, rounds, 128 * batches)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_balancer_in_flight(benchmark, backends, report, quick, strategy):
    _, batches, rounds = sizes(quick)
    keyed = strategy == "consistent_hash"
    with Balancer(endpoints(backends), **balancer_options(strategy)) as b:
        def run():
            for _ in range(batches):
                futures = [b.go("Arith.Sum", i, 1, key=i if keyed else None) for i in range(128)]
                for f in futures:
                    f.result()
        timed(benchmark, report, INFLIGHT, strategy, run, rounds, 128 * batches)
        assert b.go("Arith.Sum", 2, 3).result(5) == 5


# 128 calls per map() ------------------------------------------------------------------------

def test_direct_map(benchmark, backends, report, quick):
    _, batches, rounds = sizes(quick)
    args = [(i, 1) for i in range(128)]
    with fastrpc.Client(backends[0]) as client:
        timed(benchmark, report, MAP, DIRECT,
              lambda: [client.map("Arith.Sum", args) for _ in range(batches)], rounds, 128 * batches)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_balancer_map(benchmark, backends, report, quick, strategy):
    _, batches, rounds = sizes(quick)
    args = [(i, 1) for i in range(128)]
    keys = [f"user:{i}" for i in range(128)] if strategy == "consistent_hash" else None
    with Balancer(endpoints(backends), **balancer_options(strategy)) as b:
        timed(benchmark, report, MAP, strategy,
              lambda: [b.map("Arith.Sum", args, keys=keys) for _ in range(batches)], rounds, 128 * batches)
        assert b.map("Arith.Sum", args[:3], keys=keys and keys[:3]) == [1, 2, 3]


# sequential, asyncio -------------------------------------------------------------------

def test_direct_async_sequential(benchmark, backends, report, quick):
    n, _, rounds = sizes(quick)
    loop = new_loop()
    client = loop.run_until_complete(fastrpc.AsyncClient(backends[0]).connect())

    async def run():
        for i in range(n):
            await client.call("Arith.Sum", i, 1)

    try:
        timed(benchmark, report, ASYNC_SEQ, DIRECT, lambda: loop.run_until_complete(run()), rounds, n)
    finally:
        loop.run_until_complete(client.close())
        loop.close()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_async_balancer_sequential(benchmark, backends, report, quick, strategy):
    n, _, rounds = sizes(quick)
    keyed = strategy == "consistent_hash"
    loop = new_loop()
    b = AsyncBalancer(endpoints(backends), **balancer_options(strategy))

    async def run():
        for i in range(n):
            await b.call("Arith.Sum", i, 1, key=i if keyed else None)

    try:
        timed(benchmark, report, ASYNC_SEQ, strategy, lambda: loop.run_until_complete(run()), rounds, n)
        assert loop.run_until_complete(b.call("Arith.Sum", 2, 3)) == 5
    finally:
        loop.run_until_complete(b.close())
        loop.close()


# the same steady states, each balanced round next to a direct one ---------------------------
# On a shared machine the rate drifts within seconds, and the groups above
# measure the direct client and each strategy minutes apart. Here every
# balanced round is paired with a direct round just before it, and the
# figure is the median of the pairs' ratios.

def paired_ratio(direct_round, balanced_round, pairs):
    """Median over `pairs` of (balanced rate / direct rate), each pair run back to back."""
    ratios = []
    for _ in range(pairs):
        direct = _timed_round(direct_round)
        ratios.append(direct / _timed_round(balanced_round))
    return statistics.median(ratios)


def _timed_round(fn):
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def paired_window(benchmark, report, quick, group, name, direct_go, go):
    """Report, as `name` in `group`, the median ratio of sliding windows of
    go() to sliding windows of direct_go(), taken in turn."""
    n, pairs = steady_calls(quick), (1 if quick else 7)
    for warm in (direct_go, go):
        assert sliding_window(warm, "Arith.Sum", 300) == expected_window_sum(300)
    benchmark.group = group
    ratio = benchmark.pedantic(paired_ratio, args=(lambda: sliding_window(direct_go, "Arith.Sum", n),
                                                   lambda: sliding_window(go, "Arith.Sum", n), pairs),
                               rounds=1)
    report.add(group, name, ratio)
    assert ratio > 0


def balanced_call_site(balanced, strategy):
    """The balancer's method as the shapes call it: itself or, for the keyed
    strategy, a Python function giving each call its key."""
    if strategy != "consistent_hash":
        return balanced
    return lambda method, i, one: balanced(method, i, one, key=i)


def call_sites(direct, balanced, strategy):
    """(direct, balanced) as the shapes call them; for the keyed strategy the
    direct method goes through a Python function of the same shape too, so
    both sides of a ratio pay the same call site."""
    if strategy != "consistent_hash":
        return direct, balanced
    return (lambda method, i, one: direct(method, i, one)), balanced_call_site(balanced, strategy)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_paired_sliding_window(benchmark, backends, report, quick, strategy):
    with fastrpc.Client(backends[0]) as client, Balancer(endpoints(backends), **balancer_options(strategy)) as b:
        paired_window(benchmark, report, quick, PAIRED, strategy, *call_sites(client.go, b.go, strategy))


@pytest.mark.parametrize("name", SPREADS)
def test_paired_spread_without_balancer(benchmark, backends, report, quick, name):
    run = SPREADS[name]
    clients = [fastrpc.Client(a) for a in backends]
    calls = itertools.count()

    def go(method, *args):
        return clients[(next(calls) // run) % len(clients)].go(method, *args)

    try:
        paired_window(benchmark, report, quick, PAIRED, name, clients[0].go, go)
    finally:
        for c in clients:
            c.close()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_paired_one_backend(benchmark, backends, report, quick, strategy):
    with fastrpc.Client(backends[0]) as client, \
            Balancer(endpoints(backends[:1]), **balancer_options(strategy)) as b:
        paired_window(benchmark, report, quick, PAIRED_ONE, strategy, *call_sites(client.go, b.go, strategy))
        assert b.stats()[backends[0]]["in_flight"] == 0


@pytest.mark.parametrize("spread", [4, 1], ids=["4 backends", "one backend"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_paired_async_awaiting(benchmark, backends, report, quick, strategy, spread):
    n, pairs = steady_calls(quick), (1 if quick else 7)
    group = ASYNC_PAIRED if spread == len(backends) else ASYNC_PAIRED_ONE
    loop = new_loop()
    client = loop.run_until_complete(fastrpc.AsyncClient(backends[0]).connect())
    b = AsyncBalancer(endpoints(backends[:spread]), **balancer_options(strategy))
    direct, call = call_sites(client.call, b.call, strategy)
    try:
        for warm in (direct, call):
            assert loop.run_until_complete(awaiting(warm, "Arith.Sum", 1280)) == expected_awaiting_sum(1280)
        benchmark.group = group
        ratio = benchmark.pedantic(
            paired_ratio, args=(lambda: loop.run_until_complete(awaiting(direct, "Arith.Sum", n)),
                                lambda: loop.run_until_complete(awaiting(call, "Arith.Sum", n)), pairs),
            rounds=1)
        report.add(group, strategy, ratio)
        assert ratio > 0
    finally:
        loop.run_until_complete(b.close())
        loop.run_until_complete(client.close())
        loop.close()


# A map is a burst (send 128, wait for all), whose rate on a shared machine
# moves between rounds more than a steady state's: its paired rows.
@pytest.mark.parametrize("spread", [4, 1], ids=["4 backends", "one backend"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_paired_map(benchmark, backends, report, quick, strategy, spread):
    _, batches, _ = sizes(quick)
    pairs = 1 if quick else 7
    group = MAP_PAIRED if spread == len(backends) else MAP_PAIRED_ONE
    args = [(i, 1) for i in range(128)]
    keys = [f"user:{i}" for i in range(128)] if strategy == "consistent_hash" else None
    expected = [i + 1 for i in range(128)]
    with fastrpc.Client(backends[0]) as client, \
            Balancer(endpoints(backends[:spread]), **balancer_options(strategy)) as b:
        assert client.map("Arith.Sum", args) == expected and b.map("Arith.Sum", args, keys=keys) == expected
        benchmark.group = group
        ratio = benchmark.pedantic(
            paired_ratio, args=(lambda: [client.map("Arith.Sum", args) for _ in range(batches)],
                                lambda: [b.map("Arith.Sum", args, keys=keys) for _ in range(batches)], pairs),
            rounds=1)
        report.add(group, strategy, ratio)
        assert ratio > 0
        assert all(s["in_flight"] == 0 for s in b.stats().values())


# A map longer than its window: items are picked as batches complete (the
# window slides), so every endpoint's pipe stays full.
@pytest.mark.parametrize("strategy", ["round_robin", "least_connections", "p2c"])
def test_paired_long_map(benchmark, backends, report, quick, strategy):
    n = 2_000 if quick else 20_000
    pairs = 1 if quick else 5
    args = [(i, 1) for i in range(n)]
    expected = [i + 1 for i in range(n)]
    with fastrpc.Client(backends[0]) as client, Balancer(endpoints(backends), **balancer_options(strategy)) as b:
        assert client.map("Arith.Sum", args) == expected and b.map("Arith.Sum", args) == expected
        benchmark.group = LONG_MAP
        ratio = benchmark.pedantic(
            paired_ratio, args=(lambda: client.map("Arith.Sum", args), lambda: b.map("Arith.Sum", args), pairs),
            rounds=1)
        report.add(LONG_MAP, strategy, ratio)
        assert ratio > 0
        assert all(s["in_flight"] == 0 for s in b.stats().values())
