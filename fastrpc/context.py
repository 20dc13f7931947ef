"""The call a handler is serving, and how its deadline reaches further calls.

Inside a handler of any kind (plain, ``async def`` or ``@blocking``),
``fastrpc.current_call()`` describes the call being served: its method, the
metadata the caller sent, its deadline and the peer's address. Calls the handler makes with any fastrpc client or
balancer are bounded by that deadline: their timeout is at most the time
the original caller has left, and once it has passed they fail at once
with DeadlineExceeded instead of doing work nobody waits for.

Plain (inline) handlers run on the server's event loop: theirs is built
only when asked (the compiled loop notes which call runs, nothing more), so
it costs nothing to handlers that never ask.
"""
from __future__ import annotations

import contextvars
import time
from dataclasses import dataclass
from typing import Any, Dict, Optional

from fastrpc._core.servercore import inline_call
from fastrpc.errors import DeadlineExceeded

__all__ = ["CURRENT", "CallContext", "current_call", "bound_timeout", "serving"]


@dataclass(frozen=True)
class CallContext:
    """The call a handler serves: method, caller's metadata, deadline and peer."""

    method: str
    deadline: Optional[float]               # time.monotonic() at which the caller stops waiting
    metadata: Optional[Dict[str, Any]]
    peer: Optional[str] = None              # the caller's address, where known

    def remaining(self) -> Optional[float]:
        """Seconds left before the caller's deadline (None: it set none)."""
        return None if self.deadline is None else self.deadline - time.monotonic()


#: The call the running handler serves (None: none, or the caller sent no deadline or metadata).
CURRENT: contextvars.ContextVar[Optional[CallContext]] = contextvars.ContextVar("fastrpc_call", default=None)


def current_call() -> Optional[CallContext]:
    """The call the running handler serves, or None outside a handler."""
    call = CURRENT.get()
    if call is None:
        inline = inline_call()
        if inline is not None:
            method, deadline, metadata, peer = inline
            return CallContext(method, deadline, metadata if isinstance(metadata, dict) else None,
                               None if peer is None else str(peer))
    return call


_INF = float("inf")


def bound_timeout(timeout: Optional[float], default: Optional[float] = None) -> Optional[float]:
    """A call's timeout: `timeout`, else the caller's `default`, capped by the
    deadline of the call being served, if any.

    Raises DeadlineExceeded when that deadline has already passed.
    """
    if timeout is None:
        timeout = default
    if timeout is not None:
        if timeout != timeout:
            raise ValueError("timeout is NaN")
        if timeout == _INF:
            timeout = None                  # inf: no timeout at all
    call = CURRENT.get()
    if call is None or call.deadline is None:
        return timeout
    remaining = call.deadline - time.monotonic()
    if remaining <= 0:
        raise DeadlineExceeded(message=f"the deadline of {call.method}, which this call serves, has passed")
    return remaining if timeout is None or remaining < timeout else timeout


def serving(method: str, deadline: Optional[float], metadata: Any, peer: Any = None) -> contextvars.Context:
    """A copy of the current context in which current_call() is this call."""
    ctx = contextvars.copy_context()
    ctx.run(CURRENT.set, CallContext(method, deadline, metadata if isinstance(metadata, dict) else None,
                                     None if peer is None else str(peer)))
    return ctx
