"""OpenTelemetry for fastrpc: spans and RPC metrics, as interceptors.

``pip install 'fastrpc[otel]'`` (opentelemetry-api; an application brings its
SDK and exporters). Then::

    from fastrpc.observability import otel
    server = fastrpc.Server(interceptors=[otel.server_interceptor()])
    client = fastrpc.Client(address, interceptors=[otel.client_interceptor()])

- Spans: a SERVER span around each handler and a CLIENT span around each
  call, named by the method, with the RPC semantic conventions' attributes
  (``rpc.system.name`` = "fastrpc", ``rpc.method``,
  ``server.address``/``server.port``, ``error.type`` on failure). Through
  a balancer, the call is an INTERNAL span (with the endpoint that
  answered and its attempt number) and each attempt a CLIENT span of its
  own under it, retries and hedges alike (``fastrpc.attempt``; a hedge
  that lost ends with ``fastrpc.attempt.outcome`` = "withdrawn").
- Propagation: the client injects the W3C ``traceparent`` (and
  ``tracestate``) of its span (of the attempt's, through a balancer) into
  the call's metadata; the server continues that trace, so a trace
  crosses services. Calls a handler makes run inside its span.
- Metrics: the ``rpc.server.call.duration`` and ``rpc.client.call.duration``
  histograms, in seconds, with the same attributes.

Each interceptor is a plain function that also times ``async def``
handlers and asyncio clients: when ``proceed`` returns an awaitable it
returns one that ends the span when the call ends.
"""
from __future__ import annotations

import inspect
import threading
import time
from typing import Any, Callable, Dict, Optional

from fastrpc._core.codec import packb
from fastrpc.errors import caller_error_type, recorded_error_type
from fastrpc.interceptors import ClientCall, ServerCall
from fastrpc.net.address import parse_address

__all__ = ["SYSTEM", "client_interceptor", "server_interceptor"]

#: The value of rpc.system.name for fastrpc's calls.
SYSTEM = "fastrpc"
_SCOPE = "fastrpc"
_MISSING = "fastrpc's OpenTelemetry support needs opentelemetry-api: pip install 'fastrpc[otel]'"


def _api() -> Any:
    try:
        import opentelemetry.metrics
        import opentelemetry.propagate
        import opentelemetry.trace
    except ImportError:
        raise ImportError(_MISSING) from None
    return opentelemetry


def _server_attributes(target: Optional[str]) -> Dict[str, Any]:
    if not target:
        return {}
    try:
        addr = parse_address(target)
    except ValueError:
        return {}
    if addr.scheme == "unix":
        return {"server.address": addr.path}
    return {"server.address": addr.host, "server.port": addr.port}


class _Timing:
    """Ends one span and records one duration, once, whatever way the call ends."""

    __slots__ = ("span", "histogram", "attributes", "started", "trace", "error_type")

    def __init__(self, otel: Any, span: Any, histogram: Any, attributes: Dict[str, Any],
                 error_type: Callable[[BaseException], str] = recorded_error_type) -> None:
        self.trace = otel.trace
        self.error_type = error_type
        self.span = span
        self.histogram = histogram
        self.attributes = attributes
        self.started = time.perf_counter()

    def end(self, exc: Optional[BaseException]) -> None:
        attributes = self.attributes
        if exc is not None:
            attributes = dict(attributes, **{"error.type": self.error_type(exc)})
            self.span.set_attribute("error.type", attributes["error.type"])
            self.span.record_exception(exc)
            self.span.set_status(self.trace.Status(self.trace.StatusCode.ERROR, str(exc)))
        self.histogram.record(time.perf_counter() - self.started, attributes)
        self.span.end()

    def run(self, proceed: Callable[[Any], Any], call: Any, before_end: Callable[[], None] = lambda: None) -> Any:
        """proceed(call) inside the span; an awaitable result is wrapped so
        the span ends when it does."""
        try:
            with self.trace.use_span(self.span, end_on_exit=False, record_exception=False,
                                     set_status_on_exception=False):
                result = proceed(call)
        except BaseException as exc:
            before_end()
            self.end(exc)
            raise
        if inspect.isawaitable(result):
            return self._finish(result, before_end)
        before_end()
        self.end(None)
        return result

    async def _finish(self, awaitable: Any, before_end: Callable[[], None]) -> Any:
        try:
            with self.trace.use_span(self.span, end_on_exit=False, record_exception=False,
                                     set_status_on_exception=False):
                result = await awaitable
        except BaseException as exc:
            before_end()
            self.end(exc)
            raise
        before_end()
        self.end(None)
        return result


def server_interceptor(tracer_provider: Any = None, meter_provider: Any = None) -> Callable[[ServerCall, Any], Any]:
    """A server interceptor that makes a SERVER span per call (continuing the
    caller's trace from its ``traceparent`` metadata) and records
    ``rpc.server.call.duration``. Providers default to the global ones."""
    otel = _api()
    tracer = otel.trace.get_tracer(_SCOPE, tracer_provider=tracer_provider)
    meter = otel.metrics.get_meter(_SCOPE, meter_provider=meter_provider)
    histogram = meter.create_histogram("rpc.server.call.duration", unit="s",
                                       description="Measures the duration of an incoming Remote Procedure Call (RPC).")
    extract = otel.propagate.extract
    kind = otel.trace.SpanKind.SERVER

    def intercept(call: ServerCall, proceed: Callable[[ServerCall], Any]) -> Any:
        attributes: Dict[str, Any] = {"rpc.system.name": SYSTEM, "rpc.method": call.method}
        parent = extract({k: v for k, v in call.metadata.items() if isinstance(v, str)}) if call.metadata else None
        span = tracer.start_span(call.method, context=parent, kind=kind, attributes=attributes)
        if call.peer:
            span.set_attribute("network.peer.address", str(call.peer))
        return _Timing(otel, span, histogram, attributes).run(proceed, call)

    intercept.__qualname__ = "otel.server_interceptor"
    return intercept


class _AttemptSpans:
    """A balanced call's attempt observer (ClientCall.attempts): a CLIENT
    span per attempt, child of the call's span, whose trace context that
    attempt carries, so each retry and hedge is its own span and the server
    span of the attempt that ran hangs under it."""

    def __init__(self, otel: Any, tracer: Any, parent: Any, call: ClientCall) -> None:
        self.otel = otel
        self.tracer = tracer
        self.parent = parent                    # the call's span, as a context
        self.call = call
        self.spans: Dict[int, Any] = {}
        self.lock = threading.Lock()

    def sent(self, attempt: Any) -> bytes:
        """`attempt` goes out now: open its span; return its metadata."""
        attributes: Dict[str, Any] = {"rpc.system.name": SYSTEM, "rpc.method": self.call.method,
                                      "fastrpc.attempt": attempt.number}
        attributes.update(_server_attributes(attempt.member.endpoint.address))
        span = self.tracer.start_span(self.call.method, context=self.parent, kind=self.otel.trace.SpanKind.CLIENT,
                                      attributes=attributes)
        with self.lock:
            self.spans[id(attempt)] = span
        carrier = dict(self.call.metadata)
        self.otel.propagate.inject(carrier, context=self.otel.trace.set_span_in_context(span))
        return packb(carrier)

    def ended(self, attempt: Any, error: Any) -> None:
        """`attempt` ended: answered (None), failed, or withdrawn."""
        with self.lock:
            span = self.spans.pop(id(attempt), None)
        if span is None:                        # it never went out (no connection): a span of no length
            attributes = {"rpc.system.name": SYSTEM, "rpc.method": self.call.method,
                          "fastrpc.attempt": attempt.number}
            if attempt.member is not None:
                attributes.update(_server_attributes(attempt.member.endpoint.address))
            span = self.tracer.start_span(self.call.method, context=self.parent,
                                          kind=self.otel.trace.SpanKind.CLIENT, attributes=attributes)
        trace = self.otel.trace
        if isinstance(error, BaseException):
            span.set_attribute("error.type", caller_error_type(error))
            span.set_status(trace.Status(trace.StatusCode.ERROR, str(error)))
        elif error is not None:                 # withdrawn: a hedge that lost, or a call taken back
            span.set_attribute("fastrpc.attempt.outcome", str(error))
        span.end()


def client_interceptor(tracer_provider: Any = None, meter_provider: Any = None) -> Callable[[ClientCall, Any], Any]:
    """A client (or balancer) interceptor that makes a CLIENT span per call,
    sends its ``traceparent`` in the call's metadata, and records
    ``rpc.client.call.duration``. Through a balancer the span also names
    the endpoint that answered (``server.address``/``server.port``) and the
    attempt (``fastrpc.attempt``)."""
    otel = _api()
    tracer = otel.trace.get_tracer(_SCOPE, tracer_provider=tracer_provider)
    meter = otel.metrics.get_meter(_SCOPE, meter_provider=meter_provider)
    histogram = meter.create_histogram("rpc.client.call.duration", unit="s",
                                       description="Measures the duration of an outgoing Remote Procedure Call (RPC).")
    inject = otel.propagate.inject
    kind = otel.trace.SpanKind.CLIENT

    def intercept(call: ClientCall, proceed: Callable[[ClientCall], Any]) -> Any:
        attributes: Dict[str, Any] = {"rpc.system.name": SYSTEM, "rpc.method": call.method}
        if call.balanced:
            # The logical call (INTERNAL), and a CLIENT span per attempt under it.
            span = tracer.start_span(call.method, kind=otel.trace.SpanKind.INTERNAL, attributes=attributes)
            call.attempts = _AttemptSpans(otel, tracer, otel.trace.set_span_in_context(span), call)
        else:
            attributes.update(_server_attributes(call.target))
            span = tracer.start_span(call.method, kind=kind, attributes=attributes)
            inject(call.metadata, context=otel.trace.set_span_in_context(span))
        timing = _Timing(otel, span, histogram, attributes, caller_error_type)

        def name_endpoint() -> None:
            # Through a balancer: which endpoint answered is known once it did.
            if call.endpoint is not None:
                endpoint = _server_attributes(call.endpoint)
                timing.attributes = dict(timing.attributes, **endpoint)
                for k, v in endpoint.items():
                    span.set_attribute(k, v)
                span.set_attribute("fastrpc.attempt", call.attempt)

        return timing.run(proceed, call, name_endpoint)

    intercept.__qualname__ = "otel.client_interceptor"
    return intercept
