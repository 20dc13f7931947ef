"""The attempt planner: what a balanced call does when an attempt fails or is slow.

Owns every decision about a call's attempts, for Balancer and AsyncBalancer
alike: whether a failure is retried and where (failover to an untried
endpoint, failtry on the same one, failfast not at all), when a hedged
attempt starts ("backup"), when the call gives up and with which error, and
the retry budget that bounds retries fleet-wide. It does no I/O: sending an
attempt (and dialing first, when its endpoint has no connection) is the
driver's business, through ``driver.resend(attempt)``.

The compiled call path (fastrpc._core.balance) calls the hooks below only
off the fast path: a failure, a RemoteError, a hedge's outcome, a cancel.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Generator, List, Optional, Tuple

from fastrpc._core.balance import Attempt, Member
from fastrpc.errors import (ConnectError, ConnectionClosedError, ConnectionError, NoEndpointError,
                            RemoteError, TimeoutError)

__all__ = ["FAILURE_MODES", "Planner", "RetryBudget", "final_error"]

FAILURE_MODES = ("failover", "failfast", "failtry", "backup")


class RetryBudget:
    """Bounds retries: each call earns `ratio` of a retry, and `min_per_second`
    retries are always allowed (Finagle's RetryBudget), so a failing fleet
    is not hit with a multiple of its normal traffic. At most `cap` unused
    retries are saved up.

    A balancer credits its calls in batches (as it withdraws), so the call
    path pays nothing for the budget.
    """

    def __init__(self, ratio: float = 0.2, min_per_second: float = 10.0, cap: float = 100.0) -> None:
        self.ratio = ratio
        self.min_per_second = min_per_second
        self.cap = cap
        self._earned = 0.0
        self._reserve = min_per_second
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def deposit(self, calls: int = 1) -> None:
        """`calls` calls were made."""
        with self._lock:
            earned = self._earned + self.ratio * calls
            self._earned = earned if earned < self.cap else self.cap

    def withdraw(self) -> bool:
        """Take one retry if the budget allows it."""
        with self._lock:
            now = time.monotonic()
            self._reserve = min(self.min_per_second, self._reserve + (now - self._stamp) * self.min_per_second)
            self._stamp = now
            if self._reserve >= 1.0:
                self._reserve -= 1.0
                return True
            if self._earned >= 1.0:
                self._earned -= 1.0
                return True
            return False


def final_error(method: str, tried: List[Tuple[Member, BaseException]], timed_out: bool = False) -> BaseException:
    """The last attempt's error, re-worded to name every endpoint tried
    (``.endpoints``); with `timed_out`, a TimeoutError: the call's deadline
    passed before it could be retried."""
    last = tried[-1][1]
    addresses = [m.endpoint.address for m, _ in tried]
    if isinstance(last, RemoteError):
        last.endpoints = addresses
        return last
    parts = "; ".join(f"{m.endpoint.address}: {type(e).__name__}: {e}" for m, e in tried)
    what = f"{len(tried)} endpoints" if len(tried) > 1 else "1 endpoint"
    try:
        if timed_out:
            error: BaseException = TimeoutError(f"{method} did not complete in time (tried {what}: {parts})")
        else:
            error = type(last)(f"{method} failed on {what}: {parts}")
    except TypeError:
        error = ConnectionError(f"{method} failed on {what}: {parts}")
    setattr(error, "endpoints", addresses)       # any exception type: not only fastrpc's
    error.__cause__ = last
    return error


def not_sent(exc: BaseException) -> bool:
    """The server never saw the call: it may go anywhere else, idempotent or not."""
    return isinstance(exc, (ConnectError, ConnectionClosedError))


class Planner:
    """A balancer's attempt policy (see the module docstring).

    `core` is the balancer (membership, health, ejection, counters);
    `driver` sends attempts: ``resend(attempt)`` picks-or-uses
    ``attempt.member``, dials if needed and sends, reporting failures back
    through attempt_failed().
    """

    def __init__(self, core: Any, failure: str, max_attempts: int, budget: RetryBudget,
                 backup_after: float) -> None:
        if failure not in FAILURE_MODES:
            raise ValueError(f"failure must be one of {', '.join(FAILURE_MODES)}, not {failure!r}")
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.core = core
        self.driver: Any = None
        self.failure = failure
        self.max_attempts = max_attempts
        self.budget = budget
        self.backup_after = backup_after

    # decisions -------------------------------------------------------------------
    def credit_budget(self) -> None:
        """Give the retry budget the calls started since it was last credited."""
        pool = self.core.pool
        started, pool.started = pool.started, 0
        if started:
            self.budget.deposit(started)

    def may_retry(self, exc: BaseException, idempotent: bool, attempts: int, deadline: float,
                  budget: bool = True) -> bool:
        """Whether a failed attempt is retried; with `budget`, take the retry from the budget."""
        if self.failure == "failfast" or attempts >= self.max_attempts:
            return False
        # Not sent: the server never saw the call. Anything else may have run.
        if not (not_sent(exc) or idempotent):
            return False
        if deadline and time.monotonic() >= deadline:
            return False
        if not budget:
            return True
        self.credit_budget()
        return self.budget.withdraw()

    def hedges(self, idempotent: bool) -> bool:
        """Whether a call gets a hedged attempt after backup_after."""
        return self.failure == "backup" and idempotent and self.max_attempts > 1

    # hooks of the compiled call path -------------------------------------------------
    def attempt_failed(self, attempt: Attempt, exc: BaseException) -> None:
        """An attempt failed (transport error, timeout, not sent): account, then
        retry, wait for a hedge still running, or give up."""
        attempt.keep_in_view()                  # it keeps `exc`, whose traceback may lead back to it
        _ended(attempt, exc)
        self.core.count_failure(attempt.member, attempt.started, exc)
        tried = attempt.tried
        if tried is None:
            tried = attempt.tried = []
            if attempt.peers is not None:
                for peer in attempt.peers:
                    peer.tried = tried
        tried.append((attempt.member, exc))
        if attempt.sink.done():
            return                              # cancelled or timed out meanwhile
        if attempt.peers is not None and any(p.running for p in attempt.peers):
            return                              # the other attempt may still answer
        if self.may_retry(exc, attempt.idempotent, len(tried), attempt.deadline):
            retry = attempt.follow_up()
            retry.peers = None
            pinned = attempt.member if self.failure == "failtry" and not attempt.member.removed else None
            try:
                self.pick_retry(retry, pinned)
            except NoEndpointError:
                attempt.fail(final_error(attempt.method, tried))
                return
            retry.head.current = retry
            self.driver.resend(retry)
        elif self.timed_out(exc, attempt.idempotent, len(tried), attempt.deadline):
            # It would have been retried but its time is up: the call timed
            # out, as when the engine's deadline timer gets there first.
            attempt.fail(final_error(attempt.method, tried, timed_out=True))
        else:
            attempt.fail(final_error(attempt.method, tried))

    def timed_out(self, exc: BaseException, idempotent: bool, attempts: int, deadline: float) -> bool:
        """Whether a failed attempt, not retried, was refused its retry only by the deadline."""
        return bool(deadline) and time.monotonic() >= deadline and self.may_retry(exc, idempotent, attempts, 0.0, budget=False)

    def pick_retry(self, attempt: Attempt, pinned: Optional[Member] = None) -> None:
        """Choose attempt's endpoint: `pinned`, else one not tried yet if one is eligible."""
        core = self.core
        pool = core.pool
        used = {id(m) for m, _ in attempt.tried or ()}
        if attempt.peers is not None:
            used.update(id(p.member) for p in attempt.peers if p.member is not None)
        if pinned is not None:
            pool.begin(pinned)
            attempt.member = pinned
            return
        member = pool.pick(attempt.key_hash)
        if id(member) in used:
            pool.release_withdrawn(member)
            member = core.untried(attempt.key_hash, used)
            pool.begin(member)
        attempt.member = member

    def remote_error(self, attempt: Attempt, exc: RemoteError) -> BaseException:
        """The handler answered with an error: the call's error, naming the endpoints tried."""
        self.core.count_remote(attempt.member, exc)
        return final_error(attempt.method, (attempt.tried or []) + [(attempt.member, exc)])

    def hedge(self, attempt: Attempt) -> None:
        """backup_after passed: start a hedged attempt on another endpoint if the
        call is still waiting on its only attempt and the budget allows."""
        if attempt.sink.done() or not attempt.running or attempt.peers is not None:
            return
        if attempt.number + len(attempt.tried or ()) >= self.max_attempts:
            return
        self.credit_budget()
        if not self.budget.withdraw():
            return
        hedge = attempt.follow_up()
        attempt.peers = hedge.peers = [attempt, hedge]
        hedge.head.current = attempt
        try:
            self.pick_retry(hedge)
        except NoEndpointError:
            attempt.peers = None
            return
        self.driver.resend(hedge)

    def hedge_won(self, winner: Attempt) -> None:
        """One attempt of a hedged call answered: withdraw the others."""
        for peer in winner.peers or ():
            if peer is not winner and peer.running:
                self.withdraw_attempt(peer)

    def withdraw(self, attempt: Attempt) -> None:
        """The caller cancelled the call (`attempt` is its first attempt):
        withdraw its attempts in flight, which is no failure of their endpoints."""
        current = attempt.current if attempt.current is not None else attempt
        for peer in current.peers or (current,):
            self.withdraw_attempt(peer)
        attempt.end_call()

    def expire(self, attempt: Attempt) -> None:
        """The call's timeout passed (`attempt` is its first attempt): withdraw
        its attempts in flight, each a failure of its endpoint, and fail the
        call with TimeoutError naming every endpoint tried."""
        current = attempt.current if attempt.current is not None else attempt
        tried = attempt.tried if attempt.tried is not None else []
        for peer in current.peers or (current,):
            if peer.running:
                peer.running = False
                exc = TimeoutError(f"{attempt.method} did not complete in time")
                _ended(peer, exc)
                self.core.count_failure(peer.member, peer.started, exc)
                _withdraw_seq(peer)
                tried.append((peer.member, exc))
        if not tried and current.member is not None and not current.running:
            # Still connecting to the endpoint it picked: that is the
            # endpoint the call timed out on. The dial, when it ends, finds
            # the call settled, sends nothing and releases the pick
            # (still_wanted()).
            tried.append((current.member, TimeoutError(f"{attempt.method} did not complete in time")))
        if tried:
            attempt.fail(final_error(attempt.method, tried))
        else:
            attempt.fail(TimeoutError(f"{attempt.method} did not complete in time"))

    def withdraw_attempt(self, attempt: Attempt) -> None:
        """Take back one attempt in flight (not a failure of its endpoint)."""
        if attempt.running:
            attempt.running = False
            _ended(attempt, WITHDRAWN)
            _withdraw_seq(attempt)
            self.core.pool.release_withdrawn(attempt.member)

    def still_wanted(self, attempt: Attempt) -> bool:
        """A dial for `attempt` has ended: whether to send it (or account its
        failure). Its call may have ended meanwhile (a timeout, a hedge that
        won, the caller withdrew): then nothing is sent and the endpoint's
        pick is released."""
        if attempt.settled:
            self.core.pool.release_withdrawn(attempt.member)
            return False
        return True

    def give_up_unsent(self, attempt: Attempt, exc: BaseException) -> None:
        """The driver could not send `attempt` (no connection, encoding failed)."""
        if not_sent(exc) or isinstance(exc, TimeoutError):
            self.attempt_failed(attempt, exc)
        else:                                   # e.g. an argument that cannot be encoded
            _ended(attempt, exc)
            self.core.pool.release_withdrawn(attempt.member)
            attempt.fail(exc)

    def notify_plan(self, key_hash: int) -> Generator[Member, Optional[BaseException], None]:
        """Where a one-way call goes, as a generator: it yields the endpoint to
        send to; the driver sends back None (sent: the generator ends) or the
        error of that try (it yields the next endpoint, or raises the final
        error). Only a notification that was not sent is sent elsewhere."""
        core, pool = self.core, self.core.pool
        member = pool.pick(key_hash)
        tried: set[Any] = set()
        while True:
            exc = yield member
            if exc is None:
                pool.release_withdrawn(member)
                return
            core.count_failure(member, 0.0, exc)
            tried.add(id(member))
            if not self.may_retry(exc, False, len(tried), 0.0):
                raise exc
            member = core.untried(key_hash, tried)
            pool.begin(member)

    def going_away(self, member: Member) -> None:
        """The endpoint sent GOAWAY."""
        self.core.going_away(member)

    def member_idle(self, member: Member) -> None:
        """A removed endpoint's last call ended: close its connection."""
        self.core.close_member(member)

    def no_endpoint_reason(self) -> str:
        """Why a balancer with no endpoints has none (the text of its NoEndpointError)."""
        return str(self.core.no_endpoint_reason())

    def maintain(self) -> None:
        """An ejection expiry or slow-start step is due."""
        self.core.maintain()


def _withdraw_seq(attempt: Attempt) -> None:
    conn = attempt.conn
    if conn is not None:
        try:
            conn.withdraw(attempt.seq)
        except Exception:                       # the connection is gone: nothing to withdraw
            pass


#: What an attempt observer is told of an attempt taken back (a hedge that
#: lost, a call the caller withdrew): no failure of its endpoint.
WITHDRAWN = "withdrawn"


def _ended(attempt: Attempt, error: Any) -> None:
    """Tell the call's attempt observer (if any) that `attempt` ended."""
    observer = attempt.observer
    if observer is not None:
        observer.ended(attempt, error)
