"""Deterministic subsetting (Aperture): a simulated fleet's balance, and a Balancer over real server processes."""
import collections
import random
import statistics

import pytest

from fastrpc import Aperture, Balancer, Endpoint
from fastrpc.balancer.subset import aperture_size, subset_counts
from support import server_processes

FLEETS = [(200, 100, 10), (200, 97, 10), (37, 100, 3), (200, 13, 4), (5, 3, 1), (1000, 300, 12)]


def addresses(count):
    return [f"tcp://10.1.{j // 250}.{j % 250 + 1}:7000" for j in range(count)]


@pytest.mark.parametrize("servers,clients,size", FLEETS)
def test_every_server_gets_an_even_share_of_connections_and_load(servers, clients, size):
    connections, load = subset_counts([Aperture(i, clients, size) for i in range(clients)], servers)
    assert min(connections) >= 1                          # nobody is left out
    assert max(connections) - min(connections) <= 1
    cover = clients * Aperture(0, clients, size).width(servers) / servers
    mean = statistics.mean(load)
    assert max(load) / mean <= (int(cover) + 1) / cover + 1e-9
    assert sum(load) == pytest.approx(clients)            # every client's load lands somewhere


def test_aperture_beats_random_subsets_and_the_full_mesh():
    servers, clients, size = 200, 100, 10
    connections, load = subset_counts([Aperture(i, clients, size) for i in range(clients)], servers)
    rng = random.Random(7)
    random_connections = collections.Counter()
    for _ in range(clients):
        random_connections.update(rng.sample(range(servers), size))
    random_max = max(random_connections[j] for j in range(servers))
    assert max(connections) < random_max                  # 5 against about 11
    assert max(connections) <= clients * size / servers + 1   # the full mesh would be 100 each


def test_a_membership_change_drops_only_the_removed_servers_connections():
    clients, size = 100, 10
    before = [Endpoint(a) for a in addresses(200)]
    after = before[:57] + before[58:]
    removed = before[57].address
    for i in range(clients):
        old = {e.address for e in Aperture(i, clients, size).choose(before)}
        new = {e.address for e in Aperture(i, clients, size).choose(after)}
        assert old - new <= {removed}


def test_shares_and_weights():
    a = Aperture(index=1, count=4, size=2)
    shares = a.shares(6)
    assert sum(s for _, s in shares) == pytest.approx(1.0)
    assert [p for p, _ in shares] == [1, 2, 3]             # the window [1.5, 3.5) in server arcs
    chosen = a.choose([Endpoint(x, weight=2) for x in addresses(6)])
    assert [e.address for e in chosen] == sorted(addresses(6))[1:4]
    assert [e.weight for e in chosen] == pytest.approx([1.0, 2.0, 1.0])
    assert Aperture(0, 1, 3).choose([Endpoint(x) for x in addresses(2)]) != []
    assert Aperture(0, 2, 1).width(9) == 5                 # raised so that 2 clients cover 9 servers


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        Aperture(3, 3)
    with pytest.raises(ValueError):
        Aperture(0, 0)
    with pytest.raises(ValueError):
        Aperture(0, 2, size=0)
    with pytest.raises(TypeError):
        Balancer(["tcp://127.0.0.1:1"], subset=3)
    with pytest.raises(ValueError):
        aperture_size(10, 0, 5, 5)


def test_aperture_size_follows_the_load():
    assert aperture_size(client_rate=100, per_connection_rate=1000, servers=50, clients=100) == 3
    assert aperture_size(client_rate=20000, per_connection_rate=1000, servers=50, clients=100) == 20
    assert aperture_size(client_rate=100, per_connection_rate=1000, servers=50, clients=5) == 10
    assert aperture_size(client_rate=10 ** 9, per_connection_rate=1, servers=50, clients=5) == 50


# a Balancer over real servers ------------------------------------------------------------
@pytest.fixture(scope="module")
def four():
    with server_processes(4) as servers:
        yield sorted(servers, key=lambda s: s.address)


def test_a_balancer_with_a_subset_calls_only_its_servers(four):
    everyone = [s.address for s in four]
    for index, mine in ((0, four[:2]), (1, four[2:])):
        with Balancer(everyone, subset=Aperture(index, 2, size=2), strategy="weighted_round_robin",
                      health_interval=0) as b:
            assert [e.address for e in b.endpoints] == [s.address for s in mine]
            assert sorted(e.address for e in b.known_endpoints) == everyone
            pids = collections.Counter(b.call("Arith.Pid") for _ in range(40))
            assert set(pids) == {s.pid for s in mine}
            assert b.broadcast("Arith.Pid") == {s.address: s.pid for s in mine}


def test_the_subset_follows_membership_changes(four):
    everyone = [s.address for s in four]
    with Balancer(everyone, subset=Aperture(0, 2, size=2), health_interval=0) as b:
        b.remove(four[0].address)                         # 3 servers: client 0 takes the first two left
        assert [e.address for e in b.endpoints] == [four[1].address, four[2].address]
        assert {b.call("Arith.Pid") for _ in range(20)} == {four[1].pid, four[2].pid}
        b.set_endpoints(everyone)
        assert {e.address for e in b.endpoints} == {four[0].address, four[1].address}
        b.set_weight(four[1].address, 3)
        assert {e.address: e.weight for e in b.endpoints} == {four[0].address: 1, four[1].address: 3}
        with pytest.raises(KeyError):
            b.remove("tcp://127.0.0.1:1")
        b.add(four[0].address)                            # already known: nothing changes
        assert {b.call("Arith.Pid") for _ in range(20)} == {four[0].pid, four[1].pid}
