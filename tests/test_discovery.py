"""Static and file discovery, and balancers and servers that use them."""
import json
import logging
import os
import threading
import time

import pytest

import fastrpc
from fastrpc import Balancer, Endpoint, FileDiscovery, StaticDiscovery
from fastrpc.discovery.base import endpoint_from_dict, endpoint_to_dict
from support import Load, server_processes, wait_until


@pytest.fixture(scope="module")
def trio():
    with server_processes(3) as servers:
        yield servers


def write(path, data, fmt="json"):
    """Replace the file atomically, as deployment tools should."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(data) if fmt == "json" else data)
    os.replace(tmp, path)


def addresses(endpoints):
    return sorted(e.address for e in endpoints)


# endpoints as data ----------------------------------------------------------------------------
def test_endpoint_dict_round_trip_and_bad_entries():
    e = Endpoint("tcp://10.0.0.1:7001", weight=2, zone="eu-west", lat=53.3, lon=-6.2,
                 metadata={"rack": "r1"})
    assert endpoint_from_dict(endpoint_to_dict(e)) == e
    assert endpoint_from_dict("tcp://10.0.0.2:7001") == Endpoint("tcp://10.0.0.2:7001")
    for bad, match in [({"weight": 2}, "needs an address"),
                       ({"address": "tcp://h:1", "colour": "red"}, "unknown endpoint field"),
                       ({"address": "tcp://h:1", "weight": -1}, "weight"),
                       ({"address": "tcp://h:1", "lat": 1.0}, "both lat and lon"),
                       ({"address": "nope"}, "port"),
                       ({"address": "tcp://h:1", "metadata": [1]}, "metadata"),
                       (7, "address string or a table")]:
        with pytest.raises((ValueError, TypeError), match=match):
            endpoint_from_dict(bad)


# static ------------------------------------------------------------------------------------------
def test_static_discovery_lists_and_registrations():
    d = StaticDiscovery({"arith": ["tcp://127.0.0.1:7001"], "cache": []})
    assert addresses(d.endpoints("arith")) == ["tcp://127.0.0.1:7001"]
    assert d.endpoints("cache") == [] and d.endpoints("other") == []
    seen = []
    watch = d.watch("cache", seen.append)
    reg = d.register("cache", Endpoint("tcp://127.0.0.1:7002", weight=3))
    assert addresses(seen[-1]) == ["tcp://127.0.0.1:7002"] and seen[-1][0].weight == 3
    assert reg.update(weight=5).weight == 5 and seen[-1][0].weight == 5
    reg.close()
    reg.close()                                            # idempotent
    assert seen[-1] == [] and d.endpoints("cache") == []
    with pytest.raises(RuntimeError, match="closed"):
        reg.update(weight=2)
    watch.stop()
    d.register("cache", "tcp://127.0.0.1:7003")
    assert len(seen) == 3                                  # stopped: no more callbacks
    shared = StaticDiscovery(["tcp://127.0.0.1:7004"])     # one list for every service
    assert addresses(shared.endpoints("x")) == addresses(shared.endpoints("y")) == ["tcp://127.0.0.1:7004"]
    with pytest.raises(TypeError):
        StaticDiscovery("tcp://127.0.0.1:7001")


def test_balancer_follows_static_registrations_of_real_servers(trio):
    d = StaticDiscovery({})
    server = fastrpc.Server()
    server.register(type("Arith", (), {"Sum": lambda self, a, b: a + b,
                                       "Pid": lambda self: os.getpid()})())
    address = server.start("tcp://127.0.0.1:0")
    with Balancer(discovery=d, service="arith", health_interval=0) as b:
        with pytest.raises(fastrpc.errors.NoEndpointError):
            b.call("Arith.Sum", 1, 2)
        server.register_with(d, "arith", weight=2, zone="local")
        assert b.endpoints == [Endpoint(address, weight=2, zone="local")]
        assert b.call("Arith.Sum", 1, 2) == 3
        d.register("arith", trio[0].address)
        assert {b.call("Arith.Pid") for _ in range(10)} == {os.getpid(), trio[0].pid}
        server.close()                                     # deregisters first
        assert addresses(b.endpoints) == [trio[0].address]
        assert b.call("Arith.Pid") == trio[0].pid


def test_register_with_checks_its_address():
    d = StaticDiscovery({})
    server = fastrpc.Server()
    with pytest.raises(RuntimeError, match="start"):
        server.register_with(d, "arith")
    with pytest.raises(ValueError, match="wildcard"):
        server.register_with(d, "arith", "tcp://0.0.0.0:7001")
    with pytest.raises(ValueError):
        server.register_with(d, "arith", "tcp://127.0.0.1:7001", weight=0)


def test_balancer_discovery_settings_are_checked():
    d = StaticDiscovery({})
    with pytest.raises(ValueError, match="service"):
        Balancer(discovery=d)
    with pytest.raises(ValueError, match="not both"):
        Balancer(["tcp://127.0.0.1:7001"], discovery=d, service="arith")
    with pytest.raises(ValueError, match="discovery"):
        Balancer(["tcp://127.0.0.1:7001"], service="arith")


# file ----------------------------------------------------------------------------------------------
def test_file_discovery_json_and_toml(tmp_path):
    path = tmp_path / "endpoints.json"
    write(path, {"arith": [{"address": "tcp://10.0.0.1:7001", "weight": 2, "zone": "eu-west",
                            "lat": 53.3, "lon": -6.2, "metadata": {"rack": "r1"}},
                           "tcp://10.0.0.2:7001"],
                 "endpoints": ["tcp://10.0.0.9:7001"]})
    d = FileDiscovery(path)
    eps = {e.address: e for e in d.endpoints("arith")}
    assert eps["tcp://10.0.0.1:7001"] == Endpoint("tcp://10.0.0.1:7001", weight=2, zone="eu-west",
                                                  lat=53.3, lon=-6.2, metadata={"rack": "r1"})
    assert "tcp://10.0.0.2:7001" in eps
    assert addresses(d.endpoints("other")) == ["tcp://10.0.0.9:7001"]   # the list for every service
    toml = tmp_path / "endpoints.toml"
    write(toml, '[[arith]]\naddress = "tcp://10.0.0.1:7001"\nweight = 3\nzone = "eu"\n'
                '[[arith]]\naddress = "tcp://10.0.0.2:7001"\n[arith.metadata]\nrack = "r2"\n', "toml")
    eps = {e.address: e for e in FileDiscovery(toml).endpoints("arith")}
    assert eps["tcp://10.0.0.1:7001"].weight == 3 and eps["tcp://10.0.0.2:7001"].metadata == {"rack": "r2"}
    write(path, ["tcp://10.0.0.3:7001"])
    assert addresses(FileDiscovery(path).endpoints("any")) == ["tcp://10.0.0.3:7001"]


@pytest.mark.parametrize("content, match", [
    ("{not json", "not valid JSON"),
    ('"a string"', "table of services or a list"),
    ('{"arith": "tcp://10.0.0.1:7001"}', "expected a list"),
    ('{"arith": [{"address": "tcp://10.0.0.1:7001", "weight": "heavy"}]}', "endpoint 1"),
    ('{"arith": ["tcp://10.0.0.1:7001", "tcp://10.0.0.1:7001"]}', "listed twice"),
    ('{"arith": [{"adress": "tcp://10.0.0.1:7001"}]}', "unknown endpoint field"),
    ("\xff\xfe", "not valid JSON"),
])
def test_file_discovery_rejects_malformed_files_clearly(tmp_path, content, match):
    path = tmp_path / "endpoints.json"
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(ValueError, match=match):
        FileDiscovery(path)


def test_file_discovery_missing_file_and_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="cannot load"):
        FileDiscovery(tmp_path / "nope.json")
    path = tmp_path / "e.json"
    write(path, [])
    with pytest.raises(ValueError):
        FileDiscovery(path, poll_interval=0)
    with pytest.raises(ValueError):
        FileDiscovery(path, format="yaml")
    bad_toml = tmp_path / "e.toml"
    write(bad_toml, "[[arith]\naddress = 1", "toml")
    with pytest.raises(ValueError, match="not valid TOML"):
        FileDiscovery(bad_toml)


def test_file_discovery_reloads_and_keeps_the_last_good_set(tmp_path, caplog):
    path = tmp_path / "endpoints.json"
    write(path, {"arith": ["tcp://10.0.0.1:7001"]})
    d = FileDiscovery(path, poll_interval=0.02)
    seen = []
    d.watch("arith", seen.append)
    write(path, {"arith": ["tcp://10.0.0.1:7001", "tcp://10.0.0.2:7001"]})
    assert wait_until(lambda: seen and len(seen[-1]) == 2, 5)
    caplog.set_level(logging.ERROR, "fastrpc.discovery")
    write(path, '{"arith": [', "toml")                    # truncated
    assert wait_until(lambda: d.last_error is not None, 5)
    assert "not valid JSON" in d.last_error and "keeping the last good" in caplog.text
    assert len(d.endpoints("arith")) == 2 and len(seen[-1]) == 2
    write(path, {"arith": ["tcp://10.0.0.3:7001"]})
    assert wait_until(lambda: d.last_error is None and addresses(seen[-1]) == ["tcp://10.0.0.3:7001"], 5)
    count = len(seen)
    write(path, {"arith": ["tcp://10.0.0.3:7001"], "cache": ["tcp://10.0.0.4:7001"]})
    time.sleep(0.2)
    assert len(seen) == count                              # arith did not change: no callback
    d.close()


def test_balancer_follows_the_file_under_load_dropping_nothing(tmp_path, trio):
    path = tmp_path / "endpoints.json"
    write(path, {"arith": [trio[0].address]})
    d = FileDiscovery(path, poll_interval=0.05)
    with Balancer(discovery=d, service="arith", strategy="least_connections", health_interval=0) as b:
        pids = set()
        load = Load(lambda i: pids.add(b.call("Arith.Lag", i)[1]))
        write(path, {"arith": [s.address for s in trio]})
        assert wait_until(lambda: len(b.endpoints) == 3, 2)      # within a second or so
        assert wait_until(lambda: len(pids) == 3, 5)
        write(path, {"arith": [{"address": trio[1].address, "weight": 5}]})
        assert wait_until(lambda: [e.address for e in b.endpoints] == [trio[1].address], 2)
        assert b.endpoints[0].weight == 5
        load.join()
        assert not load.errors, load.errors[:3]            # any failure is a defect here
        assert list(b.stats()) == [trio[1].address] and b.stats()[trio[1].address]["calls"] > 0
    d.close()


def test_async_balancer_follows_changes_made_from_another_thread(trio):
    import asyncio
    d = StaticDiscovery({"arith": [trio[0].address]})

    async def main():
        async with fastrpc.AsyncBalancer(discovery=d, service="arith", health_interval=0) as b:
            assert (await b.call("Arith.Lag", 1))[1] == trio[0].pid
            # a registry thread adds one server and removes the first
            added = threading.Thread(target=d.register, args=("arith", trio[1].address))
            added.start()
            added.join()
            assert {(await b.call("Arith.Lag", i))[1] for i in range(20)} == {trio[0].pid, trio[1].pid}
            client = b._by_address[trio[0].address].client
            threading.Thread(target=b.remove, args=(trio[0].address,)).start()
            for _ in range(200):
                if client._closed:
                    break
                await asyncio.sleep(0.01)
            assert client._closed                          # closed on the balancer's own loop
            assert {(await b.call("Arith.Lag", i))[1] for i in range(10)} == {trio[1].pid}

    asyncio.run(asyncio.wait_for(main(), 30))
