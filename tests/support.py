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
