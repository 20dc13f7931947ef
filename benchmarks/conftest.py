"""Benchmark fixtures: server processes (fastrpc and peers) and the ratio report.

Every figure is recorded with `report.add(group, name, value)`; at the end
of the run a table shows, per group, each figure and its ratio to the
group's baseline, all measured in the same run. With --benchmark-disable
every benchmark runs once on a tiny workload so none of them rots, and no
figures are reported.
"""
import os
import shutil
import statistics
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PEERS = os.path.join(HERE, "peers")
BIN = os.path.join(PEERS, "bin")


class Report:
    """Figures per group, printed with ratios to each group's baseline."""

    def __init__(self):
        self.groups = {}     # group -> {"baseline": name, "unit": str, "rows": {name: value}}

    def baseline(self, group, name, unit):
        self.groups.setdefault(group, {"rows": {}})
        self.groups[group].update(baseline=name, unit=unit)

    def add(self, group, name, value):
        self.groups.setdefault(group, {"rows": {}, "baseline": None, "unit": ""})["rows"][name] = value

    def lines(self):
        out = []
        for group, g in self.groups.items():
            rows = g["rows"]
            if not rows:
                continue
            base = rows.get(g.get("baseline"))
            out.append(f"{group} ({g.get('unit', '')}; ratio to {g.get('baseline')})")
            for name, value in rows.items():
                ratio = f"{value / base:8.2f}x" if base else "        -"
                out.append(f"  {name:<44}{value:>16,.1f} {ratio}")
        return out


REPORT = Report()


@pytest.fixture(scope="session")
def report():
    return REPORT


def pytest_terminal_summary(terminalreporter):
    lines = REPORT.lines()
    if lines:
        terminalreporter.write_sep("=", "fastrpc figures (medians, same run)")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def quick(request):
    """True under --benchmark-disable: run each benchmark once, small."""
    return bool(request.config.getoption("benchmark_disable", False))


def median_rate(benchmark, calls):
    """calls/s from the median round time, or None when timing is disabled."""
    if getattr(benchmark, "disabled", False) or benchmark.stats is None:
        return None
    return calls / benchmark.stats.stats.median


def _pin(pid, cpus):
    """Run every thread of process `pid` on `cpus` (threads it starts later
    inherit it). sched_setaffinity() itself places one thread."""
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return                                  # it has exited: nothing to place
    for tid in threads:
        try:
            os.sched_setaffinity(int(tid), cpus)
        except ProcessLookupError:
            pass                                # that thread has ended


class Placement:
    """Where the client/server pair benchmarks run: inside `with PLACEMENT:`
    this process (and the peer clients it starts, which inherit its CPU)
    runs on one CPU and every server process on another.

    Left to the scheduler, a client and its server share a core for a while
    (a 64 KiB echo then stays in that core's cache and runs twice as fast),
    then are spread apart, and a figure depends on when it was taken: the
    echo read from 0.75x to 1.46x of raw C between rounds. Apart, as a
    client and a server on two machines are, every side of a ratio runs the
    same way. With fewer than two CPUs nothing is pinned."""

    def __init__(self):
        cpus = sorted(os.sched_getaffinity(0))
        self.every_cpu = set(cpus)
        # (client CPUs, server CPUs); None with fewer than two CPUs
        self.apart = ({cpus[0]}, {cpus[1]}) if len(cpus) >= 2 else None
        self.servers = set()                    # pids of running server processes
        self.active = False

    def _place(self, client_cpus, server_cpus):
        _pin(os.getpid(), client_cpus)
        for pid in self.servers:
            _pin(pid, server_cpus)

    def server_started(self, pid):
        self.servers.add(pid)
        if self.active and self.apart:
            _pin(pid, self.apart[1])

    def server_stopped(self, pid):
        self.servers.discard(pid)

    def __enter__(self):
        self.active = True
        if self.apart:
            self._place(*self.apart)
        return self

    def __exit__(self, *exc):
        if self.apart:
            self._place(self.every_cpu, self.every_cpu)
        self.active = False


PLACEMENT = Placement()


class Proc:
    """A server process that prints its address first and stops when stdin closes."""

    def __init__(self, argv, cwd=None):
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, cwd=cwd)
        PLACEMENT.server_started(self.proc.pid)
        self.address = self.proc.stdout.readline().strip()
        if not self.address:
            self.stop()
            raise RuntimeError(f"{argv[0]} did not start")

    def stop(self):
        PLACEMENT.server_stopped(self.proc.pid)
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture(scope="session")
def fastrpc_server():
    p = Proc([sys.executable, os.path.join(HERE, "servers.py"), "tcp://127.0.0.1:0"])
    yield p.address
    p.stop()


@pytest.fixture(scope="session")
def fastrpc_views_server():
    """A fastrpc server whose handlers get bytes as views of the receive buffer."""
    p = Proc([sys.executable, os.path.join(HERE, "servers.py"), "tcp://127.0.0.1:0", "fastrpc", "bytes_views"])
    yield p.address
    p.stop()


def _stop(proc):
    PLACEMENT.server_stopped(proc.pid)
    proc.kill()
    proc.wait(5)


@pytest.fixture(scope="session")
def rawpeer():
    """The raw C peer: (binary, host, port) of a running server."""
    if shutil.which("gcc") is None:
        pytest.fail("gcc is required for the raw C peer (make deps installs it)")
    os.makedirs(BIN, exist_ok=True)
    binary = os.path.join(BIN, "rawpeer")
    subprocess.run(["gcc", "-O2", "-pthread", "-o", binary, os.path.join(PEERS, "c", "rawpeer.c")],
                   check=True)
    p = Proc([binary, "server", "127.0.0.1", "0"])
    yield binary, "127.0.0.1", p.address
    _stop(p.proc)


@pytest.fixture(scope="session")
def gopeer():
    """The Go net/rpc peer: (binary, address) of a running server."""
    if shutil.which("go") is None:
        pytest.fail("Go is required for the net/rpc peer (make deps installs it)")
    os.makedirs(BIN, exist_ok=True)
    binary = os.path.join(BIN, "netrpc")
    env = {**os.environ, "GOCACHE": os.environ.get("GOCACHE", os.path.join(BIN, "gocache")),
           "GOFLAGS": "-mod=mod", "GOPROXY": "off"}
    subprocess.run(["go", "build", "-o", binary, "."], check=True, cwd=os.path.join(PEERS, "go"), env=env)
    p = Proc([binary, "server", "127.0.0.1:0"])
    yield binary, p.address
    _stop(p.proc)


@pytest.fixture(scope="session")
def grpcpeer():
    """A grpcio server process and a connected sync client."""
    sys.path.insert(0, PEERS)
    from grpc_peer import GrpcClient
    p = Proc([sys.executable, os.path.join(PEERS, "grpc_peer.py"), "server", "127.0.0.1:0"])
    client = GrpcClient(p.address)
    yield client
    client.close()
    p.stop()


def run_peer_client(argv, rounds):
    """Run a peer client `rounds` times; return the median (calls/s, MB/s) it reported."""
    calls, mbs = [], []
    for _ in range(rounds):
        out = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=300).stdout.split()
        calls.append(float(out[1]))
        mbs.append(float(out[3]))
    return statistics.median(calls), statistics.median(mbs)
