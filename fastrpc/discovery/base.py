"""Service discovery's interface: where balancers learn a service's endpoints
and servers announce themselves.

Owns the contract every registry implements (Discovery), the handles it
returns (Watch, Registration), the plain-data form of an endpoint that files
and etcd store, and the per-service watcher list registries share. The
registries are fastrpc.discovery.static, .file and .etcd.

A service's endpoints are a set keyed by address. ``watch()`` reports the
whole new set on every change, so a consumer (Balancer) applies it with
``set_endpoints``, and no delta can be lost or applied twice.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Dict, List, Mapping, Optional, Union

from fastrpc.net.endpoint import Endpoint

__all__ = ["Discovery", "OnChange", "Registration", "Watch", "Watchers", "endpoint_from_dict",
           "endpoint_to_dict"]

log = logging.getLogger("fastrpc.discovery")

OnChange = Callable[[List[Endpoint]], None]


class Watch:
    """A running watch: ``stop()`` ends it (no more calls of its callback)."""

    def __init__(self, stop: Callable[[], None] = lambda: None) -> None:
        self._stop = stop
        self.stopped = False

    def stop(self) -> None:
        """End the watch; idempotent."""
        if not self.stopped:
            self.stopped = True
            self._stop()


class Registration:
    """A server's entry in a registry: ``close()`` removes it at once.

    Registries make them (``Discovery.register``): `endpoint` is what is
    announced for `service`; `close` and `update` are the registry's
    functions that withdraw and change it.
    """

    def __init__(self, service: str, endpoint: Endpoint, close: Callable[[], None],
                 update: Optional[Callable[[Endpoint], None]] = None) -> None:
        self.service = service
        self.endpoint = endpoint
        self._close = close
        self._update = update
        self.closed = False

    def update(self, **changes: Any) -> Endpoint:
        """Change what is announced (weight, zone, lat, lon, metadata; not the
        address), e.g. ``update(weight=5)``; balancers following the registry
        apply it. Returns the new Endpoint."""
        if self.closed:
            raise RuntimeError("this registration is closed")
        if "address" in changes:
            raise ValueError("the address cannot change: register the new address instead")
        if self._update is None:
            raise NotImplementedError("this registry cannot update a registration")
        endpoint = self.endpoint.replace(**changes)
        self._update(endpoint)
        self.endpoint = endpoint
        return endpoint

    def close(self) -> None:
        """Deregister; idempotent."""
        if not self.closed:
            self.closed = True
            self._close()

    def __enter__(self) -> "Registration":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Registration {self.service} {self.endpoint.address}{' closed' if self.closed else ''}>"


class Discovery:
    """The interface every registry implements."""

    def endpoints(self, service: str) -> List[Endpoint]:
        """The current endpoints of `service` (may be empty)."""
        raise NotImplementedError

    def services(self) -> List[str]:
        """The services that have endpoints now, sorted (what a balancer may ask for)."""
        raise NotImplementedError

    def watch(self, service: str, on_change: OnChange) -> Watch:
        """Call `on_change(endpoints)` with the full set whenever it changes.

        Callbacks come from a background thread; the first one may arrive
        before watch() returns.
        """
        raise NotImplementedError

    def register(self, service: str, endpoint: Union[str, Endpoint], ttl: float = 10.0) -> Registration:
        """Announce `endpoint` under `service` until the Registration is closed
        (or, where the registry has leases, until `ttl` seconds pass without
        the keep-alive this process sends)."""
        raise NotImplementedError(f"{type(self).__name__} does not take registrations")

    def close(self) -> None:
        """Stop background work (watches, keep-alives)."""

    def __enter__(self) -> "Discovery":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# endpoints as plain data (files, etcd values) --------------------------------------------
_FIELDS = ("address", "weight", "zone", "lat", "lon", "metadata")


def endpoint_from_dict(data: Any) -> Endpoint:
    """An Endpoint from ``{"address": ..., "weight": ..., "zone": ..., "lat": ..., "lon": ...,
    "metadata": {...}}`` (only address is required); a bare string is an address."""
    if isinstance(data, str):
        return Endpoint(data)
    if not isinstance(data, Mapping):
        raise ValueError(f"an endpoint is an address string or a table, not {type(data).__name__}")
    unknown = set(data) - set(_FIELDS)
    if unknown:
        raise ValueError(f"unknown endpoint field(s) {', '.join(sorted(unknown))} "
                         f"(known: {', '.join(_FIELDS)})")
    if "address" not in data:
        raise ValueError("an endpoint needs an address")
    if data.get("metadata") is not None and not isinstance(data["metadata"], Mapping):
        raise ValueError("endpoint metadata must be a table")
    return Endpoint(**{k: v for k, v in data.items() if v is not None})


def endpoint_to_dict(endpoint: Endpoint) -> Dict[str, Any]:
    """The plain-data form endpoint_from_dict reads (None fields left out)."""
    out = {name: getattr(endpoint, name) for name in _FIELDS}
    if not out["metadata"]:
        del out["metadata"]
    return {k: v for k, v in out.items() if v is not None}


class Watchers:
    """Callbacks per service; a failing callback is logged, never fatal."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_service: Dict[str, List[OnChange]] = {}

    def add(self, service: str, on_change: OnChange) -> Watch:
        with self._lock:
            self._by_service.setdefault(service, []).append(on_change)

        def stop() -> None:
            with self._lock:
                callbacks = self._by_service.get(service, [])
                if on_change in callbacks:
                    callbacks.remove(on_change)
        return Watch(stop)

    def services(self) -> List[str]:
        with self._lock:
            return [s for s, callbacks in self._by_service.items() if callbacks]

    def notify(self, service: str, endpoints: List[Endpoint]) -> None:
        with self._lock:
            callbacks = list(self._by_service.get(service, ()))
        for callback in callbacks:
            try:
                callback(list(endpoints))
            except Exception:
                log.exception("discovery watcher of %s failed", service)
