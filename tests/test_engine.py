"""The call engine: any interleaving from any threads and tasks, dead backends,
fork, timeouts of any length, futures that pass for concurrent.futures ones."""
import asyncio
import concurrent.futures
import gc
import os
import random
import threading
import time
import weakref

import pytest

import fastrpc
from fastrpc import Balancer
from fastrpc.errors import ConnectionError, TimeoutError
from support import server_processes, unused_address, wait_until


# randomized interleavings ------------------------------------------------------------------
def _mixed_ops(client, rng, thread_id, rounds, errors, notified):
    """Random calls of every kind on one shared client; each result is checked."""
    for n in range(rounds):
        op = rng.choice(["call", "go", "map", "notify", "go_cancel", "call_timeout", "ping"])
        a = rng.randrange(1_000_000)
        try:
            if op == "call":
                assert client.call("Arith.Sum", a, thread_id) == a + thread_id
            elif op == "go":
                futures = [(client.go("Arith.Sum", a + i, 1), a + i + 1) for i in range(rng.randrange(1, 40))]
                rng.shuffle(futures)
                for f, expected in futures:
                    assert f.result(10) == expected
            elif op == "map":
                size = rng.randrange(1, 600)
                window = rng.choice([1, 7, 64, 256])
                assert client.map("Arith.Sum", [(a, i) for i in range(size)], window=window) == \
                    [a + i for i in range(size)]
            elif op == "notify":
                client.notify("Arith.Record", [thread_id, n])
                notified.append([thread_id, n])
            elif op == "go_cancel":
                f = client.go("Arith.Slow", 0.05, a)
                if rng.random() < 0.5:
                    f.cancel()
                    assert f.cancelled() or f.result(10) == a
                else:
                    assert f.result(10) == a
            elif op == "call_timeout":
                with pytest.raises(TimeoutError):
                    client.call("Arith.Slow", 1.0, a, timeout=0.01)
            elif op == "ping" and hasattr(client, "ping"):
                assert client.ping(10) >= 0
        except Exception as exc:          # reported by the test, with the operation
            errors.append((op, repr(exc)))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_any_mix_of_calls_from_many_threads_on_one_client(server, seed):
    rng = random.Random(seed)
    errors, notified = [], []
    with fastrpc.Client(server.address) as client:
        threads = [threading.Thread(target=_mixed_ops,
                                    args=(client, random.Random(rng.random()), t, 60, errors, notified))
                   for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads), "a thread is stuck in a call"
        assert errors == []
        # every notification arrived, whatever ran between them
        assert wait_until(lambda: len(client.call("Arith.Recorded")) >= len(notified), 10)


def test_map_while_another_thread_calls(server):
    """The reproduction from the issue: a map and a loop of calls share a client."""
    with fastrpc.Client(server.address) as c:
        stop = threading.Event()
        failures = []

        def caller():
            while not stop.is_set():
                try:
                    assert c.call("Arith.Sum", 1, 2) == 3
                except Exception as exc:
                    failures.append(exc)

        t = threading.Thread(target=caller)
        t.start()
        try:
            result = c.map("Arith.Sum", [(i, 1) for i in range(20000)], window=256)
        finally:
            stop.set()
            t.join(30)
        assert result == [i + 1 for i in range(20000)]
        assert failures == []


@pytest.mark.parametrize("seed", [4, 5])
def test_any_mix_of_calls_from_many_threads_on_one_balancer(seed):
    rng = random.Random(seed)
    errors, notified = [], []
    with server_processes(3) as servers:
        with Balancer([s.address for s in servers], strategy="p2c", health_interval=0) as b:
            threads = [threading.Thread(target=_mixed_ops,
                                        args=(b, random.Random(rng.random()), t, 40, errors, notified))
                       for t in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            assert not any(t.is_alive() for t in threads)
            assert errors == []
            assert all(s["in_flight"] == 0 for s in b.stats().values())


async def _mixed_tasks(client, rng, task_id, rounds, errors):
    for _ in range(rounds):
        op = rng.choice(["call", "go", "map", "notify", "cancel", "timeout"])
        a = rng.randrange(1_000_000)
        try:
            if op == "call":
                assert await client.call("Arith.Sum", a, task_id) == a + task_id
            elif op == "go":
                futures = [client.go("Arith.Sum", a, i) for i in range(rng.randrange(1, 30))]
                assert await asyncio.gather(*futures) == [a + i for i in range(len(futures))]
            elif op == "map":
                size = rng.randrange(1, 400)
                assert await client.map("Arith.Sum", [(a, i) for i in range(size)],
                                        window=rng.choice([1, 16, 128])) == [a + i for i in range(size)]
            elif op == "notify":
                await client.notify("Arith.Record", [task_id])
            elif op == "cancel":
                task = asyncio.ensure_future(client.call("Arith.Slow", 0.05, a))
                await asyncio.sleep(rng.random() * 0.05)
                task.cancel()
                try:
                    assert await task == a
                except asyncio.CancelledError:
                    pass
            elif op == "timeout":
                with pytest.raises(TimeoutError):
                    await client.call("Arith.Slow", 1.0, a, timeout=0.01)
        except Exception as exc:
            errors.append((op, repr(exc)))


@pytest.mark.parametrize("kind", ["client", "balancer"])
def test_any_mix_of_calls_from_many_tasks(kind, server):
    async def main():
        errors = []
        if kind == "client":
            client = await fastrpc.AsyncClient(server.address).connect()
        else:
            client = fastrpc.AsyncBalancer([server.address], health_interval=0)
        rng = random.Random(7)
        try:
            tasks = []
            for t in range(20):
                tasks.append(_mixed_tasks(client, random.Random(rng.random()), t, 25, errors))
            await asyncio.gather(*tasks)
            if kind == "balancer":
                assert all(s["in_flight"] == 0 for s in client.stats().values())
        finally:
            await client.close()
        return errors
    assert asyncio.run(asyncio.wait_for(main(), 120)) == []


# a backend that died before a call was written ---------------------------------------------------
@pytest.mark.parametrize("how", ["kill", "term"])
def test_a_dead_backend_costs_no_call(how):
    with server_processes(3) as servers:
        with Balancer([s.address for s in servers], strategy="round_robin", health_interval=0) as b:
            for i in range(30):                      # every backend has a connection
                assert b.call("Arith.Sum", i, 1) == i + 1
            victim = servers[1]
            if how == "kill":
                victim.kill()
            else:
                assert victim.terminate() == 0
            failures = []
            for i in range(300):
                try:
                    assert b.call("Arith.Sum", i, 1) == i + 1
                except ConnectionError as exc:
                    failures.append(exc)
            assert failures == []


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_dead_backend_costs_no_call_async(loop):
    with server_processes(3) as servers:
        async def main():
            async with fastrpc.AsyncBalancer([s.address for s in servers], strategy="round_robin",
                                             health_interval=0) as b:
                for i in range(30):
                    assert await b.call("Arith.Sum", i, 1) == i + 1
                servers[1].kill()
                failures = []
                for i in range(300):
                    try:
                        assert await b.call("Arith.Sum", i, 1) == i + 1
                    except ConnectionError as exc:
                        failures.append(exc)
                return failures
        if loop == "uvloop":
            import uvloop
            assert uvloop.run(main()) == []
        else:
            assert asyncio.run(main()) == []


# fork ---------------------------------------------------------------------------------------------
@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork() is POSIX-only")
@pytest.mark.parametrize("kind", ["client", "balancer"])
def test_a_client_used_across_fork_loses_no_call(server, kind):
    if kind == "client":
        client = fastrpc.Client(server.address)
    else:
        client = Balancer([server.address], health_interval=0)
    try:
        assert client.call("Arith.Sum", 1, 2) == 3
        in_flight = [client.go("Arith.Slow", 0.2, i) for i in range(100)]   # the parent's, across the fork
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:                                   # the child: its own connection, every call answered
            code = 1
            try:
                futures = [client.go("Arith.Sum", i, 1, timeout=10) for i in range(500)]
                ok = all(f.result(10) == i + 1 for i, f in enumerate(futures))
                ok = ok and all(client.call("Arith.Sum", i, 2) == i + 2 for i in range(200))
                code = 0 if ok else 2
            except BaseException:
                code = 3
            finally:
                os.write(write_end, bytes([code]))
                os._exit(code)
        os.close(write_end)
        assert [f.result(10) for f in in_flight] == list(range(100))      # the child took none of them
        # the parent, meanwhile, on its own connection
        futures = [client.go("Arith.Sum", i, 1, timeout=10) for i in range(500)]
        assert [f.result(10) for f in futures] == [i + 1 for i in range(500)]
        assert all(client.call("Arith.Sum", i, 2) == i + 2 for i in range(200))
        _, status = os.waitpid(pid, 0)
        assert os.read(read_end, 1) == b"\x00"
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        os.close(read_end)
    finally:
        client.close()


# timeouts of any length -------------------------------------------------------------------------
@pytest.mark.parametrize("timeout", [30 * 86400.0, 10 ** 9, float("inf")])
def test_any_timeout_works(server, timeout):
    with fastrpc.Client(server.address) as c:
        assert c.call("Arith.Slow", 0.05, "ok", timeout=timeout) == "ok"
        assert c.go("Arith.Slow", 0.05, "ok", timeout=timeout).result(timeout) == "ok"
        assert c.map("Arith.Sum", [(1, 2)], timeout=timeout) == [3]
    with Balancer([server.address], health_interval=0) as b:
        assert b.call("Arith.Slow", 0.05, "ok", timeout=timeout) == "ok"

    async def main():
        async with fastrpc.AsyncClient(server.address) as ac:
            return await ac.call("Arith.Slow", 0.05, "ok", timeout=timeout)
    assert asyncio.run(main()) == "ok"


def test_a_nan_timeout_is_refused(server):
    with fastrpc.Client(server.address) as c:
        with pytest.raises(ValueError):
            c.call("Arith.Sum", 1, 2, timeout=float("nan"))


# futures ------------------------------------------------------------------------------------------
def test_futures_work_with_concurrent_futures_and_asyncio(server):
    """A CallFuture is compiled; it still passes for a concurrent.futures.Future:
    isinstance, wait(), as_completed(), asyncio.wrap_future() and callbacks."""
    with fastrpc.Client(server.address) as c:
        futures = [c.go("Arith.Slow", 0.01 * (i % 5), i) for i in range(20)]
        assert all(isinstance(f, concurrent.futures.Future) for f in futures)
        done, not_done = concurrent.futures.wait(futures, timeout=10)
        assert len(done) == 20 and not not_done
        more = [c.go("Arith.Slow", 0.01 * (i % 5), i) for i in range(20)]
        assert sorted(f.result() for f in concurrent.futures.as_completed(more, timeout=10)) == list(range(20))

        seen = []
        event = threading.Event()
        f = c.go("Arith.Slow", 0.05, "cb")
        f.add_done_callback(lambda fut: (seen.append(fut.result()), event.set()))
        assert event.wait(5) and seen == ["cb"]
        f.add_done_callback(lambda fut: seen.append("late"))    # already done: called at once
        assert seen == ["cb", "late"]

        async def bridge():
            return await asyncio.wrap_future(c.go("Arith.Sum", 20, 22))
        assert asyncio.run(bridge()) == 42

        f = c.go("Arith.Slow", 5, "never")
        assert f.cancel() and f.cancelled() and f.done()
        with pytest.raises(concurrent.futures.CancelledError):
            f.result()
        first = c.go("Arith.Slow", 5, "x")
        done, _ = concurrent.futures.wait([first, c.go("Arith.Sum", 1, 1)], timeout=5,
                                          return_when=concurrent.futures.FIRST_COMPLETED)
        assert len(done) == 1 and not first.done()
        first.cancel()


def test_a_callback_may_call_again(server):
    """Callbacks run outside the reader's frame loop: they may start and wait for calls."""
    with fastrpc.Client(server.address) as c:
        results = []
        done = threading.Event()

        def chain(fut, depth=0):
            results.append(fut.result())
            if depth < 20:
                nxt = c.go("Arith.Sum", fut.result(), 1)
                assert c.call("Arith.Sum", 0, 0) == 0          # and wait, inside a callback
                nxt.add_done_callback(lambda f: chain(f, depth + 1))
            else:
                done.set()

        c.go("Arith.Sum", 0, 1).add_done_callback(chain)
        assert done.wait(10)
        assert results == list(range(1, 22))


def test_a_call_settled_by_another_thread_wakes_the_thread_reading_for_it(server):
    """The thread waiting for a call reads the connection (it leads); another
    thread settling that call (here set_exception(), which sends nothing the
    poll could see) must interrupt its poll, not leave it blocked until the
    server answers."""
    with fastrpc.Client(server.address) as c:
        f = c.go("Arith.Slow", 5.0, "late")
        outcome = []
        waiter = threading.Thread(target=lambda: outcome.append(_outcome_of(f)))
        waiter.start()
        assert c.call("Arith.Sum", 1, 1) == 2 and waiter.is_alive()
        time.sleep(0.2)                           # the waiter is in its poll by now
        f.set_exception(RuntimeError("settled elsewhere"))
        waiter.join(3)                            # well before the server's 5 s
        assert not waiter.is_alive(), "the waiting thread was not woken"
        assert outcome == ["RuntimeError: settled elsewhere"]
        assert c.call("Arith.Sum", 2, 3) == 5     # the connection carries on


@pytest.mark.parametrize("seed", [6, 7])
def test_a_waiting_thread_takes_over_reading_when_the_reader_leaves(server, seed):
    """Many threads wait on one connection at once, their calls ending in a
    random order: each returns its own result, whichever thread was reading."""
    rng = random.Random(seed)
    delays = [rng.choice([0.0, 0.01, 0.05, 0.2]) for _ in range(24)]
    results = {}
    with fastrpc.Client(server.address) as c:
        def wait_for(i):
            results[i] = c.call("Arith.Slow", delays[i], i, timeout=10)
        threads = [threading.Thread(target=wait_for, args=(i,)) for i in range(len(delays))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
    assert results == {i: i for i in range(len(delays))}


def _outcome_of(future):
    try:
        return future.result()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


def test_no_helper_thread_per_client(server):
    """One engine thread serves every blocking client and balancer of a process."""
    before = {t.name for t in threading.enumerate()}
    clients = [fastrpc.Client(server.address) for _ in range(10)]
    try:
        for c in clients:
            assert c.go("Arith.Sum", 1, 2).result(5) == 3
            f = c.go("Arith.Slow", 0.01, "x")
            f.add_done_callback(lambda _: None)
            assert f.result(5) == "x"
        names = [t.name for t in threading.enumerate() if t.name not in before]
        assert names.count("fastrpc-engine") <= 1
        assert not [n for n in names if n == "fastrpc-client"]
    finally:
        for c in clients:
            c.close()


@pytest.mark.parametrize("seed", range(5))
def test_a_batch_finds_each_reply_by_its_seq_whatever_else_took_seqs(seed):
    # A map's items go out in runs of consecutive seqs, with other calls'
    # seqs between the runs; replies come in any order, some twice, some
    # for calls that are not the batch's. Each item is settled exactly once,
    # with its own reply.
    from fastrpc._core.calltable import Batch, settle
    rng = random.Random(seed)
    n = 500
    batch = Batch(n, True)
    seq, seqs = 100, []
    while len(seqs) < n:
        seq += rng.choice([1, 1, 1, 2, 7])              # other calls take seqs in between
        batch.add(seq)
        seqs.append(seq)
    assert sorted(batch.sent_positions()) == seqs
    order = list(range(n))
    rng.shuffle(order)
    for position in order[: n // 2]:
        settle(batch, seqs[position], ("reply", position), False)
        if rng.random() < 0.2:
            settle(batch, seqs[position], "duplicate", False)      # ignored
        settle(batch, seqs[position] + 1000000, "stranger", False)  # not the batch's: ignored
    assert batch.remaining == n - n // 2
    assert sorted(batch.sent_positions().values()) == sorted(order[n // 2:])
    batch.fail_sent(TimeoutError("late"))
    for position in order[n // 2:]:
        settle(batch, seqs[position], "too late", False)            # already failed: ignored
    assert batch.done
    for position in order[: n // 2]:
        assert batch.results[position] == ("reply", position)
    for position in order[n // 2:]:
        assert isinstance(batch.results[position], TimeoutError)


def test_a_batch_ignores_replies_in_the_range_it_never_sent():
    from fastrpc._core.calltable import Batch, settle
    batch = Batch(10, True)
    for seq in (1, 2, 3):
        batch.add(seq)
    batch.fail_unsent(ConnectionError("gone"))
    settle(batch, 4, "not sent: no reply can be its", False)
    settle(batch, 2, "two", False)
    assert batch.results[1] == "two" and batch.remaining == 2
    assert all(isinstance(r, ConnectionError) for r in batch.results[3:])


# the garbage collector ------------------------------------------------------------------------------
def _outcomes(go):
    """Futures of calls that end every way a call ends (a result, the
    handler's error, a timeout, a cancellation), each waited on in a frame
    that also holds the future, as callers' code does; returns weak
    references to them and the futures of the successful calls (alive)."""
    refs, kept = [], []

    def settle(future):
        try:
            future.result(10)
        except (fastrpc.RemoteError, TimeoutError):
            pass                                  # the traceback holds this frame, and it the future
        refs.append(weakref.ref(future))

    for i in range(20):
        ok = go("Arith.Sum", i, 1)
        assert ok.result(10) == i + 1
        kept.append(ok)
        settle(go("Arith.Div", i, 0))
        settle(go("Arith.Slow", 1.0, i, timeout=0.01))
        f = go("Arith.Slow", 1.0, i)
        f.add_done_callback(lambda done, f=f: None)   # a closure that refers to its future
        f.cancel()
        refs.append(weakref.ref(f))
    return refs, kept


def _alive(refs):
    return [r() for r in refs if r() is not None]


@pytest.mark.parametrize("kind", ["client", "balancer"])
def test_successful_calls_are_not_tracked_and_failed_ones_are_collected(kind):
    with server_processes(2) as servers:
        addresses = [s.address for s in servers]
        with (fastrpc.Client(addresses[0]) if kind == "client"
              else Balancer(addresses + [unused_address()], strategy="round_robin", health_interval=0)) as c:
            refs, kept = _outcomes(c.go)
            # A call that succeeds closes no cycle: its objects stay out of the
            # collector's view (they are many, and short-lived).
            assert [gc.is_tracked(f) for f in kept] == [False] * len(kept)
            if kind == "balancer":
                assert all(f.source is None for f in kept)
            # One that fails holds an error whose traceback leads back to it:
            # the collector must see it, or every failed call would leak.
            # (The engine may still hold the last few for a moment: its
            # deadline heap until the deadline passes, callbacks until run.)
            assert wait_until(lambda: gc.collect() is not None and _alive(refs) == [], 5.0), _alive(refs)
            assert c.call("Arith.Sum", 2, 3) == 5


def test_a_balanced_call_that_was_retried_is_collected():
    with server_processes(1) as servers:
        # Every other pick is a dead endpoint: those calls fail there, not
        # sent, and are retried on the live one.
        with Balancer([servers[0].address, unused_address()], strategy="round_robin",
                      health_interval=0, eject_failures=1000,
                      retry_budget=fastrpc.RetryBudget(ratio=1.0, min_per_second=1000.0)) as b:
            refs = []
            for i in range(40):
                f = b.go("Arith.Sum", i, 1)
                assert f.result(10) == i + 1
                refs.append(weakref.ref(f))
                del f
            assert sum(s["errors"] for s in b.stats().values()) > 0, "some calls were retried"
            assert wait_until(lambda: gc.collect() is not None and _alive(refs) == [], 5.0), _alive(refs)
