"""The demo: local backend processes behind a balancer, every strategy in turn.

    python -m fastrpc.demo [--seconds S] [--in-flight N] [--etcd URL]

Starts four backend server processes on loopback, each standing for a
server in another city (a location, a zone and a weight), and balances calls
over them from this process with a static endpoint list. Every strategy runs
for S seconds with a progress bar; a table then shows calls/s per strategy
and how the calls spread over the backends, next to a direct Client to one
backend. With ``--etcd URL`` the backends register in etcd and the balancers
find them there instead of in a static list.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import fastrpc
from fastrpc import Balancer, Endpoint, EtcdDiscovery

ORIGIN = ("Paris", 48.86, 2.35)           # where the demo's caller "is"
STRATEGY_NOTES = {
    "random": "uniform",
    "round_robin": "in turn, from a random start",
    "weighted_random": "in proportion to weight",
    "weighted_round_robin": "nginx smooth WRR by weight",
    "least_connections": "fewest in flight per weight",
    "p2c": "least loaded of two random",
    "p2c_ewma": "lowest latency x load of two",
    "consistent_hash": "by key (user id)",
    "geo": f"nearest to {ORIGIN[0]} first",
}


class Backend(NamedTuple):
    """One demo backend: where it pretends to be and how much it can take."""
    name: str
    zone: str
    lat: float
    lon: float
    weight: int


BACKENDS = [
    Backend("paris", "eu-west", 48.86, 2.35, 1),
    Backend("frankfurt", "eu-central", 50.11, 8.68, 2),
    Backend("virginia", "us-east", 38.95, -77.45, 3),
    Backend("tokyo", "ap-northeast", 35.68, 139.69, 4),
]


class Arith:
    """The demo service (what `--serve` exposes)."""

    def Sum(self, a: Any, b: Any) -> Any:
        return a + b

    def Mul(self, a: Any, b: Any) -> Any:
        return a * b

    def Pid(self) -> int:
        return os.getpid()


DEMO_SERVICE = "demo-arith"


def serve(address: str, etcd: Optional[str] = None, backend: Optional[int] = None) -> None:
    """Serve Arith on `address` until stdin closes (a backend process); with
    `etcd`, register there as BACKENDS[backend]."""
    server = fastrpc.Server()
    server.register(Arith())
    bound = server.start(address)
    if etcd:
        b = BACKENDS[backend or 0]
        server.register_with(EtcdDiscovery(etcd), DEMO_SERVICE, weight=b.weight, zone=b.zone,
                             lat=b.lat, lon=b.lon, metadata={"name": b.name}, ttl=5)
    print(bound, flush=True)
    try:
        sys.stdin.read()          # serve until the parent closes our stdin
    finally:
        server.close()


def start_servers(count: int, etcd: Optional[str] = None) -> List[Tuple[subprocess.Popen[Any], str]]:
    """Start `count` backend processes; return (process, address) pairs."""
    procs = []
    for n in range(count):
        argv = [sys.executable, "-m", "fastrpc.demo", "--serve", "tcp://127.0.0.1:0"]
        if etcd:
            argv += ["--etcd", etcd, "--backend", str(n)]
        # Start from the directory fastrpc was imported from, so the server
        # processes run exactly the package this process runs.
        proc = subprocess.Popen(argv,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                cwd=os.path.dirname(os.path.dirname(os.path.abspath(fastrpc.__file__))))
        assert proc.stdout is not None                  # stdout=PIPE
        address = proc.stdout.readline().strip()
        procs.append((proc, address))
        if not address:
            stop_servers(procs)
            raise RuntimeError("a backend process did not start")
    return procs


def stop_servers(procs: List[Tuple[subprocess.Popen[Any], str]]) -> None:
    for proc, _ in procs:
        if proc.stdin is not None:
            proc.stdin.close()
    for proc, _ in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class Progress:
    """A one-line progress bar; on a terminal it redraws, elsewhere it prints once."""

    WIDTH = 30

    def __init__(self, label: str, stream: Any = sys.stdout) -> None:
        self.label = label
        self.stream = stream
        self.live = stream.isatty()
        self.shown = -1

    def update(self, fraction: float, calls: int) -> None:
        filled = min(self.WIDTH, int(fraction * self.WIDTH))
        if self.live and filled != self.shown:
            self.shown = filled
            self.stream.write(f"\r  {self.label:<22}[{'#' * filled}{'.' * (self.WIDTH - filled)}] {calls:>9,} calls")
            self.stream.flush()

    def finish(self, calls: int, seconds: float) -> None:
        line = f"  {self.label:<22}[{'#' * self.WIDTH}] {calls:>9,} calls in {seconds:.1f} s"
        self.stream.write(("\r" + line if self.live else line) + "\n")
        self.stream.flush()


def run_for(label: str, seconds: float, batch: Callable[[int], int]) -> Tuple[int, float]:
    """Call `batch(round)` (which makes calls and returns how many) for `seconds`."""
    bar = Progress(label)
    calls, rounds, start = 0, 0, time.perf_counter()
    while True:
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
        calls += batch(rounds)
        rounds += 1
        bar.update(elapsed / seconds, calls)
    elapsed = time.perf_counter() - start
    bar.finish(calls, elapsed)
    return calls, elapsed


def endpoints(procs: List[Tuple[subprocess.Popen[Any], str]]) -> List[Endpoint]:
    return [Endpoint(address, weight=b.weight, zone=b.zone, lat=b.lat, lon=b.lon,
                     metadata={"name": b.name})
            for b, (_, address) in zip(BACKENDS, procs)]


def balanced(source: Dict[str, Any], strategy: str, seconds: float, in_flight: int) -> Tuple[float, Dict[str, int]]:
    """Run one strategy; return calls/s and calls per backend name."""
    options: Dict[str, Any] = {"origin": ORIGIN[1:]} if strategy == "geo" else {}
    with Balancer(**source, strategy=strategy, health_interval=1.0, **options) as b:
        eps = b.endpoints
        keyed = strategy == "consistent_hash"

        def batch(r: int) -> int:
            base = r * in_flight
            futures = [b.go("Arith.Sum", i, 1, key=f"user:{(base + i) % 997}" if keyed else None)
                       for i in range(in_flight)]
            for f in futures:
                f.result()
            return in_flight

        calls, elapsed = run_for(strategy, seconds, batch)
        names = {e.address: e.metadata["name"] for e in eps}
        spread = {names[a]: s["calls"] for a, s in b.stats().items()}
    return calls / elapsed, spread


def direct(address: str, seconds: float, in_flight: int) -> float:
    """The same load through one plain Client to one backend: the reference row."""
    with fastrpc.Client(address) as c:
        def batch(r: int) -> int:
            for f in [c.go("Arith.Sum", i, 1) for i in range(in_flight)]:
                f.result()
            return in_flight
        calls, elapsed = run_for("direct Client", seconds, batch)
    return calls / elapsed


def table(rows: List[Tuple[str, float, Dict[str, int]]], reference: float) -> str:
    names = [b.name for b in BACKENDS]
    head = f"  {'strategy':<22}{'calls/s':>10}{'vs direct':>11}  " + "".join(f"{n:>10}" for n in names)
    lines = [head, "  " + "-" * (len(head) - 2)]
    lines.append(f"  {'direct Client (paris)':<22}{reference:>10,.0f}{1.0:>10.2f}x  "
                 + "".join(f"{'100%' if n == 'paris' else '-':>10}" for n in names))
    for strategy, rate, spread in rows:
        total = sum(spread.values()) or 1
        cells = "".join(f"{100.0 * spread.get(n, 0) / total:>9.0f}%" for n in names)
        lines.append(f"  {strategy:<22}{rate:>10,.0f}{rate / reference:>10.2f}x  {cells}   "
                     f"{STRATEGY_NOTES.get(strategy, '')}")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per strategy")
    parser.add_argument("--in-flight", type=int, default=64, help="calls in flight per round")
    parser.add_argument("--etcd", metavar="URL",
                        help="register the backends in this etcd and discover them there")
    parser.add_argument("--serve", metavar="ADDRESS", help=argparse.SUPPRESS)
    parser.add_argument("--backend", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve(args.serve, args.etcd, args.backend)
    if args.seconds <= 0 or args.in_flight < 1:
        parser.error("--seconds must be > 0 and --in-flight >= 1")

    print(f"fastrpc {fastrpc.__version__} (backend: {fastrpc.backend})")
    procs = start_servers(len(BACKENDS), args.etcd)
    try:
        eps = endpoints(procs)
        if args.etcd:
            discovery = EtcdDiscovery(args.etcd)
            found = sorted(e.address for e in discovery.endpoints(DEMO_SERVICE))
            if found != sorted(e.address for e in eps):
                raise SystemExit(f"etcd at {args.etcd} lists {found} under {DEMO_SERVICE!r}, "
                                 f"not only the demo's backends")
            source: Dict[str, Any] = {"discovery": discovery, "service": DEMO_SERVICE}
            where = f"registered in etcd at {args.etcd} as {DEMO_SERVICE!r}"
        else:
            source = {"endpoints": eps}
            where = "static endpoint list"
        print(f"{len(eps)} backend processes on loopback, {where}; caller in {ORIGIN[0]}:")
        for backend, e in zip(BACKENDS, eps):
            with fastrpc.Client(e.address) as c:
                print(f"  {backend.name:<10} {backend.zone:<13} weight {backend.weight}  "
                      f"({backend.lat:7.2f}, {backend.lon:7.2f})  pid {c.call('Arith.Pid')} at {e.address}")
        with Balancer(eps, strategy="round_robin") as balancer:
            print(f"Balancer.call('Arith.Sum', 10, 20) = {balancer.call('Arith.Sum', 10, 20)}")
            try:
                balancer.call("Arith.Nope")
            except fastrpc.RemoteError as exc:
                print(f"unknown method -> {type(exc).__name__}: {exc}")
        print(f"\n{args.in_flight} calls in flight (Balancer.go), {args.seconds:g} s per strategy:")
        reference = direct(eps[0].address, args.seconds, args.in_flight)
        rows = []
        for strategy in STRATEGY_NOTES:
            rate, spread = balanced(source, strategy, args.seconds, args.in_flight)
            rows.append((strategy, rate, spread))
        print("\n" + table(rows, reference))
    finally:
        stop_servers(procs)


if __name__ == "__main__":
    main()
