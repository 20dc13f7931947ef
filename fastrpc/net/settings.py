"""ClientSettings: what every client is configured with, checked once.

Timeouts, decode limits, TLS, the shared secret, call metadata, heartbeats
and the reconnect backoff; and the steps that open a ready connection with
them (dial, TLS, handshake).
"""
from __future__ import annotations

import random
import socket
import ssl as _ssl
import time
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

from fastrpc._core import codec as msgpack
from fastrpc._core import frame as wire
from fastrpc.net.auth import check_secret, client_handshake
from fastrpc._core.calltable import CallSettings, CallTable
from fastrpc.net.address import parse_address
from fastrpc.errors import ConnectError, ConnectionLostError
from fastrpc.extensions import check_hooks
from fastrpc.net.dial import dial, http_connect, wrap_tls

__all__ = ["ClientSettings", "CODECS"]

#: The protocols a client speaks: fastrpc's own, and Go net/rpc's two.
CODECS = ("fastrpc", "gob", "jsonrpc")


class ClientSettings:
    """What Client and AsyncClient are configured with: address, timeouts, limits.

    With `bytes_views`, bytes results arrive as read-only memoryviews over
    the receive buffer instead of bytes: no copy, which pays for large ones.

    `codec` is the protocol: "fastrpc" (the default), or Go net/rpc's
    "gob" or "jsonrpc" to call stock Go servers (`http=True`: through
    HTTP CONNECT, as Go's rpc.DialHTTP). Go's protocols carry no
    metadata and no shared-secret handshake: those settings are refused
    with them (use TLS); a timeout is enforced by the client alone.

    Settings (keyword arguments; defaults in the signature):

    - ``timeout`` (None: wait): the default per-call timeout, sent to the
      server as the call's deadline when ``send_deadline`` (True).
    - ``connect_timeout`` (10 s): for dialing, TLS and the handshake.
    - ``max_frame_size`` (64 MiB), ``max_depth`` (256, at most 2,048),
      ``max_len`` (2**24 items), ``max_bytes`` (64 MiB): limits applied to
      replies; a reply over one fails its own call.
    - ``bytes_views`` (False): bytes results as memoryviews, see above.
    - ``ssl`` (None): an ``ssl.SSLContext`` to connect with TLS;
      ``server_hostname`` (None: the host dialled): the name the server's
      certificate must carry.
    - ``auth_secret`` (None): the shared secret of a server that requires
      the handshake.
    - ``metadata`` (None): a dict, or a callable returning one per call,
      sent with every call (tokens, tracing ids).
    - ``heartbeat`` (None: off): PING a connection silent this many
      seconds; ``heartbeat_timeout`` (2 x heartbeat): fail it, and its
      calls, when no answer comes within this.
    - ``reconnect_backoff`` ((0.05, 5.0)): the first and the largest delay
      between failed dials (exponential, with jitter).
    - ``default`` (None): ``default(obj)`` returns an encodable stand-in for
      an argument of a type fastrpc cannot encode (e.g. an ``ExtType``);
      ``ext_hook`` (None): ``ext_hook(code, data)`` builds the value of an
      ext code fastrpc does not know, in replies; ``keep_tuples`` (False):
      tuples in arguments arrive as tuples (the tuple ext), not lists.
      See "Values" in the README for the types fastrpc carries itself.
    - ``interceptors`` (()): callables ``interceptor(call, proceed)`` run
      around every call, the first outermost (fastrpc.interceptors: plain
      ones for blocking clients and balancers, plain or ``async def`` for
      asyncio ones).
    """

    def __init__(self, address: str, *, codec: str = "fastrpc", http: bool = False,
                 timeout: Optional[float] = None,
                 connect_timeout: float = 10.0,
                 max_frame_size: int = wire.DEFAULT_MAX_FRAME_SIZE,
                 max_depth: int = msgpack.DEFAULT_MAX_DEPTH,
                 max_len: int = msgpack.DEFAULT_MAX_LEN,
                 max_bytes: int = msgpack.DEFAULT_MAX_BYTES,
                 bytes_views: bool = False,
                 send_deadline: bool = True,
                 ssl: Optional[_ssl.SSLContext] = None,
                 server_hostname: Optional[str] = None,
                 auth_secret: Union[bytes, str, None] = None,
                 metadata: Union[Dict[str, Any], Callable[[], Dict[str, Any]], None] = None,
                 heartbeat: Optional[float] = None,
                 heartbeat_timeout: Optional[float] = None,
                 reconnect_backoff: Tuple[float, float] = (0.05, 5.0),
                 default: Optional[Callable[[Any], Any]] = None,
                 ext_hook: Optional[Callable[[int, bytes], Any]] = None,
                 keep_tuples: bool = False,
                 interceptors: Sequence[Any] = ()) -> None:
        via_url = isinstance(address, str) and address.startswith("http://")
        if via_url:
            # An http:// listener: fastrpc's protocol (or gob, with codec="gob") after HTTP CONNECT.
            address, http = "tcp://" + address[len("http://"):], True
        parse_address(address)  # fail early on a malformed address
        self.address = address
        if codec not in CODECS:
            raise ValueError(f"unknown codec {codec!r}: {', '.join(repr(c) for c in CODECS)}")
        if http and codec == "jsonrpc":
            raise ValueError("Go's HTTP transport (rpc.DialHTTP) carries gob only")
        if http and codec == "fastrpc" and not via_url:
            codec = "gob"                       # http=True is Go's rpc.DialHTTP
        if codec != "fastrpc" and (auth_secret is not None or metadata is not None):
            raise ValueError(f"auth_secret and metadata are fastrpc's; Go's {codec} protocol has neither "
                             "(use TLS to authenticate Go servers)")
        if codec != "fastrpc" and (default is not None or ext_hook is not None or keep_tuples):
            raise ValueError(f"default, ext_hook and keep_tuples are options of fastrpc's codec, "
                             f"not of Go's {codec}")
        check_hooks(default, ext_hook)
        self.default = default                  # stand-ins for types the codec cannot encode
        self.ext_hook = ext_hook                # values of ext codes it does not know
        self.keep_tuples = keep_tuples          # tuples travel as tuples
        self.codec = codec                      # the protocol: fastrpc's, or one of Go's
        self.http = http                        # HTTP CONNECT before the codec (Go's, or fastrpc's /_fastrpc_)
        self.timeout = timeout                  # default per-call timeout (None: wait)
        self.connect_timeout = connect_timeout
        self.max_frame_size = max_frame_size    # limits applied to replies
        self.max_depth = msgpack.check_max_depth(max_depth)
        self.max_len = max_len
        self.max_bytes = max_bytes
        self.bytes_views = bytes_views          # bytes results arrive as memoryviews (no copy)
        self.send_deadline = send_deadline      # send each call's timeout to the server
        if ssl is not None and not isinstance(ssl, _ssl.SSLContext):
            raise TypeError("ssl must be an ssl.SSLContext (ssl.create_default_context(cafile=...))")
        self.ssl = ssl                          # TLS when set
        self.server_hostname = server_hostname  # name the server's certificate must carry (default: host)
        self.auth_secret = check_secret(auth_secret)   # shared-secret handshake when set
        if metadata is not None and not (callable(metadata) or isinstance(metadata, dict)):
            raise TypeError("metadata must be a dict or a callable returning one")
        self.metadata = metadata                # sent with every call (tokens, tracing)
        self.interceptors = tuple(interceptors or ())   # run around each call (fastrpc.interceptors)
        self._packed_metadata = msgpack.packb(metadata) if isinstance(metadata, dict) else None
        #: The same, compiled for the call path.
        self.per_call = CallSettings(timeout, send_deadline, self._packed_metadata,
                                     metadata if callable(metadata) else None)
        if heartbeat is not None and heartbeat <= 0:
            raise ValueError("heartbeat must be > 0 seconds (or None: off)")
        self.heartbeat = heartbeat              # PING a connection silent this long
        self.heartbeat_timeout = (heartbeat_timeout if heartbeat_timeout is not None
                                  else None if heartbeat is None else max(2 * heartbeat, 0.1))
        base, cap = reconnect_backoff
        if not 0 <= base <= cap:
            raise ValueError("reconnect_backoff must be (base, cap) with 0 <= base <= cap")
        self.reconnect_backoff = (base, cap)
        self._dial_failures = 0                 # consecutive failed dials
        self._next_dial = 0.0                   # monotonic time before which no dial is tried
        self._dial_error: Optional[BaseException] = None

    def check_backoff(self) -> None:
        """Raise ConnectError while a failed address is backing off (instead of dialing again)."""
        if self._dial_failures and time.monotonic() < self._next_dial:
            raise ConnectError(f"{self.address} is unreachable ({self._dial_error}); "
                               f"next attempt in {self._next_dial - time.monotonic():.2f}s")

    def dial_failed(self, exc: BaseException) -> None:
        """Back off exponentially, with jitter, after a failed dial."""
        self._dial_failures += 1
        base, cap = self.reconnect_backoff
        delay = min(cap, base * 2 ** (self._dial_failures - 1))
        # "Equal jitter": half fixed, half random, so clients that lost the
        # same server do not all come back at the same instant.
        self._next_dial = time.monotonic() + delay / 2 + random.uniform(0, delay / 2)
        self._dial_error = exc

    def dial_succeeded(self) -> None:
        """A dial worked: the next failure starts the backoff from its base again."""
        self._dial_failures = 0
        self._dial_error = None

    def heartbeat_lost(self) -> ConnectionLostError:
        """The error of a connection whose peer did not answer a heartbeat in time."""
        return ConnectionLostError(f"{self.address} did not answer a heartbeat within "
                                   f"{self.heartbeat_timeout}s: the peer or the path to it is dead")

    def call_metadata(self) -> Optional[bytes]:
        """The encoded metadata to send with a call, or None."""
        if self._packed_metadata is not None or self.metadata is None:
            return self._packed_metadata
        value = self.metadata() if callable(self.metadata) else self.metadata
        return None if value is None else msgpack.packb(value)

    def open_socket(self) -> socket.socket:
        """Dial, then TLS and the auth handshake as configured: a blocking socket ready for frames."""
        sock = dial(self.address, self.connect_timeout)
        try:
            if self.ssl is not None:
                sock = wrap_tls(sock, self.ssl, self.address, self.server_hostname, self.connect_timeout)
            if self.http:                       # the HTTP listener hands the stream over first
                http_connect(sock, self.address, self.connect_timeout, self.codec)
            if self.auth_secret is not None:
                client_handshake(sock, self.auth_secret, self.address, self.connect_timeout)
        except BaseException:
            sock.close()
            raise
        return sock

    def new_call_table(self, **options: Any) -> Any:
        """A call table for this client's codec, with its limits (`options`:
        owner, flush thresholds): a CallTable, or a GoCallTable for Go's codecs."""
        if self.codec != "fastrpc":
            from fastrpc.go.calltable import GoCallTable
            return GoCallTable(self.codec, max_frame_size=self.max_frame_size, max_depth=self.max_depth,
                               **options)
        return CallTable(max_frame_size=self.max_frame_size, max_depth=self.max_depth,
                         max_len=self.max_len, max_bytes=self.max_bytes,
                         bytes_views=self.bytes_views, default=self.default, ext_hook=self.ext_hook,
                         keep_tuples=self.keep_tuples, vectored=True, **options)

    def deadline_ms(self, timeout: Optional[float]) -> Optional[int]:
        """The deadline field for a call with `timeout`, or None to send none."""
        if timeout is None or not self.send_deadline:
            return None
        return max(0, int(timeout * 1000))
