"""Objects the command-line tests serve with `fastrpc serve cli_targets:...`."""
import asyncio
import os
from typing import Iterator


class Arith:
    """Arithmetic for the command-line tests."""

    def Sum(self, a: int, b: int) -> int:
        """The sum of a and b."""
        return a + b

    def Echo(self, value, *, tag: str = ""):
        return [value, tag] if tag else value

    async def Slow(self, seconds: float, value):
        await asyncio.sleep(seconds)
        return value

    def Pid(self) -> int:
        return os.getpid()

    def Fail(self, message: str):
        raise ValueError(message)

    def Count(self, n: int) -> Iterator[int]:
        """0 to n - 1, streamed."""
        yield from range(n)

    def Total(self, items: Iterator[int]) -> int:
        """The sum of the client's items."""
        return sum(items)

    def Double(self, items: Iterator[int]) -> Iterator[int]:
        for x in items:
            yield 2 * x


arith = Arith()
