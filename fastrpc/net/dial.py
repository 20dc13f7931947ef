"""Dialing: a connected, tuned blocking socket for an address string, and TLS on it."""
from __future__ import annotations

import socket
import ssl as _ssl
from typing import Optional

from fastrpc.errors import ConnectError, ConnectTimeoutError
from fastrpc.net.address import parse_address

__all__ = ["dial", "wrap_tls", "tls_hostname", "http_connect", "CONNECT_REQUEST", "FASTRPC_CONNECT_REQUEST",
           "connect_request", "connected_reply"]


def tls_hostname(address: str, server_hostname: Optional[str]) -> Optional[str]:
    """The name to check the server's certificate against."""
    if server_hostname is not None:
        return server_hostname
    addr = parse_address(address)
    return addr.host if addr.scheme == "tcp" else None


def wrap_tls(sock: socket.socket, context: _ssl.SSLContext, address: str, server_hostname: Optional[str],
             timeout: Optional[float]) -> _ssl.SSLSocket:
    """Run the TLS handshake on a connected socket; raise ConnectError with the reason."""
    sock.settimeout(timeout)
    try:
        tls = context.wrap_socket(sock, server_hostname=tls_hostname(address, server_hostname))
    except (_ssl.SSLError, _ssl.CertificateError, OSError) as exc:
        raise ConnectError(f"TLS handshake with {address} failed: {exc}") from exc
    tls.settimeout(None)
    return tls


def dial(address: str, timeout: float | None) -> socket.socket:
    """Connect a blocking socket to `address`; raise ConnectError or ConnectTimeoutError."""
    addr = parse_address(address)
    try:
        if addr.scheme == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(addr.path)
            except BaseException:
                sock.close()
                raise
        else:
            sock = socket.create_connection((addr.host, addr.port), timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except socket.timeout:
        raise ConnectTimeoutError(f"connecting to {address} timed out after {timeout}s") from None
    except OSError as exc:
        raise ConnectError(f"cannot connect to {address}: {exc.strerror or exc}") from exc
    sock.settimeout(None)
    return sock


#: Go's rpc.DialHTTP asks for its RPC stream with this request...
CONNECT_REQUEST = b"CONNECT /_goRPC_ HTTP/1.0\n\n"
#: ...and a Go server grants it with this status.
CONNECTED_STATUS = "200 Connected to Go RPC"
#: fastrpc's own protocol through HTTP CONNECT (an http:// listener of a fastrpc server).
FASTRPC_CONNECT_REQUEST = b"CONNECT /_fastrpc_ HTTP/1.0\n\n"
FASTRPC_CONNECTED_STATUS = "200 Connected to fastrpc"


def connect_request(codec: str) -> bytes:
    """The HTTP CONNECT that opens a stream of `codec` ("fastrpc" or Go's gob)."""
    return FASTRPC_CONNECT_REQUEST if codec == "fastrpc" else CONNECT_REQUEST
MAX_HTTP_REPLY = 8192


def connected_reply(head: bytes, address: str, codec: str = "gob") -> None:
    """Check a server's reply to the CONNECT of `codec` (its header, blank line included)."""
    status_line = head.split(b"\n", 1)[0].rstrip(b"\r").decode("latin-1")
    status = status_line.split(" ", 1)[1] if " " in status_line else ""
    if status != (FASTRPC_CONNECTED_STATUS if codec == "fastrpc" else CONNECTED_STATUS):
        raise ConnectError(f"unexpected HTTP response from {address}: {status_line!r}")


def http_connect(sock: socket.socket, address: str, timeout: Optional[float], codec: str = "gob") -> None:
    """The HTTP CONNECT handshake on a connected socket: Go's rpc.DialHTTP
    (CONNECT /_goRPC_, then "200 Connected to Go RPC"), or fastrpc's own
    (/_fastrpc_); what follows is the RPC stream."""
    sock.settimeout(timeout)
    sock.sendall(connect_request(codec))
    head = b""
    try:
        while b"\n\n" not in head and b"\r\n\r\n" not in head:
            chunk = sock.recv(1)            # byte by byte: what follows belongs to the codec
            if not chunk:
                raise ConnectError(f"{address} closed the connection during HTTP CONNECT")
            head += chunk
            if len(head) > MAX_HTTP_REPLY:
                raise ConnectError(f"{address}: HTTP CONNECT reply too long")
    except socket.timeout:
        raise ConnectError(f"{address}: no reply to HTTP CONNECT") from None
    sock.settimeout(None)
    connected_reply(head, address, codec)
