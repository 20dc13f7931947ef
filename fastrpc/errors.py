"""Every exception fastrpc raises. Compiled modules return error codes or raise
these classes; nothing else is raised to the caller for a transport or
protocol fault."""
from __future__ import annotations

import builtins
from typing import Any, Dict, Optional, Sequence, Tuple, Type

__all__ = [
    "RPCError",
    "RemoteError",
    "MethodNotFoundError",
    "InvalidArgumentsError",
    "UnauthenticatedError",
    "PermissionDeniedError",
    "AuthenticationError",
    "DeadlineExceeded",
    "TimeoutError",
    "RemoteTimeoutError",
    "ConnectionError",
    "ConnectError",
    "ConnectTimeoutError",
    "UnavailableError",
    "NoEndpointError",
    "FleetCallError",
    "StreamMismatchError",
    "StreamClosedError",
    "ConnectionLostError",
    "ConnectionClosedError",
    "ProtocolError",
    "FrameTooLargeError",
    "RemoteFrameTooLargeError",
    "CodecError",
    "EncodeError",
    "DecodeError",
    "DecodeLimitError",
    "DiscoveryError",
    "EtcdError",
    "RemoteEncodeError",
    "RemoteDecodeError",
    "RemoteTraceback",
    "register_error",
    "caller_error_type",
    "recorded_error_type",
    "UnsupportedError",
]


class RPCError(Exception):
    """Base class of every fastrpc error."""

    #: The endpoints a balanced call tried, when a balancer raised it.
    endpoints: Sequence[str] = ()


class RemoteError(RPCError):
    """The remote handler raised, or the server rejected the call.

    ``type`` is the remote exception's type name (``"ZeroDivisionError"``,
    ``"MethodNotFound"``...), ``message`` its text.
    """

    #: The server's traceback, when it sends them (Server(send_tracebacks=True)).
    remote_traceback: Optional[str] = None

    def __init__(self, type: str, message: str) -> None:
        super().__init__(f"{type}: {message}")
        self.type = type
        self.message = message

    def __reduce__(self) -> Tuple[Any, ...]:
        return (self.__class__, (self.type, self.message))


class MethodNotFoundError(RemoteError):
    """The server has no such service or method (remote type ``MethodNotFound``)."""


class InvalidArgumentsError(RemoteError):
    """The arguments do not fit the method's signature (remote type ``InvalidArguments``)."""


class UnauthenticatedError(RemoteError):
    """The server requires authentication this connection did not do (remote type ``Unauthenticated``)."""


class PermissionDeniedError(RemoteError):
    """The server's authorize hook (or an interceptor) refused the call (remote
    type ``PermissionDenied``). An interceptor refuses with
    ``raise PermissionDeniedError("PermissionDenied", "why")``."""


class StreamMismatchError(RemoteError):
    """A stream was opened on a unary method, or a streaming method was called
    as a unary one (remote type ``StreamMismatch``): use ``stream()`` for
    generator methods and methods taking an iterator, ``call()`` for the rest."""


# Remote type names that map to a more specific RemoteError subclass.
REMOTE_ERROR_CLASSES: Dict[str, Type[Any]] = {
    "MethodNotFound": MethodNotFoundError,
    "InvalidArguments": InvalidArgumentsError,
    "Unauthenticated": UnauthenticatedError,
    "PermissionDenied": PermissionDeniedError,
    "StreamMismatch": StreamMismatchError,
}



# Builtin exceptions a remote one of the same name is raised as (together
# with RemoteError): the common ones whose constructor takes a message.
# (OSError's family is left out: its constructor reads errno from the args.)
_BUILTIN_REMOTE = frozenset({
    "ArithmeticError", "AssertionError", "AttributeError", "BufferError", "EOFError",
    "FloatingPointError", "IndexError", "KeyError", "LookupError", "MemoryError",
    "NameError", "NotImplementedError", "OverflowError", "RecursionError", "RuntimeError",
    "TypeError", "UnicodeError", "ValueError", "ZeroDivisionError",
})
# Application exceptions registered with register_error(): wire name -> class,
# and the name each class travels under.
_REGISTERED: dict[Any, Any] = {}
_NAMES: dict[Any, Any] = {}
# Remote twins of exception classes, made once per class.
_TWINS: dict[Any, Any] = {}


def register_error(cls: type, name: str | None = None) -> type:
    """Map the exception class `cls` to the name it travels under (default
    its class name), on this side of the wire; usable as a class decorator.

    A server sends that name for a handler's exception of that class; a
    client raises an error reply of that name as a class that is both a
    RemoteError and `cls`, so ``except NotFound`` and ``except RemoteError``
    both match. Register on both sides. No class is ever looked up or built
    from a name the peer sends unless it was registered here (or is one of
    the common builtin exceptions)."""
    if not (isinstance(cls, type) and issubclass(cls, Exception)):
        raise TypeError("register_error takes an exception class")
    name = cls.__name__ if name is None else name
    if not name or not isinstance(name, str):
        raise ValueError("the name of a registered error is a non-empty str")
    if name in REMOTE_ERROR_CLASSES or name in _BUILTIN_REMOTE:
        raise ValueError(f"{name!r} is a name fastrpc already maps")
    _REGISTERED[name] = cls
    _NAMES[cls] = name
    return cls


def error_type_name(exc: BaseException) -> str:
    """The type name an exception travels under in an error reply."""
    cls = type(exc)
    name = _NAMES.get(cls)
    if name is None:
        for base in cls.__mro__[1:]:            # a subclass of a registered class
            name = _NAMES.get(base)
            if name is not None:
                break
    if name is None and isinstance(exc, RemoteError):
        return exc.type                         # relayed (or raised to refuse): the type it names
    return cls.__name__ if name is None else name


def recorded_error_type(error: BaseException) -> str:
    """The type name an exception is recorded under (statistics, spans): a
    remote error's type, else the exception's class name."""
    remote = getattr(error, "type", None)
    return remote if isinstance(remote, str) else type(error).__name__


def caller_error_type(error: BaseException | str) -> str:
    """The type name a caller counts a failed call under (client and
    balancer statistics, client spans): recorded_error_type() (a name is
    taken as it is), except that the server's ``DeadlineExceeded`` counts as
    ``TimeoutError``: the call's timeout travels with it, so the server may
    notice the deadline before the caller's own timer does; either way the
    call timed out, and which side noticed first must not change what it is
    counted as."""
    name = error if isinstance(error, str) else recorded_error_type(error)
    return "TimeoutError" if name == "DeadlineExceeded" else name


def error_message(exc: BaseException) -> str:
    """The text an exception travels with in an error reply: a RemoteError's
    own message (its type travels apart), else ``str(exc)``."""
    if isinstance(exc, RemoteError):
        return exc.message
    return str(exc)


class RemoteTraceback(RPCError):
    """The remote traceback of a RemoteError, when the server sends them
    (``Server(send_tracebacks=True)``); set as the error's ``__cause__``, so
    Python prints it above the local traceback."""

    def __str__(self) -> str:
        return "\n" + (self.args[0] if self.args else "")


def remote_error(type_name: str, message: str, traceback: str | None = None) -> RemoteError:
    """Build the RemoteError for an error reply: its specific subclass, or a
    class that is also the builtin or registered exception of that name."""
    cls: Optional[Type[Any]] = REMOTE_ERROR_CLASSES.get(type_name)
    if cls is None:
        base = _REGISTERED.get(type_name)
        if base is None and type_name in _BUILTIN_REMOTE:
            base = getattr(builtins, type_name)
        cls = RemoteError if base is None else _twin(base, type_name)
    error: RemoteError = cls(type_name, message)
    if traceback:
        error.remote_traceback = traceback
        error.__cause__ = RemoteTraceback(traceback)
    return error


def _twin(base: type, type_name: str) -> type:
    twin = _TWINS.get(base)
    if twin is None:
        twin = type(f"Remote{base.__name__}", (RemoteError, base), {
            "__doc__": f"A remote {type_name}: both a RemoteError and {base.__qualname__}.",
            "__module__": __name__,
            "__init__": RemoteError.__init__,
            "__str__": BaseException.__str__,
            "__reduce__": lambda self: (remote_error, (self.type, self.message)),
        })
        _TWINS[base] = twin
    return twin


class TimeoutError(RPCError, builtins.TimeoutError):
    """A call or connect did not finish within its timeout."""


class DeadlineExceeded(RemoteError, TimeoutError):
    """The server gave up on a call at the deadline its caller sent (remote
    type ``DeadlineExceeded``): it was not started, or it was cancelled."""

    def __init__(self, type: str = "DeadlineExceeded", message: str = "") -> None:
        RemoteError.__init__(self, type, message)


class RemoteTimeoutError(RemoteError, TimeoutError):
    """A handler failed with a timeout (remote type ``TimeoutError``), e.g. a
    call it made ran out of the deadline it inherited from its caller: a
    timeout downstream is a timeout for the caller too, whichever side
    noticed first, so ``except fastrpc.errors.TimeoutError`` (or the builtin
    ``TimeoutError``) matches it."""

    def __init__(self, type: str = "TimeoutError", message: str = "") -> None:
        RemoteError.__init__(self, type, message)


REMOTE_ERROR_CLASSES["DeadlineExceeded"] = DeadlineExceeded
REMOTE_ERROR_CLASSES["TimeoutError"] = RemoteTimeoutError


class ConnectionError(RPCError, builtins.ConnectionError):
    """The transport failed: connect refused, connection lost or closed."""


class ConnectError(ConnectionError):
    """No connection could be made (refused, unreachable, bad address): the call was not sent."""


class ConnectTimeoutError(TimeoutError, ConnectError):
    """Connecting did not finish within connect_timeout: the call was not sent."""


class UnavailableError(ConnectError):
    """The server refused the call without running it (remote type
    ``Unavailable``, e.g. too many connections): like a failed connect, it
    is safe to send elsewhere."""

    def __init__(self, type: str = "Unavailable", message: str = "") -> None:
        super().__init__(f"{type}: {message}")
        self.type = type
        self.message = message

    def __reduce__(self) -> Tuple[Any, ...]:
        return (self.__class__, (self.type, self.message))


REMOTE_ERROR_CLASSES["Unavailable"] = UnavailableError


class AuthenticationError(ConnectError):
    """The shared-secret handshake failed (wrong secret, or a peer that does
    not authenticate): the connection was closed before any call was sent."""


class NoEndpointError(ConnectionError):
    """A balancer has no endpoint left to try for a call."""


class FleetCallError(RPCError):
    """A call made on every endpoint (Balancer.broadcast, Balancer.fork) failed.

    broadcast raises it when any endpoint failed, fork when none succeeded.
    ``results`` maps each endpoint's address to its result or exception,
    ``errors`` holds the failed ones, and ``endpoints`` names them.
    """

    def __init__(self, message: str, results: Dict[str, Any]) -> None:
        super().__init__(message)
        self.results = results
        self.errors = {address: r for address, r in results.items() if isinstance(r, BaseException)}
        self.endpoints = tuple(self.errors)

    def __reduce__(self) -> Tuple[Any, ...]:
        return (self.__class__, (self.args[0], self.results))


class ConnectionLostError(ConnectionError):
    """The connection broke while the call was pending; the call may or may not have run."""


class ConnectionClosedError(ConnectionError):
    """The client (or the server, via GOAWAY) closed the connection before the call was sent."""


class StreamClosedError(RPCError):
    """An item was sent on a stream that no longer takes any: the caller
    called done_writing(), or the stream ended (its result or error is the
    stream's own)."""


class UnsupportedError(RPCError, TypeError):
    """The peer does not support what the call needs (keyword arguments sent
    to a server that predates them): nothing was sent."""


class ProtocolError(RPCError):
    """The peer broke the wire protocol; the connection is closed."""


class FrameTooLargeError(ProtocolError):
    """A frame is above a maximum frame size. A call whose request is above
    the server's (it announces it as the connection starts) or whose reply
    is above the client's fails alone with it; the connection goes on."""


class RemoteFrameTooLargeError(RemoteError, FrameTooLargeError):
    """The server refused a request above its max_frame_size (remote type
    ``FrameTooLarge``): sent before the client knew the server's limit."""


REMOTE_ERROR_CLASSES["FrameTooLarge"] = RemoteFrameTooLargeError


class CodecError(RPCError, ValueError):
    """Base class of serialization errors."""


class EncodeError(CodecError, TypeError):
    """A value cannot be encoded (unsupported type, int out of 64-bit range...)."""


class DecodeError(CodecError):
    """The payload is not valid: truncated, malformed, or trailing bytes."""


class DecodeLimitError(DecodeError):
    """The payload exceeds a decode limit (depth, container length, bytes)."""


class RemoteEncodeError(RemoteError, EncodeError):
    """The server could not encode the result (remote type ``EncodeError``)."""


class RemoteDecodeError(RemoteError, DecodeError):
    """The server could not decode the arguments (remote type ``DecodeError``)."""


REMOTE_ERROR_CLASSES["EncodeError"] = RemoteEncodeError
REMOTE_ERROR_CLASSES["DecodeError"] = RemoteDecodeError


class DiscoveryError(RPCError):
    """A service registry could not be read or written (fastrpc.discovery)."""


class EtcdError(DiscoveryError):
    """etcd refused a request, or no etcd endpoint could be reached."""
