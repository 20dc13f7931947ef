"""Observability: interceptors, per-call counters, Prometheus text, the status
page and OpenTelemetry, read from real server processes."""
import asyncio
import inspect
import json
import os
import random
import threading
import time
import urllib.error
import urllib.request

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

import fastrpc
from fastrpc.observability import otel, set_metrics
from support import ServerProcess, unused_address

HERE = os.path.dirname(os.path.abspath(__file__))
OBSERVED = os.path.join(HERE, "observed.py")


class Observed(ServerProcess):
    """tests/observed.py: fastrpc, HTTP (gob, JSON-RPC) and metrics addresses."""

    def __init__(self, backend=None):
        super().__init__(argv=[OBSERVED] + ([backend] if backend else []))
        self.address, self.http, self.metrics = self.address.split()


@pytest.fixture
def observed():
    with Observed() as proc:
        yield proc


def get(url):
    with urllib.request.urlopen(url, timeout=10) as reply:
        return reply.status, reply.headers.get("Content-Type"), reply.read()


def families(url):
    status, kind, body = get(url + "/metrics")
    assert status == 200 and kind.startswith("text/plain; version=0.0.4")
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def samples(family, **labels):
    return [s for s in family.samples if all(s.labels.get(k) == v for k, v in labels.items())]


def value(family, suffix="", **labels):
    found = [s.value for s in samples(family, **labels) if s.name == family.name + suffix]
    assert len(found) == 1, (family.name, suffix, labels, family.samples)
    return found[0]


# Prometheus -------------------------------------------------------------------------------
def test_prometheus_text_counts_calls_errors_and_latency_per_method(observed):
    with fastrpc.Client(observed.address) as c:
        for i in range(20):
            assert c.call("Arith.Sum", i, 1) == i + 1
        for _ in range(3):
            with pytest.raises(ZeroDivisionError):
                c.call("Arith.Div", 1, 0)
        assert c.map("Arith.Sum", [(i, i) for i in range(50)]) == [2 * i for i in range(50)]
    for url in (observed.http, observed.metrics):           # the HTTP listener and metrics_address agree
        f = families(url)
        assert value(f["fastrpc_server_calls"], "_total", method="Arith.Sum") == 70
        assert value(f["fastrpc_server_calls"], "_total", method="Arith.Div") == 3
        assert value(f["fastrpc_server_errors"], "_total", method="Arith.Div", error_type="ZeroDivisionError") == 3
        assert not samples(f["fastrpc_server_errors"], method="Arith.Sum")
        duration = f["fastrpc_server_call_duration_seconds"]
        assert duration.type == "histogram"
        assert value(duration, "_count", method="Arith.Sum") == 70
        buckets = [s for s in samples(duration, method="Arith.Sum") if s.name.endswith("_bucket")]
        assert [float(s.labels["le"]) for s in buckets] == list(fastrpc.LATENCY_BUCKETS) + [float("inf")]
        counts = [s.value for s in buckets]
        assert counts == sorted(counts) and counts[-1] == 70       # cumulative, ending at the count
        assert 0 < value(duration, "_sum", method="Arith.Sum") < 70 * 1.0
        assert value(f["fastrpc_server_accepted_connections"], "_total") >= 1
        assert value(f["fastrpc_server_received_bytes"], "_total") > 0
        assert value(f["fastrpc_server_sent_bytes"], "_total") > 0
        assert value(f["fastrpc_server_in_flight_calls"]) == 0


def test_metrics_address_serves_only_metrics_and_status(observed):
    assert get(observed.metrics + "/status")[0] == 200
    with pytest.raises(urllib.error.HTTPError) as err:
        get(observed.metrics + "/debug/rpc")
    assert err.value.code == 404
    assert get(observed.http + "/debug/rpc")[0] == 200          # Go's page stays where Go expects it
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(urllib.request.Request(observed.http + "/metrics", method="POST", data=b""),
                               timeout=10)
    assert err.value.code == 405


def test_status_page_counts_every_kind_of_caller(observed):
    with fastrpc.Client(observed.address) as c:
        c.call("Arith.Sum", 1, 2)
    gob = observed.http.replace("http://", "tcp://")
    with fastrpc.Client(gob, codec="gob", http=True) as g:          # Go's rpc.DialHTTP
        assert g.call("Arith.Sum", a=2, b=3) == 5                   # a struct {A, B}, by field name
    request = urllib.request.Request(observed.http + "/rpc", method="POST",
                                     data=json.dumps({"jsonrpc": "2.0", "id": 1, "method": "Arith.Div",
                                                      "params": [1, 0]}).encode(),
                                     headers={"Content-Type": "application/json"})
    assert "error" in json.loads(urllib.request.urlopen(request, timeout=10).read())
    status, kind, body = get(observed.http + "/status?format=json")
    assert kind == "application/json"
    snap = json.loads(body)
    (server,) = snap["servers"]
    methods = {m["method"]: m for m in server["methods"]}
    assert methods["Arith.Sum"]["calls"] == 2 and methods["Arith.Sum"]["p50"] is not None
    assert methods["Arith.Div"]["error_types"] == {"ZeroDivisionError": 1}
    assert set(server["addresses"]) == {observed.address, observed.http}
    status, kind, page = get(observed.http + "/status")
    assert kind.startswith("text/html")
    page = page.decode()
    assert "Arith.Sum" in page and "ZeroDivisionError: 1" in page and "p99 ms" in page


def test_status_page_shows_a_process_balancers_endpoints():
    server = fastrpc.Server()
    server.register(Arithmetic())
    address = server.start()
    http = server.start("http://127.0.0.1:0")
    dead = unused_address()
    try:
        with fastrpc.Balancer([address, dead], eject_failures=1, eject_base=30, connect_timeout=0.5) as b:
            for i in range(10):
                assert b.call("Arithmetic.Add", i, 1) == i + 1
            snap = json.loads(get(http + "/status?format=json")[2])
            (mine,) = [x for x in snap["balancers"] if any(e["address"] == dead for e in x["endpoints"])]
            endpoints = {e["address"]: e for e in mine["endpoints"]}
            assert endpoints[dead]["ejected"] and 0 < endpoints[dead]["ejected_for"] <= 30
            assert endpoints[dead]["errors"] >= 1 and endpoints[dead]["last_error"]
            assert endpoints[address]["calls"] >= 10 and endpoints[address]["p99"] is not None
            assert {m["method"]: m["calls"] for m in mine["methods"]}["Arithmetic.Add"] == 10
            page = get(http + "/status")[2].decode()
            assert dead in page and "ejected" in page
            f = families(http)
            assert value(f["fastrpc_balancer_endpoint_ejections"], "_total", endpoint=dead) >= 1
            assert value(f["fastrpc_balancer_endpoint_healthy"], endpoint=address) == 1
            assert value(f["fastrpc_balancer_calls"], "_total", method="Arithmetic.Add", balancer="balancer") >= 10
            assert value(f["fastrpc_balancer_endpoint_rtt_seconds"], "_count", endpoint=address) >= 10
    finally:
        server.close()


class Arithmetic:
    def Add(self, a, b):
        return a + b

    def Div(self, a, b):
        return a / b

    async def Nap(self, seconds):
        await asyncio.sleep(seconds)
        return seconds

    def Where(self):
        c = fastrpc.current_call()
        return [c.method, c.metadata, c.peer]


# interceptors -----------------------------------------------------------------------------
def test_server_interceptors_refuse_add_metadata_and_wrap_every_handler_mode(observed):
    with fastrpc.Client(observed.address, metadata={"user": "ann"}) as c:
        for method in ("Arith.Ctx", "Arith.ACtx", "Arith.BCtx"):
            ctx = c.call(method, timeout=5)
            assert ctx["method"] == method
            assert ctx["metadata"]["user"] == "ann" and ctx["metadata"]["seen_by"] == "guard"
            assert ctx["peer"] and 0 < ctx["remaining"] <= 5
    with fastrpc.Client(observed.address, metadata={"deny": True}) as c:
        with pytest.raises(fastrpc.errors.PermissionDeniedError, match="denied by the guard"):
            c.call("Arith.Sum", 1, 2)
    with fastrpc.Client(observed.address) as c:
        stats = c.call("Probe.Stats")
    assert stats["methods"]["Arith.Sum"]["error_types"] == {"PermissionDenied": 1}


def test_current_call_in_a_plain_handler_without_interceptors():
    server = fastrpc.Server()
    server.register(Arithmetic())
    address = server.start()
    try:
        with fastrpc.Client(address, metadata={"k": 1}) as c:
            method, metadata, peer = c.call("Arithmetic.Where")
        assert method == "Arithmetic.Where" and metadata == {"k": 1} and peer.startswith("('127.0.0.1'")
        assert fastrpc.current_call() is None                       # outside a handler
    finally:
        server.close()


def test_server_interceptor_order_timing_and_result_change():
    order = []

    def outer(call, proceed):
        order.append("outer")
        return proceed(call)

    async def timer(call, proceed):
        started = time.monotonic()
        result = await proceed(call)
        order.append(("timed", call.method, time.monotonic() - started >= 0.05 if call.method.endswith("Nap") else True))
        return result

    def doubler(call, proceed):
        def double(result):
            return result * 2 if call.method.endswith("Add") else result    # changes the answer
        result = proceed(call)
        if inspect.isawaitable(result):        # an async interceptor made this chain async
            async def later():
                return double(await result)
            return later()
        return double(result)

    server = fastrpc.Server(interceptors=[outer, timer, doubler])
    server.register(Arithmetic())
    address = server.start()
    try:
        with fastrpc.Client(address) as c:
            assert c.call("Arithmetic.Add", 2, 3) == 10
            assert c.call("Arithmetic.Nap", 0.05) == 0.05
            with pytest.raises(ZeroDivisionError):
                c.call("Arithmetic.Div", 1, 0)
            described = c.describe("Arithmetic.Add")["Arithmetic"]["methods"]["Add"]
            assert [p["name"] for p in described["params"]] == ["a", "b"]     # signatures survive wrapping
        assert order == ["outer", ("timed", "Arithmetic.Add", True), "outer", ("timed", "Arithmetic.Nap", True),
                         "outer"]
    finally:
        server.close()


def test_client_interceptors_see_calls_go_and_map_and_send_metadata(observed):
    seen = []

    def tag(call, proceed):
        call.metadata["via"] = "tag"
        started = time.monotonic()
        try:
            result = proceed(call)
            seen.append((call.method, "ok", time.monotonic() - started >= 0))
            return result
        except Exception as exc:
            seen.append((call.method, getattr(exc, "type", type(exc).__name__), True))
            raise

    def refuse(call, proceed):
        if call.args and call.args[0] == "refused":
            raise ValueError("refused before sending")
        return proceed(call)

    with fastrpc.Client(observed.address, metadata={"user": "bob"}, interceptors=[tag, refuse]) as c:
        ctx = c.call("Arith.Ctx")
        assert ctx["metadata"] == {"user": "bob", "via": "tag", "seen_by": "guard"}
        assert c.go("Arith.Sum", 1, 2).result(5) == 3
        assert c.map("Arith.Sum", [(i, 1) for i in range(10)]) == list(range(1, 11))
        with pytest.raises(ZeroDivisionError):
            c.call("Arith.Div", 1, 0)
        with pytest.raises(ValueError, match="refused before sending"):
            c.call("Arith.Sum", "refused", 1)
        assert c.stats()["methods"]["Arith.Sum"]["calls"] == 11      # the refused one never went
    assert seen.count(("Arith.Sum", "ok", True)) == 11
    assert ("Arith.Div", "ZeroDivisionError", True) in seen and ("Arith.Sum", "ValueError", True) in seen


def test_async_interceptor_on_a_blocking_client_is_a_clear_error(observed):
    async def ic(call, proceed):
        return await proceed(call)

    with pytest.raises(TypeError, match="async def"):
        fastrpc.Client(observed.address, interceptors=[ic])
    with pytest.raises(TypeError, match="callable"):
        fastrpc.Server(interceptors=["not callable"])


def test_async_client_and_balancer_interceptors(observed):
    seen = []

    async def record(call, proceed):
        call.metadata["via"] = "async"
        result = await proceed(call)
        seen.append((call.method, call.endpoint, call.attempt))
        return result

    def plain(call, proceed):
        return proceed(call)                          # an awaitable, passed on

    async def main():
        async with fastrpc.AsyncClient(observed.address, interceptors=[record, plain]) as c:
            assert (await c.call("Arith.Ctx"))["metadata"]["via"] == "async"
            assert await c.go("Arith.Sum", 1, 2) == 3
            assert await c.map("Arith.Sum", [(1, 1), (2, 2)]) == [2, 4]
        async with fastrpc.AsyncBalancer([observed.address], interceptors=[record]) as b:
            assert (await b.call("Arith.Ctx"))["metadata"]["via"] == "async"
            assert await b.map("Arith.Sum", [(3, 3)]) == [6]
            assert b.call_stats()["Arith.Sum"]["calls"] == 1
    asyncio.run(main())
    assert seen[:4] == [("Arith.Ctx", None, 0), ("Arith.Sum", None, 0), ("Arith.Sum", None, 0), ("Arith.Sum", None, 0)]
    assert seen[4:] == [("Arith.Ctx", observed.address, 1), ("Arith.Sum", observed.address, 1)]


def test_balancer_interceptor_sees_the_endpoint_and_attempt_of_a_failover(observed):
    dead = unused_address()
    seen = []

    def record(call, proceed):
        try:
            return proceed(call)
        finally:
            seen.append((call.endpoint, call.attempt))

    with fastrpc.Balancer([dead, observed.address], strategy="round_robin", interceptors=[record],
                          connect_timeout=0.5, eject_failures=100) as b:
        assert [b.call("Arith.Sum", i, 1) for i in range(4)] == [1, 2, 3, 4]
        assert b.go("Arith.Sum", 1, 1).result(5) == 2
    assert all(endpoint == observed.address for endpoint, _ in seen)
    assert 2 in {attempt for _, attempt in seen}           # some went to the dead one first, then failed over
    assert {attempt for _, attempt in seen} <= {1, 2}


# counters ----------------------------------------------------------------------------------
def test_client_and_balancer_count_calls_errors_and_timeouts(observed):
    with fastrpc.Client(observed.address) as c:
        for i in range(5):
            c.call("Arith.Sum", i, i)
        futures = [c.go("Arith.Sum", i, 1) for i in range(7)]
        assert [f.result(5) for f in futures] == list(range(1, 8))
        with pytest.raises(ZeroDivisionError):
            c.call("Arith.Div", 1, 0)
        with pytest.raises(fastrpc.TimeoutError):
            c.call("Arith.Slow", 1.0, timeout=0.05)
        assert c.map("Arith.Div", [(1, 1), (1, 0)], return_exceptions=True)[0] == 1.0
        methods = c.stats()["methods"]
    assert methods["Arith.Sum"]["calls"] == 12 and methods["Arith.Sum"]["errors"] == 0
    assert sum(methods["Arith.Sum"]["histogram"]) == 12
    assert methods["Arith.Div"]["calls"] == 3 and methods["Arith.Div"]["error_types"] == {"ZeroDivisionError": 2}
    assert methods["Arith.Slow"]["error_types"] == {"TimeoutError": 1}
    with fastrpc.Balancer([observed.address]) as b:
        assert b.map("Arith.Sum", [(i, 0) for i in range(30)]) == list(range(30))
        with pytest.raises(ZeroDivisionError):
            b.call("Arith.Div", 1, 0)
        calls = b.call_stats()
        endpoint = b.stats()[observed.address]
    assert calls["Arith.Sum"]["calls"] == 30 and calls["Arith.Div"]["error_types"] == {"ZeroDivisionError": 1}
    assert endpoint["remote_errors"] == 1 and sum(endpoint["histogram"]) == endpoint["calls"] == 31
    assert 0 < endpoint["p50"] <= endpoint["p99"] <= 10


def test_a_timeout_the_server_noticed_first_counts_as_a_timeout(observed, sdk):
    """A call's timeout travels with it, so the server may answer
    DeadlineExceeded before the caller's own timer fires: the caller gets a
    TimeoutError either way, and its statistics and spans count it as one,
    whichever side noticed first. Arith.Expire answers as such a server does."""
    spans, tracer_provider, reader, meter_provider = sdk
    ic = otel.client_interceptor(tracer_provider, meter_provider)

    async def with_asyncio():
        async with fastrpc.AsyncClient(observed.address) as c:
            with pytest.raises(fastrpc.TimeoutError):
                await c.call("Arith.Expire")
            assert isinstance((await c.map("Arith.Expire", [()], return_exceptions=True))[0], TimeoutError)
            direct = c.stats()["methods"]["Arith.Expire"]
        async with fastrpc.AsyncBalancer([observed.address], health_interval=0) as b:
            with pytest.raises(fastrpc.TimeoutError):
                await b.call("Arith.Expire")
            balanced = b.call_stats()["Arith.Expire"]
        return direct, balanced

    with fastrpc.Client(observed.address) as c, fastrpc.Client(observed.address, interceptors=[ic]) as traced:
        with pytest.raises(fastrpc.TimeoutError):
            c.call("Arith.Expire")
        assert isinstance(c.go("Arith.Expire").exception(5), TimeoutError)
        assert isinstance(c.map("Arith.Expire", [()], return_exceptions=True)[0], TimeoutError)
        with pytest.raises(fastrpc.errors.DeadlineExceeded):
            traced.call("Arith.Expire")
        client = c.stats()["methods"]["Arith.Expire"]
        served = [s for s in c.call("Probe.Spans") if s["name"] == "Arith.Expire"]
    with fastrpc.Balancer([observed.address], interceptors=[ic]) as b, fastrpc.Balancer([observed.address]) as plain:
        with pytest.raises(fastrpc.TimeoutError):
            b.call("Arith.Expire")
        with pytest.raises(fastrpc.TimeoutError):
            plain.call("Arith.Expire")
        assert isinstance(plain.map("Arith.Expire", [()], return_exceptions=True)[0], TimeoutError)
        traced_balanced = b.call_stats()["Arith.Expire"]
        balanced = plain.call_stats()["Arith.Expire"]
    async_direct, async_balanced = asyncio.run(with_asyncio())
    assert (client["calls"], client["errors"], client["error_types"]) == (3, 3, {"TimeoutError": 3})
    assert (balanced["calls"], balanced["error_types"]) == (2, {"TimeoutError": 2})
    assert traced_balanced["error_types"] == {"TimeoutError": 1}
    assert async_direct["error_types"] == {"TimeoutError": 2} and async_balanced["error_types"] == {"TimeoutError": 1}
    # the client spans (a call, a balanced call and its attempt) and durations say the same
    mine = [s for s in spans.get_finished_spans() if s.name == "Arith.Expire"]
    assert len(mine) == 3 and {s.attributes["error.type"] for s in mine} == {"TimeoutError"}
    durations = points(reader, "rpc.client.call.duration")
    assert {p.attributes.get("error.type") for p in durations} == {"TimeoutError"}
    # the server's own span keeps what it answered
    assert served and {s["attributes"]["error.type"] for s in served} == {"DeadlineExceeded"}


def test_counts_are_exact_under_randomized_interleavings(observed):
    """Threads mixing call, go, map and notify, through interceptors or not:
    every call counted once, on both sides."""
    passes = []

    def count(call, proceed):
        passes.append(call.method)
        return proceed(call)

    plain = fastrpc.Client(observed.address)
    intercepted = fastrpc.Client(observed.address, interceptors=[count])
    before = plain.call("Probe.Stats")["methods"]["Arith.Sum"]["calls"]
    made = {id(plain): 0, id(intercepted): 0}
    lock = threading.Lock()

    def worker(seed):
        rng = random.Random(seed)
        for _ in range(60):
            client = rng.choice([plain, intercepted])
            kind = rng.choice(["call", "go", "map"])
            if kind == "call":
                assert client.call("Arith.Sum", 1, 1) == 2
                n = 1
            elif kind == "go":
                assert client.go("Arith.Sum", 2, 2).result(10) == 4
                n = 1
            else:
                n = rng.randint(1, 20)
                assert client.map("Arith.Sum", [(i, 0) for i in range(n)], window=rng.choice([1, 4, 64])) == list(range(n))
            with lock:
                made[id(client)] += n

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert plain.stats()["methods"]["Arith.Sum"]["calls"] == made[id(plain)]
        assert intercepted.stats()["methods"]["Arith.Sum"]["calls"] == made[id(intercepted)] == len(passes)
        served = plain.call("Probe.Stats")["methods"]["Arith.Sum"]["calls"]
        assert served - before == made[id(plain)] + made[id(intercepted)]
    finally:
        plain.close()
        intercepted.close()


def test_counting_can_be_switched_off_to_measure_it():
    server = fastrpc.Server()
    server.register(Arithmetic())
    address = server.start()
    try:
        with fastrpc.Client(address) as c:
            c.call("Arithmetic.Add", 1, 1)
            set_metrics(False)
            try:
                for _ in range(5):
                    c.call("Arithmetic.Add", 1, 1)
            finally:
                set_metrics(True)
            c.call("Arithmetic.Add", 1, 1)
            assert c.stats()["methods"]["Arithmetic.Add"]["calls"] == 2
        assert server.stats()["methods"]["Arithmetic.Add"]["errors"] == 0
        assert sum(server.stats()["methods"]["Arithmetic.Add"]["histogram"]) == 2
    finally:
        server.close()


# OpenTelemetry -----------------------------------------------------------------------------
@pytest.fixture
def sdk():
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    return spans, tracer_provider, reader, MeterProvider(metric_readers=[reader])


def points(reader, name):
    out = []
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == name:
                    assert m.unit == "s"
                    out.extend(m.data.data_points)
    return out


def test_a_trace_crosses_two_server_processes(sdk):
    spans, tracer_provider, reader, meter_provider = sdk
    with Observed() as back, Observed(back.address) as front:
        with fastrpc.Client(front.address, interceptors=[otel.client_interceptor(tracer_provider, meter_provider)]) as c:
            assert c.call("Probe.Relay", 2, 3) == 5
            with pytest.raises(ZeroDivisionError):
                c.call("Arith.Div", 1, 0)
            front_spans = c.call("Probe.Spans")
        with fastrpc.Client(back.address) as c:
            back_spans = c.call("Probe.Spans")
            back_metrics = c.call("Probe.Metrics")
    mine = {s.name: s for s in spans.get_finished_spans()}
    relay = mine["Probe.Relay"]
    assert relay.kind.name == "CLIENT" and relay.attributes["rpc.system.name"] == "fastrpc"
    assert relay.attributes["rpc.method"] == "Probe.Relay" and relay.attributes["server.port"] == int(
        front.address.rsplit(":", 1)[1])
    trace_id = f"{relay.context.trace_id:032x}"
    front_server = next(s for s in front_spans if s["name"] == "Probe.Relay")
    assert front_server["kind"] == "SERVER" and front_server["trace_id"] == trace_id
    assert front_server["parent_id"] == f"{relay.context.span_id:016x}"
    front_client = next(s for s in front_spans if s["name"] == "Arith.Sum" and s["kind"] == "CLIENT")
    assert front_client["trace_id"] == trace_id and front_client["parent_id"] == front_server["span_id"]
    back_server = next(s for s in back_spans if s["name"] == "Arith.Sum")
    assert back_server["trace_id"] == trace_id and back_server["parent_id"] == front_client["span_id"]
    failed = mine["Arith.Div"]
    assert failed.status.status_code.name == "ERROR" and failed.attributes["error.type"] == "ZeroDivisionError"
    front_div = next(s for s in front_spans if s["name"] == "Arith.Div")
    assert front_div["status"] == "ERROR" and front_div["attributes"]["error.type"] == "ZeroDivisionError"
    (point,) = [p for p in back_metrics if p["name"] == "rpc.server.call.duration"
                and p["attributes"]["rpc.method"] == "Arith.Sum"]
    assert point["unit"] == "s" and point["count"] == 1 and point["attributes"]["rpc.system.name"] == "fastrpc"
    client_points = points(reader, "rpc.client.call.duration")
    by_method = {(p.attributes["rpc.method"], p.attributes.get("error.type")): p for p in client_points}
    assert by_method[("Probe.Relay", None)].count == 1 and by_method[("Arith.Div", "ZeroDivisionError")].count == 1


def test_otel_through_a_balancer_gives_each_attempt_its_own_span(sdk, observed):
    spans, tracer_provider, reader, meter_provider = sdk
    dead = unused_address()
    ic = otel.client_interceptor(tracer_provider, meter_provider)
    with fastrpc.Balancer([dead, observed.address], interceptors=[ic], connect_timeout=0.5,
                          eject_failures=100) as b:
        for i in range(4):
            assert b.call("Arith.Sum", i, 0) == i
    port = int(observed.address.rsplit(":", 1)[1])
    finished = spans.get_finished_spans()
    calls = [s for s in finished if s.kind.name == "INTERNAL"]
    attempts = [s for s in finished if s.kind.name == "CLIENT"]
    assert len(calls) == 4 and all(c.attributes["server.port"] == port for c in calls)
    failed_over = [c for c in calls if c.attributes["fastrpc.attempt"] == 2]
    assert failed_over                                  # some calls went to the dead endpoint first
    for call in failed_over:
        mine = sorted((a for a in attempts if a.parent.span_id == call.context.span_id),
                      key=lambda a: a.attributes["fastrpc.attempt"])
        assert [a.attributes["fastrpc.attempt"] for a in mine] == [1, 2]
        assert mine[0].attributes["server.port"] == int(dead.rsplit(":", 1)[1])
        assert mine[0].status.status_code.name == "ERROR" and mine[0].attributes["error.type"]
        assert mine[1].attributes["server.port"] == port and mine[1].status.status_code.name == "UNSET"
    with fastrpc.Client(observed.address) as c:
        served = [s for s in c.call("Probe.Spans") if s["name"] == "Arith.Sum"]
    answered = {f"{a.context.span_id:016x}" for a in attempts if a.attributes["server.port"] == port}
    assert len(served) == 4 and {s["parent_id"] for s in served} == answered   # each under its attempt's span
    assert sum(p.count for p in points(reader, "rpc.client.call.duration")) == 4


def test_otel_spans_of_a_hedged_call_and_of_an_async_client(sdk):
    spans, tracer_provider, reader, meter_provider = sdk
    ic = otel.client_interceptor(tracer_provider, meter_provider)
    slow = Observed.__new__(Observed)
    ServerProcess.__init__(slow, env={"OBSERVED_LAG": "2"}, argv=[OBSERVED])
    slow.address, slow.http, slow.metrics = slow.address.split()
    try:
        with Observed() as fast:
            with fastrpc.Balancer([slow.address, fast.address], strategy="round_robin", failure="backup",
                                  backup_after=0.05, idempotent=True, interceptors=[ic]) as b:
                assert [b.call("Arith.Lagged", i, timeout=10) for i in range(2)] == [0, 1]

            async def main():
                async with fastrpc.AsyncBalancer([fast.address], interceptors=[ic]) as ab:
                    assert await ab.call("Arith.Sum", 1, 1) == 2
                async with fastrpc.AsyncClient(fast.address, interceptors=[ic]) as c:
                    assert await c.call("Arith.Sum", 7, 0) == 7
            asyncio.run(main())
            fast_port = int(fast.address.rsplit(":", 1)[1])
            lagged = [s for s in spans.get_finished_spans() if s.name == "Arith.Lagged"]
            attempts = [s for s in lagged if s.kind.name == "CLIENT"]
            withdrawn = [a for a in attempts if a.attributes.get("fastrpc.attempt.outcome") == "withdrawn"]
            assert withdrawn                            # the slow one lost its race and was taken back
            assert {a.attributes["server.port"] for a in withdrawn} == {int(slow.address.rsplit(":", 1)[1])}
            winner = [a for a in attempts if a.attributes["server.port"] == fast_port]
            assert len(winner) == 2 and all(a.status.status_code.name == "UNSET" for a in winner)
            sums = [s for s in spans.get_finished_spans() if s.name == "Arith.Sum"]
            assert {s.kind.name for s in sums} == {"INTERNAL", "CLIENT"}      # balanced (with its attempt), direct
            assert all(s.attributes["server.port"] == fast_port for s in sums)
    finally:
        slow.close()
