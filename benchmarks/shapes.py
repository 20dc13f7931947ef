"""The load shapes the end-to-end benchmarks measure, shared by every suite.

Services see a steady state, not bursts: a sliding window where each
completion starts the next call (threads and futures), and N coroutines
each awaiting one call at a time (asyncio). The burst shape (issue a batch,
then wait for all of it) is measured too, and labelled as such.
"""
import asyncio
import collections


def sliding_window(go, method, n, window=128):
    """Keep `window` calls of `go(method, i, 1)` in flight: each time the
    oldest completes, the next starts; `n` calls in all. Returns the sum of
    the results (checked by the caller)."""
    in_flight = collections.deque()
    total = 0
    for i in range(n):
        if len(in_flight) >= window:
            total += in_flight.popleft().result()
        in_flight.append(go(method, i, 1))
    while in_flight:
        total += in_flight.popleft().result()
    return total


async def awaiting(call, method, n, concurrency=128):
    """`concurrency` coroutines, each awaiting `call(method, i, 1)` one at a
    time, `n` calls in all. Returns the sum of the results."""
    per = max(1, n // concurrency)

    async def worker():
        total = 0
        for i in range(per):
            total += await call(method, i, 1)
        return total

    return sum(await asyncio.gather(*(worker() for _ in range(concurrency))))


def expected_window_sum(n):
    """What sliding_window returns for Arith.Sum(i, 1), i < n."""
    return n * (n - 1) // 2 + n


def expected_awaiting_sum(n, concurrency=128):
    """What awaiting returns for Arith.Sum(i, 1)."""
    per = max(1, n // concurrency)
    return concurrency * (per * (per - 1) // 2 + per)


def calls_awaited(n, concurrency=128):
    """How many calls awaiting(n) makes."""
    return max(1, n // concurrency) * concurrency
