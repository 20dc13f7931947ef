"""Observability: what a running fastrpc process tells about itself.

    registry     the servers, clients and balancers alive in this process
    histogram    percentiles and cumulative buckets from fastrpc's latency histograms
    snapshot     one coherent set of numbers for a process (and their sum over workers)
    prometheus   those numbers in Prometheus's exposition format (prometheus_client)
    status       the status page (HTML, and JSON with ?format=json)
    otel         OpenTelemetry: metrics and spans as interceptors (opentelemetry-api)

The counters themselves are kept by the call paths (compiled); nothing here
runs per call unless an interceptor from ``otel`` is installed.
"""

from fastrpc._core import calltable as _calltable, servercore as _servercore


def set_metrics(enabled: bool) -> None:
    """Count every call (the default) or not, in this process: servers'
    handlers, clients' and balancers' methods. Off only to measure what
    counting costs (benchmarks/bench_observability.py); the numbers stop
    growing while it is off."""
    _servercore.set_metrics(enabled)
    _calltable.set_metrics(enabled)
