"""Go as a codec family: Go's protocols behind the same clients, settings,
engine and balancers as fastrpc's, against stock Go net/rpc servers."""
import asyncio
import concurrent.futures
import ssl
import time

import pytest

import fastrpc
from fastrpc import AsyncBalancer, Balancer
from fastrpc.errors import ConnectionError, MethodNotFoundError, RemoteError
from gointerop import Args, GoServer, Record, build_go_program, sample_record

MODES = ["gob", "http", "jsonrpc"]


def settings(mode):
    return {"codec": "jsonrpc" if mode == "jsonrpc" else "gob", "http": mode == "http"}


@pytest.fixture(scope="module")
def go_binary(tmp_path_factory):
    return build_go_program(str(tmp_path_factory.mktemp("go")))


@pytest.fixture(scope="module")
def go_server(go_binary):
    server = GoServer(go_binary)
    yield server.addresses
    server.close()


@pytest.fixture
def go_trio(go_binary):
    servers = [GoServer(go_binary) for _ in range(3)]
    yield servers
    for s in servers:
        s.close()


# one client, every setting ----------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_client_with_a_go_codec_is_a_client_with_the_same_settings(go_server, mode):
    with fastrpc.Client(go_server[mode], timeout=10, connect_timeout=2, max_frame_size=1 << 20,
                        heartbeat=5.0, reconnect_backoff=(0.01, 0.1), **settings(mode)) as c:
        assert isinstance(c, fastrpc.Client) and isinstance(c, fastrpc.GoClient)
        assert c.call("Arith.Sum", Args(2, 3)) == 5
        assert c.go("Arith.Sum", Args(4, 5), timeout=5).result(5) == 9
        assert c.map("Arith.Sum", [Args(i, 1) for i in range(300)], window=64) == [i + 1 for i in range(300)]
        assert c.ping(5) >= 0                      # a call nothing answers but "can't find service"
        futures = [c.go("Arith.Sum", Args(i, i)) for i in range(200)]
        done, _ = concurrent.futures.wait(futures, timeout=10)
        assert len(done) == 200 and sorted(f.result() for f in done) == [2 * i for i in range(200)]


def test_go_codecs_refuse_what_go_cannot_carry(go_server):
    with pytest.raises(ValueError, match="metadata"):
        fastrpc.Client(go_server["gob"], codec="gob", metadata={"token": "x"})
    with pytest.raises(ValueError, match="auth_secret"):
        fastrpc.Client(go_server["gob"], codec="gob", auth_secret="s" * 16)
    with pytest.raises(ValueError, match="unknown codec"):
        fastrpc.Client(go_server["gob"], codec="xml")
    with pytest.raises(TypeError, match="ssl"):
        fastrpc.Client(go_server["gob"], codec="gob", ssl="not a context")


def test_a_tls_go_client_fails_clearly_against_a_plain_go_server(go_server):
    context = ssl.create_default_context()
    with pytest.raises(fastrpc.errors.ConnectError, match="TLS"):
        fastrpc.Client(go_server["gob"], codec="gob", ssl=context, connect_timeout=2)


def test_notify_is_jsonrpc_only(go_server):
    with fastrpc.Client(go_server["gob"], codec="gob") as c:
        with pytest.raises(ValueError, match="one-way"):
            c.notify("Arith.Sum", Args(1, 2))
        assert c.call("Arith.Sum", Args(1, 2)) == 3


# the asyncio Go client -------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_async_go_client_has_the_sync_api(go_server, mode):
    async def main():
        async with fastrpc.AsyncClient(go_server[mode], **settings(mode)) as c:
            assert isinstance(c, fastrpc.AsyncGoClient)
            assert await c.call("Arith.Sum", Args(10, 20)) == 30
            with pytest.raises(RemoteError, match="divide by zero"):
                await c.call("Arith.Div", Args(1, 0))
            with pytest.raises(MethodNotFoundError):
                await c.call("Arith.Nope", Args(1, 2))
            rec = sample_record()
            if mode == "jsonrpc":
                rec.Points[2].X = 1e300                 # JSON has no infinities
            assert await c.call("Echo.Record", rec, reply_type=Record) == rec
            assert await c.call("Echo.Uint", 2**64 - 1, arg_type=fastrpc.GoUint) == 2**64 - 1
            results = await asyncio.gather(*(c.call("Arith.Sum", Args(i, 1)) for i in range(1000)))
            assert results == [i + 1 for i in range(1000)]
            assert await asyncio.gather(*(c.go("Arith.Sum", Args(i, 2)) for i in range(100))) == \
                [i + 2 for i in range(100)]
            assert await c.map("Arith.Sum", [Args(i, 3) for i in range(500)]) == [i + 3 for i in range(500)]
            assert await c.ping(5) >= 0
    asyncio.run(asyncio.wait_for(main(), 60))


# balancing over Go servers ------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("strategy", ["round_robin", "p2c", "least_connections", "consistent_hash"])
def test_balancer_spreads_calls_over_go_servers(go_trio, mode, strategy):
    addresses = [s.addresses[mode] for s in go_trio]
    with Balancer(addresses, strategy=strategy, health_interval=0, **settings(mode)) as b:
        keyed = strategy == "consistent_hash"
        pids = [b.call("Arith.Pid", Args(), key=i if keyed else None) for i in range(60)]
        assert len(set(pids)) == 3                     # every Go server took calls
        futures = [b.go("Arith.Sum", Args(i, 1), key=i if keyed else None) for i in range(600)]
        assert [f.result(10) for f in futures] == [i + 1 for i in range(600)]
        assert b.map("Arith.Sum", [Args(i, 2) for i in range(600)],
                     keys=list(range(600)) if keyed else None) == [i + 2 for i in range(600)]
        assert all(s["in_flight"] == 0 for s in b.stats().values())


@pytest.mark.parametrize("mode", MODES)
def test_a_killed_go_backend_loses_no_call_not_yet_written(go_trio, mode):
    addresses = [s.addresses[mode] for s in go_trio]
    with Balancer(addresses, strategy="round_robin", health_interval=0, **settings(mode)) as b:
        assert len({b.call("Arith.Pid", Args()) for _ in range(30)}) == 3
        go_trio[1].close()                            # kill -9
        failures = []
        for i in range(300):
            try:
                assert b.call("Arith.Sum", Args(i, 1)) == i + 1
            except ConnectionError as exc:
                failures.append(exc)
        assert failures == []
        assert b.stats()[addresses[1]]["errors"] >= 1


@pytest.mark.parametrize("codec", ["gob", "jsonrpc"])
def test_a_go_ping_the_peer_never_received_fails_as_not_sent(codec):
    # The layer of a bug CI found: the connection fails unreceived calls
    # through the table's forget(), which handed back a ping's internal
    # wrapper instead of what its caller waits on.
    import collections
    import socket
    from fastrpc._core.calltable import CallFuture
    from fastrpc.client.connection import fail_undelivered
    from fastrpc.go.calltable import GoCallTable
    table = GoCallTable(codec, max_frame_size=1 << 20, max_depth=64)
    ping, call = CallFuture("PING"), CallFuture("Arith.Sum")
    table.ping(ping)
    table.request("Arith.Sum", (Args(1, 2),), call)          # encoded, never written
    a, b = socket.socketpair()
    with a, b:
        fail_undelivered(table, a, 0, collections.deque(), 0, 0, "tcp://127.0.0.1:1")
    for future in (ping, call):
        with pytest.raises(fastrpc.errors.ConnectionClosedError, match="not sent"):
            future.result(0)


@pytest.mark.parametrize("mode", MODES)
def test_a_ping_to_a_go_server_that_died_is_a_connection_error(go_binary, mode):
    # The ping is written after the server has gone: the connection fails it
    # as not sent (the peer acknowledged none of it), which must reach the
    # caller as a ConnectionError like any other call.
    server = GoServer(go_binary)
    with fastrpc.Client(server.addresses[mode], **settings(mode)) as c:
        c.ping(5)
        server.close()
        time.sleep(0.2)                                 # the peer's FIN is in the socket
        with pytest.raises(ConnectionError):
            c.ping(5)
        with pytest.raises(ConnectionError):
            c.call("Arith.Sum", Args(1, 2), timeout=5)


def test_health_checks_find_a_dead_go_server_and_a_named_method_works(go_trio):
    addresses = [s.addresses["gob"] for s in go_trio]
    with Balancer(addresses, codec="gob", health_interval=0, health_misses=1, health_timeout=5) as b:
        b.check_health()
        assert all(s["healthy"] for s in b.stats().values())
        go_trio[2].close()
        b.check_health()
        stats = b.stats()
        assert not stats[addresses[2]]["healthy"] and stats[addresses[0]]["healthy"]
    with Balancer(addresses[:2], codec="gob", health_interval=0, health_method="Arith.Sum") as b:
        b.check_health()
        assert all(s["healthy"] for s in b.stats().values())
    with Balancer(addresses[:2], codec="gob", health_interval=0, health_misses=1, health_timeout=5,
                  health_method="Arith.Nope") as b:
        b.check_health()                               # a named method that fails: unhealthy
        assert not any(s["healthy"] for s in b.stats().values())


@pytest.mark.parametrize("mode", MODES)
def test_async_balancer_over_go_servers_with_a_kill(go_trio, mode):
    addresses = [s.addresses[mode] for s in go_trio]

    async def main():
        async with AsyncBalancer(addresses, strategy="round_robin", health_interval=0, **settings(mode)) as b:
            assert len({await b.call("Arith.Pid", Args()) for _ in range(30)}) == 3
            results = await asyncio.gather(*(b.call("Arith.Sum", Args(i, 1)) for i in range(600)))
            assert results == [i + 1 for i in range(600)]
            go_trio[0].close()
            failures = 0
            for i in range(200):
                try:
                    assert await b.call("Arith.Sum", Args(i, 1)) == i + 1
                except ConnectionError:
                    failures += 1
            assert failures == 0
            assert await b.map("Arith.Sum", [Args(i, 2) for i in range(300)]) == [i + 2 for i in range(300)]
    asyncio.run(asyncio.wait_for(main(), 60))
