"""Objects the command-line tests serve with `fastrpc serve cli_targets:...`."""
import asyncio
import os


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


arith = Arith()
