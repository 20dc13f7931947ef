"""The fastrpc server process the end-to-end benchmarks call: `python servers.py ADDRESS [CODEC [FLAG...]]`.

CODEC is fastrpc (the default), gob or jsonrpc (for Go clients). Flags:
`bytes_views` hands bytes arguments over as views of the receive buffer;
`metrics_off` stops per-call counting (to measure what it costs);
`noop_interceptor` installs an interceptor that only proceeds; `otel`
installs the OpenTelemetry server interceptor (an SDK with no exporter).
Prints the bound address, serves until stdin closes.
"""
import asyncio
import sys

import numpy as np

import fastrpc


class Arith:
    """Sum(a, b) also serves Go's Arith.Sum(Args{A, B}): a Go struct's fields spread over the parameters."""

    def Sum(self, a: int, b: int) -> int:
        return a + b

    def Echo(self, data: bytes) -> bytes:
        return data

    def Fail(self, message: str) -> None:
        raise ValueError(message)

    def SumContext(self, a: int, b: int) -> int:
        """Sum, reading fastrpc.current_call() as a handler that logs its caller would."""
        call = fastrpc.current_call()
        assert call is not None and call.method == "Arith.SumContext"
        return a + b

    async def Slow(self, seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds


class Streams:
    """Server streams for bench_streams.py."""

    def Items(self, n: int):
        """n small ints (Arith.Sum-sized results)."""
        for i in range(n):
            yield i

    def Chunks(self, n: int, nbytes: int):
        """n ndarrays of nbytes each (the same array: what is measured is sending it)."""
        chunk = np.ones(nbytes // 8, dtype=np.float64)
        for _ in range(n):
            yield chunk


def noop(call, proceed):
    """An interceptor that does nothing but proceed."""
    return proceed(call)


def interceptors(flags):
    out = []
    if "noop_interceptor" in flags:
        out.append(noop)
    if "otel" in flags:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.metrics import MeterProvider
        from fastrpc.observability import otel
        out.append(otel.server_interceptor(TracerProvider(), MeterProvider()))
    return out


if __name__ == "__main__":
    flags = set(sys.argv[3:])
    if "metrics_off" in flags:
        from fastrpc.observability import set_metrics
        set_metrics(False)
    server = fastrpc.Server(bytes_views="bytes_views" in flags, interceptors=interceptors(flags))
    server.register(Arith())
    server.register(Streams())
    address = sys.argv[1] if len(sys.argv) > 1 else "tcp://127.0.0.1:0"
    codec = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] != "fastrpc" else None
    print(server.start(address, codec=codec), flush=True)
    sys.stdin.read()
    server.close()
