"""Balancer with real server processes: strategies, membership, health, failures."""
import asyncio
import collections
import concurrent.futures
import threading
import time

import pytest

import fastrpc
from fastrpc import Balancer, Endpoint
from fastrpc.errors import (ConnectError, ConnectionLostError, EncodeError, MethodNotFoundError, NoEndpointError,
                            RemoteError, TimeoutError)
from support import (Load, ServerProcess, server_process, server_processes, unused_address, unused_addresses,
                     wait_until)

STRATEGY_OPTIONS = {"geo": {"origin": (48.86, 2.35)}}


@pytest.fixture(scope="module")
def trio():
    with server_processes(3) as servers:
        yield servers


def balancer(addresses, strategy="round_robin", **settings):
    settings.setdefault("health_interval", 0)
    return Balancer(addresses, strategy=strategy, **STRATEGY_OPTIONS.get(strategy, {}), **settings)


def pid_of(b, address):
    with fastrpc.Client(address) as client:
        return client.call("Arith.Pid")


def count_of(address):
    with fastrpc.Client(address) as client:
        return client.call("Arith.Count")


# every strategy end to end -------------------------------------------------------------
@pytest.mark.parametrize("strategy", list(fastrpc.STRATEGIES))
def test_every_strategy_calls_and_spreads(trio, strategy):
    eps = [Endpoint(s.address, weight=w, lat=48.0 + i, lon=2.0)
           for i, (s, w) in enumerate(zip(trio, (1, 2, 3)))]
    with balancer(eps, strategy) as b:
        pids = collections.Counter()
        for i in range(120):
            value, pid = b.call("Arith.Lag", i, key=f"user:{i}")
            assert value == i
            pids[pid] += 1
        futures = [b.go("Arith.Sum", i, 1, key=str(i)) for i in range(60)]
        assert [f.result(10) for f in futures] == [i + 1 for i in range(60)]
        assert b.map("Arith.Sum", [(i, 2) for i in range(300)], keys=[str(i) for i in range(300)]) \
            == [i + 2 for i in range(300)]
        stats = b.stats()
        assert sum(s["calls"] for s in stats.values()) == 480
        assert all(s["in_flight"] == 0 and s["errors"] == 0 for s in stats.values())
        assert len(pids) == 3, pids           # every strategy here uses every endpoint


def test_round_robin_rotates_over_processes(trio):
    with balancer([s.address for s in trio], fastrpc.balancer.strategies.RoundRobin(start=0)) as b:
        pids = [b.call("Arith.Pid") for _ in range(6)]
        expected = [pid_of(b, s.address) for s in trio]
        assert pids == expected * 2


def test_weighted_round_robin_sequence_over_processes(trio):
    eps = [Endpoint(trio[0].address, weight=5), Endpoint(trio[1].address), Endpoint(trio[2].address)]
    with balancer(eps, "weighted_round_robin") as b:
        a, bb, c = (pid_of(b, s.address) for s in trio)
        assert [b.call("Arith.Pid") for _ in range(7)] == [a, a, bb, a, c, a, a]


def test_consistent_hash_keeps_keys_on_one_server(trio):
    with balancer([s.address for s in trio], "consistent_hash") as b:
        for key in ("alice", "bob", "carol", "dave"):
            owner = b.pick(key).address
            assert {b.call("Arith.Pid", key=key) for _ in range(5)} == {pid_of(b, owner)}


def test_map_spreads_keeps_order_and_keys(trio):
    with balancer([s.address for s in trio], "round_robin") as b:
        assert b.map("Arith.Sum", [(i, 1) for i in range(3000)], window=256) == [i + 1 for i in range(3000)]
        assert b.map("Arith.Echo", ["a", ("b",), b"c"]) == ["a", "b", b"c"]
        assert b.map("Arith.Sum", []) == []
        assert sorted(s["calls"] for s in b.stats().values()) == [1001, 1001, 1001]
        # any iterable of items: a tuple, a generator, a list subclass
        assert b.map("Arith.Sum", tuple((i, 2) for i in range(50))) == [i + 2 for i in range(50)]
        assert b.map("Arith.Sum", ((i, 3) for i in range(50)), window=7) == [i + 3 for i in range(50)]
        assert b.map("Arith.Sum", type("Items", (list,), {})([(1, 1), (2, 2)])) == [2, 4]
    with balancer([s.address for s in trio], "consistent_hash") as b:
        # 97 distinct keys: one of 3 nodes owning none of them is out of the
        # question (with 17, a node was now and then left out by the ports' luck)
        keys = [f"user:{i % 97}" for i in range(200)]
        pids = b.map("Arith.Pid", [()] * 200, keys=keys)
        for key, pid in zip(keys, pids):
            assert b.call("Arith.Pid", key=key) == pid
        assert len(set(pids)) == 3
        with pytest.raises(ValueError, match="keys"):
            b.map("Arith.Pid", [()] * 3, keys=["a"])


class Lagging:
    """Work(i) takes `delay` seconds, one call at a time (an inline handler)."""

    def __init__(self, delay):
        self.delay = delay

    def Work(self, i):
        time.sleep(self.delay)
        return i


@pytest.mark.parametrize("strategy", ["least_connections", "p2c"])
def test_a_long_map_gives_a_slow_endpoint_less(strategy):
    # More items than the window: more are picked as batches complete, so a
    # load-aware strategy sends most of them to the fast endpoint. (Window by
    # window, every window waiting for its slowest batch, each got half.)
    servers = [fastrpc.Server(), fastrpc.Server()]
    servers[0].register(Lagging(0.0), "Lag")
    servers[1].register(Lagging(0.004), "Lag")
    fast, slow = (s.start("tcp://127.0.0.1:0") for s in servers)
    try:
        with balancer([fast, slow], strategy) as b:
            assert b.map("Lag.Work", list(range(400)), window=32) == list(range(400))
            assert b.stats()[slow]["calls"] <= 100, b.stats()

        async def use_async():
            async with fastrpc.AsyncBalancer([fast, slow], strategy=strategy) as ab:
                assert await ab.map("Lag.Work", list(range(400)), window=32) == list(range(400))
                return ab.stats()[slow]["calls"]
        assert asyncio.run(use_async()) <= 100
    finally:
        for s in servers:
            s.close()


def test_map_errors_name_endpoints_and_nothing_stays_in_flight(trio):
    dead = unused_address()
    with balancer([dead, trio[0].address], "round_robin", eject_failures=1000) as b:
        assert b.map("Arith.Sum", [(i, 1) for i in range(100)]) == [i + 1 for i in range(100)]
        assert b.stats()[dead]["errors"] == 50                # not sent: all went elsewhere
        out = b.map("Arith.Div", [(1, 1), (1, 0), (4, 2), (object(),), (6, 3)], return_exceptions=True)
        assert out[0] == 1.0 and out[2] == 2.0 and out[4] == 2.0
        assert isinstance(out[1], RemoteError) and out[1].endpoints[-1] == trio[0].address
        assert isinstance(out[3], EncodeError)        # fails alone, nothing else lost
        with pytest.raises(RemoteError):
            b.map("Arith.Div", [(1, 1), (1, 0)])
        with pytest.raises(TimeoutError) as info:
            b.map("Arith.Hang", [()] * 4, timeout=0.3)
        tried = info.value.endpoints                           # may have run: not repeated
        assert tried[-1] == trio[0].address and trio[0].address not in tried[:-1]
        assert all(s["in_flight"] == 0 for s in b.stats().values())
    with balancer([dead], max_attempts=2) as b:
        with pytest.raises(ConnectError) as info:
            b.map("Arith.Sum", [(1, 2)])
        assert info.value.endpoints == [dead]


def test_notify_and_context_manager(trio):
    with balancer([trio[0].address], "random") as b:
        b.notify("Arith.Record", "hello")
        assert wait_until(lambda: "hello" in b.call("Arith.Recorded"))
    with pytest.raises(fastrpc.errors.ConnectionClosedError):
        b.call("Arith.Sum", 1, 2)


def test_remote_errors_are_not_retried_and_name_the_endpoint(trio):
    with balancer([s.address for s in trio], "round_robin", idempotent=True) as b:
        with pytest.raises(RemoteError) as info:
            b.call("Arith.Fail", "boom")
        assert info.value.type == "ValueError" and len(info.value.endpoints) == 1
        with pytest.raises(MethodNotFoundError):
            b.call("Arith.Nope")
        assert sum(s["errors"] for s in b.stats().values()) == 0   # answers, not endpoint faults


def test_unencodable_argument_leaves_nothing_in_flight(trio):
    with balancer([trio[0].address]) as b:
        with pytest.raises(fastrpc.errors.EncodeError):
            b.call("Arith.Echo", object())
        assert b.stats()[trio[0].address]["in_flight"] == 0
        assert b.call("Arith.Sum", 1, 1) == 2


def test_settings_are_checked():
    with pytest.raises(ValueError, match="unknown strategy"):
        Balancer(["tcp://127.0.0.1:1"], strategy="fastest")
    with pytest.raises(ValueError, match="geo"):
        Balancer(["tcp://127.0.0.1:1"], strategy="random", origin=(1, 2))
    with pytest.raises(ValueError, match="needs origin"):
        Balancer(["tcp://127.0.0.1:1"], strategy="geo")
    with pytest.raises(ValueError, match="twice"):
        Balancer(["tcp://127.0.0.1:1", "tcp://127.0.0.1:1"])
    with pytest.raises(ValueError, match="failure"):
        Balancer(["tcp://127.0.0.1:1"], failure="sometimes")
    with pytest.raises(TypeError):
        Balancer(["tcp://127.0.0.1:1"], colour="blue")
    with pytest.raises(ValueError):
        Endpoint("tcp://127.0.0.1:1", weight=0)
    with pytest.raises(ValueError):
        Endpoint("tcp://127.0.0.1:1", lat=91, lon=0)
    with pytest.raises(ValueError):
        Endpoint("tcp://127.0.0.1:1", lat=10)
    with pytest.raises(TypeError):
        Balancer([42])
    with pytest.raises(NoEndpointError):
        Balancer([], health_interval=0).call("Arith.Sum", 1, 2)
    with pytest.raises(TypeError, match="key"):
        Balancer(["tcp://127.0.0.1:1"], strategy="consistent_hash", health_interval=0).pick(1.5)


def test_custom_strategy(trio):
    class Last(fastrpc.Strategy):
        """Always the last eligible endpoint."""
        name = "last"

        def pick(self, key):
            import numpy as np
            eligible = np.flatnonzero(np.asarray(self.table.mask))
            return int(eligible[-1]) if len(eligible) else -1

    with balancer([s.address for s in trio], Last()) as b:
        assert {b.call("Arith.Pid") for _ in range(5)} == {pid_of(b, trio[2].address)}


# membership at runtime -----------------------------------------------------------------------
def test_add_remove_set_weight_under_load_drop_nothing(trio):
    b = balancer([trio[0].address], "weighted_round_robin")
    stop = time.monotonic() + 3.0
    results, errors = [], []

    def worker(k):
        i = 0
        while time.monotonic() < stop and i < 20_000:
            try:
                results.append(b.call("Arith.Sum", k, i) == k + i)
            except Exception as exc:           # every error is a failure of this test
                errors.append(exc)
            i += 1

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(worker, k) for k in range(4)]
        while time.monotonic() < stop:
            b.add(Endpoint(trio[1].address, weight=2))
            b.add(trio[2].address)
            b.set_weight(trio[0].address, 3)
            b.remove(trio[1].address)
            b.set_weight(trio[0].address, 1)
            b.remove(trio[2].address)
            time.sleep(0.01)
        for f in futures:
            f.result(30)
    b.close()
    assert not errors, errors[:3]
    assert results and all(results)


def test_removed_endpoint_finishes_its_calls(trio):
    with balancer([trio[0].address, trio[1].address], fastrpc.balancer.strategies.RoundRobin(start=0)) as b:
        slow = b.go("Arith.Slow", 0.5, "done")          # on trio[0]
        time.sleep(0.05)
        b.remove(trio[0].address)
        assert slow.result(5) == "done"
        assert {b.call("Arith.Pid") for _ in range(4)} == {pid_of(b, trio[1].address)}
        assert list(b.stats()) == [trio[1].address]
        with pytest.raises(KeyError):
            b.remove(trio[0].address)


def test_set_endpoints_replaces_the_set(trio):
    with balancer([trio[0].address]) as b:
        b.set_endpoints([trio[1].address, Endpoint(trio[2].address, weight=4)])
        assert [e.address for e in b.endpoints] == [trio[1].address, trio[2].address]
        assert b.stats()[trio[2].address]["weight"] == 4


def test_slow_start_ramps_new_endpoints(trio):
    with balancer([trio[0].address], "weighted_random", slow_start=0.6) as b:
        b.add(Endpoint(trio[1].address, weight=10))
        st = b.stats()[trio[1].address]
        assert st["weight"] == 10 and st["effective_weight"] < 2.5
        time.sleep(0.7)
        for _ in range(5):
            b.call("Arith.Sum", 1, 1)
        assert b.stats()[trio[1].address]["effective_weight"] == 10


# load feedback -------------------------------------------------------------------------------
def test_server_reported_load_steers_least_loaded(trio):
    busy, idle = trio[0], trio[1]
    hog = fastrpc.Client(busy.address)
    sleepers = [hog.go("Arith.Sleep", 1.0) for _ in range(3)]     # 3 calls in the busy server's pool
    time.sleep(0.1)
    try:
        with balancer([busy.address, idle.address], "least_connections") as b:
            with fastrpc.Client(busy.address) as probe:
                probe.ping()
                assert probe.server_load >= 3
            b.check_health()
            assert b.stats()[busy.address]["load"] >= 3
            assert {b.call("Arith.Pid") for _ in range(10)} == {pid_of(b, idle.address)}
    finally:
        for f in sleepers:
            f.result(10)
        hog.close()


# failures ------------------------------------------------------------------------------------
def test_failover_skips_a_dead_endpoint_and_ejects_it(trio):
    dead = unused_address()
    with balancer([dead, trio[0].address], "round_robin", eject_failures=3) as b:
        for i in range(30):
            assert b.call("Arith.Sum", i, 1) == i + 1       # never fails: retried elsewhere
        stats = b.stats()
        assert stats[dead]["errors"] == 3 and stats[dead]["ejected"]
        assert stats[trio[0].address]["calls"] == 30


def test_go_fails_over_names_endpoints_and_cancels(trio):
    dead = unused_address()
    with balancer([dead, trio[0].address], "round_robin") as b:
        futures = [b.go("Arith.Sum", i, 1) for i in range(10)]
        assert [f.result(5) for f in futures] == [i + 1 for i in range(10)]
        hung = b.go("Arith.Hang")
        assert hung.cancel()
        with pytest.raises(concurrent.futures.CancelledError):
            hung.result(1)
        assert wait_until(lambda: all(s["in_flight"] == 0 for s in b.stats().values()), 5)
        assert b.go("Arith.Div", 1, 0).exception(5).endpoints == [trio[0].address]
    with balancer([dead], max_attempts=2) as b:
        error = b.go("Arith.Sum", 1, 2).exception(5)
        assert isinstance(error, ConnectError) and error.endpoints == [dead]


def test_failfast_raises_connect_error_naming_the_endpoint():
    dead = unused_address()
    with balancer([dead], failure="failfast") as b:
        with pytest.raises(ConnectError) as info:
            b.call("Arith.Sum", 1, 2)
        assert dead in str(info.value) and info.value.endpoints == [dead]


def test_failover_error_names_every_endpoint_tried():
    dead = unused_addresses(3)
    with balancer(dead, max_attempts=3) as b:
        with pytest.raises(ConnectError) as info:
            b.call("Arith.Sum", 1, 2)
        assert sorted(info.value.endpoints) == sorted(dead)
        assert "failed on 3 endpoints" in str(info.value)
        assert all(a in str(info.value) for a in dead)


def test_failtry_retries_the_same_endpoint():
    dead = unused_addresses(2)
    with balancer(dead, failure="failtry", max_attempts=3) as b:
        with pytest.raises(ConnectError) as info:
            b.call("Arith.Sum", 1, 2)
        assert len(info.value.endpoints) == 3 and len(set(info.value.endpoints)) == 1


def test_retry_budget_bounds_retries():
    dead = unused_addresses(3)
    budget = fastrpc.RetryBudget(ratio=0.0, min_per_second=0.0)
    with balancer(dead, retry_budget=budget, max_attempts=3) as b:
        with pytest.raises(ConnectError) as info:
            b.call("Arith.Sum", 1, 2)
        assert len(info.value.endpoints) == 1


@pytest.fixture
def lagging_pair():
    """A server that answers Lag after 2 s, and one that answers at once."""
    with server_process(env={"FASTRPC_TEST_LAG": "2"}) as slow, server_process() as fast:
        yield slow, fast


def test_a_timed_out_call_is_not_repeated(lagging_pair):
    slow, fast = lagging_pair
    with balancer([slow.address, fast.address], fastrpc.balancer.strategies.RoundRobin(start=0),
                  timeout=0.3) as b:
        with pytest.raises(TimeoutError) as info:
            b.call("Arith.Lag", 1)
        assert info.value.endpoints == [slow.address]
        assert (count_of(slow.address), count_of(fast.address)) == (1, 0)


def test_a_call_lost_with_its_server_is_not_repeated(lagging_pair):
    slow, fast = lagging_pair
    with balancer([slow.address, fast.address], fastrpc.balancer.strategies.RoundRobin(start=0),
                  timeout=10) as b:
        pending = b.go("Arith.Lag", 1)
        assert wait_until(lambda: count_of(slow.address) == 1)
        slow.kill()
        with pytest.raises(ConnectionLostError) as info:
            pending.result(10)
        assert info.value.endpoints == [slow.address]
        assert count_of(fast.address) == 0


@pytest.mark.parametrize("how", ["call", "go"])
def test_an_idempotent_call_is_repeated_elsewhere(lagging_pair, how):
    slow, fast = lagging_pair
    with balancer([slow.address, fast.address], fastrpc.balancer.strategies.RoundRobin(start=0),
                  timeout=10, idempotent=True) as b:
        pending = concurrent.futures.ThreadPoolExecutor(1).submit(b.call, "Arith.Lag", 1) \
            if how == "call" else b.go("Arith.Lag", 1)
        assert wait_until(lambda: count_of(slow.address) == 1)
        slow.kill()
        assert pending.result(10) == [1, fast.proc.pid]
        assert count_of(fast.address) == 1


@pytest.mark.parametrize("how", ["call", "go"])
def test_backup_request_wins_over_a_slow_endpoint(how):
    with server_process(env={"FASTRPC_TEST_LAG": "1.5"}) as slow, server_process() as fast:
        with balancer([slow.address, fast.address], fastrpc.balancer.strategies.RoundRobin(start=0),
                      failure="backup", backup_after=0.2, idempotent=True) as b:
            start = time.monotonic()
            value, pid = b.call("Arith.Lag", 7) if how == "call" else b.go("Arith.Lag", 7).result(5)
            elapsed = time.monotonic() - start
            assert value == 7 and pid == fast.proc.pid
            assert elapsed < 1.0
            assert wait_until(lambda: b.stats()[slow.address]["in_flight"] == 0, 5)   # the loser withdrawn
            assert b.stats()[fast.address]["calls"] == 1
            # a fast endpoint first: no hedge is sent
            b.call("Arith.Sum", 0, 0)                     # round robin: the next pick is fast again
            assert b.go("Arith.Lag", 9).result(5) == [9, fast.proc.pid]
            time.sleep(0.2)
            assert count_of(slow.address) == 1
            # not idempotent: no hedge, the slow endpoint answers
            value, pid = b.call("Arith.Lag", 8, idempotent=False)
            assert pid in (slow.proc.pid, fast.proc.pid)


def test_health_checks_mark_down_and_recover_with_real_processes():
    with server_process() as a, server_process() as c:
        address = a.address
        with balancer([address, c.address], "round_robin", health_interval=0.1,
                      health_timeout=0.5, health_misses=2) as b:
            assert wait_until(lambda: all(s["healthy"] for s in b.stats().values()))
            a.kill()
            assert wait_until(lambda: not b.stats()[address]["healthy"], timeout=10)
            assert {b.call("Arith.Pid") for _ in range(6)} == {c.proc.pid}
            restarted = ServerProcess(address)               # same port again
            try:
                assert wait_until(lambda: b.stats()[address]["healthy"], timeout=10)
                assert restarted.proc.pid in {b.call("Arith.Pid") for _ in range(6)}
            finally:
                restarted.close()


def test_ejection_expires_and_the_endpoint_comes_back():
    with server_process() as a, server_process() as c:
        address = a.address
        with balancer([address, c.address], "round_robin", eject_failures=2, eject_base=0.5) as b:
            b.call("Arith.Sum", 1, 1)
            b.call("Arith.Sum", 1, 1)
            a.kill()
            for i in range(10):
                assert b.call("Arith.Sum", i, 1, idempotent=True) == i + 1
            assert b.stats()[address]["ejected"]
            restarted = ServerProcess(address)
            try:
                time.sleep(0.6)
                pids = {b.call("Arith.Pid") for _ in range(6)}
                assert restarted.proc.pid in pids
                assert not b.stats()[address]["ejected"]
            finally:
                restarted.close()


def test_never_more_than_half_ejected_and_panic_mode(caplog):
    dead = unused_addresses(4)
    with balancer(dead, "round_robin", eject_failures=1, max_attempts=1) as b:
        for _ in range(20):
            with pytest.raises(ConnectError):
                b.call("Arith.Sum", 1, 2)
        assert sum(s["ejected"] for s in b.stats().values()) == 2
    with balancer(dead[:2], "round_robin", health_interval=0.05, health_misses=1,
                  health_timeout=0.2) as b:
        with caplog.at_level("WARNING", logger="fastrpc.balancer"):
            assert wait_until(lambda: b.panic, timeout=5)
            # the health thread sets the flag, then logs: wait for the line too
            assert wait_until(lambda: "entering panic mode" in caplog.text, timeout=5)
        tried = set()
        for _ in range(6):
            with pytest.raises(ConnectError) as info:
                b.call("Arith.Sum", 1, 2)
            tried.update(info.value.endpoints)
        assert tried == set(dead[:2])          # picks among all rather than failing to pick


def test_graceful_stop_under_load_fails_no_call():
    with server_process() as a, server_process() as c:
        with balancer([a.address, c.address], "p2c", health_interval=0.2) as b:
            load = Load(lambda i: b.call("Arith.Sum", i, 1), seconds=2.0)
            time.sleep(0.5)
            assert a.terminate() == 0                  # GOAWAY, drain, exit
            load.join()
            assert not load.errors, load.errors[:3]
            assert len(load.results) > 100


def test_kill_under_load_every_call_ends_clearly():
    with server_processes(3) as servers:
        addresses = [s.address for s in servers]
        with balancer(addresses, "least_connections", timeout=5.0, health_interval=0.2) as b:
            stop = time.monotonic() + 3.0
            outcomes = collections.Counter()
            lock = threading.Lock()

            def worker(k):
                i = 0
                while time.monotonic() < stop and i < 50_000:
                    try:
                        ok = b.call("Arith.Sum", k, i) == k + i
                        kind = "ok" if ok else "wrong"
                    except (ConnectionLostError, ConnectError) as exc:
                        kind = type(exc).__name__
                    except Exception as exc:           # anything else is unexpected
                        kind = f"unexpected {type(exc).__name__}: {exc}"
                    with lock:
                        outcomes[kind] += 1
                    i += 1

            threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(4)]
            for t in threads:
                t.start()
            time.sleep(0.7)
            servers[0].kill()
            time.sleep(0.7)
            restarted = ServerProcess(addresses[0])
            time.sleep(0.5)
            servers[1].kill()
            for t in threads:
                t.join(30)
            restarted.close()
            hung = sum(t.is_alive() for t in threads)
            assert hung == 0
            assert outcomes["wrong"] == 0
            assert not [k for k in outcomes if k.startswith("unexpected")], outcomes
            assert outcomes["ok"] > 100
            # lost calls are only those in flight on a killed server (non-idempotent)
            assert outcomes["ConnectionLostError"] <= 2 * len(threads), outcomes


@pytest.mark.parametrize("kind", ["blocking", "asyncio"])
def test_a_long_map_survives_a_backend_killed_mid_map(kind):
    # Items in flight on the killed backend are retried elsewhere (the
    # method is idempotent), later ones are picked among those left: every
    # item has its result, in order, and nothing stays counted in flight.
    # (Each item takes 2 ms on its server, so the map lasts well past the kill.)
    n = 20_000
    items = [(0.002, i) for i in range(n)]
    with server_processes(3) as servers:
        addresses = [s.address for s in servers]
        killer = threading.Timer(0.1, servers[1].kill)
        killer.start()
        try:
            if kind == "blocking":
                with balancer(addresses, "round_robin", idempotent=True) as b:
                    out = b.map("Arith.Slow", items, window=256)
                    stats = b.stats()
            else:
                async def use_async():
                    async with fastrpc.AsyncBalancer(addresses, strategy="round_robin", idempotent=True) as ab:
                        return await ab.map("Arith.Slow", items, window=256), ab.stats()
                out, stats = asyncio.run(use_async())
        finally:
            killer.join()
    assert out == list(range(n))
    assert all(s["in_flight"] == 0 for s in stats.values()), stats
    assert stats[addresses[1]]["errors"] >= 1, stats               # it was killed mid-map
    assert stats[addresses[1]]["calls"] < n // 3, stats


def test_callers_short_timeouts_do_not_eject_a_server_that_answers():
    # Calls that time out because their caller allowed too little time,
    # while the server answers other calls meanwhile, are no sign of a dead
    # server. (The connections are up first, and the other calls have
    # plenty of time to be answered before the hurried ones time out, so a
    # slow machine cannot turn the one into the other.)
    with server_process() as first, server_process() as second:
        with balancer([first.address, second.address], fastrpc.balancer.strategies.RoundRobin(start=0),
                      eject_failures=3) as b:
            assert [b.call("Arith.Sum", i, 1) for i in range(2)] == [1, 2]
            for _ in range(4):
                hurried = [b.go("Arith.Slow", 3.0, "late", timeout=0.5) for _ in range(10)]
                assert [b.call("Arith.Sum", i, 1) for i in range(4)] == [1, 2, 3, 4]
                for f in hurried:
                    with pytest.raises(TimeoutError):
                        f.result(5)
            stats = b.stats()
            assert not stats[first.address]["ejected"] and not stats[second.address]["ejected"]


def test_a_stalled_server_times_out_and_is_ejected():
    # Its handler never returns in time: calls to it time out (not repeated:
    # they may have run), and after eject_failures timeouts it gets no calls.
    with server_process(env={"FASTRPC_TEST_LAG": "60"}) as stalled, server_process() as healthy:
        with balancer([stalled.address, healthy.address], fastrpc.balancer.strategies.RoundRobin(start=0),
                      timeout=0.2, eject_failures=3) as b:
            outcomes = collections.Counter()
            for i in range(30):
                try:
                    outcomes[b.call("Arith.Lag", i)[1]] += 1
                except TimeoutError as exc:
                    assert exc.endpoints == [stalled.address]
                    outcomes["timeout"] += 1
            assert outcomes["timeout"] == 3 and outcomes[healthy.pid] == 27
            stats = b.stats()
            assert stats[stalled.address]["ejected"] and stats[stalled.address]["in_flight"] == 0


def test_a_call_timing_out_while_connecting_ends_at_its_timeout_and_is_never_sent():
    # A listener whose accept queue is full: connecting hangs (SYNs dropped).
    # The call (or map) ends at its own timeout (not connect_timeout), naming the
    # endpoint it waited for; when the connection is made later, the call
    # that already failed is not sent.
    import socket

    def check(make_call):
        with socket.socket() as full:
            full.bind(("127.0.0.1", 0))
            full.listen(0)
            address = "tcp://127.0.0.1:%d" % full.getsockname()[1]
            filler = socket.create_connection(full.getsockname(), timeout=1)
            start = time.monotonic()
            error, finish, stats = make_call(address)
            try:
                assert isinstance(error, TimeoutError) and error.endpoints == [address]
                assert time.monotonic() - start < 4.0          # connect_timeout is 5 s
                full.accept()[0].close()                       # room in the queue: the dial completes
                filler.close()
                full.settimeout(5)
                late, _ = full.accept()
                with late:
                    late.settimeout(1.0)
                    try:
                        data = late.recv(65536)
                    except socket.timeout:
                        data = b""
                    assert data == b"", f"a call that had failed was sent: {data!r}"
                assert wait_until(lambda: stats()[address]["in_flight"] == 0, 5), stats()   # the pick is released
            finally:
                finish()

    def sync_call(address):
        b = balancer([address], timeout=0.3, connect_timeout=5, health_interval=0)
        try:
            b.call("Arith.Sum", 1, 2)
        except TimeoutError as exc:
            return exc, b.close, b.stats
        raise AssertionError("the call did not time out")

    def async_call(address):
        loop = asyncio.new_event_loop()
        ab = fastrpc.AsyncBalancer([address], timeout=0.3, connect_timeout=5, health_interval=0)
        try:
            loop.run_until_complete(ab.call("Arith.Sum", 1, 2))
        except TimeoutError as exc:
            return exc, keep_running(loop, ab), ab.stats
        raise AssertionError("the call did not time out")

    def keep_running(loop, ab):
        """Run `loop` on in a thread, so a late dial can finish; return what
        closes `ab` and stops it."""
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()

        def finish():
            asyncio.run_coroutine_threadsafe(ab.close(), loop).result(5)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            loop.close()
        return finish

    def sync_map(address):
        b = balancer([address], connect_timeout=5, health_interval=0)
        outcomes = b.map("Arith.Sum", [(1, 2), (3, 4)], timeout=0.3, return_exceptions=True)
        assert isinstance(outcomes[1], TimeoutError), outcomes
        return outcomes[0], b.close, b.stats

    def async_map(address):
        loop = asyncio.new_event_loop()
        ab = fastrpc.AsyncBalancer([address], connect_timeout=5, health_interval=0)
        outcomes = loop.run_until_complete(ab.map("Arith.Sum", [(1, 2), (3, 4)], timeout=0.3,
                                                  return_exceptions=True))
        assert isinstance(outcomes[1], TimeoutError), outcomes
        return outcomes[0], keep_running(loop, ab), ab.stats

    check(sync_call)
    check(async_call)
    check(sync_map)
    check(async_map)


def test_a_call_whose_time_ran_out_while_failing_to_connect_times_out():
    # The endpoint accepts, then closes the connection 0.3 s later, during
    # the authentication handshake: the call was never sent (a ConnectError,
    # which would be retried), but its 0.1 s timeout has passed by then. The
    # call timed out whether the engine's deadline timer or the failed dial
    # gets there first; here nobody waits on the call and the timer is held
    # up (the helper thread runs a slow task), so the failed dial always does.
    import socket

    from fastrpc.client.engine import engine

    def slow_peer(listener, stop):
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            time.sleep(0.3)
            conn.close()

    def hold_helper(seconds):
        busy = threading.Event()
        engine().schedule(0.0, lambda: (busy.set(), time.sleep(seconds)))
        assert busy.wait(5), "the helper thread did not run the task"

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.settimeout(0.2)
        address = "tcp://127.0.0.1:%d" % listener.getsockname()[1]
        stop = threading.Event()
        peer = threading.Thread(target=slow_peer, args=(listener, stop), daemon=True)
        peer.start()
        try:
            with balancer([address], auth_secret=b"0123456789abcdef0123", health_interval=0) as b:
                hold_helper(1.0)
                f = b.go("Arith.Sum", 1, 2, timeout=0.1)
                time.sleep(0.6)                 # nobody waits on it: the failed dial is first
                with pytest.raises(TimeoutError) as info:
                    f.result(0)
                assert info.value.endpoints == [address]
                assert isinstance(info.value.__cause__, ConnectError)    # why it was not sent
                time.sleep(1.0)
                hold_helper(1.0)
                [outcome] = b.map("Arith.Sum", [(1, 2)], timeout=0.1, return_exceptions=True)
                assert isinstance(outcome, TimeoutError), outcome
        finally:
            stop.set()
            peer.join(5)
