"""What the command prints: values as JSON, latency percentiles, a progress line."""
from __future__ import annotations

import json
import sys
from typing import Any, Dict, List, Sequence, TextIO

from fastrpc.extensions import json_form

__all__ = ["to_json", "percentiles", "Progress"]


def to_json(value: Any, indent: int = 2) -> str:
    """`value` as JSON: bytes as text (or {"base64": ...}), arrays as lists,
    datetimes as ISO 8601, sets and tuples as lists."""
    return json.dumps(value, indent=indent, default=json_form, ensure_ascii=False)


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
