"""End to end: AsyncClient against a server in another process."""
import asyncio

import numpy as np
import pytest

import fastrpc
from fastrpc import AsyncClient
from fastrpc.errors import ConnectionClosedError, ConnectionLostError, MethodNotFoundError, RemoteError, TimeoutError


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_call_and_errors(server):
    async def main():
        async with AsyncClient(server.address) as c:
            assert await c.call("Arith.Sum", 1, 2) == 3
            with pytest.raises(RemoteError) as info:
                await c.call("Arith.Div", 1, 0)
            assert (info.value.type, info.value.message) == ("ZeroDivisionError", "division by zero")
            with pytest.raises(MethodNotFoundError):
                await c.call("Arith.Nope")
            assert await c.call("Arith.Sum", 2, 2) == 4

    run(main())


def test_many_calls_in_flight(server):
    async def main():
        async with AsyncClient(server.address) as c:
            results = await asyncio.gather(*[c.call("Arith.Sum", i, 1) for i in range(1000)])
            assert results == [i + 1 for i in range(1000)]
            futs = [c.go("Arith.Sum", i, 2) for i in range(1000)]
            assert await asyncio.gather(*futs) == [i + 2 for i in range(1000)]

    run(main())


def test_map(server):
    async def main():
        async with AsyncClient(server.address) as c:
            assert await c.map("Arith.Sum", [(i, i) for i in range(5000)], window=256) == [2 * i for i in range(5000)]
            out = await c.map("Arith.Div", [(1, 1), (1, 0)], return_exceptions=True)
            assert out[0] == 1 and isinstance(out[1], RemoteError)
            with pytest.raises(RemoteError):
                await c.map("Arith.Div", [(1, 0)])

    run(main())


def test_timeout_and_late_reply_ignored(server):
    async def main():
        async with AsyncClient(server.address) as c:
            with pytest.raises(TimeoutError):
                await c.call("Arith.Slow", 0.5, "x", timeout=0.05)
            assert await c.call("Arith.Sum", 1, 2) == 3
            await asyncio.sleep(0.6)
            assert await c.call("Arith.Sum", 3, 4) == 7

    run(main())


def test_task_cancellation_withdraws_the_call(server):
    async def main():
        async with AsyncClient(server.address) as c:
            task = asyncio.ensure_future(c.call("Arith.Hang"))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await c.call("Arith.Sum", 1, 2) == 3
            assert c._conn.table.pending == {}

    run(main())


def test_notify_and_ping(server):
    async def main():
        async with AsyncClient(server.address) as c:
            await c.notify("Arith.Record", "async-n")
            assert 0 < await c.ping() < 5
            for _ in range(100):
                if "async-n" in await c.call("Arith.Recorded"):
                    break
                await asyncio.sleep(0.01)
            assert "async-n" in await c.call("Arith.Recorded")

    run(main())


def test_ndarray_zero_copy_result(server):
    async def main():
        async with AsyncClient(server.address) as c:
            a = np.arange(300_000, dtype=np.int32)
            np.testing.assert_array_equal(await c.call("Arith.Echo", a), a)

    run(main())


def test_lost_connection_fails_pending_calls(fresh_server):
    async def main():
        c = await AsyncClient(fresh_server.address).connect()
        futs = [c.go("Arith.Hang") for _ in range(10)]
        await c.ping()
        fresh_server.kill()
        for f in futs:
            with pytest.raises(ConnectionLostError):
                await asyncio.wait_for(f, 5)
        with pytest.raises(fastrpc.ConnectionError):
            await c.call("Arith.Sum", 1, 2)
        await c.close()

    run(main())


def test_close_fails_pending_and_refuses_new(server):
    async def main():
        c = await AsyncClient(server.address).connect()
        fut = c.go("Arith.Hang")
        await c.close()
        with pytest.raises(ConnectionClosedError):
            await fut
        with pytest.raises(ConnectionClosedError):
            await c.call("Arith.Sum", 1, 2)

    run(main())


def test_go_before_connect_is_a_clear_error(server):
    async def main():
        c = AsyncClient(server.address)
        with pytest.raises(ConnectionClosedError, match="not connected"):
            c.go("Arith.Sum", 1, 2)

    run(main())


def test_works_on_uvloop(server):
    import uvloop   # the test extra installs it; the server side uses it too

    async def main():
        async with AsyncClient(server.address) as c:
            assert await c.map("Arith.Sum", [(1, 2)] * 100) == [3] * 100

    uvloop.run(main())


def test_unix_socket(tmp_path):
    from support import server_process
    path = str(tmp_path / "a.sock")

    async def main(address):
        async with AsyncClient(address) as c:
            assert await c.call("Arith.Sum", 5, 6) == 11
            assert await c.map("Arith.Sum", [(i, 0) for i in range(50)]) == list(range(50))

    with server_process(f"unix://{path}") as srv:
        run(main(srv.address))


def test_malformed_address_fails_at_construction():
    with pytest.raises(ValueError, match="no port"):
        AsyncClient("localhost")


def test_calls_are_counted_by_how_they_ended(server):
    # Results, the handler's errors, timeouts and cancellations, as the
    # caller saw them, for the client and for a balancer over the same server.
    async def calls(target):
        assert await target.call("Arith.Sum", 1, 2) == 3
        assert await target.call("Arith.Sum", 2, 2) == 4
        with pytest.raises(RemoteError):
            await target.call("Arith.Div", 1, 0)
        with pytest.raises(TimeoutError):
            await target.call("Arith.Hang", timeout=0.05)
        task = asyncio.ensure_future(target.call("Arith.Hang"))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    # A timeout counts as TimeoutError whether the client's timer or the
    # server's copy of the deadline (DeadlineExceeded) fired first.
    def outcomes(stats):
        return {name: (s["calls"], s["errors"], s["error_types"]) for name, s in stats.items()}

    async def main():
        async with AsyncClient(server.address) as c:
            await calls(c)
            direct = outcomes(c.stats()["methods"])
        async with fastrpc.AsyncBalancer([server.address], health_interval=0) as b:
            await calls(b)
            balanced = outcomes(b.call_stats())
        return direct, balanced

    direct, balanced = run(main())
    assert direct == balanced == {
        "Arith.Sum": (2, 0, {}),
        "Arith.Div": (1, 1, {"ZeroDivisionError": 1}),
        "Arith.Hang": (2, 2, {"TimeoutError": 1, "Cancelled": 1}),
    }


def test_writes_carry_more_frames_when_many_calls_are_in_flight(server):
    # With few calls in flight a write goes once 32 frames wait; with many,
    # once half of those in flight do (up to 64): each write wakes the
    # server for more calls while it still has the other half to answer.
    async def frames_per_write(c, awaiting):
        conn = c._conn
        plain, sizes = conn.flush, []

        def flush():
            sizes.append(conn.table.out_frames)
            plain()

        async def worker(k):
            return [await c.call("Arith.Sum", k, i) for i in range(40)]

        conn.flush = flush                 # the table asks its owner to write through this
        try:
            results = await asyncio.gather(*(worker(k) for k in range(awaiting)))
        finally:
            del conn.flush
        assert results == [[k + i for i in range(40)] for k in range(awaiting)]
        return [n for n in sizes if n]

    async def main():
        async with AsyncClient(server.address) as c:
            await c.call("Arith.Sum", 0, 0)
            return await frames_per_write(c, 256), await frames_per_write(c, 48)

    many, few = run(main())
    assert max(many) == 64 and many.count(64) >= len(many) // 4, many
    assert max(few) <= 32, few
