"""Calling stock Go net/rpc servers: gob, jsonrpc, and gob over HTTP CONNECT.

GoClient and AsyncGoClient are Client and AsyncClient with one of Go's
codecs (fastrpc.go.calltable): the same engine, connections, settings (TLS,
timeouts, limits, heartbeats, reconnect backoff), futures and balancers.
``fastrpc.Client(address, codec="gob")`` returns a GoClient. What they add
is Go's typing: a Go method takes exactly one argument, whose Go type is
inferred (fastrpc.go.types) or given as ``arg_type=``, and its reply decodes
to plain values or to ``reply_type=`` (e.g. a dataclass). A Go error reply
raises RemoteError with Go's text (MethodNotFoundError for "rpc: can't
find ...").
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Optional, Tuple, cast

from fastrpc._core.calltable import CallFuture, call_args, monotonic
from fastrpc.go.calltable import GoCallTable
from fastrpc.client.aio import AsyncClient
from fastrpc.client.sync import Client
from fastrpc.context import bound_timeout
from fastrpc.errors import ConnectionClosedError, TimeoutError

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from fastrpc.net.options import ClientOptions

__all__ = ["GoClient", "AsyncGoClient"]


class GoClient(Client):
    """A blocking client of Go net/rpc servers: ``codec="gob"`` (Go's default)
    or ``"jsonrpc"``; ``http=True`` (or an ``http://`` address) dials like
    Go's rpc.DialHTTP. Settings, futures and thread safety as Client.

    ``call("Arith.Sum", Args(10, 20))`` sends one argument (jsonrpc sends
    every argument in params). ``map``, ``ping`` and heartbeats work as on
    Client; ``notify`` exists for jsonrpc only (gob has no one-way calls).
    """

    def __new__(cls, address: str, *, codec: str = "gob", **settings: Unpack[ClientOptions]) -> "GoClient":
        return object.__new__(cls)

    def __init__(self, address: str, *, codec: str = "gob", http: bool = False,
                 **settings: Unpack[ClientOptions]) -> None:
        """Connect to a Go server at `address` (settings as Client's, but
        metadata and auth_secret, which Go's protocols do not carry)."""
        super().__init__(address, codec=codec, http=http, **settings)

    def go(self, method: str, *args: Any, timeout: Optional[float] = None, reply_type: Any = None,
           arg_type: Any = None, **fields: Any) -> CallFuture:
        """Start a call; return its future (like Go's Client.Go). Keyword
        arguments are the fields of the one (struct) argument."""
        payload = args if not fields else call_args(args, fields)
        conn, fut, timeout = self._start(method, payload, timeout, arg_type, reply_type, flush=False)
        if timeout is not None:
            fut.deadline = monotonic() + timeout
            conn.engine.watch_deadline(fut)
        return fut

    def call(self, method: str, *args: Any, timeout: Optional[float] = None, reply_type: Any = None,
             arg_type: Any = None, **fields: Any) -> Any:
        """Call `method` and wait for its reply (like Go's Client.Call). Keyword
        arguments are the fields of the one (struct) argument:
        ``call("Arith.Multiply", A=7, B=8)``."""
        payload = args if not fields else call_args(args, fields)
        _, fut, timeout = self._start(method, payload, timeout, arg_type, reply_type, flush=True)
        try:
            return fut.result(timeout)
        except TimeoutError:
            if fut.done():
                raise
            fut.cancel()                      # its reply, if it comes, is dropped
            raise TimeoutError(f"{method} did not complete within {timeout}s") from None

    def _start(self, method: str, args: Any, timeout: Optional[float], arg_type: Any, reply_type: Any,
               flush: bool) -> Tuple[Any, CallFuture, Optional[float]]:
        """Check `method`, bound the timeout, encode the call: (connection,
        future, timeout). `flush`: write now (a caller about to wait)."""
        if not isinstance(method, str) or not method:
            raise TypeError(f"method must be a non-empty string, got {method!r}")
        timeout = bound_timeout(timeout, self.timeout)
        conn = self.connection()
        table = cast(GoCallTable, conn.table)
        fut = table.go(method, args, None, None, conn.engine, flush=flush, arg_type=arg_type,
                       reply_type=reply_type, stats=self._caller.stats.method(method))
        return conn, fut, timeout

    def __repr__(self) -> str:
        return f"<fastrpc.GoClient {self.codec}{' over HTTP' if self.http else ''} {self.address}>"


class AsyncGoClient(AsyncClient):
    """The asyncio client of Go net/rpc servers: AsyncClient with Go's codecs,
    typed as GoClient (``reply_type=``, ``arg_type=``)."""

    def __init__(self, address: str, *, codec: str = "gob", http: bool = False,
                 **settings: Unpack[ClientOptions]) -> None:
        """Set up a client of a Go server at `address` (it connects on first use)."""
        super().__init__(address, codec=codec, http=http, **settings)

    def go(self, method: str, *args: Any, timeout: Optional[float] = None, reply_type: Any = None,
           arg_type: Any = None, **fields: Any) -> asyncio.Future[Any]:
        """Start a call on a connected client; return an asyncio.Future of its reply."""
        conn = self._conn
        if conn is None or not conn.usable:
            raise ConnectionClosedError(f"not connected to {self.address}")
        payload = args if not fields else call_args(args, fields)
        future: asyncio.Future[Any] = self._start(conn, method, payload, timeout, reply_type, arg_type)[0]
        return future

    async def call(self, method: str, *args: Any, timeout: Optional[float] = None, reply_type: Any = None,
                   arg_type: Any = None, **fields: Any) -> Any:
        """Call `method` and return its reply (keyword arguments: the fields of
        its struct argument, as GoClient.call)."""
        conn = await self.connection()
        payload = args if not fields else call_args(args, fields)
        fut, seq = self._start(conn, method, payload, timeout, reply_type, arg_type)
        try:
            return await fut
        except asyncio.CancelledError:
            conn.withdraw(seq)
            raise

    def _start(self, conn: Any, method: str, args: Any, timeout: Optional[float], reply_type: Any,
               arg_type: Any) -> Any:
        if not isinstance(method, str) or not method:
            raise TypeError(f"method must be a non-empty string, got {method!r}")
        timeout = bound_timeout(timeout, self.timeout)
        fut = conn.loop.create_future()
        seq = conn.table.request(method, args, fut, arg_type=arg_type, reply_type=reply_type)
        if timeout is not None:
            self._expire_later(conn.table, seq, fut, method, timeout)
        return fut, seq

    def __repr__(self) -> str:
        return f"<fastrpc.AsyncGoClient {self.codec}{' over HTTP' if self.http else ''} {self.address}>"
