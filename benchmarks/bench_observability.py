"""What observability costs: per-call counting on (the default) against off,
interceptors, OpenTelemetry and current_call(), client and server in
separate processes, every figure next to its baseline in the same run.

Targets (issue "Observability"): with counting on and no interceptor,
sequential calls within 5% and pipelined throughput within 10% of counting
off. Each configuration runs its own server process; the client side's
counting follows the same switch.
"""
import os
import sys

import pytest

import fastrpc
from conftest import HERE, Proc, median_rate
from fastrpc.observability import set_metrics
from shapes import expected_window_sum, sliding_window

SEQ = "sequential Arith.Sum, observability"
STEADY = "Client.go, 128 in flight, steady state, observability"
CONTEXT = "sequential calls of a plain handler, current_call()"

# name -> (server flags, client counting on, client interceptors)
CONFIGS = {
    "counting off": (["metrics_off"], False, "none"),
    "counting on (default)": ([], True, "none"),
    "counting on, a no-op interceptor each side": (["noop_interceptor"], True, "noop"),
    "OpenTelemetry interceptors each side": (["otel"], True, "otel"),
}


def client_interceptors(kind):
    if kind == "noop":
        return [lambda call, proceed: proceed(call)]
    if kind == "otel":
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.trace import TracerProvider
        from fastrpc.observability import otel
        return [otel.client_interceptor(TracerProvider(), MeterProvider())]
    return []


@pytest.fixture(scope="module", autouse=True)
def baselines(report):
    report.baseline(SEQ, "counting off", "calls/s")
    report.baseline(STEADY, "counting off", "calls/s")
    report.baseline(CONTEXT, "not asking", "calls/s")


@pytest.fixture(scope="module", params=list(CONFIGS))
def configured(request):
    flags, counting, kind = CONFIGS[request.param]
    server = Proc([sys.executable, os.path.join(HERE, "servers.py"), "tcp://127.0.0.1:0", "fastrpc", *flags])
    set_metrics(counting)
    client = fastrpc.Client(server.address, interceptors=client_interceptors(kind))
    try:
        yield request.param, client, kind != "none"
    finally:
        client.close()
        set_metrics(True)
        server.stop()


def sizes(quick):
    # (sequential calls per round, steady-state calls per round, rounds)
    return (50, 512, 1) if quick else (3000, 40_000, 9)


def timed(benchmark, report, group, name, fn, rounds, calls):
    benchmark.group = group
    benchmark.pedantic(fn, rounds=rounds, warmup_rounds=1)
    rate = median_rate(benchmark, calls)
    if rate:
        report.add(group, name, rate)


def test_sequential(benchmark, configured, report, quick):
    name, client, _ = configured
    n, _, rounds = sizes(quick)

    def run():
        for i in range(n):
            assert client.call("Arith.Sum", i, 1) == i + 1
    timed(benchmark, report, SEQ, name, run, rounds, n)


def test_steady_state(benchmark, configured, report, quick):
    name, client, intercepted = configured
    _, n, rounds = sizes(quick)
    if intercepted:
        n = max(1, n // 20)         # go() through interceptors runs each chain on a thread: far slower

    def run():
        assert sliding_window(client.go, "Arith.Sum", n) == expected_window_sum(n)
    timed(benchmark, report, STEADY, name, run, rounds, n)


@pytest.fixture(scope="module")
def plain_server():
    server = Proc([sys.executable, os.path.join(HERE, "servers.py"), "tcp://127.0.0.1:0"])
    with fastrpc.Client(server.address) as client:
        yield client
    server.stop()


@pytest.mark.parametrize("method,name", [("Arith.Sum", "not asking"), ("Arith.SumContext", "asking current_call()")])
def test_current_call_costs_only_who_asks(benchmark, plain_server, report, quick, method, name):
    n, _, rounds = sizes(quick)

    def run():
        for i in range(n):
            assert plain_server.call(method, i, 1) == i + 1
    timed(benchmark, report, CONTEXT, name, run, rounds, n)
