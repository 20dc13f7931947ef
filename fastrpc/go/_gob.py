"""Go's encoding/gob, as net/rpc speaks it: the byte-level encoder and decoder.

Compiled with Cython (pure-Python mode, like fastrpc/_core/select.py); the same source
runs uncompiled as the reference implementation.

A gob stream is a sequence of messages, each a uint byte count followed by
an int type id: negative ids carry a type definition (a wireType), positive
ones a value of a type defined earlier on the same stream. Type ids are
remembered per stream, so a GobEncoder and a GobDecoder live as long as one
connection. Values are described by GoType trees (which Go type to send);
building them from Python annotations is fastrpc.go.types' job.

Wire details follow encoding/gob: uints < 128 are one byte, larger ones a
negated byte count then big-endian bytes; ints are zig-zag folded into
uints; floats are their IEEE bits byte-reversed; struct fields travel as
(field-number delta, value) pairs ending with 0, zero values omitted;
top-level values that are not structs are preceded by a 0 delta.
"""
import struct as _struct

from fastrpc.errors import DecodeError, DecodeLimitError, EncodeError

__all__ = ["GoType", "GobDecoder", "GobEncoder", "GobError",
           "BOOL", "INT", "UINT", "FLOAT", "BYTES", "STRING", "COMPLEX", "INTERFACE",
           "K_BOOL", "K_INT", "K_UINT", "K_FLOAT", "K_BYTES", "K_STRING", "K_COMPLEX",
           "K_INTERFACE", "K_STRUCT", "K_SLICE", "K_ARRAY", "K_MAP", "K_OPAQUE",
           "DEFAULT_MAX_MESSAGE"]

# Kinds of Go types (a GoType's .kind).
K_BOOL = 1
K_INT = 2
K_UINT = 3
K_FLOAT = 4
K_BYTES = 5
K_STRING = 6
K_COMPLEX = 7
K_INTERFACE = 8
K_STRUCT = 20
K_SLICE = 21
K_ARRAY = 22
K_MAP = 23
K_OPAQUE = 24      # a GobEncoder/BinaryMarshaler/TextMarshaler value: raw bytes

FIRST_USER_ID = 65            # the first id Go gives a user type
_LAST_BUILTIN_ID = 23         # ids up to here are Go's predefined types
DEFAULT_MAX_MESSAGE = 64 * 1024 * 1024
DEFAULT_MAX_DEPTH = 64
_UINT64_MAX = (1 << 64) - 1
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_pack_double = _struct.Struct("<d").pack
_unpack_double = _struct.Struct("<d").unpack


class GobError(DecodeError):
    """A gob value could not be decoded; the stream itself is intact."""


class GoType:
    """One Go type as gob sends it.

    kind: a K_* constant; name: the Go name sent with its definition;
    elem/key: element and key GoTypes (slices, arrays, maps); length:
    an array's length; fields: a struct's [(go_name, attribute, GoType)];
    cls: the class a struct decodes to and encodes from (None: dict);
    builtin_id: the predefined id of a basic type, 0 for user types.
    """

    def __init__(self, kind, name, elem=None, key=None, length=0, fields=None, cls=None, builtin_id=0):
        self.kind = kind
        self.name = name
        self.elem = elem
        self.key = key
        self.length = length
        self.fields = fields if fields is not None else []
        self.cls = cls
        self.builtin_id = builtin_id

    def __repr__(self):
        return f"GoType({self.name})"


BOOL = GoType(K_BOOL, "bool", builtin_id=1)
INT = GoType(K_INT, "int", builtin_id=2)
UINT = GoType(K_UINT, "uint", builtin_id=3)
FLOAT = GoType(K_FLOAT, "float64", builtin_id=4)
BYTES = GoType(K_BYTES, "[]uint8", builtin_id=5)
STRING = GoType(K_STRING, "string", builtin_id=6)
COMPLEX = GoType(K_COMPLEX, "complex128", builtin_id=7)
INTERFACE = GoType(K_INTERFACE, "interface", builtin_id=8)


# ---------------------------------------------------------------------------
# encoding

def _put_uint(out, x):
    if x < 128:
        out.append(x)
        return
    raw = x.to_bytes((x.bit_length() + 7) >> 3, "big")
    out.append(256 - len(raw))
    out += raw


def _put_int(out, i):
    _put_uint(out, (~i << 1) | 1 if i < 0 else i << 1)


def _float_bits(f):
    return int.from_bytes(_pack_double(f), "big")


def _is_zero(t, v):
    """Whether a struct field holding `v` is left out, as Go leaves out zero values."""
    if v is None:
        return True
    k = t.kind
    if k == K_INT or k == K_UINT or k == K_FLOAT or k == K_BOOL or k == K_COMPLEX:
        return not v
    if k == K_STRING or k == K_BYTES or k == K_SLICE or k == K_OPAQUE:
        return len(v) == 0
    return False      # structs, arrays and non-nil maps are always sent


class GobEncoder:
    """Encodes values of GoTypes into gob messages for one stream.

    Type ids are assigned the way Go assigns them (a struct before its
    fields, a slice or map after its elements) and each type is defined
    once per stream, so the bytes match what a Go encoder writes.
    """

    def __init__(self, max_depth=DEFAULT_MAX_DEPTH):
        self.ids = {}           # GoType -> id on this stream
        self.names = {}         # GoType -> the name sent with its definition
        self.sent = set()       # GoTypes whose definitions were sent
        self.next_id = FIRST_USER_ID
        self.max_depth = max_depth
        self.out = bytearray()  # messages waiting to be written
        self.assigning = set()  # GoTypes whose elements are being given ids

    def checkpoint(self):
        """The encoder's state, to restore() if what follows must be undone.

        Cheap, as it is taken for every message: types met after it are
        exactly those given ids from next_id on, so restore() can find them.
        """
        return (len(self.out), self.next_id)

    def restore(self, state):
        """Undo everything encoded since checkpoint() returned `state`."""
        size, next_id = state
        del self.out[size:]
        for t in [t for t, tid in self.ids.items() if tid >= next_id]:
            del self.ids[t]
            del self.names[t]
            self.sent.discard(t)
        self.next_id = next_id

    def take(self):
        """The encoded messages so far (and forget them)."""
        data = bytes(self.out)
        self.out = bytearray()
        return data

    def encode(self, value, t):
        """Append `value`, of Go type `t`, as one message (after any type definitions).

        On EncodeError nothing is appended.
        """
        state = self.checkpoint()
        try:
            self._assign(t)
            self._send_type(t)
            body = bytearray()
            _put_int(body, self._id(t))
            if t.kind == K_STRUCT:
                self._struct(body, t, value, 0)
            else:
                body.append(0)      # a singleton travels as field 0 of an implicit struct
                self._value(body, t, value, 0)
            self._message(body)
        except (TypeError, ValueError, AttributeError, OverflowError, RecursionError) as exc:
            self.restore(state)
            if isinstance(exc, EncodeError):
                raise
            raise EncodeError(f"cannot encode {type(value).__name__} as Go {t.name}: {exc}") from None

    def _message(self, body):
        _put_uint(self.out, len(body))
        self.out += body

    def _id(self, t):
        if t.builtin_id:
            return t.builtin_id
        return self.ids[t]

    def _assign(self, t, named=False):
        """Give `t` and the types inside it ids, in Go's order.

        Go names an unnamed composite type ("[]int") in its definition only
        when it first meets it as a struct field's type; `named` says so.
        """
        if t.builtin_id or t in self.ids or t in self.assigning:
            return
        k = t.kind
        if k == K_STRUCT:
            self.ids[t] = self.next_id      # before the fields: they may refer back to it
            self.names[t] = t.name
            self.next_id += 1
            for field in t.fields:
                self._assign(field[2], True)
            return
        # A named slice or map may contain itself (type T []T): the inner
        # reference is met while its id is still to come (Go's rule too).
        self.assigning.add(t)
        try:
            if k == K_MAP:
                self._assign(t.key)
            if t.elem is not None:
                self._assign(t.elem)
        finally:
            self.assigning.discard(t)
        if t not in self.ids:               # a slice's element may have named it already
            self.ids[t] = self.next_id
            self.names[t] = t.name if named else ""
            self.next_id += 1

    def _send_type(self, t):
        """Define `t` on the stream, then the types inside it (outer first, as Go does)."""
        if t.builtin_id or t in self.sent:
            return
        self.sent.add(t)
        body = bytearray()
        _put_int(body, -self.ids[t])
        k = t.kind
        # wireType{ArrayT, SliceT, StructT, MapT, GobEncoderT, ...}: one field set.
        body.append({K_ARRAY: 1, K_SLICE: 2, K_STRUCT: 3, K_MAP: 4, K_OPAQUE: 5}[k])
        self._common(body, t)
        if k == K_STRUCT:
            if t.fields:
                body.append(1)                      # Field []*fieldType
                _put_uint(body, len(t.fields))
                for field in t.fields:
                    if field[0]:
                        body.append(1)
                        _put_uint(body, len(field[0].encode()))
                        body += field[0].encode()
                        body.append(1)
                    else:
                        body.append(2)
                    _put_int(body, self._id(field[2]))
                    body.append(0)
        elif k == K_MAP:
            body.append(1)
            _put_int(body, self._id(t.key))
            body.append(1)
            _put_int(body, self._id(t.elem))
        elif k == K_SLICE or k == K_ARRAY:
            body.append(1)
            _put_int(body, self._id(t.elem))
            if k == K_ARRAY and t.length:
                body.append(1)
                _put_int(body, t.length)
        body.append(0)                              # end of the kind's struct
        body.append(0)                              # end of wireType
        self._message(body)
        if k == K_STRUCT:
            for field in t.fields:
                self._send_type(field[2])
        elif k == K_MAP:
            self._send_type(t.key)
            self._send_type(t.elem)
        elif t.elem is not None:
            self._send_type(t.elem)

    def _common(self, body, t):
        body.append(1)                              # CommonType{Name string; Id typeId}
        name = self.names[t].encode()
        if name:
            body.append(1)
            _put_uint(body, len(name))
            body += name
            body.append(1)
        else:
            body.append(2)
        _put_int(body, self.ids[t])
        body.append(0)

    def _struct(self, out, t, v, depth):
        if depth > self.max_depth:
            raise EncodeError(f"value nests deeper than {self.max_depth} levels")
        if v is None:
            raise EncodeError(f"nil {t.name or 'struct'} (only a pointer field may be nil)")
        getter = v.get if isinstance(v, dict) else None
        last = -1
        i = 0
        for field in t.fields:
            ft = field[2]
            if getter is not None:
                fv = getter(field[1])
            else:
                fv = getattr(v, field[1])
            if not _is_zero(ft, fv):
                _put_uint(out, i - last)
                last = i
                self._value(out, ft, fv, depth + 1)
            i += 1
        out.append(0)

    def _value(self, out, t, v, depth):
        k = t.kind
        if k == K_INT:
            if isinstance(v, float) or not _INT64_MIN <= v <= _INT64_MAX:
                raise EncodeError(f"{v!r} is not a Go int64")
            _put_int(out, v.__index__())
        elif k == K_UINT:
            if isinstance(v, float) or not 0 <= v <= _UINT64_MAX:
                raise EncodeError(f"{v!r} is not a Go uint64")
            _put_uint(out, v.__index__())
        elif k == K_FLOAT:
            _put_uint(out, _float_bits(float(v)))
        elif k == K_BOOL:
            if v is not True and v is not False:
                raise EncodeError(f"{v!r} is not a Go bool")
            out.append(1 if v else 0)
        elif k == K_STRING:
            if not isinstance(v, str):
                raise EncodeError(f"{type(v).__name__} is not a Go string")
            raw = v.encode("utf-8", "surrogateescape")
            _put_uint(out, len(raw))
            out += raw
        elif k == K_BYTES or k == K_OPAQUE:
            if isinstance(v, str) or not isinstance(v, (bytes, bytearray, memoryview)):
                raise EncodeError(f"{type(v).__name__} is not Go []byte")
            raw = bytes(v)
            _put_uint(out, len(raw))
            out += raw
        elif k == K_STRUCT:
            self._struct(out, t, v, depth)
        elif k == K_SLICE or k == K_ARRAY:
            if depth > self.max_depth:
                raise EncodeError(f"value nests deeper than {self.max_depth} levels")
            if isinstance(v, (str, bytes, dict)):
                raise EncodeError(f"{type(v).__name__} is not a Go {t.name}")
            n = len(v)
            if k == K_ARRAY and n != t.length:
                raise EncodeError(f"{t.name} needs {t.length} elements, got {n}")
            _put_uint(out, n)
            elem = t.elem
            for item in v:
                self._value(out, elem, item, depth + 1)
        elif k == K_MAP:
            if depth > self.max_depth:
                raise EncodeError(f"value nests deeper than {self.max_depth} levels")
            _put_uint(out, len(v))
            key, elem = t.key, t.elem
            for mk, mv in v.items():
                self._value(out, key, mk, depth + 1)
                self._value(out, elem, mv, depth + 1)
        elif k == K_COMPLEX:
            c = complex(v)
            _put_uint(out, _float_bits(c.real))
            _put_uint(out, _float_bits(c.imag))
        elif k == K_INTERFACE:
            self._interface(out, v, depth)
        else:
            raise EncodeError(f"unknown Go kind {k}")

    def _interface(self, out, v, depth):
        # Go sends the registered name of the concrete type, its id, then the
        # value as a byte-counted singleton. Basic types are registered in
        # every Go program; other types would need gob.Register on the Go side.
        if v is None:
            out.append(0)
            return
        if v is True or v is False:
            t, name = BOOL, "bool"
        elif isinstance(v, int):
            t, name = INT, "int"
        elif isinstance(v, float):
            t, name = FLOAT, "float64"
        elif isinstance(v, str):
            t, name = STRING, "string"
        elif isinstance(v, (bytes, bytearray, memoryview)):
            t, name = BYTES, "[]uint8"
        elif isinstance(v, complex):
            t, name = COMPLEX, "complex128"
        else:
            raise EncodeError(f"{type(v).__name__} cannot travel as a Go interface{{}} "
                              "(basic types and None only)")
        raw = name.encode()
        _put_uint(out, len(raw))
        out += raw
        _put_int(out, t.builtin_id)
        inner = bytearray(b"\x00")
        self._value(inner, t, v, depth + 1)
        _put_uint(out, len(inner))
        out += inner


# ---------------------------------------------------------------------------
# decoding

class _WireType:
    """A type as the peer defined it on this stream."""

    def __init__(self, kind, name):
        self.kind = kind
        self.name = name
        self.elem = 0
        self.key = 0
        self.length = 0
        self.fields = []        # [(name, type id)]


class _Reader:
    """A cursor over one message."""

    def __init__(self, data, pos, end):
        self.data = data
        self.pos = pos
        self.end = end

    def uint(self):
        pos = self.pos
        if pos >= self.end:
            raise GobError("gob: truncated value")
        b = self.data[pos]
        if b < 128:
            self.pos = pos + 1
            return b
        n = 256 - b
        if n > 8:
            raise GobError(f"gob: invalid uint length byte {b:#x}")
        if pos + 1 + n > self.end:
            raise GobError("gob: truncated uint")
        self.pos = pos + 1 + n
        return int.from_bytes(self.data[pos + 1:pos + 1 + n], "big")

    def signed(self):
        u = self.uint()
        if u & 1:
            return ~(u >> 1)
        return u >> 1

    def raw(self, n):
        pos = self.pos
        if n > self.end - pos:
            raise GobError(f"gob: length {n} exceeds the {self.end - pos} bytes left")
        self.pos = pos + n
        return self.data[pos:pos + n]

    def count(self):
        """An element count, bounded by the bytes left (each element takes at least one)."""
        n = self.uint()
        if n > self.end - self.pos:
            raise GobError(f"gob: count {n} exceeds the {self.end - self.pos} bytes left")
        return n

    def string(self):
        return self.raw(self.count()).decode("utf-8", "surrogateescape")


class GobDecoder:
    """Decodes a gob stream: feed bytes, get the values in order.

    Type definitions are kept for the stream's life. Structs decode to dicts
    holding every field (zero values filled in; a missing struct field, a
    nil pointer, is None, and so is a nil map), slices and arrays to lists, maps to dicts,
    []byte and opaque GobEncoder values to bytes, interfaces to their value.

    feed() returns the values of the messages completed so far; a value
    that cannot be decoded appears as a GobError instance in its place (its
    message boundary is known, so the stream goes on). Anything that breaks
    the stream itself (bad framing, a bad type definition, a message over
    max_message) raises DecodeError, after which the decoder is unusable.
    """

    def __init__(self, max_message=DEFAULT_MAX_MESSAGE, max_depth=DEFAULT_MAX_DEPTH):
        self.types = {}             # id -> _WireType
        self.buf = bytearray()
        self.max_message = max_message
        self.max_depth = max_depth
        self.broken = None

    def feed(self, data):
        """Add bytes; return the values of every message now complete."""
        if self.broken is not None:
            raise DecodeError(f"gob stream already failed: {self.broken}")
        self.buf += data
        values = []
        buf = self.buf
        pos = 0
        n = len(buf)
        try:
            while pos < n:
                # the byte count, itself a gob uint
                b = buf[pos]
                if b < 128:
                    size, start = b, pos + 1
                else:
                    width = 256 - b
                    if width > 8:
                        raise DecodeError(f"gob: invalid message length byte {b:#x}")
                    if pos + 1 + width > n:
                        break
                    size = int.from_bytes(buf[pos + 1:pos + 1 + width], "big")
                    start = pos + 1 + width
                if size > self.max_message:
                    raise DecodeLimitError(f"gob: message of {size} bytes exceeds max_message={self.max_message}")
                if size == 0:
                    raise DecodeError("gob: empty message")
                if start + size > n:
                    break
                pos = start + size
                value = self._message(bytes(buf[start:pos]))
                if value is not _TYPE_DEFINED:
                    values.append(value)
        except DecodeError as exc:
            self.broken = str(exc)
            raise
        del buf[:pos]
        return values

    def pending(self):
        """Bytes held for a message not yet complete."""
        return len(self.buf)

    def _message(self, data):
        r = _Reader(data, 0, len(data))
        try:
            tid = r.signed()
        except GobError as exc:
            raise DecodeError(str(exc)) from None
        if tid < 0:
            try:
                self._define(-tid, r)
            except GobError as exc:
                raise DecodeError(f"gob: bad definition of type {-tid}: {exc}") from None
            if r.pos != r.end:
                raise DecodeError(f"gob: {r.end - r.pos} stray bytes after the definition of type {-tid}")
            return _TYPE_DEFINED
        try:
            return self._top(tid, r)
        except GobError as exc:
            return exc
        except RecursionError:
            return GobError("gob: value nests too deeply")

    def _top(self, tid, r):
        wt = self.types.get(tid)
        if wt is not None and wt.kind == K_STRUCT:
            value = self._struct(wt, r, 0)
        else:
            if r.uint() != 0:
                raise GobError("gob: corrupted data: non-zero delta for a singleton")
            value = self._value(tid, r, 0)
        if r.pos != r.end:
            raise GobError(f"gob: {r.end - r.pos} stray bytes after a value of type {tid}")
        return value

    # type definitions ------------------------------------------------------
    def _define(self, tid, r):
        if tid <= _LAST_BUILTIN_ID:
            raise GobError(f"gob: redefinition of predefined type {tid}")
        if tid in self.types:
            raise GobError(f"gob: type {tid} defined twice")
        delta = r.uint()
        kinds = {1: K_ARRAY, 2: K_SLICE, 3: K_STRUCT, 4: K_MAP, 5: K_OPAQUE, 6: K_OPAQUE, 7: K_OPAQUE}
        if delta not in kinds:
            raise GobError(f"gob: unknown wireType field {delta}")
        kind = kinds[delta]
        wt = _WireType(kind, "")
        # the kind's struct: field 1 is always CommonType{Name, Id}
        field = -1
        while True:
            d = r.uint()
            if d == 0:
                break
            field += d
            if field == 0:
                wt.name, _ = self._name_and_id(r, "CommonType")
            elif kind == K_STRUCT and field == 1:
                for _ in range(r.count()):
                    wt.fields.append(self._name_and_id(r, "fieldType"))
            elif kind in (K_ARRAY, K_SLICE, K_MAP) and field == 1:
                if kind == K_MAP:
                    wt.key = r.signed()
                else:
                    wt.elem = r.signed()
            elif kind == K_MAP and field == 2:
                wt.elem = r.signed()
            elif kind == K_ARRAY and field == 2:
                wt.length = r.signed()
                if wt.length < 0:
                    raise GobError(f"gob: negative array length {wt.length}")
            else:
                raise GobError(f"gob: unknown field {field} in a type definition")
        if r.uint() != 0:
            raise GobError("gob: a wireType sets more than one kind")
        self.types[tid] = wt

    def _name_and_id(self, r, what):
        """A CommonType or a fieldType: both are struct{Name string; Id typeId}."""
        name, tid, field = "", 0, -1
        while True:
            d = r.uint()
            if d == 0:
                return name, tid
            field += d
            if field == 0:
                name = r.string()
            elif field == 1:
                tid = r.signed()
            else:
                raise GobError(f"gob: unknown {what} field {field}")

    # values ------------------------------------------------------------------
    def _value(self, tid, r, depth):
        if tid == 2:
            return r.signed()
        if tid == 6:
            return r.string()
        if tid == 3:
            return r.uint()
        if tid == 4:
            return _unpack_double(r.uint().to_bytes(8, "big"))[0]
        if tid == 1:
            return r.uint() != 0
        if tid == 5:
            return bytes(r.raw(r.count()))
        if tid == 7:
            re = _unpack_double(r.uint().to_bytes(8, "big"))[0]
            return complex(re, _unpack_double(r.uint().to_bytes(8, "big"))[0])
        if tid == 8:
            return self._interface(r, depth)
        wt = self.types.get(tid)
        if wt is None:
            raise GobError(f"gob: unknown type id {tid}")
        if depth >= self.max_depth:
            raise GobError(f"gob: value nests deeper than max_depth={self.max_depth}")
        k = wt.kind
        if k == K_STRUCT:
            return self._struct(wt, r, depth + 1)
        if k == K_SLICE or k == K_ARRAY:
            n = r.count()
            if k == K_ARRAY and n != wt.length:
                raise GobError(f"gob: array of length {wt.length} arrived with {n} elements")
            elem = wt.elem
            return [self._value(elem, r, depth + 1) for _ in range(n)]
        if k == K_MAP:
            n = r.count()
            out = {}
            for _ in range(n):
                key = self._value(wt.key, r, depth + 1)
                try:
                    out[key] = self._value(wt.elem, r, depth + 1)
                except TypeError:
                    raise GobError(f"gob: map key of type {type(key).__name__} is not hashable") from None
            return out
        return bytes(r.raw(r.count()))      # K_OPAQUE

    def _struct(self, wt, r, depth):
        fields = wt.fields
        out = {}
        index = -1
        while True:
            d = r.uint()
            if d == 0:
                break
            index += d
            if index >= len(fields):
                raise GobError(f"gob: field {index} out of range for {wt.name or 'struct'}")
            name, ftid = fields[index]
            out[name] = self._value(ftid, r, depth + 1)
        if len(out) != len(fields):
            # omitted fields hold zero values; keep the struct's field order
            full = {}
            for name, ftid in fields:
                full[name] = out[name] if name in out else self._zero(ftid, 0)
            return full
        return out

    def _zero(self, tid, depth):
        """The value Go means by an omitted field of type `tid`."""
        if tid == 2 or tid == 3:
            return 0
        if tid == 6:
            return ""
        if tid == 4:
            return 0.0
        if tid == 1:
            return False
        if tid == 5:
            return b""
        if tid == 7:
            return 0j
        wt = self.types.get(tid)
        if wt is None or tid == 8 or wt.kind == K_STRUCT:
            return None                     # nil interface, nil pointer
        if wt.kind == K_SLICE:
            return []                       # Go cannot tell nil from empty slices apart on the wire
        if wt.kind == K_MAP:
            return None                     # a nil map (an empty one is sent)
        if wt.kind == K_ARRAY:
            if depth >= self.max_depth:
                raise GobError("gob: zero value nests too deeply")
            return [self._zero(wt.elem, depth + 1) for _ in range(wt.length)]
        return b""

    def _interface(self, r, depth):
        name = r.string()
        if not name:
            return None
        # Definitions of the concrete type may come first, each one byte-counted.
        while True:
            tid = r.signed()
            if tid >= 0:
                break
            try:
                self._define(-tid, r)
            except GobError as exc:
                raise GobError(f"gob: bad definition inside an interface value: {exc}") from None
            if r.pos < r.end:
                r.uint()
        size = r.uint()
        end = r.pos + size
        if end > r.end:
            raise GobError("gob: interface value overruns its message")
        inner = _Reader(r.data, r.pos, end)
        wt = self.types.get(tid)
        if wt is not None and wt.kind == K_STRUCT:
            value = self._struct(wt, inner, depth + 1)
        else:
            if inner.uint() != 0:
                raise GobError("gob: corrupted interface value")
            value = self._value(tid, inner, depth + 1)
        r.pos = end
        return value


_TYPE_DEFINED = object()
