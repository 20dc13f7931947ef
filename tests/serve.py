"""A server process for the end-to-end tests: `python serve.py ADDRESS`.

Prints the bound address on its first line of output, then serves until
SIGTERM (graceful close) or SIGKILL.
"""
import asyncio
import json
import os
import signal
import sys
import threading
import time

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
        raise {"KeyError": KeyError, "ZeroDivisionError": ZeroDivisionError, "NotFound": NotFound,
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
        await asyncio.sleep(LAG)
        return [value, os.getpid()]

    def Count(self):
        """Calls of Lag and Tally this process has seen."""
        return self.count

    def Tally(self, value):
        self.count += 1
        return value


LAG = float(os.environ.get("FASTRPC_TEST_LAG", "0"))


def main():
    address = sys.argv[1] if len(sys.argv) > 1 else "tcp://127.0.0.1:0"
    # FASTRPC_TEST_SERVER: more Server() keyword arguments, as JSON.
    settings = json.loads(os.environ.get("FASTRPC_TEST_SERVER", "{}"))
    tls = os.environ.get("FASTRPC_TEST_TLS")     # "CERT:KEY": serve TLS
    if tls:
        import ssl
        settings["ssl"] = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        settings["ssl"].load_cert_chain(*tls.split(":"))
    server = fastrpc.Server(grace=float(os.environ.get("FASTRPC_TEST_GRACE", "5")), **settings)
    server.register(Arith())
    bound = server.start(address, codec=os.environ.get("FASTRPC_TEST_CODEC"))   # "gob", "jsonrpc"...
    etcd = os.environ.get("FASTRPC_TEST_ETCD")
    if etcd:        # register in etcd under FASTRPC_TEST_SERVICE with a short lease
        server.register_with(fastrpc.EtcdDiscovery(etcd), os.environ.get("FASTRPC_TEST_SERVICE", "arith"),
                             weight=float(os.environ.get("FASTRPC_TEST_WEIGHT", "1")),
                             ttl=float(os.environ.get("FASTRPC_TEST_TTL", "2")))
    print(bound, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    server.close()
    print("closed", flush=True)


if __name__ == "__main__":
    main()
