"""The quick-start demo: start server processes, make calls, print results and throughput.

    python -m fastrpc.demo [--servers N] [--seconds S]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from typing import List

import fastrpc


class Arith:
    """The demo service (also what `--serve` exposes)."""

    def Sum(self, a, b):
        return a + b

    def Mul(self, a, b):
        return a * b

    def Pid(self):
        return os.getpid()


def serve(address: str) -> None:
    server = fastrpc.Server()
    server.register(Arith())
    print(server.start(address), flush=True)
    try:
        sys.stdin.read()          # serve until the parent closes our stdin
    finally:
        server.close()


def start_servers(count: int) -> List[tuple]:
    procs = []
    for _ in range(count):
        # Start from the directory fastrpc was imported from, so the server
        # processes run exactly the package this process runs.
        proc = subprocess.Popen([sys.executable, "-m", "fastrpc.demo", "--serve", "tcp://127.0.0.1:0"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                cwd=os.path.dirname(os.path.dirname(os.path.abspath(fastrpc.__file__))))
        procs.append((proc, proc.stdout.readline().strip()))
    return procs


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:>12,.0f} calls/s"


def measure(label: str, fn, calls_per_round: int, seconds: float) -> None:
    rounds, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        rounds += 1
    print(f"  {label:<42}{rate(rounds * calls_per_round, time.perf_counter() - start)}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=2, help="server processes to start")
    parser.add_argument("--seconds", type=float, default=1.0, help="time per throughput figure")
    parser.add_argument("--serve", metavar="ADDRESS", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve(args.serve)

    print(f"fastrpc {fastrpc.__version__} (backend: {fastrpc.backend})")
    procs = start_servers(args.servers)
    try:
        for proc, address in procs:
            with fastrpc.Client(address) as c:
                print(f"server pid {c.call('Arith.Pid')} at {address}: "
                      f"Arith.Sum(10, 20) = {c.call('Arith.Sum', 10, 20)}")
        address = procs[0][1]
        with fastrpc.Client(address) as c:
            try:
                c.call("Arith.Nope", 1, 0)
            except fastrpc.RemoteError as exc:
                print(f"unknown method -> {type(exc).__name__}: {exc.message}")
            print(f"\nthroughput against {address} (client and server in separate processes):")
            measure("Client.call, sequential", lambda: c.call("Arith.Sum", 1, 2), 1, args.seconds)

            def go128():
                for f in [c.go("Arith.Sum", i, 1) for i in range(128)]:
                    f.result()
            measure("Client.go, 128 in flight", go128, 128, args.seconds)
            batch = [(i, 1) for i in range(128)]
            measure("Client.map, 128 in flight", lambda: c.map("Arith.Sum", batch), 128, args.seconds)

        async def async_part():
            async with fastrpc.AsyncClient(address) as ac:
                for label, make in (
                        ("AsyncClient.go, 128 in flight",
                         lambda: asyncio.gather(*[ac.go("Arith.Sum", i, 1) for i in range(128)])),
                        ("AsyncClient.map, 128 in flight", lambda: ac.map("Arith.Sum", batch))):
                    rounds, start = 0, time.perf_counter()
                    while time.perf_counter() - start < args.seconds:
                        await make()
                        rounds += 1
                    print(f"  {label:<42}{rate(rounds * 128, time.perf_counter() - start)}")

        asyncio.run(async_part())
    finally:
        for proc, _ in procs:
            proc.stdin.close()
            proc.wait(10)


if __name__ == "__main__":
    main()
