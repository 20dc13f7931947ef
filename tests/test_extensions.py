"""Extension types: datetime (MessagePack's Timestamp), date, Decimal, UUID,
set, frozenset, tuples, Enum and dataclasses, plus the default= / ext_hook=
hooks; round trips (hypothesis), msgpack-python agreeing on the Timestamp,
malformed payloads as DecodeError, and every client kind against a server
process."""
import asyncio
import dataclasses
import datetime as dt
import decimal
import enum
import json
import uuid

import msgpack
import pytest
from hypothesis import given, settings, strategies as st

import fastrpc
from fastrpc import ExtType, packb, unpackb
from fastrpc.errors import DecodeError, EncodeError, RemoteEncodeError
from support import server_process

UTC = dt.timezone.utc


@fastrpc.register_type
class Color(enum.Enum):
    """The twin of serve.py's Color (registered under the same name)."""
    RED = "red"
    GREEN = "green"


@fastrpc.register_type
@dataclasses.dataclass
class Entry:
    """The twin of serve.py's Entry."""
    key: str
    value: object = None
    tags: list = dataclasses.field(default_factory=list)


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclasses.dataclass(frozen=True)
class Point:
    x: float
    y: float


def round_trip(value, **options):
    return unpackb(packb(value, **options))


# --- datetime: MessagePack's Timestamp (ext -1) ----------------------------------------------

aware = st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30),
                     timezones=st.sampled_from([UTC, dt.timezone(dt.timedelta(hours=5, minutes=30)),
                                                dt.timezone(-dt.timedelta(hours=8))]))


@given(aware)
def test_datetimes_round_trip_as_the_same_instant_in_utc(value):
    back = round_trip(value)
    assert back == value and back.tzinfo is UTC
    assert back.utcoffset() == dt.timedelta(0)


@given(aware)
def test_msgpack_python_reads_and_writes_the_same_timestamps(value):
    ours = packb(value)
    assert ours == msgpack.packb(value, datetime=True)
    assert msgpack.unpackb(ours, timestamp=3) == value
    assert unpackb(msgpack.packb(value, datetime=True)) == value


@pytest.mark.parametrize("value, encoded", [
    (dt.datetime(1970, 1, 1, tzinfo=UTC), "d6ff00000000"),                       # timestamp 32
    (dt.datetime(2106, 2, 7, 6, 28, 15, tzinfo=UTC), "d6ffffffffff"),            # largest 32-bit
    (dt.datetime(1970, 1, 1, 0, 0, 1, 500000, tzinfo=UTC), "d7ff77359400" "00000001"),   # timestamp 64
    (dt.datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC), "c70cff00000000ffffffffffffffff"),  # 96, negative
])
def test_timestamp_encodings_follow_the_msgpack_spec(value, encoded):
    assert packb(value).hex() == encoded
    assert unpackb(bytes.fromhex(encoded)) == value


def test_nanoseconds_are_truncated_to_microseconds():
    # 1 s + 999,999,999 ns (timestamp 64): Python keeps 999,999 us.
    data = msgpack.packb(msgpack.Timestamp(1, 999_999_999))
    assert unpackb(data) == dt.datetime(1970, 1, 1, 0, 0, 1, 999_999, tzinfo=UTC)


def test_a_naive_datetime_is_refused_with_the_fix():
    with pytest.raises(EncodeError, match="naive datetime has no time zone"):
        packb(dt.datetime(2026, 1, 1))


@pytest.mark.parametrize("payload, message", [
    ("d7ff" + "fffffffc" + "00000000", "nanoseconds"),      # 64-bit with nanoseconds > 999,999,999
    ("c705ff0000000000", "4, 8 or 12 bytes"),
    ("c70cff00000000" + "7fffffffffffffff", "outside datetime's years"),
])
def test_malformed_timestamps_are_decode_errors(payload, message):
    with pytest.raises(DecodeError, match=message):
        unpackb(bytes.fromhex(payload))


# --- the other standard types ---------------------------------------------------------------

decimals = st.decimals(allow_nan=False) | st.sampled_from([decimal.Decimal("NaN"), decimal.Decimal("-Infinity"),
                                                           decimal.Decimal("sNaN"), decimal.Decimal("-0.000")])


@given(st.dates())
def test_dates_round_trip(value):
    back = round_trip(value)
    assert back == value and type(back) is dt.date


@given(decimals)
def test_decimals_round_trip_exactly(value):
    back = round_trip(value)
    assert type(back) is decimal.Decimal and str(back) == str(value)     # digits, exponent, sign, NaN


@given(st.uuids())
def test_uuids_round_trip(value):
    assert round_trip(value) == value


hashables = st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.text() | st.binary()
                         | st.floats(allow_nan=False), lambda inner: st.frozensets(inner, max_size=4), max_leaves=12)


@given(st.sets(hashables, max_size=8), st.frozensets(hashables, max_size=8))
def test_sets_and_frozensets_round_trip(a, b):
    back = round_trip([a, b])
    assert back == [a, b] and type(back[0]) is set and type(back[1]) is frozenset


values = st.recursive(
    st.none() | st.integers(-2**63, 2**63 - 1) | st.text(max_size=8) | st.dates() | st.uuids()
    | aware | st.sampled_from(list(Color)),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.builds(Entry, st.text(max_size=5), inner, st.lists(inner, max_size=3)),
    max_leaves=15)


@settings(max_examples=200)
@given(values)
def test_nested_values_round_trip_with_tuples_kept(value):
    assert round_trip(value, keep_tuples=True) == value


def test_tuples_are_lists_unless_asked():
    assert round_trip((1, (2, 3))) == [1, [2, 3]]
    assert round_trip((1, (2, 3)), keep_tuples=True) == (1, (2, 3))
    assert round_trip({(1, 2): "k"}, keep_tuples=True) == {(1, 2): "k"}


# --- Enum and dataclasses --------------------------------------------------------------------

def test_unregistered_enums_and_dataclasses_travel_as_plain_values():
    assert round_trip(Level.HIGH) == 2
    assert round_trip(Point(1.0, 2.5)) == {"x": 1.0, "y": 2.5}
    assert round_trip([Point(0.0, 0.0), {"p": Point(1.0, 1.0)}]) == [{"x": 0.0, "y": 0.0}, {"p": {"x": 1.0, "y": 1.0}}]


def test_registered_enums_and_dataclasses_are_rebuilt():
    value = [Color.RED, Entry("k", Color.GREEN, [Entry("inner")])]
    back = round_trip(value)
    assert back == value and type(back[0]) is Color and type(back[1].tags[0]) is Entry


def test_a_record_is_rebuilt_only_when_registered_here():
    # What a peer that registered "Secret" sends: [name, fields]. Here it is a plain map.
    data = packb(ExtType(8, packb(["Secret", {"cmd": "rm -rf"}])))
    assert unpackb(data) == {"cmd": "rm -rf"}


def test_records_match_fields_by_name():
    # Extra fields are ignored, missing ones take their defaults (as Go does).
    assert unpackb(packb(ExtType(8, packb(["Entry", {"key": "k", "extra": 1}])))) == Entry("k")
    with pytest.raises(DecodeError, match="lacks key"):
        unpackb(packb(ExtType(8, packb(["Entry", {"value": 1}]))))
    with pytest.raises(DecodeError, match="'blue' is not a value of Color"):
        unpackb(packb(ExtType(8, packb(["Color", "blue"]))))


def test_register_type_refuses_what_it_cannot_rebuild():
    with pytest.raises(TypeError, match="Enum class or a dataclass"):
        fastrpc.register_type(dict)

    @dataclasses.dataclass
    class Entry:                 # another class under a taken name
        key: str
    with pytest.raises(ValueError, match="'Entry' is already registered"):
        fastrpc.register_type(Entry)


# --- hooks -----------------------------------------------------------------------------------

class Money:
    def __init__(self, amount, currency):
        self.amount, self.currency = amount, currency

    def __eq__(self, other):
        return isinstance(other, Money) and (self.amount, self.currency) == (other.amount, other.currency)


def money_default(obj):
    if isinstance(obj, Money):
        return ExtType(20, f"{obj.amount} {obj.currency}".encode())
    raise TypeError(f"no stand-in for {type(obj).__name__}")


def money_ext_hook(code, data):
    if code == 20:
        amount, currency = data.decode().split()
        return Money(int(amount), currency)
    return ExtType(code, data)


def test_default_and_ext_hook_carry_application_types():
    data = packb({"price": Money(5, "EUR")}, default=money_default)
    assert unpackb(data, ext_hook=money_ext_hook) == {"price": Money(5, "EUR")}
    assert unpackb(data) == {"price": ExtType(20, b"5 EUR")}         # without the hook: the raw ext
    with pytest.raises(EncodeError, match="cannot encode object of type Money"):
        packb(Money(1, "X"))
    with pytest.raises(EncodeError, match="type object: default\\(\\) raised TypeError: no stand-in for object"):
        packb(object(), default=money_default)
    with pytest.raises(EncodeError, match="default\\(\\) returned a Money"):
        packb(Money(1, "X"), default=lambda o: o)


def test_an_ext_hook_that_fails_is_a_decode_error():
    def broken(code, data):
        raise KeyError(code)
    with pytest.raises(DecodeError, match="ext_hook failed on ext 20: KeyError"):
        unpackb(packb(ExtType(20, b"x")), ext_hook=broken)


@pytest.mark.parametrize("payload, message", [
    (ExtType(2, b"2026-13-01"), "malformed ext 2"),
    (ExtType(2, b"20260101"), "10 ASCII bytes"),
    (ExtType(3, b"one"), "not a decimal"),
    (ExtType(4, b"short"), "16 bytes"),
    (ExtType(5, packb({"a": 1})), "payload is an array"),
    (ExtType(5, packb([[1]])), "hashable"),
    (ExtType(7, packb([1]) + b"\x01"), "trailing bytes"),
    (ExtType(8, packb("Entry")), "a record is"),
    (ExtType(15, b""), "reserved by fastrpc"),
])
def test_malformed_extension_payloads_are_decode_errors(payload, message):
    with pytest.raises(DecodeError, match=message):
        unpackb(packb(payload))


def test_nested_extension_payloads_keep_the_decode_limits():
    deep = packb(ExtType(7, packb([[[[[1]]]]])))
    assert unpackb(deep) == ([[[[1]]]],)
    with pytest.raises(fastrpc.errors.DecodeLimitError, match="max_depth=4"):
        unpackb(deep, max_depth=4)


# --- end to end ------------------------------------------------------------------------------

KINDS = ["client", "aclient", "balancer", "abalancer"]
ZONE = dt.timezone(dt.timedelta(hours=2))
SAMPLES = [dt.datetime(2026, 12, 3, 10, 0, tzinfo=ZONE), dt.date(2026, 12, 3), decimal.Decimal("19.99"),
           uuid.UUID(int=7), {1, 2}, frozenset({"a"}), Color.GREEN, Entry("k", 1, ["t"])]


@pytest.fixture(scope="module")
def srv():
    with server_process(env={"FASTRPC_TEST_HOOKS": "1"}) as server:
        yield server


@pytest.fixture(scope="module")
def tuples_srv():
    with server_process(env={"FASTRPC_TEST_SERVER": json.dumps({"keep_tuples": True})}) as server:
        yield server


def through(kind, address, method, *args, **settings):
    if kind == "client":
        with fastrpc.Client(address, timeout=10, **settings) as c:
            return c.call(method, *args)
    if kind == "balancer":
        with fastrpc.Balancer([address], timeout=10, health_interval=0, **settings) as b:
            return b.call(method, *args)

    async def run():
        if kind == "aclient":
            async with fastrpc.AsyncClient(address, timeout=10, **settings) as c:
                return await c.call(method, *args)
        async with fastrpc.AsyncBalancer([address], timeout=10, health_interval=0, **settings) as b:
            return await b.call(method, *args)
    return asyncio.run(run())


@pytest.mark.parametrize("kind", KINDS)
def test_every_type_reaches_the_handler_as_itself_and_comes_back(srv, kind):
    results = through(kind, srv.address, "KV.Kind", SAMPLES)
    assert results == ["list", SAMPLES]
    assert [type(v) for v in results[1]] == [type(v) for v in SAMPLES]
    assert results[1][0].tzinfo is UTC                  # the instant, in UTC


@pytest.mark.parametrize("kind", KINDS)
def test_results_of_registered_and_unregistered_types(srv, kind):
    entry, color, shade, note = through(kind, srv.address, "KV.Entries")
    assert entry == Entry("a", 1, ["x"]) and color is Color.GREEN
    assert shade == 1                                                     # an Enum only the server has
    assert note == {"text": "hi", "entry": Entry("b")}                   # a dataclass only the server has


@pytest.mark.parametrize("kind", KINDS)
def test_hooks_on_both_sides_carry_an_application_type(srv, kind):
    hooks = {"default": money_default, "ext_hook": money_ext_hook}
    assert through(kind, srv.address, "KV.Worth", Money(21, "EUR"), **hooks) == Money(42, "EUR")


def test_a_client_without_the_hook_gets_the_raw_ext_and_a_clear_error(srv):
    with fastrpc.Client(srv.address, timeout=10) as c:
        with pytest.raises(EncodeError, match="cannot encode object of type Money"):
            c.call("KV.Worth", Money(1, "EUR"))
        # Sent by hand, the server's hook reads it; its result comes back raw.
        assert c.call("KV.Worth", ExtType(20, b"2 EUR")) == ExtType(20, b"4 EUR")


def test_a_result_the_server_cannot_encode_is_a_remote_encode_error(srv):
    with fastrpc.Client(srv.address, timeout=10) as c:
        with pytest.raises(RemoteEncodeError, match="naive datetime"):
            c.call("KV.Naive")
        with pytest.raises(RemoteEncodeError, match="default\\(\\) raised TypeError: no stand-in for object"):
            c.call("Arith.Unencodable")


@pytest.mark.parametrize("kind", ["client", "aclient"])
def test_tuples_kept_both_ways_when_asked(tuples_srv, kind):
    # The client sends tuples as tuples; the server (keep_tuples) returns them so.
    assert through(kind, tuples_srv.address, "Arith.Echo", (1, (2, "x")), keep_tuples=True) == (1, (2, "x"))
    # A client that did not ask still gets the server's tuples as tuples: decoding always knows them.
    assert through(kind, tuples_srv.address, "Arith.Echo", [1, 2]) == [1, 2]


def test_go_codecs_refuse_the_hooks():
    with pytest.raises(ValueError, match="options of fastrpc's codec"):
        fastrpc.Client("tcp://127.0.0.1:1", codec="gob", default=money_default)
    with pytest.raises(TypeError, match="default must be a callable"):
        fastrpc.Client("tcp://127.0.0.1:1", default=1)
    with pytest.raises(TypeError, match="ext_hook must be a callable"):
        fastrpc.Server(ext_hook="x")


@settings(max_examples=500)
@given(st.sampled_from([-1, *range(0, 16)]), st.binary(max_size=40) | st.builds(packb, values))
def test_any_payload_of_a_fastrpc_ext_code_decodes_or_is_a_decode_error(code, data):
    # What a hostile peer can send under fastrpc's codes: a value, or DecodeError.
    try:
        unpackb(packb(ExtType(code, data)))
    except DecodeError:
        pass
