"""Deterministic subsetting: each client of a large fleet connects to a few servers.

With N clients and M servers, a full mesh costs every server N connections.
Aperture (after Finagle's deterministic aperture) places the servers, in
address order, on a ring of unit length, server j on the arc [j/M, (j+1)/M),
and client i of N on the window that starts at i/N and is `size` servers
long. A client connects to the servers its window overlaps and weights each
by the overlap, so the clients' windows, evenly spaced, cover every point of
the ring equally often: each server gets the same share of connections
(within one) and of load, whatever N and M are. Nothing is random, so every
client computes its subset alone, and a change of membership moves windows
only by the shift of the servers' positions.
"""
from __future__ import annotations

import math
from typing import Iterable, List, Sequence, Tuple

from fastrpc.net.endpoint import Endpoint

__all__ = ["Aperture", "aperture_size"]


class Aperture:
    """This client's place in a fleet of clients, and how many servers it uses.

    ``Balancer(discovery=..., service="arith", subset=Aperture(index=3,
    count=100, size=8))``: client 3 of 100 (its index is the operator's to
    give: a worker or pod ordinal) connects to about 8 of the service's
    servers. `size` is raised to ceil(M / count) when M servers need it to be
    covered. See ``aperture_size`` to size it by load.
    """

    __slots__ = ("index", "count", "size")

    def __init__(self, index: int, count: int, size: int = 8) -> None:
        if count < 1 or not 0 <= index < count:
            raise ValueError(f"Aperture needs 0 <= index < count, got index={index}, count={count}")
        if size < 1:
            raise ValueError(f"Aperture size must be >= 1, got {size}")
        self.index = index
        self.count = count
        self.size = size

    def __repr__(self) -> str:
        return f"Aperture(index={self.index}, count={self.count}, size={self.size})"

    def width(self, servers: int) -> int:
        """The number of servers' arcs this client's window spans with `servers` servers."""
        return min(servers, max(self.size, math.ceil(servers / self.count)))

    def shares(self, servers: int) -> List[Tuple[int, float]]:
        """(server position, share of this client's load) for the servers its
        window overlaps, positions in address order; shares sum to 1."""
        if servers <= 0:
            return []
        width = self.width(servers)
        if width >= servers:
            return [(j, 1.0 / servers) for j in range(servers)]
        # In units of one server's arc: the window is [start, start + width).
        start = self.index * servers / self.count
        out: List[Tuple[int, float]] = []
        first = math.floor(start)
        for k in range(width + 1):
            j = first + k
            lo = max(start, j)
            hi = min(start + width, j + 1)
            if hi - lo > 1e-12:
                out.append((j % servers, (hi - lo) / width))
        return out

    def choose(self, endpoints: Iterable[Endpoint]) -> List[Endpoint]:
        """This client's subset of `endpoints`: those its window overlaps, each
        weighted by its endpoint weight times the part of it the window covers
        (a server wholly inside the window keeps its weight)."""
        ordered = sorted(endpoints, key=lambda e: e.address)
        width = self.width(len(ordered))
        chosen = []
        for position, share in self.shares(len(ordered)):
            endpoint = ordered[position]
            chosen.append(endpoint.replace(weight=endpoint.weight * min(1.0, share * width)))
        return chosen


def aperture_size(client_rate: float, per_connection_rate: float, servers: int, clients: int,
                  minimum: int = 3) -> int:
    """A subset size for clients sending `client_rate` calls/s each, when one
    connection should carry at most `per_connection_rate` calls/s: enough
    servers to spread the client's load, at least `minimum` (to survive a
    failure), at least what covers every server, at most all of them."""
    if client_rate < 0 or per_connection_rate <= 0 or servers < 1 or clients < 1:
        raise ValueError("aperture_size needs client_rate >= 0, per_connection_rate > 0, servers and clients >= 1")
    by_load = math.ceil(client_rate / per_connection_rate)
    return min(servers, max(minimum, by_load, math.ceil(servers / clients)))


def subset_counts(apertures: Sequence[Aperture], servers: int) -> Tuple[List[int], List[float]]:
    """Connections and load per server position when each of `apertures`
    sends one unit of load (for sizing and for the tests)."""
    connections = [0] * servers
    load = [0.0] * servers
    for aperture in apertures:
        for position, share in aperture.shares(servers):
            connections[position] += 1
            load[position] += share
    return connections, load
