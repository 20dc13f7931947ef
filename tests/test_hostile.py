"""A standing adversarial suite: hostile peers against a server process, and
lying servers against every client. Each test asserts bounds (memory,
descriptors, the time before a peer is dropped), not only "no crash".

Bounds are generous multiples of what is measured here (SECURITY.md lists
the measurements), so that a shared, noisy machine does not fail them, while
the faults they guard against (allocation by declared length, peers never
dropped, calls lost or hung) would exceed them by orders of magnitude.
"""
import asyncio
import json
import os
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time

import pytest

import fastrpc
from fastrpc import AsyncBalancer, AsyncClient, Balancer, Client, packb, unpackb
from fastrpc._core import frame as wire
from fastrpc.errors import (ConnectionLostError, DecodeError, FrameTooLargeError, RemoteError,
                            TimeoutError as RPCTimeoutError, UnavailableError)
from support import (LIAR, ServerProcess, make_certificates, open_fds, read_frames, rss_kib, server_process,
                     wait_until)

KIB = 1024
MAX_FRAME = wire.DEFAULT_MAX_FRAME_SIZE


def served(**settings):
    """A server process with these Server() settings."""
    return server_process(env={"FASTRPC_TEST_SERVER": json.dumps(settings)})


def connect(address, timeout=5):
    host, port = address[len("tcp://"):].rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=timeout)


def closed_within(sock, seconds):
    """Seconds until the server closed `sock` (reading and dropping what it
    sends), or None if it is still open after `seconds`."""
    start = time.monotonic()
    sock.settimeout(0.05)
    while time.monotonic() - start < seconds:
        try:
            if not sock.recv(65536):
                return time.monotonic() - start
        except socket.timeout:
            continue
        except OSError:
            return time.monotonic() - start
    return None


def request(seq, method, payload):
    return wire.encode_frame(wire.REQUEST, seq, method, payload)


def settle_rss(pid, seconds=0.5):
    time.sleep(seconds)
    return rss_kib(pid)


# Declared sizes ------------------------------------------------------------------

def test_declared_frame_lengths_cost_only_the_bytes_received():
    # 16 peers each declare the largest legal frame and send 1 byte of it:
    # before, each made the server allocate (and zero) 64 MiB.
    with served() as srv:
        with Client(srv.address) as c:
            c.call("Arith.Sum", 1, 2)
        base = settle_rss(srv.pid)
        socks = [connect(srv.address) for _ in range(16)]
        for s in socks:
            s.sendall(struct.pack(">IBBHQ", MAX_FRAME, wire.REQUEST, 0, 9, 1) + b"A")
        grown = settle_rss(srv.pid) - base
        with Client(srv.address) as c:
            assert c.call("Arith.Sum", 1, 2) == 3
        for s in socks:
            s.close()
    assert grown < 4 * KIB, f"16 declared 64 MiB frames cost {grown} KiB"


def test_declared_frame_length_before_authentication_is_capped():
    secret = "s" * 32
    with served(auth_secret=secret, handshake_timeout=5.0) as srv:
        base = settle_rss(srv.pid)
        socks = [connect(srv.address) for _ in range(16)]
        for s in socks:
            s.sendall(struct.pack(">IBBHQ", MAX_FRAME, wire.REQUEST, 0, 9, 1) + b"A")
        # Above what an unauthenticated peer may send: dropped at once.
        assert all(closed_within(s, 3.0) is not None for s in socks)
        grown = settle_rss(srv.pid) - base
        with Client(srv.address, auth_secret=secret) as c:
            assert c.call("Arith.Sum", 1, 2) == 3
    assert grown < 4 * KIB


# Every length field inside a frame, lying about what follows.
LYING_LENGTHS = {
    "str32": b"\x91\xdb\xff\xff\xff\xf0",
    "bin32": b"\x91\xc6\xff\xff\xff\xf0",
    "array32": b"\x91\xdd\xff\xff\xff\xf0",
    "map32": b"\x91\xdf\xff\xff\xff\xf0",
    "ext32": b"\x91\xc9\xff\xff\xff\xf0\x05",
    "args-array32": b"\xdd\xff\xff\xff\xf0",
    "ndarray-shape": b"\x91\xc9\x00\x00\x00\x16\x01\x01C\x03<f8\x01" + b"\xff" * 8 + b"\x00",
    "ndarray-ndim": b"\x91\xc9\x00\x00\x00\x0e\x01\x01C\x03<f8\xc8\x00\x00\x00\x00\x00",
    "ndarray-empty-huge": (b"\x91\xc9\x00\x00\x00\x26\x01\x01C\x03<f8\x03" + b"\x00" * 8
                           + b"\x00\x00\x01\x00\x00\x00\x00\x00" * 2 + b"\x00"),
}


@pytest.mark.parametrize("field", sorted(LYING_LENGTHS))
def test_lying_length_fields_inside_a_frame_fail_only_their_call(server, field):
    base = rss_kib(server.pid)
    with connect(server.address) as s:
        s.sendall(request(1, "Arith.Echo", LYING_LENGTHS[field]) + request(2, "Arith.Sum", packb([1, 2])))
        by_seq = {f.seq: f for f in read_frames(s, 2)}
    assert by_seq[1].kind == wire.ERROR and unpackb(by_seq[1].payload)[0] == "DecodeError"
    assert by_seq[2].kind == wire.RESPONSE and unpackb(by_seq[2].payload) == 3
    assert rss_kib(server.pid) - base < 4 * KIB


def test_lying_header_fields_drop_only_that_connection(server):
    # method_len and meta_len running past the frame: framing is lost.
    bad_method = struct.pack(">IBBHQ", 12, wire.REQUEST, 0, 60000, 1)
    bad_meta = struct.pack(">IBBHQ", 20, wire.REQUEST, wire.META, 0, 1) + struct.pack(">I", 0xFFFFFFF0) + b"1234"
    for frame in (bad_method, bad_meta):
        with connect(server.address) as s:
            s.sendall(frame)
            assert closed_within(s, 3.0) is not None
    with Client(server.address) as c:
        assert c.call("Arith.Sum", 1, 2) == 3


def test_gob_message_length_lies_cost_only_bytes_received():
    with server_process(env={"FASTRPC_TEST_CODEC": "gob"}) as srv:
        base = settle_rss(srv.pid)
        socks = [connect(srv.address) for _ in range(16)]
        for s in socks:   # gob's uint: 0xFC then 4 bytes, 60 MB declared, 1 byte sent
            s.sendall(b"\xfc" + struct.pack(">I", 60_000_000) + b"\x01")
        grown = settle_rss(srv.pid) - base
        with connect(srv.address) as s:
            s.sendall(b"\xfc" + struct.pack(">I", 0xFFFFFFF0) + b"\x01")   # above max_message
            assert closed_within(s, 3.0) is not None
        for s in socks:
            s.close()
    assert grown < 4 * KIB


# Slowloris ---------------------------------------------------------------------

def trickle(sock, data, every, stop):
    for b in data:
        if stop.is_set():
            return
        try:
            sock.sendall(bytes([b]))
        except OSError:
            return
        time.sleep(every)


@pytest.mark.parametrize("variant", ["silent", "partial-header", "byte-by-byte"])
def test_slowloris_is_dropped_at_idle_timeout(variant):
    # idle_timeout 0.3 s, then GOAWAY and LINGER (1 s): dropped within ~1.5 s.
    with served(idle_timeout=0.3) as srv:
        s = connect(srv.address)
        stop = threading.Event()
        if variant == "partial-header":
            s.sendall(request(1, "Arith.Sum", packb([1, 2]))[:3])
        elif variant == "byte-by-byte":
            frame = request(1, "Arith.Echo", packb(["x" * 1000]))
            threading.Thread(target=trickle, args=(s, frame, 0.05, stop), daemon=True).start()
        took = closed_within(s, 6.0)
        stop.set()
        s.close()
        assert took is not None and took < 4.0, f"{variant} peer: {took}"
        with Client(srv.address) as c:
            assert c.call("Arith.Sum", 1, 2) == 3


def test_silent_peers_without_idle_timeout_are_cheap_and_harmless(server):
    base = settle_rss(server.pid)
    socks = [connect(server.address) for _ in range(300)]
    wait_until(lambda: open_fds(server.pid) >= 300, 5)
    per_connection = (settle_rss(server.pid, 1.0) - base) / len(socks)
    with Client(server.address) as c:
        assert c.call("Arith.Sum", 1, 2) == 3
    assert closed_within(socks[0], 0.3) is None         # held: nothing says they must go
    for s in socks:
        s.close()
    assert per_connection <= 32, f"{per_connection:.1f} KiB per idle connection"


@pytest.mark.parametrize("variant", ["silent", "byte-by-byte", "frame-instead"])
def test_unauthenticated_peers_are_dropped_at_handshake_timeout(variant):
    secret = "s" * 32
    with served(auth_secret=secret, handshake_timeout=0.5) as srv:
        s = connect(srv.address)
        stop = threading.Event()
        if variant == "byte-by-byte":
            threading.Thread(target=trickle, args=(s, b"FRPCAUT1" + b"n" * 32, 0.1, stop), daemon=True).start()
        elif variant == "frame-instead":
            # The start of a normal frame, never completed: before, never closed.
            s.sendall(request(1, "Arith.Sum", packb([1, 2]))[:10])
        took = closed_within(s, 5.0)
        stop.set()
        s.close()
        assert took is not None and took < 4.0, f"{variant}: {took}"
        with Client(srv.address, auth_secret=secret) as c:
            assert c.call("Arith.Sum", 1, 2) == 3


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certificates(tmp_path_factory.mktemp("pki"))


@pytest.mark.parametrize("variant", ["silent", "partial-client-hello"])
def test_tls_handshake_slowloris_is_dropped_at_handshake_timeout(certs, variant):
    ca, cert, key = certs
    env = {"FASTRPC_TEST_SERVER": json.dumps({"handshake_timeout": 0.5}), "FASTRPC_TEST_TLS": f"{cert}:{key}"}
    with server_process(env=env) as srv:
        s = connect(srv.address)
        if variant == "partial-client-hello":
            s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        took = closed_within(s, 5.0)
        s.close()
        assert took is not None and took < 4.0, f"{variant}: {took}"
        with Client(srv.address, ssl=ssl.create_default_context(cafile=ca)) as c:
            assert c.call("Arith.Sum", 1, 2) == 3


# Unread pipelines and paused reading ------------------------------------------

def test_unread_pipeline_costs_bounded_memory(server):
    base = settle_rss(server.pid)
    s = connect(server.address)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(0.5)
    payload = packb(["x" * 1000])
    chunk = b"".join(request(i, "Arith.Echo", payload) for i in range(100))
    sent = 0
    try:
        for _ in range(400):                     # up to 40,000 requests, ~40 MB, no reply read
            s.sendall(chunk)
            sent += 100
    except (socket.timeout, BlockingIOError):
        pass                                      # the server stopped reading: backpressure
    grown = settle_rss(server.pid) - base
    with Client(server.address) as c:
        assert c.call("Arith.Sum", 1, 2) == 3
    s.close()
    assert grown < 16 * KIB, f"{sent} unread requests cost {grown} KiB"


@pytest.mark.parametrize("how", ["reset", "close", "half-close"])
def test_disconnect_at_max_inflight_cancels_the_calls(how):
    with served(max_inflight=8) as srv, Client(srv.address) as observer:
        s = connect(srv.address)
        s.sendall(b"".join(request(i, "Arith.Hang", packb([])) for i in range(1, 41)))
        assert wait_until(lambda: observer.call("Arith.Hanging") == 8, 5)
        if how == "reset":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        elif how == "close":
            s.close()
        else:
            s.shutdown(socket.SHUT_WR)
        start = time.monotonic()
        assert wait_until(lambda: observer.call("Arith.Hanging") == 0, 5), "handlers still running"
        assert time.monotonic() - start < 3.0
        s.close()


# Floods ---------------------------------------------------------------------------

FLOOD = """
import socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
socks = []
for _ in range(n):
    s = socket.socket(); s.setblocking(False)
    try: s.connect((host, port))
    except BlockingIOError: pass
    socks.append(s)
print("up", flush=True)
sys.stdin.read()
"""


def test_connection_flood_against_max_connections():
    n = 2000
    with served(max_connections=100) as srv, Client(srv.address) as probe:
        probe.call("Arith.Sum", 1, 2)
        base, base_fds = settle_rss(srv.pid), open_fds(srv.pid)
        latencies, stop = [], threading.Event()

        def probing():
            while not stop.is_set():
                t = time.perf_counter()
                assert probe.call("Arith.Sum", 1, 2) == 3
                latencies.append(time.perf_counter() - t)
                time.sleep(0.002)

        prober = threading.Thread(target=probing)
        prober.start()
        host, port = srv.address[len("tcp://"):].rsplit(":", 1)
        flood = subprocess.Popen([sys.executable, "-c", FLOOD, host, port, str(n)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert flood.stdout.readline().strip() == "up"
            wait_until(lambda: open_fds(srv.pid) >= base_fds + n * 0.9, 10)
            peak, peak_fds = settle_rss(srv.pid, 1.0), open_fds(srv.pid)
            with pytest.raises(UnavailableError):
                with Client(srv.address) as late:
                    late.call("Arith.Sum", 1, 2)
        finally:
            flood.stdin.close()
            flood.wait(10)
        stop.set()
        prober.join(10)
        assert wait_until(lambda: open_fds(srv.pid) <= base_fds + 2, 15)
        after = settle_rss(srv.pid, 2.5)            # memory is trimmed 1 s after the crowd left
    per_connection = (peak - base) / n
    assert per_connection <= 32, f"{per_connection:.1f} KiB per connection"
    assert peak_fds <= base_fds + n + 5
    assert after - base <= max(8 * KIB, (peak - base) // 4), (base, peak, after)
    assert latencies and max(latencies) < 1.0, f"an established client stalled {max(latencies):.2f} s"


# Lying servers against every client -------------------------------------------------

@pytest.fixture(scope="module")
def liar():
    with ServerProcess(argv=[LIAR]) as proc:
        yield proc


def call_all(kind, address, calls, first=None, **settings):
    """Run `calls` [(method, args)] at once on a client of `kind` (after the
    call `first`, if given, has returned); return each outcome (a value or
    the exception), in order."""
    settings.setdefault("timeout", 1.0)
    if kind in ("client", "balancer"):
        cls = Client if kind == "client" else Balancer
        target = address if kind == "client" else [address]
        with cls(target, **settings) as c:
            if first is not None:
                c.call(first[0], *first[1])
            futures = [_go(c, m, a) for m, a in calls]
            return [f if isinstance(f, Exception) else _outcome(f) for f in futures]

    async def run():
        if kind == "aclient":
            c = AsyncClient(address, **settings)
        else:
            c = AsyncBalancer([address], **settings)
        try:
            if first is not None:
                await c.call(first[0], *first[1])
            return await asyncio.wait_for(
                asyncio.gather(*[c.call(m, *a) for m, a in calls], return_exceptions=True), 10)
        finally:
            await c.close()
    return asyncio.run(run())


def _go(client, method, args):
    try:
        return client.go(method, *args)
    except Exception as exc:            # refused before sending (e.g. FrameTooLargeError)
        return exc


def _outcome(future):
    try:
        return future.result(10)
    except Exception as exc:
        return exc


CLIENTS = ["client", "aclient", "balancer", "abalancer"]
# lie -> what its call must end with; the honest calls around it must succeed
CALL_LIES = {
    "BadNdim": DecodeError, "ZeroDim": DecodeError, "Malformed": DecodeError,
    "BadError": DecodeError, "Deep": DecodeError, "Silent": RPCTimeoutError, "WrongSeq": RPCTimeoutError,
}


@pytest.mark.parametrize("kind", CLIENTS)
@pytest.mark.parametrize("lie", sorted(CALL_LIES))
def test_a_lying_reply_fails_only_its_call(liar, kind, lie):
    calls = [("Lie.Good", (i,)) for i in range(10)] + [(f"Lie.{lie}", ())] + \
        [("Lie.Good", (i,)) for i in range(10, 20)]
    out = call_all(kind, liar.address, calls)
    assert out[:10] + out[11:] == list(range(20))
    assert isinstance(out[10], CALL_LIES[lie]), repr(out[10])


@pytest.mark.parametrize("kind", CLIENTS)
def test_a_reply_above_max_frame_size_fails_alone(liar, kind):
    calls = [("Lie.Good", (1,)), ("Lie.Oversized", (200_000,)), ("Lie.Good", (2,)), ("Lie.Twice", (3,))]
    out = call_all(kind, liar.address, calls, max_frame_size=64 * KIB)
    assert out[0] == 1 and out[2] == 2 and out[3] == 3
    assert isinstance(out[1], FrameTooLargeError) and "max_frame_size=65536" in str(out[1])


@pytest.mark.parametrize("kind", CLIENTS)
@pytest.mark.parametrize("lie", ["Request", "Garbage", "Truncate"])
def test_a_server_breaking_the_framing_fails_its_calls_cleanly(liar, kind, lie):
    calls = [("Lie.Silent", ())] * 5 + [(f"Lie.{lie}", ())]
    # On a connection already up, every call goes out in order before the lie
    # breaks it (a balancer dialing first could send the lie before some of
    # them, then retry those on a new connection where Silent never answers).
    out = call_all(kind, liar.address, calls, first=("Lie.Good", (0,)), timeout=5.0)
    # Every call ends, with a clear error, well before its timeout: the
    # connection was lost, or (a balancer's retry of a call never sent) the
    # endpoint could not be reached again; never a timeout.
    assert all(isinstance(o, (fastrpc.errors.ConnectionError, fastrpc.errors.ProtocolError)) for o in out), out
    assert not any(isinstance(o, fastrpc.errors.TimeoutError) for o in out), out


@pytest.mark.parametrize("kind", CLIENTS)
def test_calls_above_the_announced_limit_fail_locally(kind):
    with ServerProcess(argv=[LIAR, json.dumps({"max_frame_size": 1000})]) as proc:
        calls = [("Lie.Good", ("a",)), ("Lie.Good", ("b" * 5000,)), ("Lie.Good", ("c",))]
        # The first call's reply comes after the hello: the limit is known.
        out = call_all(kind, proc.address, calls, first=("Lie.Good", (0,)))
    assert [out[0], out[2]] == ["a", "c"]
    assert isinstance(out[1], FrameTooLargeError) and "max_frame_size=1000" in str(out[1])


@pytest.mark.parametrize("hello", ["hex:c1", "hex:81ae6d61785f6672616d655f73697a6505", '{"max_frame_size": "big"}',
                                   '{"other": 1}'])
def test_a_garbled_hello_is_ignored(hello):
    with ServerProcess(argv=[LIAR, hello]) as proc:
        for kind in ("client", "aclient"):
            assert call_all(kind, proc.address, [("Lie.Good", ("x" * 5000,))]) == ["x" * 5000]


# Server killed or stopped with 1,000 calls in flight ----------------------------------

def test_kill_9_with_1000_calls_in_flight_ends_every_call(fresh_server):
    with Client(fresh_server.address) as c:
        futures = [c.go("Arith.Slow", 30, i) for i in range(1000)]
        time.sleep(0.3)
        os.kill(fresh_server.pid, signal.SIGKILL)
        start = time.monotonic()
        outcomes = [_outcome(f) for f in futures]
        took = time.monotonic() - start
    assert all(isinstance(o, fastrpc.errors.ConnectionError) for o in outcomes)
    assert took < 5.0


def test_kill_9_with_1000_async_calls_in_flight_ends_every_call(fresh_server):
    async def run():
        async with AsyncClient(fresh_server.address) as c:
            tasks = [asyncio.ensure_future(c.call("Arith.Slow", 30, i)) for i in range(1000)]
            await asyncio.sleep(0.3)
            os.kill(fresh_server.pid, signal.SIGKILL)
            return await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5.0)
    outcomes = asyncio.run(run())
    assert all(isinstance(o, fastrpc.errors.ConnectionError) for o in outcomes)


def test_sigstop_with_1000_calls_in_flight_is_detected_by_heartbeat(fresh_server):
    with Client(fresh_server.address, heartbeat=0.2, heartbeat_timeout=0.6) as c:
        futures = [c.go("Arith.Slow", 30, i) for i in range(1000)]
        time.sleep(0.3)
        os.kill(fresh_server.pid, signal.SIGSTOP)
        try:
            start = time.monotonic()
            outcomes = [_outcome(f) for f in futures]
            took = time.monotonic() - start
        finally:
            os.kill(fresh_server.pid, signal.SIGCONT)
    assert all(isinstance(o, ConnectionLostError) for o in outcomes), {type(o) for o in outcomes}
    assert took < 5.0


def test_sigstop_with_1000_calls_in_flight_times_out_every_call(fresh_server):
    with Client(fresh_server.address, timeout=0.5) as c:
        futures = [c.go("Arith.Slow", 30, i) for i in range(1000)]
        time.sleep(0.1)
        os.kill(fresh_server.pid, signal.SIGSTOP)
        try:
            outcomes = [_outcome(f) for f in futures]
        finally:
            os.kill(fresh_server.pid, signal.SIGCONT)
    assert all(isinstance(o, RPCTimeoutError) for o in outcomes)


def test_kill_9_of_one_node_under_a_balancer_with_1000_calls_in_flight():
    with server_process() as a, server_process() as b:
        with Balancer([a.address, b.address], strategy="round_robin") as lb:
            futures = [lb.go("Arith.Slow", 0.5, i) for i in range(1000)]
            time.sleep(0.1)
            os.kill(a.pid, signal.SIGKILL)
            outcomes = [_outcome(f) for f in futures]
            # Calls the dead node had: a clear error; the others: their result.
            assert all(o == i or isinstance(o, fastrpc.errors.ConnectionError) for i, o in enumerate(outcomes))
            assert sum(o == i for i, o in enumerate(outcomes)) >= 400
            assert lb.call("Arith.Sum", 1, 2) == 3


# Nesting depth -----------------------------------------------------------------------

def test_max_depth_above_the_safe_cap_is_refused():
    for make in (lambda: fastrpc.Server(max_depth=1_000_000), lambda: Client("tcp://127.0.0.1:1", max_depth=5000),
                 lambda: unpackb(b"\xc0", max_depth=2049)):
        with pytest.raises(ValueError, match="max_depth"):
            make()


def test_deep_payload_at_the_largest_max_depth_is_refused_not_fatal():
    with served(max_depth=fastrpc._core.codec.MAX_DEPTH_LIMIT) as srv:
        with connect(srv.address) as s:
            s.sendall(request(1, "Arith.Echo", b"\x91" * 150_000 + b"\xc0"))
            (f,) = read_frames(s, 1)
        assert f.kind == wire.ERROR and unpackb(f.payload)[0] == "DecodeError"
        with Client(srv.address) as c:
            assert c.call("Arith.Sum", 1, 2) == 3


@pytest.mark.parametrize("shape", ["arrays", "maps"])
def test_the_depth_cap_decodes_on_a_1_mib_thread_stack(shape):
    # The proof behind MAX_DEPTH_LIMIT: its deepest payload fits a small stack.
    depth = fastrpc._core.codec.MAX_DEPTH_LIMIT
    data = (b"\x91" * depth if shape == "arrays" else b"\x81\xc0" * depth) + b"\xc0"
    done = []
    old = threading.stack_size(1 << 20)
    try:
        t = threading.Thread(target=lambda: done.append(unpackb(data, max_depth=depth)))
        t.start()
        t.join()
    finally:
        threading.stack_size(old)
    assert len(done) == 1


@pytest.mark.parametrize("argument, limit", [
    ([[[[["deep"]]]]], "max_depth=4"), (list(range(100)), "max_len=50"), ("x" * 300, "max_bytes=200")])
def test_arguments_over_a_decode_limit_fail_as_decode_error(argument, limit):
    # PROTOCOL.md: over-limit arguments are a DecodeError on the wire, naming the limit.
    with served(max_depth=4, max_len=50, max_bytes=200) as srv:
        with Client(srv.address) as c:
            with pytest.raises(RemoteError) as caught:
                c.call("Arith.Echo", argument)
            assert caught.value.type == "DecodeError" and limit.split("=")[0] in caught.value.message
            assert c.call("Arith.Sum", 1, 2) == 3


# A call above the server's frame limit ----------------------------------------------------

def test_oversized_call_fails_alone_naming_the_limit():
    with served(max_frame_size=4096) as srv:
        with Client(srv.address) as c:
            slow = [c.go("Arith.Slow", 0.3, i) for i in range(50)]
            time.sleep(0.05)
            with pytest.raises(FrameTooLargeError, match="max_frame_size=4096"):
                c.call("Arith.Echo", b"x" * 10_000)
            assert [f.result(5) for f in slow] == list(range(50))

        async def run():
            async with AsyncClient(srv.address) as ac:
                await ac.call("Arith.Sum", 1, 2)
                slow = [asyncio.ensure_future(ac.call("Arith.Slow", 0.3, i)) for i in range(50)]
                with pytest.raises(FrameTooLargeError, match="max_frame_size=4096"):
                    await ac.call("Arith.Echo", b"x" * 10_000)
                return await asyncio.gather(*slow)
        assert asyncio.run(run()) == list(range(50))
