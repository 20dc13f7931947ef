"""Dialing: opening a connected, tuned socket for an address string."""
from __future__ import annotations

import socket

from fastrpc.address import parse_address
from fastrpc.errors import ConnectionError, TimeoutError

__all__ = ["dial"]


def dial(address: str, timeout: float | None) -> socket.socket:
    """Connect a blocking socket to `address`; raise fastrpc ConnectionError or TimeoutError."""
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
        raise TimeoutError(f"connecting to {address} timed out after {timeout}s") from None
    except OSError as exc:
        raise ConnectionError(f"cannot connect to {address}: {exc.strerror or exc}") from exc
    sock.settimeout(None)
    return sock
