"""The gob codec and the Go type mapping, without Go: round trips, limits, errors,
and compiled == reference (fastrpc/go/_gob.py run uncompiled)."""
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastrpc
from fastrpc import GoArray, GoUint
from fastrpc.go import _gob as compiled
from fastrpc.errors import DecodeError, DecodeLimitError, EncodeError
from fastrpc.go.types import EMPTY_STRUCT, from_go, go_type, infer_go_type, zero_value
from support import load_reference

reference = load_reference(compiled)


@pytest.fixture(params=["compiled", "reference"])
def gob(request):
    return compiled if request.param == "compiled" else reference


def test_the_compiled_module_is_compiled():
    assert not compiled.__file__.endswith(".py")
    assert reference.__file__.endswith("_gob.py")


@dataclass
class Leaf:
    Name: str = ""
    Weight: float = 0.0


@dataclass
class Node:
    ID: int = 0
    Size: GoUint = 0
    On: bool = False
    Blob: bytes = b""
    Leaves: List[Leaf] = field(default_factory=list)
    Index: Optional[Dict[str, int]] = None
    Triple: GoArray[float, 3] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    Parent: Optional["Node"] = None
    Extra: Any = None
    Label: str = field(default="", metadata={"go": "label_in_go"})


def roundtrip(gob, value, gotype=None):
    enc, dec = gob.GobEncoder(), gob.GobDecoder()
    enc.encode(value, gotype or infer_go_type(value))
    data = enc.take()
    values = dec.feed(data)
    assert len(values) == 1 and dec.pending() == 0
    return values[0], data


# the type mapping -------------------------------------------------------------

@pytest.mark.parametrize("annotation, name", [
    (int, "int"), (GoUint, "uint"), (float, "float64"), (str, "string"), (bytes, "[]uint8"),
    (bool, "bool"), (Any, "interface"), (List[str], "[]string"), (Tuple[int, ...], "[]int"),
    (Dict[str, List[int]], "map[string][]int"), (GoArray[int, 3], "[3]int"), (List[Leaf], "[]main.Leaf"),
    (Optional[Leaf], "Leaf"), (list, "[]interface {}"), (dict, "map[string]interface {}"),
    (None, ""),
])
def test_annotations_map_to_go_types(annotation, name):
    assert go_type(annotation).name == name


def test_struct_fields_follow_the_dataclass():
    t = go_type(Node)
    assert [f[0] for f in t.fields] == ["ID", "Size", "On", "Blob", "Leaves", "Index", "Triple", "Parent",
                                         "Extra", "label_in_go"]
    assert t.fields[7][2] is t                      # *Node refers back to Node


@pytest.mark.parametrize("annotation", [Tuple[int, str], set.__class__, complex.__class__])
def test_annotations_without_go_counterpart_are_refused(annotation):
    with pytest.raises(TypeError):
        go_type(annotation)


@pytest.mark.parametrize("value, name", [
    ([], "[]interface {}"), ([1, "a"], "[]interface {}"), ([1, 2**64 - 1], "[]uint"), ([1.5], "[]float64"),
    ({"a": 1}, "map[string]int"), ({}, "map[string]interface {}"), ([[1], [2]], "[][]int"),
    (2**64 - 1, "uint"), (True, "bool"), (Leaf(), "Leaf"),
])
def test_inferred_go_types(value, name):
    assert infer_go_type(value).name == name


def test_values_without_a_go_type_are_refused():
    with pytest.raises(EncodeError, match="no Go type"):
        infer_go_type(object())


def test_zero_values():
    assert zero_value(go_type(int)) == 0 and zero_value(go_type(List[int])) == []
    assert zero_value(go_type(GoArray[int, 2])) == [0, 0]
    assert zero_value(go_type(Leaf)) == {"Name": "", "Weight": 0.0}
    assert zero_value(EMPTY_STRUCT) == {}


# round trips ----------------------------------------------------------------------

def test_struct_round_trip_with_every_kind(gob):
    node = Node(ID=-3, Size=2**64 - 1, On=True, Blob=b"\x00\x01", Leaves=[Leaf("a", 1.5), Leaf()],
                Index={"x": -1}, Triple=[1.0, -0.0, math.inf], Parent=Node(ID=1), Extra="s", Label="l")
    value, _ = roundtrip(gob, node)
    assert value["label_in_go"] == "l" and value["Leaves"][1] == {"Name": "", "Weight": 0.0}
    back = from_go(value, Node)
    assert back == Node(ID=-3, Size=2**64 - 1, On=True, Blob=b"\x00\x01", Leaves=[Leaf("a", 1.5), Leaf()],
                        Index={"x": -1}, Triple=[1.0, -0.0, math.inf], Parent=Node(ID=1), Extra="s", Label="l")
    assert isinstance(back.Parent, Node) and isinstance(back.Leaves[0], Leaf)


def test_omitted_fields_decode_to_go_zero_values(gob):
    value, data = roundtrip(gob, Node())
    assert value == {"ID": 0, "Size": 0, "On": False, "Blob": b"", "Leaves": [], "Index": None,
                     "Triple": [0.0, 0.0, 0.0], "Parent": None, "Extra": None, "label_in_go": ""}
    assert list(value) == [f[0] for f in go_type(Node).fields]     # field order kept


def test_dicts_encode_as_structs_when_the_type_says_so(gob):
    value, _ = roundtrip(gob, {"Name": "d", "Weight": 2.0}, go_type(Leaf))
    assert value == {"Name": "d", "Weight": 2.0}


def test_types_are_defined_once_per_stream(gob):
    enc = gob.GobEncoder()
    enc.encode(Leaf("a"), go_type(Leaf))
    first = enc.take()
    enc.encode(Leaf("b"), go_type(Leaf))
    second = enc.take()
    assert len(second) < len(first) and b"Weight" in first and b"Weight" not in second
    dec = gob.GobDecoder()
    assert dec.feed(first + second) == [{"Name": "a", "Weight": 0.0}, {"Name": "b", "Weight": 0.0}]


@settings(max_examples=300, deadline=None)
@given(st.recursive(
    st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=20) | st.binary(max_size=20)
    | st.booleans(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=15))
def test_inferred_values_round_trip_and_both_implementations_agree(value):
    t = infer_go_type(value)
    outs = []
    for gob in (compiled, reference):
        enc = gob.GobEncoder()
        try:
            enc.encode(value, t)
        except EncodeError as exc:
            outs.append(("error", str(exc)))
            continue
        data = enc.take()
        outs.append(("ok", data))
        decoded = gob.GobDecoder().feed(data)
        assert decoded == [value]
    assert outs[0] == outs[1]


# errors --------------------------------------------------------------------------------

@pytest.mark.parametrize("value, annotation, match", [
    (2**63, int, "int64"), (-1, GoUint, "uint64"), (1.5, int, "int64"), ("x", bytes, "byte"),
    ([1, 2], GoArray[int, 3], "3 elements"), (None, Leaf, "nil"), (1, bool, "bool"), (b"x", str, "string"),
    ([object()], List[Any], "interface"),
])
def test_values_that_do_not_fit_their_go_type(gob, value, annotation, match):
    enc = gob.GobEncoder()
    with pytest.raises(EncodeError, match=match):
        enc.encode(value, go_type(annotation))
    assert enc.take() == b""                    # nothing half-encoded is left


def test_encoder_state_is_unchanged_by_a_failed_encode(gob):
    enc, dec = gob.GobEncoder(), gob.GobDecoder()
    with pytest.raises(EncodeError):
        enc.encode(Node(ID=2**70), go_type(Node))
    enc.encode(Node(ID=5), go_type(Node))       # the definition is sent now, not lost
    assert dec.feed(enc.take())[0]["ID"] == 5


def test_deep_values_are_refused_not_crashing(gob):
    value: Any = []
    for _ in range(200):
        value = [value]
    with pytest.raises(EncodeError, match="deeper"):
        gob.GobEncoder(max_depth=64).encode(value, _nested_list_type(200))


def _nested_list_type(depth):
    t = go_type(List[int])
    for _ in range(depth):
        t = compiled.GoType(compiled.K_SLICE, "[]" + t.name, elem=t)
    return t


def test_decoder_limits_and_stream_errors(gob):
    dec = gob.GobDecoder(max_message=100)
    with pytest.raises(DecodeLimitError):
        dec.feed(b"\xfe\x10\x00")               # a 4096-byte message
    with pytest.raises(DecodeError, match="already failed"):
        dec.feed(b"\x01")
    with pytest.raises(DecodeError, match="length byte"):
        gob.GobDecoder().feed(b"\xf0")
    with pytest.raises(DecodeError, match="empty message"):
        gob.GobDecoder().feed(b"\x00")
    with pytest.raises(DecodeError, match="predefined"):
        gob.GobDecoder().feed(b"\x03\x03\x02\x00")      # a definition of type 1 (bool)


def test_a_bad_value_is_reported_in_place_and_the_stream_goes_on(gob):
    dec = gob.GobDecoder()
    values = dec.feed(b"\x04\x0c\x00\x7f\x61" + b"\x03\x04\x00\x0e" + b"\x03\x7e\x00\x01")
    assert isinstance(values[0], gob.GobError) and "exceeds" in str(values[0])
    assert values[1] == 7
    assert isinstance(values[2], gob.GobError) and "unknown type id" in str(values[2])


def test_counts_are_bounded_by_the_bytes_that_follow(gob):
    # a []byte claiming 2**60 bytes in an 11-byte message: an error, no allocation
    body = b"\x0a\x00" + b"\xf8\x10\x00\x00\x00\x00\x00\x00\x00"
    values = gob.GobDecoder().feed(bytes([len(body)]) + body)
    assert isinstance(values[0], gob.GobError) and "count" in str(values[0])


def test_max_depth_bounds_decoding(gob):
    enc = compiled.GobEncoder(max_depth=500)
    enc.encode([[[[[[1]]]]]], infer_go_type([[[[[[1]]]]]]))
    values = gob.GobDecoder(max_depth=3).feed(enc.take())
    assert isinstance(values[0], gob.GobError) and "max_depth" in str(values[0])


def test_unhashable_map_keys_from_go_are_an_error(gob):
    # map[Leaf]int is legal in Go; a dict key cannot be a dict
    t = compiled.GoType(compiled.K_MAP, "map[main.Leaf]int", key=go_type(Leaf), elem=go_type(int))
    enc = compiled.GobEncoder()
    enc.encode(_KeyedMap(), t)
    values = gob.GobDecoder().feed(enc.take())
    assert isinstance(values[0], gob.GobError) and "hashable" in str(values[0])


class _KeyedMap(dict):
    def items(self):
        return [({"Name": "k", "Weight": 1.0}, 3)]

    def __len__(self):
        return 1


def test_converting_a_non_struct_to_a_dataclass_is_a_type_error():
    with pytest.raises(TypeError, match="Go struct"):
        from_go(5, Leaf)
    assert from_go(None, Optional[Leaf]) is None
    assert from_go({"Name": "n", "Unknown": 1}, Leaf) == Leaf("n")      # unknown fields skipped


def test_annotations_shadowed_by_a_default_of_the_same_name():
    # Go's `Inner Inner` field: the annotation evaluates to the default, not the class
    from gointerop import Inner, Record
    assert [f for f in go_type(Record).fields if f[0] == "Inner"][0][2] is go_type(Inner)


def test_public_names():
    assert fastrpc.GoUint is GoUint and fastrpc.GoArray is GoArray
    assert {"GoClient", "GoInt", "GoUint", "GoFloat", "GoArray"} <= set(fastrpc.__all__)
