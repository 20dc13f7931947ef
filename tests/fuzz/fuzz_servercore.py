"""Coverage-guided fuzzing of the server core (atheris / libFuzzer).

    python3 tests/fuzz/fuzz_servercore.py -max_total_time=600

The ServerCore is what a server runs on every byte a client sends: it
splits frames, looks methods up, decodes arguments, runs inline handlers
and encodes replies. Each input picks calls of every kind (seeds.CALLS:
inline, async, thread-pool, unknown, wrong arity, notifications, control
frames), edits the stream and feeds it in pieces, sometimes holding frames
back as backpressure does. A finding is any exception other than
ProtocolError, a reply that is not a well-formed reply frame, or a reply
to a call that was never made.
"""
import os
import sys

import atheris

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
with atheris.instrument_imports(include=["fastrpc"]):
    from fastrpc.errors import ProtocolError
    from servercore_target import drive, new_core

from seeds import CALLS, edit  # noqa: E402


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    stream = b"".join(CALLS[fdp.ConsumeIntInRange(0, len(CALLS) - 1)]
                      for _ in range(fdp.ConsumeIntInRange(0, 6)))
    stream = edit(stream, fdp) + fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 32))
    core = new_core(fdp.ConsumeIntInRange(12, 1 << 14), fdp.ConsumeBool())
    cuts = [fdp.ConsumeIntInRange(0, len(stream)) for _ in range(fdp.ConsumeIntInRange(0, 15))]
    holds = [fdp.ConsumeIntInRange(0, 7) == 0 for _ in range(len(cuts) + 1)]
    try:
        drive(core, stream, cuts, holds)
    except ProtocolError:
        pass


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
