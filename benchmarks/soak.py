"""Soak: a million mixed calls through a Balancer over 4 backend processes,
one backend restarted every 10 seconds.

    python3 benchmarks/soak.py                     # 1,000,000 calls
    python3 benchmarks/soak.py --calls 20000 --restart-every 1   # a short run

The mix: small calls, 64 KiB echoes, calls whose handler raises, calls that
time out, and calls the caller cancels. Backends are stopped gracefully in
turn and started again on the same address. The report gives:
- calls/s;
- outcomes by kind (results, expected errors, unexpected errors);
- lost calls: calls that never ended, or ended with a wrong result. This
  must be 0;
- each process's RSS after warm-up and at its end (it must stay flat).

The exit status is 1 if any call was lost or ended with an unexpected error.
"""
from __future__ import annotations

import argparse
import collections
import os
import random
import signal
import subprocess
import sys
import threading
import time

import fastrpc

HERE = os.path.dirname(os.path.abspath(__file__))
BLOB = b"\xa5" * 65536


def rss_kib(pid: int) -> int:
    """Resident set size of process `pid` in KiB (Linux /proc)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Backend:
    """One backend process (benchmarks/servers.py) on a fixed address."""

    def __init__(self, address: str = "tcp://127.0.0.1:0") -> None:
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "servers.py"), address],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.address = self.proc.stdout.readline().strip()
        if not self.address:
            raise RuntimeError("backend did not start")
        self.rss_start = None

    def stop(self) -> int:
        """Graceful stop (server.close() drains); return the RSS just before."""
        rss = rss_kib(self.proc.pid)
        self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        return rss


class Tally:
    """Outcomes by kind, counted as calls end (callbacks run on many threads)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.kinds = collections.Counter()
        self.wrong = 0
        self.ended = 0

    def add(self, kind: str, wrong: bool = False) -> None:
        with self.lock:
            self.kinds[kind] += 1
            self.ended += 1
            self.wrong += wrong


EXPECTED = {"ok", "RemoteError: ValueError", "timeout", "cancelled"}


def settle(tally: Tally, op: str, expected, fut) -> None:
    if fut.cancelled():
        tally.add("cancelled")
        return
    exc = fut.exception()
    if exc is None:
        tally.add("ok", wrong=fut.result() != expected)
    elif isinstance(exc, fastrpc.RemoteError) and exc.type == "ValueError" and op == "fail":
        tally.add("RemoteError: ValueError")
    elif isinstance(exc, fastrpc.TimeoutError) and op == "slow":
        tally.add("timeout")
    else:
        tally.add(f"{type(exc).__name__} ({op})")


def run(calls: int, restart_every: float, backends: int, in_flight: int, seed: int) -> int:
    rng = random.Random(seed)
    procs = [Backend() for _ in range(backends)]
    rss = {p.proc.pid: {"start": None, "end": None} for p in procs}
    me = os.getpid()
    balancer = fastrpc.Balancer([p.address for p in procs], strategy="p2c", failure="failover",
                                timeout=10.0)
    tally = Tally()
    slots = threading.Semaphore(in_flight)
    stop_restarts = threading.Event()
    restarts = []

    def release(_fut) -> None:
        slots.release()

    def restarter() -> None:
        turn = 0
        while not stop_restarts.wait(restart_every):
            i = turn % len(procs)
            turn += 1
            old = procs[i]
            rss[old.proc.pid]["end"] = old.stop()
            procs[i] = Backend(old.address)
            rss[procs[i].proc.pid] = {"start": None, "end": None}
            restarts.append(time.monotonic())

    warm = min(20000, calls // 10)
    start = time.monotonic()
    thread = threading.Thread(target=restarter, daemon=True)
    thread.start()
    futures = []
    for n in range(calls):
        if n == warm:
            # after warm-up: the RSS every later figure is compared with
            rss["driver"] = {"start": rss_kib(me), "end": None}
            for p in procs:
                if rss[p.proc.pid]["start"] is None:
                    rss[p.proc.pid]["start"] = rss_kib(p.proc.pid)
        roll = rng.random()
        slots.acquire()
        try:
            if roll < 0.90:
                op, fut, expected = "sum", balancer.go("Arith.Sum", n, 1), n + 1
            elif roll < 0.95:
                op, fut, expected = "echo", balancer.go("Arith.Echo", BLOB), BLOB
            elif roll < 0.98:
                op, fut, expected = "fail", balancer.go("Arith.Fail", "soak"), None
            elif roll < 0.99:
                op, fut, expected = "slow", balancer.go("Arith.Slow", 2.0, timeout=0.05), None
            else:
                op, fut, expected = "cancel", balancer.go("Arith.Slow", 1.0), None
                fut.cancel()
        except Exception as exc:                     # could not even start: counts as an outcome
            slots.release()
            tally.add(f"{type(exc).__name__} at start ({exc})")
            continue
        fut.add_done_callback(release)
        fut.add_done_callback(lambda f, op=op, expected=expected: settle(tally, op, expected, f))
        if n % 1000 == 0:
            futures = [f for f in futures if not f.done()]
        futures.append(fut)
        # started after warm-up: record a restarted backend's baseline
        if restarts and n % 5000 == 0:
            for p in procs:
                if rss[p.proc.pid]["start"] is None and n > warm:
                    rss[p.proc.pid]["start"] = rss_kib(p.proc.pid)
    # (concurrent.futures.wait() never counts a cancelled future as done)
    deadline = time.monotonic() + 60
    while any(not f.done() for f in futures) and time.monotonic() < deadline:
        time.sleep(0.01)
    elapsed = time.monotonic() - start
    stop_restarts.set()
    thread.join()
    rss["driver"]["end"] = rss_kib(me)
    for p in procs:
        rss[p.proc.pid]["end"] = p.stop()
    balancer.close()

    lost = calls - tally.ended + tally.wrong
    unexpected = {k: v for k, v in tally.kinds.items() if k not in EXPECTED}
    print(f"calls          {calls:,} in {elapsed:.1f} s: {calls / elapsed:,.0f} calls/s "
          f"({len(restarts)} backend restarts)")
    print("outcomes       " + ", ".join(f"{k}: {v:,}" for k, v in sorted(tally.kinds.items())))
    print(f"lost calls     {lost} (never ended: {calls - tally.ended}, wrong result: {tally.wrong})")
    print("RSS (KiB, after warm-up -> end)")
    for who, r in rss.items():
        label = "driver" if who == "driver" else f"backend pid {who}"
        if r["start"] is not None:
            growth = (r["end"] - r["start"]) / r["start"] * 100
            print(f"  {label:<20} {r['start']:>8,} -> {r['end']:>8,}  ({growth:+.1f}%)")
        else:
            print(f"  {label:<20} {'(restarted before warm-up)':>21} -> {r['end']:>8,}")
    return 1 if lost or unexpected else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--restart-every", type=float, default=10.0, help="seconds between backend restarts")
    parser.add_argument("--backends", type=int, default=4)
    parser.add_argument("--in-flight", type=int, default=256)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    sys.exit(run(args.calls, args.restart_every, args.backends, args.in_flight, args.seed))


if __name__ == "__main__":
    main()
