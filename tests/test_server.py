"""Server: registration rules, lifecycle, and serving in-process."""
import asyncio
import threading

import pytest

import fastrpc
from fastrpc import Client, Server


class Greeter:
    def Hello(self, name):
        return f"hello {name}"

    def _hidden(self):
        return "no"

    @property
    def Prop(self):
        raise AssertionError("properties are not called at registration")

    Constant = 3


def test_register_uses_class_name_and_public_methods():
    s = Server()
    s.register(Greeter())
    s.register(Greeter(), name="Hi")
    assert s.methods == ["Greeter.Hello", "Hi.Hello"]


def test_register_twice_is_an_error():
    s = Server()
    s.register(Greeter())
    with pytest.raises(ValueError, match="already registered"):
        s.register(Greeter())


@pytest.mark.parametrize("name", ["", "a.b", 3])
def test_invalid_service_names(name):
    with pytest.raises(ValueError):
        Server().register(Greeter(), name=name)


def test_required_keyword_only_parameter_is_registered():
    # Keyword arguments reach it (tests/test_kwargs.py); without them the
    # call is InvalidArguments, never a TypeError from inside the server.
    class ByName:
        def M(self, *, x):
            return x

    s = Server()
    s.register(ByName())
    handler = next(h for h in s.dispatcher.handlers.values() if h.name == "ByName.M")
    assert handler.kw_required and handler.max_args == 0


def test_register_function_and_serve_in_thread():
    s = Server()
    s.register_function(lambda a, b: a * b, "Math.Mul")
    s.register(Greeter())
    addr = s.start("tcp://127.0.0.1:0")
    try:
        assert addr.startswith("tcp://127.0.0.1:")
        with Client(addr) as c:
            assert c.call("Math.Mul", 6, 7) == 42
            assert c.call("Greeter.Hello", "go") == "hello go"
    finally:
        s.close()


def test_start_several_listeners_and_close_is_idempotent(tmp_path):
    s = Server()
    s.register(Greeter())
    a = s.start("127.0.0.1:0")
    b = s.start(f"unix://{tmp_path}/s.sock")
    assert s.addresses == [a, b]
    for addr in (a, b):
        with Client(addr) as c:
            assert c.call("Greeter.Hello", "x") == "hello x"
    s.close()
    s.close()
    with pytest.raises(fastrpc.ConnectionError):
        Client(a, connect_timeout=2)
    with pytest.raises(RuntimeError, match="closed"):
        s.start("127.0.0.1:0")


def test_serve_forever_blocks_until_close():
    s = Server()
    s.register(Greeter())
    t = threading.Thread(target=s.serve_forever, args=("tcp://127.0.0.1:0",))
    t.start()
    try:
        for _ in range(200):
            if s.addresses:
                break
            threading.Event().wait(0.01)
        with Client(s.addresses[0]) as c:
            assert c.call("Greeter.Hello", "x") == "hello x"
    finally:
        s.close()
        t.join(10)
    assert not t.is_alive()


def test_serving_on_an_existing_asyncio_loop():
    async def main():
        s = Server()
        s.register(Greeter())
        addr = await s.listen("tcp://127.0.0.1:0")
        async with fastrpc.AsyncClient(addr) as c:
            assert await c.call("Greeter.Hello", "aio") == "hello aio"
        await s.aclose()

    asyncio.run(main())


def test_close_grace_cancels_calls_that_overrun():
    class Stuck:
        async def Wait(self):
            await asyncio.sleep(60)

    s = Server(grace=0.3)
    s.register(Stuck())
    addr = s.start()
    c = Client(addr)
    fut = c.go("Stuck.Wait")
    c.ping()
    s.close()
    with pytest.raises((fastrpc.RemoteError, fastrpc.ConnectionError)):
        fut.result(timeout=10)
    c.close()


def test_bad_address():
    with pytest.raises(ValueError, match="no port"):
        Server().start("localhost")
    with pytest.raises(ValueError, match="scheme 'udp'"):
        Client("udp://127.0.0.1:1")
    with pytest.raises(ValueError, match="scheme 'https'"):
        Server().start("https://127.0.0.1:0")


@pytest.mark.parametrize("use_uvloop", [False, True])
def test_plain_asyncio_and_uvloop_loops(use_uvloop):
    s = Server(use_uvloop=use_uvloop)
    s.register(Greeter())
    addr = s.start()
    try:
        loop_type = type(s._loop).__module__
        assert loop_type.startswith("uvloop") == use_uvloop
        with Client(addr) as c:
            assert c.map("Greeter.Hello", ["a", "b"]) == ["hello a", "hello b"]
    finally:
        s.close()


def test_a_graceful_close_serves_connections_the_kernel_accepted_before_it():
    # A connection the kernel accepted but the server had not taken in yet
    # (a busy loop, a burst of connections) when close() began: its client
    # is connected and may have sent calls. They are answered, then the
    # connection is told GOAWAY and closed: nothing is dropped with the listener.
    import time

    class Slowly:
        async def Echo(self, value):
            await asyncio.sleep(0.1)
            return value

    server = Server()
    server.register(Slowly())
    address = server.start("tcp://127.0.0.1:0")
    listener = server._listeners[0]
    paused = threading.Event()

    def pause_accepting():                 # what a loop too busy to accept looks like
        for sock in listener.sockets:
            server._loop.remove_reader(sock.fileno())
        paused.set()
    server._loop.call_soon_threadsafe(pause_accepting)
    assert paused.wait(5)
    results = []
    caller = threading.Thread(target=lambda: results.append(Client(address, connect_timeout=5).call(
        "Slowly.Echo", "answered", timeout=10)))
    caller.start()
    time.sleep(0.3)                        # connected in the kernel, the call sent, nobody reading
    server.close(grace=5)
    caller.join(10)
    assert results == ["answered"]
