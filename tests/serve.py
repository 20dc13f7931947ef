"""A server process for the end-to-end tests: `python serve.py ADDRESS`.

Prints the bound address on its first line of output, then serves until
SIGTERM (graceful close) or SIGKILL.
"""
import asyncio
import dataclasses
import enum
import json
import os
import signal
import sys
import threading
import time
from typing import Any, AsyncIterator, Iterator  # noqa: F401  (the Streams handlers' annotations)

import numpy as np

import fastrpc


@fastrpc.register_error
class NotFound(LookupError):
    """An application error, registered by name on both sides."""


class Unregistered(Exception):
    """An application error only the server knows."""


class Arith:
    """Arithmetic and the failure modes the tests need."""

    def __init__(self):
        self.notified = []
        self.count = 0
        self.hanging = 0
        self.lagging = 0

    def Sum(self, a, b):
        return a + b

    def Div(self, a, b):
        return a / b

    def Echo(self, value):
        return value

    def Pair(self, a, b=None, *rest):
        return [a, b, list(rest)]

    def Fail(self, message):
        raise ValueError(message)

    def Raise(self, kind, message):
        """Raise the exception named `kind` (the typed remote errors tests)."""
        if kind == "PermissionDenied":                  # a typed refusal, as a handler raises one
            raise fastrpc.errors.PermissionDeniedError("PermissionDenied", message)
        if kind == "Relayed":                           # a RemoteError from another server, raised on
            raise fastrpc.errors.RemoteError("Quota", message)
        if kind == "TimeoutError":                      # e.g. a call the handler made timed out
            raise fastrpc.errors.TimeoutError(message)
        raise {"KeyError": KeyError, "BuiltinTimeout": TimeoutError, "ZeroDivisionError": ZeroDivisionError, "NotFound": NotFound,
               "Unregistered": Unregistered, "AttributeError": AttributeError}[kind](message)

    async def RaiseLater(self, kind, message):
        await asyncio.sleep(0)
        self.Raise(kind, message)

    def Unencodable(self):
        return object()

    def Zeros(self, n):
        return np.zeros(n, dtype=np.float64)

    def Record(self, value):
        self.notified.append(value)

    def Recorded(self):
        return list(self.notified)

    async def Slow(self, seconds, value):
        await asyncio.sleep(seconds)
        return value

    async def Hang(self):
        self.hanging += 1
        try:
            await asyncio.Event().wait()
        finally:
            self.hanging -= 1

    def Hanging(self):
        """Calls of Hang still running (cancelled ones are not)."""
        return self.hanging

    @fastrpc.blocking
    def Sleep(self, seconds):
        time.sleep(seconds)
        return threading.current_thread().name

    def Pid(self):
        return os.getpid()

    async def Lag(self, value):
        """[value, pid] after this server's lag (FASTRPC_TEST_LAG seconds)."""
        self.count += 1
        self.lagging += 1
        try:
            await asyncio.sleep(LAG)
        finally:
            self.lagging -= 1
        return [value, os.getpid()]

    def Lagging(self):
        """Calls of Lag still running (cancelled ones are not)."""
        return self.lagging

    def Count(self):
        """Calls of Lag and Tally this process has seen."""
        return self.count

    def Tally(self, value):
        self.count += 1
        return value


LAG = float(os.environ.get("FASTRPC_TEST_LAG", "0"))


@fastrpc.register_type
class Color(enum.Enum):
    """A registered Enum (the tests register it too)."""
    RED = "red"
    GREEN = "green"


class Shade(enum.Enum):
    """An Enum only the server knows: it travels as its value."""
    DARK = 1


@fastrpc.register_type
@dataclasses.dataclass
class Entry:
    """A registered dataclass (the tests' twin has the same fields)."""
    key: str
    value: object = None
    tags: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Note:
    """A dataclass only the server knows: it travels as a map."""
    text: str
    entry: Entry


class Money:
    """An application type the server encodes through its default= hook
    (ext 20, "amount currency"), when FASTRPC_TEST_HOOKS is set."""

    def __init__(self, amount, currency):
        self.amount, self.currency = amount, currency


def money_default(obj):
    if isinstance(obj, Money):
        return fastrpc.ExtType(20, f"{obj.amount} {obj.currency}".encode())
    raise TypeError(f"no stand-in for {type(obj).__name__}")


def money_ext_hook(code, data):
    if code == 20:
        amount, currency = data.decode().split()
        return Money(int(amount), currency)
    return fastrpc.ExtType(code, data)


class KV:
    """Keyword arguments, in every handler mode, and values of every type."""

    def Put(self, key, value=None, *, ttl=0):
        return {"key": key, "value": value, "ttl": ttl}

    async def PutLater(self, key, value=None, *, ttl=0):
        await asyncio.sleep(0)
        return {"key": key, "value": value, "ttl": ttl}

    @fastrpc.blocking
    def PutBlocking(self, key, value=None, *, ttl=0):
        return {"key": key, "value": value, "ttl": ttl}

    def Options(self, first=None, **options):
        return {"first": first, "options": options}

    def Need(self, *, token):
        return token

    def Kind(self, value):
        """[the type name the server got, the value back]."""
        return [type(value).__name__, value]

    def Naive(self):
        """A datetime without a time zone: it cannot be sent."""
        import datetime
        return datetime.datetime(2026, 1, 1)

    def Entries(self):
        return [Entry("a", 1, ["x"]), Color.GREEN, Shade.DARK, Note("hi", Entry("b"))]

    def Worth(self, money):
        """A Money in, a Money out (twice the amount): needs FASTRPC_TEST_HOOKS."""
        return Money(money.amount * 2, money.currency)


class Streams:
    """Streaming handlers of every kind, and counters of how they ended."""

    def __init__(self):
        self.produced = 0           # items Forever/AForever produced (flow control)
        self.ended = {}             # name -> how its last run ended: "finished", "GeneratorExit", "CancelledError"
        self.taken = 0              # items Stall took (flow control of the client's items)

    def _end(self, name, how):
        self.ended[name] = how

    def Count(self, n, start=0):
        for i in range(start, start + n):
            yield i
        return f"counted {n}"

    async def ACount(self, n, delay=0.0):
        for i in range(n):
            if delay:
                await asyncio.sleep(delay)
            yield i

    @fastrpc.blocking
    def SlowCount(self, n, delay):
        for i in range(n):
            time.sleep(delay)
            yield i

    def Pids(self, n):
        pid = os.getpid()
        for i in range(n):
            yield [pid, i]

    def Chunks(self, n, nbytes):
        for i in range(n):
            yield np.full(nbytes // 8, i, dtype=np.float64)

    def Forever(self, delay=0.0):
        """Items until cancelled; remembers how it ended."""
        try:
            while True:
                if delay:
                    time.sleep(delay)
                self.produced += 1
                yield self.produced
        except GeneratorExit:
            self._end("Forever", "GeneratorExit")
            raise

    async def AForever(self, delay=0.001):
        try:
            while True:
                await asyncio.sleep(delay)
                self.produced += 1
                yield self.produced
        except asyncio.CancelledError:
            self._end("AForever", "CancelledError")
            raise
        except GeneratorExit:
            self._end("AForever", "GeneratorExit")
            raise

    def Produced(self):
        return self.produced

    def Reset(self):
        self.produced = 0
        self.taken = 0
        self.ended = {}

    def Ended(self, name):
        return self.ended.get(name)

    def Fail(self, n, kind="ValueError"):
        for i in range(n):
            yield i
        if kind == "NotFound":
            raise NotFound(f"gone after {n}")
        raise ValueError(f"failed after {n}")

    def Total(self, items: "Iterator[int]", scale=1):
        return sum(items) * scale

    async def ATotal(self, items: "AsyncIterator[int]"):
        total = 0
        async for x in items:
            total += x
        return total

    def Echo(self, items: "Iterator[Any]"):
        for x in items:
            yield x

    async def AEcho(self, items: "AsyncIterator[Any]", times=1):
        async for x in items:
            yield x if times == 1 else x * times

    async def Stall(self, items: "AsyncIterator[int]", take):
        """Take `take` items, then stop reading until cancelled."""
        for _ in range(take):
            await items.__anext__()
            self.taken += 1
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            self._end("Stall", "CancelledError")
            raise
        return self.taken

    def First(self, items: "Iterator[Any]", n):
        """The first `n` of the client's items; the rest are never read."""
        return [next(items) for _ in range(n)]

    def Taken(self):
        return self.taken

    def ArraySum(self, arrays: "Iterator[Any]"):
        return float(sum(float(a.sum()) for a in arrays))


def main():
    address = sys.argv[1] if len(sys.argv) > 1 else "tcp://127.0.0.1:0"
    # FASTRPC_TEST_SERVER: more Server() keyword arguments, as JSON.
    settings = json.loads(os.environ.get("FASTRPC_TEST_SERVER", "{}"))
    tls = os.environ.get("FASTRPC_TEST_TLS")     # "CERT:KEY": serve TLS
    if tls:
        import ssl
        settings["ssl"] = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        settings["ssl"].load_cert_chain(*tls.split(":"))
    if os.environ.get("FASTRPC_TEST_HOOKS"):
        settings.update(default=money_default, ext_hook=money_ext_hook)
    server = fastrpc.Server(grace=float(os.environ.get("FASTRPC_TEST_GRACE", "5")), **settings)
    server.register(Arith())
    server.register(KV())
    server.register(Streams())
    bound = server.start(address, codec=os.environ.get("FASTRPC_TEST_CODEC"))   # "gob", "jsonrpc"...
    etcd = os.environ.get("FASTRPC_TEST_ETCD")
    if etcd:        # register in etcd under FASTRPC_TEST_SERVICE with a short lease
        server.register_with(fastrpc.EtcdDiscovery(etcd), os.environ.get("FASTRPC_TEST_SERVICE", "arith"),
                             weight=float(os.environ.get("FASTRPC_TEST_WEIGHT", "1")),
                             ttl=float(os.environ.get("FASTRPC_TEST_TTL", "2")))
    # The handler goes in before the address is printed: a test may send
    # SIGTERM as soon as it has the address and calls in flight, and
    # without a handler the signal kills the process with no graceful
    # close (seen in CI: exit -15, the client's calls reset, no GOAWAY).
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(bound, flush=True)
    stop.wait()
    server.close()
    print("closed", flush=True)


if __name__ == "__main__":
    main()
