"""Well-formed frames and payloads the fuzzers start from, and the edits
they apply (byte flips, insertions, cuts), driven by the fuzzer's input."""
import numpy as np

from fastrpc import packb
from fastrpc._core import frame as wire
VALUES = [None, True, 0, -1, 2 ** 64 - 1, -2 ** 63, 1.5, "", "text", "é" * 40, b"\x00" * 300,
          [1, [2, [3]]], {"a": {"b": [1, 2]}}, {1: 2, (1, 2): "tuple key"},
          np.arange(10, dtype=np.int32), np.zeros((3, 4), dtype=np.float64), [b"x" * 70000]]

PAYLOADS = [packb(v) for v in VALUES]

# Frames carry the payloads up to a few KiB (a stream of them is fed in
# pieces, and one 70 KB frame per input made inputs 40 ms slow); one
# 20 KB frame is still larger than a fresh receive buffer, to exercise its
# growth.
FRAMES = [f for n, p in enumerate(PAYLOADS) if len(p) <= 4096 for f in (
    wire.encode_frame(wire.REQUEST, n + 1, "Arith.Sum", p, deadline_ms=1000, meta=packb({"trace": n})),
    wire.encode_frame(wire.RESPONSE, n + 1, "", p, load=n),
    wire.encode_frame(wire.NOTIFY, 0, "Arith.Echo", p),
)] + [wire.encode_frame(wire.PING, 9, "", b"p"), wire.encode_frame(wire.CANCEL, 3),
      wire.encode_frame(wire.GOAWAY, 0, "", b"bye"),
      wire.encode_frame(wire.REQUEST, 99, "Arith.Echo", packb([b"y" * 20000]))]

# Requests for the server core: every way a call can go (inline, task,
# thread pool, not found, wrong arity, bad arguments, notifications,
# deadlines, metadata), and the control frames a client sends.
CALLS = [
    wire.encode_frame(wire.REQUEST, 1, "Arith.Sum", packb([1, 2])),
    wire.encode_frame(wire.REQUEST, 2, "Arith.Sum", packb([1]), deadline_ms=5),
    wire.encode_frame(wire.REQUEST, 3, "Arith.Echo", packb([{"a": [1, 2.5, None]}]), meta=packb({"t": 1})),
    wire.encode_frame(wire.REQUEST, 4, "Arith.Fail", packb(["boom"])),
    wire.encode_frame(wire.REQUEST, 5, "Arith.Later", packb([7])),
    wire.encode_frame(wire.REQUEST, 6, "Arith.Blocking", packb([8]), deadline_ms=1000),
    wire.encode_frame(wire.REQUEST, 7, "Arith.Nope", packb([])),
    wire.encode_frame(wire.REQUEST, 8, "Nope.Sum", packb([])),
    wire.encode_frame(wire.REQUEST, 9, "Arith.Echo", packb([np.arange(6, dtype=np.int16).reshape(2, 3)])),
    wire.encode_frame(wire.NOTIFY, 0, "Arith.Echo", packb(["n"])),
    wire.encode_frame(wire.NOTIFY, 0, "Arith.Fail", packb(["n"])),
    wire.encode_frame(wire.PING, 10, "", b"p"),
    wire.encode_frame(wire.CANCEL, 5),
    wire.encode_frame(wire.GOAWAY, 0, "", b""),
    wire.encode_frame(wire.PONG, 11, "", b""),
    wire.encode_frame(wire.REQUEST, 12, "Arith.Echo", packb([b"z" * 5000])),
]


def pieces(data: bytes, fdp, most: int = 16):
    """`data` cut in up to `most` pieces at places `fdp` picks (so the number
    of reads per input stays small, whatever the size of the stream)."""
    cuts = sorted({fdp.ConsumeIntInRange(0, len(data)) for _ in range(fdp.ConsumeIntInRange(0, most - 1))})
    last = 0
    for cut in cuts + [len(data)]:
        if cut > last:
            yield data[last:cut]
            last = cut


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
