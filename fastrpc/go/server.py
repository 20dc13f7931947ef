"""Serving Go clients: net/rpc's gob and jsonrpc codecs, HTTP CONNECT, /debug/rpc.

A Server listener started with ``codec="gob"`` or ``codec="jsonrpc"``, or
on an ``http://`` address, hands each connection to a GoConnection. It
dispatches to the same registered handlers as fastrpc's own protocol, so
one Python service answers Go and Python callers alike.

Go sends one argument per call. A handler taking one parameter receives it
whole (converted to the parameter's annotated type, e.g. a dataclass); a
handler taking several receives a Go struct's fields matched to its
parameters **by name**, as Go's decoders match fields: the exact name, else
case-insensitively (encoding/json's rule), else ignoring underscores too
(``user_id`` takes ``UserID``). Fields no parameter names are ignored; a
parameter no field names gets its default, else the zero value of its
annotated type (None when it has none). So ``def Sum(self, a, b)`` serves
Go's ``Call("Arith.Sum", &Args{A: 10, B: 20}, &reply)`` whatever the order
of Args' fields. Errors use net/rpc's texts ("rpc: can't find method S.M").
"""
from __future__ import annotations

import asyncio
import functools
import html
import inspect
import logging
import time
import typing
from typing import Any, Callable, Dict, List, Optional, Tuple

from fastrpc.go._gob import K_STRUCT, GoType
from fastrpc._core.servercore import MODE_INLINE, Handler
from fastrpc.context import CURRENT, CallContext
from fastrpc.errors import RPCError
from fastrpc.go.gobcodec import GobServerCodec
from fastrpc.go.types import EMPTY_STRUCT, MISSING, converter, go_type, lookup_field, zero_for, zero_value
from fastrpc.go.jsonrpc import JSONServerCodec
from fastrpc.observability import prometheus, status
from fastrpc.server import jsonrpc2
from fastrpc.net.loop import feed_buffered
from fastrpc.server.connection import FastConnection, Host, ServedConnection


__all__ = ["GoConnection", "GO_CODECS"]

log = logging.getLogger("fastrpc.server")

GO_CODECS: Dict[str, Any] = {"gob": GobServerCodec, "jsonrpc": JSONServerCodec}
GO_RPC_PATH = b"/_goRPC_"           # Go's rpc.DefaultRPCPath
DEBUG_PATH = b"/debug/rpc"          # Go's rpc.DefaultDebugPath
CONNECTED = b"HTTP/1.0 200 Connected to Go RPC\n\n"
MAX_HTTP_HEADER = 8192
RPC_PATH = b"/rpc"                  # JSON-RPC 2.0 over HTTP POST (fastrpc.server.jsonrpc2)
FASTRPC_PATH = b"/_fastrpc_"        # HTTP CONNECT, then fastrpc's own protocol
METRICS_PATH = b"/metrics"          # Prometheus exposition text (fastrpc.observability.prometheus)
STATUS_PATH = b"/status"            # the status page, HTML or ?format=json (fastrpc.observability.status)
FASTRPC_CONNECTED = b"HTTP/1.0 200 Connected to fastrpc\n\n"


class GoSignature:
    """What a handler declares, read once: argument converters and reply type."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        func = handler.func
        try:
            hints = typing.get_type_hints(func, include_extras=True)
        except Exception:               # unresolvable annotations: treat as none
            hints = {}
        try:
            params = [p for p in inspect.signature(func).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        except (TypeError, ValueError):
            params = []
        self.converters: List[Optional[Callable[..., Any]]] = [_converter(hints.get(p.name)) for p in params]
        # What a Go struct's fields are matched to (see the module docstring).
        self.param_names = [p.name for p in params]
        self.missing = [p.default if p.default is not p.empty else zero_for(hints.get(p.name)) for p in params]
        # How Go's /debug/rpc would show the method: the argument a Go caller
        # sends (several parameters: a struct of them) and the reply.
        if not params:
            self.arg_go = "*struct {}"
        elif len(params) == 1:
            self.arg_go = _go_name(hints.get(params[0].name), pointer=False)
        else:
            fields = "; ".join(f"{p.name[:1].upper()}{p.name[1:]} {_go_name(hints.get(p.name), pointer=False)}"
                               for p in params)
            self.arg_go = f"*struct {{ {fields} }}"
        self.result_type: Optional[GoType] = None
        if "return" in hints:
            try:
                self.result_type = go_type(hints["return"])
            except TypeError:
                pass                    # no Go counterpart: infer from each value
        self.reply_go = _go_name(hints.get("return"), pointer=True) if "return" in hints else "*interface {}"

    def arguments(self, args: tuple[Any, ...]) -> Tuple[Any, ...]:
        """The handler's positional arguments for the values a Go caller sent."""
        h = self.handler
        lo, hi = h.min_args, h.max_args
        if len(args) == 1 and lo > 1 and isinstance(args[0], dict):
            args = self._fields_by_name(args[0])    # one Go struct, several parameters
        elif len(args) == 1 and hi == 0:
            args = ()                           # Go always sends an argument; this takes none
        if len(args) < lo or (hi >= 0 and len(args) > hi):
            want = f"{lo}" if lo == hi else f"{lo} to {'any' if hi < 0 else hi}"
            raise TypeError(f"rpc: {h.name} takes {want} arguments, got {len(args)}")
        convs = self.converters
        if not any(convs):
            return args
        converted = []
        for i, a in enumerate(args):
            convert = convs[i] if i < len(convs) else None
            converted.append(a if convert is None else convert(a))
        return tuple(converted)

    def _fields_by_name(self, fields: Dict[Any, Any]) -> tuple[Any, ...]:
        """The parameters' values from a struct's fields, matched by name (never by position)."""
        values = []
        for name, missing in zip(self.param_names, self.missing):
            value = lookup_field(fields, name)
            values.append(missing if value is MISSING else value)
        return tuple(values)

    def reply(self, result: Any) -> tuple[Any, ...]:
        """(value, GoType or None) to send for `result`; None is never sent as nil."""
        if result is None:
            if self.result_type is None or self.result_type is EMPTY_STRUCT:
                return {}, EMPTY_STRUCT
            return zero_value(self.result_type), self.result_type
        return result, self.result_type


def _converter(annotation: Any) -> Optional[Callable[..., Any]]:
    if annotation is None:
        return None
    try:
        return converter(annotation)
    except TypeError:
        return None


def _go_name(annotation: Any, pointer: bool) -> str:
    """Go's name for the type `annotation` declares (structs as pointers,
    as net/rpc methods take them); "interface {}" when undeclared."""
    if annotation is None:
        return "*interface {}" if pointer else "interface {}"
    try:
        t = go_type(annotation)
    except TypeError:
        return "*interface {}" if pointer else "interface {}"
    if t is EMPTY_STRUCT:
        return "*struct {}"
    name = t.name or "interface {}"
    return f"*{name}" if pointer or t.kind == K_STRUCT else name


class GoConnection(ServedConnection, asyncio.Protocol):
    """One Go client's connection: a Go codec, optionally behind HTTP CONNECT.

    Calls, backpressure, output and closing work as on a fastrpc connection
    (ServedConnection); Go's protocols have no GOAWAY, so on close the
    server simply closes it once its calls are done.
    """

    # net/rpc runs a method to completion whatever its client does (it has no
    # cancellation), and so do Go listeners, in every handler mode: a call
    # that arrived runs; its reply is dropped if the client has gone.
    cancel_on_hangup = False

    def __init__(self, server: Host, codec: str, http: bool, observe_only: bool = False) -> None:
        super().__init__(server)
        self.observe_only = observe_only        # a metrics_address listener: /metrics and /status only
        self.codec_name = codec
        # A GobServerCodec or JSONServerCodec; None until an HTTP listener's CONNECT is read.
        self.codec: Any = None if http else GO_CODECS[codec](server.max_frame_size, server.max_depth)
        self.http_header: Optional[bytearray] = bytearray() if http else None
        # A POST /rpc body still arriving: (bytes so far, Content-Length, headers).
        self.http_body: Optional[Tuple[bytearray, int, Dict[str, str]]] = None
        self.next_task = 0

    # asyncio protocol ---------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.peer = transport.get_extra_info("peername")
        s = self.server
        self.last_read = s.loop.time()
        if len(s.connections) >= s.max_connections and not s.connections.closing:
            log.warning("closing connection from %s: too many connections (max_connections=%d)",
                        self.peer, s.max_connections)
            transport.close()           # Go's protocols cannot say why
            return
        s.connections.add(self)

    def data_received(self, data: bytes) -> None:
        self.last_read = self.server.loop.time()
        self.server.connections.bytes_received += len(data)
        if self.http_body is not None:
            self.http_body[0].extend(data)
            self._body_arrived()
            return
        if self.http_header is not None:
            data = self._http(data)
            if not data:
                return
        try:
            calls = self.codec.feed(data)
        except RPCError as exc:
            log.warning("closing %s connection from %s: %s", self.codec_name, self.peer, exc)
            self.flush()
            self.transport.close()
            return
        except Exception:
            log.exception("internal error on %s connection from %s; closing it", self.codec_name, self.peer)
            self.transport.abort()
            return
        for key, method, args, bad in calls:
            self._dispatch(key, method, args, bad)
        self.flush()

    def eof_received(self) -> Optional[bool]:
        return False

    # HTTP ---------------------------------------------------------------
    def _http(self, data: bytes) -> bytes:
        """Handle the HTTP request that opens the connection; return bytes past it."""
        header = self.http_header
        assert header is not None               # set until the HTTP request is read
        header += data
        end = header.find(b"\n\n")
        end2 = header.find(b"\r\n\r\n")
        if end2 >= 0 and (end < 0 or end2 < end):
            end, size = end2, 4
        else:
            size = 2
        if end < 0:
            if len(header) > MAX_HTTP_HEADER:
                self._http_reply(b"431 Request Header Fields Too Large", b"text/plain", b"header too large\n")
            return b""
        request_line = bytes(header[:header.find(b"\n")]).rstrip(b"\r")
        rest = bytes(header[end + size:])
        self.http_header = None
        parts = request_line.split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            self._http_reply(b"400 Bad Request", b"text/plain", b"malformed request line\n")
            return b""
        verb, (path, _, query) = parts[0], parts[1].partition(b"?")
        if path in (METRICS_PATH, STATUS_PATH):
            self._observe(verb, path, query)
            return b""
        if self.observe_only:
            self._http_reply(b"404 Not Found", b"text/plain; charset=utf-8", b"404 page not found\n")
            return b""
        if path == GO_RPC_PATH:
            if verb != b"CONNECT":
                self._http_reply(b"405 Method Not Allowed", b"text/plain; charset=utf-8", b"405 must CONNECT\n")
                return b""
            self.transport.write(CONNECTED)
            self.codec = GO_CODECS[self.codec_name](self.server.max_frame_size, self.server.max_depth)
            return rest
        if path == RPC_PATH:
            self._rpc_request(verb, bytes(header[:end]), rest)
            return b""
        if path == FASTRPC_PATH:
            if verb != b"CONNECT":
                self._http_reply(b"405 Method Not Allowed", b"text/plain; charset=utf-8", b"405 must CONNECT\n")
            else:
                self._become_fastrpc(rest)
            return b""
        if path == DEBUG_PATH and verb in (b"GET", b"HEAD"):
            body = debug_page(self.server).encode()
            self._http_reply(b"200 OK", b"text/html; charset=utf-8", body if verb == b"GET" else b"",
                             length=len(body))
            return b""
        self._http_reply(b"404 Not Found", b"text/plain; charset=utf-8", b"404 page not found\n")
        return b""

    def _observe(self, verb: bytes, path: bytes, query: bytes) -> None:
        """GET /metrics (Prometheus text) or /status (HTML; JSON with ?format=json)."""
        if verb not in (b"GET", b"HEAD"):
            self._http_reply(b"405 Method Not Allowed", b"text/plain; charset=utf-8", b"405 must GET\n")
            return
        if path == METRICS_PATH:
            try:
                body, kind = prometheus.render(), prometheus.CONTENT_TYPE.encode()
            except ImportError:
                self._http_reply(b"501 Not Implemented", b"text/plain; charset=utf-8", prometheus.MISSING.encode())
                return
        elif b"format=json" in query.split(b"&"):
            body, kind = status.status_json(), b"application/json"
        else:
            body, kind = status.status_html(), b"text/html; charset=utf-8"
        self._http_reply(b"200 OK", kind, body if verb == b"GET" else b"", length=len(body))

    def _become_fastrpc(self, rest: bytes) -> None:
        """CONNECT /_fastrpc_: the rest of the stream is fastrpc's protocol, served
        by a FastConnection (with the server's secret, limits and hello) as if
        it had been accepted on a fastrpc listener."""
        transport = self.transport
        transport.write(FASTRPC_CONNECTED)
        self.server.connections.discard(self)      # the FastConnection counts itself
        self.server.connections.accepted -= 1      # (one connection, accepted once)
        self.closing = True                        # this protocol object is done with it
        conn = FastConnection(self.server)
        transport.set_protocol(conn)
        conn.connection_made(transport)
        if rest:
            feed_buffered(conn, transport, rest)

    def _rpc_request(self, verb: bytes, head: bytes, rest: bytes) -> None:
        """POST /rpc: a JSON-RPC 2.0 request whose body is `rest` and what follows."""
        if verb != b"POST":
            self._http_reply(b"405 Method Not Allowed", b"text/plain; charset=utf-8", b"405 must POST\n")
            return
        headers = {}
        for line in head.split(b"\n")[1:]:
            name, sep, value = line.decode("latin-1").partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        try:
            length = int(headers.get("content-length", ""))
        except ValueError:
            self._http_reply(b"411 Length Required", b"text/plain", b"Content-Length required\n")
            return
        if not 0 <= length <= self.server.max_frame_size:
            self._http_reply(b"413 Payload Too Large", b"text/plain",
                             f"body above max_frame_size={self.server.max_frame_size}\n".encode())
            return
        self.http_body = (bytearray(rest), length, headers)
        self._body_arrived()

    def _body_arrived(self) -> None:
        assert self.http_body is not None
        body, length, headers = self.http_body
        if len(body) < length:
            return
        self.http_body = None
        self.next_task += 1
        task = self.server.loop.create_task(jsonrpc2.answer(self.server, bytes(body[:length]), headers,
                                                                   None if self.peer is None else str(self.peer)))
        self._start_task(self.next_task, task, functools.partial(self._rpc_answered, self.next_task))

    def _rpc_answered(self, tid: int, task: asyncio.Future[Any]) -> None:
        self._end_task(tid, task)
        if task.cancelled() or task.exception() is not None:
            self._http_reply(b"500 Internal Server Error", b"text/plain", b"the request failed\n")
        elif task.result() is None:
            self._http_reply(b"204 No Content", b"application/json", b"")
        else:
            self._http_reply(b"200 OK", b"application/json", task.result())
        self._calls_eased()

    def _http_reply(self, status: bytes, content_type: bytes, body: bytes, length: Optional[int] = None) -> None:
        self.http_header = None
        head = (b"HTTP/1.0 " + status + b"\r\nContent-Type: " + content_type
                + b"\r\nContent-Length: " + str(len(body) if length is None else length).encode()
                + b"\r\nConnection: close\r\n\r\n")
        self.transport.write(head + body)
        self.transport.close()

    # calls ----------------------------------------------------------------
    def _dispatch(self, key: Any, method: str, args: tuple[Any, ...], bad: Optional[str]) -> None:
        dispatcher = self.server.dispatcher
        if bad is not None:
            self._error(key, method, bad)
            return
        handler = dispatcher.lookup(method)
        if handler is None:
            self._error(key, method, dispatcher.not_found(method))
            return
        handler.calls += 1
        started = time.monotonic()
        sig = dispatcher.annotation(handler, "go", GoSignature)
        try:
            call_args = sig.arguments(args)
        except (TypeError, ValueError) as exc:
            handler.record(0.0, "InvalidArguments")
            self._error(key, method, str(exc))
            return
        loop = self.server.loop
        if handler.mode != MODE_INLINE:
            # net/rpc carries no deadline or metadata: the handler runs as a
            # fastrpc call without them would (see Dispatcher.start).
            try:
                fut = dispatcher.start(loop, handler, call_args, None, None, None, self.peer)
            except Exception as exc:
                dispatcher.finished(handler, started, exc)
                self._error(key, method, _error_text(exc))
                return
            self._track(key, handler, sig, fut, started)
            return
        token = CURRENT.set(CallContext(method, None, None, None if self.peer is None else str(self.peer)))
        try:
            result = handler.func(*call_args)
        except Exception as exc:
            dispatcher.finished(handler, started, exc)
            self._error(key, method, _error_text(exc), exc)
            return
        finally:
            CURRENT.reset(token)
        if inspect.isawaitable(result):
            self._track(key, handler, sig, dispatcher.start_awaitable(loop, result), started)
            return
        dispatcher.finished(handler, started, None)
        self._reply(key, method, sig, result)

    def _track(self, key: Any, handler: Handler, sig: GoSignature, fut: asyncio.Future[Any], started: float) -> None:
        # Requests may reuse ids (jsonrpc), so tasks are keyed by a counter.
        self.next_task += 1
        tid = self.next_task
        self._start_task(tid, fut, functools.partial(self._finished, tid, key, handler, sig, started))

    def _finished(self, tid: int, key: Any, handler: Handler, sig: GoSignature, started: float,
                  fut: asyncio.Future[Any]) -> None:
        self._end_task(tid, fut)
        method = handler.name
        result, exc = self.server.dispatcher.outcome(method, None, fut)
        self.server.dispatcher.finished(handler, started, exc)
        if self.closing:
            return
        if isinstance(exc, asyncio.CancelledError):
            self._error(key, method, f"{method} was cancelled")
        elif exc is not None:
            self._error(key, method, _error_text(exc), exc)
        else:
            self._reply(key, method, sig, result)
        self._schedule_flush()
        self._calls_eased()

    def _reply(self, key: Any, method: str, sig: GoSignature, result: Any) -> None:
        if self.codec.is_notification(key):
            return                              # nothing goes back
        value, gotype = sig.reply(result)
        self.codec.reply(key, method, value, gotype)

    def _error(self, key: Any, method: str, message: str, raised: Optional[BaseException] = None) -> None:
        """Answer `key` with an error (a notification's is only logged); `raised`:
        the handler's exception, logged as fastrpc's own connections log it."""
        notify = self.codec.is_notification(key)
        if raised is not None:
            self.server.dispatcher.log_failure(method, raised, notify)
        elif notify:
            log.warning("notification %s failed: %s", method, message)
        if not notify:
            self.codec.reply_error(key, method, message)

    # output -----------------------------------------------------------------
    def _take_output(self) -> Optional[bytes]:
        return None if self.codec is None else self.codec.take()


def _error_text(exc: BaseException) -> str:
    # A Go error is its text; a bare exception's type is the best text it has.
    return str(exc) or type(exc).__name__


def debug_page(server: Host) -> str:
    """Go's /debug/rpc page: services, methods with Go's types, the calls of every protocol."""
    services: Dict[str, List[str]] = {}
    for name in server.dispatcher.methods:
        service, _, method = name.rpartition(".")
        services.setdefault(service, []).append(method)
    out = ["<html>\n<body>\n<title>Services</title>"]
    for service in sorted(services):
        out.append(f"<hr>\nService {html.escape(service)}\n<hr>\n<table>\n"
                   "<th align=center>Method</th><th align=center>Calls</th>")
        for method in services[service]:
            full = f"{service}.{method}"
            handler = server.dispatcher.lookup(full)
            sig = server.dispatcher.annotation(handler, "go", GoSignature)
            out.append(f"<tr>\n<td align=left font=fixed>{html.escape(method)}"
                       f"({html.escape(sig.arg_go)}, {html.escape(sig.reply_go)}) error</td>\n"
                       f"<td align=center>{handler.calls}</td>\n</tr>")
        out.append("</table>")
    out.append("</body>\n</html>\n")
    return "\n".join(out)
