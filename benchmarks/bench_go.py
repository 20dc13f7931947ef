"""Go clients served by fastrpc vs by Go itself: stock net/rpc (gob) clients
calling a fastrpc server and a Go net/rpc server, measured in the same run.

Rounds alternate between the two servers so drift on a shared machine
falls on both alike; the report gives medians and the ratio to Go.
"""
import os
import statistics
import subprocess
import sys

import pytest

from conftest import HERE, Proc

SEQ = "Go client, gob: sequential Arith.Sum"
INFLIGHT = "Go client, gob: 128 calls in flight, one connection"
ECHO = "Go client, gob: 64 KiB echo"


@pytest.fixture(scope="module")
def fastrpc_gob_server():
    p = Proc([sys.executable, os.path.join(HERE, "servers.py"), "tcp://127.0.0.1:0", "gob"])
    yield p.address.split("://", 1)[1]
    p.stop()


def _rate(argv):
    out = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=300).stdout.split()
    return float(out[1]), float(out[3])


def test_go_client_fastrpc_server_vs_go_server(gopeer, fastrpc_gob_server, report, quick):
    binary, go_address = gopeer
    rounds = 1 if quick else 7
    workloads = [  # (group, calls, in flight, payload size, which figure)
        (SEQ, 50 if quick else 10_000, 1, 0, 0),
        (INFLIGHT, 256 if quick else 128 * 400, 128, 0, 0),
        (ECHO, 5 if quick else 1_000, 1, 65536, 1),
    ]
    for group, calls, inflight, size, figure in workloads:
        go, py = [], []
        for _ in range(rounds):
            go.append(_rate([binary, "client", go_address, str(calls), str(inflight), str(size)])[figure])
            py.append(_rate([binary, "client", fastrpc_gob_server, str(calls), str(inflight), str(size)])[figure])
        assert min(go) > 0 and min(py) > 0
        if not quick:
            report.baseline(group, "Go net/rpc server", "MB/s" if figure else "calls/s")
            report.add(group, "Go net/rpc server", statistics.median(go))
            report.add(group, "fastrpc server (codec=gob)", statistics.median(py))
