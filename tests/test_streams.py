"""Streams end to end, against real server processes (tests/serve.py's Streams
service): server, client and bidirectional streams, sync and asyncio,
through Client, AsyncClient, Balancer and AsyncBalancer; flow control
(bounded memory both ways), cancellation from either side, deadlines,
disconnects, errors mid-stream, interleaving with unary calls, numpy chunks."""
import asyncio
import concurrent.futures
import os
import random
import socket
import threading
import time
from typing import AsyncIterator  # noqa: F401  (Guarded.Tenant's annotation)

import numpy as np
import pytest

import fastrpc
from fastrpc import packb, unpackb
from fastrpc._core import frame as wire
from fastrpc.errors import (ConnectionLostError, DeadlineExceeded, EncodeError, InvalidArgumentsError,
                            MethodNotFoundError, PermissionDeniedError, RemoteError, StreamClosedError,
                            StreamMismatchError, TimeoutError, UnsupportedError)
from support import read_frames, rss_kib, server_process, server_processes, wait_until


@pytest.fixture
def client(server):
    c = fastrpc.Client(server.address)
    c.call("Streams.Reset")
    yield c
    c.close()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


# server streams --------------------------------------------------------------------------
def test_server_stream_items_and_result(client):
    s = client.stream("Streams.Count", 1000)
    assert list(s) == list(range(1000))
    assert s.result() == "counted 1000"
    assert s.done and s.received == 1000


def test_server_stream_keyword_arguments_and_empty(client):
    assert list(client.stream("Streams.Count", 3, start=10)) == [10, 11, 12]
    assert list(client.stream("Streams.Count", 0)) == []


def test_streams_are_counted_in_the_client_stats(server):
    with fastrpc.Client(server.address) as c:
        list(c.stream("Streams.Count", 3))
        with pytest.raises(ValueError):
            list(c.stream("Streams.Fail", 1))
        c.stream("Streams.Forever").cancel()
        methods = c.stats()["methods"]
        assert methods["Streams.Count"]["calls"] == 1 and methods["Streams.Count"]["errors"] == 0
        assert methods["Streams.Fail"]["error_types"] == {"ValueError": 1}
        assert methods["Streams.Forever"]["error_types"] == {"CancelledError": 1}


def test_recv_raises_eof_at_the_end(client):
    s = client.stream("Streams.Count", 2)
    assert s.recv() == 0 and s.recv() == 1
    with pytest.raises(EOFError):
        s.recv()


def test_async_generator_and_blocking_generator(client):
    assert list(client.stream("Streams.ACount", 50)) == list(range(50))
    assert list(client.stream("Streams.SlowCount", 5, 0.001)) == list(range(5))


def test_async_client_server_stream(server):
    async def main():
        async with fastrpc.AsyncClient(server.address) as c:
            items = [x async for x in c.stream("Streams.Count", 500)]
            s = c.stream("Streams.Count", 3)
            assert await s.recv() == 0
            rest = [x async for x in s]
            return items, rest, await s.result()
    items, rest, result = run(main())
    assert items == list(range(500)) and rest == [1, 2] and result == "counted 3"


# client and bidirectional streams ----------------------------------------------------------
def test_client_stream_from_an_iterable(client):
    assert client.stream("Streams.Total", send=range(10_000)).result() == sum(range(10_000))
    assert client.stream("Streams.Total", 3, send=iter([1, 2])).result() == 9
    assert client.stream("Streams.Total", send=[], scale=2).result() == 0


def test_client_stream_sent_by_hand(client):
    s = client.stream("Streams.ATotal")
    for i in range(100):
        s.send(i)
    s.done_writing()
    assert s.result() == sum(range(100))
    with pytest.raises(StreamClosedError):
        s.send(1)


def test_bidirectional_ping_pong(client):
    for method in ("Streams.Echo", "Streams.AEcho"):
        with client.stream(method) as s:
            for i in range(50):
                s.send({"n": i})
                assert s.recv() == {"n": i}
            s.done_writing()
            assert list(s) == []


def test_bidirectional_from_an_iterable_larger_than_both_windows(client):
    # Sending and receiving at once: neither side's window can deadlock it.
    out = list(client.stream("Streams.Echo", send=range(20_000), window=(64, 1 << 20)))
    assert out == list(range(20_000))


def test_async_client_and_bidirectional(server):
    async def items():
        for i in range(300):
            yield i

    async def main():
        async with fastrpc.AsyncClient(server.address) as c:
            total = await c.stream("Streams.ATotal", send=items()).result()
            sync_total = await c.stream("Streams.Total", send=range(50)).result()
            doubled = [x async for x in c.stream("Streams.AEcho", send=range(100), times=2)]
            s = c.stream("Streams.Echo")
            got = []
            for i in range(20):
                await s.send(i)
                got.append(await s.recv())
            await s.done_writing()
            return total, sync_total, doubled, got, [x async for x in s]
    total, sync_total, doubled, got, rest = run(main())
    assert total == sum(range(300)) and sync_total == sum(range(50))
    assert doubled == [2 * i for i in range(100)]
    assert got == list(range(20)) and rest == []


# errors ---------------------------------------------------------------------------------
def test_error_mid_stream_after_the_items_before_it(client):
    s = client.stream("Streams.Fail", 3)
    assert [next(s), next(s), next(s)] == [0, 1, 2]
    with pytest.raises(ValueError, match="failed after 3") as info:
        next(s)
    assert isinstance(info.value, RemoteError)
    with pytest.raises(RemoteError) as info:
        list(client.stream("Streams.Fail", 2, "NotFound"))
    assert (info.value.type, info.value.message) == ("NotFound", "gone after 2")


def test_stream_and_unary_mismatch_is_a_clear_error(client):
    with pytest.raises(StreamMismatchError, match="is a streaming method"):
        client.call("Streams.Count", 3)
    with pytest.raises(StreamMismatchError, match="is not a streaming method"):
        list(client.stream("Arith.Sum", 1, 2))
    with pytest.raises(MethodNotFoundError):
        list(client.stream("Streams.Nope"))
    with pytest.raises(InvalidArgumentsError):
        list(client.stream("Streams.Count"))
    assert client.call("Arith.Sum", 1, 2) == 3          # the connection carries on


def test_an_unencodable_item_fails_the_stream(client):
    with pytest.raises(EncodeError):
        list(client.stream("Streams.Echo", send=[1, object()]))
    assert client.call("Arith.Sum", 1, 2) == 3


def test_go_codecs_have_no_streams():
    with server_process(env={"FASTRPC_TEST_CODEC": "gob"}) as proc:
        with fastrpc.Client(proc.address, codec="gob") as c:
            with pytest.raises(UnsupportedError, match="streams need the fastrpc protocol"):
                c.stream("Arith.Sum", 1, 2)


# flow control -----------------------------------------------------------------------------
def test_a_consumer_that_does_not_read_stops_the_producer(client):
    s = client.stream("Streams.Forever", window=(16, 1 << 20))
    assert next(s) == 1
    time.sleep(0.5)
    produced = client.call("Streams.Produced")
    assert produced <= 16                              # the window, not more
    taken = [next(s) for _ in range(15)]                # take the rest of the window
    assert taken == list(range(2, 17))
    assert wait_until(lambda: client.call("Streams.Produced") > 16)   # credit went back
    time.sleep(0.3)
    assert client.call("Streams.Produced") <= 16 + 16
    s.cancel()


def test_byte_window_bounds_memory_of_large_items(client):
    # 1 MiB arrays against a 2 MiB byte window: at most 2 (plus the one past
    # the credit) are ever buffered, however many the server could make.
    s = client.stream("Streams.Chunks", 200, 1 << 20, window=(1000, 2 << 20))
    first = next(s)
    time.sleep(0.5)
    assert s._slot.buffered <= 3
    rest = list(s)
    assert len(rest) == 199 and rest[-1][0] == 199.0 and first[0] == 0.0


def test_the_server_holds_the_client_back(fresh_server):
    # A handler that stops reading: the client's send() blocks once the
    # server's window (8 items here) is out.
    with server_process(env={"FASTRPC_TEST_SERVER": '{"stream_window": [8, 1048576]}'}) as proc:
        with fastrpc.Client(proc.address) as c:
            s = c.stream("Streams.Stall", 4)
            raised = []

            def send_all():
                try:
                    for i in range(100):
                        s.send(i)
                except BaseException as exc:             # cancelled below, while blocked in send()
                    raised.append(exc)
            sender = threading.Thread(target=send_all, daemon=True)
            sender.start()
            assert wait_until(lambda: c.call("Streams.Taken") == 4)
            time.sleep(0.5)
            assert sender.is_alive()
            assert 4 + 4 <= s.sent <= 4 + 8 + 1        # taken, then the window
            s.cancel()
            sender.join(5)
            assert not sender.is_alive()               # send() raised once the stream ended
            assert isinstance(raised[0], concurrent.futures.CancelledError)
            assert wait_until(lambda: c.call("Streams.Ended", "Stall") == "CancelledError")


def test_memory_stays_bounded_when_nobody_reads(server):
    """Measured in resident memory, both ways: a handler that stops reading
    while the client offers 200 MiB of 1 MiB arrays, and a client that stops
    reading while the server could send 200 MiB. Each side holds about its
    byte window (4 MiB by default, 2 MiB asked for here), not the data offered."""
    with fastrpc.Client(server.address) as c:
        c.call("Streams.Reset")
        before = rss_kib(server.pid)
        s = c.stream("Streams.Stall", 1)
        chunk = np.ones(1 << 17)                          # 1 MiB
        sender = threading.Thread(target=lambda: _send_until_cancelled(s, chunk, 200), daemon=True)
        sender.start()
        assert wait_until(lambda: c.call("Streams.Taken") == 1)
        time.sleep(0.5)
        grown_mib = (rss_kib(server.pid) - before) / 1024
        assert s.sent <= 1 + 4 + 1 + 1                    # taken, the 4 MiB window, one past it
        assert grown_mib < 32, grown_mib
        s.cancel()
        sender.join(10)

        mine = rss_kib(os.getpid())
        r = c.stream("Streams.Chunks", 200, 1 << 20, window=(1000, 2 << 20))
        next(r)
        time.sleep(0.5)
        assert r._slot.buffered <= 3
        assert (rss_kib(os.getpid()) - mine) / 1024 < 32
        r.cancel()


def _send_until_cancelled(stream, item, count):
    try:
        for _ in range(count):
            stream.send(item)
    except (concurrent.futures.CancelledError, StreamClosedError):
        pass


def test_an_error_in_the_callers_iterable_fails_the_stream_and_cancels_the_handler(client):
    def items():
        yield 1
        yield 2
        assert wait_until(lambda: client.call("Streams.Taken") == 2)   # the handler is running
        raise KeyError("bad input")
    s = client.stream("Streams.Stall", 2, send=items())
    with pytest.raises(KeyError, match="bad input"):
        s.result()
    assert wait_until(lambda: client.call("Streams.Ended", "Stall") == "CancelledError")


def test_the_server_ending_first_stops_the_client_sending(client):
    # From an endless iterable: the handler's answer ends the stream, and the
    # thread sending the iterable stops.
    def endless():
        i = 0
        while True:
            yield i
            i += 1
    s = client.stream("Streams.First", 3, send=endless())
    assert s.result() == [0, 1, 2]
    s._feeder.join(5)
    assert not s._feeder.is_alive()
    by_hand = client.stream("Streams.First", 1)
    by_hand.send("a")
    assert by_hand.result() == ["a"]
    with pytest.raises(StreamClosedError, match="has ended"):
        by_hand.send("b")


def test_the_server_ending_first_stops_an_async_sender(server):
    async def endless():
        i = 0
        while True:
            yield i
            i += 1
            await asyncio.sleep(0)

    async def main():
        async with fastrpc.AsyncClient(server.address) as c:
            s = c.stream("Streams.First", 3, send=endless())
            first = await s.result()
            await asyncio.wait_for(asyncio.shield(s._feeder), 5) if not s._feeder.done() else None
            return first, s._feeder.done()
    assert run(main()) == ([0, 1, 2], True)


def test_open_streams_do_not_stop_the_server_reading_and_are_limited():
    # max_inflight=4: four streams stalled on their credit must not pause the
    # connection (their credit could never arrive); a fifth is refused.
    with server_process(env={"FASTRPC_TEST_SERVER": '{"max_inflight": 4}'}) as proc:
        with fastrpc.Client(proc.address) as c:
            streams = [c.stream("Streams.Count", 50, window=(1, 1 << 20)) for _ in range(4)]
            assert [next(s) for s in streams] == [0, 0, 0, 0]
            assert c.call("Arith.Sum", 1, 2, timeout=5) == 3     # calls still go through
            with pytest.raises(RemoteError) as info:
                list(c.stream("Streams.Count", 1))
            assert info.value.type == "TooManyStreams"
            assert all(list(s) == list(range(1, 50)) for s in streams)
            assert list(c.stream("Streams.Count", 2)) == [0, 1]   # room again


# cancellation, deadlines, disconnects -------------------------------------------------------------
def test_breaking_out_of_the_loop_ends_the_stream_on_the_server(client):
    for item in client.stream("Streams.Forever", 0.001):
        if item >= 5:
            break
    assert wait_until(lambda: client.call("Streams.Ended", "Forever") == "GeneratorExit", 5)


def test_breaking_out_of_an_async_for_ends_the_stream_on_the_server(server):
    async def main():
        async with fastrpc.AsyncClient(server.address) as c:
            await c.call("Streams.Reset")
            async for item in c.stream("Streams.Forever", 0.001):
                if item >= 5:
                    break
            for _ in range(200):
                if await c.call("Streams.Ended", "Forever"):
                    return await c.call("Streams.Ended", "Forever")
                await asyncio.sleep(0.025)
    assert run(main()) == "GeneratorExit"


def test_cancel_reaches_an_async_generator(client):
    s = client.stream("Streams.AForever")
    assert next(s) == 1
    assert s.cancel() is True and s.cancel() is False
    with pytest.raises(concurrent.futures.CancelledError):
        next(s)
    assert wait_until(lambda: client.call("Streams.Ended", "AForever") in ("CancelledError", "GeneratorExit"), 5)


def test_cancelling_the_awaiting_task_cancels_the_stream(server):
    async def main():
        async with fastrpc.AsyncClient(server.address) as c:
            await c.call("Streams.Reset")

            async def consume():
                async for _ in c.stream("Streams.AForever", 0.01):
                    pass
            task = asyncio.ensure_future(consume())
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            for _ in range(200):
                if await c.call("Streams.Ended", "AForever"):
                    return await c.call("Streams.Ended", "AForever")
                await asyncio.sleep(0.025)
    assert run(main()) in ("CancelledError", "GeneratorExit")


def test_deadline_ends_the_stream_on_both_sides(client):
    s = client.stream("Streams.AForever", 0.01, timeout=0.3)
    started = time.monotonic()
    with pytest.raises((TimeoutError, DeadlineExceeded)):
        for _ in s:
            pass
    assert time.monotonic() - started < 5
    assert wait_until(lambda: client.call("Streams.Ended", "AForever") in ("CancelledError", "GeneratorExit"), 5)


def test_client_disconnect_ends_the_handler(server):
    watcher = fastrpc.Client(server.address)
    watcher.call("Streams.Reset")
    c = fastrpc.Client(server.address)
    s = c.stream("Streams.Forever", 0.001)
    assert next(s) == 1
    c.close()
    with pytest.raises(fastrpc.ConnectionError):
        list(s)
    assert wait_until(lambda: watcher.call("Streams.Ended", "Forever") == "GeneratorExit", 5)
    watcher.close()


def test_server_death_fails_the_stream(fresh_server):
    with fastrpc.Client(fresh_server.address) as c:
        s = c.stream("Streams.Forever", 0.001)
        assert next(s) == 1
        fresh_server.kill()
        with pytest.raises(ConnectionLostError):
            list(s)


# sharing the connection -------------------------------------------------------------------------
def test_streams_and_calls_interleave_on_one_connection_from_many_threads(client):
    rng = random.Random(20)
    errors = []

    def worker(seed):
        r = random.Random(seed)
        try:
            for _ in range(30):
                kind = r.choice(["server", "client", "bidi", "call", "go", "map", "partial"])
                n = r.randrange(0, 300)
                if kind == "server":
                    assert list(client.stream("Streams.Count", n)) == list(range(n))
                elif kind == "client":
                    assert client.stream("Streams.Total", send=range(n)).result() == sum(range(n))
                elif kind == "bidi":
                    assert list(client.stream("Streams.AEcho", send=range(n))) == list(range(n))
                elif kind == "call":
                    assert client.call("Arith.Sum", n, 1) == n + 1
                elif kind == "go":
                    assert client.go("Arith.Sum", n, 2).result() == n + 2
                elif kind == "map":
                    assert client.map("Arith.Sum", [(i, 1) for i in range(n)]) == [i + 1 for i in range(n)]
                else:
                    s = client.stream("Streams.Count", n + 10)
                    assert [next(s) for _ in range(5)] == list(range(5))
                    s.cancel()
        except BaseException as exc:            # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(rng.random(),)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:3]
    assert client.call("Arith.Sum", 2, 2) == 4


def test_streams_and_calls_interleave_in_many_tasks(server):
    async def main():
        async with fastrpc.AsyncClient(server.address) as c:
            async def worker(seed):
                r = random.Random(seed)
                for _ in range(30):
                    kind = r.choice(["server", "client", "bidi", "call"])
                    n = r.randrange(0, 300)
                    if kind == "server":
                        assert [x async for x in c.stream("Streams.ACount", n)] == list(range(n))
                    elif kind == "client":
                        assert await c.stream("Streams.ATotal", send=range(n)).result() == sum(range(n))
                    elif kind == "bidi":
                        assert [x async for x in c.stream("Streams.Echo", send=range(n))] == list(range(n))
                    else:
                        assert await c.call("Arith.Sum", n, 1) == n + 1
            await asyncio.gather(*(worker(i) for i in range(8)))
    run(main())


# numpy -------------------------------------------------------------------------------------
def test_numpy_chunks_both_ways(client):
    chunks = list(client.stream("Streams.Chunks", 5, 1 << 16))
    assert [c.shape for c in chunks] == [(8192,)] * 5
    assert all(np.all(c == i) for i, c in enumerate(chunks))
    assert all(not c.flags.owndata for c in chunks)             # views of the receive buffer: no copy
    arrays = [np.arange(1000, dtype=np.float64) * i for i in range(10)]
    assert client.stream("Streams.ArraySum", send=arrays).result() == float(sum(a.sum() for a in arrays))


# balancers -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def three():
    with server_processes(3) as procs:
        yield procs


def test_balanced_stream_is_pinned_to_one_endpoint(three):
    with fastrpc.Balancer([p.address for p in three], strategy="round_robin") as b:
        pids = set()
        for _ in range(6):
            items = list(b.stream("Streams.Pids", 50))
            assert [i for _, i in items] == list(range(50))
            assert len({pid for pid, _ in items}) == 1           # one endpoint for its life
            pids.add(items[0][0])
        assert pids == {p.pid for p in three}                  # and the strategy spreads streams


def test_balanced_stream_counts_in_flight_at_its_endpoint(three):
    with fastrpc.Balancer([p.address for p in three], strategy="least_connections") as b:
        s = b.stream("Streams.Pids", 10, window=(1, 1 << 20))
        first = next(s)
        stats = b.stats()
        busy = [a for a, st in stats.items() if st["in_flight"] == 1]
        assert len(busy) == 1
        assert list(s)[-1][1] == 9 and first[1] == 0
        assert all(st["in_flight"] == 0 for st in b.stats().values())


def test_balanced_stream_fails_over_from_a_dead_endpoint():
    with server_processes(3) as procs:
        dead = procs[0]
        dead.kill()
        with fastrpc.Balancer([p.address for p in procs], strategy="round_robin",
                              failure="failover") as b:
            for _ in range(30):
                assert list(b.stream("Streams.Count", 5)) == list(range(5))
                assert b.stream("Streams.Total", send=range(10)).result() == 45


def test_balanced_stream_keyed_goes_where_the_key_goes(three):
    with fastrpc.Balancer([p.address for p in three], strategy="consistent_hash") as b:
        pids = {list(b.stream("Streams.Pids", 1, key="user-7"))[0][0] for _ in range(5)}
        assert len(pids) == 1


def test_async_balancer_streams(three):
    async def main():
        async with fastrpc.AsyncBalancer([p.address for p in three], strategy="round_robin") as b:
            pids = set()
            for _ in range(6):
                items = [x async for x in b.stream("Streams.Pids", 20)]
                assert len({pid for pid, _ in items}) == 1
                pids.add(items[0][0])
            total = await b.stream("Streams.ATotal", send=range(100)).result()
            return pids, total
    pids, total = run(main())
    assert pids == {p.pid for p in three} and total == 4950


# a peer that speaks the frames itself --------------------------------------------------------------
def _raw(address):
    host, port = address[len("tcp://"):].rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=5)


def _open(seq, method, args, credit=(1024, 1 << 20)):
    return (wire.encode_frame(wire.REQUEST, seq, method, packb(args), stream=True)
            + wire.encode_frame(wire.CREDIT, seq, "", packb(list(credit))))


def _frames_until_reply(sock, seq):
    """Every frame of stream `seq` up to and including its RESPONSE or ERROR."""
    out = []
    while True:
        frames = read_frames(sock, 1)
        assert frames, "the server closed the connection"
        out += [f for f in frames if f.seq == seq]
        if out and out[-1].kind in (wire.RESPONSE, wire.ERROR):
            return out


def test_stray_stream_frames_are_ignored_and_the_connection_carries_on(server):
    with _raw(server.address) as sock:
        sock.sendall(wire.encode_frame(wire.ITEM, 77, "", packb(1))
                     + wire.encode_frame(wire.END, 78, "", b"")
                     + wire.encode_frame(wire.CREDIT, 79, "", packb([5, 5]))
                     + wire.encode_frame(wire.REQUEST, 1, "Arith.Sum", packb([1, 2])))
        frames = _frames_until_reply(sock, 1)
        assert frames[-1].kind == wire.RESPONSE and unpackb(frames[-1].payload) == 3


def test_a_client_beyond_its_credit_fails_its_stream_only(server):
    with server_process(env={"FASTRPC_TEST_SERVER": '{"stream_window": [4, 1048576]}'}) as proc:
        with _raw(proc.address) as sock:
            # Stall takes 2 items, then reads no more: the 7th item is past 2 + 4.
            items = b"".join(wire.encode_frame(wire.ITEM, 5, "", packb(i)) for i in range(12))
            sock.sendall(_open(5, "Streams.Stall", [2]) + items)
            frames = _frames_until_reply(sock, 5)
            assert frames[0].kind == wire.CREDIT and unpackb(frames[0].payload) == [4, 1048576]
            assert frames[-1].kind == wire.ERROR
            assert unpackb(frames[-1].payload)[:1] == ["ProtocolError"]
            sock.sendall(wire.encode_frame(wire.REQUEST, 6, "Arith.Sum", packb([2, 2])))
            assert unpackb(_frames_until_reply(sock, 6)[-1].payload) == 4


def test_malformed_credit_and_items_sent_to_a_generator_fail_their_stream(server):
    with _raw(server.address) as sock:
        sock.sendall(wire.encode_frame(wire.REQUEST, 3, "Streams.Forever", packb([0.01]), stream=True)
                     + wire.encode_frame(wire.CREDIT, 3, "", packb("lots")))
        frames = _frames_until_reply(sock, 3)
        assert frames[-1].kind == wire.ERROR and unpackb(frames[-1].payload)[0] == "DecodeError"
        sock.sendall(_open(4, "Streams.Count", [3], credit=(1, 1 << 20))
                     + wire.encode_frame(wire.ITEM, 4, "", packb("unwanted")))
        frames = _frames_until_reply(sock, 4)
        assert frames[-1].kind == wire.ERROR and unpackb(frames[-1].payload)[0] == "StreamMismatch"


def test_the_server_sends_no_more_than_the_credit(server):
    with _raw(server.address) as sock:
        sock.sendall(_open(9, "Streams.Count", [100], credit=(3, 1 << 20)))
        frames = read_frames(sock, 3)
        assert [unpackb(f.payload) for f in frames] == [0, 1, 2]
        with pytest.raises(socket.timeout):              # nothing more until credit comes
            read_frames(sock, 1, timeout=0.5)
        sock.sendall(wire.encode_frame(wire.CREDIT, 9, "", packb([200, 1 << 20])))
        frames = _frames_until_reply(sock, 9)
        assert [unpackb(f.payload) for f in frames[:-1]] == list(range(3, 100))
        assert frames[-1].kind == wire.RESPONSE and unpackb(frames[-1].payload) == "counted 100"


# server interceptors ----------------------------------------------------------------------------------
class Guarded:
    """Streams behind a guard interceptor (served in this process)."""

    def Count(self, n):
        yield from range(n)

    async def Tenant(self, items: "AsyncIterator[int]"):
        total = 0
        async for x in items:
            total += x
        return [fastrpc.current_call().metadata["tenant"], total]


def guard(call, proceed):
    """Refuses calls without a tenant; adds 1 to Count's argument; names the method in the metadata."""
    if not call.metadata.get("tenant"):
        raise PermissionDeniedError("PermissionDenied", f"{call.method}: no tenant")
    if call.method == "Guarded.Count":
        call.args = (call.args[0] + 1,)
    call.metadata["tenant"] = call.metadata["tenant"].upper()
    return proceed(call)


@pytest.fixture
def guarded():
    """The address of a server in this process (its interceptors are
    functions of this module) guarded by `guard`."""
    server = fastrpc.Server(interceptors=[guard])
    server.register(Guarded())
    address = server.start()
    yield address
    server.close()


def test_server_interceptors_run_as_a_stream_opens(guarded):
    with fastrpc.Client(guarded) as c:
        with pytest.raises(PermissionDeniedError, match="Guarded.Count: no tenant"):
            list(c.stream("Guarded.Count", 2))
        with pytest.raises(PermissionDeniedError):
            c.stream("Guarded.Tenant", send=[1, 2]).result()
    with fastrpc.Client(guarded, metadata={"tenant": "acme"}) as c:
        assert list(c.stream("Guarded.Count", 2)) == [0, 1, 2]      # the argument as the guard left it
        assert c.stream("Guarded.Tenant", send=[1, 2]).result() == ["ACME", 3]


def tenant(call, proceed):
    """A client interceptor: every call and stream carries a tenant."""
    call.metadata["tenant"] = "acme"
    return proceed(call)


def test_client_interceptors_run_as_a_stream_opens(guarded):
    with fastrpc.Client(guarded, interceptors=[tenant]) as c:
        s = c.stream("Guarded.Count", 2)
        assert isinstance(s, fastrpc.Stream) and list(s) == [0, 1, 2]
        assert c.stream("Guarded.Tenant", send=[1, 2]).result() == ["ACME", 3]
    with fastrpc.Balancer([guarded], interceptors=[tenant]) as b:
        assert list(b.stream("Guarded.Count", 1)) == [0, 1]

    async def main():
        async def atenant(call, proceed):
            call.metadata["tenant"] = "async"
            return await proceed(call)
        async with fastrpc.AsyncClient(guarded, interceptors=[atenant]) as c:
            tenant_seen = await c.stream("Guarded.Tenant", send=[5]).result()
        async with fastrpc.AsyncBalancer([guarded], interceptors=[atenant]) as b:
            counted = [x async for x in b.stream("Guarded.Count", 1)]
        return tenant_seen, counted
    assert run(main()) == (["ASYNC", 5], [0, 1])


# which handlers stream --------------------------------------------------------------------------------
def test_which_handlers_stream_is_read_from_the_handler():
    from typing import AsyncIterator, Iterable, Iterator
    from fastrpc._core.servercore import STREAM_IN, STREAM_OUT
    from fastrpc.server.handlers import build_handler

    class Svc:
        def listed(self, values: Iterable[int]) -> int:      # a list argument: unary
            return sum(values)

        def summed(self, scale: int, values: Iterator[int]) -> int:
            return sum(values) * scale

        def counted(self, n):
            yield from range(n)

        async def echoed(self, items: "AsyncIterator[int]"):
            async for x in items:
                yield x

    svc = Svc()
    kinds = {name: build_handler(getattr(svc, name), f"Svc.{name}") for name in
             ("listed", "summed", "counted", "echoed")}
    assert kinds["listed"].stream == 0
    assert kinds["summed"].stream == STREAM_IN and kinds["summed"].input_at == 1
    assert (kinds["summed"].min_args, kinds["summed"].max_args) == (1, 1)   # the client sends scale only
    assert kinds["counted"].stream == STREAM_OUT
    assert kinds["echoed"].stream == STREAM_IN | STREAM_OUT


def test_the_client_items_go_to_the_annotated_parameter_wherever_it_is(client):
    assert client.stream("Streams.Total", 5, send=[1, 2]).result() == 15


def test_async_balanced_stream_fails_over_from_a_dead_endpoint():
    with server_processes(3) as procs:
        procs[1].kill()

        async def main():
            async with fastrpc.AsyncBalancer([p.address for p in procs], strategy="round_robin",
                                             failure="failover") as b:
                for _ in range(12):
                    assert [x async for x in b.stream("Streams.Count", 4)] == [0, 1, 2, 3]
                return b.stats()[procs[1].address]["errors"]
        assert run(main()) >= 1                                   # the dead one was tried, and counted
