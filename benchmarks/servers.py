"""The fastrpc server process the end-to-end benchmarks call: `python servers.py ADDRESS [CODEC]`.

CODEC is fastrpc (the default), gob or jsonrpc (for Go clients). Prints the
bound address, serves until stdin closes.
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
    server = fastrpc.Server()
    server.register(Arith())
    address = sys.argv[1] if len(sys.argv) > 1 else "tcp://127.0.0.1:0"
    print(server.start(address, codec=sys.argv[2] if len(sys.argv) > 2 else None), flush=True)
    sys.stdin.read()
    server.close()
