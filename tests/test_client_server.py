"""End to end: the blocking Client against a server in another process."""
import builtins
import concurrent.futures
import os
import socket
import threading
import time

import numpy as np
import pytest

import fastrpc
from fastrpc import Client
from fastrpc.errors import (ConnectionClosedError, ConnectionLostError, InvalidArgumentsError,
                            MethodNotFoundError, RemoteError, TimeoutError)
from support import server_process, wait_until


@pytest.fixture
def client(server):
    with Client(server.address) as c:
        yield c


def test_call_returns_result(client):
    assert client.call("Arith.Sum", 10, 20) == 30
    assert client.call("Arith.Sum", "a", "b") == "ab"
    assert client.call("Arith.Echo", {"k": [1, 2.5, None, True, b"\x00"]}) == {"k": [1, 2.5, None, True, b"\x00"]}


def test_default_and_variadic_arguments(client):
    assert client.call("Arith.Pair", 1) == [1, None, []]
    assert client.call("Arith.Pair", 1, 2, 3, 4) == [1, 2, [3, 4]]


def test_remote_exception_carries_type_and_message(client):
    with pytest.raises(RemoteError) as info:
        client.call("Arith.Div", 1, 0)
    assert info.value.type == "ZeroDivisionError"
    assert info.value.message == "division by zero"
    with pytest.raises(RemoteError, match="ValueError: boom"):
        client.call("Arith.Fail", "boom")
    assert client.call("Arith.Sum", 1, 1) == 2   # the connection carries on


def test_unknown_service_and_method(client):
    with pytest.raises(MethodNotFoundError, match="rpc: can't find method Arith.Nope"):
        client.call("Arith.Nope")
    with pytest.raises(MethodNotFoundError, match="rpc: can't find service Nope.Sum"):
        client.call("Nope.Sum")
    with pytest.raises(MethodNotFoundError, match="ill-formed: nodot"):
        client.call("nodot")
    with pytest.raises(MethodNotFoundError):
        client.call("Arith._private")
    assert client.call("Arith.Sum", 2, 2) == 4


def test_wrong_arity(client):
    with pytest.raises(InvalidArgumentsError, match=r"Arith.Sum takes 2 arguments \(3 given\)"):
        client.call("Arith.Sum", 1, 2, 3)
    with pytest.raises(InvalidArgumentsError, match=r"1 given"):
        client.call("Arith.Sum", 1)
    with pytest.raises(InvalidArgumentsError, match=r"at least 1"):
        client.call("Arith.Pair")


def test_unencodable_result_is_an_error_reply(client):
    with pytest.raises(RemoteError, match="EncodeError"):
        client.call("Arith.Unencodable")
    assert client.call("Arith.Sum", 1, 2) == 3


def test_unencodable_argument_raises_locally_and_sends_nothing(client):
    with pytest.raises(fastrpc.errors.EncodeError):
        client.call("Arith.Echo", object())
    assert client.call("Arith.Sum", 1, 2) == 3


def test_async_and_blocking_handlers(client):
    assert client.call("Arith.Slow", 0.01, "late") == "late"
    assert client.call("Arith.Sleep", 0.01).startswith("fastrpc-handler")


def test_replies_come_in_completion_order(client):
    slow = client.go("Arith.Slow", 0.5, "slow")
    fast = client.go("Arith.Slow", 0.0, "fast")
    assert fast.result(timeout=5) == "fast"
    assert not slow.done()
    assert slow.result(timeout=5) == "slow"


def test_go_returns_concurrent_future(client):
    fut = client.go("Arith.Sum", 1, 2)
    assert isinstance(fut, concurrent.futures.Future)
    assert fut.result(timeout=5) == 3
    futs = [client.go("Arith.Sum", i, i) for i in range(500)]
    assert [f.result(timeout=5) for f in futs] == [2 * i for i in range(500)]


def test_go_future_completes_without_anyone_waiting(client):
    fut = client.go("Arith.Sum", 1, 2)
    done = threading.Event()
    fut.add_done_callback(lambda f: done.set())
    assert done.wait(5)
    assert fut.result() == 3
    futs = [client.go("Arith.Slow", 0.01, i) for i in range(50)]
    done, not_done = concurrent.futures.wait(futs, timeout=5)
    assert not not_done and sorted(f.result() for f in done) == list(range(50))


def test_go_error_future(client):
    fut = client.go("Arith.Div", 1, 0)
    assert isinstance(fut.exception(timeout=5), RemoteError)


def test_map_returns_results_in_order(client):
    args = [(i, 1) for i in range(5000)]
    assert client.map("Arith.Sum", args) == [i + 1 for i in range(5000)]
    assert client.map("Arith.Echo", ["a", "b"]) == ["a", "b"]
    assert client.map("Arith.Sum", []) == []
    assert client.map("Arith.Sum", ((i, i) for i in range(10)), window=3) == [2 * i for i in range(10)]


def test_map_raises_first_error_after_all_complete(client):
    with pytest.raises(RemoteError, match="ZeroDivision"):
        client.map("Arith.Div", [(1, 1), (1, 0), (4, 2)])
    out = client.map("Arith.Div", [(1, 1), (1, 0), (4, 2)], return_exceptions=True)
    assert out[0] == 1 and isinstance(out[1], RemoteError) and out[2] == 2
    assert client.call("Arith.Sum", 1, 1) == 2


def test_many_threads_share_one_connection(client):
    errors = []

    def worker(k):
        try:
            for i in range(300):
                assert client.call("Arith.Sum", k, i) == k + i
                if i % 50 == 0:
                    assert client.go("Arith.Slow", 0.001, i).result(5) == i
        except Exception as exc:   # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert client._conn.table.pending == {}


def test_timeout_raises_fastrpc_timeout_error(client):
    start = time.monotonic()
    with pytest.raises(TimeoutError) as info:
        client.call("Arith.Slow", 5, "x", timeout=0.2)
    assert isinstance(info.value, builtins.TimeoutError)
    assert time.monotonic() - start < 3
    assert client.call("Arith.Sum", 1, 2, timeout=5) == 3   # late reply is ignored


def test_future_timeout_without_waiter(client):
    fut = client.go("Arith.Hang", timeout=0.2)
    assert isinstance(fut.exception(timeout=5), TimeoutError)


def test_future_cancel_withdraws_the_call(client):
    fut = client.go("Arith.Hang")
    assert fut.cancel()
    assert fut.cancelled()
    assert client.call("Arith.Sum", 1, 2) == 3
    assert wait_until(lambda: not client._conn.table.pending, 5)


def test_notify_gets_no_reply_but_runs(client):
    client.notify("Arith.Record", "n1")
    client.notify("Arith.Nope", "ignored")          # errors are not reported
    client.notify("Arith.Record", "n2")
    assert wait_until(lambda: client.call("Arith.Recorded")[-2:] == ["n1", "n2"], 5)


def test_ndarray_arguments_and_results(client):
    a = np.arange(100_000, dtype=np.float64).reshape(100, 1000)
    out = client.call("Arith.Echo", a)
    np.testing.assert_array_equal(out, a)
    z = client.call("Arith.Zeros", 1_000_000)
    assert z.shape == (1_000_000,) and not z.any()


def test_results_kept_as_views_or_arrays_survive_later_replies(server):
    # Decoded ndarrays (and bytes, with bytes_views) point into the receive
    # buffer, which is reused once nothing points into it: what a caller
    # keeps is never overwritten by later replies.
    with Client(server.address, bytes_views=True) as c:
        kept = []
        for i in range(40):
            got = c.call("Arith.Echo", [bytes([i]) * 50_000, np.full(6_000, i, dtype=np.int64)])
            assert isinstance(got[0], memoryview) and isinstance(got[1], np.ndarray)
            kept.append(got)
            assert len(c.call("Arith.Echo", b"\xff" * 70_000)) == 70_000   # dropped at once
        for i, (blob, arr) in enumerate(kept):
            assert bytes(blob) == bytes([i]) * 50_000
            assert (arr == i).all()


def test_large_payload_round_trip(client):
    blob = os.urandom(8 * 1024 * 1024)
    assert client.call("Arith.Echo", blob) == blob


def test_ping(client):
    assert 0 < client.ping() < 5


def test_server_killed_fails_pending_calls_at_once(fresh_server):
    with Client(fresh_server.address) as c:
        futs = [c.go("Arith.Hang") for _ in range(20)]
        c.ping()
        fresh_server.kill()
        for f in futs:
            with pytest.raises(ConnectionLostError):
                f.result(timeout=5)
        with pytest.raises(fastrpc.ConnectionError):
            c.call("Arith.Sum", 1, 2, timeout=5)   # redial fails: nobody listens


def test_client_reconnects_after_server_restart():
    with server_process() as first:
        address = first.address
        with Client(address) as c:
            assert c.call("Arith.Sum", 1, 2) == 3
            first.kill()
            with pytest.raises(fastrpc.ConnectionError):
                c.call("Arith.Sum", 1, 2, timeout=5)
            with server_process(address) as second:
                assert c.call("Arith.Pid") == second.pid


def test_connect_refused_is_a_clear_error():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(fastrpc.ConnectionError, match="cannot connect"):
        Client(f"127.0.0.1:{port}")


def test_closed_client_refuses_calls(server):
    c = Client(server.address)
    c.close()
    with pytest.raises(ConnectionClosedError):
        c.call("Arith.Sum", 1, 2)


def test_close_fails_pending_futures(server):
    c = Client(server.address)
    fut = c.go("Arith.Hang")
    c.close()
    with pytest.raises(ConnectionClosedError):
        fut.result(timeout=5)


def test_unix_socket(tmp_path):
    path = str(tmp_path / "rpc.sock")
    with server_process(f"unix://{path}") as srv:
        assert srv.address == f"unix://{path}"
        with Client(srv.address) as c:
            assert c.call("Arith.Sum", 3, 4) == 7
            assert c.map("Arith.Sum", [(i, 0) for i in range(100)]) == list(range(100))


def test_graceful_close_finishes_in_flight_calls(fresh_server):
    with Client(fresh_server.address) as c:
        futs = [c.go("Arith.Slow", 0.5, i) for i in range(10)]
        c.ping()   # make sure the calls reached the server
        time.sleep(0.1)
        fresh_server.proc.send_signal(15)
        assert [f.result(timeout=10) for f in futs] == list(range(10))
        assert fresh_server.proc.wait(10) == 0


def test_call_after_goaway_with_calls_pending_does_not_hang(fresh_server):
    # A new call on a draining connection retires it while its calls are
    # pending, and must dial afresh (here: refused, the server is leaving).
    # Blocking calls only: go() would start the helper thread early, and the
    # retiring path is the one that starts it.
    pool = concurrent.futures.ThreadPoolExecutor(6)
    with Client(fresh_server.address) as c:
        slow = [pool.submit(c.call, "Arith.Slow", 1.0, i) for i in range(5)]
        assert wait_until(lambda: len(c._conn.table.pending) >= 5, 10), \
            (len(c._conn.table.pending), [f.exception() for f in slow if f.done()])
        fresh_server.proc.send_signal(15)
        # (What the client saw, should GOAWAY not arrive: it failed once in CI.)
        assert wait_until(lambda: c.draining, 5), \
            (c._conn.error, len(c._conn.table.pending), [f.done() for f in slow],
             fresh_server.proc.poll(), c._conn.engine.lead_taken, c._conn.engine.leader,
             len(c._conn.engine.followers), c._conn.engine.helper_leading)
        with pytest.raises(fastrpc.ConnectionError):
            pool.submit(c.call, "Arith.Sum", 1, 2, timeout=5).result(timeout=10)
        assert [f.result(timeout=10) for f in slow] == list(range(5))
        assert fresh_server.proc.wait(10) == 0
    pool.shutdown(wait=False)


def test_forgotten_client_is_collected(server):
    import gc
    import weakref
    c = Client(server.address)
    assert c.go("Arith.Sum", 1, 2).result(timeout=5) == 3
    ref = weakref.ref(c)
    del c
    gc.collect()
    assert ref() is None


def finished_futures_alive(client, calls=6000):
    """Make `calls` go(timeout=600) calls and wait for each; return how many
    of their finished futures are still referenced after a collection."""
    import gc
    import weakref
    refs = []
    for start in range(0, calls, 200):
        futures = [client.go("Arith.Echo", b"x" * 1000, timeout=600) for _ in range(200)]
        for f in futures:
            assert f.result(10) == b"x" * 1000
        refs += [weakref.ref(f) for f in futures]
        del futures, f
    gc.collect()
    return sum(r() is not None for r in refs)


def test_finished_futures_with_long_timeouts_are_not_kept(server):
    # go(timeout=) remembers each call's deadline; finished calls must not
    # stay referenced (with their results) until that deadline passes.
    with fastrpc.Client(server.address) as c:
        alive = finished_futures_alive(c)
        assert alive <= 1500, f"{alive} of 6000 finished futures are still referenced"


def test_finished_futures_are_dropped_while_another_client_has_many_calls_pending(server):
    # The sweep of finished deadlines must not wait for the process's other
    # calls to end: here another client keeps 3,000 calls pending meanwhile.
    with fastrpc.Client(server.address) as busy, fastrpc.Client(server.address) as c:
        hanging = [busy.go("Arith.Slow", 30.0, i, timeout=60) for i in range(3000)]
        alive = finished_futures_alive(c)
        assert alive <= 1500, f"{alive} of 6000 finished futures are still referenced"
        for f in hanging:
            f.cancel()
