"""Scenarios across hosts: network namespaces on a bridge (tests/fleetbed.py), real
server processes and a client in hosts of their own, partitions made by taking a
host's link down. Needs root and iproute2: without them these tests fail."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from fleetbed import Fleet
from support import SERVE

CLIENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fleet_client.py")


def start_server(host, port=7000):
    proc = host.popen([sys.executable, SERVE, host.address(port)], stdout=subprocess.PIPE, text=True)
    address = proc.stdout.readline().strip()
    assert address == host.address(port), f"server in {host.name} did not start: {address!r}"
    return proc



@pytest.mark.parametrize("fault", ["partition", "freeze"])
def test_a_partitioned_or_frozen_server_costs_no_idempotent_call_and_comes_back(fault):
    with Fleet(["client", "s1", "s2", "s3"]) as fleet:
        servers = {name: start_server(fleet[name]) for name in ("s1", "s2", "s3")}
        addresses = [fleet[name].address(7000) for name in servers]
        seconds = 7.0
        client = fleet["client"].popen([sys.executable, CLIENT, str(seconds), *addresses],
                                       stdout=subprocess.PIPE, text=True)
        time.sleep(2.5)                                   # the client is up and calling
        victim = fleet["s2"]
        if fault == "partition":
            victim.down()
        else:
            os.kill(servers["s2"].pid, signal.SIGSTOP)    # the process freezes; TCP stays up, silent
        t_down = time.monotonic()                         # (calls answered before this may end after)
        time.sleep(2.0)
        t_up = time.monotonic()
        if fault == "partition":
            victim.up()
        else:
            os.kill(servers["s2"].pid, signal.SIGCONT)
        out, _ = client.communicate(timeout=60)
        calls = json.loads(out)["calls"]

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
