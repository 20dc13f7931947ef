"""fastrpc's numbers in Prometheus's text exposition format.

Made with the prometheus_client library (``pip install fastrpc[prometheus]``)
from a snapshot (fastrpc.observability.snapshot), so that one process and
the sum of a service's workers read the same. Names follow Prometheus's
conventions: a ``fastrpc_`` prefix, ``_total`` on counters, durations in
seconds (histograms over fastrpc's LATENCY_BUCKETS).

Served at ``/metrics`` on a server's HTTP listener (``Server.start("http://...")``
or ``Server(metrics_address=...)``); ``render()`` gives the text to serve it
elsewhere.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, List, Optional, cast

from fastrpc.observability.histogram import cumulative
from fastrpc.observability.snapshot import process_snapshot

__all__ = ["CONTENT_TYPE", "MISSING", "FastrpcCollector", "render"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MISSING = "the Prometheus endpoint needs prometheus_client: pip install 'fastrpc[prometheus]'\n"


class FastrpcCollector:
    """A prometheus_client collector of a snapshot (None: this process's, read at each scrape).

    ``prometheus_client.REGISTRY.register(FastrpcCollector())`` adds
    fastrpc's metrics to an application's own registry.
    """

    def __init__(self, snapshot: Optional[Dict[str, Any]] = None) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Any]:
        """The metric families (prometheus_client calls this at each scrape)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
        from prometheus_client.utils import floatToGoString as _go_float
        go_float = cast(Callable[[float], str], _go_float)     # the library's spelling of bounds ("+Inf")

        snap = self._snapshot if self._snapshot is not None else process_snapshot()

        def histogram(family: Any, labels: List[str], m: Dict[str, Any]) -> None:
            buckets = [(go_float(bound), count) for bound, count in cumulative(m["histogram"])]
            family.add_metric(labels, buckets, m["seconds"])

        def methods(prefix: str, what: str, label_names: List[str], rows: List[Any]) -> Iterator[Any]:
            calls = CounterMetricFamily(f"fastrpc_{prefix}_calls", f"Calls {what} that ended, by method",
                                        labels=label_names + ["method"])
            errors = CounterMetricFamily(f"fastrpc_{prefix}_errors",
                                         f"Calls {what} that ended with an error, by method and error type",
                                         labels=label_names + ["method", "error_type"])
            duration = HistogramMetricFamily(f"fastrpc_{prefix}_call_duration_seconds",
                                             f"Duration of calls {what}, by method",
                                             labels=label_names + ["method"])
            for labels, table in rows:
                for name in sorted(table):
                    m = table[name]
                    calls.add_metric(labels + [name], m["calls"])
                    for error_type in sorted(m["error_types"]):
                        errors.add_metric(labels + [name, error_type], m["error_types"][error_type])
                    histogram(duration, labels + [name], m)
            yield from (calls, errors, duration)

        servers = snap.get("servers", [])
        yield from methods("server", "served", [], [([], s["methods"]) for s in servers])
        for name, doc, key, kind in (
                ("fastrpc_server_connections", "Connections open", "connections", GaugeMetricFamily),
                ("fastrpc_server_accepted_connections", "Connections accepted", "connections_total",
                 CounterMetricFamily),
                ("fastrpc_server_in_flight_calls", "Calls running as tasks or in the thread pool", "in_flight",
                 GaugeMetricFamily),
                ("fastrpc_server_received_bytes", "Bytes received", "bytes_received", CounterMetricFamily),
                ("fastrpc_server_sent_bytes", "Bytes sent", "bytes_sent", CounterMetricFamily)):
            if servers:
                yield kind(name, doc, value=sum(s.get(key, 0) for s in servers))

        clients = [c for c in snap.get("clients", []) if c["methods"]]
        yield from methods("client", "made by clients", ["target"], [([c["target"]], c["methods"]) for c in clients])
        balancers = snap.get("balancers", [])
        yield from methods("balancer", "made through balancers", ["balancer"],
                           [([b["name"]], b["methods"]) for b in balancers])

        label = ["balancer", "endpoint"]
        attempts = CounterMetricFamily("fastrpc_balancer_endpoint_attempts",
                                       "Attempts sent to an endpoint that ended", labels=label)
        failures = CounterMetricFamily("fastrpc_balancer_endpoint_errors",
                                       "Attempts that failed, by kind: transport (connection, timeout) "
                                       "or remote (the handler's error)", labels=label + ["kind"])
        ejections = CounterMetricFamily("fastrpc_balancer_endpoint_ejections", "Times an endpoint was ejected",
                                        labels=label)
        ejected = GaugeMetricFamily("fastrpc_balancer_endpoint_ejected_seconds",
                                    "Seconds left of an endpoint's ejection (0: not ejected)", labels=label)
        healthy = GaugeMetricFamily("fastrpc_balancer_endpoint_healthy", "1 while health checks pass",
                                    labels=label)
        in_flight = GaugeMetricFamily("fastrpc_balancer_endpoint_in_flight_calls", "Calls in flight",
                                      labels=label)
        rtt = HistogramMetricFamily("fastrpc_balancer_endpoint_rtt_seconds",
                                    "Round-trip time of answered attempts", labels=label)
        for b in balancers:
            for address in sorted(b["endpoints"]):
                e = b["endpoints"][address]
                labels = [b["name"], address]
                attempts.add_metric(labels, e["calls"])
                failures.add_metric(labels + ["transport"], e["errors"])
                failures.add_metric(labels + ["remote"], e["remote_errors"])
                ejections.add_metric(labels, e["ejections"])
                ejected.add_metric(labels, e.get("ejected_for", 0.0))
                healthy.add_metric(labels, 1 if e["healthy"] else 0)
                in_flight.add_metric(labels, e["in_flight"])
                histogram(rtt, labels, {"histogram": e["histogram"], "seconds": e.get("rtt_seconds", 0.0)})
        yield from (attempts, failures, ejections, ejected, healthy, in_flight, rtt)


def render(snapshot: Optional[Dict[str, Any]] = None) -> bytes:
    """The exposition text of `snapshot` (None: this process now).

    Raises ImportError with the install hint when prometheus_client is missing.
    """
    try:
        from prometheus_client import CollectorRegistry, generate_latest
    except ImportError:
        raise ImportError(MISSING.strip()) from None
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FastrpcCollector(snapshot))
    out: bytes = generate_latest(registry)
    return out
