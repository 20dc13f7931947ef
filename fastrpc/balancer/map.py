"""One balanced map(): items picked one by one, sent as one batch per endpoint, retried.

Owns the bookkeeping of Balancer.map and AsyncBalancer.map: a pick per
item (its key, for consistent_hash), the items sent as one pipelined batch
per endpoint (a share) at a time, at most a window of them in flight and
more sent as shares complete, each batch encoded by the same encoder as
single calls (carrying the call's deadline and metadata), and each item's
outcome: a result, the handler's error, or a transport failure retried as
call() would retry it. The drivers only connect and wait.
"""
from __future__ import annotations

import time
from typing import Any, Dict, List, Optional, Tuple

from fastrpc._core.balance import Member, gather, is_answer, scatter
from fastrpc._core.calltable import Batch
from fastrpc.balancer.plan import final_error
from fastrpc.client.batching import give_up
from fastrpc.errors import ConnectionClosedError, NoEndpointError, TimeoutError

__all__ = ["MapJob", "MapWindow", "Share"]


class Share:
    """The items of one map window sent to one endpoint, as one batch."""

    __slots__ = ("member", "conn", "batch", "positions", "started")

    def __init__(self, member: Member, conn: Any, batch: Batch, positions: List[int], started: float) -> None:
        self.member = member
        self.conn = conn
        self.batch = batch
        self.positions = positions
        self.started = started


class MapWindow:
    """The shares of a map in flight: at most `size` items, as Client.map's
    window. Items go out again as shares complete, once a quarter of the
    window is free (so shares do not shrink to a few items each), to the
    endpoints picked then: a fast endpoint gets more of a long map instead
    of waiting for the slowest one at every window."""

    __slots__ = ("size", "step", "live", "in_flight")

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self.step = max(1, self.size // 4)
        self.live: List[Share] = []
        self.in_flight = 0

    @property
    def room(self) -> int:
        """Items that may go out now."""
        return self.size - self.in_flight

    def wants(self, job: "MapJob") -> bool:
        """Send more of `job` now: items wait and enough room is free (or nothing is in flight)."""
        return job.pending and (self.room >= self.step or not self.live)

    def add(self, share: Share) -> None:
        """`share` went out."""
        self.live.append(share)
        self.in_flight += len(share.positions)

    def remove(self, share: Share) -> None:
        """`share` is settled."""
        self.live.remove(share)
        self.in_flight -= len(share.positions)

    def done(self) -> List[Share]:
        """The shares in flight whose every item has its outcome."""
        return [share for share in self.live if share.batch.done]

    def settle(self, job: "MapJob") -> None:
        """After a wait: settle the shares that are done. None done means the
        wait ended at the map's deadline: the rest are given up (withdrawn,
        their items failed with TimeoutError) and settled too."""
        done = self.done()
        if not done:
            for share in self.live:
                give_up(share.conn, share.batch, job.method)
            done = self.done()
        for share in done:
            share.batch.on_progress = None
            self.remove(share)
            job.settle(share)


class MapJob:
    """The state of one balanced map() (see the module docstring)."""

    def __init__(self, core: Any, method: str, items: List[Any], key_hashes: Optional[List[int]],
                 deadline: float, deadline_ms: Optional[int], meta: Optional[bytes], idempotent: bool) -> None:
        self.core = core
        self.pool = core.pool
        self.planner = core.planner
        self.method = method
        self.items = items
        self.key_hashes = key_hashes
        self.deadline = deadline
        self.deadline_ms = deadline_ms
        self.meta = meta
        self.idempotent = idempotent
        self.results: List[Any] = [None] * len(items)
        self.failed: Dict[int, BaseException] = {}
        self.tried: Dict[int, List[Tuple[Member, BaseException]]] = {}
        self.retries: List[int] = []            # positions to send again, before fresh ones
        self.fresh = 0                          # positions below this were taken once
        self.started = time.monotonic()
        self.stats = core.pool.stats.method(method)     # the balancer's counts of `method`

    @property
    def pending(self) -> bool:
        """Items wait to be sent (fresh ones, or failed ones to retry)."""
        return bool(self.retries) or self.fresh < len(self.items)

    def take(self, n: int) -> List[int]:
        """Up to `n` positions of items to send next; retried items go first."""
        chunk = self.retries[:n]
        del self.retries[:n]
        k = min(n - len(chunk), len(self.items) - self.fresh)
        if k > 0:
            chunk += range(self.fresh, self.fresh + k)
            self.fresh += k
        return chunk

    def pick(self, chunk: List[int]) -> List[Tuple[Member, List[int]]]:
        """An endpoint per item (a retried item avoids the endpoints it tried), grouped by endpoint."""
        pool = self.pool
        if not self.tried:                      # no retries: the compiled loop
            try:
                assigned: List[Tuple[Member, List[int]]] = pool.assign(chunk, self.key_hashes)
                return assigned
            except NoEndpointError:
                pass                            # item by item below, each with its own error
        groups: Dict[int, Tuple[Member, List[int]]] = {}
        key_hashes = self.key_hashes
        for p in chunk:
            key_hash = key_hashes[p] if key_hashes is not None else pool.key_hash_for(None)
            try:
                member = pool.pick(key_hash)
            except NoEndpointError as exc:
                self.failed[p] = exc if p not in self.tried else final_error(self.method, self.tried[p])
                continue
            tried = self.tried.get(p)
            if tried:
                used = {id(m) for m, _ in tried}
                if id(member) in used:
                    pool.release_withdrawn(member)
                    try:
                        member = self.core.untried(key_hash, used)
                    except NoEndpointError:
                        self.failed[p] = final_error(self.method, tried)
                        continue
                    pool.begin(member)
            group = groups.get(id(member))
            if group is None:
                groups[id(member)] = group = (member, [])
            group[1].append(p)
        return list(groups.values())

    def send(self, member: Member, conn: Any, positions: List[int]) -> Optional[Share]:
        """Encode the items at `positions` as one batch on `conn` and write it."""
        batch = Batch(len(positions), True)
        batch.wake_below = 1                    # a share is waited for whole
        started = time.monotonic()
        try:
            conn.submit_batch(self.method, batch, iter(gather(self.items, positions)),
                              len(positions), self.deadline_ms, self.meta)
        except ConnectionClosedError as exc:
            self.unsent(member, positions[batch.issued:], exc)
            positions = positions[:batch.issued]
        except Exception as exc:
            # An item that cannot be encoded fails alone; those after it were
            # not sent and go out again.
            bad = batch.issued
            self.failed[positions[bad]] = exc
            for _ in positions[bad:]:
                self.pool.release_withdrawn(member)
            self.retries[:0] = positions[bad + 1:]
            positions = positions[:bad]
        conn.flush()
        # Entries of items not sent (after a failure above) are closed in the
        # batch, so it is done when the sent ones are answered.
        batch.fail_unsent(ConnectionClosedError("not sent"))
        if not positions:
            return None
        return Share(member, conn, batch, positions, started)

    def abandon(self, shares: List[Share]) -> None:
        """The map is given up (cancelled, interrupted): withdraw the shares in
        flight (the servers cancel them) and release their endpoints' counts."""
        for share in shares:
            share.batch.on_progress = None
            give_up(share.conn, share.batch, self.method)
            for _ in share.positions:
                self.pool.release_withdrawn(share.member)

    def still_connecting(self, member: Member, positions: List[int]) -> None:
        """The deadline passed while connecting to `member`: its items time out
        there. Not a failure of the endpoint (the dial goes on, and its
        connection serves later calls), as for a single call."""
        error = TimeoutError(f"{self.method} did not complete in time: still connecting to {member.endpoint.address}")
        for p in positions:
            tried = self.tried.setdefault(p, [])
            tried.append((member, error))
            self.failed[p] = final_error(self.method, tried)
            self.pool.release_withdrawn(member)

    def unsent(self, member: Member, positions: List[int], exc: BaseException) -> None:
        """Items picked for `member` could not be sent (no connection): retry them elsewhere."""
        if positions:
            self._failed(member, positions, [exc] * len(positions), 0.0)

    def settle(self, share: Share) -> None:
        """Sort one batch's outcomes (the batch is done) into results, errors and retries."""
        batch = share.batch
        rtt = time.monotonic() - share.started
        load = share.conn.table.last_load
        if batch.first_error is None:           # every item answered: the compiled path
            scatter(self.results, share.positions, batch.results)
            if self.stats is not None:
                self.stats.record_many(len(share.positions), rtt)
            self.pool.release_answered_many(share.member, len(share.positions), 0, rtt,
                                            -1 if load is None else load)
            return
        self._failed(share.member, share.positions, batch.results, share.started, rtt=rtt, load=load)

    def _failed(self, member: Member, positions: List[int], values: List[Any], sent: float,
                rtt: float = -1.0, load: Optional[int] = None) -> None:
        pool = self.pool
        answered = remote = 0
        failures: List[Tuple[int, BaseException]] = []
        for p, value in zip(positions, values):
            if not isinstance(value, BaseException):
                self.results[p] = value
                if self.stats is not None:
                    self.stats.record(rtt, None)
                answered += 1
            elif is_answer(value):
                answered += 1
                remote += 1
                self.failed[p] = final_error(self.method, self.tried.get(p, []) + [(member, value)])
            else:
                failures.append((p, value))
        if answered:
            pool.release_answered_many(member, answered, remote, rtt, -1 if load is None else load)
        if not failures:
            return
        self.core.count_failures(member, sent, failures[0][1], len(failures))
        # One endpoint's failed batch takes one retry from the budget, not one per item.
        granted: Optional[bool] = None
        retry = []
        for p, exc in failures:
            tried = self.tried.setdefault(p, [])
            tried.append((member, exc))
            if self.planner.may_retry(exc, self.idempotent, len(tried), self.deadline, budget=False):
                if granted is None:
                    self.planner.credit_budget()
                    granted = self.planner.budget.withdraw()
                if granted:
                    retry.append(p)
                    continue
            timed_out = self.planner.timed_out(exc, self.idempotent, len(tried), self.deadline)
            self.failed[p] = final_error(self.method, tried, timed_out)
        self.retries[:0] = retry

    def timed_out(self) -> bool:
        """The map's deadline has passed."""
        return bool(self.deadline) and time.monotonic() >= self.deadline

    def outcome(self, return_exceptions: bool) -> List[Any]:
        """The results in order; raise the first error unless `return_exceptions`."""
        elapsed = time.monotonic() - self.started
        if self.stats is not None:
            for exc in self.failed.values():    # each item that failed, counted once, at the end
                self.stats.record(elapsed, exc)
        if self.failed:
            if not return_exceptions:
                raise self.failed[min(self.failed)]
            for position, exc in self.failed.items():
                self.results[position] = exc
        return self.results
