"""Hypothesis fuzzing of what reads untrusted bytes: the frame reader, the
codec's decoder, the gob and jsonrpc decoders, and live servers. Only documented exceptions, no crash;
memory is bounded by the limits. (tests/fuzz/ has the coverage-guided runs.)"""
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastrpc
from fastrpc import packb, unpackb
from fastrpc._core import frame as wire
from fastrpc.errors import DecodeError, ProtocolError

VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 63, 2 ** 64 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=20) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=5),
    max_leaves=20)

FRAMES = [
    wire.encode_frame(wire.REQUEST, 1, "Arith.Sum", packb([1, 2])),
    wire.encode_frame(wire.REQUEST, 2, "Arith.Sum", packb([1, 2]), deadline_ms=1500, meta=packb({"k": 1})),
    wire.encode_frame(wire.NOTIFY, 0, "Arith.Echo", packb(["x" * 40])),
    wire.encode_frame(wire.PING, 3, "", b"ping"),
    wire.encode_frame(wire.CANCEL, 1),
    wire.encode_frame(wire.RESPONSE, 4, "", packb(3), load=7),
    wire.encode_frame(wire.ERROR, 5, "", packb(["ZeroDivisionError", "division by zero"])),
]


def mutate(data: bytes, edits) -> bytes:
    """Apply (position, new byte, cut) edits: flips, insertions and truncations."""
    out = bytearray(data)
    for position, byte, kind in edits:
        if not out:
            break
        i = position % len(out)
        if kind == 0:
            out[i] = byte
        elif kind == 1:
            out.insert(i, byte)
        else:
            del out[i:]
    return bytes(out)


EDITS = st.lists(st.tuples(st.integers(0, 10 ** 6), st.integers(0, 255), st.integers(0, 2)), max_size=6)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(FRAMES), min_size=1, max_size=6), EDITS, st.integers(1, 64))
def test_frame_reader_on_mutated_streams(frames, edits, chunk):
    data = mutate(b"".join(frames), edits)
    reader = wire.FrameReader(max_frame_size=1 << 16)
    try:
        for i in range(0, len(data), chunk):
            for frame in reader.feed(data[i:i + chunk]):
                assert frame.kind in wire.KIND_NAMES
            # memory follows the bytes that arrived, never a declared length
            assert reader.capacity <= max(4096, 4 * (i + chunk)), (reader.capacity, i + chunk)
    except ProtocolError:                       # FrameTooLargeError is one too
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=256))
def test_frame_reader_on_random_bytes(data):
    reader = wire.FrameReader(max_frame_size=1 << 16)
    try:
        reader.feed(data)
    except ProtocolError:
        pass


@settings(max_examples=500, deadline=None)
@given(VALUES, EDITS)
def test_decoder_on_mutated_payloads(value, edits):
    data = mutate(packb(value), edits)
    try:
        unpackb(data, max_depth=16, max_len=1000, max_bytes=1 << 16)
    except DecodeError:
        pass


from fuzz.seeds import CALLS  # noqa: E402  (shared with the atheris runs)
from fuzz.servercore_target import drive, new_core  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(CALLS), max_size=6), EDITS,
       st.lists(st.integers(0, 10 ** 5), max_size=15), st.lists(st.booleans(), max_size=16),
       st.integers(12, 1 << 14), st.booleans())
def test_server_core_on_mutated_calls(calls, edits, cuts, holds, max_frame_size, bytes_views):
    """The core a server runs on every byte: calls of every handler mode,
    edited, cut anywhere, held back as backpressure does. Replies are
    well-formed and answer only calls that were made; the only exception is
    ProtocolError (the connection is dropped)."""
    stream = mutate(b"".join(calls), edits)
    core = new_core(max_frame_size, bytes_views)
    try:
        drive(core, stream, [c % (len(stream) + 1) for c in cuts], holds)
    except ProtocolError:
        pass


@pytest.fixture(scope="module")
def live_server():
    server = fastrpc.Server(max_frame_size=1 << 16)
    server.register(type("Arith", (), {"Sum": lambda self, a, b: a + b,
                                       "Echo": lambda self, value: value})())
    address = server.start("tcp://127.0.0.1:0")
    yield server, address
    server.close(grace=0.5)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(FRAMES[:5]), min_size=1, max_size=4), EDITS)
def test_a_live_server_survives_mutated_input(live_server, frames, edits):
    server, address = live_server
    host, port = address[len("tcp://"):].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(mutate(b"".join(frames), edits))
        s.shutdown(socket.SHUT_WR)
        s.settimeout(5)
        while s.recv(65536):                    # replies or a close, never a hang
            pass
    with fastrpc.Client(address) as c:          # everyone else is still served
        assert c.call("Arith.Sum", 2, 3, timeout=5) == 5


# Go codecs --------------------------------------------------------------------

from fuzz.seeds import GOB_STREAMS, JSON_STREAMS  # noqa: E402  (shared with the atheris runs)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(GOB_STREAMS), min_size=1, max_size=4), EDITS, st.integers(1, 64))
def test_gob_decoder_on_mutated_streams(streams, edits, chunk):
    from fastrpc.go._gob import GobDecoder, GobError
    data = mutate(b"".join(streams), edits)
    decoder = GobDecoder(max_message=1 << 16, max_depth=16)
    try:
        for i in range(0, len(data), chunk):
            for value in decoder.feed(data[i:i + chunk]):
                assert not isinstance(value, BaseException) or isinstance(value, GobError)
    except DecodeError:                         # the stream is lost: the connection closes
        pass


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(JSON_STREAMS), min_size=1, max_size=4), EDITS, st.integers(1, 64))
def test_jsonrpc_codec_on_mutated_streams(streams, edits, chunk):
    from fastrpc.go.jsonrpc import JSONServerCodec
    data = mutate(b"".join(streams), edits)
    codec = JSONServerCodec(1 << 16, 16)
    try:
        for i in range(0, len(data), chunk):
            for rid, method, params, bad in codec.feed(data[i:i + chunk]):
                assert isinstance(method, str) and isinstance(params, tuple)
    except ProtocolError:
        pass


@pytest.fixture(scope="module")
def live_go_server():
    from gointerop import Arith, Echo
    server = fastrpc.Server(max_frame_size=1 << 16)
    server.register(Arith())
    server.register(Echo())
    addresses = {"gob": server.start("tcp://127.0.0.1:0", codec="gob"),
                 "jsonrpc": server.start("tcp://127.0.0.1:0", codec="jsonrpc")}
    yield addresses
    server.close(grace=0.5)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["gob", "jsonrpc"]), st.integers(0, 3), EDITS)
def test_live_go_listeners_survive_mutated_input(live_go_server, codec, pick, edits):
    from gointerop import Args
    streams = GOB_STREAMS if codec == "gob" else JSON_STREAMS[:2]
    address = live_go_server[codec]
    host, port = address[len("tcp://"):].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(mutate(b"".join(streams[:pick + 1]), edits))
        s.shutdown(socket.SHUT_WR)
        s.settimeout(5)
        while s.recv(65536):
            pass
    with fastrpc.Client(address, codec=codec) as c:
        assert c.call("Arith.Sum", Args(2, 3), timeout=5) == 5
