"""Scenarios across hosts: network namespaces on a bridge (tests/fleetbed.py), real
server processes and a client in hosts of their own, partitions made by taking a
host's link down. Needs root and iproute2: without them these tests fail."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from fleetbed import Fleet, LinkProxy
from support import SERVE, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT = os.path.join(HERE, "fleet_client.py")
REGISTERED = os.path.join(HERE, "fleet_registered.py")


def start_server(host, port=7000):
    proc = host.popen([sys.executable, SERVE, host.address(port)], stdout=subprocess.PIPE, text=True)
    address = proc.stdout.readline().strip()
    assert address == host.address(port), f"server in {host.name} did not start: {address!r}"
    return proc



def run_client(host, seconds, spec):
    """Start tests/fleet_client.py in `host`; its output is read when it ends."""
    return host.popen([sys.executable, CLIENT, str(seconds), json.dumps(spec)], stdin=subprocess.PIPE,
                      stdout=subprocess.PIPE, text=True)


def stop_client(client):
    """End a client's run now and read what it measured."""
    client.stdin.write("stop\n")
    client.stdin.flush()
    out, _ = client.communicate(timeout=60)
    return json.loads(out)


@pytest.mark.parametrize("fault", ["partition", "freeze", "blackhole"])
def test_a_partitioned_or_frozen_server_costs_no_idempotent_call_and_comes_back(fault):
    """partition: s2's link goes down; freeze: its process stops (TCP stays up);
    blackhole: the link to it (a proxy in the client's host) swallows everything."""
    with Fleet(["client", "s1", "s2", "s3"]) as fleet:
        servers = {name: start_server(fleet[name]) for name in ("s1", "s2", "s3")}
        addresses = [fleet[name].address(7000) for name in servers]
        link = None
        if fault == "blackhole":
            here = fleet["client"]
            link = LinkProxy(f"{here.ip}:8002", f"{fleet['s2'].ip}:7000", host=here)
            addresses[1] = link.address
        client = run_client(fleet["client"], 120.0, {"endpoints": addresses})
        pid = servers["s2"].pid
        cut, heal = {
            "partition": (fleet["s2"].down, fleet["s2"].up),
            "freeze": (lambda: os.kill(pid, signal.SIGSTOP), lambda: os.kill(pid, signal.SIGCONT)),
            "blackhole": (lambda: link.set(blackhole=True), lambda: link.set(blackhole=False)),
        }[fault]
        time.sleep(2.5)                                   # the client is up and calling
        cut()
        t_down = time.monotonic()                         # (calls answered before this may end after)
        time.sleep(2.0)
        t_up = time.monotonic()
        heal()
        time.sleep(2.5)
        calls = stop_client(client)["calls"]

    failed = [c for c in calls if isinstance(c[2], str)]
    assert not failed, failed[:5]                         # idempotent calls fail over: none lost
    by_pid = {}
    for start, duration, pid in calls:
        by_pid.setdefault(pid, []).append((start, duration))
    s2 = servers["s2"].pid                                # `ip netns exec` execs: the server's own pid
    assert set(by_pid) == {proc.pid for proc in servers.values()}
    answered_while_cut_off = [start for start, duration in by_pid[s2] if t_down < start and start + duration < t_up]
    assert not answered_while_cut_off
    # Detection: calls delayed by the dead server (sent to it, then retried) stop.
    delayed = [(start, duration) for start, duration, pid in calls if t_down <= start < t_up and duration > 0.15]
    detected_after = max((start + duration for start, duration in delayed), default=t_down) - t_down
    # Recovery: the healed server answers again.
    back = [start for start, _ in by_pid[s2] if start >= t_up]
    assert back, "the healed server never got a call again"
    recovered_after = min(back) - t_up
    print(f"\n{fault}: {len(calls)} calls, 0 failed, {len(delayed)} delayed, "
          f"detected within {detected_after:.2f} s, back {recovered_after:.2f} s after healing")
    assert detected_after < 2.0                           # well before the partition ends


CITIES = {                     # (lat, lon), and the one-way delay from Paris in seconds (real RTTs / 4)
    "frankfurt": ((50.11, 8.68), 0.0013),
    "virginia": ((38.90, -77.04), 0.010),
    "tokyo": ((35.68, 139.69), 0.028),
}
PARIS = (48.86, 2.35)


def test_geo_sends_calls_to_the_nearest_city_and_moves_to_the_next_when_it_is_cut_off():
    with Fleet(["paris", *CITIES]) as fleet:
        paris = fleet["paris"]
        servers = {city: start_server(fleet[city]) for city in CITIES}
        endpoints = []
        for i, (city, ((lat, lon), delay)) in enumerate(CITIES.items()):
            # The link from Paris to each city: a proxy in Paris with the city's delay.
            link = LinkProxy(f"{paris.ip}:{8001 + i}", f"{fleet[city].ip}:7000", host=paris)
            link.set(delay=delay, jitter=delay / 10)
            endpoints.append({"address": link.address, "lat": lat, "lon": lon})
        seconds = 8.0
        client = run_client(paris, seconds, {"endpoints": endpoints, "strategy": "geo", "origin": PARIS})
        time.sleep(3.0)
        fleet["frankfurt"].down()                         # the nearest city is cut off
        t_down = time.monotonic()
        time.sleep(2.5)
        t_up = time.monotonic()
        fleet["frankfurt"].up()
        out, _ = client.communicate(timeout=60)
        calls = json.loads(out)["calls"]

    city_of = {proc.pid: city for city, proc in servers.items()}
    failed = [c for c in calls if isinstance(c[2], str)]
    assert not failed, failed[:5]
    before = [city_of[pid] for start, duration, pid in calls if start + duration < t_down]
    nearest_share = before.count("frankfurt") / len(before)
    delayed = [(start, duration) for start, duration, pid in calls if t_down <= start < t_up and duration > 0.15]
    shifted_after = max((start + duration for start, duration in delayed), default=t_down) - t_down
    during = [city_of[pid] for start, duration, pid in calls if t_down + shifted_after <= start and start + duration < t_up]
    next_share = during.count("virginia") / len(during)
    back = [start for start, _, pid in calls if start >= t_up and city_of[pid] == "frankfurt"]
    print(f"\ngeo: {len(calls)} calls, 0 failed; nearest tier {nearest_share:.1%} before the partition; "
          f"moved within {shifted_after:.2f} s; next tier {next_share:.1%} while cut off; "
          f"back {min(back) - t_up if back else float('nan'):.2f} s after healing")
    assert nearest_share >= 0.95
    assert shifted_after < 3.0
    assert next_share >= 0.95
    assert back, "the nearest city never got calls again"


def shares(calls, pid, start, end, step=0.5):
    """(window end, share of calls answered by `pid`) for windows of 1 s every `step` s."""
    out = []
    t = start + 1.0
    while t <= end:
        window = [p for s, d, p in calls if t - 1.0 <= s + d < t]
        if window:
            out.append((t, window.count(pid) / len(window)))
        t += step
    return out


def test_p2c_ewma_moves_load_off_a_host_that_slows_down_and_back_when_it_recovers():
    with Fleet(["client", "a", "b", "c"]) as fleet:
        here = fleet["client"]
        servers = {name: start_server(fleet[name]) for name in "abc"}
        links = {}
        for i, name in enumerate("abc"):
            links[name] = LinkProxy(f"{here.ip}:{8001 + i}", f"{fleet[name].ip}:7000", host=here)
            links[name].set(delay=0.002)
        seconds = 14.0
        client = run_client(here, seconds, {"endpoints": [link.address for link in links.values()],
                                            "strategy": "p2c_ewma", "options": {"ewma_tau": 1.0}})
        time.sleep(3.0)
        links["b"].set(delay=0.020)                       # host b is 10x slower
        t_slow = time.monotonic()
        time.sleep(5.0)
        links["b"].set(delay=0.002)
        t_fast = time.monotonic()
        out, _ = client.communicate(timeout=60)
        calls = json.loads(out)["calls"]

    assert not [c for c in calls if isinstance(c[2], str)]
    b = servers["b"].pid
    first = min(s for s, _, _ in calls)
    before = shares(calls, b, first, t_slow)
    slow = shares(calls, b, t_slow, t_fast)
    fast = shares(calls, b, t_fast, max(s + d for s, d, _ in calls))
    dropped = next((t - t_slow for t, share in slow if share < 0.10), None)
    recovered = next((t - t_fast for t, share in fast if share >= 0.2), None)
    print(f"\np2c_ewma: b's share {before[-1][1]:.0%} before; below 10% {dropped} s after slowing "
          f"(lowest {min(s for _, s in slow):.1%}); back above 20% {recovered} s after recovering")
    assert dropped is not None and dropped <= 5.0
    assert recovered is not None


STATUS = """
import json, sys, urllib.request
out = {}
for url in sys.argv[1:]:
    try:
        req = urllib.request.Request(url + "/v3/maintenance/status", data=b"{}", method="POST")
        with urllib.request.urlopen(req, timeout=1) as r:
            out[url] = json.load(r)
    except Exception as exc:
        out[url] = {"error": str(exc)}
print(json.dumps(out))
"""


def etcd_status(host, urls):
    """Each member's /v3/maintenance/status, asked from inside `host`."""
    return json.loads(host.run([sys.executable, "-c", STATUS, *urls], timeout=30).stdout)


def leader_of(host, urls):
    """The url of the member that leads now, or None."""
    for url, status in etcd_status(host, urls).items():
        if "error" not in status and status.get("leader") == status["header"]["member_id"]:
            return url
    return None


def start_etcd_cluster(fleet, names, data_dir):
    peers = ",".join(f"{n}=http://{fleet[n].ip}:2380" for n in names)
    procs = {}
    for n in names:
        ip = fleet[n].ip
        log = open(data_dir / f"{n}.log", "wb")
        procs[n] = fleet[n].popen(
            ["etcd", "--name", n, "--data-dir", str(data_dir / n),
             "--listen-client-urls", f"http://{ip}:2379", "--advertise-client-urls", f"http://{ip}:2379",
             "--listen-peer-urls", f"http://{ip}:2380", "--initial-advertise-peer-urls", f"http://{ip}:2380",
             "--initial-cluster", peers, "--initial-cluster-state", "new",
             "--initial-cluster-token", fleet.tag, "--log-level", "error"],
            stdout=log, stderr=subprocess.STDOUT)
    return procs


def read_line(proc, want, timeout):
    """Wait for `want` on a process's stdout (a line), at most `timeout` s; when it came."""
    import select
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, end - time.monotonic()))
        if ready:
            line = proc.stdout.readline()
            if not line:
                return None
            if line.strip() == want:
                return time.monotonic()
    return None


def test_discovery_survives_a_cut_off_member_the_leaders_death_and_lost_quorum(tmp_path):
    members = ["e1", "e2", "e3"]
    with Fleet([*members, "s1", "s2", "s3", "client"]) as fleet:
        urls = [f"http://{fleet[n].ip}:2379" for n in members]
        etcd = start_etcd_cluster(fleet, members, tmp_path)
        assert wait_until(lambda: leader_of(fleet["client"], urls) is not None, timeout=30), \
            f"the etcd cluster did not elect a leader (logs in {tmp_path})"

        def registered_server(name):
            proc = fleet[name].popen([sys.executable, REGISTERED, fleet[name].address(7000), "arith", *urls],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert proc.stdout.readline().strip() == fleet[name].address(7000)
            return proc

        s1 = registered_server("s1")
        assert read_line(s1, "registered", 20)
        leader = leader_of(fleet["client"], urls)
        watched = next(n for n in members if urls[members.index(n)] != leader)
        # The client's watch starts on `watched` (the first URL it is given), a follower.
        first = urls[members.index(watched)]
        client = run_client(fleet["client"], 120.0, {"etcd": [first] + [u for u in urls if u != first],
                                                     "service": "arith"})
        time.sleep(2.5)

        # 1. The watched member is cut off; the other two keep quorum. A server
        #    registers meanwhile: the balancer must see it while the cut lasts
        #    (its watch leaves the silent member: keep-alive probes, no leader).
        fleet[watched].down()
        t_cut = time.monotonic()
        s2 = registered_server("s2")
        assert read_line(s2, "registered", 20)
        time.sleep(10.0)
        t_healed = time.monotonic()
        fleet[watched].up()
        time.sleep(2.0)
        # (The member back from its cut may call an election: wait for its outcome.)
        assert wait_until(lambda: leader_of(fleet["client"], urls) is not None, timeout=20)

        # 2. The leader dies, then another member is cut off: no quorum. A
        #    server started now registers once quorum returns.
        leader = leader_of(fleet["client"], urls)
        killed = members[urls.index(leader)]
        etcd[killed].kill()
        time.sleep(1.5)
        cut = next(n for n in members if n != killed)
        fleet[cut].down()
        t_no_quorum = time.monotonic()
        s3 = registered_server("s3")
        assert read_line(s3, "registered", 3.0) is None   # it cannot register without quorum
        time.sleep(1.0)
        fleet[cut].up()
        t_quorum = time.monotonic()
        t_registered = read_line(s3, "registered", 30)
        assert t_registered, "the new server never got registered once quorum returned"
        time.sleep(9.0)
        result = stop_client(client)

    calls, seen = result["calls"], result["endpoints"]
    assert not [c for c in calls if isinstance(c[2], str)]
    s1_address, s2_address, s3_address = (fleet[n].address(7000) for n in ("s1", "s2", "s3"))
    assert all(s1_address in addresses for _, addresses in seen)      # s1 never dropped out
    s2_seen = min((t for t, addresses in seen if s2_address in addresses), default=None)
    assert s2_seen is not None and t_cut < s2_seen < t_healed, (t_cut, t_healed, seen)
    s3_seen = min((t for t, addresses in seen if s3_address in addresses), default=None)
    assert s3_seen is not None and s3_seen > t_no_quorum, seen
    pids = {pid for start, _, pid in calls if start > s3_seen}
    assert {s1.pid, s2.pid, s3.pid} <= pids                            # all serve calls afterwards
    print(f"\netcd: {watched} (watched) cut off: a new server seen {s2_seen - t_cut:.2f} s after the cut; "
          f"leader {killed} killed and {cut} cut off (no quorum): a server started meanwhile registered "
          f"{t_registered - t_quorum:.2f} s after quorum returned, seen {s3_seen - t_quorum:.2f} s after; "
          f"{len(calls)} calls, 0 failed")


def serve_workers(host):
    """`fastrpc serve --workers 2` in `host`; returns the supervisor once it serves."""
    command = shutil.which("fastrpc")
    assert command is not None, "the fastrpc console script is not installed (pip install .)"
    env = {**os.environ, "PYTHONPATH": HERE + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = host.popen([command, "--log-level", "WARNING", "serve", "cli_targets:Arith", "--listen",
                       host.address(7000), "--workers", "2", "--grace", "5"],
                      stdout=subprocess.PIPE, text=True, env=env, cwd=HERE)
    first = proc.stdout.readline().split()
    assert first and first[0] == host.address(7000), f"fastrpc serve in {host.name} did not start: {first}"
    return proc


def test_a_rolling_restart_of_every_host_under_load_loses_no_call():
    names = ["s1", "s2", "s3"]
    with Fleet([*names, "client"]) as fleet:
        supervisors = {n: serve_workers(fleet[n]) for n in names}
        client = run_client(fleet["client"], 120.0, {"endpoints": [fleet[n].address(7000) for n in names]})
        time.sleep(2.0)
        restarts = []
        for n in names:                                   # one host at a time
            supervisors[n].send_signal(signal.SIGTERM)    # drain: GOAWAY, calls in flight finish
            assert supervisors[n].wait(30) == 0
            down = time.monotonic()
            supervisors[n] = serve_workers(fleet[n])
            restarts.append((n, down, time.monotonic()))
            time.sleep(1.5)
        # The last host is dialled again after the client's reconnect backoff
        # (it grew while the host was down): give it time to come back.
        time.sleep(5.0)
        calls = stop_client(client)["calls"]

    failed = [c for c in calls if isinstance(c[2], str)]
    assert not failed, failed[:5]
    last_back = restarts[-1][2]
    after = {pid for start, _, pid in calls if start > last_back + 1.0}
    before = {pid for start, _, pid in calls if start < restarts[0][1]}
    assert len(after) >= 3 and not (after & before)       # every host serves again, from new workers
    gaps = ", ".join(f"{n} {up - down:.2f} s" for n, down, up in restarts)
    print(f"\nrolling restart: {len(calls)} calls, 0 failed; each host down for {gaps}; "
          f"{len(after)} new workers answering afterwards")
