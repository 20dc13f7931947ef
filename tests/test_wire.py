"""Framing: the incremental FrameReader and its limits."""
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


def test_buffered_protocol_interface_receives_large_frames_in_place():
    frame = wire.encode_frame(wire.RESPONSE, 1, "", packb(b"y" * 3_000_000))
    reader = wire.FrameReader()
    pos = 0
    sizes = []
    while pos < len(frame):
        view = reader.get_buffer(-1)
        n = min(len(view), len(frame) - pos, 65536)
        view[:n] = frame[pos:pos + n]
        sizes.append(len(view))
        del view
        reader.buffer_updated(n)
        pos += n
    # once the length is known the reader offers room for the whole frame
    assert max(sizes) >= len(frame) - 65536
    frames = reader.frames()
    assert len(frames) == 1 and len(frames[0].payload) > 3_000_000


def test_buffer_updated_rejects_overflow():
    reader = wire.FrameReader()
    view = reader.get_buffer(-1)
    with pytest.raises(ValueError):
        reader.buffer_updated(len(view) + 1)
