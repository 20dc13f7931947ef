"""The fastrpc server process the end-to-end benchmarks call: `python servers.py ADDRESS [CODEC [bytes_views]]`.

CODEC is fastrpc (the default), gob or jsonrpc (for Go clients); a third
argument `bytes_views` hands bytes arguments over as views of the receive
buffer. Prints the bound address, serves until stdin closes.
"""
import asyncio
import sys

import fastrpc


class Arith:
    """Sum(a, b) also serves Go's Arith.Sum(Args{A, B}): a Go struct's fields spread over the parameters."""

    def Sum(self, a: int, b: int) -> int:
        return a + b

    def Echo(self, data: bytes) -> bytes:
        return data

    def Fail(self, message: str) -> None:
        raise ValueError(message)

    async def Slow(self, seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds


if __name__ == "__main__":
    server = fastrpc.Server(bytes_views=sys.argv[3:4] == ["bytes_views"])
    server.register(Arith())
    address = sys.argv[1] if len(sys.argv) > 1 else "tcp://127.0.0.1:0"
    codec = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] != "fastrpc" else None
    print(server.start(address, codec=codec), flush=True)
    sys.stdin.read()
    server.close()
