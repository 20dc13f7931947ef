"""Dialing: a connected, tuned blocking socket for an address string, and TLS on it."""
from __future__ import annotations

import socket
import ssl as _ssl
from typing import Optional

from fastrpc.errors import ConnectError, ConnectTimeoutError
from fastrpc.net.address import parse_address

__all__ = ["dial", "wrap_tls", "tls_hostname"]


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
