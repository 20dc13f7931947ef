"""A server process with OpenTelemetry and interceptors: `python observed.py [BACKEND]`.

Serves fastrpc on a TCP port, Go's gob and JSON-RPC on an HTTP listener, and
metrics on a metrics_address; prints the three addresses on its first line.
Its spans and metrics go to the OTel SDK's in-memory exporters, which the
Probe service hands to the tests. BACKEND, when given, is the server that
Probe.Relay calls (a trace crossing two services).
"""
import asyncio
import os
import sys

from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import fastrpc
from fastrpc.errors import DeadlineExceeded, PermissionDeniedError
from fastrpc.observability import otel

spans = InMemorySpanExporter()
tracer_provider = TracerProvider()
tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
trace.set_tracer_provider(tracer_provider)
reader = InMemoryMetricReader()
meter_provider = MeterProvider(metric_readers=[reader])
BACKEND = sys.argv[1] if len(sys.argv) > 1 else None
LAG = float(os.environ.get("OBSERVED_LAG", "0"))        # Arith.Lagged's delay in this process


def span_dict(s):
    return {"name": s.name, "kind": s.kind.name, "trace_id": f"{s.context.trace_id:032x}",
            "span_id": f"{s.context.span_id:016x}",
            "parent_id": None if s.parent is None else f"{s.parent.span_id:016x}",
            "attributes": dict(s.attributes), "status": s.status.status_code.name}


def guard(call, proceed):
    """Refuses calls whose metadata says deny; marks the others."""
    if call.metadata.get("deny"):
        raise PermissionDeniedError("PermissionDenied", f"{call.method} denied by the guard")
    call.metadata["seen_by"] = "guard"
    return proceed(call)


class Arith:
    def Sum(self, a, b):
        return a + b

    def Div(self, a, b):
        return a / b

    def Ctx(self):
        c = fastrpc.current_call()
        return {"method": c.method, "metadata": c.metadata, "peer": c.peer, "remaining": c.remaining()}

    async def ACtx(self):
        await asyncio.sleep(0)
        return self.Ctx()

    @fastrpc.blocking
    def BCtx(self):
        return self.Ctx()

    async def Lagged(self, value):
        await asyncio.sleep(LAG)
        return value

    async def Slow(self, seconds):
        await asyncio.sleep(seconds)
        return seconds

    def Expire(self):
        """The reply a server sends when a call's deadline passes there
        before the caller's own timer fires (the order a race decides)."""
        raise DeadlineExceeded("DeadlineExceeded", "Arith.Expire was cancelled at its deadline")


class Probe:
    """What the tests read back from this process."""

    def Spans(self):
        tracer_provider.force_flush()
        return [span_dict(s) for s in spans.get_finished_spans()]

    def Metrics(self):
        out = []
        data = reader.get_metrics_data()
        for rm in data.resource_metrics if data else []:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    for p in m.data.data_points:
                        out.append({"name": m.name, "unit": m.unit, "attributes": dict(p.attributes),
                                    "count": p.count, "sum": p.sum})
        return out

    def Stats(self):
        return server.stats()

    async def Relay(self, a, b):
        async with fastrpc.AsyncClient(BACKEND, interceptors=[otel.client_interceptor()]) as c:
            return await c.call("Arith.Sum", a, b)


server = fastrpc.Server(interceptors=[otel.server_interceptor(meter_provider=meter_provider), guard],
                        metrics_address="http://127.0.0.1:0")
server.register(Arith())
server.register(Probe())


def ready(bound):
    print(" ".join(bound + [server.metrics_url.rsplit("/", 1)[0]]), flush=True)


server.serve_forever(["tcp://127.0.0.1:0", "http://127.0.0.1:0"], ready=ready)
