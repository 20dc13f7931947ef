"""Codec: encode+decode of a fixed payload set, fastrpc against the msgpack package."""
import msgpack
import numpy as np
import pytest

import fastrpc

PAYLOADS = {
    "small call args": (10, 20),
    "1 KiB dict": {f"key{i:03d}": ("v" * 12 if i % 3 else i * 1.5) for i in range(48)},
    "64 KiB bytes": b"\xab" * 65536,
    "1M float64 ndarray": np.arange(1_000_000, dtype=np.float64),
}


def msgpack_roundtrip(value):
    if isinstance(value, np.ndarray):
        # What users of the msgpack package do for arrays: ship the bytes.
        packed = msgpack.packb({"dtype": value.dtype.str, "shape": value.shape, "data": value.tobytes()})
        d = msgpack.unpackb(packed)
        return np.frombuffer(d["data"], dtype=d["dtype"]).reshape(d["shape"])
    return msgpack.unpackb(msgpack.packb(value))


def fastrpc_roundtrip(value):
    return fastrpc.unpackb(fastrpc.packb(value))


IMPLS = {"msgpack": msgpack_roundtrip, "fastrpc": fastrpc_roundtrip}


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("payload", list(PAYLOADS))
def test_encode_decode(benchmark, report, payload, impl):
    value = PAYLOADS[payload]
    fn = IMPLS[impl]
    benchmark.group = f"codec: {payload}"
    result = benchmark(fn, value)
    if isinstance(value, np.ndarray):
        np.testing.assert_array_equal(result, value)
    else:
        assert result == (list(value) if isinstance(value, tuple) else value)
    if not getattr(benchmark, "disabled", False):
        report.baseline(f"codec encode+decode: {payload}", "msgpack", "round trips/s")
        report.add(f"codec encode+decode: {payload}", impl, 1 / benchmark.stats.stats.median)


@pytest.mark.parametrize("size", [1_000, 100_000, 4_000_000])
def test_ndarray_decode_is_independent_of_size(benchmark, report, size):
    data = fastrpc.packb(np.ones(size, dtype=np.float64))
    benchmark.group = "codec: ndarray decode by size"
    out = benchmark(fastrpc.unpackb, data)
    assert out.shape == (size,)
    if not getattr(benchmark, "disabled", False):
        report.baseline("codec: ndarray decode time", "1,000 float64", "ns per decode")
        report.add("codec: ndarray decode time", f"{size:,} float64", benchmark.stats.stats.median * 1e9)
