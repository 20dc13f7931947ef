"""TLS (mutual too), the shared-secret handshake, per-call metadata and the
authorize hook, with certificates made at run time by openssl."""
import asyncio
import os
import socket
import ssl
import threading
import time

import pytest

import fastrpc
from fastrpc.net.auth import MAGIC
from fastrpc.errors import (AuthenticationError, ConnectError, PermissionDeniedError, UnauthenticatedError,
                            UnavailableError)
from support import make_certificates

SECRET = b"0123456789abcdef-shared-secret"


class Guarded:
    def __init__(self):
        self.calls = 0
        self.lock = threading.Lock()

    def Sum(self, a, b):
        with self.lock:
            self.calls += 1
        return a + b

    async def Later(self, a):
        await asyncio.sleep(0.001)
        with self.lock:
            self.calls += 1
        return a


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    ca, cert, key = make_certificates(tmp_path_factory.mktemp("pki"))
    other_ca, other_cert, other_key = make_certificates(tmp_path_factory.mktemp("other"))
    return {"ca": ca, "cert": cert, "key": key, "other_ca": other_ca, "other_cert": other_cert,
            "other_key": other_key}


def server_context(certs, require_client_cert=False):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(certs["cert"], certs["key"])
    if require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(certs["ca"])
    return ctx


def client_context(certs, ca="ca", cert=None):
    ctx = ssl.create_default_context(cafile=certs[ca])
    if cert is not None:
        ctx.load_cert_chain(certs[cert], certs[cert.replace("cert", "key")])
    return ctx


def serve(**settings):
    service = Guarded()
    server = fastrpc.Server(**settings)
    server.register(service)
    return server, service, server.start("tcp://127.0.0.1:0")


def run(coro):
    return asyncio.new_event_loop().run_until_complete(coro)


# TLS ---------------------------------------------------------------------------

def test_tls_calls_from_every_client(certs):
    server, service, address = serve(ssl=server_context(certs))
    try:
        with fastrpc.Client(address, ssl=client_context(certs)) as c:
            assert c.call("Guarded.Sum", 1, 2) == 3
            assert [f.result(10) for f in [c.go("Guarded.Sum", i, 1) for i in range(300)]] == \
                [i + 1 for i in range(300)]
            assert c.map("Guarded.Sum", [(i, i) for i in range(500)]) == [2 * i for i in range(500)]
            assert c.call("Guarded.Sum", "x" * 200_000, "y") == "x" * 200_000 + "y"   # many TLS records
            big = os.urandom(300_000)          # large bytes: written from their own memory, both ways
            assert c.call("Guarded.Sum", big, b"!") == big + b"!"
            assert c.map("Guarded.Sum", [(big, b"") for _ in range(3)]) == [big] * 3

        async def use_async():
            async with fastrpc.AsyncClient(address, ssl=client_context(certs)) as ac:
                assert await ac.call("Guarded.Sum", 2, 3) == 5
                big = os.urandom(300_000)
                assert await ac.call("Guarded.Sum", big, b"?") == big + b"?"
                return await ac.map("Guarded.Later", list(range(100)))
        assert run(use_async()) == list(range(100))
    finally:
        server.close()


def test_tls_failures_are_clear_and_nothing_runs(certs):
    server, service, address = serve(ssl=server_context(certs))
    try:
        with pytest.raises(ConnectError, match="TLS handshake"):
            fastrpc.Client(address, ssl=client_context(certs, ca="other_ca"), connect_timeout=5)
        with pytest.raises(ConnectError, match="TLS handshake"):
            fastrpc.Client(address, ssl=client_context(certs), server_hostname="not-this-host", connect_timeout=5)
        with fastrpc.Client(address, connect_timeout=5, timeout=5) as plain:      # no TLS at all
            with pytest.raises(fastrpc.ConnectionError):
                plain.call("Guarded.Sum", 1, 1)
        with pytest.raises(ConnectError, match="TLS handshake"):
            run(fastrpc.AsyncClient(address, ssl=client_context(certs, ca="other_ca")).connect())
        assert service.calls == 0
        with fastrpc.Client(address, ssl=client_context(certs)) as c:           # the server carries on
            assert c.call("Guarded.Sum", 1, 1) == 2
    finally:
        server.close()


def test_mutual_tls(certs):
    server, service, address = serve(ssl=server_context(certs, require_client_cert=True))
    try:
        with fastrpc.Client(address, ssl=client_context(certs, cert="cert")) as c:
            assert c.call("Guarded.Sum", 4, 5) == 9
        for ctx in (client_context(certs), client_context(certs, cert="other_cert")):
            # TLS 1.3 reports a refused client certificate after the handshake:
            # at connect or at the first call, never as a result.
            with pytest.raises(fastrpc.ConnectionError):
                with fastrpc.Client(address, ssl=ctx, connect_timeout=5, timeout=5) as c:
                    c.call("Guarded.Sum", 1, 1)
        assert service.calls == 1
    finally:
        server.close()


def test_tls_on_a_go_listener(certs):
    server = fastrpc.Server(ssl=server_context(certs))
    server.register(Guarded())
    address = server.start("tcp://127.0.0.1:0", codec="jsonrpc")
    try:
        host, port = address[len("tcp://"):].rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as raw:
            with client_context(certs).wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(b'{"method":"Guarded.Sum","params":[1,2],"id":1}')
                assert tls.recv(1000) == b'{"id":1,"result":3,"error":null}\n'
    finally:
        server.close()


# shared-secret handshake ------------------------------------------------------------

def test_shared_secret_handshake(certs):
    server, service, address = serve(auth_secret=SECRET)
    try:
        with fastrpc.Client(address, auth_secret=SECRET) as c:
            assert c.call("Guarded.Sum", 1, 2) == 3
            assert c.map("Guarded.Sum", [(i, 1) for i in range(100)]) == [i + 1 for i in range(100)]

        async def use_async():
            async with fastrpc.AsyncClient(address, auth_secret=SECRET.decode()) as ac:
                return await ac.call("Guarded.Later", 7)
        assert run(use_async()) == 7
        calls = service.calls

        with pytest.raises(AuthenticationError, match="does not hold our shared secret"):
            fastrpc.Client(address, auth_secret=b"another-secret-of-16+bytes")
        with pytest.raises(AuthenticationError, match="does not hold our shared secret"):
            run(fastrpc.AsyncClient(address, auth_secret=b"another-secret-of-16+bytes").connect())
        with fastrpc.Client(address, timeout=5) as anonymous:           # no secret: told why
            with pytest.raises(UnauthenticatedError, match="requires authentication"):
                anonymous.call("Guarded.Sum", 1, 1)
        assert service.calls == calls                               # no handler ran for them
    finally:
        server.close()


def test_handshake_against_a_server_without_auth():
    server, service, address = serve()
    try:
        with pytest.raises(AuthenticationError):
            fastrpc.Client(address, auth_secret=SECRET, connect_timeout=5)
    finally:
        server.close()


def test_handshake_with_tls_and_connection_limits(certs):
    server, service, address = serve(auth_secret=SECRET, ssl=server_context(certs), max_connections=1)
    try:
        with fastrpc.Client(address, auth_secret=SECRET, ssl=client_context(certs)) as c:
            assert c.call("Guarded.Sum", 3, 4) == 7
            with pytest.raises(UnavailableError, match="too many connections"):
                fastrpc.Client(address, auth_secret=SECRET, ssl=client_context(certs))
    finally:
        server.close()


def _raw(address):
    host, port = address[len("tcp://"):].rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=5)


def _until_closed(sock):
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk


def test_a_silent_or_lying_peer_is_disconnected():
    server, service, address = serve(auth_secret=SECRET, handshake_timeout=0.3)
    try:
        with _raw(address) as silent:
            start = time.monotonic()
            assert _until_closed(silent) == b""
            assert time.monotonic() - start < 4
        with _raw(address) as liar:
            liar.sendall(MAGIC + b"\x01" * 32)
            assert liar.recv(65)[:1] == b"\x01"                     # the server's challenge
            liar.sendall(b"\x00" * 32)                              # a made-up proof
            verdict = _until_closed(liar)
            assert verdict[:1] == b"\x00" and b"wrong secret" in verdict
        with _raw(address) as garbage:
            garbage.sendall(b"\xff" * 100)
            assert _until_closed(garbage) == b""
        assert service.calls == 0
    finally:
        server.close()


def test_secret_must_be_long_enough():
    with pytest.raises(ValueError, match="16 bytes"):
        fastrpc.Server(auth_secret=b"short")
    with pytest.raises(ValueError, match="16 bytes"):
        fastrpc.Client("tcp://127.0.0.1:1", auth_secret=b"short")


# metadata and the authorize hook -------------------------------------------------------

def test_metadata_and_authorize_hook():
    seen = []

    def authorize(method, metadata):
        seen.append((method, metadata))
        if not metadata or metadata.get("token") != "good":
            raise PermissionError("bad or missing token")

    server, service, address = serve(authorize=authorize)
    try:
        with fastrpc.Client(address, metadata={"token": "good"}) as c:
            assert c.call("Guarded.Sum", 1, 2) == 3
            assert c.go("Guarded.Later", 4).result(5) == 4
            assert c.map("Guarded.Sum", [(1, 1), (2, 2)]) == [2, 4]
        assert seen[0] == ("Guarded.Sum", {"token": "good"})
        tokens = iter(["good", "bad"])
        with fastrpc.Client(address, metadata=lambda: {"token": next(tokens)}) as c:
            assert c.call("Guarded.Sum", 5, 5) == 10
            with pytest.raises(PermissionDeniedError, match="bad or missing token"):
                c.call("Guarded.Sum", 5, 5)
        calls = service.calls
        with fastrpc.Client(address) as c:
            with pytest.raises(PermissionDeniedError):
                c.call("Guarded.Later", 1)
            c.notify("Guarded.Sum", 1, 1)
            with pytest.raises(PermissionDeniedError):
                c.call("Guarded.Sum", 1, 1)                         # after the notify: it did not run

        async def use_async():
            async with fastrpc.AsyncClient(address, metadata={"token": "good"}) as ac:
                return await ac.call("Guarded.Later", 9), await ac.map("Guarded.Sum", [(1, 2)])
        assert run(use_async()) == (9, [3])
        assert service.calls == calls + 2
    finally:
        server.close()


def test_metadata_must_be_a_dict_or_callable():
    with pytest.raises(TypeError, match="metadata"):
        fastrpc.Client("tcp://127.0.0.1:1", metadata="token")


def test_balancers_pass_tls_auth_and_metadata_to_every_endpoint(certs):
    servers = [serve(ssl=server_context(certs), auth_secret=SECRET,
                     authorize=lambda method, meta: None if meta == {"token": "t"} else 1 / 0)
               for _ in range(2)]
    addresses = [address for _, _, address in servers]
    settings = dict(ssl=client_context(certs), auth_secret=SECRET, metadata={"token": "t"})
    try:
        with fastrpc.Balancer(addresses, strategy="round_robin", **settings) as b:
            assert [b.call("Guarded.Sum", i, 1) for i in range(6)] == [1, 2, 3, 4, 5, 6]
            assert b.map("Guarded.Sum", [(i, i) for i in range(20)]) == [2 * i for i in range(20)]
            assert b.go("Guarded.Later", 8).result(5) == 8

        async def use_async():
            async with fastrpc.AsyncBalancer(addresses, strategy="round_robin", **settings) as ab:
                return [await ab.call("Guarded.Later", i) for i in range(4)] + \
                    await ab.map("Guarded.Sum", [(1, 1), (2, 2)])
        assert run(use_async()) == [0, 1, 2, 3, 2, 4]
        assert all(service.calls > 0 for _, service, _ in servers)       # both endpoints served
    finally:
        for server, _, _ in servers:
            server.close()
