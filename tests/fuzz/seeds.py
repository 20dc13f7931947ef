"""Well-formed frames and payloads the fuzzers start from, and the edits
they apply (byte flips, insertions, cuts), driven by the fuzzer's input."""
import numpy as np

from fastrpc import _wire, packb

VALUES = [None, True, 0, -1, 2 ** 64 - 1, -2 ** 63, 1.5, "", "text", "é" * 40, b"\x00" * 300,
          [1, [2, [3]]], {"a": {"b": [1, 2]}}, {1: 2, (1, 2): "tuple key"},
          np.arange(10, dtype=np.int32), np.zeros((3, 4), dtype=np.float64), [b"x" * 70000]]

PAYLOADS = [packb(v) for v in VALUES]

FRAMES = [f for n, p in enumerate(PAYLOADS) for f in (
    _wire.encode_frame(_wire.REQUEST, n + 1, "Arith.Sum", p, deadline_ms=1000, meta=packb({"trace": n})),
    _wire.encode_frame(_wire.RESPONSE, n + 1, "", p, load=n),
    _wire.encode_frame(_wire.NOTIFY, 0, "Arith.Echo", p),
)] + [_wire.encode_frame(_wire.PING, 9, "", b"p"), _wire.encode_frame(_wire.CANCEL, 3),
      _wire.encode_frame(_wire.GOAWAY, 0, "", b"bye")]


def edit(data: bytes, fdp) -> bytes:
    """Up to 8 edits chosen by the FuzzedDataProvider `fdp`."""
    out = bytearray(data)
    for _ in range(fdp.ConsumeIntInRange(0, 8)):
        if not out:
            break
        i = fdp.ConsumeIntInRange(0, len(out) - 1)
        kind = fdp.ConsumeIntInRange(0, 2)
        if kind == 0:
            out[i] = fdp.ConsumeIntInRange(0, 255)
        elif kind == 1:
            out.insert(i, fdp.ConsumeIntInRange(0, 255))
        else:
            del out[i:]
    return bytes(out)
