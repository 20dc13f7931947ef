"""Every exception fastrpc raises. Compiled modules return error codes or raise
these classes; nothing else is raised to the caller for a transport or
protocol fault."""
from __future__ import annotations

import builtins

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
    "ConnectionError",
    "ConnectError",
    "ConnectTimeoutError",
    "UnavailableError",
    "NoEndpointError",
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
]


class RPCError(Exception):
    """Base class of every fastrpc error."""


class RemoteError(RPCError):
    """The remote handler raised, or the server rejected the call.

    ``type`` is the remote exception's type name (``"ZeroDivisionError"``,
    ``"MethodNotFound"``...), ``message`` its text.
    """

    def __init__(self, type: str, message: str) -> None:
        super().__init__(f"{type}: {message}")
        self.type = type
        self.message = message

    def __reduce__(self):
        return (self.__class__, (self.type, self.message))


class MethodNotFoundError(RemoteError):
    """The server has no such service or method (remote type ``MethodNotFound``)."""


class InvalidArgumentsError(RemoteError):
    """The arguments do not fit the method's signature (remote type ``InvalidArguments``)."""


class UnauthenticatedError(RemoteError):
    """The server requires authentication this connection did not do (remote type ``Unauthenticated``)."""


class PermissionDeniedError(RemoteError):
    """The server's authorize hook refused the call (remote type ``PermissionDenied``)."""


# Remote type names that map to a more specific RemoteError subclass.
REMOTE_ERROR_CLASSES = {
    "MethodNotFound": MethodNotFoundError,
    "InvalidArguments": InvalidArgumentsError,
    "Unauthenticated": UnauthenticatedError,
    "PermissionDenied": PermissionDeniedError,
}



def remote_error(type_name: str, message: str) -> RemoteError:
    """Build the RemoteError (or its specific subclass) for an error reply."""
    return REMOTE_ERROR_CLASSES.get(type_name, RemoteError)(type_name, message)


class TimeoutError(RPCError, builtins.TimeoutError):
    """A call or connect did not finish within its timeout."""


class DeadlineExceeded(RemoteError, TimeoutError):
    """The server gave up on a call at the deadline its caller sent (remote
    type ``DeadlineExceeded``): it was not started, or it was cancelled."""

    def __init__(self, type: str = "DeadlineExceeded", message: str = "") -> None:
        RemoteError.__init__(self, type, message)


REMOTE_ERROR_CLASSES["DeadlineExceeded"] = DeadlineExceeded


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

    def __reduce__(self):
        return (self.__class__, (self.type, self.message))


REMOTE_ERROR_CLASSES["Unavailable"] = UnavailableError


class AuthenticationError(ConnectError):
    """The shared-secret handshake failed (wrong secret, or a peer that does
    not authenticate): the connection was closed before any call was sent."""


class NoEndpointError(ConnectionError):
    """A balancer has no endpoint left to try for a call."""


class ConnectionLostError(ConnectionError):
    """The connection broke while the call was pending; the call may or may not have run."""


class ConnectionClosedError(ConnectionError):
    """The client (or the server, via GOAWAY) closed the connection before the call was sent."""


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


class DiscoveryError(RPCError):
    """A service registry could not be read or written (fastrpc.discovery)."""


class EtcdError(DiscoveryError):
    """etcd refused a request, or no etcd endpoint could be reached."""
