"""Address strings: "tcp://host:port", "host:port", "unix:///path"."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Address", "parse_address", "tcp_url"]


def tcp_url(host: str, port: int, scheme: str = "tcp") -> str:
    """"tcp://host:port" (or another scheme), an IPv6 host in brackets."""
    return f"{scheme}://{'[' + host + ']' if ':' in host else host}:{port}"


@dataclass(frozen=True)
class Address:
    """A parsed listen or dial address."""

    scheme: str                  # "tcp" or "unix"
    host: str = ""               # tcp only
    port: int = 0                # tcp only
    path: str = ""               # unix only

    def __str__(self) -> str:
        if self.scheme == "unix":
            return f"unix://{self.path}"
        return tcp_url(self.host, self.port)


def parse_address(address: str) -> Address:
    """Parse an address string; raise ValueError with the reason when malformed."""
    if not isinstance(address, str) or not address:
        raise ValueError(f"address must be a non-empty string, got {address!r}")
    if address.startswith("unix://"):
        path = address[len("unix://"):]
        if not path:
            raise ValueError(f"unix address has no path: {address!r}")
        return Address("unix", path=path)
    rest = address
    if "://" in address:
        scheme, rest = address.split("://", 1)
        if scheme not in ("tcp", "http"):    # http://: TCP to an HTTP listener (CONNECT first)
            raise ValueError(f"unknown address scheme {scheme!r} in {address!r} (tcp://, http:// or unix://)")
    if rest.startswith("["):
        host, sep, port_text = rest[1:].partition("]:")
        if not sep:
            raise ValueError(f"malformed IPv6 address {address!r}, expected [host]:port")
    else:
        host, sep, port_text = rest.rpartition(":")
        if not sep:
            raise ValueError(f"address {address!r} has no port (host:port)")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"address {address!r} has a non-numeric port") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} out of range in {address!r}")
    return Address("tcp", host=host or "0.0.0.0", port=port)
