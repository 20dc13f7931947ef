"""Go interop against the real Go toolchain: stock net/rpc programs built with `go build`.

Both directions for gob over TCP, gob over HTTP CONNECT and jsonrpc; golden
gob bytes written by Go checked against fastrpc's encoder. Without Go these
tests fail (build_go_program raises), they never skip.
"""
import asyncio
import concurrent.futures
import http.client
import json
import socket
import subprocess
import time
from typing import Dict, List

import pytest

import fastrpc
from fastrpc.errors import ConnectError, MethodNotFoundError, RemoteError
from gointerop import (Args, Arith, Echo, GoServer, Inner, Opaque, Point, Record, Tree, build_go_program,
                       run_go_client, sample_record)

MODES = ["gob", "http", "jsonrpc"]
# every scenario the Go client runs (tests/go/main.go, client())
SCENARIOS = {"sum", "sum_negative", "error", "error_is_server_error", "unknown_method", "unknown_service",
             "after_errors", "record", "record_zero", "int_0", "int_-1", "int_-9223372036854775808",
             "int_9223372036854775807", "int_9007199254740992", "uint_0", "uint_127", "uint_128",
             "uint_18446744073709551615", "string_0", "string_5", "string_15", "string_100000", "bytes",
             "floats", "map", "concurrent_1000",
             "fields_by_name", "extra_field_ignored", "missing_field_is_zero", "zero_field_left_out",
             "nil_collections", "collections", "negative_zero"}


@pytest.fixture(scope="module")
def go_binary(tmp_path_factory):
    return build_go_program(str(tmp_path_factory.mktemp("go")))


@pytest.fixture(scope="module")
def py_server():
    """A fastrpc server with the Go program's services on all three Go listeners."""
    server = fastrpc.Server()
    server.register(Arith())
    server.register(Echo())
    addresses = {"gob": server.start("tcp://127.0.0.1:0", codec="gob"),
                 "http": server.start("http://127.0.0.1:0"),
                 "jsonrpc": server.start("tcp://127.0.0.1:0", codec="jsonrpc"),
                 "fastrpc": server.start("tcp://127.0.0.1:0")}
    yield server, addresses
    server.close()


@pytest.fixture(scope="module")
def go_server(go_binary):
    server = GoServer(go_binary)
    yield server.addresses
    server.close()


def host_port(address: str) -> str:
    return address.split("://", 1)[1]


def go_client(address: str, mode: str) -> fastrpc.GoClient:
    return fastrpc.Client(address, codec="jsonrpc" if mode == "jsonrpc" else "gob", http=mode == "http")


# Go client -> fastrpc server ------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_go_client_calls_fastrpc_server(go_binary, py_server, mode):
    server, addresses = py_server
    results = run_go_client(go_binary, mode, host_port(addresses[mode]))
    assert set(results) == SCENARIOS
    failed = {name: r["detail"] for name, r in results.items() if not r["ok"]}
    assert failed == {}


@pytest.mark.parametrize("mode", MODES)
def test_the_go_client_scenarios_hold_against_go_itself(go_binary, mode):
    # The expectations are Go's own behaviour: the same client passes them
    # against the Go server (matching by name, zero values, extra fields).
    server = GoServer(go_binary)
    try:
        results = run_go_client(go_binary, mode, server.addresses[mode])      # host:port
    finally:
        server.close()
    assert set(results) == SCENARIOS
    failed = {name: r["detail"] for name, r in results.items() if not r["ok"]}
    assert failed == {}


def test_same_service_answers_fastrpc_and_go_callers(py_server):
    # Arith.Sum(a, b) takes Go's Args{A, B} spread over its two parameters,
    # and fastrpc's own call("Arith.Sum", 10, 20) unchanged.
    _, addresses = py_server
    with fastrpc.Client(addresses["fastrpc"]) as native, go_client(addresses["gob"], "gob") as go:
        assert native.call("Arith.Sum", 10, 20) == 30
        assert go.call("Arith.Sum", Args(10, 20)) == 30


def test_debug_rpc_page_lists_services_methods_and_calls(go_binary, py_server):
    server, addresses = py_server
    host, port = host_port(addresses["http"]).rsplit(":", 1)
    before = server.dispatcher.call_counts()["Arith.Sum"]
    with go_client(addresses["http"], "http") as c:
        for i in range(3):
            c.call("Arith.Sum", Args(i, i))
    with fastrpc.Client(addresses["fastrpc"]) as native:           # every protocol's calls count
        for i in range(4):
            native.call("Arith.Sum", i, i)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", "/debug/rpc")
    resp = conn.getresponse()
    body = resp.read().decode()
    assert resp.status == 200 and resp.getheader("Content-Type").startswith("text/html")
    assert "Service Arith" in body and "Service Echo" in body

    def row(method):
        text = body[body.index(f">{method}("):]
        return text[:text.index("</tr>")]
    # Go's own page shows Method(argType, replyType) error, as Go declares them.
    assert "Sum(*struct { A int; B int }, *int) error" in row("Sum")
    assert f"<td align=center>{before + 7}</td>" in row("Sum")
    assert "Div(*Args, *int) error" in row("Div")
    assert "Record(*Record, *Record) error" in row("Record")
    assert "Floats([]float64, *[]float64) error" in row("Floats")


@pytest.mark.parametrize("verb, path, status", [("GET", "/", 404), ("GET", "/_goRPC_", 405),
                                                 ("POST", "/debug/rpc", 404)])
def test_http_listener_rejects_other_requests(py_server, verb, path, status):
    _, addresses = py_server
    host, port = host_port(addresses["http"]).rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request(verb, path)
    assert conn.getresponse().status == status


# fastrpc client -> Go server -------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_fastrpc_client_calls_go_server(go_server, mode):
    with go_client(go_server[mode], mode) as c:
        assert isinstance(c, fastrpc.GoClient)
        assert c.call("Arith.Sum", Args(10, 20)) == 30
        assert c.call("Arith.Sum", Args(-7, -2**63 + 7)) == -2**63
        with pytest.raises(RemoteError) as err:
            c.call("Arith.Div", Args(1, 0))
        assert err.value.message == "divide by zero" and not isinstance(err.value, MethodNotFoundError)
        with pytest.raises(MethodNotFoundError, match=r"rpc: can't find method Arith\.Nope"):
            c.call("Arith.Nope", Args(1, 2))
        with pytest.raises(MethodNotFoundError, match=r"rpc: can't find service Nope\.Sum"):
            c.call("Nope.Sum", Args(1, 2))
        assert c.call("Arith.Sum", Args(1, 2)) == 3          # the connection survives errors

        rec = sample_record()
        if mode == "jsonrpc":
            rec.Points[2].X = 1e300                         # JSON has no infinities
        back = c.call("Echo.Record", rec, reply_type=Record)
        assert back == rec and isinstance(back.Next, Record) and isinstance(back.Points[0], Point)
        plain = c.call("Echo.Record", Record(Name="plain"))  # no reply_type: dicts
        # Undeclared, a nil slice is what the codec says: gob's zero value, JSON's null.
        nil_slice = None if mode == "jsonrpc" else []
        assert plain["Name"] == "plain" and plain["Inner"]["Tags"] == nil_slice and plain["Next"] is None
        declared = c.call("Echo.Record", Record(Name="plain"), reply_type=Record)
        assert declared.Inner.Tags == [] and declared.Points == [] and declared.Data == b""
        assert declared.Meta is None                             # Optional[...]: nil stays None
        assert c.call("Echo.Record", Record(), reply_type=Record) == Record(Inner=Inner())

        for v in (0, -1, -2**63, 2**63 - 1, 1 << 53):
            assert c.call("Echo.Int", v) == v
        for v in (0, 127, 128, 2**64 - 1):
            assert c.call("Echo.Uint", v, arg_type=fastrpc.GoUint) == v
        for v in ("", "plain", "ünïcødé ✓", "\x00" * 100_000):
            assert c.call("Echo.String", v) == v
        assert c.call("Echo.Bytes", b"\x00\xff\n", reply_type=bytes) == b"\x00\xff\n"
        assert c.call("Echo.Floats", [0.0, -0.5, 1e308, 5e-324], reply_type=List[float]) == [0.0, -0.5, 1e308, 5e-324]
        assert c.call("Echo.Map", {"a": 1, "b": -2, "c": 0}, arg_type=Dict[str, int],
                      reply_type=Dict[str, int]) == {"a": 1, "b": -2, "c": 0}


@pytest.mark.parametrize("mode", MODES)
def test_a_dict_argument_is_sent_as_a_go_struct(go_server, mode):
    # What the positional-arguments TypeError suggests works: a dict with
    # string keys is a struct of those fields (any order; None fields left out).
    with go_client(go_server[mode], mode) as c:
        assert c.call("Arith.Sum", {"A": 1, "B": 2}) == 3
        assert c.call("Arith.Sub", {"B": 2, "A": 10}) == 8
        assert c.call("Arith.Sub", {"B": 4, "A": None}) == -4
        for i in range(50):                              # one type per shape, defined once
            assert c.call("Arith.Sum", {"A": i, "B": 1}) == i + 1
        # Only the argument itself: nested dicts stay maps (Meta), nested structs are dataclasses.
        record = c.call("Echo.Record", {"Name": "from a dict", "Points": [Point(1.5, 2.0)], "Meta": {"k": "v"}},
                        reply_type=Record)
        assert record.Name == "from a dict" and record.Points == [Point(1.5, 2.0)] and record.Meta == {"k": "v"}
        if mode != "jsonrpc":                            # gob carries one value per call
            with pytest.raises(TypeError, match="dataclass or dict"):
                c.call("Arith.Sum", 1, 2)


class Finishing:
    """Handlers that record having run to their end."""

    def __init__(self):
        self.finished = []

    async def Async(self, a: int, b: int) -> int:
        await asyncio.sleep(0.5)
        self.finished.append("async")
        return a + b

    @fastrpc.blocking
    def Blocking(self, a: int, b: int) -> int:
        time.sleep(0.5)
        self.finished.append("blocking")
        return a + b


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("method", ["Async", "Blocking"])
def test_a_go_client_hanging_up_does_not_stop_its_calls(go_binary, mode, method):
    # net/rpc runs a method to completion whatever its client does; a Go
    # listener does the same, in every handler mode (fastrpc's own protocol
    # cancels instead: its clients can cancel, and do so on purpose).
    finishing = Finishing()
    server = fastrpc.Server()
    server.register(finishing)
    addresses = {"gob": server.start("tcp://127.0.0.1:0", codec="gob"),
                 "http": server.start("http://127.0.0.1:0"),
                 "jsonrpc": server.start("tcp://127.0.0.1:0", codec="jsonrpc")}
    try:
        out = subprocess.run([go_binary, "hangup", mode, host_port(addresses[mode]), f"Finishing.{method}"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        deadline = time.monotonic() + 5
        while not finishing.finished and time.monotonic() < deadline:
            time.sleep(0.05)
        assert finishing.finished == [method.lower()]
    finally:
        server.close()


@pytest.mark.parametrize("mode", MODES)
def test_fastrpc_client_1000_concurrent_calls_on_one_connection(go_server, mode):
    with go_client(go_server[mode], mode) as c:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda i: c.call("Arith.Sum", Args(i, 1_000_000), timeout=30), range(1000)))
        assert results == [i + 1_000_000 for i in range(1000)]
        futures = [c.go("Arith.Sum", Args(i, 1)) for i in range(1000)]
        assert [f.result(30) for f in futures] == [i + 1 for i in range(1000)]


def test_gob_argument_of_the_wrong_go_type_is_a_clear_remote_error(go_server):
    with go_client(go_server["gob"], "gob") as c:
        with pytest.raises(RemoteError, match="type mismatch"):
            c.call("Arith.Sum", {"A": 1, "B": 2}, arg_type=Dict[str, int])   # a map, not the struct Args
        with pytest.raises(RemoteError):
            c.call("Echo.Uint", 5)                      # a Python int is a Go int unless declared GoUint
        assert c.call("Arith.Sum", Args(2, 2)) == 4


@pytest.mark.parametrize("mode", MODES)
def test_keyword_arguments_are_the_fields_of_the_go_struct(go_server, mode):
    with go_client(go_server[mode], mode) as c:
        assert c.call("Arith.Sum", A=1, B=2) == 3
        assert c.call("Arith.Sub", B=2, A=10) == 8
        assert c.go("Arith.Sum", A=5, B=5).result(10) == 10
        assert c.map("Arith.Sum", [{"A": i, "B": 1} for i in range(20)]) == [i + 1 for i in range(20)]
        with pytest.raises(TypeError, match="one argument: pass it by position, or its struct's fields"):
            c.call("Arith.Sum", {"A": 1}, B=2)


def test_gob_client_needs_exactly_one_argument(go_server):
    with go_client(go_server["gob"], "gob") as c:
        with pytest.raises(TypeError, match="exactly one argument"):
            c.call("Arith.Sum", 1, 2)
        with pytest.raises(fastrpc.errors.EncodeError, match="int64"):
            c.call("Echo.Int", 2**64)
        assert c.call("Arith.Sum", Args(1, 1)) == 2     # nothing half-sent


def test_http_client_against_a_plain_tcp_port_fails_clearly(go_server):
    with pytest.raises(ConnectError, match="HTTP"):
        fastrpc.Client(go_server["gob"], http=True, connect_timeout=2)


def test_go_client_timeout_and_server_gone(go_binary):
    server = GoServer(go_binary)
    c = go_client(server.addresses["gob"], "gob")
    try:
        assert c.call("Arith.Sum", Args(1, 2)) == 3
    finally:
        server.close()
    with pytest.raises(fastrpc.ConnectionError):
        c.call("Arith.Sum", Args(1, 2), timeout=5)
    c.close()


# golden bytes -----------------------------------------------------------------

def test_gob_encoder_matches_go_byte_for_byte(go_binary):
    from fastrpc.go._gob import GobDecoder, GobEncoder
    from fastrpc.go.gobcodec import REQUEST
    from fastrpc.go.types import GoArray, go_type, infer_go_type

    golden = json.loads(subprocess.run([go_binary, "golden"], capture_output=True, check=True, text=True).stdout)
    vectors = {v["name"]: bytes.fromhex(v["hex"]) for v in golden}
    cases = [
        ("request", {"ServiceMethod": "Arith.Sum", "Seq": 0}, REQUEST),
        ("request_seq", {"ServiceMethod": "Arith.Sum", "Seq": 300}, REQUEST),
        ("args", Args(10, 20), None), ("args_zero", Args(), None),
        ("int", 7, None), ("int_zero", 0, None), ("int_neg", -129, None), ("int_min", -2**63, None),
        ("uint_max", 2**64 - 1, None), ("float", 17.25, None), ("float_neg", -0.1, None),
        ("bool", True, None), ("string", "héllo", None), ("bytes", b"\x01\x02\x03", None),
        ("slice_int", [1, -1, 0], None), ("slice_empty", [], go_type(List[int])),
        ("map", {"k": 5}, None), ("array", [1, 0, 2], go_type(GoArray[int, 3])),
        ("point", Point(1.5, 0), None),
        ("record", Record(ID=-5, Count=1 << 40, Name="r", Points=[Point(1, 2)], Inner=Inner(Tags=["t"]),
                          Next=Record(Name="n"), Meta={"a": "b"}, Grid=[0, 1, 0]), None),
        ("record_again", Record(Flag=True), None),
        ("tree", Tree(1, [Tree(2), Tree(3, [Tree(4)])]), None),
        ("interface", Opaque("x", 42), None), ("interface_nil", Opaque("nil", None), None),
        ("complex", complex(1.5, -2), None),
    ]
    assert {name for name, _, _ in cases} | {"args_new_encoder"} == set(vectors)
    encoder, decoder = GobEncoder(), GobDecoder()
    decoded = {}
    for name, value, gotype in cases:
        encoder.encode(value, gotype or infer_go_type(value))
        assert encoder.take().hex() == vectors[name].hex(), name
        # what Go wrote decodes back, on a stream that saw the earlier messages
        values = decoder.feed(vectors[name][:3]) + decoder.feed(vectors[name][3:])
        assert len(values) == 1, name
        decoded[name] = values[0]
    for name, value, _ in cases:
        if isinstance(value, (int, float, str, bytes, complex, list)):
            assert decoded[name] == value, name
    assert decoded["request_seq"] == {"ServiceMethod": "Arith.Sum", "Seq": 300}
    assert fastrpc.go.types.from_go(decoded["record"], Record) == Record(
        ID=-5, Count=1 << 40, Name="r", Points=[Point(1, 2)], Inner=Inner(Tags=["t"]),
        Next=Record(Name="n", Inner=Inner()), Meta={"a": "b"}, Grid=[0, 1, 0])
    assert decoded["tree"] == {"Value": 1, "Children": [{"Value": 2, "Children": []},
                                                        {"Value": 3, "Children": [{"Value": 4, "Children": []}]}]}
    assert fastrpc.go.types.from_go(decoded["tree"], Tree) == Tree(1, [Tree(2), Tree(3, [Tree(4)])])
    assert decoded["interface"] == {"Name": "x", "Any": 42}
    assert decoded["interface_nil"] == {"Name": "nil", "Any": None}
    # a new Go encoder re-sends its definitions; a new stream decodes them afresh
    assert GobDecoder().feed(vectors["args_new_encoder"]) == [{"A": 1, "B": 2}]


# bad input on the Go listeners ---------------------------------------------------

def _raw(address: str) -> socket.socket:
    host, port = host_port(address).rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def _read_until_closed(sock: socket.socket, limit: float = 10.0) -> bytes:
    data = b""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    raise AssertionError("connection was not closed")


@pytest.mark.parametrize("mode, garbage", [("gob", b"\xf0\x00\x00\x00"), ("gob", b"\x05\xff\x81\x09\x09\x09"),
                                           ("jsonrpc", b"[1, 2]"), ("jsonrpc", b'{"method": "x", "id": 1,}'),
                                           ("jsonrpc", b"nonsense")])
def test_garbage_closes_only_that_connection(py_server, mode, garbage):
    _, addresses = py_server
    sock = _raw(addresses[mode])
    sock.sendall(garbage)
    _read_until_closed(sock)
    sock.close()
    with go_client(addresses[mode], mode) as c:      # the server carries on
        assert c.call("Arith.Sum", Args(2, 3)) == 5


def test_jsonrpc_requests_by_hand(py_server):
    _, addresses = py_server
    sock = _raw(addresses["jsonrpc"])
    # back to back without newlines, split mid-string, one notification (id null)
    stream = (b'{"method":"Arith.Sum","params":[{"A":1,"B":2}],"id":"a"}'
              b'{"method":"Arith.Sum","params":[5, 6],"id":null}'
              b'{"method":"Arith.Sum","params":{"A":1},"id":7}'
              b'{"method":"Arith.Sum","id":8}'
              b'{"method":"Echo.String","params":["q\\"}{\\\\"],"id":9}')
    for i in range(0, len(stream), 7):
        sock.sendall(stream[i:i + 7])
        time.sleep(0.001)
    replies = []
    buf = b""
    while len(replies) < 4:
        buf += sock.recv(65536)
        *lines, buf = buf.split(b"\n")
        replies += [json.loads(line) for line in lines if line]
    sock.close()
    by_id = {r["id"]: r for r in replies}
    assert by_id["a"] == {"id": "a", "result": 3, "error": None}
    assert by_id[7]["error"] == "jsonrpc: params must be an array" and by_id[7]["result"] is None
    assert by_id[8]["error"] == "jsonrpc: request body missing params"
    assert by_id[9]["result"] == 'q"}{\\'
    assert None not in by_id                      # nothing answers a notification


def test_none_result_is_never_null(go_binary, tmp_path):
    # Go's jsonrpc client drops the connection on {"result": null, "error": null}.
    class Side:
        def Nothing(self, x) -> None:
            return None

        def Count(self, x) -> int:
            return None

    server = fastrpc.Server()
    server.register(Side())
    address = server.start("tcp://127.0.0.1:0", codec="jsonrpc")
    try:
        sock = _raw(address)
        sock.sendall(b'{"method":"Side.Nothing","params":[1],"id":1}{"method":"Side.Count","params":[1],"id":2}')
        buf = b""
        while buf.count(b"\n") < 2:
            buf += sock.recv(4096)
        sock.close()
        replies = {r["id"]: r for r in map(json.loads, buf.split(b"\n")[:2])}
        assert replies[1]["result"] == {} and replies[2]["result"] == 0
    finally:
        server.close()


def test_gob_undecodable_argument_gets_an_error_and_the_connection_lives(py_server):
    _, addresses = py_server
    from fastrpc.go._gob import GobEncoder
    from fastrpc.go.gobcodec import REQUEST, GobClientCodec
    from fastrpc.go.types import infer_go_type

    enc = GobEncoder()
    enc.encode({"ServiceMethod": "Echo.String", "Seq": 1}, REQUEST)
    data = enc.take() + b"\x04\x0c\x00\x7f\x61"    # a string whose length runs past its message
    enc.encode({"ServiceMethod": "Arith.Sum", "Seq": 2}, REQUEST)
    enc.encode(Args(20, 22), infer_go_type(Args(20, 22)))
    data += enc.take()
    sock = _raw(addresses["gob"])
    sock.sendall(data)
    reader = GobClientCodec(1 << 20, 32)
    replies = []
    while len(replies) < 2:
        chunk = sock.recv(65536)
        assert chunk, "server closed the connection"
        replies += reader.feed(chunk)
    sock.close()
    assert replies[0][0] == 1 and "rpc: decoding argument" in replies[0][1]
    assert replies[1] == (2, None, 42)
