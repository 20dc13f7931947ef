"""AsyncBalancer with real server processes: the asyncio twin of test_balancer."""
import asyncio
import collections
import time

import pytest

import fastrpc
from fastrpc import AsyncBalancer, Endpoint
from fastrpc.errors import ConnectError, NoEndpointError, RemoteError, TimeoutError
from support import server_process, server_processes, unused_address

STRATEGY_OPTIONS = {"geo": {"origin": (48.86, 2.35)}}


@pytest.fixture(scope="module")
def trio():
    with server_processes(3) as servers:
        yield servers


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def make(addresses, strategy="round_robin", **settings):
    settings.setdefault("health_interval", 0)
    return AsyncBalancer(addresses, strategy=strategy, **STRATEGY_OPTIONS.get(strategy, {}), **settings)


@pytest.mark.parametrize("strategy", list(fastrpc.STRATEGIES))
def test_every_strategy_calls_goes_maps_and_spreads(trio, strategy):
    eps = [Endpoint(s.address, weight=w, lat=48.0 + i, lon=2.0)
           for i, (s, w) in enumerate(zip(trio, (1, 2, 3)))]

    async def main():
        async with make(eps, strategy) as b:
            pids = collections.Counter()
            for i in range(120):
                value, pid = await b.call("Arith.Lag", i, key=f"user:{i}")
                assert value == i
                pids[pid] += 1
            tasks = [b.go("Arith.Sum", i, 1, key=str(i)) for i in range(60)]
            assert await asyncio.gather(*tasks) == [i + 1 for i in range(60)]
            assert await b.map("Arith.Sum", [(i, 2) for i in range(300)],
                               keys=[str(i) for i in range(300)]) == [i + 2 for i in range(300)]
            stats = b.stats()
            assert sum(s["calls"] for s in stats.values()) == 480
            assert all(s["in_flight"] == 0 and s["errors"] == 0 for s in stats.values())
            assert len(pids) == 3, pids

    run(main())


def test_round_robin_sequence_and_consistent_keys(trio):
    async def main():
        async with make([s.address for s in trio], fastrpc.balancer.strategies.RoundRobin(start=0)) as b:
            pids = [await b.call("Arith.Pid") for _ in range(6)]
            assert pids == [s.pid for s in trio] * 2
        async with make([s.address for s in trio], "consistent_hash") as b:
            keys = [f"user:{i % 13}" for i in range(100)]
            mapped = await b.map("Arith.Pid", [()] * 100, keys=keys)
            for key, pid in zip(keys, mapped):
                assert await b.call("Arith.Pid", key=key) == pid

    run(main())


def test_failover_remote_errors_and_error_names(trio):
    dead = unused_address()

    async def main():
        async with make([dead, trio[0].address], eject_failures=1000) as b:
            assert [await b.call("Arith.Sum", i, 1) for i in range(10)] == [i + 1 for i in range(10)]
            assert await b.map("Arith.Sum", [(i, 1) for i in range(40)]) == [i + 1 for i in range(40)]
            assert b.stats()[dead]["errors"] >= 5                 # not sent: went elsewhere
            with pytest.raises(RemoteError) as info:
                await b.call("Arith.Div", 1, 0)
            assert info.value.endpoints[-1] == trio[0].address
            out = await b.map("Arith.Div", [(1, 1), (1, 0)], return_exceptions=True)
            assert out[0] == 1.0 and isinstance(out[1], RemoteError)
            await b.notify("Arith.Sum", 1, 2)
            assert all(s["in_flight"] == 0 for s in b.stats().values())
        async with make([dead], failure="failfast") as b:
            with pytest.raises(ConnectError) as info:
                await b.call("Arith.Sum", 1, 2)
            assert info.value.endpoints == [dead]
            with pytest.raises(ConnectError):
                await b.map("Arith.Sum", [(1, 2)])
        async with make([]) as b:
            with pytest.raises(NoEndpointError):
                await b.call("Arith.Sum", 1, 2)

    run(main())


def test_timeouts_are_not_repeated_and_cancel_withdraws(trio):
    async def main():
        async with make([s.address for s in trio]) as b:
            with pytest.raises(TimeoutError) as info:
                await b.call("Arith.Hang", timeout=0.2)
            assert len(info.value.endpoints) == 1
            task = b.go("Arith.Hang")
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            with pytest.raises(TimeoutError):
                await b.map("Arith.Hang", [()] * 3, timeout=0.2)
            assert all(s["in_flight"] == 0 for s in b.stats().values())
            # A map cancelled with shares in flight withdraws them, and the
            # endpoints' in-flight counts (which load-aware strategies pick
            # by) come back to zero.
            mapping = asyncio.ensure_future(b.map("Arith.Hang", [()] * 40, window=16))
            await asyncio.sleep(0.1)
            assert sum(s["in_flight"] for s in b.stats().values()) == 16
            mapping.cancel()
            with pytest.raises(asyncio.CancelledError):
                await mapping
            assert all(s["in_flight"] == 0 for s in b.stats().values())

    run(main())


def test_backup_request_wins_over_a_slow_endpoint():
    with server_process(env={"FASTRPC_TEST_LAG": "1.5"}) as slow, server_process() as fast:
        async def main():
            async with make([slow.address, fast.address], fastrpc.balancer.strategies.RoundRobin(start=0),
                            failure="backup", backup_after=0.05, idempotent=True) as b:
                start = time.monotonic()
                value, pid = await b.call("Arith.Lag", 7)
                assert value == 7 and pid == fast.pid
                assert time.monotonic() - start < 1.0
                await asyncio.sleep(0.1)
                assert b.stats()[slow.address]["in_flight"] == 0

        run(main())


@pytest.mark.parametrize("entered", [True, False], ids=["async with", "started by the first call"])
def test_health_checks_mark_down_and_recover(entered):
    # Health checks run from `async with`, or without it from the first call.
    with server_process() as a, server_process() as c:
        async def main():
            b = make([a.address, c.address], health_interval=0.1, health_timeout=0.5, health_misses=2)
            if entered:
                await b.__aenter__()
            try:
                await b.call("Arith.Sum", 1, 2)
                a.kill()
                deadline = time.monotonic() + 10
                while b.stats()[a.address]["healthy"] and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                assert not b.stats()[a.address]["healthy"]
                pids = {(await b.call("Arith.Lag", 0))[1] for _ in range(20)}
                assert pids == {c.pid}
            finally:
                await b.close()

        run(main())


def test_membership_changes_under_load_drop_nothing(trio):
    async def main():
        async with make([trio[0].address], "least_connections") as b:
            errors, done = [], 0
            stop = time.monotonic() + 1.5

            async def worker():
                nonlocal done
                i = 0
                while time.monotonic() < stop and i < 20_000:
                    try:
                        await b.call("Arith.Sum", i, 1)
                        done += 1
                    except Exception as exc:     # any failure is a defect here
                        errors.append(exc)
                    i += 1

            async def churn():
                for _ in range(5):
                    await asyncio.sleep(0.1)
                    b.add(trio[1].address)
                    b.add(trio[2].address)
                    b.set_weight(trio[1].address, 3)
                    await asyncio.sleep(0.1)
                    b.remove(trio[1].address)
                    b.remove(trio[2].address)

            await asyncio.gather(*(worker() for _ in range(8)), churn())
            assert not errors, errors[:3]
            assert done > 100

    run(main())


def test_a_stalled_server_times_out_and_is_ejected():
    with server_process(env={"FASTRPC_TEST_LAG": "60"}) as stalled, server_process() as healthy:
        async def main():
            async with make([stalled.address, healthy.address], fastrpc.balancer.strategies.RoundRobin(start=0),
                            timeout=0.2, eject_failures=3) as b:
                outcomes = collections.Counter()
                for i in range(30):
                    try:
                        outcomes[(await b.call("Arith.Lag", i))[1]] += 1
                    except TimeoutError:
                        outcomes["timeout"] += 1
                assert outcomes["timeout"] == 3 and outcomes[healthy.pid] == 27
                assert b.stats()[stalled.address]["ejected"]

        run(main())
