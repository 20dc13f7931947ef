"""End to end on loopback, client and server in separate processes: fastrpc
next to raw C, Go net/rpc and grpcio, measured in the same run."""
import asyncio
import socket
import statistics
import time

import pytest

import fastrpc
from fastrpc._core.calltable import CallTable
from fastrpc._core.codec import unpackb
from conftest import PLACEMENT, median_rate, run_peer_client
from shapes import awaiting, calls_awaited, expected_awaiting_sum, expected_window_sum, sliding_window

try:
    import uvloop
    new_loop = uvloop.new_event_loop
except ImportError:  # pragma: no cover
    new_loop = asyncio.new_event_loop

SEQ = "sequential Arith.Sum"
STEADY = "128 in flight, steady state (each completion starts the next), one connection"
INFLIGHT = "128 in flight, bursts (issue 128, then wait for all), one connection"
ECHO = "64 KiB echo"
LATENCY = "sequential Arith.Sum latency"
BLOB = b"\x5a" * 65536


def timed(benchmark, report, group, name, fn, rounds, calls, scale=1.0):
    """Time `fn`, which makes `calls` calls, and report the median calls/s times `scale`."""
    benchmark.group = group
    benchmark.pedantic(fn, rounds=rounds, warmup_rounds=1)
    rate = median_rate(benchmark, calls)
    if rate:
        report.add(group, name, rate * scale)
    return rate


@pytest.fixture(scope="module", autouse=True)
def apart():
    """Client and servers on CPUs of their own for this module (see Placement)."""
    with PLACEMENT:
        yield


def sizes(quick):
    # (sequential calls per round, in-flight batches per round, echo calls per round, rounds)
    return (50, 2, 10, 1) if quick else (2000, 60, 400, 7)


def steady_calls(quick):
    """Calls per round of the steady-state shapes."""
    return 512 if quick else 60_000


@pytest.fixture(scope="module")
def client(fastrpc_server):
    with fastrpc.Client(fastrpc_server) as c:
        yield c


@pytest.fixture(scope="module")
def aclient(fastrpc_server):
    loop = new_loop()
    c = loop.run_until_complete(fastrpc.AsyncClient(fastrpc_server).connect())
    yield loop, c
    loop.run_until_complete(c.close())
    loop.close()


@pytest.fixture(scope="module", autouse=True)
def baselines(report):
    report.baseline(SEQ, "raw C", "calls/s")
    report.baseline(STEADY, "Go net/rpc", "calls/s")
    report.baseline(INFLIGHT, "Go net/rpc", "calls/s")
    report.baseline(ECHO, "raw C", "MB/s")
    report.baseline(LATENCY, "raw C (mean)", "µs")


# peers ------------------------------------------------------------------------

def test_raw_c(rawpeer, report, quick):
    binary, host, port = rawpeer
    n_seq, n_batches, n_echo, rounds = sizes(quick)
    seq, _ = run_peer_client([binary, "client", host, port, str(n_seq * 5), "1", "16"], rounds)
    par, _ = run_peer_client([binary, "client", host, port, str(128 * n_batches * 50), "128", "16"], rounds)
    _, mbs = run_peer_client([binary, "client", host, port, str(n_echo * 5), "1", "65536"], rounds)
    assert seq > 0 and par > 0 and mbs > 0
    if not quick:
        report.add(SEQ, "raw C", seq)
        report.add(INFLIGHT, "raw C", par)
        report.add(ECHO, "raw C", mbs)
        report.add(LATENCY, "raw C (mean)", 1e6 / seq)


def test_go_netrpc(gopeer, report, quick):
    binary, address = gopeer
    n_seq, n_batches, n_echo, rounds = sizes(quick)
    seq, _ = run_peer_client([binary, "client", address, str(n_seq * 2), "1", "0"], rounds)
    par, _ = run_peer_client([binary, "client", address, str(128 * n_batches * 5), "128", "0"], rounds)
    _, mbs = run_peer_client([binary, "client", address, str(n_echo), "1", "65536"], rounds)
    assert seq > 0 and par > 0 and mbs > 0
    if not quick:
        report.add(SEQ, "Go net/rpc", seq)
        # Go's client runs 128 goroutines each making one call at a time on
        # one rpc.Client: the steady state; bursts are compared with it too.
        report.add(STEADY, "Go net/rpc", par)
        report.add(INFLIGHT, "Go net/rpc", par)
        report.add(ECHO, "Go net/rpc", mbs)
        report.add(LATENCY, "Go net/rpc (mean)", 1e6 / seq)


def test_grpcio_sequential(benchmark, grpcpeer, report, quick):
    n, _, _, rounds = sizes(quick)
    n = max(1, n // 4)
    timed(benchmark, report, SEQ, "grpcio (sync client, thread-pool server)",
          lambda: [grpcpeer.call_sum(i, 1) for i in range(n)], rounds, n)
    assert grpcpeer.call_sum(2, 3) == 5


def test_grpcio_in_flight(benchmark, grpcpeer, report, quick):
    _, batches, _, rounds = sizes(quick)
    batches = max(1, batches // 10)
    timed(benchmark, report, INFLIGHT, "grpcio (futures)",
          lambda: [grpcpeer.sum_in_flight(128) for _ in range(batches)], rounds, 128 * batches)
    assert grpcpeer.sum_in_flight(3) == [1, 2, 3]


def test_grpcio_echo(benchmark, grpcpeer, report, quick):
    _, _, n, rounds = sizes(quick)
    n = max(1, n // 4)
    timed(benchmark, report, ECHO, "grpcio", lambda: [grpcpeer.call_echo(BLOB) for _ in range(n)],
          rounds, n, len(BLOB) / 1e6)


# fastrpc ------------------------------------------------------------------------

def test_fastrpc_sequential(benchmark, client, report, quick):
    n, _, _, rounds = sizes(quick)

    def run():
        for i in range(n):
            client.call("Arith.Sum", i, 1)

    rate = timed(benchmark, report, SEQ, "fastrpc Client.call", run, rounds, n)
    assert client.call("Arith.Sum", 2, 3) == 5
    if rate:
        latencies = []
        for i in range(5 * n):
            t = time.perf_counter_ns()
            client.call("Arith.Sum", i, 1)
            latencies.append((time.perf_counter_ns() - t) / 1000)
        q = statistics.quantiles(latencies, n=100)
        report.add(LATENCY, "fastrpc Client.call p50", q[49])
        report.add(LATENCY, "fastrpc Client.call p99", q[98])


def test_minimal_python_loop_sequential(fastrpc_server, report, quick):
    """No client engine at all: one pre-encoded request written and its reply
    read on a plain blocking socket, against the same fastrpc server. The
    gap between this row and Client.call is the client's own cost per
    sequential call; the gap between this row and raw C is the server's
    and Python's."""
    n, _, _, _ = sizes(quick)
    table = CallTable(max_frame_size=1 << 20, max_depth=16, max_len=1 << 10, max_bytes=1 << 20)
    table.request("Arith.Sum", (2, 3), object())
    request = bytes(table.take_output())
    host, port = fastrpc_server.split("//", 1)[1].rsplit(":", 1)
    with socket.create_connection((host, int(port))) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reply = _exchange(sock, request, first=True)
        # A RESPONSE frame (kind 2) whose payload is Arith.Sum's result.
        assert reply[4] == 2 and unpackb(reply[-1:]) == 5
        latencies = []
        for _ in range(5 * n):
            t = time.perf_counter_ns()
            got = _exchange(sock, request, len(reply))
            latencies.append((time.perf_counter_ns() - t) / 1000)
            assert got == reply
    if not quick:
        report.add(LATENCY, "minimal Python socket loop, same server, p50", statistics.quantiles(latencies, n=100)[49])
        report.add(SEQ, "minimal Python socket loop, same server", 1e6 / statistics.mean(latencies))


def _exchange(sock, request, size=0, first=False):
    """Write `request`, read one reply frame (`size` bytes; or, `first`, the
    server's hello and then the reply, found by their length prefixes)."""
    sock.sendall(request)
    data = b""
    while True:
        if len(data) >= 4:
            end = 4 + int.from_bytes(data[:4], "big")
            if first and len(data) >= end and data[4] != 2:
                data = data[end:]              # the hello (or another control frame)
                continue
            if len(data) >= (size or end):
                return data
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        data += chunk


def test_fastrpc_async_sequential(benchmark, aclient, report, quick):
    loop, c = aclient
    n, _, _, rounds = sizes(quick)

    async def run():
        for i in range(n):
            await c.call("Arith.Sum", i, 1)

    timed(benchmark, report, SEQ, "fastrpc AsyncClient.call", lambda: loop.run_until_complete(run()),
          rounds, n)


def test_fastrpc_async_go_in_flight(benchmark, aclient, report, quick):
    loop, c = aclient
    _, batches, _, rounds = sizes(quick)

    async def run():
        for _ in range(batches):
            await asyncio.gather(*[c.go("Arith.Sum", i, 1) for i in range(128)])

    timed(benchmark, report, INFLIGHT, "fastrpc AsyncClient.go + gather",
          lambda: loop.run_until_complete(run()), rounds, 128 * batches)


def test_fastrpc_async_call_in_flight(benchmark, aclient, report, quick):
    loop, c = aclient
    _, batches, _, rounds = sizes(quick)

    async def run():
        for _ in range(batches):
            await asyncio.gather(*[c.call("Arith.Sum", i, 1) for i in range(128)])

    timed(benchmark, report, INFLIGHT, "fastrpc AsyncClient.call + gather (a task each)",
          lambda: loop.run_until_complete(run()), rounds, 128 * batches)


def test_fastrpc_go_sliding_window(benchmark, client, report, quick):
    n = steady_calls(quick)
    _, _, _, rounds = sizes(quick)
    timed(benchmark, report, STEADY, "fastrpc Client.go, sliding window of 128",
          lambda: sliding_window(client.go, "Arith.Sum", n), rounds, n)
    assert sliding_window(client.go, "Arith.Sum", 300) == expected_window_sum(300)


def test_fastrpc_async_awaiting(benchmark, aclient, report, quick):
    loop, c = aclient
    n = steady_calls(quick)
    _, _, _, rounds = sizes(quick)
    timed(benchmark, report, STEADY, "fastrpc AsyncClient.call, 128 awaiting coroutines",
          lambda: loop.run_until_complete(awaiting(c.call, "Arith.Sum", n)), rounds, calls_awaited(n))
    assert loop.run_until_complete(awaiting(c.call, "Arith.Sum", 1280)) == expected_awaiting_sum(1280)


def test_fastrpc_go_in_flight(benchmark, client, report, quick):
    _, batches, _, rounds = sizes(quick)

    def run():
        for _ in range(batches):
            for f in [client.go("Arith.Sum", i, 1) for i in range(128)]:
                f.result()

    timed(benchmark, report, INFLIGHT, "fastrpc Client.go", run, rounds, 128 * batches)


def test_fastrpc_map_in_flight(benchmark, client, report, quick):
    _, batches, _, rounds = sizes(quick)
    args = [(i, 1) for i in range(128)]
    timed(benchmark, report, INFLIGHT, "fastrpc Client.map",
          lambda: [client.map("Arith.Sum", args) for _ in range(batches)], rounds, 128 * batches)
    assert client.map("Arith.Sum", args[:3]) == [1, 2, 3]


def test_fastrpc_async_map_in_flight(benchmark, aclient, report, quick):
    loop, c = aclient
    _, batches, _, rounds = sizes(quick)
    args = [(i, 1) for i in range(128)]

    async def run():
        for _ in range(batches):
            await c.map("Arith.Sum", args)

    timed(benchmark, report, INFLIGHT, "fastrpc AsyncClient.map",
          lambda: loop.run_until_complete(run()), rounds, 128 * batches)


def echoes(call, n):
    """`n` echoes of BLOB, each reply dropped once it arrived, as the raw C
    and Go peers do (see test_fastrpc_echo_replies_kept for keeping them)."""
    for _ in range(n):
        call("Arith.Echo", BLOB)


def test_fastrpc_echo(benchmark, client, report, quick):
    _, _, n, rounds = sizes(quick)
    timed(benchmark, report, ECHO, "fastrpc Client.call",
          lambda: echoes(client.call, n), rounds, n, len(BLOB) / 1e6)
    assert client.call("Arith.Echo", BLOB) == BLOB


def test_fastrpc_echo_replies_kept(benchmark, client, report, quick):
    """The Client.call echo keeping a round's replies (a list of n x 64 KiB).
    Each reply is then fresh memory: the C allocator hands the freed heap
    back to the kernel at the end of a round and faults it in again in the
    next (16 page faults per call, twice the system time), a cost of what
    the program keeps rather than of the call."""
    _, _, n, rounds = sizes(quick)
    timed(benchmark, report, ECHO, "fastrpc Client.call, a round's replies kept",
          lambda: [client.call("Arith.Echo", BLOB) for _ in range(n)], rounds, n, len(BLOB) / 1e6)


def test_fastrpc_echo_bytes_views(benchmark, fastrpc_views_server, report, quick):
    """The same echo with bytes_views on both sides: bytes arrive as views of
    the receive buffer, one copy fewer per direction."""
    _, _, n, rounds = sizes(quick)
    with fastrpc.Client(fastrpc_views_server, bytes_views=True) as c:
        timed(benchmark, report, ECHO, "fastrpc Client.call, bytes_views on both sides",
              lambda: echoes(c.call, n), rounds, n, len(BLOB) / 1e6)
        reply = c.call("Arith.Echo", BLOB)
        assert isinstance(reply, memoryview) and reply == BLOB


def test_fastrpc_async_echo(benchmark, aclient, report, quick):
    loop, c = aclient
    _, _, n, rounds = sizes(quick)

    async def run():
        for _ in range(n):
            await c.call("Arith.Echo", BLOB)

    timed(benchmark, report, ECHO, "fastrpc AsyncClient.call", lambda: loop.run_until_complete(run()),
          rounds, n, len(BLOB) / 1e6)
