"""docs/PROTOCOL.md's test vectors, checked in both directions."""
import datetime as dt
import decimal
import enum
import os
import re
import uuid

import numpy as np
import pytest

import fastrpc
from fastrpc import packb, unpackb
from fastrpc._core import frame as wire
from fastrpc._core.calltable import CallTable, StreamSlot
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
    "hello": (wire.PONG, 0, "", {"max_frame_size": 64 * 1024 * 1024, "kwargs": True}, {}),
    "kwargs": (wire.REQUEST, 8, "KV.Put", packb(["a"]) + packb({"ttl": 5}), {}),
    "stream": (wire.REQUEST, 10, "Svc.Count", [3], {"stream": True}),
    "credit": (wire.CREDIT, 10, "", [1024, 4194304], {}),
    "item": (wire.ITEM, 10, "", 7, {}),
    "end": (wire.END, 10, "", b"", {}),
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
    assert bool(f.flags & wire.STREAM) == ext.get("stream", False)


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


def test_a_client_writes_the_kwargs_vector():
    table = CallTable(max_frame_size=1 << 20, max_depth=16, max_len=1 << 10, max_bytes=1 << 20)
    for _ in range(7):                       # seqs 1..7 (notifications), then the vector's 8
        table.request("A.B", (), None)
    table.take_output()
    table.request("KV.Put", fastrpc.Arguments("a", ttl=5), object())
    assert bytes(table.take_output()).hex() == VECTORS["kwargs"]


def test_a_client_opens_a_stream_as_the_vectors_say():
    table = CallTable(max_frame_size=1 << 20, max_depth=16, max_len=1 << 10, max_bytes=1 << 20)
    for _ in range(9):                       # seqs 1..9, then the stream's 10
        table.request("A.B", (), None)
    table.take_output()
    slot = StreamSlot(1024, 4 * 1024 * 1024)
    assert table.open_stream("Svc.Count", (3,), slot) == 10
    assert bytes(table.take_output()).hex() == VECTORS["stream"] + VECTORS["credit"]
    table.send_item(10, 7)
    table.control(wire.END, 10)
    assert bytes(table.take_output()).hex() == VECTORS["item"] + VECTORS["end"]


@fastrpc.register_type
class Suit(enum.Enum):
    HEARTS = "hearts"


EXT_VALUES = {
    "timestamp32": dt.datetime(2026, 12, 3, tzinfo=dt.timezone.utc),
    "timestamp64": dt.datetime(2026, 12, 3, 0, 0, 0, 500000, tzinfo=dt.timezone.utc),
    "timestamp96": dt.datetime(1900, 1, 1, tzinfo=dt.timezone.utc),
    "date": dt.date(2026, 12, 3),
    "decimal": decimal.Decimal("19.99"),
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "set": {1},
    "frozenset": frozenset(["a"]),
    "tuple": (1, 2),
    "record": Suit.HEARTS,
}
EXTS = doc_block("ext-vectors")


def test_every_extension_vector_is_checked():
    assert set(EXTS) == set(EXT_VALUES)


@pytest.mark.parametrize("name", sorted(EXT_VALUES))
def test_extension_vectors_both_ways(name):
    value = EXT_VALUES[name]
    assert packb(value, keep_tuples=True).hex() == EXTS[name]
    back = unpackb(bytes.fromhex(EXTS[name]))
    assert back == value and type(back) is type(value)
