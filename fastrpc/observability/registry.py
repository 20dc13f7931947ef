"""The servers, clients and balancers alive in this process (weakly held).

The metrics endpoint and the status page report every one of them, so a
service that both serves and calls shows both sides. Objects add themselves
as they are made and drop out when collected; nothing here runs per call.
"""
from __future__ import annotations

import weakref
from typing import Any, List

__all__ = ["servers", "clients", "balancers", "alive"]

servers: "weakref.WeakSet[Any]" = weakref.WeakSet()
clients: "weakref.WeakSet[Any]" = weakref.WeakSet()        # Client and AsyncClient (a balancer's own too)
balancers: "weakref.WeakSet[Any]" = weakref.WeakSet()      # Balancer and AsyncBalancer


def alive(group: "weakref.WeakSet[Any]") -> List[Any]:
    """The members of `group` that are not closed, in a stable order."""
    return sorted((obj for obj in list(group) if not getattr(obj, "closed", False)), key=id)
