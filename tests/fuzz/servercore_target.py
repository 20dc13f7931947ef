"""What the ServerCore fuzzing drives, shared by the atheris harness
(fuzz_servercore.py) and the hypothesis test run on every test run."""
import fastrpc
from fastrpc._core import frame as wire
from fastrpc._core.servercore import ServerCore
from fastrpc.server.dispatch import Dispatcher


class Arith:
    """Handlers of every mode: inline, failing, coroutine, thread pool."""

    def Sum(self, a, b):
        return a + b

    def Echo(self, value):
        return value

    def Fail(self, message):
        raise ValueError(message)

    async def Later(self, value):
        return value

    @fastrpc.blocking
    def Blocking(self, value):
        return value


DISPATCHER = Dispatcher()
DISPATCHER.register(Arith())
REPLIES = (wire.RESPONSE, wire.ERROR, wire.PONG, wire.GOAWAY)


class Connection:
    """What the core calls back: records the calls it hands over."""

    def __init__(self):
        self.spawned = []

    def log_handler_error(self, name, exc):
        pass

    def spawn(self, handler, seq, args, notify, deadline_ms, meta, kwargs=None):
        self.spawned.append(seq)

    def spawn_awaitable(self, handler, seq, awaitable, notify):
        awaitable.close()
        self.spawned.append(seq)

    def cancel(self, seq):
        pass

    def on_goaway(self):
        pass

    def on_pong(self, seq):
        pass

    def log_notify_error(self, name, exc):
        pass


def requested_seqs(stream: bytes) -> set:
    """Every 8-byte window of the stream: a superset of the seqs it can carry."""
    return {int.from_bytes(stream[i + 8:i + 16], "big") for i in range(len(stream) - 15)}


def check_replies(out: bytes, requested: set) -> None:
    """Replies are well-formed reply frames, answering only calls the stream could hold."""
    for frame in wire.FrameReader().feed(out):
        assert frame.kind in REPLIES, frame
        if frame.kind in (wire.RESPONSE, wire.ERROR):
            assert frame.seq in requested, frame


def new_core(max_frame_size: int, bytes_views: bool) -> ServerCore:
    """A core with tight decode limits over the fuzzing dispatcher."""
    return ServerCore(DISPATCHER.handlers, DISPATCHER.services, Connection(),
                      max_frame_size=max_frame_size, max_depth=16,
                      max_len=1000, max_bytes=1 << 14, bytes_views=bytes_views)


def drive(core: ServerCore, stream: bytes, cuts, holds) -> None:
    """Feed the stream in pieces (cut at `cuts`) the way the connection's read
    loop does, holding frames back where `holds` says; check every reply."""
    requested = requested_seqs(stream)
    holds = iter(holds)
    start = 0
    for end in sorted(set(cuts)) + [len(stream)]:
        piece = stream[start:end]
        start = max(start, end)
        core.hold = next(holds, False)
        view = core.get_buffer(-1)
        while len(view) < len(piece):           # the loop reads what fits, then asks again
            view[:] = piece[:len(view)]
            piece = piece[len(view):]
            check_replies(core.process(len(view)) or b"", requested)
            view = core.get_buffer(-1)
        view[:len(piece)] = piece
        del view
        check_replies(core.process(len(piece)) or b"", requested)
    core.hold = False
    check_replies(core.process(0) or b"", requested)
