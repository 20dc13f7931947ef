"""One coherent set of numbers for a process, and their sum over processes.

A snapshot is plain JSON-able data (what the status page's JSON gives and
what ``fastrpc serve --workers N`` sums over its workers): the servers'
per-method counts, connections and bytes; each client's and balancer's
per-method counts; each balancer's endpoints. Prometheus text and the
status page are both made from it, so they always agree.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Dict, Iterable, List

from fastrpc.observability import registry
from fastrpc.observability.histogram import add, quantile

__all__ = ["process_snapshot", "merge", "with_percentiles"]

STARTED = time.time()
log = logging.getLogger("fastrpc.observability")


def process_snapshot() -> Dict[str, Any]:
    """Every live server, client and balancer of this process."""
    return {
        "pid": os.getpid(),
        "started": STARTED,
        "servers": _each(registry.servers, "stats"),
        "clients": _each(registry.clients, "stats"),
        "balancers": _each(registry.balancers, "snapshot"),
    }


def _each(group: Any, what: str) -> List[Dict[str, Any]]:
    out = []
    for obj in registry.alive(group):
        try:
            out.append(getattr(obj, what)())
        except Exception:               # one object half made or half closed must not hide the rest
            log.debug("no %s from %r", what, obj, exc_info=True)
    return out


def _merge_methods(into: Dict[str, Any], methods: Dict[str, Any]) -> None:
    for name, m in methods.items():
        have = into.get(name)
        if have is None:
            into[name] = {"calls": m["calls"], "errors": m["errors"], "error_types": dict(m["error_types"]),
                          "seconds": m["seconds"], "histogram": list(m["histogram"])}
            continue
        have["calls"] += m["calls"]
        have["errors"] += m["errors"]
        have["seconds"] += m["seconds"]
        have["histogram"] = add(have["histogram"], m["histogram"])
        for t, n in m["error_types"].items():
            have["error_types"][t] = have["error_types"].get(t, 0) + n


_SERVER_SUMS = ("connections", "connections_total", "in_flight", "bytes_received", "bytes_sent")
_ENDPOINT_SUMS = ("calls", "errors", "remote_errors", "in_flight", "ejections")


def merge(snapshots: Iterable[Dict[str, Any]]) -> Dict[str, Any]:
    """The sum of several processes' snapshots (the workers of one service):
    one server (counts summed), clients by target, balancers by name, each
    balancer's endpoints by address (counts summed, health from any)."""
    snaps = list(snapshots)
    server: Dict[str, Any] = {k: 0 for k in _SERVER_SUMS}
    server.update(addresses=[], methods={}, workers=len(snaps))
    clients: Dict[str, Dict[str, Any]] = {}
    balancers: Dict[str, Dict[str, Any]] = {}
    for snap in snaps:
        for s in snap.get("servers", []):
            for k in _SERVER_SUMS:
                server[k] += s.get(k, 0)
            server["addresses"] = sorted(set(server["addresses"]) | set(s.get("addresses", [])))
            _merge_methods(server["methods"], s.get("methods", {}))
        for c in snap.get("clients", []):
            have = clients.setdefault(c["target"], {"target": c["target"], "connected": False, "methods": {}})
            have["connected"] = have["connected"] or c.get("connected", False)
            _merge_methods(have["methods"], c.get("methods", {}))
        for b in snap.get("balancers", []):
            have = balancers.setdefault(b["name"], {"name": b["name"], "strategy": b.get("strategy"),
                                                    "methods": {}, "endpoints": {}})
            _merge_methods(have["methods"], b.get("methods", {}))
            for address, e in b.get("endpoints", {}).items():
                mine = have["endpoints"].get(address)
                if mine is None:
                    have["endpoints"][address] = dict(e, histogram=list(e.get("histogram", [])))
                    continue
                for k in _ENDPOINT_SUMS:
                    mine[k] = mine.get(k, 0) + e.get(k, 0)
                mine["histogram"] = add(mine.get("histogram", []), e.get("histogram", []))
                mine["healthy"] = mine.get("healthy", True) and e.get("healthy", True)
                mine["ejected"] = mine.get("ejected", False) or e.get("ejected", False)
                mine["ejected_for"] = max(mine.get("ejected_for", 0.0), e.get("ejected_for", 0.0))
                mine["last_error"] = mine.get("last_error") or e.get("last_error")
    return {"pid": None, "workers": len(snaps), "started": min((s.get("started", 0) for s in snaps), default=0),
            "servers": [server] if any(s.get("servers") for s in snaps) else [],
            "clients": list(clients.values()), "balancers": list(balancers.values())}


def with_percentiles(methods: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Per-method rows (sorted by name) with p50/p90/p99 (seconds, None: no calls)."""
    rows = []
    for name in sorted(methods):
        m = methods[name]
        h = m["histogram"]
        rows.append(dict(m, method=name, p50=quantile(h, 0.5), p90=quantile(h, 0.9), p99=quantile(h, 0.99)))
    return rows
