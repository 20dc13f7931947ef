"""Coverage-guided fuzzing of the frame reader (atheris / libFuzzer).

    python3 tests/fuzz/fuzz_wire.py -max_total_time=600

Each input picks well-formed frames (seeds.py) and edits them (flips,
insertions, cuts) before feeding them in chunks, so the reader sees
near-valid streams as well as noise. Any exception other than
ProtocolError (or its FrameTooLargeError) is a finding: libFuzzer stops and
writes the input that caused it.
"""
import os
import sys

import atheris

with atheris.instrument_imports():
    from fastrpc._core import frame as wire
    from fastrpc.errors import ProtocolError

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from seeds import FRAMES, edit  # noqa: E402


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    chunk = fdp.ConsumeIntInRange(1, 4096)
    stream = b"".join(FRAMES[fdp.ConsumeIntInRange(0, len(FRAMES) - 1)]
                      for _ in range(fdp.ConsumeIntInRange(0, 4)))
    stream = edit(stream, fdp) + fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64))
    reader = wire.FrameReader(max_frame_size=1 << 20)
    try:
        for i in range(0, len(stream), chunk):
            for frame in reader.feed(stream[i:i + chunk]):
                frame.kind, frame.seq, frame.method, bytes(frame.payload)
    except ProtocolError:
        pass


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
