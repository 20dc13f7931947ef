"""The status page: what a process serves and calls, at a glance.

``GET /status`` on a server's HTTP listener: services and methods with their
call and error counts and latency percentiles (every caller counted: fastrpc,
Go and JSON-RPC alike), connections and bytes; for the clients and balancers
of the same process, their methods, and each balancer's endpoints with
health, load, in-flight calls, ejections and last error. ``?format=json``
gives the same as JSON (the snapshot, with percentiles). Go's own page stays
at ``/debug/rpc``.
"""
from __future__ import annotations

import html
import json
import time
from typing import Any, Dict, List, Optional

from fastrpc.observability.histogram import quantile
from fastrpc.observability.snapshot import process_snapshot, with_percentiles

__all__ = ["status_json", "status_html"]


def _ms(seconds: Optional[float]) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.3f}"


def _enrich(snap: Dict[str, Any]) -> Dict[str, Any]:
    """The snapshot with per-method rows carrying percentiles, and endpoint p50/p99."""
    out = dict(snap)
    out["servers"] = [dict(s, methods=with_percentiles(s["methods"])) for s in snap.get("servers", [])]
    out["clients"] = [dict(c, methods=with_percentiles(c["methods"])) for c in snap.get("clients", []) if c["methods"]]
    balancers = []
    for b in snap.get("balancers", []):
        endpoints = []
        for address in sorted(b["endpoints"]):
            e = b["endpoints"][address]
            endpoints.append(dict(e, address=address, p50=quantile(e["histogram"], 0.5),
                                  p99=quantile(e["histogram"], 0.99)))
        balancers.append(dict(b, methods=with_percentiles(b["methods"]), endpoints=endpoints))
    out["balancers"] = balancers
    return out


def status_json(snapshot: Optional[Dict[str, Any]] = None) -> bytes:
    """The status as JSON (`snapshot` None: this process now)."""
    return json.dumps(_enrich(snapshot if snapshot is not None else process_snapshot()), default=str,
                      indent=1).encode()


def _table(headers: List[str], rows: List[List[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>" if rows else "<p>none</p>"


def _method_rows(methods: List[Dict[str, Any]]) -> List[List[Any]]:
    return [[m["method"], m["calls"], m["errors"],
             ", ".join(f"{t}: {n}" for t, n in sorted(m["error_types"].items())) or "-",
             _ms(m["p50"]), _ms(m["p90"]), _ms(m["p99"])] for m in methods]


_METHOD_HEADERS = ["method", "calls", "errors", "error types", "p50 ms", "p90 ms", "p99 ms"]


def status_html(snapshot: Optional[Dict[str, Any]] = None) -> bytes:
    """The status page as HTML (`snapshot` None: this process now)."""
    snap = _enrich(snapshot if snapshot is not None else process_snapshot())
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>fastrpc status</title>",
             "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;margin-bottom:1em}"
             "td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}td:first-child{text-align:left}"
             "</style></head><body><h1>fastrpc status</h1>"]
    who = f"{snap['workers']} workers" if snap.get("workers") else f"pid {snap.get('pid')}"
    parts.append(f"<p>{html.escape(who)}, up {time.time() - snap.get('started', time.time()):.0f} s "
                 "(<a href='?format=json'>JSON</a>, <a href='/metrics'>metrics</a>)</p>")
    for s in snap["servers"]:
        parts.append(f"<h2>Server {html.escape(', '.join(s.get('addresses', [])))}</h2>")
        parts.append(f"<p>connections {s['connections']} open, {s['connections_total']} accepted; "
                     f"{s['in_flight']} calls in flight; {s['bytes_received']} bytes received, "
                     f"{s['bytes_sent']} sent</p>")
        parts.append(_table(_METHOD_HEADERS, _method_rows(s["methods"])))
    for c in snap["clients"]:
        parts.append(f"<h2>Client of {html.escape(c['target'])}</h2>")
        parts.append(_table(_METHOD_HEADERS, _method_rows(c["methods"])))
    for b in snap["balancers"]:
        parts.append(f"<h2>Balancer {html.escape(b['name'])} ({html.escape(str(b.get('strategy')))})</h2>")
        parts.append(_table(_METHOD_HEADERS, _method_rows(b["methods"])))
        parts.append(_table(
            ["endpoint", "healthy", "ejected (s left)", "ejections", "attempts", "transport errors",
             "remote errors", "in flight", "load", "p50 ms", "p99 ms", "last error"],
            [[e["address"], "yes" if e["healthy"] else "NO",
              f"{e.get('ejected_for', 0.0):.1f}" if e.get("ejected") else "-", e["ejections"], e["calls"],
              e["errors"], e["remote_errors"], e["in_flight"], "-" if e.get("load") is None else e["load"],
              _ms(e["p50"]), _ms(e["p99"]), e.get("last_error") or "-"] for e in b["endpoints"]]))
    parts.append("</body></html>")
    return "".join(parts).encode()
