"""Which Go type a Python value travels as, and back.

Gob needs to know Go types (int or uint, field order, struct names).
Declare them with dataclasses and type hints::

    @dataclass
    class Args:
        A: int                     # Go int (int8..int64 arrive the same way)
        B: GoUint                  # Go uint64
        Tags: List[str]            # []string
        Grid: GoArray[int, 3]      # [3]int
        Next: Optional["Args"]     # *Args (None is a nil pointer)

or let them be inferred from values: bool -> bool, int -> int, float ->
float64, str -> string, bytes -> []byte, list -> slice, dict -> map,
dataclass -> struct; a list or dict whose items differ in type, or that is
empty, becomes []interface{} / map[string]interface{}.

Received values arrive as plain Python values (structs as dicts) and are
converted to a declared type with from_go().
"""
from __future__ import annotations

import base64
import collections.abc as _abc
import dataclasses
import functools
import sys
import typing
from typing import Any, Callable, Dict, List, Optional, Tuple

from fastrpc.go._gob import (BOOL, BYTES, COMPLEX, FLOAT, INT, INTERFACE, STRING, UINT, GoType,
                          K_ARRAY, K_BOOL, K_BYTES, K_COMPLEX, K_FLOAT, K_INT, K_INTERFACE,
                          K_MAP, K_OPAQUE, K_SLICE, K_STRING, K_STRUCT, K_UINT)
from fastrpc.errors import EncodeError

__all__ = ["GoInt", "GoUint", "GoFloat", "GoArray", "go_type", "infer_go_type", "argument_go_type", "from_go",
           "zero_value", "zero_for", "lookup_field", "MISSING", "EMPTY_STRUCT"]


class _Marker:
    """A Go type annotation carried inside typing.Annotated."""

    def __init__(self, gotype: Optional[GoType] = None, length: int = -1) -> None:
        self.gotype = gotype
        self.length = length

    def __repr__(self) -> str:
        return f"go:{self.gotype.name}" if self.gotype is not None else f"go:[{self.length}]"


GoInt = typing.Annotated[int, _Marker(INT)]
"""A Go signed integer (int, int8 .. int64): the default for Python int."""
GoUint = typing.Annotated[int, _Marker(UINT)]
"""A Go unsigned integer (uint, uint8 .. uint64)."""
GoFloat = typing.Annotated[float, _Marker(FLOAT)]
"""A Go float (float32 or float64): the default for Python float."""


class _ArrayAlias:
    """GoArray[T, n]: a Go array of n elements of T (a list in Python)."""

    def __getitem__(self, params: Tuple[Any, int]) -> Any:
        elem, length = params
        if not isinstance(length, int) or length < 0:
            raise TypeError(f"GoArray length must be an int >= 0, got {length!r}")
        return typing.Annotated[typing.List[elem], _Marker(length=length)]   # type: ignore[valid-type]


GoArray = _ArrayAlias()

EMPTY_STRUCT = GoType(K_STRUCT, "")     # struct{}: what Go replies with on errors

_DISPLAY = {K_INTERFACE: "interface {}", K_UINT: "uint", K_INT: "int", K_FLOAT: "float64"}
# typing origins that stand for a Go slice / a Go map
_SEQUENCE_ORIGINS = (_abc.Sequence, _abc.MutableSequence, _abc.Iterable, _abc.Collection)
_MAPPING_ORIGINS = (_abc.Mapping, _abc.MutableMapping)
_composites: Dict[str, GoType] = {}      # name -> GoType, so equal structures share one object
_BASIC = {bool: BOOL, int: INT, float: FLOAT, str: STRING, bytes: BYTES, bytearray: BYTES,
          memoryview: BYTES, complex: COMPLEX}


def _qualified(t: GoType) -> str:
    """The name Go gives `t` inside a composite type name ("[]main.Point")."""
    if t.kind == K_STRUCT and t.cls is not None:
        package = t.cls.__dict__.get("__go_package__", "main")
        return f"{package}.{t.name}" if package else t.name
    return _DISPLAY.get(t.kind, t.name)


def _composite(kind: int, elem: GoType, key: Optional[GoType] = None, length: int = 0) -> GoType:
    if kind == K_SLICE:
        name = f"[]{_qualified(elem)}"
    elif kind == K_ARRAY:
        name = f"[{length}]{_qualified(elem)}"
    else:
        assert key is not None, "a map type has a key type"
        name = f"map[{_qualified(key)}]{_qualified(elem)}"
    t = _composites.get(name)
    if t is None or t.elem is not elem or t.key is not key:
        t = GoType(kind, name, elem=elem, key=key, length=length)
        _composites.setdefault(name, t)
    return t


@functools.lru_cache(maxsize=None)
def go_type(annotation: Any) -> GoType:
    """The Go type an annotation stands for (int -> int, List[str] -> []string, ...).

    Raises TypeError for annotations with no Go counterpart.
    """
    if annotation is None or annotation is type(None):
        return EMPTY_STRUCT
    if annotation is Any or annotation is object:
        return INTERFACE
    basic = _BASIC.get(annotation)
    if basic is not None:
        return basic
    if isinstance(annotation, GoType):
        return annotation
    if isinstance(annotation, str):
        raise TypeError(f"unresolved forward reference {annotation!r}: use typing.get_type_hints")
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        # a struct met again while its own fields are resolved: recursion
        return _struct_cache.get(annotation) or _struct_type(annotation)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        base, markers = args[0], [m for m in args[1:] if isinstance(m, _Marker)]
        if not markers:
            return go_type(base)
        marker = markers[0]
        if marker.gotype is not None:
            return marker.gotype
        elem_args = typing.get_args(base)
        return _composite(K_ARRAY, go_type(elem_args[0] if elem_args else Any), length=marker.length)
    if origin is typing.Union:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return go_type(rest[0])            # Optional[T]: a Go pointer, nil is None
        return INTERFACE
    if origin in (list, tuple, set, frozenset) or origin in _SEQUENCE_ORIGINS:
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            raise TypeError(f"{annotation}: a fixed tuple has no Go type; use Tuple[T, ...] or GoArray")
        return _composite(K_SLICE, go_type(args[0]) if args else INTERFACE)
    if origin is dict or origin in _MAPPING_ORIGINS:
        key, value = (args if args else (str, Any))
        return _composite(K_MAP, go_type(value), key=go_type(key))
    if annotation in (list, tuple):
        return _composite(K_SLICE, INTERFACE)
    if annotation is dict:
        return _composite(K_MAP, INTERFACE, key=STRING)
    raise TypeError(f"{annotation!r} has no Go counterpart")


def _struct_type(cls: type) -> GoType:
    t = GoType(K_STRUCT, cls.__dict__.get("__go_name__", cls.__name__), cls=cls)
    # Cached before the fields are resolved, so a field may refer back to cls.
    _struct_cache[cls] = t
    for field, hint in _field_hints(cls):
        t.fields.append((field.metadata.get("go", field.name), field.name, go_type(hint)))
    return t


def _field_hints(cls: type) -> list[Any]:
    """(field, resolved annotation) for each init field of dataclass `cls`.

    Go structs often name a field after its type (``Inner Inner``). In a
    class body, ``Inner: Inner = field(...)`` evaluates the annotation after
    the name is bound to the default, so the annotation is the default, not
    the class: such a hint is looked up in the module instead.
    """
    try:
        hints = typing.get_type_hints(cls, include_extras=True)
    except NameError as exc:
        raise TypeError(f"cannot resolve the annotations of {cls.__qualname__}: {exc} "
                        "(define it at module level)") from None
    module = vars(sys.modules[cls.__module__]) if cls.__module__ in sys.modules else {}
    out = []
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        hint = hints[field.name]
        default = type(None) if field.default is None else field.default    # get_type_hints turns None so
        shadowed = hint is default and field.name in module and module[field.name] is not default
        if isinstance(hint, dataclasses.Field) or shadowed:
            if field.name not in module:
                raise TypeError(f"{cls.__name__}.{field.name}: cannot tell its type "
                                f"(its annotation evaluated to its default value)")
            hint = module[field.name]
        out.append((field, hint))
    return out


_struct_cache: Dict[type, GoType] = {}


def infer_go_type(value: Any) -> GoType:
    """The Go type `value` travels as when no annotation says otherwise."""
    if value is True or value is False:
        return BOOL
    cls = type(value)
    basic = _BASIC.get(cls)
    if basic is not None:
        if basic is INT and value > _INT64_MAX:
            return UINT                         # only a Go uint64 can hold it
        return basic
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return go_type(cls)   # type: ignore[arg-type]  # a dataclass's class is hashable
    if isinstance(value, (list, tuple)):
        return _composite(K_SLICE, _common([infer_go_type(v) for v in value]))
    if isinstance(value, dict):
        keys = _common([infer_go_type(k) for k in value])
        return _composite(K_MAP, _common([infer_go_type(v) for v in value.values()]),
                          key=STRING if keys is INTERFACE and not value else keys)
    for base in (int, float, str, bytes):                # subclasses (IntEnum, ...)
        if isinstance(value, base):
            return infer_go_type(base(value))   # type: ignore[arg-type]  # value is an instance of base
    raise EncodeError(f"{cls.__name__} has no Go type; use a dataclass or a basic type")


_INT64_MAX = (1 << 63) - 1


def argument_go_type(value: Any) -> GoType:
    """The Go type a call's argument travels as when no arg_type says otherwise.

    As infer_go_type, except that a dict whose keys are all strings is a
    struct of those fields (net/rpc arguments are structs; a map argument
    needs ``arg_type=Dict[str, V]``). Fields holding None are left out, as
    Go leaves nil fields out.
    """
    if isinstance(value, dict) and value and all(type(k) is str for k in value):
        return _struct_of(tuple((k, infer_go_type(v)) for k, v in value.items() if v is not None))
    return infer_go_type(value)


def _struct_of(fields: Tuple[Tuple[str, GoType], ...]) -> GoType:
    # One GoType per shape: a connection defines each type once, however
    # many calls send it (a bounded cache; beyond it, types are per call).
    key = tuple((name, id(t)) for name, t in fields)
    t = _dict_structs.get(key)
    if t is None:
        t = GoType(K_STRUCT, "Args", fields=[(name, name, ft) for name, ft in fields])
        if len(_dict_structs) < 4096:
            _dict_structs[key] = t
    return t


_dict_structs: Dict[tuple[Any, ...], GoType] = {}


def _common(types: List[GoType]) -> GoType:
    if not types:
        return INTERFACE
    first = types[0]
    for t in types:
        if t is not first:
            if {t, first} == {INT, UINT}:
                first = UINT if all(x in (INT, UINT) for x in types) else INTERFACE
                continue
            return INTERFACE
    return first


def zero_value(t: GoType) -> Any:
    """Go's zero value of `t`, as a Python value that encodes as `t`."""
    k = t.kind
    if k in (K_INT, K_UINT):
        return 0
    if k == K_FLOAT:
        return 0.0
    if k == K_BOOL:
        return False
    if k == K_STRING:
        return ""
    if k in (K_BYTES, K_OPAQUE):
        return b""
    if k == K_COMPLEX:
        return 0j
    if k == K_SLICE:
        return []
    if k == K_MAP:
        return {}
    if k == K_ARRAY:
        return [zero_value(t.elem) for _ in range(t.length)]
    if k == K_STRUCT:
        return {name: (None if ft.kind == K_STRUCT else zero_value(ft)) for name, _, ft in t.fields}
    return None


@functools.lru_cache(maxsize=None)
def converter(annotation: Any) -> Optional[Callable[[Any], Any]]:
    """A function turning a decoded value into `annotation`'s type; None: keep it as is.

    Converters take None too: Go's nil slice, map or []byte (which arrives
    as None over some codecs) becomes the declared collection, empty, the
    same over every codec; a nil pointer (``Optional[...]``) stays None.
    """
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        return _dataclass_converter(annotation)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return converter(args[0])
    if origin is typing.Union:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            inner = converter(rest[0])
            if inner is None:
                return None
            convert: Callable[[Any], Any] = inner
            return lambda v: None if v is None else convert(v)
        return None
    if origin in (list, set, frozenset) or origin in _SEQUENCE_ORIGINS or origin is tuple:
        inner = converter(args[0]) if args else None
        make = origin if origin in (set, frozenset, tuple) else list
        if inner is None:
            return _empty_list if make is list else (lambda v: make(() if v is None else v))
        return lambda v: make(() if v is None else (inner(x) for x in v))
    if origin is dict or origin in _MAPPING_ORIGINS:
        kc, vc = (converter(args[0]), converter(args[1])) if args else (None, None)
        if kc is None and vc is None:
            return _empty_dict
        kc, vc = kc or _same, vc or _same
        return lambda v: {} if v is None else {kc(k): vc(x) for k, x in v.items()}
    if annotation is list:
        return _empty_list
    if annotation is dict:
        return _empty_dict
    if annotation is tuple:
        return lambda v: () if v is None else tuple(v)
    if annotation is bytes:
        return _to_bytes
    if annotation is float:
        return _to_float                        # JSON writes 1.0 as 1
    return None


def _empty_list(v: Any) -> Any:
    return [] if v is None else v


def _empty_dict(v: Any) -> Any:
    return {} if v is None else v


def _to_float(v: Any) -> Any:
    return v if v is None else float(v)


def _to_bytes(v: Any) -> Any:
    # JSON carries Go []byte as base64 text, and a nil one as null
    if v is None:
        return b""
    return base64.b64decode(v, validate=True) if isinstance(v, str) else v


def _same(v: Any) -> Any:
    return v


MISSING = object()


def lookup_field(fields: Dict[Any, Any], name: str) -> Any:
    """The field `name` of a received struct, matched as Go's decoders match
    names: exactly, else case-insensitively (encoding/json's rule), else
    also ignoring underscores (``user_id`` takes ``UserID``); MISSING if none."""
    if name in fields:
        return fields[name]
    folded = name.casefold()
    loose = folded.replace("_", "")
    found = MISSING
    for key, value in fields.items():
        if isinstance(key, str):
            key = key.casefold()
            if key == folded:
                return value
            if found is MISSING and key.replace("_", "") == loose:
                found = value
    return found


def zero_for(annotation: Any) -> Any:
    """Go's zero value for a value declared `annotation` (None when unknown)."""
    if annotation is None:
        return None
    try:
        return zero_value(go_type(annotation))
    except TypeError:
        return None


def _dataclass_converter(cls: type) -> Callable[[Any], Any]:
    # (attribute, go name, converter, zero) filled on first use (recursion)
    plan: List[Tuple[str, str, Optional[Callable[[Any], Any]], Any]] = []

    def convert(value: Any) -> Any:
        if value is None or isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise TypeError(f"expected a Go struct for {cls.__name__}, got {type(value).__name__}")
        if not plan:
            for field, hint in _field_hints(cls):
                required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
                plan.append((field.name, field.metadata.get("go", field.name), converter(hint),
                             zero_for(hint) if required else MISSING))
        kwargs = {}
        for attr, name, conv, zero in plan:
            item = value[name] if name in value else lookup_field(value, name)
            if item is MISSING:
                if zero is MISSING:
                    continue            # a field the peer did not send keeps its default
                item = zero             # ... or, with none, Go's zero value
            kwargs[attr] = conv(item) if conv is not None else item
        return cls(**kwargs)

    return convert


def from_go(value: Any, annotation: Any) -> Any:
    """Convert a decoded value (structs as dicts) to the type `annotation` declares."""
    conv = converter(annotation)
    return value if conv is None else conv(value)
