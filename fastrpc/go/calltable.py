"""A call table for Go's codecs: net/rpc's gob and jsonrpc behind fastrpc's call-table interface.

Owns the client side of one Go connection's calls: sequence ids, encoding
requests with the Go codec (net/rpc's ClientCodec, in Go's terms), matching
replies to the slots waiting for them. It offers the methods of the compiled
fastrpc._core.calltable.CallTable that connections, clients and balancers
use, so a Go connection is driven by the same engine, connection classes,
balancer and planner as a fastrpc one; only the bytes differ.

net/rpc has no deadlines, metadata, cancellation, PING or GOAWAY: a call's
timeout is enforced here on the client, withdrawing a call only drops its
reply, and a ping is a call to a service that does not exist, which every
net/rpc server answers ("rpc: can't find service") without running anything.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Dict, Iterator, Optional, Union

from fastrpc._core import frame as wire
from fastrpc._core.calltable import Arguments, CallFuture, fork_generation, monotonic, settle
from fastrpc.errors import ConnectionClosedError, MethodNotFoundError, RemoteError
from fastrpc.go.gobcodec import GobClientCodec
from fastrpc.go.jsonrpc import JSONClientCodec
from fastrpc.go.types import from_go, go_type

__all__ = ["GoCallTable", "GO_CLIENT_CODECS", "PING_METHOD", "remote_error"]

GO_CLIENT_CODECS: Dict[str, Any] = {"gob": GobClientCodec, "jsonrpc": JSONClientCodec}
#: What a ping calls: no Go server has it, every one answers it.
PING_METHOD = "fastrpc.Ping"
_NOT_FOUND = ("rpc: can't find service ", "rpc: can't find method ", "rpc: service/method request ill-formed")
READ_SIZE = 256 * 1024


def remote_error(text: str) -> RemoteError:
    """The exception for a Go server's error text."""
    if text.startswith(_NOT_FOUND):
        return MethodNotFoundError("MethodNotFound", text)
    return RemoteError("Error", text)



def go_arguments(args: Any) -> tuple[Any, ...]:
    """A call's arguments as Go sees them: keyword arguments are the fields of
    its one struct argument (``call("Arith.Multiply", A=7, B=8)``), a map
    item that is not a tuple is the one argument."""
    if type(args) is tuple:
        if len(args) != 1 or type(args[0]) is not Arguments:
            return args
        args = args[0]                  # a lone Arguments: the whole argument list
    if type(args) is Arguments:
        if args.args and args.kwargs:
            raise TypeError("a Go net/rpc method takes one argument: pass it by position, "
                            "or its struct's fields as keyword arguments, not both")
        return args.args if not args.kwargs else (dict(args.kwargs),)
    return (args,)

class _Ping:
    """The slot of a ping: any answer, even "can't find service", proves the server alive."""

    __slots__ = ("slot",)

    def __init__(self, slot: Any) -> None:
        self.slot = slot


class GoCallTable:
    """One Go connection's calls (see the module docstring).

    Encoding methods may be called from any thread (a lock guards the
    codec's output); process() and fail_all() from the one reading.
    """

    def __init__(self, codec: str, *, max_frame_size: int, max_depth: int, owner: Any = None,
                 flush_frames: int = 32, flush_bytes: int = 65536, **_limits: Any) -> None:
        self.codec: Union[GobClientCodec, JSONClientCodec] = GO_CLIENT_CODECS[codec](max_frame_size, max_depth)
        self.codec_name = codec
        self.lock = threading.Lock()
        self.pending: Dict[int, Any] = {}
        self.reply_types: Dict[int, Any] = {}
        self.next_seq = 1
        self.out_frames = 0
        self.flush_frames = flush_frames
        self.flush_bytes = flush_bytes
        self.owner = owner
        self.engine: Any = None
        self.on_control: Any = None
        self.last_load: Optional[int] = None          # Go servers report no load
        self.closed = False
        self.draining = False                         # Go has no GOAWAY
        self.last_io = monotonic()
        self.generation = fork_generation()
        self.written_seq = 0
        self._buffer = bytearray(READ_SIZE)

    # encoding ---------------------------------------------------------------------
    def request(self, method: str, args: tuple[Any, ...], slot: Any, deadline_ms: Any = None, meta: Any = None,
                arg_type: Any = None, reply_type: Any = None) -> int:
        """Encode a call whose reply completes `slot`; return its seq. (Go
        calls carry no deadline or metadata; `slot` None: jsonrpc's notification.)"""
        if self.closed:
            raise ConnectionClosedError("the connection is closed")
        gotype = go_type(arg_type) if arg_type is not None else None
        args = go_arguments(args)
        with self.lock:
            seq = self.next_seq
            if slot is None:
                if not isinstance(self.codec, JSONClientCodec):
                    raise ValueError("gob (net/rpc's default codec) has no one-way calls; "
                                     "use call() or the jsonrpc codec")
                self.codec.notify(method, args)
            else:
                self.codec.request(seq, method, args, gotype)
                self.pending[seq] = slot
                if reply_type is not None:
                    self.reply_types[seq] = reply_type
            self.next_seq = seq + 1
            was_empty = self.out_frames == 0
            self.out_frames += 1
        self._encoded(was_empty)
        return seq

    def go(self, method: str, args: tuple[Any, ...], deadline_ms: Any, meta: Any, engine: Any, flush: bool = False,
           arg_type: Any = None, reply_type: Any = None, stats: Any = None) -> CallFuture:
        """Start a blocking call; return its CallFuture (as CallTable.go)."""
        fut = CallFuture(method)
        fut.engine = engine
        fut.source = self.owner
        if stats is not None:
            fut.started = time.monotonic()
            fut.stats = stats
        fut.seq = self.request(method, args, fut, arg_type=arg_type, reply_type=reply_type)
        if flush:
            self.owner.flush()
        return fut

    def request_batch(self, method: str, batch: Any, items: Iterator[Any], limit: int, deadline_ms: Any = None,
                      meta: Any = None) -> int:
        """Encode up to `limit` more items of a map's `batch` (as CallTable.request_batch).

        Each call is registered in the batch before any of them is written,
        so no reply can come back for a call the batch does not know yet.
        """
        if self.closed:
            raise ConnectionClosedError("the connection is closed")
        n = 0
        with self.lock:
            was_empty = self.out_frames == 0
            for args in items:
                seq = self.next_seq
                self.codec.request(seq, method, go_arguments(args), None)
                self.pending[seq] = batch
                batch.add(seq)
                self.next_seq = seq + 1
                self.out_frames += 1
                n += 1
                if n >= limit:
                    break
        self._encoded(was_empty)
        return n

    def ping(self, slot: Any) -> int:
        """A round trip that runs nothing at the server (see the module docstring)."""
        return self.request(PING_METHOD, ({},), _Ping(slot))

    def control(self, kind: int, seq: int, payload: bytes = b"") -> None:
        """Control frames do not exist in net/rpc: a PONG or CANCEL sends nothing."""
        if kind not in (wire.CANCEL, wire.PONG):
            raise ValueError(f"net/rpc cannot send frame kind {kind}")

    def forget(self, seq: int) -> Any:
        """Drop a pending call; its reply, when it comes, is discarded (Go cannot cancel)."""
        self.reply_types.pop(seq, None)
        slot = self.pending.pop(seq, None)
        return slot.slot if type(slot) is _Ping else slot     # what the caller waits on

    def _encoded(self, was_empty: bool) -> None:
        if self.owner is None:
            return
        if self.out_frames >= self.flush_frames:
            self.owner.flush()
        elif was_empty:
            self.owner.on_output()

    def take_output(self) -> Optional[bytes]:
        """The encoded requests, or None."""
        with self.lock:
            self.written_seq = self.next_seq - 1
            self.out_frames = 0
            return self.codec.take() or None

    def clear_output(self) -> None:
        """Drop requests not yet taken (the connection is gone)."""
        with self.lock:
            self.codec.take()
            self.out_frames = 0

    @property
    def out_bytes(self) -> int:
        """Not known before taking the output (the codec buffers it)."""
        return 0

    @property
    def wants_flush(self) -> bool:
        """Enough requests wait that they should be written now."""
        return self.out_frames >= self.flush_frames

    # replies -------------------------------------------------------------------------
    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """Memory to receive into."""
        return memoryview(self._buffer)

    def process(self, nbytes: int) -> int:
        """Complete the calls whose replies arrived in the last `nbytes`; return how many.
        Raises ProtocolError when the stream is lost."""
        if nbytes:
            self.last_io = monotonic()
        replies = self.codec.feed(bytes(self._buffer[:nbytes]))
        completed = 0
        for seq, error, body in replies:
            slot = self.pending.pop(seq, None)
            if slot is None:
                continue                                  # withdrawn, or timed out
            reply_type = self.reply_types.pop(seq, None)
            completed += 1
            if type(slot) is _Ping:
                settle(slot.slot, seq, None, False)
            elif error is None:
                try:
                    value = body if reply_type is None else from_go(body, reply_type)
                except Exception as exc:                  # the reply does not fit reply_type
                    settle(slot, seq, exc, True)
                    continue
                settle(slot, seq, value, False)
            elif isinstance(error, BaseException):       # could not be decoded here
                settle(slot, seq, error, True)
            else:
                settle(slot, seq, remote_error(error), True)
        return completed

    def fail_all(self, exc: BaseException) -> int:
        """The connection is gone: fail every pending call with `exc`; return how many."""
        pending, self.pending = self.pending, {}
        self.reply_types.clear()
        self.closed = True
        for seq, slot in pending.items():
            settle(slot.slot if type(slot) is _Ping else slot, seq, exc, True)
        return len(pending)

