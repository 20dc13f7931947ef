"""Coverage-guided, differential fuzzing of the gob decoder (atheris / libFuzzer).

    python3 tests/fuzz/fuzz_gob.py -max_total_time=600

fastrpc/go/_gob.py is also the uncompiled reference implementation: it runs
here as plain Python, instrumented, so libFuzzer gets real coverage
feedback, and every input goes through the compiled decoder too. A finding
is any exception other than DecodeError, or the two decoders disagreeing.
Inputs start from gob streams of Go-shaped values (requests, structs,
slices, maps, interfaces) and are edited, or are raw bytes.
"""
import importlib.util
import os
import sys

import atheris

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from fastrpc.go import _gob as compiled  # noqa: E402
from fastrpc.errors import DecodeError  # noqa: E402
from seeds import GOB_STREAMS, edit  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    "fastrpc_gob_reference", os.path.join(os.path.dirname(os.path.dirname(HERE)), "fastrpc", "go", "_gob.py"))
reference = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = reference     # instrument_all() finds functions through sys.modules
_spec.loader.exec_module(reference)


def outcome(module, data: bytes, split: int):
    decoder = module.GobDecoder(max_message=1 << 16, max_depth=16)
    try:
        values = decoder.feed(data[:split]) + decoder.feed(data[split:])
    except DecodeError as exc:
        return ("stream error", str(exc))
    return ("values", repr(values))


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    if fdp.ConsumeBool():
        stream = edit(b"".join(GOB_STREAMS[fdp.ConsumeIntInRange(0, len(GOB_STREAMS) - 1):]
                               [:fdp.ConsumeIntInRange(1, 3)]), fdp)
    else:
        stream = fdp.ConsumeBytes(fdp.remaining_bytes())
    split = len(stream) // 2
    ours, theirs = outcome(compiled, stream, split), outcome(reference, stream, split)
    if ours != theirs:
        raise AssertionError(f"compiled and reference disagree on {stream.hex()}:\n{ours}\n{theirs}")


if __name__ == "__main__":
    atheris.instrument_all()
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
