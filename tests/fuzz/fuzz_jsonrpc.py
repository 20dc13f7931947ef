"""Coverage-guided fuzzing of the jsonrpc stream splitter and server codec (atheris).

    python3 tests/fuzz/fuzz_jsonrpc.py -max_total_time=600

The codec is plain Python, so it is instrumented and libFuzzer is guided by
coverage. A finding is any exception other than ProtocolError, or a stream
that splits differently when fed in two pieces than in one.
"""
import os
import sys

import atheris

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from fastrpc.errors import ProtocolError  # noqa: E402
from fastrpc.go.jsonrpc import JSONServerCodec  # noqa: E402
from seeds import JSON_STREAMS, edit  # noqa: E402


def outcome(data: bytes, split: int):
    codec = JSONServerCodec(1 << 16, 16)
    try:
        return ("calls", repr(codec.feed(data[:split]) + codec.feed(data[split:])))
    except ProtocolError as exc:
        return ("error", type(exc).__name__)


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    if fdp.ConsumeBool():
        stream = edit(b"".join(JSON_STREAMS[fdp.ConsumeIntInRange(0, len(JSON_STREAMS) - 1):]), fdp)
    else:
        stream = fdp.ConsumeBytes(fdp.remaining_bytes())
    whole = outcome(stream, len(stream))
    pieces = outcome(stream, len(stream) // 3)
    if whole != pieces and not (whole[0] == "error" and pieces[0] == "error"):
        raise AssertionError(f"splitting changed the result for {stream!r}:\n{whole}\n{pieces}")


if __name__ == "__main__":
    atheris.instrument_all()
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
