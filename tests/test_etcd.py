"""EtcdDiscovery against a real etcd server (Debian's etcd-server; `make deps` installs it).

Each test runs its own etcd with its own data directory and loopback ports.
Without etcd these tests fail: they do not skip.
"""
import base64
import json
import logging
import subprocess
import sys
import time

import pytest

import fastrpc
from fastrpc import Balancer, Endpoint, EtcdDiscovery
from fastrpc.discovery.etcd import EtcdError
from support import Load, ServerProcess, etcd_process, make_certificates, server_process, wait_until

SERVICE = "arith"


@pytest.fixture
def etcd(tmp_path):
    with etcd_process(tmp_path / "etcd") as proc:
        yield proc


def registered(discovery, service=SERVICE):
    return sorted(e.address for e in discovery.endpoints(service))


def put_raw(discovery, key, value):
    discovery.gateway.call("/v3/kv/put", {"key": base64.b64encode(key.encode()).decode(),
                                          "value": base64.b64encode(value.encode()).decode()})


def etcd_env(etcd, **extra):
    return {"FASTRPC_TEST_ETCD": etcd.url, "FASTRPC_TEST_SERVICE": SERVICE, **extra}


def test_register_and_deregister(etcd):
    d = EtcdDiscovery([etcd.url])
    assert d.endpoints(SERVICE) == []
    server = fastrpc.Server()
    server.register(type("Arith", (), {"Sum": lambda self, a, b: a + b})())
    address = server.start("tcp://127.0.0.1:0")
    registration = server.register_with(d, SERVICE, weight=3, zone="eu-west", lat=53.3, lon=-6.2,
                                        metadata={"v": "1"})
    assert d.endpoints(SERVICE) == [Endpoint(address, weight=3, zone="eu-west", lat=53.3, lon=-6.2,
                                             metadata={"v": "1"})]
    assert d.endpoints("other") == []
    with Balancer(discovery=d, service=SERVICE, health_interval=0) as b:
        assert b.call("Arith.Sum", 1, 2) == 3
        changed_at = time.monotonic()
        registration.update(weight=7, zone="eu-north")      # same lease, new value
        assert wait_until(lambda: b.endpoints[0].weight == 7, 2)
        assert time.monotonic() - changed_at < 1.0            # within a second
        assert d.endpoints(SERVICE)[0].zone == "eu-north"
        with pytest.raises(ValueError, match="address"):
            registration.update(address="tcp://127.0.0.1:1")
    server.close()                                          # deregisters at once: no TTL wait
    assert d.endpoints(SERVICE) == []
    reg = d.register(SERVICE, "tcp://127.0.0.1:7001", ttl=30)
    assert registered(d) == ["tcp://127.0.0.1:7001"]
    reg.close()
    assert registered(d) == []
    d.close()


def test_a_killed_server_disappears_when_its_lease_expires(etcd):
    d = EtcdDiscovery([etcd.url])
    proc = ServerProcess(env=etcd_env(etcd, FASTRPC_TEST_TTL="2"))
    try:
        assert registered(d) == [proc.address]
        with Balancer(discovery=d, service=SERVICE, health_interval=0) as b:
            assert b.call("Arith.Pid") == proc.pid
            start = time.monotonic()
            proc.kill()                                     # kill -9: no deregistration
            assert wait_until(lambda: registered(d) == [], 10)
            assert 1.0 <= time.monotonic() - start <= 8.0   # the lease (2 s), not at once
            assert wait_until(lambda: b.endpoints == [], 2)
    finally:
        proc.close()
        d.close()


def test_balancer_follows_registrations_under_load_with_no_failed_call(etcd):
    d = EtcdDiscovery([etcd.url])
    first = ServerProcess(env=etcd_env(etcd))
    others = []
    try:
        with Balancer(discovery=d, service=SERVICE, strategy="p2c", health_interval=0.5) as b:
            assert [e.address for e in b.endpoints] == [first.address]
            pids = set()
            load = Load(lambda i: pids.add(b.call("Arith.Lag", i)[1]), seconds=4.0)
            others = [ServerProcess(env=etcd_env(etcd, FASTRPC_TEST_WEIGHT="2")) for _ in range(2)]
            for o in others:
                seen_at = time.monotonic()
                assert wait_until(lambda: o.address in {e.address for e in b.endpoints}, 2)
                assert time.monotonic() - seen_at < 1.0           # within a second
            assert wait_until(lambda: len(pids) == 3, 5)
            assert {e.weight for e in b.endpoints if e.address != first.address} == {2}
            assert first.terminate() == 0                        # graceful: deregisters, drains
            assert wait_until(lambda: first.address not in {e.address for e in b.endpoints}, 2)
            load.join()
            assert not load.errors, load.errors[:3]              # any failure is a defect here
    finally:
        for p in [first] + others:
            p.close()
        d.close()


def test_etcd_restart_during_load_keeps_the_set_and_resumes(etcd, caplog):
    caplog.set_level(logging.INFO, "fastrpc.discovery")
    d = EtcdDiscovery([etcd.url], timeout=1.0)
    with server_process(env=etcd_env(etcd, FASTRPC_TEST_TTL="10")) as a:
        with Balancer(discovery=d, service=SERVICE, health_interval=0) as b:
            load = Load(lambda i: b.call("Arith.Sum", i, 1), threads=2, seconds=4.0)
            done = load.results
            time.sleep(0.3)
            etcd.stop(kill=True)                                  # etcd gone
            assert wait_until(lambda: "keeping its last 1 endpoints" in caplog.text, 5)
            assert [e.address for e in b.endpoints] == [a.address]   # the last known set
            count = len(done)
            time.sleep(0.5)
            assert len(done) > count                              # calls go on meanwhile
            etcd.start()                                          # same ports, same data
            assert wait_until(lambda: "reachable again" in caplog.text, 10)
            with server_process(env=etcd_env(etcd)) as c:         # a change after the outage
                assert wait_until(lambda: c.address in {e.address for e in b.endpoints}, 5)
                load.join()
            assert not load.errors, load.errors[:3]
    d.close()


def test_malformed_inputs_get_clear_errors(etcd, caplog, tmp_path):
    with pytest.raises(ValueError, match="http://host:port"):
        EtcdDiscovery(["etcd.example:2379"])
    with pytest.raises(ValueError, match="at least one"):
        EtcdDiscovery([])
    with pytest.raises(ValueError, match="prefix"):
        EtcdDiscovery([etcd.url], prefix="/no-slash")
    with pytest.raises(ValueError, match="both username and password"):
        EtcdDiscovery([etcd.url], username="root")
    d = EtcdDiscovery([etcd.url])
    for bad in ("", "a/b"):
        with pytest.raises(ValueError, match="service name"):
            d.endpoints(bad)
    with pytest.raises(EtcdError, match="no etcd endpoint reachable"):
        EtcdDiscovery(["http://127.0.0.1:1"], timeout=0.5).endpoints(SERVICE)
    # a value that is not an endpoint is skipped with a warning, the rest is kept
    caplog.set_level(logging.WARNING, "fastrpc.discovery")
    put_raw(d, f"/fastrpc/services/{SERVICE}/junk", "{not json")
    put_raw(d, f"/fastrpc/services/{SERVICE}/odd", json.dumps({"address": "tcp://127.0.0.1:7009", "x": 1}))
    d.register(SERVICE, "tcp://127.0.0.1:7001")
    assert registered(d) == ["tcp://127.0.0.1:7001"]
    assert "junk holds no valid endpoint" in caplog.text and "odd holds no valid endpoint" in caplog.text
    seen = []
    watch = d.watch(SERVICE, seen.append)
    assert wait_until(lambda: seen, 5) and [e.address for e in seen[-1]] == ["tcp://127.0.0.1:7001"]
    put_raw(d, f"/fastrpc/services/{SERVICE}/junk", "still not json")
    d.register(SERVICE, "tcp://127.0.0.1:7002")
    assert wait_until(lambda: len(seen[-1]) == 2, 5)
    watch.stop()
    # a second endpoint URL that answers is used when the first does not
    assert registered(EtcdDiscovery(["http://127.0.0.1:1", etcd.url])) == ["tcp://127.0.0.1:7001",
                                                                          "tcp://127.0.0.1:7002"]
    d.close()


def test_auth_with_user_and_password(etcd):
    d = EtcdDiscovery([etcd.url])
    gw = d.gateway
    gw.call("/v3/auth/user/add", {"name": "root", "password": "rootpw"})
    gw.call("/v3/auth/user/grant", {"user": "root", "role": "root"})
    gw.call("/v3/auth/enable", {})
    with pytest.raises(EtcdError, match="user name is empty|permission denied|authentication"):
        d.endpoints(SERVICE)                                   # no credentials: refused
    with pytest.raises(EtcdError, match="authentication as 'root' failed"):
        EtcdDiscovery([etcd.url], username="root", password="wrong").endpoints(SERVICE)
    good = EtcdDiscovery([etcd.url], username="root", password="rootpw")
    reg = good.register(SERVICE, "tcp://127.0.0.1:7001", ttl=5)
    assert registered(good) == ["tcp://127.0.0.1:7001"]
    good.gateway.token = "expired-or-invalid"                  # renewed once, transparently
    assert registered(good) == ["tcp://127.0.0.1:7001"]
    reg.close()
    assert registered(good) == []
    good.close()


def test_mutual_tls(tmp_path):
    ca, cert, key = make_certificates(tmp_path)
    with etcd_process(tmp_path / "etcd", tls=(ca, cert, key)) as etcd:
        assert etcd.url.startswith("https://")
        d = EtcdDiscovery([etcd.url], ca_file=ca, cert_file=cert, key_file=key)
        d.register(SERVICE, "tcp://127.0.0.1:7001")
        assert registered(d) == ["tcp://127.0.0.1:7001"]
        with pytest.raises(EtcdError):
            EtcdDiscovery([etcd.url], ca_file=ca, timeout=2).endpoints(SERVICE)   # no client cert
        with pytest.raises(EtcdError):
            EtcdDiscovery([etcd.url], timeout=2).endpoints(SERVICE)               # unknown CA
        d.close()


def test_demo_discovers_its_backends_in_etcd(etcd):
    out = subprocess.run([sys.executable, "-m", "fastrpc.demo", "--seconds", "0.05", "--etcd", etcd.url],
                         capture_output=True, text=True, timeout=120, cwd="/")
    assert out.returncode == 0, out.stderr
    assert "registered in etcd" in out.stdout
    rows = {line.split()[0]: line for line in out.stdout.splitlines() if line.startswith("  ")}
    assert set(fastrpc.STRATEGIES) <= set(rows)
    assert EtcdDiscovery([etcd.url]).endpoints("demo-arith") == []   # the backends deregistered
