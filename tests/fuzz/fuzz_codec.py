"""Coverage-guided fuzzing of the MessagePack decoder (atheris / libFuzzer).

    python3 tests/fuzz/fuzz_codec.py -max_total_time=600

Each input picks a well-formed payload (seeds.py) and edits it, or is raw
bytes. Any exception other than DecodeError (or its DecodeLimitError) is a
finding; what decodes must encode again (or raise EncodeError). Limits are
small, so no input can make the decoder allocate much.
"""
import os
import sys

import atheris

with atheris.instrument_imports():
    from fastrpc import packb, unpackb
    from fastrpc.errors import DecodeError, EncodeError

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from seeds import PAYLOADS, edit  # noqa: E402


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    if fdp.ConsumeBool():
        payload = edit(PAYLOADS[fdp.ConsumeIntInRange(0, len(PAYLOADS) - 1)], fdp)
    else:
        payload = fdp.ConsumeBytes(fdp.remaining_bytes())
    try:
        value = unpackb(payload, max_depth=32, max_len=10_000, max_bytes=1 << 20)
    except DecodeError:
        return
    try:
        packb(value)
    except EncodeError:
        pass


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
