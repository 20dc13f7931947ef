"""Helpers shared by the tests: server processes on loopback."""
import contextlib
import os
import select
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SERVE = os.path.join(HERE, "serve.py")


class ServerProcess:
    """A tests/serve.py process; `address` is what it bound."""

    def __init__(self, address="tcp://127.0.0.1:0", env=None):
        self.proc = subprocess.Popen(
            [sys.executable, SERVE, address], stdout=subprocess.PIPE, text=True,
            env={**os.environ, **(env or {})})
        self.address = self.readline(20)
        if not self.address:
            self.kill()
            raise RuntimeError("server process did not start")

    def readline(self, timeout):
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        return self.proc.stdout.readline().strip()

    @property
    def pid(self):
        return self.proc.pid

    def terminate(self, timeout=20):
        """Graceful stop (SIGTERM -> server.close()); return the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def close(self):
        self.kill()
        self.proc.stdout.close()


@contextlib.contextmanager
def server_process(address="tcp://127.0.0.1:0", env=None):
    server = ServerProcess(address, env)
    try:
        yield server
    finally:
        server.close()


def wait_until(predicate, timeout=10.0, interval=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def unused_address():
    """A loopback address nothing listens on (connections are refused)."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"tcp://127.0.0.1:{port}"


@contextlib.contextmanager
def server_processes(count, env=None):
    """`count` server processes started together."""
    import concurrent.futures
    servers = []
    try:
        with concurrent.futures.ThreadPoolExecutor(count) as pool:
            futures = [pool.submit(ServerProcess, env=env) for _ in range(count)]
            errors = []
            for fut in futures:
                try:
                    servers.append(fut.result())
                except Exception as exc:        # the others are closed below
                    errors.append(exc)
        if errors:
            raise errors[0]
        yield servers
    finally:
        for server in servers:
            server.close()
