"""Endpoint: one server a balancer can call, and what strategies know of it."""
from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional, Union

from fastrpc.net.address import parse_address

__all__ = ["Endpoint", "as_endpoint"]


class Endpoint:
    """An address plus its weight, zone, coordinates and free-form metadata.

    ``Endpoint("tcp://10.0.0.7:7001", weight=5, zone="eu-west", lat=53.3, lon=-6.2)``.
    ``address`` is the string given; it identifies the endpoint in a balancer.
    Endpoints are immutable: ``replace(weight=2)`` returns a changed copy.
    """

    __slots__ = ("address", "weight", "zone", "lat", "lon", "metadata")

    address: str                   # as given: it identifies the endpoint in a balancer
    weight: float                  # > 0; a share of picks relative to the others
    zone: Optional[str]            # a locality name (geo strategy)
    lat: Optional[float]           # degrees, with lon (geo strategy)
    lon: Optional[float]
    metadata: Dict[str, Any]       # free-form (from discovery, for the application)

    def __init__(self, address: str, weight: float = 1, zone: Optional[str] = None,
                 lat: Optional[float] = None, lon: Optional[float] = None,
                 metadata: Optional[Mapping[str, Any]] = None) -> None:
        if not isinstance(address, str):
            raise TypeError(f"endpoint address must be a str, not {type(address).__name__}")
        parse_address(address)
        weight = check_weight(weight)
        if (lat is None) != (lon is None):
            raise ValueError(f"{address}: give both lat and lon, or neither")
        if lat is not None and lon is not None:
            lat, lon = float(lat), float(lon)
            if not (-90.0 <= lat <= 90.0) or not (-180.0 <= lon <= 180.0):
                raise ValueError(f"{address}: lat must be in [-90, 90] and lon in [-180, 180]")
        if zone is not None and not isinstance(zone, str):
            raise TypeError(f"{address}: zone must be a str")
        object.__setattr__(self, "address", address)
        object.__setattr__(self, "weight", weight)
        object.__setattr__(self, "zone", zone)
        object.__setattr__(self, "lat", lat)
        object.__setattr__(self, "lon", lon)
        object.__setattr__(self, "metadata", dict(metadata) if metadata else {})

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Endpoint is immutable; use replace()")

    @property
    def has_coordinates(self) -> bool:
        """Whether lat and lon are known."""
        return self.lat is not None

    def replace(self, **changes: Any) -> "Endpoint":
        """A copy with some fields changed."""
        fields = {name: getattr(self, name) for name in self.__slots__}
        fields.update(changes)
        return Endpoint(**fields)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Endpoint):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    def __hash__(self) -> int:
        return hash(self.address)

    def __repr__(self) -> str:
        extra = "".join(f", {n}={getattr(self, n)!r}" for n in ("zone", "lat", "lon")
                        if getattr(self, n) is not None)
        return f"Endpoint({self.address!r}, weight={self.weight:g}{extra})"


def check_weight(weight: Any) -> float:
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise TypeError(f"weight must be a number, not {type(weight).__name__}")
    value = float(weight)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"weight must be a finite number > 0, got {value}")
    return value


def as_endpoint(item: Union[str, Endpoint]) -> Endpoint:
    """An Endpoint for an address string (weight 1) or an Endpoint as given."""
    if isinstance(item, Endpoint):
        return item
    if isinstance(item, str):
        return Endpoint(item)
    raise TypeError(f"expected an address string or an Endpoint, not {type(item).__name__}")
