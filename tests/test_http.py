"""An http:// listener: JSON-RPC 2.0 over POST /rpc (single calls,
batches, notifications, keyword params, every error object, HTTP-level
errors, bodies in pieces, authorize seeing the request's headers), and
fastrpc's own clients and balancers dialing through HTTP CONNECT."""
import json
import socket
import time
import urllib.error
import urllib.request

import pytest

import fastrpc


class Arith:
    def Sum(self, a, b):
        return a + b

    async def Later(self, x, *, tag=""):
        return [x, tag]

    @fastrpc.blocking
    def Pooled(self, x):
        return x * 2

    def Fail(self):
        raise KeyError("k")

    def Bytes(self):
        return b"\xff\x00"


@pytest.fixture(scope="module")
def url():
    seen = []
    server = fastrpc.Server(authorize=lambda method, meta: seen.append((method, dict(meta or {}))))
    server.register(Arith())
    address = server.start("http://127.0.0.1:0")
    server.seen = seen
    yield address + "/rpc", server
    server.close()


def post(url, body, headers=None):
    """(status, parsed body or None)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            return response.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def call(method, params=None, rid=1):
    request = {"jsonrpc": "2.0", "method": method, "id": rid}
    if params is not None:
        request["params"] = params
    return request


def test_a_call_in_every_handler_mode(url):
    u, _ = url
    assert post(u, call("Arith.Sum", [1, 2])) == (200, {"jsonrpc": "2.0", "result": 3, "id": 1})
    assert post(u, call("Arith.Later", {"x": 1, "tag": "t"}, "a"))[1]["result"] == [1, "t"]
    assert post(u, call("Arith.Pooled", [21]))[1]["result"] == 42
    assert post(u, call("Arith.Bytes"))[1]["result"] == {"base64": "/wA="}


def test_a_batch_answers_each_call_and_no_notification(url):
    u, _ = url
    status, replies = post(u, [call("Arith.Sum", [1, 2], 1), {"jsonrpc": "2.0", "method": "Arith.Sum",
                                                              "params": [5, 5]},
                               call("Arith.Fail", None, 2), call("Arith.Nope", [], 3),
                               call("Arith.Sum", [1], 4), {"method": "Arith.Sum", "id": 5}, 7])
    assert status == 200
    by_id = {r["id"]: r for r in replies}
    assert len(replies) == 6 and by_id[1]["result"] == 3
    assert by_id[2]["error"] == {"code": -32000, "message": "'k'", "data": {"type": "KeyError"}}
    assert by_id[3]["error"]["code"] == -32601 and "can't find method Arith.Nope" in by_id[3]["error"]["message"]
    assert by_id[4]["error"] == {"code": -32602,
                                 "message": "Invalid params: Arith.Sum: missing a required argument: 'b'"}
    assert by_id[5]["error"]["code"] == -32600
    assert by_id[None]["error"]["code"] == -32600           # 7 is no request object


def test_notifications_only_get_204(url):
    u, _ = url
    assert post(u, {"jsonrpc": "2.0", "method": "Arith.Sum", "params": [1, 2]}) == (204, None)
    assert post(u, [{"jsonrpc": "2.0", "method": "Arith.Fail"}]) == (204, None)


def test_malformed_bodies(url):
    u, _ = url
    status, reply = post(u, b"{bad")
    assert status == 200 and reply["error"]["code"] == -32700 and reply["id"] is None
    assert post(u, [])[1]["error"]["code"] == -32600
    assert post(u, call("Arith.Sum", "1, 2"))[1]["error"]["code"] == -32602
    assert post(u, b"[" * 100000 + b"]" * 100000)[1]["error"]["code"] == -32700     # too deep for JSON


def test_authorize_sees_http_calls_with_their_headers(url):
    u, server = url
    post(u, call("Arith.Sum", [1, 1]), headers={"Authorization": "Bearer t0k"})
    method, meta = server.seen[-1]
    assert method == "Arith.Sum" and meta["authorization"] == "Bearer t0k"


def raw_http(url, request, chunks=1):
    host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        step = max(1, len(request) // chunks)
        for i in range(0, len(request), step):
            sock.sendall(request[i:i + step])
            time.sleep(0.01)
        data = b""
        while True:
            part = sock.recv(65536)
            if not part:
                return data
            data += part


def test_http_level_errors_and_a_body_in_pieces(url):
    u, _ = url
    body = json.dumps(call("Arith.Sum", [20, 22])).encode()
    head = f"POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    reply = raw_http(u, head + body, chunks=7)
    assert reply.startswith(b"HTTP/1.0 200 OK") and reply.endswith(b'"result": 42, "id": 1}')
    assert raw_http(u, b"POST /rpc HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.0 411")
    assert raw_http(u, b"GET /rpc HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.0 405")
    too_big = b"POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (2 ** 40)
    assert raw_http(u, too_big).startswith(b"HTTP/1.0 413")


SECRET = b"0123456789abcdef0123"


def test_fastrpc_clients_and_balancers_dial_through_http_connect():
    import asyncio
    server = fastrpc.Server(auth_secret=SECRET)
    server.register(Arith())
    address = server.start("http://127.0.0.1:0")
    try:
        with fastrpc.Client(address, auth_secret=SECRET) as c:
            assert type(c) is fastrpc.Client                   # fastrpc's protocol, not Go's
            assert c.call("Arith.Sum", 1, 2) == 3
            assert c.map("Arith.Pooled", list(range(50))) == [2 * i for i in range(50)]
            assert c.describe("Arith.Sum")["Arith"]["methods"]["Sum"]["mode"] == "inline"
        with fastrpc.Balancer([address], auth_secret=SECRET, health_interval=0) as b:
            assert b.call("Arith.Sum", 2, 2) == 4

        async def run():
            async with fastrpc.AsyncClient(address, auth_secret=SECRET) as c:
                assert await c.call("Arith.Later", 1, tag="x") == [1, "x"]
            async with fastrpc.AsyncBalancer([address], auth_secret=SECRET, health_interval=0) as b:
                assert await b.call("Arith.Sum", 3, 3) == 6
        asyncio.run(run())
        # The same listener still serves Go's rpc.DialHTTP and JSON-RPC 2.0.
        with fastrpc.Client(address, codec="gob") as go:
            assert go.call("Arith.Sum", {"a": 1, "b": 1}) == 2
        assert post(address + "/rpc", call("Arith.Sum", [4, 4])) == (200, {"jsonrpc": "2.0", "result": 8, "id": 1})
        # The secret is still required after CONNECT.
        with pytest.raises(fastrpc.errors.UnauthenticatedError):
            fastrpc.Client(address).call("Arith.Sum", 1, 2)
    finally:
        server.close()


def test_connect_to_the_fastrpc_path_needs_connect():
    server = fastrpc.Server()
    server.register(Arith())
    address = server.start("http://127.0.0.1:0")
    try:
        assert raw_http(address + "/", b"GET /_fastrpc_ HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.0 405")
        with pytest.raises(fastrpc.errors.ConnectError, match="closed the connection during HTTP CONNECT"):
            fastrpc.Client(server.start("tcp://127.0.0.1:0").replace("tcp://", "http://"))
    finally:
        server.close()


def test_tls_on_an_http_listener_carries_json_rpc_and_connect(tmp_path):
    import asyncio
    import ssl
    from support import make_certificates
    ca, cert, key = make_certificates(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=ca)
    server = fastrpc.Server(ssl=server_ctx)
    server.register(Arith())
    address = server.start("http://127.0.0.1:0")
    try:
        with fastrpc.Client(address, ssl=client_ctx) as c:         # TLS, then CONNECT, then fastrpc
            assert c.call("Arith.Sum", 1, 2) == 3

        async def run():
            async with fastrpc.AsyncClient(address, ssl=client_ctx) as c:
                return await c.call("Arith.Pooled", 4)
        assert asyncio.run(run()) == 8
        request = urllib.request.Request(address.replace("http://", "https://") + "/rpc", method="POST",
                                         data=json.dumps(call("Arith.Sum", [2, 2])).encode())
        with urllib.request.urlopen(request, timeout=10, context=client_ctx) as response:
            assert json.loads(response.read())["result"] == 4
        with pytest.raises(fastrpc.errors.ConnectError):              # no TLS: refused, clearly
            fastrpc.Client(address, connect_timeout=2).call("Arith.Sum", 1, 2)
    finally:
        server.close()
