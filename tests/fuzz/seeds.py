"""Well-formed frames and payloads the fuzzers start from, and the edits
they apply (byte flips, insertions, cuts), driven by the fuzzer's input."""
import numpy as np

from fastrpc import packb
from fastrpc._core import frame as wire
VALUES = [None, True, 0, -1, 2 ** 64 - 1, -2 ** 63, 1.5, "", "text", "é" * 40, b"\x00" * 300,
          [1, [2, [3]]], {"a": {"b": [1, 2]}}, {1: 2, (1, 2): "tuple key"},
          np.arange(10, dtype=np.int32), np.zeros((3, 4), dtype=np.float64), [b"x" * 70000]]

PAYLOADS = [packb(v) for v in VALUES]

FRAMES = [f for n, p in enumerate(PAYLOADS) for f in (
    wire.encode_frame(wire.REQUEST, n + 1, "Arith.Sum", p, deadline_ms=1000, meta=packb({"trace": n})),
    wire.encode_frame(wire.RESPONSE, n + 1, "", p, load=n),
    wire.encode_frame(wire.NOTIFY, 0, "Arith.Echo", p),
)] + [wire.encode_frame(wire.PING, 9, "", b"p"), wire.encode_frame(wire.CANCEL, 3),
      wire.encode_frame(wire.GOAWAY, 0, "", b"bye")]


def _gob_streams():
    """A request header and body per Go-shaped value, on one gob stream."""
    import os
    import sys
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from gointerop import Args, Opaque, Tree, sample_record
    from fastrpc.go._gob import GobEncoder
    from fastrpc.go.gobcodec import REQUEST
    from fastrpc.go.types import infer_go_type
    enc = GobEncoder()
    streams = []
    for value in (Args(1, 2), sample_record(), Tree(1, [Tree(2)]), Opaque("x", 3.5), [1, -2, 3],
                  {"k": [1.5]}, "text", 2 ** 64 - 1, b"\x00\x01", complex(1, 2)):
        enc.encode({"ServiceMethod": "Echo.Record", "Seq": len(streams)}, REQUEST)
        enc.encode(value, infer_go_type(value))
        streams.append(enc.take())
    return streams


GOB_STREAMS = _gob_streams()
JSON_STREAMS = [b'{"method":"Arith.Sum","params":[{"A":1,"B":2}],"id":0}\n',
                b'{"method":"Echo.String","params":["a\\\\\\"}{"],"id":"x"}',
                b'{"method":"Echo.Floats","params":[[1e308,-0.5,2]],"id":null}\r\n',
                b'{"id":1,"result":{"a":[1,2.5,null,true]},"error":null}\n']


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
