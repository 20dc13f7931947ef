"""Streams on loopback, client and server in separate processes, each figure
next to its baseline in the same run:

- small items (Arith-sized ints) streamed, against the same number of
  results fetched with pipelined unary calls (Client.map);
- 1 MiB ndarray chunks streamed, against the raw C pair echoing 1 MiB;
- unary latency (p50, p99) on a connection while a stream runs on it at
  full speed, against the same calls on the idle connection.
"""
import asyncio
import statistics
import threading
import time

import numpy as np
import pytest

import fastrpc
from conftest import Proc, run_peer_client
from bench_rpc import new_loop, timed

SMALL = "small items: a server stream vs the same results by pipelined unary calls"
CHUNKS = "1 MiB ndarray chunks: a server stream vs the raw C pair's 1 MiB echo"
P99 = "unary latency while a stream saturates the same connection"
CPU = "CPU per item, small items: a server stream vs pipelined unary calls (Client.map)"
MIB = 1 << 20


def items_per_round(quick):
    return 1000 if quick else 200_000


def chunks_per_round(quick):
    return 4 if quick else 400


@pytest.fixture(scope="module")
def client(fastrpc_server):
    with fastrpc.Client(fastrpc_server) as c:
        yield c


@pytest.fixture(scope="module", autouse=True)
def baselines(report):
    report.baseline(SMALL, "Client.map Arith.Sum (window 1024)", "items/s")
    report.baseline(CHUNKS, "raw C echo, 1 MiB", "MB/s")
    report.baseline(P99, "AsyncClient: p99, idle connection", "µs")
    report.baseline(CPU, "Client.map: client", "µs/item")


def test_map_baseline(benchmark, client, report, quick):
    n = items_per_round(quick)
    args = [(i, 0) for i in range(n)]
    timed(benchmark, report, SMALL, "Client.map Arith.Sum (window 1024)",
          lambda: client.map("Arith.Sum", args), 1 if quick else 5, n)
    assert client.map("Arith.Sum", args[:10]) == list(range(10))


def test_async_map_baseline(benchmark, fastrpc_server, report, quick):
    n = items_per_round(quick)
    args = [(i, 0) for i in range(n)]
    loop = new_loop()
    c = loop.run_until_complete(fastrpc.AsyncClient(fastrpc_server).connect())
    try:
        timed(benchmark, report, SMALL, "AsyncClient.map Arith.Sum (window 1024)",
              lambda: loop.run_until_complete(c.map("Arith.Sum", args)), 1 if quick else 5, n)
    finally:
        loop.run_until_complete(c.close())
        loop.close()


def test_stream_small_items(benchmark, client, report, quick):
    n = items_per_round(quick)
    timed(benchmark, report, SMALL, "Client.stream",
          lambda: sum(1 for _ in client.stream("Streams.Items", n)), 1 if quick else 5, n)
    assert sum(client.stream("Streams.Items", 100)) == sum(range(100))


def test_async_stream_small_items(benchmark, fastrpc_server, report, quick):
    n = items_per_round(quick)
    loop = new_loop()
    c = loop.run_until_complete(fastrpc.AsyncClient(fastrpc_server).connect())

    async def run():
        count = 0
        async for _ in c.stream("Streams.Items", n):
            count += 1
        assert count == n

    try:
        timed(benchmark, report, SMALL, "AsyncClient.stream", lambda: loop.run_until_complete(run()),
              1 if quick else 5, n)
    finally:
        loop.run_until_complete(c.close())
        loop.close()


def test_balanced_stream_small_items(benchmark, fastrpc_server, report, quick):
    # Four servers behind the balancer; each stream is pinned to one of them.
    import os
    import sys
    here = os.path.dirname(os.path.abspath(__file__))
    others = [Proc([sys.executable, os.path.join(here, "servers.py"), "tcp://127.0.0.1:0"]) for _ in range(3)]
    n = items_per_round(quick)
    try:
        with fastrpc.Balancer([fastrpc_server] + [p.address for p in others], strategy="round_robin") as b:
            timed(benchmark, report, SMALL, "Balancer.stream (4 servers, round robin)",
                  lambda: sum(1 for _ in b.stream("Streams.Items", n)), 1 if quick else 5, n)
    finally:
        for p in others:
            p.stop()


def test_raw_c_echo_1mib(rawpeer, report, quick):
    binary, host, port = rawpeer
    _, mbs = run_peer_client([binary, "client", host, port, str(chunks_per_round(quick)), "1", str(MIB)],
                             1 if quick else 5)
    assert mbs > 0
    if not quick:
        report.add(CHUNKS, "raw C echo, 1 MiB", mbs)


def test_stream_chunks(benchmark, client, report, quick):
    n = chunks_per_round(quick)

    def run():
        total = 0
        for chunk in client.stream("Streams.Chunks", n, MIB):
            total += chunk.nbytes
        assert total == n * MIB

    timed(benchmark, report, CHUNKS, "Client.stream", run, 1 if quick else 5, n, MIB / 1e6)
    chunk = next(iter(client.stream("Streams.Chunks", 1, MIB)))
    assert isinstance(chunk, np.ndarray) and chunk.nbytes == MIB and chunk[0] == 1.0


def test_async_stream_chunks(benchmark, fastrpc_server, report, quick):
    n = chunks_per_round(quick)
    loop = new_loop()
    c = loop.run_until_complete(fastrpc.AsyncClient(fastrpc_server).connect())

    async def run():
        total = 0
        async for chunk in c.stream("Streams.Chunks", n, MIB):
            total += chunk.nbytes
        assert total == n * MIB

    try:
        timed(benchmark, report, CHUNKS, "AsyncClient.stream", lambda: loop.run_until_complete(run()),
              1 if quick else 5, n, MIB / 1e6)
    finally:
        loop.run_until_complete(c.close())
        loop.close()


def _quantile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def _report_latency(report, client_kind, idle, busy, streamed):
    report.add(P99, f"{client_kind}: p99, idle connection", 1e6 * statistics.median(p99 for _, p99 in idle))
    report.add(P99, f"{client_kind}: p99, stream running on it", 1e6 * statistics.median(p99 for _, p99 in busy))
    report.add(P99, f"{client_kind}: p50, idle connection", 1e6 * statistics.median(p50 for p50, _ in idle))
    report.add(P99, f"{client_kind}: p50, stream running on it", 1e6 * statistics.median(p50 for p50, _ in busy))
    report.add(P99, f"{client_kind}: stream items/s meanwhile", statistics.median(streamed))


def _latencies(client, calls):
    out = []
    for i in range(calls):
        t = time.perf_counter()
        assert client.call("Arith.Sum", i, 1) == i + 1
        out.append(time.perf_counter() - t)
    return out


def test_unary_latency_under_a_stream_async(fastrpc_server, report, quick):
    """p50/p99 of sequential calls by one task, first on an idle connection,
    then while another task drains a stream on the same connection at full
    speed. Medians over rounds."""
    calls = 200 if quick else 3000
    rounds = 1 if quick else 5
    idle, busy, streamed = [], [], []
    loop = new_loop()

    async def latencies(c):
        out = []
        for i in range(calls):
            t = time.perf_counter()
            assert await c.call("Arith.Sum", i, 1) == i + 1
            out.append(time.perf_counter() - t)
        return out

    async def main():
        c = await fastrpc.AsyncClient(fastrpc_server).connect()
        try:
            await latencies(c)                          # warm up
            for _ in range(rounds):
                lat = await latencies(c)
                idle.append((_quantile(lat, 0.5), _quantile(lat, 0.99)))
                got = [0]

                async def drain():
                    async for _ in c.stream("Streams.Items", 10**9):
                        got[0] += 1
                task = asyncio.ensure_future(drain())
                while got[0] < 10_000:
                    await asyncio.sleep(0.001)
                before, started = got[0], time.perf_counter()
                lat = await latencies(c)
                streamed.append((got[0] - before) / (time.perf_counter() - started))
                task.cancel()
                busy.append((_quantile(lat, 0.5), _quantile(lat, 0.99)))
        finally:
            await c.close()

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    assert all(r > 0 for r in streamed)
    if not quick:
        _report_latency(report, "AsyncClient", idle, busy, streamed)


def test_unary_latency_under_a_stream(fastrpc_server, report, quick):
    """The same with a blocking Client: one thread calls while another drains
    the stream. (Two threads of one process take turns at the GIL, and on
    a 2-core machine the server and the consumer keep both cores busy.)"""
    calls = 200 if quick else 3000
    rounds = 1 if quick else 5
    idle, busy, streamed = [], [], []
    with fastrpc.Client(fastrpc_server) as c:
        _latencies(c, 200)                              # warm up
        for _ in range(rounds):
            lat = _latencies(c, calls)
            idle.append((_quantile(lat, 0.5), _quantile(lat, 0.99)))
            stop = threading.Event()
            got = [0]

            def drain():
                s = c.stream("Streams.Items", 10**9)
                for _ in s:
                    got[0] += 1
                    if stop.is_set():
                        break
                s.cancel()

            t = threading.Thread(target=drain)
            t.start()
            while got[0] < 10_000 and t.is_alive():     # the stream is at full speed first
                time.sleep(0.001)
            started = time.perf_counter()
            before = got[0]
            lat = _latencies(c, calls)
            rate = (got[0] - before) / (time.perf_counter() - started)
            stop.set()
            t.join(30)
            busy.append((_quantile(lat, 0.5), _quantile(lat, 0.99)))
            streamed.append(rate)
    assert all(r > 0 for r in streamed)
    if not quick:
        _report_latency(report, "Client", idle, busy, streamed)


def _cpu_seconds(pid):
    """User + system CPU time of process `pid` so far (Linux)."""
    import os
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_cpu_per_item(report, quick):
    """Where a small item's time goes, each side measured in its own process:
    a server process of this test's own (to read its CPU time) and this client."""
    import os
    import sys
    here = os.path.dirname(os.path.abspath(__file__))
    server = Proc([sys.executable, os.path.join(here, "servers.py"), "tcp://127.0.0.1:0"])
    n = 2000 if quick else 300_000
    shapes = {
        "Client.map": lambda c: len(c.map("Arith.Sum", [(i, 0) for i in range(n)])),
        "Client.stream": lambda c: sum(1 for _ in c.stream("Streams.Items", n)),
    }
    try:
        with fastrpc.Client(server.address) as c:
            for name, run_shape in shapes.items():
                assert run_shape(c) == n                 # warm up, and check
                client_cpu, server_cpu = [], []
                for _ in range(1 if quick else 3):
                    c0, s0 = time.process_time(), _cpu_seconds(server.proc.pid)
                    run_shape(c)
                    client_cpu.append((time.process_time() - c0) / n)
                    server_cpu.append((_cpu_seconds(server.proc.pid) - s0) / n)
                if not quick:
                    report.add(CPU, f"{name}: client", 1e6 * statistics.median(client_cpu))
                    report.add(CPU, f"{name}: server", 1e6 * statistics.median(server_cpu))
    finally:
        server.stop()
