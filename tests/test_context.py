"""A handler's context: current_call(), and its deadline bounding the calls it makes."""
import asyncio
import threading
import time

import pytest

import fastrpc
from fastrpc.errors import DeadlineExceeded


class Back:
    def __init__(self):
        self.cancelled = threading.Event()
        self.remaining = []

    async def Slow(self, seconds):
        call = fastrpc.current_call()
        self.remaining.append(None if call is None else call.remaining())
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return "slow done"


class Front:
    def __init__(self, back_address):
        self.back_address = back_address
        self.seen = []
        self.inner_errors = []

    async def Relay(self, seconds):
        call = fastrpc.current_call()
        self.seen.append((call.method, round(call.remaining(), 1) if call.deadline else None, call.metadata))
        async with fastrpc.AsyncClient(self.back_address) as back:
            start = time.monotonic()
            try:
                return await back.call("Back.Slow", seconds)            # no timeout of its own
            except fastrpc.TimeoutError as exc:
                self.inner_errors.append((type(exc).__name__, time.monotonic() - start))
                raise

    @fastrpc.blocking
    def RelayBlocking(self, seconds):
        with fastrpc.Client(self.back_address) as back:
            start = time.monotonic()
            try:
                return back.call("Back.Slow", seconds)                  # no timeout of its own
            except fastrpc.TimeoutError as exc:
                self.inner_errors.append((type(exc).__name__, time.monotonic() - start))
                raise

    @fastrpc.blocking
    def RelayLate(self, pause):
        time.sleep(pause)                                              # past the caller's deadline
        try:
            with fastrpc.Client(self.back_address) as back:
                return back.call("Back.Slow", 0)
        except DeadlineExceeded as exc:
            self.inner_errors.append((type(exc).__name__, str(exc)))
            raise

    @fastrpc.blocking
    def Context(self):
        call = fastrpc.current_call()
        return None if call is None else [call.method, call.metadata]


@pytest.fixture
def servers():
    back = Back()
    back_server = fastrpc.Server()
    back_server.register(back)
    back_address = back_server.start()
    front = Front(back_address)
    front_server = fastrpc.Server()
    front_server.register(front)
    front_address = front_server.start()
    yield front, back, front_address
    front_server.close(grace=0.5)
    back_server.close(grace=0.5)


def test_deadline_travels_on_through_an_async_handler(servers):
    front, back, address = servers
    with fastrpc.Client(address, metadata={"trace": "t-1"}) as c:
        start = time.monotonic()
        with pytest.raises(fastrpc.TimeoutError):
            c.call("Front.Relay", 5.0, timeout=0.5)
        assert time.monotonic() - start < 2
    assert back.cancelled.wait(5)                   # the back end's work stopped too
    # the back end got the caller's remaining time as its deadline
    assert back.remaining and back.remaining[0] is not None and 0 < back.remaining[0] <= 0.5
    method, remaining, metadata = front.seen[0]
    assert method == "Front.Relay" and 0 < remaining <= 0.5 and metadata == {"trace": "t-1"}


def test_deadline_bounds_a_blocking_handlers_calls(servers):
    front, back, address = servers
    with fastrpc.Client(address) as c:
        with pytest.raises(fastrpc.TimeoutError):
            c.call("Front.RelayBlocking", 5.0, timeout=0.5)
    deadline = time.monotonic() + 5
    while not front.inner_errors and time.monotonic() < deadline:
        time.sleep(0.02)
    # the inner call, made without a timeout, gave up with the caller, not 5 s later
    # (the back end's DeadlineExceeded or the client's own timeout: both are TimeoutErrors)
    assert front.inner_errors[0][0] in ("TimeoutError", "DeadlineExceeded") and front.inner_errors[0][1] < 1.5
    assert back.cancelled.wait(5)


def test_a_call_after_the_deadline_fails_at_once(servers):
    front, back, address = servers
    with fastrpc.Client(address) as c:
        with pytest.raises(fastrpc.TimeoutError):
            c.call("Front.RelayLate", 0.4, timeout=0.2)
    deadline = time.monotonic() + 5
    while not front.inner_errors and time.monotonic() < deadline:
        time.sleep(0.02)
    assert front.inner_errors[0][0] == "DeadlineExceeded"
    assert "Front.RelayLate" in front.inner_errors[0][1]


def test_current_call_without_deadline_or_metadata_still_names_the_call(servers):
    front, back, address = servers
    with fastrpc.Client(address) as c:
        assert c.call("Front.Context") == ["Front.Context", None]
        assert c.call("Front.Context", timeout=5) == ["Front.Context", None]
    with fastrpc.Client(address, metadata={"user": "ann"}) as c:
        assert c.call("Front.Context") == ["Front.Context", {"user": "ann"}]
    assert fastrpc.current_call() is None                              # not in a handler here
    assert fastrpc.context.bound_timeout(3.0) == 3.0 and fastrpc.context.bound_timeout(None, 2.0) == 2.0


class Seen:
    """Records what each call's handler saw of its caller: deadline and metadata."""

    def __init__(self):
        self.calls = []

    async def Look(self, i):
        call = fastrpc.current_call()
        self.calls.append((i, call.remaining() if call and call.deadline else None,
                           call.metadata if call else None))
        return i


@pytest.mark.parametrize("via", ["Client", "AsyncClient", "Balancer", "AsyncBalancer"])
def test_map_items_carry_the_deadline_and_metadata_of_a_call(via):
    """map() goes through the same encoder as call(): each item carries the
    map's timeout (as its deadline) and the client's metadata."""
    import asyncio
    seen = Seen()
    server = fastrpc.Server()
    server.register(seen)
    address = server.start("tcp://127.0.0.1:0")
    items = list(range(50))
    try:
        settings = {"metadata": {"trace": "t-1"}}
        if via == "Client":
            with fastrpc.Client(address, **settings) as c:
                assert c.map("Seen.Look", items, timeout=30, window=8) == items
        elif via == "Balancer":
            with fastrpc.Balancer([address], health_interval=0, **settings) as b:
                assert b.map("Seen.Look", items, timeout=30, window=8) == items
        else:
            async def main():
                if via == "AsyncClient":
                    async with fastrpc.AsyncClient(address, **settings) as c:
                        return await c.map("Seen.Look", items, timeout=30, window=8)
                async with fastrpc.AsyncBalancer([address], health_interval=0, **settings) as b:
                    return await b.map("Seen.Look", items, timeout=30, window=8)
            assert asyncio.run(main()) == items
        assert sorted(i for i, _, _ in seen.calls) == items
        assert all(remaining is not None and 25 < remaining <= 30 for _, remaining, _ in seen.calls)
        assert all(meta == {"trace": "t-1"} for _, _, meta in seen.calls)
    finally:
        server.close()
