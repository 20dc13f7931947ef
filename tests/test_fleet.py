"""Fleet-wide calls (Balancer.broadcast / fork, and the AsyncBalancer's) over real server processes."""
import asyncio
import time

import pytest

import fastrpc
from fastrpc import AsyncBalancer, Balancer
from fastrpc.errors import (ConnectError, ConnectionClosedError, FleetCallError, NoEndpointError, RemoteError,
                            TimeoutError)
from support import ServerProcess, server_processes, unused_address, wait_until


@pytest.fixture(scope="module")
def trio():
    with server_processes(3) as servers:
        yield servers


@pytest.fixture(scope="module")
def racers():
    """One server answering Lag at once, two that take 60 s."""
    servers = []
    try:
        for lag in ("0", "60", "60"):
            servers.append(ServerProcess(env={"FASTRPC_TEST_LAG": lag}))
        yield servers
    finally:
        for server in servers:
            server.close()


def ask(address, method, *args):
    with fastrpc.Client(address) as client:
        return client.call(method, *args)


class Sync:
    """Runs the scenario's calls through a Balancer."""

    def __init__(self, addresses, **settings):
        self.b = Balancer(addresses, health_interval=0, **settings)

    def broadcast(self, *args, **kwargs):
        return self.b.broadcast(*args, **kwargs)

    def fork(self, *args, **kwargs):
        return self.b.fork(*args, **kwargs)

    def close(self):
        self.b.close()

    def dispose(self):
        self.b.close()


class Async:
    """Runs the same calls through an AsyncBalancer, on a loop of its own."""

    def __init__(self, addresses, **settings):
        self.loop = asyncio.new_event_loop()
        self.b = AsyncBalancer(addresses, health_interval=0, **settings)

    def broadcast(self, *args, **kwargs):
        return self.loop.run_until_complete(self.b.broadcast(*args, **kwargs))

    def fork(self, *args, **kwargs):
        return self.loop.run_until_complete(self.b.fork(*args, **kwargs))

    def close(self):
        self.loop.run_until_complete(self.b.close())

    def dispose(self):
        self.close()
        self.loop.close()


@pytest.fixture(params=[Sync, Async], ids=["Balancer", "AsyncBalancer"])
def fleet(request):
    opened = []

    def make(addresses, **settings):
        driver = request.param(addresses, **settings)
        opened.append(driver)
        return driver

    yield make
    for driver in opened:
        driver.dispose()


# broadcast -------------------------------------------------------------------------
def test_broadcast_returns_every_endpoints_result_by_address(trio, fleet):
    b = fleet([s.address for s in trio])
    pids = b.broadcast("Arith.Pid")
    assert pids == {s.address: s.pid for s in trio}
    assert b.broadcast("Arith.Sum", 20, b=22) == {s.address: 42 for s in trio}


def test_broadcast_with_an_endpoint_down_names_it_and_keeps_the_others_results(trio, fleet):
    down = unused_address()
    b = fleet([s.address for s in trio] + [down], connect_timeout=2.0)
    with pytest.raises(FleetCallError) as info:
        b.broadcast("Arith.Pid")
    exc = info.value
    assert exc.endpoints == (down,)
    assert isinstance(exc.errors[down], ConnectError)
    assert {a: r for a, r in exc.results.items() if a != down} == {s.address: s.pid for s in trio}
    assert down in str(exc) and "1 of 4" in str(exc)
    outcome = b.broadcast("Arith.Pid", return_exceptions=True)
    assert isinstance(outcome[down], ConnectError)
    assert [outcome[s.address] for s in trio] == [s.pid for s in trio]


def test_broadcast_reports_each_remote_error(trio, fleet):
    b = fleet([s.address for s in trio])
    outcome = b.broadcast("Arith.Fail", "no", return_exceptions=True)
    assert set(outcome) == {s.address for s in trio}
    assert all(isinstance(r, RemoteError) and "no" in str(r) for r in outcome.values())


def test_broadcast_is_bounded_by_its_timeout_and_withdraws_the_calls(trio, fleet):
    b = fleet([s.address for s in trio])
    with pytest.raises(FleetCallError) as info:
        b.broadcast("Arith.Hang", timeout=0.5)
    assert set(info.value.endpoints) == {s.address for s in trio}
    assert all(isinstance(e, TimeoutError) for e in info.value.errors.values())
    for s in trio:                                  # the servers were told to cancel
        assert wait_until(lambda: ask(s.address, "Arith.Hanging") == 0, timeout=10)


def test_broadcast_default_timeout_is_the_balancers(trio, fleet):
    b = fleet([s.address for s in trio], timeout=0.5)
    outcome = b.broadcast("Arith.Hang", return_exceptions=True)
    assert all(isinstance(r, TimeoutError) for r in outcome.values())


# fork ------------------------------------------------------------------------------
def test_fork_returns_the_first_success_and_cancels_the_rest(racers, fleet):
    b = fleet([s.address for s in racers])
    started = time.monotonic()
    value, pid = b.fork("Arith.Lag", 7, timeout=30)
    assert (value, pid) == (7, racers[0].pid)
    assert time.monotonic() - started < 20          # the 60 s servers were not awaited
    for s in racers[1:]:                            # their calls were withdrawn, not left running
        assert wait_until(lambda: ask(s.address, "Arith.Lagging") == 0, timeout=10)


def test_fork_succeeds_with_endpoints_down(trio, fleet):
    downs = [unused_address(), unused_address()]
    b = fleet(downs + [trio[1].address], connect_timeout=2.0)
    assert b.fork("Arith.Pid") == trio[1].pid


def test_fork_raises_with_every_endpoints_error_when_none_succeeds(trio, fleet):
    b = fleet([s.address for s in trio])
    with pytest.raises(FleetCallError) as info:
        b.fork("Arith.Fail", "all wrong")
    assert set(info.value.endpoints) == {s.address for s in trio}
    assert all(isinstance(e, RemoteError) for e in info.value.errors.values())
    assert "failed on every endpoint (3)" in str(info.value)


def test_fork_with_every_endpoint_down_or_silent_ends_by_its_deadline(trio, fleet):
    down = unused_address()
    b = fleet([down, trio[0].address], connect_timeout=2.0)
    with pytest.raises(FleetCallError) as info:
        b.fork("Arith.Hang", timeout=0.5)
    assert isinstance(info.value.errors[down], ConnectError)
    assert isinstance(info.value.errors[trio[0].address], TimeoutError)
    assert wait_until(lambda: ask(trio[0].address, "Arith.Hanging") == 0, timeout=10)


# no endpoints, closed --------------------------------------------------------------
def test_fleet_calls_without_endpoints_or_after_close_raise_clearly(trio, fleet):
    b = fleet([])
    with pytest.raises(NoEndpointError):
        b.broadcast("Arith.Pid")
    with pytest.raises(NoEndpointError):
        b.fork("Arith.Pid")
    c = fleet([trio[0].address])
    c.close()
    with pytest.raises(ConnectionClosedError):
        c.broadcast("Arith.Pid")
    with pytest.raises(ConnectionClosedError):
        c.fork("Arith.Pid")


def test_sync_fleet_calls_from_many_threads_at_once(trio):
    """Broadcasts and forks from several threads, mixed with balanced calls."""
    import concurrent.futures
    import random
    addresses = [s.address for s in trio]
    expected = {s.address: s.pid for s in trio}
    with Balancer(addresses, health_interval=0) as b:
        def work(seed):
            rng = random.Random(seed)
            for i in range(40):
                kind = rng.choice(("broadcast", "fork", "call", "go"))
                if kind == "broadcast":
                    assert b.broadcast("Arith.Pid") == expected
                elif kind == "fork":
                    assert b.fork("Arith.Pid") in expected.values()
                elif kind == "call":
                    assert b.call("Arith.Sum", i, 1) == i + 1
                else:
                    assert b.go("Arith.Sum", i, 2).result(10) == i + 2
            return True
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            assert all(pool.map(work, range(6)))
