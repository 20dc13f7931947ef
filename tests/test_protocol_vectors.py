"""docs/PROTOCOL.md's test vectors, checked in both directions."""
import os
import re

import numpy as np
import pytest

from fastrpc import packb, unpackb
from fastrpc._core import frame as wire
DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "PROTOCOL.md")


def doc_block(name):
    text = open(DOC, encoding="utf-8").read()
    block = re.search(rf"```{name}\n(.*?)```", text, re.S).group(1)
    return dict(line.split() for line in block.strip().splitlines())


VECTORS = doc_block("vectors")

# name -> (kind, seq, method, payload value or raw bytes, extensions)
EXPECTED = {
    "request": (wire.REQUEST, 1, "Arith.Sum", [10, 20], {}),
    "response": (wire.RESPONSE, 1, "", 30, {}),
    "error": (wire.ERROR, 2, "", ["ZeroDivisionError", "division by zero"], {}),
    "notify": (wire.NOTIFY, 3, "Log.Write", ["hi"], {}),
    "ping": (wire.PING, 9, "", b"", {}),
    "pong": (wire.PONG, 9, "", b"", {}),
    "cancel": (wire.CANCEL, 4, "", b"", {}),
    "goaway": (wire.GOAWAY, 0, "", "shutting down", {}),
    "deadline": (wire.REQUEST, 5, "A.B", [], {"deadline_ms": 1500}),
    "load": (wire.RESPONSE, 5, "", None, {"load": 7}),
    "meta": (wire.REQUEST, 6, "A.B", [], {"meta": {"token": "x"}}),
    "hello": (wire.PONG, 0, "", {"max_frame_size": 64 * 1024 * 1024}, {}),
}


def test_every_documented_vector_is_checked():
    assert set(VECTORS) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_encode_matches_vector(name):
    kind, seq, method, payload, ext = EXPECTED[name]
    raw = payload if isinstance(payload, bytes) else packb(payload)
    ext = dict(ext)
    if "meta" in ext:
        ext["meta"] = packb(ext["meta"])
    assert wire.encode_frame(kind, seq, method, raw, **ext).hex() == VECTORS[name]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_decode_matches_vector(name):
    kind, seq, method, payload, ext = EXPECTED[name]
    frames = wire.FrameReader().feed(bytes.fromhex(VECTORS[name]))
    assert len(frames) == 1
    f = frames[0]
    assert (f.kind, f.seq, f.method) == (kind, seq, method)
    assert f.payload == payload if isinstance(payload, bytes) else unpackb(f.payload) == payload
    assert f.deadline_ms == ext.get("deadline_ms")
    assert f.load == ext.get("load")
    assert (unpackb(f.meta) if f.meta is not None else None) == ext.get("meta")


NDARRAYS = doc_block("ndarray-vectors")


def test_ndarray_vectors_both_ways():
    a = np.array([1.0, 2.0])
    f = np.asfortranarray(np.arange(4, dtype="<i2").reshape(2, 2))
    assert packb(a).hex() == NDARRAYS["float64-c"]
    assert packb(f).hex() == NDARRAYS["int16-f"]
    got = unpackb(bytes.fromhex(NDARRAYS["float64-c"]))
    np.testing.assert_array_equal(got, a)
    got = unpackb(bytes.fromhex(NDARRAYS["int16-f"]))
    np.testing.assert_array_equal(got, f)
    assert got.flags.f_contiguous and got.dtype == np.dtype("<i2")
