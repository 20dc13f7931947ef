"""Connection health against real server processes: heartbeats find a frozen
(SIGSTOP) peer, and reconnects back off exponentially with jitter."""
import asyncio
import os
import signal
import time

import pytest

import fastrpc
from fastrpc.errors import ConnectError, ConnectionLostError
from support import ServerProcess, server_process, unused_address, wait_until


def frozen(server):
    """SIGSTOP the server process: its kernel still ACKs TCP, it never answers.

    kill() returns before the signal has stopped every thread; wait until
    all of them are in state T, so no call slips through.
    """
    os.kill(server.pid, signal.SIGSTOP)
    assert wait_until(lambda: all(_state(server.pid, task) == "T"
                                  for task in os.listdir(f"/proc/{server.pid}/task")), timeout=5)


def _state(pid, task):
    try:
        with open(f"/proc/{pid}/task/{task}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "T"                                  # a thread that ended cannot answer either


def thawed(server):
    os.kill(server.pid, signal.SIGCONT)


def test_heartbeats_find_a_frozen_server_with_a_call_pending():
    with server_process() as server:
        with fastrpc.Client(server.address, heartbeat=0.2, heartbeat_timeout=0.5) as c:
            assert c.call("Arith.Sum", 1, 2) == 3
            frozen(server)
            try:
                pending = c.go("Arith.Sum", 3, 4)          # no timeout: only heartbeats can end it
                start = time.monotonic()
                with pytest.raises(ConnectionLostError, match="heartbeat"):
                    pending.result(10)
                assert time.monotonic() - start < 3
                assert not c.connected
            finally:
                thawed(server)
            assert c.call("Arith.Sum", 5, 6, timeout=10) == 11     # dials a new connection


def test_heartbeats_find_a_frozen_server_while_idle():
    with server_process() as server:
        with fastrpc.Client(server.address, heartbeat=0.2, heartbeat_timeout=0.5) as c:
            assert c.call("Arith.Sum", 1, 2) == 3
            time.sleep(0.6)
            assert c.connected                             # PINGs answered: still up while idle
            frozen(server)
            try:
                assert wait_until(lambda: not c.connected, timeout=5)
            finally:
                thawed(server)
            assert c.call("Arith.Sum", 1, 1, timeout=10) == 2


def test_without_heartbeats_a_frozen_server_leaves_the_call_waiting():
    # the control case: what the heartbeat tests detect does not happen by itself
    with server_process() as server:
        with fastrpc.Client(server.address) as c:
            assert c.call("Arith.Sum", 1, 2) == 3
            frozen(server)
            try:
                pending = c.go("Arith.Sum", 3, 4)
                time.sleep(1.5)
                assert not pending.done() and c.connected
            finally:
                thawed(server)
            assert pending.result(10) == 7


def test_async_heartbeats_find_a_frozen_server():
    async def scenario(server):
        async with fastrpc.AsyncClient(server.address, heartbeat=0.2, heartbeat_timeout=0.5) as c:
            assert await c.call("Arith.Sum", 1, 2) == 3
            await asyncio.sleep(0.6)
            assert c.connected
            frozen(server)
            try:
                start = time.monotonic()
                with pytest.raises(ConnectionLostError, match="heartbeat"):
                    await c.call("Arith.Sum", 3, 4)
                assert time.monotonic() - start < 3 and not c.connected
            finally:
                thawed(server)
            assert await c.call("Arith.Sum", 2, 2, timeout=10) == 4

    with server_process() as server:
        asyncio.new_event_loop().run_until_complete(scenario(server))


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_reconnects_back_off_with_jitter(kind):
    address = unused_address()
    server = ServerProcess(address)
    try:
        if kind == "sync":
            client = fastrpc.Client(address, reconnect_backoff=(0.3, 0.6))

            def call():
                return client.call("Arith.Sum", 1, 1, timeout=5)
        else:
            loop = asyncio.new_event_loop()
            client = fastrpc.AsyncClient(address, reconnect_backoff=(0.3, 0.6))

            def call():
                return loop.run_until_complete(client.call("Arith.Sum", 1, 1, timeout=5))
        assert call() == 2
        server.kill()
        with pytest.raises(fastrpc.ConnectionError):
            call()                                          # the connection is lost (or refused)
        wait_until(lambda: _fails_to_dial(call), timeout=5)
        # backing off: calls fail at once, without dialing
        start = time.monotonic()
        with pytest.raises(ConnectError, match="next attempt in"):
            call()
        assert time.monotonic() - start < 0.05
        server = ServerProcess(address)                     # back on the same address
        assert wait_until(lambda: _succeeds(call), timeout=5, interval=0.05)
        # the backoff was reset by the successful dial
        server.kill()
        with pytest.raises(fastrpc.ConnectionError):
            call()
    finally:
        server.close()


def _fails_to_dial(call):
    try:
        call()
    except ConnectError as exc:
        return "next attempt" not in str(exc)
    except fastrpc.ConnectionError:
        return False
    return False


def _succeeds(call):
    try:
        return call() == 2
    except fastrpc.ConnectionError:
        return False


def test_backoff_grows_exponentially_up_to_its_cap():
    from fastrpc.net.settings import ClientSettings
    settings = ClientSettings("tcp://127.0.0.1:1", reconnect_backoff=(0.1, 0.8))
    delays = []
    for _ in range(6):
        before = time.monotonic()
        settings.dial_failed(ConnectError("refused"))
        delays.append(settings._next_dial - before)
    for n, delay in enumerate(delays):
        full = min(0.8, 0.1 * 2 ** n)
        assert full / 2 <= delay <= full + 0.01             # half fixed, half jitter
    settings.dial_succeeded()
    settings.check_backoff()                                # no longer backing off
