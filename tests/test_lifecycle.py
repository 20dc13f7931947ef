"""A production-safe lifecycle: reflection, handler failures logged (rate-limited),
close() from the server's own loop, SIGTERM draining serve_forever(), clear
errors for a class registered as a service and for a balancer whose registry
has no endpoints for its service."""
import asyncio
import logging
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import fastrpc
from fastrpc.errors import MethodNotFoundError, NoEndpointError, PermissionDeniedError


class Arith:
    """Arithmetic."""

    def Sum(self, a: int, b: int = 0) -> int:
        """a + b."""
        return a + b

    def Fail(self, message):
        raise ValueError(message)

    async def FailLater(self, message):
        await asyncio.sleep(0)
        raise KeyError(message)


@pytest.fixture
def server():
    s = fastrpc.Server()
    s.register(Arith())
    s.address = s.start("tcp://127.0.0.1:0")
    yield s
    s.close()


def test_reflection_through_every_client_kind(server):
    expected_sum = {"params": [{"name": "a", "kind": "positional_or_keyword", "annotation": "int"},
                               {"name": "b", "kind": "positional_or_keyword", "default": "0", "annotation": "int"}],
                    "returns": "int", "doc": "a + b.", "mode": "inline", "stream": None}
    with fastrpc.Client(server.address) as c:
        assert c.services() == ["Arith"]
        described = c.describe()
        assert set(described) == {"Arith"} and described["Arith"]["doc"] == "Arithmetic."
        assert described["Arith"]["methods"]["Sum"] == expected_sum
        assert described["Arith"]["methods"]["FailLater"]["mode"] == "async"
        assert c.describe("Arith.Sum") == {"Arith": {"doc": "Arithmetic.", "methods": {"Sum": expected_sum}}}
        assert set(c.describe("_fastrpc")["_fastrpc"]["methods"]) == {"Describe", "Services"}
    with fastrpc.Balancer([server.address], health_interval=0) as b:
        assert b.services() == ["Arith"]

    async def run():
        async with fastrpc.AsyncClient(server.address) as c:
            assert (await c.describe("Arith"))["Arith"]["methods"]["Sum"] == expected_sum
        async with fastrpc.AsyncBalancer([server.address], health_interval=0) as b:
            assert await b.services() == ["Arith"]
    asyncio.run(run())
    assert server.methods == ["Arith.Fail", "Arith.FailLater", "Arith.Sum"]     # the built-in one is not listed


def test_reflection_can_be_off_and_goes_through_authorize():
    quiet = fastrpc.Server(reflection=False)
    quiet.register(Arith())
    guarded = fastrpc.Server(authorize=lambda method, meta: None if not method.startswith("_") else 1 / 0)
    guarded.register(Arith())
    try:
        with fastrpc.Client(quiet.start("tcp://127.0.0.1:0")) as c:
            with pytest.raises(MethodNotFoundError, match="can't find service _fastrpc.Describe"):
                c.describe()
        with fastrpc.Client(guarded.start("tcp://127.0.0.1:0")) as c:
            with pytest.raises(PermissionDeniedError):
                c.describe()
            assert c.call("Arith.Sum", 1, 2) == 3
    finally:
        quiet.close()
        guarded.close()


def test_a_handler_that_raises_is_logged_with_its_traceback(server, caplog):
    caplog.set_level(logging.WARNING, logger="fastrpc.server")
    with fastrpc.Client(server.address) as c:
        with pytest.raises(ValueError):
            c.call("Arith.Fail", "inline broke")
        with pytest.raises(KeyError):
            c.call("Arith.FailLater", "async broke")
        c.notify("Arith.Sum", "notified", 1)     # another method: the limit is per method
        c.call("Arith.Sum", 1, 1)                 # the notification ran before this answer
    records = [r for r in caplog.records if r.name == "fastrpc.server"]
    messages = [r.getMessage() for r in records]
    assert "call Arith.Fail failed: ValueError: inline broke" in messages
    assert "call Arith.FailLater failed: KeyError: 'async broke'" in messages
    assert any(m.startswith("notification Arith.Sum failed: TypeError: ") for m in messages)
    assert all(r.levelno == logging.WARNING and r.exc_info for r in records)


def test_a_hot_failing_method_cannot_flood_the_log(server, caplog):
    caplog.set_level(logging.WARNING, logger="fastrpc.server")
    with fastrpc.Client(server.address) as c:
        c.map("Arith.Fail", [f"x{i}" for i in range(500)], return_exceptions=True)
        with pytest.raises(KeyError):
            c.call("Arith.FailLater", "other method")
    lines = [r.getMessage() for r in caplog.records if "Arith.Fail " in r.getMessage()]
    assert len(lines) == 1                        # the rest wait for the summary line
    assert any("Arith.FailLater" in r.getMessage() for r in caplog.records)   # per method


def test_close_from_a_handler_starts_the_close(server):
    def stop():
        server.close()                            # on the server's loop: starts the close, returns
        return "closing"
    server.register_function(stop, "Admin.Stop")
    with fastrpc.Client(server.address) as c:
        assert c.call("Admin.Stop") == "closing"
    assert server._closed.wait(10)


SERVE_SCRIPT = textwrap.dedent('''
    import asyncio, sys
    import fastrpc

    class Slow:
        async def Wait(self, seconds, value):
            await asyncio.sleep(seconds)
            return value

    server = fastrpc.Server(grace=10)
    server.register(Slow())
    server.serve_forever("tcp://127.0.0.1:0", ready=lambda bound: print(bound[0], flush=True))
    print("drained", flush=True)
''')


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_forever_drains_on_sigterm_as_on_sigint(tmp_path, sig):
    script = tmp_path / "serve.py"
    script.write_text(SERVE_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        address = proc.stdout.readline().strip()
        with fastrpc.Client(address, timeout=20) as c:
            futures = [c.go("Slow.Wait", 0.5, i) for i in range(20)]
            c.ping()                              # the calls reached the server
            proc.send_signal(sig)
            assert [f.result() for f in futures] == list(range(20))
        assert proc.wait(20) == 0
        assert proc.stdout.read().strip() == "drained"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigterm_sent_as_soon_as_the_address_is_known_closes_gracefully(tmp_path):
    # ready() hands out the address: a SIGTERM sent at that moment (here by
    # ready() itself, the earliest anyone can) drains and returns, exit 0;
    # with the handlers installed after ready() the signal killed the process.
    script = tmp_path / "serve.py"
    script.write_text(textwrap.dedent('''
        import os, signal
        import fastrpc

        server = fastrpc.Server(grace=5)
        server.serve_forever("tcp://127.0.0.1:0", ready=lambda bound: os.kill(os.getpid(), signal.SIGTERM))
        print("drained", flush=True)
    '''))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout.strip()) == (0, "drained"), proc.stderr


def test_an_exception_in_ready_is_raised_by_serve_forever():
    def ready(bound):
        raise RuntimeError(f"cannot announce {bound[0]}")

    server = fastrpc.Server()
    with pytest.raises(RuntimeError, match=r"cannot announce tcp://127\.0\.0\.1:\d+"):
        server.serve_forever("tcp://127.0.0.1:0", ready=ready)
    server.close()


def test_registering_a_class_is_a_clear_error():
    with pytest.raises(TypeError, match=r"register an instance of Arith, not the class itself \(server.register\(Arith\(\)\)\)"):
        fastrpc.Server().register(Arith)


def test_a_balancer_without_endpoints_for_its_service_says_which_there_are(server):
    registry = fastrpc.StaticDiscovery({"arith": [server.address], "kv": [server.address]})
    with fastrpc.Balancer(discovery=registry, service="arithmetic", health_interval=0) as b:
        with pytest.raises(NoEndpointError, match=r"has no endpoints for service 'arithmetic' "
                                                  r"\(services it has: arith, kv\)"):
            b.call("Arith.Sum", 1, 2)
    with fastrpc.Balancer([], health_interval=0) as b:
        with pytest.raises(NoEndpointError, match="the balancer has no endpoints"):
            b.call("Arith.Sum", 1, 2)


class Stalls:
    def Sleep(self, seconds):
        time.sleep(seconds)                       # wrong in a plain handler: the loop stops
        return seconds

    @fastrpc.blocking
    def SleepInPool(self, seconds):
        time.sleep(seconds)
        return seconds


def test_a_plain_handler_that_blocks_the_loop_is_named_once(caplog):
    caplog.set_level(logging.WARNING, logger="fastrpc.server")
    server = fastrpc.Server(stall_warning=0.2)
    server.register(Stalls())
    try:
        with fastrpc.Client(server.start("tcp://127.0.0.1:0")) as c:
            c.call("Stalls.SleepInPool", 0.5)     # in the pool: the loop is free, nothing to say
            assert not [r for r in caplog.records if "event loop" in r.getMessage()]
            c.call("Stalls.Sleep", 0.5)
            c.call("Stalls.Sleep", 0.5)
    finally:
        server.close()
    warnings = [r.getMessage() for r in caplog.records if "event loop" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("Stalls.Sleep has held the server's event loop for ")
    assert "Make it `async def`, or mark it @fastrpc.blocking" in warnings[0]
    with pytest.raises(ValueError, match="stall_warning must be > 0"):
        fastrpc.Server(stall_warning=0)


def test_serving_a_socket_bound_elsewhere(tmp_path):
    import socket
    tcp = socket.socket()
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    tcp.bind(("127.0.0.1", 0))
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(str(tmp_path / "s.sock"))
    server = fastrpc.Server(reuse_port=True)
    server.register(Arith())
    try:
        address = server.start(sock=tcp)
        assert address == "tcp://127.0.0.1:%d" % tcp.getsockname()[1]
        # A second server (another process, in real use) binds the same port beside it.
        other = fastrpc.Server(reuse_port=True)
        other.register(Arith())
        assert other.start(address) == address
        other.close()
        with fastrpc.Client(server.start(sock=unix)) as c:
            assert c.call("Arith.Sum", 1, 2) == 3
        with fastrpc.Client(address) as c:
            assert c.call("Arith.Sum", 2, 3) == 5
        with pytest.raises(ValueError, match="stream"):
            server.start(sock=socket.socket(type=socket.SOCK_DGRAM))
    finally:
        server.close()
