"""What the command prints: values as JSON, latency percentiles, a progress line."""
from __future__ import annotations

import base64
import dataclasses
import datetime
import decimal
import enum
import json
import sys
import uuid
from typing import Any, Dict, List, Sequence, TextIO

from fastrpc._core.codec import ExtType

__all__ = ["to_json", "percentiles", "Progress"]


def _plain(value: Any) -> Any:
    """A JSON-encodable stand-in for what fastrpc values can be beyond JSON's."""
    if isinstance(value, ExtType):
        return {"ext": value.code, "data": base64.b64encode(value.data).decode("ascii")}
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(raw).decode("ascii")}
    if isinstance(value, (datetime.datetime, datetime.date)):
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


def to_json(value: Any, indent: int = 2) -> str:
    """`value` as JSON: bytes as text (or {"base64": ...}), arrays as lists,
    datetimes as ISO 8601, sets and tuples as lists."""
    return json.dumps(value, indent=indent, default=_plain, ensure_ascii=False)


def percentiles(samples: Sequence[float], points: Sequence[float] = (50, 90, 99, 99.9)) -> Dict[str, float]:
    """Nearest-rank percentiles of `samples` (seconds), keyed "p50", "p99.9"..."""
    ordered = sorted(samples)
    out: Dict[str, float] = {}
    for p in points:
        key = f"p{p:g}"
        if not ordered:
            out[key] = float("nan")
            continue
        rank = max(1, int(-(-p * len(ordered) // 100)))          # ceil(p/100 * n)
        out[key] = ordered[min(rank, len(ordered)) - 1]
    return out


class Progress:
    """One line on stderr, rewritten in place while a run lasts (only on a terminal)."""

    def __init__(self, total_seconds: float, stream: TextIO = sys.stderr) -> None:
        self.total = total_seconds
        self.stream = stream
        self.enabled = stream.isatty()
        self.width = 30

    def update(self, elapsed: float, calls: int) -> None:
        if not self.enabled:
            return
        done = min(1.0, elapsed / self.total) if self.total > 0 else 1.0
        bar = "#" * int(done * self.width) + "." * (self.width - int(done * self.width))
        rate = calls / elapsed if elapsed > 0 else 0.0
        self.stream.write(f"\r[{bar}] {elapsed:5.1f}s {calls:>10,} calls {rate:>10,.0f}/s")
        self.stream.flush()

    def done(self) -> None:
        if self.enabled:
            self.stream.write("\r" + " " * (self.width + 50) + "\r")
            self.stream.flush()


def format_table(rows: List[List[str]]) -> str:
    """Rows of cells as aligned columns (the first row is the header)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)
