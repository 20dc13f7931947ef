"""The shared-secret handshake: both ends prove they hold the secret (HMAC-SHA256).

It runs right after the connection (and its TLS handshake, if any) opens,
before any frame, so no handler can run for a peer that has not proven
itself. Three messages, each side contributing a fresh 32-byte nonce:

    client -> server   MAGIC (8 bytes) + client nonce (32)
    server -> client   0x01 + server nonce (32) + HMAC(secret, "fastrpc-server" + cn + sn)
    client -> server   HMAC(secret, "fastrpc-client" + cn + sn)
    server -> client   0x01 (accepted)

Instead of either 0x01, the server may send 0x00 + u16 length + a reason
(wrong secret; "Unavailable: ..." when it takes no more connections) and
close.
The secret never travels; digests are compared in constant time
(hmac.compare_digest); a replayed transcript fails because the other side's
nonce is new each time. The handshake authenticates, it does not encrypt:
use TLS as well on untrusted networks.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import socket
import struct
from typing import Callable, Optional, Tuple, Union

from fastrpc.errors import AuthenticationError, RPCError, UnavailableError

__all__ = ["MAGIC", "ServerHandshake", "client_handshake", "ClientHandshake", "check_secret"]

MAGIC = b"FRPCAUT1"
NONCE = 32
DIGEST = 32
ACCEPTED = b"\x01"
REJECTED = b"\x00"


def check_secret(secret: Union[bytes, str, None]) -> Optional[bytes]:
    """Validate an auth_secret setting (None: no authentication)."""
    if secret is None:
        return None
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    if not isinstance(secret, (bytes, bytearray)) or len(secret) < 16:
        raise ValueError("auth_secret must be bytes (or str) of at least 16 bytes")
    return bytes(secret)


def _mac(secret: bytes, role: bytes, client_nonce: bytes, server_nonce: bytes) -> bytes:
    return hmac.new(secret, role + client_nonce + server_nonce, hashlib.sha256).digest()


def rejection(reason: str) -> bytes:
    raw = reason.encode("utf-8")[:1000]
    return REJECTED + struct.pack(">H", len(raw)) + raw


class ServerHandshake:
    """The server's side, fed bytes as they arrive.

    feed() returns (reply bytes to write, state): state is "more" (wait for
    more bytes), "done" (authenticated; self.rest holds any bytes past the
    handshake), "fastrpc" (the peer sent fastrpc frames without
    authenticating: answer them Unauthenticated) or "failed" (self.reason).
    """

    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        self.buf = b""
        self.client_nonce: Optional[bytes] = None
        self.server_nonce = os.urandom(NONCE)
        self.rest = b""
        self.reason = ""

    def feed(self, data: bytes) -> Tuple[bytes, str]:
        self.buf += data
        reply = b""
        if self.client_nonce is None:
            if len(self.buf) < len(MAGIC):
                return b"", "more"
            if not self.buf.startswith(MAGIC):
                return b"", "fastrpc"
            if len(self.buf) < len(MAGIC) + NONCE:
                return b"", "more"
            self.client_nonce = self.buf[len(MAGIC):len(MAGIC) + NONCE]
            self.buf = self.buf[len(MAGIC) + NONCE:]
            reply = ACCEPTED + self.server_nonce + _mac(self.secret, b"fastrpc-server", self.client_nonce,
                                                        self.server_nonce)
        if len(self.buf) < DIGEST:
            return reply, "more"
        proof, self.rest = self.buf[:DIGEST], self.buf[DIGEST:]
        if hmac.compare_digest(proof, _mac(self.secret, b"fastrpc-client", self.client_nonce, self.server_nonce)):
            return reply + ACCEPTED, "done"
        self.reason = "authentication failed: wrong secret"
        return reply + rejection(self.reason), "failed"


class ClientHandshake:
    """The client's side, as a sequence of steps any transport can drive."""

    def __init__(self, secret: bytes, address: str) -> None:
        self.secret = secret
        self.address = address
        self.client_nonce = os.urandom(NONCE)

    def hello(self) -> bytes:
        return MAGIC + self.client_nonce

    def answer(self, challenge: bytes) -> bytes:
        """Check the server's proof (NONCE + DIGEST bytes, after its status byte); return ours."""
        server_nonce, proof = challenge[:NONCE], challenge[NONCE:NONCE + DIGEST]
        if not hmac.compare_digest(proof, _mac(self.secret, b"fastrpc-server", self.client_nonce, server_nonce)):
            raise AuthenticationError(f"{self.address} does not hold our shared secret "
                                      "(a wrong secret on one side, or not the expected server)")
        return _mac(self.secret, b"fastrpc-client", self.client_nonce, server_nonce)

    def verdict(self, first: bytes, read_more: Callable[[int], bytes]) -> None:
        """Raise unless the status byte `first` says go on (read_more(n) reads a reason)."""
        if first == ACCEPTED:
            return
        if first == REJECTED:
            size = struct.unpack(">H", read_more(2))[0]
            reason = read_more(size).decode("utf-8", "replace")
            if reason.startswith("Unavailable: "):
                raise UnavailableError("Unavailable", reason[len("Unavailable: "):])
            raise AuthenticationError(f"{self.address} refused authentication: {reason}")
        raise AuthenticationError(f"{self.address} answered the handshake with {first!r} "
                                  "(does it expect auth_secret?)")


def client_handshake(sock: socket.socket, secret: bytes, address: str, timeout: Optional[float]) -> None:
    """Run the client's side on a connected blocking socket (or SSL socket)."""
    hs = ClientHandshake(secret, address)
    sock.settimeout(timeout)

    def read(n: int) -> bytes:
        data = b""
        while len(data) < n:
            try:
                chunk = sock.recv(n - len(data))
            except socket.timeout:
                raise AuthenticationError(f"{address} did not complete the authentication handshake "
                                          f"within {timeout}s") from None
            if not chunk:
                raise AuthenticationError(f"{address} closed the connection during the authentication "
                                          "handshake (does it expect auth_secret?)")
            data += chunk
        return data

    try:
        sock.sendall(hs.hello())
        hs.verdict(read(1), read)
        sock.sendall(hs.answer(read(NONCE + DIGEST)))
        hs.verdict(read(1), read)
    except RPCError:                    # ours (they are OSErrors too): already clear
        raise
    except OSError as exc:
        raise AuthenticationError(f"authentication handshake with {address} failed: {exc}") from exc
    sock.settimeout(None)
