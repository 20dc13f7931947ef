"""JSON-RPC 2.0 over HTTP: ``POST /rpc`` on a server's ``http://`` listener.

Owns answering one HTTP request's body: a JSON-RPC 2.0 request or batch,
run through the server's dispatcher (every handler mode, ``authorize`` with
the request's headers as metadata, the call counters) and answered as
JSON-RPC 2.0 responses, errors as error objects. curl, a browser or any
language can call a fastrpc service this way, without a client library.
"""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Dict, Optional, Tuple

from fastrpc._core.servercore import MODE_INLINE, Handler
from fastrpc.context import CURRENT, CallContext
from fastrpc.errors import DeadlineExceeded, error_message, error_type_name
from fastrpc.extensions import json_form

__all__ = ["answer", "PARSE_ERROR", "INVALID_REQUEST", "METHOD_NOT_FOUND", "INVALID_PARAMS",
           "INTERNAL_ERROR", "SERVER_ERROR"]

# JSON-RPC 2.0's error codes (https://www.jsonrpc.org/specification#error_object).
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
#: The handler raised, or the server refused the call: data says the type.
SERVER_ERROR = -32000


class _CallError(Exception):
    def __init__(self, code: int, message: str, data: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


def _error(rid: Any, code: int, message: str, data: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    error: Dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "error": error, "id": rid}


async def answer(server: Any, body: bytes, headers: Dict[str, str], peer: Optional[str] = None) -> Optional[bytes]:
    """The response body for a request `body`, or None when nothing is answered
    (notifications only)."""
    try:
        message = json.loads(body)
    except (ValueError, RecursionError) as exc:
        return _dump(_error(None, PARSE_ERROR, f"Parse error: {exc}"))
    if isinstance(message, list):
        if not message:
            return _dump(_error(None, INVALID_REQUEST, "Invalid Request: an empty batch"))
        replies = await asyncio.gather(*(_one(server, m, headers, peer) for m in message))
        answered = [r for r in replies if r is not None]
        return _dump(answered) if answered else None
    reply = await _one(server, message, headers, peer)
    return None if reply is None else _dump(reply)


def _dump(value: Any) -> bytes:
    return json.dumps(value, default=json_form, ensure_ascii=False).encode("utf-8")


async def _one(server: Any, request: Any, headers: Dict[str, str], peer: Optional[str]) -> Optional[Dict[str, Any]]:
    """One request object's response (None for a notification)."""
    if not isinstance(request, dict) or request.get("jsonrpc") != "2.0" \
            or not isinstance(request.get("method"), str):
        rid = request.get("id") if isinstance(request, dict) else None
        return _error(rid if isinstance(rid, (str, int)) else None, INVALID_REQUEST,
                      'Invalid Request: an object with "jsonrpc": "2.0" and a string "method"')
    notify = "id" not in request
    rid = request.get("id")
    try:
        result = await _run(server, request["method"], request.get("params"), headers, peer)
    except _CallError as exc:
        return None if notify else _error(rid, exc.code, exc.message, exc.data)
    if notify:
        return None
    try:
        json.dumps(result, default=json_form)
    except (TypeError, ValueError) as exc:
        return _error(rid, INTERNAL_ERROR, f"the result cannot be sent as JSON: {exc}",
                      {"type": "EncodeError"})
    return {"jsonrpc": "2.0", "result": result, "id": rid}


def _arguments(handler: Handler, params: Any) -> Tuple[Tuple[Any, ...], Optional[Dict[str, Any]]]:
    if params is None:
        args: Tuple[Any, ...] = ()
        kwargs: Optional[Dict[str, Any]] = None
    elif isinstance(params, list):
        args, kwargs = tuple(params), None
    elif isinstance(params, dict):
        args, kwargs = (), params
    else:
        raise _CallError(INVALID_PARAMS, "Invalid params: an array or an object")
    if handler.bind is None:                # no signature (a builtin): the call decides
        return args, kwargs
    try:
        return handler.bind(args, kwargs)
    except TypeError as exc:
        raise _CallError(INVALID_PARAMS, f"Invalid params: {handler.name}: {exc}") from None


async def _run(server: Any, method: str, params: Any, headers: Dict[str, str], peer: Optional[str]) -> Any:
    dispatcher = server.dispatcher
    handler = dispatcher.lookup(method)
    if handler is None:
        raise _CallError(METHOD_NOT_FOUND, f"Method not found: {dispatcher.not_found(method)}")
    handler.calls += 1
    started = time.monotonic()
    try:
        args, kwargs = _arguments(handler, params)
    except _CallError:
        handler.record(0.0, "InvalidArguments")
        raise
    if server.authorize is not None:
        try:
            server.authorize(method, headers)
        except Exception as exc:
            handler.record(0.0, "PermissionDenied")
            raise _CallError(SERVER_ERROR, str(exc) or type(exc).__name__, {"type": "PermissionDenied"}) from None
    try:
        if handler.mode == MODE_INLINE:
            token = CURRENT.set(CallContext(method, None, None, peer))
            try:
                result = handler.func(*args, **(kwargs or {}))
            finally:
                CURRENT.reset(token)
            if asyncio.iscoroutine(result):
                result = await result
        else:
            result = await dispatcher.start(server.loop, handler, args, None, None, kwargs, peer)
    except asyncio.CancelledError as exc:
        dispatcher.finished(handler, started, exc)
        raise
    except Exception as exc:
        dispatcher.finished(handler, started, exc)
        dispatcher.log_failure(method, exc, False)
        data = {"type": exc.type if isinstance(exc, DeadlineExceeded) else error_type_name(exc)}
        raise _CallError(SERVER_ERROR, error_message(exc) or type(exc).__name__, data) from None
    dispatcher.finished(handler, started, None)
    return result
