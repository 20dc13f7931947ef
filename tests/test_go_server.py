"""The server side of the Go codecs, driven by fastrpc's own GoClient: handler
kinds, backpressure, graceful close and limits (no Go toolchain needed)."""
import asyncio
import threading
import time
from dataclasses import dataclass

import pytest

import fastrpc
from support import wait_until


@dataclass
class Pair:
    A: int = 0
    B: int = 0


class Kinds:
    def __init__(self):
        self.gate = threading.Event()

    def Inline(self, p: Pair) -> int:
        return p.A * p.B

    async def Async(self, a, b):
        await asyncio.sleep(0.01)
        return a - b

    @fastrpc.blocking
    def Blocking(self, p: Pair) -> Pair:
        time.sleep(0.01)
        return Pair(p.B, p.A)

    @fastrpc.blocking
    def Held(self, data: bytes) -> int:
        self.gate.wait(30)
        return len(data)

    async def Slow(self, seconds):
        await asyncio.sleep(seconds)
        return "done"

    def Nothing(self) -> None:
        return None

    def Echo(self, data: bytes) -> bytes:
        return data

    def Fails(self, p):
        raise KeyError()


@pytest.fixture(params=["gob", "jsonrpc"])
def codec(request):
    return request.param


def serve(codec, **settings):
    kinds = Kinds()
    server = fastrpc.Server(**settings)
    server.register(kinds)
    return server, kinds, server.start("tcp://127.0.0.1:0", codec=codec)


def test_every_handler_kind_serves_go_callers(codec):
    server, kinds, address = serve(codec)
    try:
        with fastrpc.Client(address, codec=codec) as c:
            assert c.call("Kinds.Inline", Pair(6, 7)) == 42
            assert c.call("Kinds.Async", Pair(9, 4)) == 5
            assert c.call("Kinds.Blocking", Pair(1, 2), reply_type=Pair) == Pair(2, 1)
            assert c.call("Kinds.Nothing", Pair()) == {}          # None is never sent as nil
            with pytest.raises(fastrpc.RemoteError) as err:
                c.call("Kinds.Fails", Pair())
            assert err.value.message == "KeyError"                 # an empty message: the type's name
            # Fields meet parameters by name: order does not matter, extra ones are ignored.
            assert c.call("Kinds.Async", {"C": 3, "B": 4, "A": 9}) == 5
            futures = [c.go("Kinds.Async", Pair(i, 1)) for i in range(200)]
            assert [f.result(10) for f in futures] == [i - 1 for i in range(200)]
    finally:
        server.close()


def test_backpressure_stops_reading_a_go_client_over_max_inflight(codec):
    server, kinds, address = serve(codec, max_inflight=2)
    try:
        with fastrpc.Client(address, codec=codec) as c:
            payload = b"x" * 100_000
            futures = [c.go("Kinds.Held", payload) for _ in range(40)]
            time.sleep(0.5)
            # reading paused: most calls are still in socket buffers, not running
            assert 2 <= server.inflight < 10
            kinds.gate.set()
            assert [f.result(30) for f in futures] == [100_000] * 40
    finally:
        kinds.gate.set()
        server.close()


def test_graceful_close_lets_a_go_call_in_flight_finish(codec):
    server, kinds, address = serve(codec)
    c = fastrpc.Client(address, codec=codec)
    try:
        future = c.go("Kinds.Slow", 0.3)
        wait_until(lambda: server.inflight == 1)
        closer = threading.Thread(target=server.close, kwargs={"grace": 5})
        closer.start()
        assert future.result(5) == "done"
        closer.join(10)
        assert not closer.is_alive()
        with pytest.raises(fastrpc.ConnectionError):
            c.call("Kinds.Inline", Pair(1, 1), timeout=5)
    finally:
        c.close()
        server.close()


def test_max_connections_closes_extra_go_connections(codec):
    server, kinds, address = serve(codec, max_connections=1)
    try:
        with fastrpc.Client(address, codec=codec) as first:
            assert first.call("Kinds.Inline", Pair(2, 2)) == 4
            second = fastrpc.Client(address, codec=codec)
            with pytest.raises(fastrpc.ConnectionError):
                second.call("Kinds.Inline", Pair(2, 2), timeout=5)
            second.close()
            assert first.call("Kinds.Inline", Pair(3, 3)) == 9
    finally:
        server.close()


def test_oversized_go_message_closes_that_connection_only(codec):
    server, kinds, address = serve(codec, max_frame_size=10_000)
    try:
        with fastrpc.Client(address, codec=codec) as big, fastrpc.Client(address, codec=codec) as other:
            with pytest.raises(fastrpc.ConnectionError):
                big.call("Kinds.Held", b"y" * 50_000, timeout=5)
            assert other.call("Kinds.Inline", Pair(5, 5)) == 25
    finally:
        server.close()


def test_listener_arguments_are_checked():
    server = fastrpc.Server()
    try:
        with pytest.raises(ValueError, match="unknown codec"):
            server.start("tcp://127.0.0.1:0", codec="xml")
        with pytest.raises(ValueError, match="speaks gob"):
            server.start("http://127.0.0.1:0", codec="jsonrpc")
        with pytest.raises(ValueError, match="unknown codec"):
            fastrpc.GoClient("127.0.0.1:1", codec="xml")
        with pytest.raises(ValueError, match="gob only"):
            fastrpc.GoClient("127.0.0.1:1", codec="jsonrpc", http=True)
    finally:
        server.close()


def test_a_go_client_that_never_reads_cannot_grow_server_memory():
    # Replies go out as calls finish; a peer that never reads them makes the
    # server stop reading its calls, as on fastrpc connections.
    import socket
    from fastrpc.go._gob import GobEncoder
    from fastrpc.go.gobcodec import REQUEST
    from fastrpc.go.types import go_type
    server, kinds, address = serve("gob")
    enc = GobEncoder()
    for seq in range(300):
        enc.encode({"ServiceMethod": "Kinds.Echo", "Seq": seq}, REQUEST)
        enc.encode(b"\x5a" * 65536, go_type(bytes))
    stream = memoryview(enc.take())
    host, port = address[len("tcp://"):].rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.setblocking(False)
            sent, stalled_since = 0, None
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and sent < len(stream):
                try:
                    sent += s.send(stream[sent:sent + (1 << 20)])
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
            with fastrpc.Client(address, codec="gob") as other:     # everyone else is served
                assert other.call("Kinds.Inline", Pair(2, 3), timeout=5) == 6
    finally:
        server.close(grace=0.5)


def test_struct_fields_meet_parameters_by_name_as_go_decoders_do():
    # Exact name, else case-insensitive (encoding/json), else ignoring
    # underscores; unknown fields ignored; missing ones take the parameter's
    # default, else its annotated type's zero value, else None.
    from typing import List
    from fastrpc.go.server import GoSignature
    from fastrpc.server.handlers import build_handler

    def handler(a: int, user_id: int, tags: List[str], note, label: str = "none", ratio: float = 0.0):
        return a, user_id, tags, note, label, ratio

    signature = GoSignature(build_handler(handler, "T.Handler"))
    assert signature.arguments(({"UserID": 7, "A": 1, "Tags": ["x"], "Note": "n", "Label": "l", "Ratio": 0.5},)) \
        == (1, 7, ["x"], "n", "l", 0.5)
    assert signature.arguments(({"user_id": 3, "a": 2, "Extra": "ignored"},)) == (2, 3, [], None, "none", 0.0)
    assert signature.arguments(({"A": 1, "a": 2},)) == (2, 0, [], None, "none", 0.0)    # the exact name wins
