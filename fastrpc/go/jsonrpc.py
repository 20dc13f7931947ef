"""Go's net/rpc/jsonrpc codec: JSON-RPC 1.0 objects streamed back to back.

Requests are ``{"method": "Arith.Sum", "params": [arg], "id": N}``, replies
``{"id": N, "result": value, "error": null}`` or ``{"id": N, "result": null,
"error": "text"}``. Objects follow each other on the connection with or
without whitespace between them, so JSONStream finds where each ends.

Go's client treats a reply with both result and error null as a broken
connection, so a handler's None is never sent as null: it becomes the zero
value of the handler's declared return type, or ``{}`` without one.
Go encodes []byte as base64 text; Python bytes are sent the same way.
"""
from __future__ import annotations

import base64
import dataclasses
import json
import re
from typing import Any, List, Optional, Tuple

from fastrpc.errors import EncodeError, FrameTooLargeError, ProtocolError
from fastrpc.go._gob import K_BYTES, K_MAP, K_SLICE
from fastrpc.go.types import go_type

__all__ = ["JSONStream", "JSONServerCodec", "JSONClientCodec", "dumps"]

_STRUCTURAL = re.compile(rb'[{}\[\]"]')
_IN_STRING = re.compile(rb'["\\]')
_SPACE = b" \t\r\n"


# Go kinds whose zero value is nil (a nil slice, map or []byte).
_NIL_WHEN_EMPTY = frozenset({K_SLICE, K_MAP, K_BYTES})


def _parse_int(text: str) -> Any:
    """JSON integers as ints, except "-0": only a float writes it (Go's
    encoding/json writes float64 -0 so), and an int would lose its sign."""
    return -0.0 if text == "-0" else int(text)


class JSONStream:
    """Splits a byte stream into top-level JSON objects, as they complete."""

    def __init__(self, max_message: int) -> None:
        self.buf = bytearray()
        self.max_message = max_message
        self.start = -1         # where the object being scanned begins, -1: between objects
        self.pos = 0            # where scanning resumes
        self.depth = 0
        self.in_string = False

    def feed(self, data: Any) -> List[Any]:
        """Add bytes; return the objects now complete (ProtocolError if the stream is not JSON)."""
        buf = self.buf
        buf += data
        out = []
        n = len(buf)
        pos = self.pos
        while pos < n:
            if self.start < 0:
                while pos < n and buf[pos] in _SPACE:
                    pos += 1
                if pos == n:
                    break
                if buf[pos] != 0x7B:                # '{'
                    raise ProtocolError(f"jsonrpc: expected a JSON object, got {bytes(buf[pos:pos + 20])!r}")
                self.start, self.depth, pos = pos, 1, pos + 1
            end = self._scan(buf, pos, n)
            if end < 0:
                pos = n if end == -1 else n - 1     # -2: a backslash ends the buffer
                break
            if end - self.start > self.max_message:
                raise FrameTooLargeError(f"jsonrpc: message exceeds max_message={self.max_message} bytes")
            try:
                out.append(json.loads(bytes(buf[self.start:end]), parse_int=_parse_int))
            except ValueError as exc:
                raise ProtocolError(f"jsonrpc: malformed JSON: {exc}") from None
            self.start, pos = -1, end
        if self.start >= 0:
            if n - self.start > self.max_message:
                raise FrameTooLargeError(f"jsonrpc: message exceeds max_message={self.max_message} bytes")
            del buf[:self.start]
            pos -= self.start
            self.start = 0
        else:
            del buf[:pos]
            pos = 0
        self.pos = pos
        return out

    def _scan(self, buf: Any, pos: int, n: int) -> int:
        """The end of the current object, or -1 (need more), -2 (need more, escape pending)."""
        while True:
            if self.in_string:
                m = _IN_STRING.search(buf, pos)
                if m is None:
                    return -1
                pos = m.end()
                if buf[pos - 1] == 0x5C:            # backslash: skip the escaped byte
                    if pos >= n:
                        return -2
                    pos += 1
                    continue
                self.in_string = False
                continue
            m = _STRUCTURAL.search(buf, pos)
            if m is None:
                return -1
            c = buf[m.start()]
            pos = m.end()
            if c == 0x22:                           # '"'
                self.in_string = True
            elif c == 0x7B or c == 0x5B:
                self.depth += 1
            else:
                self.depth -= 1
                if self.depth == 0:
                    return pos


def _default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # Go field names, as gob uses them. An empty slice, map or []byte
        # field goes as null, so Go reads nil, as it does over gob (which
        # leaves zero fields out): the same value over both codecs.
        out = {}
        for name, attr, field_type in go_type(type(value)).fields:
            item = getattr(value, attr)
            if field_type.kind in _NIL_WHEN_EMPTY and item is not None and len(item) == 0:
                item = None
            out[name] = item
        return out
    if isinstance(value, (set, frozenset)):
        return list(value)
    if hasattr(value, "tolist"):                # numpy arrays and scalars
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(obj: Any) -> bytes:
    """One JSON-RPC message, newline-terminated as Go's encoder writes it."""
    try:
        return json.dumps(obj, default=_default, allow_nan=False, ensure_ascii=False,
                          separators=(",", ":")).encode("utf-8", "surrogateescape") + b"\n"
    except (TypeError, ValueError, RecursionError) as exc:
        raise EncodeError(f"cannot encode as JSON: {exc}") from None


class JSONServerCodec:
    """The server side of one jsonrpc connection.

    feed() returns (id, method, params, bad) per request: params is the
    tuple of positional arguments; bad an error text for a request that is
    not well-formed. A request whose id is null is a notification: it runs,
    and nothing is sent back (is_notification()).
    """

    def __init__(self, max_message: int, max_depth: int) -> None:
        self.stream = JSONStream(max_message)
        self.out = bytearray()

    def feed(self, data: Any) -> List[Tuple[Any, str, tuple[Any, ...], Optional[str]]]:
        calls: List[Tuple[Any, str, tuple[Any, ...], Optional[str]]] = []
        for msg in self.stream.feed(data):
            if not isinstance(msg, dict):
                raise ProtocolError("jsonrpc: a request must be a JSON object")
            method, params, rid = msg.get("method"), msg.get("params"), msg.get("id")
            if not isinstance(method, str):
                calls.append((rid, "", (), "jsonrpc: request has no method name"))
            elif params is None:
                calls.append((rid, method, (), "jsonrpc: request body missing params"))
            elif not isinstance(params, list):
                calls.append((rid, method, (), "jsonrpc: params must be an array"))
            else:
                calls.append((rid, method, tuple(params), None))
        return calls

    @staticmethod
    def is_notification(rid: Any) -> bool:
        """JSON-RPC 1.0: a request with a null id expects no reply."""
        return rid is None

    def reply(self, rid: Any, method: str, result: Any, result_type: Any = None) -> None:
        """Queue a reply; a result that cannot be encoded becomes an error reply."""
        if result is None:
            result = {}                             # never null: see the module docstring
        try:
            self.out += dumps({"id": rid, "result": result, "error": None})
        except EncodeError as exc:
            self.reply_error(rid, method, f"rpc: cannot encode the reply: {exc}")

    def reply_error(self, rid: Any, method: str, message: str) -> None:
        self.out += dumps({"id": rid, "result": None, "error": message or "unspecified error"})

    def take(self) -> bytes:
        data = bytes(self.out)
        self.out = bytearray()
        return data


class JSONClientCodec:
    """The client side of one jsonrpc connection (calls Go jsonrpc servers)."""

    def __init__(self, max_message: int, max_depth: int) -> None:
        self.stream = JSONStream(max_message)
        self.out = bytearray()

    def request(self, seq: int, method: str, args: tuple[Any, ...], arg_type: Any = None) -> None:
        """Queue a call; raises EncodeError (and queues nothing) if it cannot be sent."""
        self.out += dumps({"method": method, "params": list(args), "id": seq})

    def notify(self, method: str, args: tuple[Any, ...]) -> None:
        """Queue a one-way call: JSON-RPC 1.0's request with a null id."""
        self.out += dumps({"method": method, "params": list(args), "id": None})

    def take(self) -> bytes:
        data = bytes(self.out)
        self.out = bytearray()
        return data

    def feed(self, data: Any) -> List[Tuple[Any, Optional[str], Any]]:
        replies = []
        for msg in self.stream.feed(data):
            if not isinstance(msg, dict) or "id" not in msg:
                raise ProtocolError(f"jsonrpc: malformed reply {msg!r:.200}")
            error = msg.get("error")
            if error is not None and not isinstance(error, str):
                error = json.dumps(error)           # other JSON-RPC servers send objects
            replies.append((msg["id"], error or None, None if error else msg.get("result")))
        return replies
