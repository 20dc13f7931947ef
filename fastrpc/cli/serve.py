"""``fastrpc serve``: serve objects from the shell, in one process or several.

Owns loading ``pkg.module:obj`` targets, the settings a server takes from
flags and FASTRPC_* variables, and the supervisor of ``--workers N``: it
starts N worker processes that each bind the same port with SO_REUSEPORT
(the kernel spreads connections over them), restarts one that dies (with
backoff), registers the service once in etcd, serves the sum of its
workers' metrics and status (--metrics: each worker serves its own on a
private port, which the supervisor reads at each scrape), and on SIGTERM or
SIGINT has every worker drain (GOAWAY, calls in flight finish within
--grace) before it exits 0.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import socket
import ssl
import queue
import subprocess
import sys
import threading
import time
from typing import Any, List, Optional, Tuple

from fastrpc.cli.metrics import MetricsServer
from fastrpc.discovery.etcd import EtcdDiscovery
from fastrpc.net.address import parse_address, tcp_url
from fastrpc.server import Server

__all__ = ["load_target", "serve"]

log = logging.getLogger("fastrpc.cli")

# A worker that dies is started again after this delay, doubling up to the cap.
RESTART_BASE = 0.5
RESTART_CAP = 30.0
# How long a worker may take to print its addresses.
WORKER_START = 60.0


class UsageError(Exception):
    """A mistake in the command line: reported as one line, exit code 2."""


def load_target(spec: str) -> Tuple[str, Any]:
    """(service name, object) for "pkg.module:obj" (obj may be dotted); a class
    is instantiated, once per process."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"{spec!r} is not pkg.module:object")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"cannot import {module_name}: {exc}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(f"{module_name} has no {attr}") from None
    if isinstance(obj, type):
        name = obj.__name__
        obj = obj()
    else:
        name = type(obj).__name__
    return name, obj


def tls_context(cert: Optional[str], key: Optional[str], ca: Optional[str]) -> Optional[ssl.SSLContext]:
    """The server's TLS context from PEM files (with a CA: clients must present a certificate)."""
    if cert is None and key is None:
        if ca is not None:
            raise UsageError("--tls-ca needs --tls-cert and --tls-key")
        return None
    if cert is None or key is None:
        raise UsageError("give both --tls-cert and --tls-key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    if ca is not None:
        context.load_verify_locations(ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def read_secret(path: Optional[str]) -> Optional[bytes]:
    if path is None:
        return None
    with open(path, "rb") as f:
        return f.read().strip()


def listen_addresses(args: argparse.Namespace) -> List[str]:
    addresses = list(args.listen or ["tcp://127.0.0.1:7001"])
    if args.http:
        addresses = ["http://" + a.split("://", 1)[-1] for a in addresses]
    return addresses


def serve(args: argparse.Namespace) -> int:
    """Run `fastrpc serve` (one process, or a supervisor of --workers)."""
    if args.workers < 1:
        raise UsageError("--workers must be >= 1")
    if args.workers > 1 and not args.worker:
        return Supervisor(args).run()
    return serve_here(args)


def serve_here(args: argparse.Namespace) -> int:
    """Serve in this process until SIGTERM or SIGINT, then drain and return 0."""
    targets = [load_target(spec) for spec in args.target]
    # A worker of a supervisor with --metrics serves its own on a private
    # port the supervisor reads; a lone server serves them at --metrics.
    metrics = "http://127.0.0.1:0" if args.worker_metrics else args.metrics
    server = Server(grace=args.grace, ssl=tls_context(args.tls_cert, args.tls_key, args.tls_ca),
                    auth_secret=read_secret(args.auth_secret_file), reuse_port=args.worker or args.reuse_port,
                    metrics_address=metrics)
    for name, obj in targets:
        server.register(obj, name)
    codec = None if args.codec == "fastrpc" else args.codec

    def ready(bound: List[str]) -> None:
        if args.etcd and not args.worker:
            register(server, args, bound)
        if args.worker_metrics:
            bound = bound + [f"metrics={(server.metrics_url or '').rsplit('/', 1)[0]}"]
        print(" ".join(bound), flush=True)          # the first line: where it serves (and is registered)
        log.info("serving %s at %s (pid %d)", ", ".join(n for n, _ in targets), " ".join(bound), os.getpid())

    server.serve_forever(listen_addresses(args), codec, ready=ready)
    return 0


def register(server: Server, args: argparse.Namespace, bound: List[str]) -> None:
    if not args.service:
        raise UsageError("--etcd needs --service, the name balancers look up")
    address = args.advertise or bound[0]
    server.register_with(EtcdDiscovery(args.etcd), args.service, address)
    log.info("registered %s as %s in etcd %s", address, args.service, args.etcd)


class Supervisor:
    """Runs --workers processes on one port (see the module docstring)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stopping = False
        self.workers: List[Optional[subprocess.Popen[str]]] = []
        self.restarts: List[Tuple[float, float]] = []      # per worker: (next start time, delay)
        self.holders: List[socket.socket] = []             # reserve the ports picked for port 0
        self.registration: Any = None
        self.first_lines: List[Optional["queue.Queue[str]"]] = []  # per worker: its first line, once printed
        self.worker_metrics: List[Optional[str]] = []       # per worker: where it serves its metrics
        self.metrics: Optional[MetricsServer] = None

    def concrete_addresses(self) -> List[str]:
        """The listen addresses with port 0 replaced by a port every worker binds."""
        out = []
        for address in listen_addresses(self.args):
            scheme = "http" if address.startswith("http://") else "tcp"
            parsed = parse_address("tcp://" + address.split("://", 1)[1] if scheme == "http" else address)
            if parsed.scheme != "tcp":
                raise UsageError(f"--workers needs TCP addresses ({address} is not one)")
            port = parsed.port
            if port == 0:
                holder = socket.socket(socket.AF_INET6 if ":" in parsed.host else socket.AF_INET)
                holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                holder.bind((parsed.host, 0))           # bound, never listening: it only keeps the port
                port = holder.getsockname()[1]
                self.holders.append(holder)
            out.append(tcp_url(parsed.host, port, scheme))
        return out

    def worker_command(self, addresses: List[str]) -> List[str]:
        a = self.args
        cmd = [sys.executable, "-m", "fastrpc", "--log-level", a.log_level, "serve", *a.target, "--worker",
               "--grace", str(a.grace), "--codec", a.codec]
        for address in addresses:
            cmd += ["--listen", address.replace("http://", "tcp://")]
        if a.http:
            cmd.append("--http")
        for flag, value in (("--tls-cert", a.tls_cert), ("--tls-key", a.tls_key), ("--tls-ca", a.tls_ca),
                            ("--auth-secret-file", a.auth_secret_file)):
            if value is not None:
                cmd += [flag, value]
        if a.metrics:
            cmd.append("--worker-metrics")
        return cmd

    def start_worker(self, index: int, command: List[str]) -> None:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        self.workers[index] = proc
        self.worker_metrics[index] = None
        lines: "queue.Queue[str]" = queue.Queue()
        self.first_lines[index] = lines
        threading.Thread(target=self._read_first_line, args=(index, proc, lines), daemon=True,
                         name=f"fastrpc-worker-{index}").start()

    def _read_first_line(self, index: int, proc: "subprocess.Popen[str]", lines: "queue.Queue[str]") -> None:
        """A worker's first line: its addresses (and where its metrics are)."""
        assert proc.stdout is not None
        line = proc.stdout.readline()
        for token in line.split():
            if token.startswith("metrics="):
                if self.workers[index] is proc:
                    self.worker_metrics[index] = token[len("metrics="):]
        lines.put(line)

    def metrics_sources(self) -> List[str]:
        """Where the live workers serve their metrics."""
        return [url for url in self.worker_metrics if url]

    def run(self) -> int:
        args = self.args
        addresses = self.concrete_addresses()
        command = self.worker_command(addresses)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        self.workers = [None] * args.workers
        self.restarts = [(0.0, RESTART_BASE)] * args.workers
        self.first_lines = [None] * args.workers
        self.worker_metrics = [None] * args.workers
        try:
            for i in range(args.workers):
                self.start_worker(i, command)
            for proc, lines in zip(self.workers, self.first_lines):
                assert proc is not None and lines is not None
                try:
                    line = lines.get(timeout=WORKER_START)
                except queue.Empty:
                    line = ""
                if not line:                                   # its addresses: it is serving
                    raise RuntimeError(f"a worker (pid {proc.pid}) exited before serving")
            if args.metrics:
                self.metrics = MetricsServer(args.metrics, self.metrics_sources)
            if args.etcd:
                if not args.service:
                    raise UsageError("--etcd needs --service, the name balancers look up")
                self.registration = EtcdDiscovery(args.etcd).register(args.service, args.advertise or addresses[0])
            print(" ".join(addresses + ([f"metrics={self.metrics.url}"] if self.metrics else [])),
                  flush=True)                                # serving (and registered)
            log.info("serving at %s with %d workers (pids %s)", " ".join(addresses), args.workers,
                     ", ".join(str(p.pid) for p in self.workers if p is not None))
            while not self.stopping:
                self.watch(command)
                time.sleep(0.1)
            return self.drain()
        finally:
            if self.metrics is not None:
                self.metrics.close()
            for holder in self.holders:
                holder.close()
            for proc in self.workers:
                if proc is not None and proc.poll() is None:
                    proc.kill()
                    proc.wait()

    def _stop(self, signum: int, frame: Any) -> None:
        self.stopping = True

    def watch(self, command: List[str]) -> None:
        """Start again, with backoff, a worker that died."""
        now = time.monotonic()
        for i, proc in enumerate(self.workers):
            if proc is None or proc.poll() is None:
                if proc is None and now >= self.restarts[i][0]:
                    self.start_worker(i, command)
                continue
            start_at, delay = self.restarts[i]
            log.warning("worker pid %d exited with code %s; starting another in %.1fs", proc.pid,
                        proc.returncode, delay)
            self.workers[i] = None
            self.worker_metrics[i] = None
            self.restarts[i] = (now + delay, min(RESTART_CAP, delay * 2))

    def drain(self) -> int:
        """Deregister, have every worker drain, and wait for them (grace + 5 s at most)."""
        if self.registration is not None:
            self.registration.close()
        live = [p for p in self.workers if p is not None and p.poll() is None]
        log.info("draining %d workers (grace %.1fs)", len(live), self.args.grace)
        for proc in live:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.args.grace + 5.0
        codes = []
        for proc in live:
            try:
                codes.append(proc.wait(max(0.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                log.warning("worker pid %d did not finish within the grace period: killed", proc.pid)
                proc.kill()
                codes.append(proc.wait())
        return 0 if all(code == 0 for code in codes) else 1
