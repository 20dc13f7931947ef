"""Helpers shared by the tests: server processes on loopback."""
import contextlib
import os
import select
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SERVE = os.path.join(HERE, "serve.py")
LIAR = os.path.join(HERE, "liar.py")


class ServerProcess:
    """A tests/serve.py process (or `argv`, another script printing its
    address first); `address` is what it bound."""

    def __init__(self, address="tcp://127.0.0.1:0", env=None, argv=None):
        self.proc = subprocess.Popen(
            [sys.executable, *(argv or [SERVE, address])], stdout=subprocess.PIPE, text=True,
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

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@contextlib.contextmanager
def server_process(address="tcp://127.0.0.1:0", env=None):
    server = ServerProcess(address, env)
    try:
        yield server
    finally:
        server.close()


def rss_kib(pid):
    """Resident memory of process `pid`, in KiB (Linux)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def open_fds(pid):
    """How many file descriptors process `pid` has open (Linux)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_until(predicate, timeout=10.0, interval=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def unused_address():
    """A loopback address nothing listens on (connections are refused)."""
    return unused_addresses(1)[0]


def unused_addresses(count):
    """`count` distinct loopback addresses nothing listens on (bound together,
    so the system cannot hand out one port twice)."""
    import socket
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [f"tcp://127.0.0.1:{s.getsockname()[1]}" for s in socks]
    finally:
        for s in socks:
            s.close()


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


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PortTaken(RuntimeError):
    """etcd exited because one of its ports was taken meanwhile."""


class EtcdProcess:
    """A real single-member etcd on loopback ports with its own data directory.

    ``restart()`` brings it back on the same ports and data (a restart);
    ``tls=(ca, cert, key)`` serves clients over TLS and requires client
    certificates signed by `ca`.
    """

    def __init__(self, data_dir, tls=None):
        if shutil.which("etcd") is None:
            raise RuntimeError("etcd is required (make deps installs Debian's etcd-server)")
        self.data_dir = str(data_dir)
        self.tls = tls
        self.proc = None
        self.log = None
        # A free port is free until someone takes it: between free_port()
        # and etcd's bind, an outgoing connection of another test may get it
        # as its own (ephemeral) port. Then etcd exits at once; try others.
        for _ in range(5):
            self.client_port, self.peer_port = free_port(), free_port()
            self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.client_port}"
            try:
                self.start()
                return
            except PortTaken:
                self.stop()
                shutil.rmtree(self.data_dir, ignore_errors=True)
        raise RuntimeError(f"etcd found no free ports in 5 attempts (see {self.data_dir}.log)")

    def start(self):
        peer = f"http://127.0.0.1:{self.peer_port}"
        argv = ["etcd", "--name", "test", "--data-dir", self.data_dir,
                "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"test={peer}", "--log-level", "error"]
        if self.tls:
            ca, cert, key = self.tls
            argv += ["--cert-file", cert, "--key-file", key, "--trusted-ca-file", ca, "--client-cert-auth"]
        self.log = open(os.path.join(self.data_dir + ".log"), "ab")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT)
        if not wait_until(self._serving, 20, 0.05):
            self.stop()
            raise RuntimeError(f"etcd did not start (see {self.data_dir}.log)")

    def _serving(self):
        import socket
        if self.proc.poll() is not None:
            self.log.flush()
            with open(self.data_dir + ".log", "rb") as log:
                if b"address already in use" in log.read()[-2000:]:
                    raise PortTaken(f"etcd could not bind port {self.client_port} or {self.peer_port}")
            raise RuntimeError(f"etcd exited with {self.proc.returncode} (see {self.data_dir}.log)")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", self.client_port)) != 0:
                return False
        return True

    def stop(self, kill=False):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill() if kill else self.proc.terminate()
            self.proc.wait(10)
        if self.log is not None:
            self.log.close()
            self.log = None

    def restart(self):
        self.stop()
        self.start()


@contextlib.contextmanager
def etcd_process(data_dir, tls=None):
    etcd = EtcdProcess(data_dir, tls)
    try:
        yield etcd
    finally:
        etcd.stop(kill=True)


class Load:
    """`threads` threads calling `call(i)` until `seconds` pass (at most
    `max_calls` each): results in `.results`, exceptions in `.errors`."""

    def __init__(self, call, threads=3, seconds=3.0, max_calls=50_000):
        import threading
        self.results, self.errors = [], []
        self.stop_at = time.monotonic() + seconds
        self.threads = [threading.Thread(target=self._run, args=(call, max_calls), daemon=True)
                        for _ in range(threads)]
        for t in self.threads:
            t.start()

    def _run(self, call, max_calls):
        i = 0
        while time.monotonic() < self.stop_at and i < max_calls:
            try:
                self.results.append(call(i))
            except Exception as exc:        # the test decides which errors are defects
                self.errors.append(exc)
            i += 1

    def join(self, timeout=10):
        """Wait for every thread; fail if one is stuck in a call."""
        for t in self.threads:
            t.join(timeout)
        hung = sum(t.is_alive() for t in self.threads)
        assert not hung, f"{hung} load threads are stuck in a call"


def make_certificates(directory):
    """A CA, and a certificate for 127.0.0.1 signed by it (server and client use)."""
    ca_key, ca = directory / "ca.key", directory / "ca.pem"
    key, csr, cert = directory / "node.key", directory / "node.csr", directory / "node.pem"
    ext = directory / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")

    if shutil.which("openssl") is None:
        raise RuntimeError("openssl is required to make test certificates (scripts/install-deps installs it)")

    def run(*argv):
        subprocess.run(["openssl", *map(str, argv)], check=True, capture_output=True)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca,
        "-days", "1", "-subj", "/CN=fastrpc test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
    run("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
        "-days", "1", "-extfile", ext)
    return str(ca), str(cert), str(key)


def load_reference(compiled):
    """The uncompiled reference of a pure-Python-mode module (its .py, shipped
    next to the compiled one), loaded as a separate module."""
    import importlib.util
    name = compiled.__name__.rsplit(".", 1)[1]
    path = os.path.join(os.path.dirname(compiled.__file__), f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"fastrpc{name}_reference", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def read_frames(sock, count, timeout=5):
    """The next `count` frames a server sends on a raw socket, its hello
    (PONG seq 0) left out; fewer if it closes first."""
    from fastrpc._core import frame as wire
    reader = wire.FrameReader()
    frames = []
    sock.settimeout(timeout)
    while len(frames) < count:
        data = sock.recv(65536)
        if not data:
            break
        frames += [f for f in reader.feed(data) if not (f.kind == wire.PONG and f.seq == 0)]
    return frames
