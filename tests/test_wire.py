"""Framing: the incremental FrameReader and its limits."""
import struct

import pytest
from hypothesis import given, settings, strategies as st

from fastrpc import packb
from fastrpc._core import frame as wire
from fastrpc.errors import FrameTooLargeError, ProtocolError

FRAMES = [
    wire.encode_frame(wire.REQUEST, 1, "Arith.Sum", packb([1, 2])),
    wire.encode_frame(wire.RESPONSE, 1, "", packb("x" * 300)),
    wire.encode_frame(wire.PING, 7, ""),
    wire.encode_frame(wire.REQUEST, 2, "A.B", packb([]), deadline_ms=10, meta=packb({"k": 1})),
    wire.encode_frame(wire.RESPONSE, 3, "", packb(b"\0" * 70000), load=3),
]
STREAM = b"".join(FRAMES)


def summary(frames):
    return [(f.kind, f.seq, f.method, f.payload, f.deadline_ms, f.load, f.meta) for f in frames]


EXPECTED = summary(wire.FrameReader().feed(STREAM))


def test_whole_stream_in_one_chunk():
    assert len(EXPECTED) == len(FRAMES)
    assert [e[1] for e in EXPECTED] == [1, 1, 7, 2, 3]


def test_every_split_point_of_a_small_frame():
    frame = FRAMES[0] + FRAMES[2]
    for cut in range(len(frame) + 1):
        reader = wire.FrameReader()
        got = reader.feed(frame[:cut]) + reader.feed(frame[cut:])
        assert summary(got) == summary(wire.FrameReader().feed(frame))
        assert reader.buffered == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 20000), min_size=1, max_size=40))
def test_any_chunking_gives_the_same_frames(sizes):
    reader = wire.FrameReader(chunk=32 * 1024)
    got, pos, i = [], 0, 0
    while pos < len(STREAM):
        size = sizes[i % len(sizes)]
        got += reader.feed(STREAM[pos:pos + size])
        pos += size
        i += 1
    assert summary(got) == EXPECTED


def test_byte_at_a_time():
    reader = wire.FrameReader()
    got = []
    for i in range(len(FRAMES[3])):
        got += reader.feed(FRAMES[3][i:i + 1])
    assert summary(got) == summary(wire.FrameReader().feed(FRAMES[3]))


def test_partial_frame_is_kept():
    reader = wire.FrameReader()
    assert reader.feed(FRAMES[0][:10]) == []
    assert reader.buffered == 10


def test_frame_above_max_size_is_an_error_as_soon_as_its_length_arrives():
    reader = wire.FrameReader(max_frame_size=1024)
    with pytest.raises(FrameTooLargeError, match="above the maximum frame size of 1024"):
        reader.feed(b"\x00\x00\x10\x00")


def test_default_max_frame_size_is_at_least_64_mib():
    assert wire.FrameReader().max_frame_size >= 64 * 1024 * 1024


def test_frame_at_max_size_is_accepted():
    frame = wire.encode_frame(wire.RESPONSE, 1, "", packb(b"x" * 1000))
    reader = wire.FrameReader(max_frame_size=len(frame) - 4)
    assert len(reader.feed(frame)) == 1


@pytest.mark.parametrize("data, message", [
    (b"\x00\x00\x00\x05" + b"\x00" * 5, "shorter than the frame header"),
    (b"\x00\x00\x00\x0c\x63\x00\x00\x00" + b"\x00" * 8, "unknown frame kind 99"),
    (b"\x00\x00\x00\x0c\x01\x80\x00\x00" + b"\x00" * 8, "unknown frame flags"),
    (b"\x00\x00\x00\x0c\x01\x00\x00\x05" + b"\x00" * 8, "method name runs past"),
    (b"\x00\x00\x00\x0c\x01\x01\x00\x00" + b"\x00" * 8, "deadline field runs past"),
    (b"\x00\x00\x00\x10\x01\x04\x00\x00" + b"\x00" * 8 + b"\x00\x00\x00\x09", "metadata runs past"),
])
def test_malformed_headers_are_protocol_errors(data, message):
    with pytest.raises(ProtocolError, match=message):
        wire.FrameReader().feed(data)


def test_large_frame_buffer_grows_with_bytes_received_not_declared():
    # The length field says 3 MB at once; memory follows what has arrived
    # (doubling), so a peer that declares much and sends little costs little.
    frame = wire.encode_frame(wire.RESPONSE, 1, "", packb(b"y" * 3_000_000))
    reader = wire.FrameReader()
    pos = 0
    rooms = []
    while pos < len(frame):
        view = reader.get_buffer(-1)
        assert len(view) <= max(wire.DEFAULT_CHUNK, 2 * pos + 16384), (pos, len(view))
        n = min(len(view), len(frame) - pos, 65536)
        view[:n] = frame[pos:pos + n]
        rooms.append(len(view))
        del view
        reader.buffer_updated(n)
        pos += n
    # Geometric growth: a handful of moves for the whole frame, not one per read.
    moves = sum(1 for a, b in zip(rooms, rooms[1:]) if b > a)
    assert moves <= 16
    frames = reader.frames()
    assert len(frames) == 1 and frames[0].payload == packb(b"y" * 3_000_000)


def test_receive_buffer_is_reused_once_nothing_points_into_it():
    # Every frame consumed and no view or array left on the buffer: the next
    # bytes go to the start of the same memory (a fresh buffer costs an
    # allocation, zero-filling it and a copy each time the room runs out).
    frame = wire.encode_frame(wire.RESPONSE, 1, "", packb(b"\xab" * 60000))
    reader = wire.FrameReader()
    for _ in range(3):
        assert len(reader.feed(frame)) == 1
    view = reader.get_buffer(-1)
    assert bytes(view[:len(frame)]) == frame        # the last frame, where it was received
    del view
    # A frame's bytes still referenced after it was consumed (as a decoded
    # bytes view or ndarray is): later frames never overwrite them.
    view = reader.get_buffer(-1)
    view[:len(frame)] = frame
    held = view[:len(frame)].toreadonly()
    del view
    reader.buffer_updated(len(frame))
    assert [f.seq for f in reader.frames()] == [1]
    other = wire.encode_frame(wire.RESPONSE, 2, "", packb(b"\xcd" * 60000))
    for _ in range(10):
        assert [f.seq for f in reader.feed(other)] == [2]
    assert bytes(held[:len(frame)]) == frame


def test_declared_size_alone_allocates_nothing_large():
    reader = wire.FrameReader()
    view = reader.get_buffer(-1)
    header = struct.pack(">IBBHQ", 60_000_000, wire.REQUEST, 0, 0, 1)
    view[:len(header)] = header
    del view
    reader.buffer_updated(len(header))
    assert reader.frames() == []
    assert len(reader.get_buffer(-1)) <= 16384


def test_skip_oversized_reports_the_frame_and_drops_its_bytes():
    reader = wire.FrameReader(max_frame_size=100)
    reader.skip_oversized = True
    big = wire.encode_frame(wire.REQUEST, 5, "A.B", b"z" * 1000)
    small = wire.encode_frame(wire.REQUEST, 6, "A.B", b"\x90")
    out = []
    for i in range(0, len(big + small), 7):
        out += reader.feed((big + small)[i:i + 7])
    assert [(f.kind, f.seq) for f in out] == [(0, 5), (wire.REQUEST, 6)]
    assert out[0].payload == b"" and reader.buffered == 0
    reader.skip_oversized = False
    with pytest.raises(FrameTooLargeError):
        reader.feed(big)


def test_buffer_updated_rejects_overflow():
    reader = wire.FrameReader()
    view = reader.get_buffer(-1)
    with pytest.raises(ValueError):
        reader.buffer_updated(len(view) + 1)
