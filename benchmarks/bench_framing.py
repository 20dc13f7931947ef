"""Framing: splitting a received stream into frames, compiled FrameReader
against a plain-Python splitter doing the same header parse."""
import struct

import pytest

from fastrpc import packb
from fastrpc._core import frame as wire
FRAME = wire.encode_frame(wire.REQUEST, 1, "Arith.Sum", packb([10, 20]))
STREAM = FRAME * 4096
CHUNK = 65536
HEADER = struct.Struct(">IBBHQ")


def python_splitter(data):
    """Reference: the same frame parse with struct, as a pure-Python reader would."""
    frames, pos, buf = [], 0, b""
    for i in range(0, len(data), CHUNK):
        buf += data[i:i + CHUNK]
        pos = 0
        while len(buf) - pos >= 16:
            length, kind, flags, mlen, seq = HEADER.unpack_from(buf, pos)
            if len(buf) - pos < 4 + length:
                break
            method = buf[pos + 16:pos + 16 + mlen].decode()
            frames.append((kind, seq, method, buf[pos + 16 + mlen:pos + 4 + length]))
            pos += 4 + length
        buf = buf[pos:]
    return frames


def compiled_reader(data):
    reader = wire.FrameReader()
    frames = []
    for i in range(0, len(data), CHUNK):
        frames += reader.feed(data[i:i + CHUNK])
    return frames


@pytest.mark.parametrize("impl", ["python", "fastrpc"])
def test_split_frames(benchmark, report, impl):
    fn = python_splitter if impl == "python" else compiled_reader
    benchmark.group = "framing: split 4096 frames"
    frames = benchmark(fn, STREAM)
    assert len(frames) == 4096
    if not getattr(benchmark, "disabled", False):
        report.baseline("framing: frames split per second", "python", "frames/s")
        report.add("framing: frames split per second", impl, 4096 / benchmark.stats.stats.median)
