"""Stream flow control: the windows both ends grant, checked once.

A stream's receiver grants its sender credit in items and in bytes (the
sizes of the ITEM payloads); the sender sends while it has at least one
item and a positive byte count left, so an item larger than the whole
byte window still goes, alone. The receiver gives credit back as its
consumer takes items, once half a window was taken. What one stream can
hold in memory on the receiving side is thus bounded by its window (plus
the one item that went past the byte credit). See docs/PROTOCOL.md.
"""
from __future__ import annotations

from typing import Optional, Tuple

__all__ = ["DEFAULT_WINDOW_ITEMS", "DEFAULT_WINDOW_BYTES", "window"]

#: Items a receiver takes before it gives credit back (half of it at a time).
DEFAULT_WINDOW_ITEMS = 1024
#: Bytes of item payloads likewise.
DEFAULT_WINDOW_BYTES = 4 * 1024 * 1024


def window(items: Optional[int] = None, nbytes: Optional[int] = None) -> Tuple[int, int]:
    """A stream window (items, bytes) with the defaults filled in; ValueError
    unless both are at least 1 and fit the protocol's counters."""
    items = DEFAULT_WINDOW_ITEMS if items is None else items
    nbytes = DEFAULT_WINDOW_BYTES if nbytes is None else nbytes
    for name, value in (("window items", items), ("window bytes", nbytes)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 2**31:
            raise ValueError(f"{name} must be an int from 1 to 2**31, not {value!r}")
    return items, nbytes
