"""Deadlines on the wire and backpressure: the server stops work and reading it should not do."""
import asyncio
import socket
import threading
import time

import pytest

import fastrpc
from fastrpc import packb
from fastrpc._core import frame as wire
from fastrpc._core.frame import FrameReader
from fastrpc.errors import DeadlineExceeded, RemoteError, TimeoutError
from support import wait_until


class Work:
    """Handlers that record what ran and what was cancelled."""

    def __init__(self):
        self.ran, self.cancelled = [], []
        self.gate = threading.Event()

    @fastrpc.blocking
    def Block(self, seconds):
        time.sleep(seconds)
        return "blocked"

    @fastrpc.blocking
    def Record(self, value):
        self.ran.append(value)
        return value

    async def Wait(self, seconds):
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self.cancelled.append(seconds)
            raise
        return "waited"


@pytest.fixture
def served():
    work = Work()
    server = work.server = fastrpc.Server(max_workers=1)
    server.register(work)
    address = server.start("tcp://127.0.0.1:0")
    yield work, address
    server.close()


def raw_call(address, frames, count):
    host, port = address[len("tcp://"):].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"".join(frames))
        reader, out = FrameReader(), []
        while len(out) < count:
            data = s.recv(65536)
            if not data:
                break
            out += reader.feed(data)
        return {f.seq: f for f in out}


def test_a_call_queued_past_its_deadline_is_not_started(served):
    work, address = served
    with fastrpc.Client(address) as c:
        busy = c.go("Work.Block", 0.6)                        # the only pool worker, no deadline
        time.sleep(0.05)
        with pytest.raises(TimeoutError):
            c.call("Work.Record", "late", timeout=0.1)       # waits in the pool's queue
        assert busy.result(5) == "blocked"
        assert c.call("Work.Record", "on time", timeout=5) == "on time"
    assert work.ran == ["on time"]                            # "late" never ran


def test_the_server_answers_deadline_exceeded_and_cancels_async_work(served):
    work, address = served
    # A raw client that never sends CANCEL: only the deadline can stop the work.
    replies = raw_call(address, [
        wire.encode_frame(wire.REQUEST, 1, "Work.Wait", packb([5.0]), deadline_ms=100),
        wire.encode_frame(wire.REQUEST, 2, "Work.Wait", packb([0.01]), deadline_ms=2000),
        wire.encode_frame(wire.REQUEST, 3, "Work.Block", packb([0.5])),
        wire.encode_frame(wire.REQUEST, 4, "Work.Record", packb(["late"]), deadline_ms=100),
    ], 4)
    assert replies[2].kind == wire.RESPONSE
    for seq, what in ((1, "cancelled at its deadline"), (4, "was not started")):
        assert replies[seq].kind == wire.ERROR
        kind, message = fastrpc.unpackb(replies[seq].payload)[:2]
        assert kind == "DeadlineExceeded" and what in message
    assert work.cancelled == [5.0] and work.ran == []


def test_deadline_timers_end_with_their_calls(served):
    work, address = served
    with fastrpc.Client(address) as c:
        futures = [c.go("Work.Wait", 0.01, timeout=30) for _ in range(50)]
        assert [f.result(10) for f in futures] == ["waited"] * 50
        assert wait_until(lambda: not work.server.dispatcher.deadline_timers, 2)   # not kept for 30 s each


def test_deadline_exceeded_is_a_remote_timeout_error():
    err = fastrpc.errors.remote_error("DeadlineExceeded", "Work.Wait was cancelled at its deadline")
    assert isinstance(err, DeadlineExceeded) and isinstance(err, RemoteError) and isinstance(err, TimeoutError)
    assert (err.type, err.message) == ("DeadlineExceeded", "Work.Wait was cancelled at its deadline")


def test_async_client_timeout_cancels_the_async_handler(served):
    work, address = served

    async def main():
        async with fastrpc.AsyncClient(address) as ac:
            with pytest.raises(TimeoutError):
                await ac.call("Work.Wait", 3.0, timeout=0.2)

    asyncio.run(main())
    assert wait_until(lambda: work.cancelled == [3.0], 3)


# backpressure ---------------------------------------------------------------------------------------
class Gauge:
    """An async handler that records how many of its calls run at once."""

    def __init__(self):
        self.running = self.peak = 0

    async def Hold(self, seconds):
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(seconds)
        finally:
            self.running -= 1
        return seconds

    def Echo(self, data):
        return data


def test_a_connection_over_max_inflight_is_not_read_until_calls_finish():
    gauge = Gauge()
    server = fastrpc.Server(max_inflight=4)
    server.register(gauge)
    address = server.start("tcp://127.0.0.1:0")
    try:
        with fastrpc.Client(address) as c:
            futures = []
            for i in range(40):                 # one at a time, so each is its own read
                futures.append(c.go("Gauge.Hold", 0.05))
                c.connection().flush()
                time.sleep(0.002)
            assert [f.result(10) for f in futures] == [0.05] * 40
        assert gauge.peak == 4                   # frames past the limit wait in the buffer
    finally:
        server.close()
    with pytest.raises(ValueError):
        fastrpc.Server(max_inflight=0)


def test_a_client_that_never_reads_cannot_grow_server_memory():
    server = fastrpc.Server()
    server.register(Gauge())
    address = server.start("tcp://127.0.0.1:0")
    blob = packb([b"\x5a" * 65536])
    frame = wire.encode_frame(wire.REQUEST, 1, "Gauge.Echo", blob)
    host, port = address[len("tcp://"):].rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.setblocking(False)
            stream = memoryview(frame * 400)
            sent, stalled_since = 0, None
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and sent < len(stream):
                try:
                    sent += s.send(stream[sent:sent + (1 << 20)])   # partial sends resume in place
                    stalled_since = None
                except BlockingIOError:          # the server stopped reading us
                    stalled_since = stalled_since or time.monotonic()
                    if time.monotonic() - stalled_since > 1.0:
                        break
                    time.sleep(0.01)
            conn = next(iter(server.connections))
            buffered = conn.transport.get_write_buffer_size()
            assert sent < len(stream), "the server kept reading a client that never reads"
            assert buffered < 8 * 1024 * 1024, buffered
            with fastrpc.Client(address) as other:  # everyone else is served meanwhile
                assert other.call("Gauge.Echo", "hi", timeout=5) == "hi"
    finally:
        server.close(grace=0.5)


# max_connections -------------------------------------------------------------------------------------
def test_connections_over_the_limit_are_refused_clearly_and_balancers_go_elsewhere():
    from fastrpc.errors import UnavailableError
    full = fastrpc.Server(max_connections=2)
    full.register(Gauge())
    spare = fastrpc.Server()
    spare.register(Gauge())
    full_address, spare_address = full.start("tcp://127.0.0.1:0"), spare.start("tcp://127.0.0.1:0")
    try:
        first, second = fastrpc.Client(full_address), fastrpc.Client(full_address)
        assert first.call("Gauge.Echo", 1) == 1 and second.call("Gauge.Echo", 2) == 2
        with fastrpc.Client(full_address) as third:
            with pytest.raises(UnavailableError, match="too many connections") as info:
                third.call("Gauge.Echo", 3, timeout=5)
            assert isinstance(info.value, fastrpc.ConnectionError)   # not run: safe to resend
        with fastrpc.Balancer([full_address, spare_address], strategy=fastrpc.balancer.strategies.RoundRobin(start=0),
                              health_interval=0) as b:
            assert [b.call("Gauge.Echo", i) for i in range(4)] == [0, 1, 2, 3]
            assert b.stats()[spare_address]["calls"] >= 2 and b.stats()[full_address]["errors"] >= 1
        second.close()
        assert wait_until(lambda: len(full.connections) == 1, 5)
        with fastrpc.Client(full_address) as again:                    # room again
            assert again.call("Gauge.Echo", 4, timeout=5) == 4
        first.close()
    finally:
        full.close(grace=0.5)
        spare.close(grace=0.5)
    with pytest.raises(ValueError):
        fastrpc.Server(max_connections=0)


# idle timeout ------------------------------------------------------------------------------------------
def test_idle_connections_are_closed_and_clients_carry_on():
    server = fastrpc.Server(idle_timeout=0.2)
    server.register(Gauge())
    address = server.start("tcp://127.0.0.1:0")
    try:
        with fastrpc.Client(address) as c:
            assert c.call("Gauge.Echo", 1) == 1
            first = c._conn
            time.sleep(1.6)                                         # idle: GOAWAY, then closed
            assert not server.connections
            # the client notices before sending, and dials again: no call fails
            assert [c.call("Gauge.Echo", i, timeout=5) for i in range(3)] == [0, 1, 2]
            assert c._conn is not first
            second = c._conn
            assert c.call("Gauge.Hold", 0.6, timeout=5) == 0.6      # busy is not idle
            assert c._conn is second

        async def main():
            async with fastrpc.AsyncClient(address) as ac:
                assert await ac.call("Gauge.Echo", 1) == 1
                await asyncio.sleep(1.6)
                assert [await ac.call("Gauge.Echo", i, timeout=5) for i in range(3)] == [0, 1, 2]

        asyncio.run(main())
    finally:
        server.close(grace=0.5)
    with pytest.raises(ValueError):
        fastrpc.Server(idle_timeout=0)
