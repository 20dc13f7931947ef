"""Go net/rpc's default codec: gob-encoded request/response headers and bodies.

Every call is two gob values on the connection's one gob stream: a header
(rpc.Request{ServiceMethod, Seq} or rpc.Response{ServiceMethod, Seq,
Error}) and a body (the argument, or the reply; an empty struct when the
call failed). Type definitions are sent once per connection in each
direction, so a codec object lives as long as its connection.
"""
from __future__ import annotations

from typing import Any, List, Optional, Tuple

from fastrpc.go._gob import K_STRUCT, STRING, UINT, GobDecoder, GobEncoder, GobError, GoType
from fastrpc.errors import EncodeError, ProtocolError
from fastrpc.go.types import EMPTY_STRUCT, argument_go_type, infer_go_type

__all__ = ["GobServerCodec", "GobClientCodec", "REQUEST", "RESPONSE"]

REQUEST = GoType(K_STRUCT, "Request", fields=[
    ("ServiceMethod", "ServiceMethod", STRING), ("Seq", "Seq", UINT)])
RESPONSE = GoType(K_STRUCT, "Response", fields=[
    ("ServiceMethod", "ServiceMethod", STRING), ("Seq", "Seq", UINT), ("Error", "Error", STRING)])


def _header(value: Any, what: str) -> dict[Any, Any]:
    if isinstance(value, GobError) or not isinstance(value, dict) \
            or not isinstance(value.get("ServiceMethod"), str) or not isinstance(value.get("Seq"), int):
        raise ProtocolError(f"gob: expected an rpc.{what} header, got {value!r:.200}")
    return value


class GobServerCodec:
    """The server side of one gob connection.

    feed() returns the calls completed so far as (seq, method, args, bad):
    args is a 1-tuple holding the decoded argument; bad is an error text
    when the argument could not be decoded (the call is answered with it).
    """

    def __init__(self, max_message: int, max_depth: int) -> None:
        self.decoder = GobDecoder(max_message, max_depth)
        self.encoder = GobEncoder(max_depth)
        self.header: Optional[dict[Any, Any]] = None      # a request header waiting for its body

    def feed(self, data: Any) -> List[Tuple[int, str, tuple[Any, ...], Optional[str]]]:
        calls: List[Tuple[int, str, tuple[Any, ...], Optional[str]]] = []
        for value in self.decoder.feed(data):
            if self.header is None:
                self.header = _header(value, "Request")
                continue
            header, self.header = self.header, None
            if isinstance(value, GobError):
                calls.append((header["Seq"], header["ServiceMethod"], (), f"rpc: decoding argument: {value}"))
            else:
                calls.append((header["Seq"], header["ServiceMethod"], (value,), None))
        return calls

    @staticmethod
    def is_notification(seq: int) -> bool:
        """net/rpc has no one-way calls: every request is answered."""
        return False

    def reply(self, seq: int, method: str, result: Any, result_type: Optional[GoType]) -> None:
        """Queue a successful reply; a result that cannot be encoded becomes an error reply."""
        state = self.encoder.checkpoint()
        try:
            self.encoder.encode({"ServiceMethod": method, "Seq": seq}, RESPONSE)
            self.encoder.encode(result, result_type if result_type is not None else infer_go_type(result))
        except EncodeError as exc:
            self.encoder.restore(state)
            self.reply_error(seq, method, f"rpc: cannot encode the reply: {exc}")

    def reply_error(self, seq: int, method: str, message: str) -> None:
        """Queue an error reply (Go's client reads Error, then skips an empty body)."""
        self.encoder.encode({"ServiceMethod": method, "Seq": seq, "Error": message or "unspecified error"},
                            RESPONSE)
        self.encoder.encode({}, EMPTY_STRUCT)

    def take(self) -> bytes:
        """The replies queued so far, ready to write."""
        out: bytes = self.encoder.take()
        return out


class GobClientCodec:
    """The client side of one gob connection (calls stock Go net/rpc servers)."""

    def __init__(self, max_message: int, max_depth: int) -> None:
        self.decoder = GobDecoder(max_message, max_depth)
        self.encoder = GobEncoder(max_depth)
        self.header: Optional[dict[Any, Any]] = None

    def request(self, seq: int, method: str, args: tuple[Any, ...], arg_type: Optional[GoType]) -> None:
        """Queue a call; raises EncodeError (and queues nothing) if the argument cannot be sent."""
        if len(args) != 1:
            raise TypeError(f"a Go net/rpc method takes exactly one argument, got {len(args)} "
                            "(send a dataclass or dict for several values)")
        state = self.encoder.checkpoint()
        try:
            self.encoder.encode({"ServiceMethod": method, "Seq": seq}, REQUEST)
            self.encoder.encode(args[0], arg_type if arg_type is not None else argument_go_type(args[0]))
        except BaseException:
            self.encoder.restore(state)
            raise

    def take(self) -> bytes:
        out: bytes = self.encoder.take()
        return out

    def feed(self, data: Any) -> List[Tuple[int, Optional[str], Any]]:
        """Replies completed so far as (seq, error, decoded body).

        error is None, the server's error text, or a GobError when the reply
        could not be decoded here.
        """
        replies = []
        for value in self.decoder.feed(data):
            if self.header is None:
                self.header = _header(value, "Response")
                continue
            header, self.header = self.header, None
            error = header.get("Error") or None
            if error is None and isinstance(value, GobError):
                error = value                   # decoding failed here, not at the server
            replies.append((header["Seq"], error, None if error else value))
        return replies
