"""Dialing: opening a connected, tuned socket for an address string."""
from __future__ import annotations

import socket
from typing import Optional

from fastrpc import _codec, _wire
from fastrpc._calls import CallTable
from fastrpc.address import parse_address
from fastrpc.errors import ConnectError, ConnectTimeoutError

__all__ = ["ClientSettings", "dial"]


class ClientSettings:
    """What Client and AsyncClient are configured with: address, timeouts, limits."""

    def __init__(self, address: str, *, timeout: Optional[float] = None,
                 connect_timeout: float = 10.0,
                 max_frame_size: int = _wire.DEFAULT_MAX_FRAME_SIZE,
                 max_depth: int = _codec.DEFAULT_MAX_DEPTH,
                 max_len: int = _codec.DEFAULT_MAX_LEN,
                 max_bytes: int = _codec.DEFAULT_MAX_BYTES,
                 send_deadline: bool = True) -> None:
        parse_address(address)  # fail early on a malformed address
        self.address = address
        self.timeout = timeout                  # default per-call timeout (None: wait)
        self.connect_timeout = connect_timeout
        self.max_frame_size = max_frame_size    # limits applied to replies
        self.max_depth = max_depth
        self.max_len = max_len
        self.max_bytes = max_bytes
        self.send_deadline = send_deadline      # send each call's timeout to the server

    def new_call_table(self) -> CallTable:
        """A call table with this client's limits."""
        return CallTable(max_frame_size=self.max_frame_size, max_depth=self.max_depth,
                         max_len=self.max_len, max_bytes=self.max_bytes)

    def deadline_ms(self, timeout: Optional[float]) -> Optional[int]:
        """The deadline field for a call with `timeout`, or None to send none."""
        if timeout is None or not self.send_deadline:
            return None
        return max(0, int(timeout * 1000))


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
