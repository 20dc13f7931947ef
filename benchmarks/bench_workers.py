"""`fastrpc serve --workers N`: calls/s of a CPU-bound handler (~200 µs per call)
with one worker and with two, on one port, measured alternately in the same
run over several client connections (the kernel spreads connections over
the workers with SO_REUSEPORT). The figure is the ratio of two to one."""
import io
import os
import shutil
import statistics
import subprocess


import fastrpc
from fastrpc.cli.bench import closed_loop
from fastrpc.cli.output import Progress

HERE = os.path.dirname(os.path.abspath(__file__))
GROUP = "fastrpc serve --workers, Burn(200 µs), 16 connections, 64 in flight"


class Serve:
    def __init__(self, workers):
        command = shutil.which("fastrpc")
        assert command is not None, "the fastrpc console script is not installed (pip install .)"
        env = {**os.environ, "PYTHONPATH": HERE + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.proc = subprocess.Popen([command, "--log-level", "WARNING", "serve", "burn:Burner", "--listen",
                                      "tcp://127.0.0.1:0", "--workers", str(workers)],
                                     stdout=subprocess.PIPE, text=True, env=env, cwd=HERE)
        self.address = self.proc.stdout.readline().split()[0]

    def stop(self):
        self.proc.terminate()
        assert self.proc.wait(30) == 0


def rate(address, seconds):
    clients = [fastrpc.Client(address, timeout=30) for _ in range(16)]
    try:
        pids = {c.call("Burner.Pid") for c in clients}
        result = closed_loop(clients, "Burner.Burn", [200], 64, seconds, Progress(seconds, io.StringIO()))
        assert result["errors"] == {}
        return result["calls_per_second"], len(pids)
    finally:
        for c in clients:
            c.close()


def test_two_workers_against_one(report, quick):
    servers = {n: Serve(n) for n in (1, 2)}
    try:
        rounds, seconds = (1, 0.2) if quick else (5, 2.0)
        rates = {1: [], 2: []}
        for _ in range(rounds):
            for n, server in servers.items():
                value, pids = rate(server.address, seconds)
                assert pids == n                     # every worker got connections
                rates[n].append(value)
    finally:
        for server in servers.values():
            server.stop()
    if not quick:
        report.baseline(GROUP, "--workers 1", "calls/s")
        report.add(GROUP, "--workers 1", statistics.median(rates[1]))
        report.add(GROUP, "--workers 2", statistics.median(rates[2]))
