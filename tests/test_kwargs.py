"""Keyword arguments: call, go, notify and map through every client kind bind
them to the handler's parameters in every handler mode; names that do not
fit are InvalidArguments; a server that does not take them is never sent
them."""
import asyncio
import socket
import struct
import threading

import pytest

import fastrpc
from fastrpc._core import codec
from fastrpc.errors import InvalidArgumentsError, UnsupportedError
from support import read_frames, server_process, wait_until

KINDS = ["client", "aclient", "balancer", "abalancer"]
MODES = ["Put", "PutLater", "PutBlocking"]           # inline, async, blocking handlers


@pytest.fixture(scope="module")
def srv():
    with server_process() as server:
        yield server


def through(kind, address, action):
    """Run `action(caller)` (a coroutine function for the async kinds) on a
    caller of `kind`; return what it returns."""
    if kind == "client":
        with fastrpc.Client(address, timeout=10) as c:
            return action(c)
    if kind == "balancer":
        with fastrpc.Balancer([address], timeout=10, health_interval=0) as b:
            return action(b)

    async def run():
        if kind == "aclient":
            async with fastrpc.AsyncClient(address, timeout=10) as c:
                return await action(c)
        async with fastrpc.AsyncBalancer([address], timeout=10, health_interval=0) as b:
            return await action(b)
    return asyncio.run(run())


def call(kind, address, method, *args, **kwargs):
    if kind in ("balancer", "abalancer") and "key" in kwargs:
        # A balancer's own `key` picks the endpoint: the handler's goes in an Arguments.
        args, kwargs = (fastrpc.Arguments(*args, **kwargs),), {}
    if kind in ("client", "balancer"):
        return through(kind, address, lambda c: c.call(method, *args, **kwargs))

    async def action(c):
        return await c.call(method, *args, **kwargs)
    return through(kind, address, action)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", MODES)
def test_keyword_arguments_bind_to_the_handlers_parameters(srv, kind, mode):
    method = f"KV.{mode}"
    assert call(kind, srv.address, method, key="a", value=1) == {"key": "a", "value": 1, "ttl": 0}
    assert call(kind, srv.address, method, "b", ttl=5) == {"key": "b", "value": None, "ttl": 5}
    assert call(kind, srv.address, method, value=[1, 2], key="c", ttl=1) == {"key": "c", "value": [1, 2], "ttl": 1}
    # Positional calls are unchanged.
    assert call(kind, srv.address, method, "d", 4) == {"key": "d", "value": 4, "ttl": 0}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("args, kwargs, message", [
    ((), {"nope": 1, "key": "a"}, r"KV\.\w+: unexpected keyword argument 'nope' \(it takes: key, ttl, value\)"),
    ((), {"value": 1}, r"KV\.\w+: missing a required argument: 'key'"),
    (("a",), {"key": "b"}, r"KV\.\w+: multiple values for argument 'key'"),
    (("a", 1, 2), {"ttl": 1}, r"KV\.\w+: too many positional arguments"),
])
def test_keyword_arguments_that_do_not_fit_are_invalid_arguments(srv, kind, mode, args, kwargs, message):
    with pytest.raises(InvalidArgumentsError, match=message):
        call(kind, srv.address, f"KV.{mode}", *args, **kwargs)
    # The connection carries on.
    assert call(kind, srv.address, "Arith.Sum", 1, 2) == 3


@pytest.mark.parametrize("kind", ["client", "aclient"])
def test_var_keyword_and_required_keyword_only_parameters(srv, kind):
    assert call(kind, srv.address, "KV.Options", x=1, y=[2]) == {"first": None, "options": {"x": 1, "y": [2]}}
    assert call(kind, srv.address, "KV.Options", 0, first_not=1) == {"first": 0, "options": {"first_not": 1}}
    assert call(kind, srv.address, "KV.Need", token="t") == "t"
    # A required keyword-only parameter is checked without keywords too.
    with pytest.raises(InvalidArgumentsError, match="KV.Need: missing a required argument: 'token'"):
        call(kind, srv.address, "KV.Need")
    with pytest.raises(InvalidArgumentsError, match="too many positional arguments"):
        call(kind, srv.address, "KV.Need", "t")


def test_go_and_notify_carry_keyword_arguments(srv):
    with fastrpc.Client(srv.address, timeout=10) as c:
        futures = [c.go("KV.Put", key=i, ttl=i) for i in range(100)]
        assert [f.result() for f in futures] == [{"key": i, "value": None, "ttl": i} for i in range(100)]
        c.notify("Arith.Record", value="by name")
        assert wait_until(lambda: "by name" in c.call("Arith.Recorded"))
    with fastrpc.Balancer([srv.address], timeout=10, health_interval=0) as b:
        b.notify("Arith.Record", value="balanced by name")
        assert b.go("KV.Put", "k", value=2).result() == {"key": "k", "value": 2, "ttl": 0}
        assert wait_until(lambda: "balanced by name" in b.call("Arith.Recorded"))

    async def run():
        async with fastrpc.AsyncClient(srv.address, timeout=10) as c:
            assert await c.go("KV.PutLater", key="g", ttl=2) == {"key": "g", "value": None, "ttl": 2}
            await c.notify("Arith.Record", value="async by name")
            assert "async by name" in await c.call("Arith.Recorded")
        async with fastrpc.AsyncBalancer([srv.address], timeout=10, health_interval=0) as b:
            assert await b.go("KV.Put", "h", ttl=3) == {"key": "h", "value": None, "ttl": 3}
            await b.notify("Arith.Record", value="async balanced by name")
            for _ in range(100):
                if "async balanced by name" in await b.call("Arith.Recorded"):
                    return
                await asyncio.sleep(0.02)
            raise AssertionError("the keyword notification never arrived")
    asyncio.run(run())


ITEMS = [{"key": "a", "value": 1}, ("b", 2), fastrpc.Arguments("c", ttl=3), fastrpc.Arguments(key="d"),
         {"key": "e", "nope": 1}]
EXPECTED = [{"key": "a", "value": 1, "ttl": 0}, {"key": "b", "value": 2, "ttl": 0},
            {"key": "c", "value": None, "ttl": 3}, {"key": "d", "value": None, "ttl": 0}]


@pytest.mark.parametrize("kind", KINDS)
def test_map_items_may_be_mappings_and_arguments(srv, kind):
    items = ITEMS * 20
    if kind in ("client", "balancer"):
        results = through(kind, srv.address, lambda c: c.map("KV.Put", items, return_exceptions=True))
    else:
        async def action(c):
            return await c.map("KV.Put", items, return_exceptions=True)
        results = through(kind, srv.address, action)
    for i in range(0, len(items), len(ITEMS)):
        assert results[i:i + 4] == EXPECTED
        assert isinstance(results[i + 4], InvalidArgumentsError) and "'nope'" in str(results[i + 4])


@pytest.mark.parametrize("kind", KINDS)
def test_keywords_named_like_the_calls_own_options_go_in_an_arguments(srv, kind):
    wrapped = fastrpc.Arguments(key="k", ttl=1)
    expected = {"key": "k", "value": None, "ttl": 1}
    if kind in ("client", "aclient"):
        assert call(kind, srv.address, "KV.Put", wrapped, timeout=5) == expected
        assert call(kind, srv.address, "KV.Options", fastrpc.Arguments(timeout=3)) == \
            {"first": None, "options": {"timeout": 3}}
        return
    if kind == "balancer":
        with fastrpc.Balancer([srv.address], strategy="consistent_hash", timeout=10,
                              health_interval=0) as b:
            assert b.call("KV.Put", wrapped, key="route") == expected
            assert b.go("KV.Put", wrapped, key="route", idempotent=True).result() == expected
        return

    async def run():
        async with fastrpc.AsyncBalancer([srv.address], strategy="consistent_hash", timeout=10,
                                         health_interval=0) as b:
            assert await b.call("KV.Put", wrapped, key="route") == expected
    asyncio.run(run())


def test_arguments_value():
    a = fastrpc.Arguments(1, 2, key="k")
    assert a.args == (1, 2) and a.kwargs == {"key": "k"}
    assert a == fastrpc.Arguments(1, 2, key="k") and a != fastrpc.Arguments(1, 2)
    assert repr(a) == "Arguments(1, 2, key='k')"


def test_keyword_names_must_be_strings_on_the_wire(srv):
    # Only a raw peer can send non-str names: it gets InvalidArguments.
    host, port = srv.address[len("tcp://"):].rsplit(":", 1)
    with socket.create_connection((host, int(port))) as sock:
        method = b"KV.Put"
        for seq, payload in enumerate([codec.packb([]) + codec.packb({1: "x"}),
                                       codec.packb(["a"]) + codec.packb([1]),
                                       codec.packb(["a"]) + codec.packb({"ttl": 1}) + b"\xc0"], 1):
            body = struct.pack(">BBHQ", 1, 0, len(method), seq) + method + payload
            sock.sendall(struct.pack(">I", len(body)) + body)
        errors = [codec.unpackb(f.payload) for f in read_frames(sock, 3)]
    assert errors[0][0] == "InvalidArguments" and "keyword argument names are str" in errors[0][1]
    assert errors[1][0] == "DecodeError" and "keyword arguments are a map, not list" in errors[1][1]
    assert errors[2][0] == "DecodeError" and "trailing bytes" in errors[2][1]


class OldServer:
    """A server that predates keyword arguments: its hello has no "kwargs",
    and it answers every REQUEST with the positional arguments it decoded.
    Frames it receives are kept, to show what a client sent."""

    def __init__(self, hello=True):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.address = "tcp://127.0.0.1:%d" % self.sock.getsockname()[1]
        self.received = []
        self.hello = hello
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        conn, _ = self.sock.accept()
        with conn:
            if self.hello:
                payload = codec.packb({"max_frame_size": 1 << 20})
                conn.sendall(struct.pack(">IBBHQ", 12 + len(payload), 6, 0, 0, 0) + payload)
            buf = b""
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
                while len(buf) >= 4 and len(buf) >= 4 + struct.unpack(">I", buf[:4])[0]:
                    n = struct.unpack(">I", buf[:4])[0]
                    frame, buf = buf[4:4 + n], buf[4 + n:]
                    kind, flags, mlen, seq = struct.unpack(">BBHQ", frame[:12])
                    self.received.append((kind, frame[12:12 + mlen]))
                    at = 12 + mlen + (4 if flags & 1 else 0)       # after the DEADLINE extension
                    if kind == 1:
                        reply = codec.packb(codec.unpackb(frame[at:]))
                        conn.sendall(struct.pack(">IBBHQ", 12 + len(reply), 2, 0, 0, seq) + reply)

    def close(self):
        self.sock.close()


def test_a_server_without_keyword_arguments_is_never_sent_them():
    old = OldServer()
    try:
        with fastrpc.Client(old.address, timeout=5) as c:
            assert c.call("Old.Echo", 1, 2) == [1, 2]        # the hello has arrived with this reply
            with pytest.raises(UnsupportedError, match="Old.Echo: the server does not take keyword arguments"):
                c.call("Old.Echo", 1, b=2)
            with pytest.raises(UnsupportedError):
                c.map("Old.Echo", [{"a": 1}])
            assert c.call("Old.Echo", 3) == [3]              # nothing half-sent
            # Positional calls, and calls with an empty keyword map, still go.
            assert c.map("Old.Echo", [(1,), fastrpc.Arguments(2)]) == [[1], [2]]
        assert [name for kind, name in old.received if kind == 1] == [b"Old.Echo"] * 4
    finally:
        old.close()
