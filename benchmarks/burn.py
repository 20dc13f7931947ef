"""A CPU-bound service for the multi-worker benchmark (`fastrpc serve burn:Burner`)."""
import os
import time


class Burner:
    """Handlers that spend CPU, as a real service's work would."""

    def Burn(self, micros: int = 200) -> int:
        """Spin for `micros` microseconds of CPU; return the spins."""
        end = time.perf_counter() + micros / 1e6
        n = 0
        while time.perf_counter() < end:
            n += 1
        return n

    def Pid(self) -> int:
        return os.getpid()
