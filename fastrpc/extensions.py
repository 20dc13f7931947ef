"""The value types fastrpc carries beyond plain MessagePack, and their registry.

Owns: what each extension type looks like on the wire (docs/PROTOCOL.md,
"Extension types"), turning values into those payloads and back, and the
registry of application types (`register_type`) that may be rebuilt from the
wire. The compiled codec calls in here only for values it has no fast path
for, so plain values never pay for any of this.

Decoding is safe by construction: the only classes ever built from the wire
are the standard library's (datetime, date, Decimal, UUID, set, frozenset,
tuple) and those registered on the receiving side. Nothing is looked up or
imported by a name the peer sends.
"""
from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import decimal
import enum
import uuid
from typing import Any, Callable, Dict, Optional, Tuple, TypeVar

__all__ = ["EXT_TIMESTAMP", "EXT_DATE", "EXT_DECIMAL", "EXT_UUID", "EXT_SET", "EXT_FROZENSET",
           "EXT_TUPLE", "EXT_RECORD", "RESERVED_CODES", "json_form", "register_type", "registered_name"]

#: MessagePack's own Timestamp extension (msgpack spec: type -1).
EXT_TIMESTAMP = -1
#: fastrpc's codes (1 is numpy arrays, in the codec itself). 0..15 are
#: fastrpc's; applications use 16..127 through `default=` / `ext_hook=`.
EXT_DATE = 2
EXT_DECIMAL = 3
EXT_UUID = 4
EXT_SET = 5
EXT_FROZENSET = 6
EXT_TUPLE = 7
EXT_RECORD = 8
RESERVED_CODES = range(0, 16)

#: Codes whose payload is itself one MessagePack value (the codec encodes
#: and decodes it, with the same limits); the rest carry raw bytes.
NESTED_CODES = frozenset((EXT_SET, EXT_FROZENSET, EXT_TUPLE, EXT_RECORD))

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
_UTC = _dt.timezone.utc
_MAX_NANOSECONDS = 999_999_999

# type -> the name it travels under, and back (register_type). The codec
# reads REGISTERED_TYPES directly: an empty dict costs it one truth test.
REGISTERED_TYPES: Dict[type, str] = {}
_BY_NAME: Dict[str, type] = {}

T = TypeVar("T", bound=type)


def register_type(cls: T, name: Optional[str] = None) -> T:
    """Let values of `cls` (an Enum or a dataclass) travel as themselves; usable
    as a class decorator.

    Unregistered, an Enum member is sent as its value and a dataclass as a
    map of its fields: any peer can read them, and they arrive as plain
    values. Registered (on both sides, under the same `name`, default the
    class name), they travel as a named record and the receiver rebuilds
    the Enum member or the dataclass. A receiver that has not registered
    the name gets the plain value: nothing is built from the wire that was
    not registered on the receiving side.
    """
    if not isinstance(cls, type) or not (issubclass(cls, enum.Enum) or dataclasses.is_dataclass(cls)):
        raise TypeError("register_type takes an Enum class or a dataclass "
                        "(use default= and ext_hook= for other types)")
    name = cls.__name__ if name is None else name
    if not isinstance(name, str) or not name:
        raise ValueError("the name of a registered type is a non-empty str")
    known = _BY_NAME.get(name)
    if known is not None and known is not cls:
        raise ValueError(f"{name!r} is already registered for {known.__module__}.{known.__qualname__}")
    REGISTERED_TYPES[cls] = name
    _BY_NAME[name] = cls
    return cls


def registered_name(cls: type) -> Optional[str]:
    """The name `cls` travels under, or None when it is not registered."""
    return REGISTERED_TYPES.get(cls)


# ---------------------------------------------------------------------------
# Encoding: value -> (code, payload, payload_is_a_value)

def encode(obj: Any) -> Optional[Tuple[Optional[int], Any, bool]]:
    """How `obj` travels, or None when fastrpc has no extension type for it.

    Returns (code, payload, nested): with `nested`, payload is a value the
    codec encodes as the ext's content; otherwise it is the ext's bytes.
    A code of None means "send payload as a plain value instead".
    """
    cls = type(obj)
    name = REGISTERED_TYPES.get(cls) if REGISTERED_TYPES else None
    if name is not None:
        return EXT_RECORD, [name, _plain(obj)], True
    if isinstance(obj, _dt.datetime):
        return EXT_TIMESTAMP, _timestamp_bytes(obj), False
    if isinstance(obj, _dt.date):
        return EXT_DATE, obj.isoformat().encode("ascii"), False
    if isinstance(obj, decimal.Decimal):
        return EXT_DECIMAL, str(obj).encode("ascii"), False
    if isinstance(obj, uuid.UUID):
        return EXT_UUID, obj.bytes, False
    if isinstance(obj, frozenset):
        return EXT_FROZENSET, list(obj), True
    if isinstance(obj, set):
        return EXT_SET, list(obj), True
    if isinstance(obj, enum.Enum) or (dataclasses.is_dataclass(obj) and not isinstance(obj, type)):
        return None, _plain(obj), False
    return None


def _plain(obj: Any) -> Any:
    """An Enum member's value, or a dataclass's fields as a map (shallow:
    the codec encodes the field values, dataclasses among them)."""
    if isinstance(obj, enum.Enum):
        return obj.value
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


def _timestamp_bytes(value: _dt.datetime) -> bytes:
    """MessagePack's Timestamp: 4, 8 or 12 bytes, the smallest that holds it."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("a naive datetime has no time zone to send; give it one "
                         "(datetime.now(timezone.utc), dt.replace(tzinfo=...)) or send dt.isoformat()")
    delta = value - _EPOCH
    seconds = delta.days * 86400 + delta.seconds
    nanoseconds = delta.microseconds * 1000
    if seconds >> 34 == 0:
        if nanoseconds == 0 and seconds >> 32 == 0:
            return seconds.to_bytes(4, "big")
        return ((nanoseconds << 34) | seconds).to_bytes(8, "big")
    return nanoseconds.to_bytes(4, "big") + seconds.to_bytes(8, "big", signed=True)


# ---------------------------------------------------------------------------
# Decoding: (code, payload) -> value

def decode(code: int, data: bytes) -> Any:
    """The value of a byte-payload extension of fastrpc's (or MessagePack's
    Timestamp). Raises ValueError (the codec reports a DecodeError) when
    the payload is malformed."""
    if code == EXT_TIMESTAMP:
        return _timestamp_value(data)
    if code == EXT_DATE:
        if len(data) != 10:
            raise ValueError("a date is 10 ASCII bytes, YYYY-MM-DD")
        return _dt.date.fromisoformat(data.decode("ascii"))
    if code == EXT_DECIMAL:
        try:
            return decimal.Decimal(data.decode("ascii"))
        except decimal.InvalidOperation:
            raise ValueError(f"not a decimal number: {data[:40]!r}") from None
    if code == EXT_UUID:
        if len(data) != 16:
            raise ValueError("a UUID is 16 bytes")
        return uuid.UUID(bytes=bytes(data))
    raise ValueError(f"ext code {code} is reserved by fastrpc and not known to this version")


def decode_nested(code: int, value: Any) -> Any:
    """The value of an extension whose payload decoded to `value`."""
    if code == EXT_TUPLE:
        _expect_list(value, "tuple")
        return tuple(value)
    if code == EXT_SET or code == EXT_FROZENSET:
        _expect_list(value, "set")
        try:
            return set(value) if code == EXT_SET else frozenset(value)
        except TypeError as exc:
            raise ValueError(f"a set's items must be hashable ({exc})") from None
    if code == EXT_RECORD:
        if type(value) is not list or len(value) != 2 or type(value[0]) is not str:
            raise ValueError("a record is [name, value]")
        name, plain = value
        cls = _BY_NAME.get(name)
        if cls is None:
            return plain         # not registered here: the plain value, nothing built
        return _rebuild(cls, plain)
    raise ValueError(f"ext code {code} is reserved by fastrpc and not known to this version")


def _expect_list(value: Any, what: str) -> None:
    if type(value) is not list:
        raise ValueError(f"a {what}'s payload is an array, not {type(value).__name__}")


def _rebuild(cls: type, plain: Any) -> Any:
    """A registered Enum member or dataclass from its plain value. Fields are
    matched by name, as Go does: unknown ones are ignored, missing ones take
    their defaults (a missing field without a default is an error)."""
    if issubclass(cls, enum.Enum):
        try:
            return cls(plain)
        except ValueError:
            raise ValueError(f"{plain!r} is not a value of {cls.__name__}") from None
    if type(plain) is not dict:
        raise ValueError(f"a {cls.__name__} record holds a map, not {type(plain).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}   # type: ignore[arg-type]  # checked at registration
    init = {k: v for k, v in plain.items() if type(k) is str and k in known and known[k].init}
    missing = [f.name for f in known.values() if f.init and f.name not in init
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ValueError(f"a {cls.__name__} record lacks {', '.join(missing)}")
    try:
        return cls(**init)
    except Exception as exc:       # the class's own checks (__post_init__) refused it
        raise ValueError(f"{cls.__name__}({', '.join(init)}) failed: {type(exc).__name__}: {exc}") from None


def _timestamp_value(data: bytes) -> _dt.datetime:
    n = len(data)
    if n == 4:
        seconds, nanoseconds = int.from_bytes(data, "big"), 0
    elif n == 8:
        packed = int.from_bytes(data, "big")
        seconds, nanoseconds = packed & ((1 << 34) - 1), packed >> 34
    elif n == 12:
        nanoseconds = int.from_bytes(data[:4], "big")
        seconds = int.from_bytes(data[4:], "big", signed=True)
    else:
        raise ValueError(f"a timestamp is 4, 8 or 12 bytes, not {n}")
    if nanoseconds > _MAX_NANOSECONDS:
        raise ValueError(f"timestamp nanoseconds {nanoseconds} above {_MAX_NANOSECONDS}")
    try:
        # Python's datetime holds microseconds: nanoseconds are truncated.
        return _EPOCH + _dt.timedelta(seconds=seconds, microseconds=nanoseconds // 1000)
    except OverflowError:
        raise ValueError(f"timestamp {seconds}s is outside datetime's years 1..9999") from None


def check_hooks(default: Optional[Callable[[Any], Any]], ext_hook: Optional[Callable[[int, bytes], Any]]) -> None:
    """Refuse hooks that are not callables (at construction, not at the first call)."""
    for name, hook in (("default", default), ("ext_hook", ext_hook)):
        if hook is not None and not callable(hook):
            raise TypeError(f"{name} must be a callable (or None)")


def json_form(value: Any) -> Any:
    """A JSON-encodable stand-in for a value JSON has no form for (json.dumps's
    `default`): bytes as text (or {"base64": ...}), arrays as lists,
    datetimes as ISO 8601, Decimal and UUID as strings, sets and tuples as
    lists, Enum members as values, dataclasses as maps, ExtType as
    {"ext": code, "data": base64}."""
    from fastrpc._core.codec import ExtType      # (the codec imports this module)
    if isinstance(value, ExtType):
        return {"ext": value.code, "data": base64.b64encode(value.data).decode("ascii")}
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(raw).decode("ascii")}
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    tolist = getattr(value, "tolist", None)            # numpy arrays and scalars
    if callable(tolist):
        return tolist()
    raise TypeError(f"{type(value).__name__} has no JSON form")
