"""The jsonrpc codec without Go: stream splitting, requests, replies and limits."""
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastrpc.errors import EncodeError, FrameTooLargeError, ProtocolError
from fastrpc.go.jsonrpc import JSONClientCodec, JSONServerCodec, JSONStream, dumps

OBJECTS = st.dictionaries(
    st.text(max_size=8),
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                 | st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=12),
                 lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
                 max_leaves=12),
    max_size=5)


@settings(max_examples=300, deadline=None)
@given(st.lists(OBJECTS, min_size=1, max_size=5), st.lists(st.sampled_from(["", " ", "\n", "\r\n\t"]), min_size=5,
                                                          max_size=5), st.integers(1, 17))
def test_objects_back_to_back_split_anywhere(objects, gaps, chunk):
    data = b"".join(gaps[i % 5].encode() + json.dumps(o, ensure_ascii=bool(i % 2)).encode()
                    for i, o in enumerate(objects))
    stream = JSONStream(1 << 20)
    out = []
    for i in range(0, len(data), chunk):
        out += stream.feed(data[i:i + chunk])
    assert out == objects


def test_strings_holding_braces_quotes_and_escapes():
    stream = JSONStream(1 << 20)
    data = b'{"a":"}{\\"\\\\","b":["]"]}{"c":"\\\\"}'
    out = []
    for byte in data:                           # one byte at a time: escapes split too
        out += stream.feed(bytes([byte]))
    assert out == [{"a": '}{"\\', "b": ["]"]}, {"c": "\\"}]


@pytest.mark.parametrize("data", [b"[1]", b"5", b'"s"', b"}", b'{"a":1,}', b'{"a" 1}'])
def test_what_is_not_a_json_object_is_a_protocol_error(data):
    with pytest.raises(ProtocolError):
        JSONStream(1 << 20).feed(data)


def test_an_object_larger_than_max_message_is_refused():
    stream = JSONStream(100)
    stream.feed(b'{"a":"' + b"x" * 50)
    with pytest.raises(FrameTooLargeError):
        stream.feed(b"x" * 60)
    with pytest.raises(FrameTooLargeError):         # arriving whole too
        JSONStream(100).feed(b'{"a":"' + b"x" * 100 + b'"}')
    assert JSONStream(100).feed(b'{"a":"' + b"x" * 90 + b'"}') == [{"a": "x" * 90}]


def test_server_codec_requests_and_replies():
    codec = JSONServerCodec(1 << 20, 32)
    calls = codec.feed(b'{"method":"A.B","params":[1,{"x":2}],"id":3}{"method":"A.B","params":[],"id":null}'
                       b'{"params":[1],"id":4}')
    assert calls == [(3, "A.B", (1, {"x": 2}), None), (None, "A.B", (), None),
                     (4, "", (), "jsonrpc: request has no method name")]
    codec.reply(3, "A.B", b"\x00\xff")          # bytes travel as base64, like Go's []byte
    codec.reply(5, "A.B", None)                 # never null
    codec.reply(6, "A.B", float("nan"))         # not JSON: an error reply instead
    codec.reply_error(7, "A.B", "")
    lines = [json.loads(line) for line in codec.take().splitlines()]
    assert lines[0] == {"id": 3, "result": "AP8=", "error": None}
    assert lines[1] == {"id": 5, "result": {}, "error": None}
    assert lines[2]["result"] is None and "cannot encode" in lines[2]["error"]
    assert lines[3] == {"id": 7, "result": None, "error": "unspecified error"}


def test_client_codec():
    codec = JSONClientCodec(1 << 20, 32)
    codec.request(0, "Arith.Sum", ({"A": 1},))
    assert json.loads(codec.take()) == {"method": "Arith.Sum", "params": [{"A": 1}], "id": 0}
    replies = codec.feed(b'{"id":0,"result":3,"error":null}\n{"id":1,"result":null,"error":"boom"}'
                         b'{"id":2,"result":null,"error":{"code":1}}')
    assert replies == [(0, None, 3), (1, "boom", None), (2, '{"code": 1}', None)]
    with pytest.raises(ProtocolError):
        codec.feed(b'{"result":1}')


def test_dumps_refuses_what_json_cannot_carry():
    with pytest.raises(EncodeError):
        dumps({"x": object()})
    with pytest.raises(EncodeError):
        dumps({"x": float("inf")})
