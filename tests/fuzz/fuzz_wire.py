"""Coverage-guided fuzzing of the frame reader (atheris / libFuzzer).

    python3 tests/fuzz/fuzz_wire.py -max_total_time=600

Each input picks well-formed frames (seeds.py) and edits them (flips,
insertions, cuts) before feeding them in up to 16 pieces, so the reader
sees near-valid streams as well as noise, split anywhere. Any exception other than
ProtocolError (or its FrameTooLargeError) is a finding: libFuzzer stops and
writes the input that caused it.
"""
import os
import sys

import atheris

# Only fastrpc's own Python code is instrumented here (the frame reader is
# compiled: build-instrumented gives its coverage); instrumenting every
# import (numpy, asyncio...) only added edges unrelated to the target.
with atheris.instrument_imports(include=["fastrpc"]):
    from fastrpc._core import frame as wire
    from fastrpc.errors import ProtocolError

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from seeds import FRAMES, edit, pieces  # noqa: E402


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    stream = b"".join(FRAMES[fdp.ConsumeIntInRange(0, len(FRAMES) - 1)]
                      for _ in range(fdp.ConsumeIntInRange(0, 4)))
    stream = edit(stream, fdp) + fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64))
    reader = wire.FrameReader(max_frame_size=fdp.ConsumeIntInRange(12, 1 << 16))
    reader.skip_oversized = fdp.ConsumeBool()
    received = 0
    try:
        for piece in pieces(stream, fdp):
            received += len(piece)
            for frame in reader.feed(piece):
                frame.kind, frame.seq, frame.method, bytes(frame.payload)
            # Memory follows the bytes received, never a declared length.
            # (The buffer doubles when nearly full: at most 4x what arrived.)
            assert reader.capacity <= max(4096, 4 * received), (reader.capacity, received)
    except ProtocolError:
        pass


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
