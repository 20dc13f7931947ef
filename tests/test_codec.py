"""The MessagePack codec: round trips, agreement with msgpack, ndarrays, limits."""
import math
import struct

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fastrpc import ExtType, packb, unpackb
from fastrpc.errors import CodecError, DecodeError, DecodeLimitError, EncodeError

INT64_MIN, UINT64_MAX = -(2 ** 63), 2 ** 64 - 1

scalars = (st.none() | st.booleans() | st.integers(INT64_MIN, UINT64_MAX)
           | st.floats(allow_nan=False) | st.text() | st.binary())
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=8)
    | st.dictionaries(st.text(max_size=8) | st.integers(-1000, 1000), children, max_size=8),
    max_leaves=40)


def plain(v):
    """What a value decodes as: tuples become lists."""
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    return v


@settings(max_examples=400, deadline=None)
@given(values)
def test_round_trip(value):
    assert unpackb(packb(value)) == plain(value)


@settings(max_examples=400, deadline=None)
@given(values)
def test_msgpack_reads_what_we_write(value):
    assert msgpack.unpackb(packb(value), raw=False, strict_map_key=False) == plain(value)


@settings(max_examples=400, deadline=None)
@given(values)
def test_we_read_what_msgpack_writes(value):
    assert unpackb(msgpack.packb(value, use_bin_type=True)) == plain(value)


@settings(max_examples=200, deadline=None)
@given(values)
def test_encoding_is_byte_identical_to_msgpack(value):
    # Both pick the smallest encoding and float64 for floats.
    assert packb(value) == msgpack.packb(value, use_bin_type=True)


@pytest.mark.parametrize("value", [0, 127, 128, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32,
                                   2 ** 63 - 1, 2 ** 63, UINT64_MAX, -1, -32, -33, -128, -129,
                                   -32768, -32769, -(2 ** 31), -(2 ** 31) - 1, INT64_MIN])
def test_int_boundaries(value):
    assert unpackb(packb(value)) == value
    assert msgpack.unpackb(packb(value)) == value


@pytest.mark.parametrize("value", [UINT64_MAX + 1, INT64_MIN - 1, 10 ** 30, -(10 ** 30)])
def test_int_out_of_range_is_a_clear_error(value):
    with pytest.raises(EncodeError, match="64-bit"):
        packb(value)


def test_special_floats():
    assert math.isnan(unpackb(packb(float("nan"))))
    assert unpackb(packb(float("inf"))) == float("inf")
    assert unpackb(b"\xca\x3f\xc0\x00\x00") == 1.5   # float32 from other encoders


def test_buffer_types_encode_as_bin():
    for v in (bytearray(b"abc"), memoryview(b"abc")):
        assert unpackb(packb(v)) == b"abc"
    assert unpackb(packb(memoryview(b"abcdef")[1:3])) == b"bc"


def test_subclasses_and_numpy_scalars():
    class MyInt(int):
        pass

    class MyStr(str):
        pass

    assert unpackb(packb([MyInt(5), MyStr("x"), np.int32(7), np.float64(1.5), np.bool_(True)])) \
        == [5, "x", 7, 1.5, True]


def test_unsupported_type_is_a_clear_error():
    with pytest.raises(EncodeError, match="cannot encode object of type object"):
        packb({"a": [object()]})
    with pytest.raises(EncodeError, match="cannot encode object of type complex"):
        packb({1: 2j})


def test_cyclic_structure_is_a_clear_error():
    a = []
    a.append(a)
    with pytest.raises(EncodeError, match="nested deeper"):
        packb(a)


def test_surrogates_are_a_clear_error():
    with pytest.raises(EncodeError, match="UTF-8"):
        packb("\ud800")


def test_ext_types_round_trip():
    v = ExtType(42, b"hello")
    for data in (b"", b"x", b"xy", b"abcd", b"12345678", b"0123456789abcdef", b"z" * 300, b"z" * 70000):
        v = ExtType(42, data)
        assert unpackb(packb(v)) == v
        assert msgpack.unpackb(packb(v)) == msgpack.ExtType(42, data)
        assert unpackb(msgpack.packb(msgpack.ExtType(42, data))) == v


def test_list_keys_become_tuples():
    assert unpackb(msgpack.packb({(1, 2): "x"}, use_bin_type=True)) == {(1, 2): "x"}


# ndarrays --------------------------------------------------------------------

ARRAYS = [
    np.arange(12, dtype=np.float64).reshape(3, 4),
    np.asfortranarray(np.arange(24, dtype=np.int32).reshape(2, 3, 4)),
    np.arange(10, dtype=">i8"),
    np.array(3.5),
    np.zeros((0, 1000)),
    np.array([True, False, True]),
    np.array(["ab", "c"]),
    np.arange(6, dtype=np.complex128),
    np.arange(5, dtype=np.uint16),
    np.array(["2024-01-01"], dtype="datetime64[ns]"),
]


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.dtype}-{a.shape}")
def test_ndarray_round_trip(array):
    out = unpackb(packb(array))
    assert out.dtype == array.dtype and out.shape == array.shape
    np.testing.assert_array_equal(out, array)
    assert out.flags.f_contiguous == array.flags.f_contiguous


def test_non_contiguous_ndarray_is_sent_as_its_values():
    a = np.arange(20).reshape(4, 5)[:, ::2]
    np.testing.assert_array_equal(unpackb(packb(a)), a)


def test_ndarray_decode_is_a_view_over_the_received_buffer():
    data = bytearray(packb(np.arange(1000, dtype=np.float64)))
    out = unpackb(data)
    raw = np.frombuffer(data, dtype=np.uint8)
    assert np.shares_memory(out, raw)
    # The encoder pads so the data starts 16-byte aligned relative to the message.
    assert (out.ctypes.data - raw.ctypes.data) % 16 == 0


def test_ndarray_inside_containers():
    msg = {"x": np.ones(3), "y": [np.arange(2), "s"]}
    out = unpackb(packb(msg))
    np.testing.assert_array_equal(out["x"], np.ones(3))
    np.testing.assert_array_equal(out["y"][0], np.arange(2))


def test_ndarray_is_a_msgpack_ext_other_libraries_can_skip():
    out = msgpack.unpackb(packb(np.arange(3)))
    assert isinstance(out, msgpack.ExtType) and out.code == 1


@pytest.mark.parametrize("array", [np.array([object()]), np.zeros(2, dtype=[("a", "i4")])])
def test_unsendable_ndarrays_are_a_clear_error(array):
    with pytest.raises(EncodeError, match="dtype"):
        packb(array)


@pytest.mark.parametrize("payload", [
    b"\xc9\x00\x00\x00\x04\x01\x02C\x03",                              # truncated layout
    b"\xc7\x05\x01\x07C\x03<f8",                                      # unknown version
    b"\xc7\x10\x01\x01C\x03<f8\x01\x00\x00\x00\x00\x00\x00\x00\x09\x00",  # shape > data
    b"\xc7\x0c\x01\x01C\x03|O8\x00\x00\x00\x00\x00",                   # object dtype
    b"\xc7\x08\x01\x01Q\x03<f8\x00\x00",                              # bad order
])
def test_malformed_ndarray_ext_is_a_decode_error(payload):
    with pytest.raises(DecodeError):
        unpackb(payload)


def _ndarray_header(ndim, shape, data=b""):
    body = bytes([1, ord("C"), 3]) + b"<f8" + bytes([ndim]) + b"".join(struct.pack(">Q", d) for d in shape)
    body += b"\x00" + data
    return b"\xc9" + struct.pack(">I", len(body)) + b"\x01" + body


@pytest.mark.parametrize("payload", [
    _ndarray_header(65, [1] * 65, b"\x00" * 8),                    # ndim above 64 (PROTOCOL.md: 0..64)
    _ndarray_header(200, [1] * 200, b"\x00" * 8),
    _ndarray_header(3, [0, 2 ** 40, 2 ** 40]),                     # a zero next to huge extents
    _ndarray_header(2, [0, 2 ** 63]),
])
def test_ndarray_headers_numpy_would_reject_are_a_decode_error(payload):
    with pytest.raises(DecodeError):
        unpackb(payload)


def test_an_empty_ndarray_with_sane_extents_decodes():
    assert unpackb(_ndarray_header(2, [0, 3])).shape == (0, 3)


# limits and malformed input ---------------------------------------------------

def test_depth_limit():
    nested = [[[[1]]]]
    assert unpackb(packb(nested), max_depth=4) == nested
    with pytest.raises(DecodeLimitError, match="nested"):
        unpackb(packb(nested), max_depth=3)


def test_container_length_limit():
    with pytest.raises(DecodeLimitError, match="above the limit"):
        unpackb(packb(list(range(100))), max_len=99)
    with pytest.raises(DecodeLimitError):
        unpackb(packb({i: i for i in range(20)}), max_len=10)


def test_bytes_limit():
    with pytest.raises(DecodeLimitError):
        unpackb(packb(b"x" * 100), max_bytes=50)
    with pytest.raises(DecodeLimitError):
        unpackb(packb(["x" * 100]), max_bytes=90)


def test_lying_container_length_allocates_nothing():
    # array32 claiming 4 billion items in a 5-byte payload
    with pytest.raises(DecodeError, match="longer than the payload|above the limit"):
        unpackb(b"\xdd\xff\xff\xff\xff", max_len=2 ** 40)
    with pytest.raises(DecodeError):
        unpackb(b"\xdf\x7f\xff\xff\xff", max_len=2 ** 40)


@pytest.mark.parametrize("payload", [b"", b"\xc1", b"\xd9\x05ab", b"\xcd\x01", b"\x92\x01",
                                     b"\xa3\xff\xfe\xfd", b"\x81\x91\x80\x01", b"\xc0\xc0"])
def test_malformed_payloads_are_decode_errors(payload):
    with pytest.raises(DecodeError):
        unpackb(payload)


def test_unhashable_map_key_is_a_decode_error():
    with pytest.raises(DecodeError, match="hashable"):
        unpackb(b"\x81\x80\x01")   # {{}: 1}


def test_codec_errors_share_a_base_class():
    assert issubclass(DecodeError, CodecError) and issubclass(EncodeError, CodecError)
    assert issubclass(CodecError, ValueError)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_decode_or_raise_decode_error(data):
    try:
        unpackb(data)
    except DecodeError:
        pass


@pytest.mark.parametrize("dtype_name", [b"2f\t", b"(2,)f8", b"f8,i4", b"V8", b"O"])
def test_ndarray_with_a_subarray_structured_or_void_dtype_is_a_decode_error(dtype_name):
    # Found by fuzzing: numpy reads "2f" as a subarray dtype, which holds more
    # elements than the shape says; reshape raised ValueError, not DecodeError.
    body = (b"\x01C" + bytes([len(dtype_name)]) + dtype_name + b"\x02" + (3).to_bytes(8, "little")
            + (4).to_bytes(8, "little") + b"\x00" + b"\x00" * 96)
    payload = b"\xc9" + len(body).to_bytes(4, "big") + b"\x01" + body
    with pytest.raises(DecodeError, match="dtype|object"):
        unpackb(payload)
    crash = bytes.fromhex("c90000007a0101430332660902000000000000000300000000000000040200") + b"\x00" * 100
    with pytest.raises(DecodeError):
        unpackb(crash)
