"""The link proxy the multi-host scenarios use (tests/linkproxy.py): delay, order, loss, blackhole, reset."""
import time

import pytest

import fastrpc
from fastrpc.errors import ConnectionLostError, TimeoutError
from fleetbed import LinkProxy


@pytest.fixture
def link(server):
    with LinkProxy("127.0.0.1:0", server.address.split("://", 1)[1]) as proxy:
        yield proxy


def test_a_delayed_link_costs_at_least_its_round_trip(link):
    with fastrpc.Client(link.address) as c:
        assert c.call("Arith.Sum", 1, 2) == 3
        link.set(delay=0.05)
        started = time.monotonic()
        assert c.call("Arith.Sum", 2, 2) == 4
        assert time.monotonic() - started >= 0.1           # one way each direction


def test_jitter_never_reorders_the_bytes(link):
    link.set(delay=0.01, jitter=0.01)
    with fastrpc.Client(link.address) as c:
        assert c.map("Arith.Sum", [(i, 1) for i in range(500)], window=64) == [i + 1 for i in range(500)]


def test_loss_shows_as_a_retransmission_delay(link):
    link.set(loss=1.0, rto=0.1)
    with fastrpc.Client(link.address) as c:
        started = time.monotonic()
        assert c.call("Arith.Sum", 1, 1) == 2
        assert time.monotonic() - started >= 0.2


def test_a_blackhole_answers_nothing_until_it_ends(link):
    with fastrpc.Client(link.address) as c:
        assert c.call("Arith.Sum", 1, 2) == 3
        link.set(blackhole=True)
        with pytest.raises(TimeoutError):
            c.call("Arith.Sum", 1, 2, timeout=0.4)
        link.set(blackhole=False)
        assert c.call("Arith.Sum", 5, 5, timeout=5) == 10


def test_reset_closes_every_connection(link):
    with fastrpc.Client(link.address) as c:
        future = c.go("Arith.Slow", 5.0, "late")
        assert c.call("Arith.Sum", 1, 2) == 3
        link.set(reset=True)
        with pytest.raises(ConnectionLostError):
            future.result(10)
        assert c.call("Arith.Sum", 1, 2) == 3             # a new connection


def test_bad_settings_are_refused(link):
    with pytest.raises(ValueError):
        link.set(delay=-1)
