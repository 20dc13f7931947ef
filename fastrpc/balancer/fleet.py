"""Fleet-wide calls: one call on every endpoint of a balancer (broadcast, fork).

Owns what the sync and async balancers share: which endpoints a fleet call
goes to, the call's deadline, and the outcome (every result, or a
FleetCallError naming each endpoint that failed). The I/O is the drivers'.
"""
from __future__ import annotations

import time
from typing import Any, Dict, List, Optional

from fastrpc.errors import ConnectionClosedError, FleetCallError, NoEndpointError, TimeoutError

__all__ = ["members_for", "deadline_for", "remaining", "timed_out", "broadcast_outcome", "fork_failure"]


def members_for(core: Any) -> List[Any]:
    """Every endpoint the balancer knows now, ejected or not (a fleet call asks
    each of them: an unhealthy one answers with its error). NoEndpointError
    when there is none."""
    if core.closed:
        raise ConnectionClosedError("the balancer is closed")
    members = [m for m in list(core._members) if not m.removed]
    if not members:
        raise NoEndpointError(core.no_endpoint_reason())
    return members


def deadline_for(core: Any, timeout: Optional[float]) -> Optional[float]:
    """The monotonic deadline of a fleet call: `timeout`, else the balancer's
    default call timeout; None when neither is set (no deadline)."""
    if timeout is None:
        timeout = core.timeout
    if timeout is None or timeout == float("inf"):
        return None
    return time.monotonic() + max(0.0, float(timeout))


def remaining(deadline: Optional[float]) -> Optional[float]:
    """Seconds left until `deadline` (None: no deadline)."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def timed_out(method: str, address: str) -> TimeoutError:
    """The error of an endpoint that did not answer before the fleet call's deadline."""
    return TimeoutError(f"{method} on {address} did not complete in time")


def _summary(errors: Dict[str, BaseException]) -> str:
    return "; ".join(f"{address}: {type(exc).__name__}: {exc}" for address, exc in errors.items())


def broadcast_outcome(method: str, results: Dict[str, Any], return_exceptions: bool) -> Dict[str, Any]:
    """What broadcast returns: every endpoint's result by address; raises
    FleetCallError if any failed, unless `return_exceptions`."""
    errors = {address: r for address, r in results.items() if isinstance(r, BaseException)}
    if errors and not return_exceptions:
        raise FleetCallError(f"{method} failed on {len(errors)} of {len(results)} endpoints: {_summary(errors)}",
                             results)
    return results


def fork_failure(method: str, results: Dict[str, Any]) -> FleetCallError:
    """The error fork raises when no endpoint succeeded."""
    return FleetCallError(f"{method} failed on every endpoint ({len(results)}): {_summary(results)}", results)
