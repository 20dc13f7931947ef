"""StaticDiscovery: endpoints given in code, plus registrations made in this process."""
from __future__ import annotations

import threading
from typing import Dict, Iterable, List, Mapping, Optional, Union

from fastrpc.discovery.base import Discovery, OnChange, Registration, Watch, Watchers
from fastrpc.net.endpoint import Endpoint, as_endpoint

__all__ = ["StaticDiscovery"]


class StaticDiscovery(Discovery):
    """Endpoints given in code: a list (the same for every service) or
    ``{service: [endpoints]}``. register() adds to the set in this process
    and watchers hear of it, which suits tests and single-process setups."""

    def __init__(self, endpoints: Union[Iterable[Union[str, Endpoint]],
                                        Mapping[str, Iterable[Union[str, Endpoint]]]] = ()) -> None:
        self._lock = threading.Lock()
        self._default: Optional[Dict[str, Endpoint]] = None
        self._services: Dict[str, Dict[str, Endpoint]] = {}
        if isinstance(endpoints, Mapping):
            for service, eps in endpoints.items():
                self._services[service] = _by_address(eps)
        else:
            self._default = _by_address(endpoints)
        self._watchers = Watchers()

    def endpoints(self, service: str) -> List[Endpoint]:
        """The endpoints given for `service` (or the one list), plus registered ones."""
        with self._lock:
            return list(self._set(service).values())

    def services(self) -> List[str]:
        """The services given (and registered in this process) that have endpoints."""
        with self._lock:
            return sorted(s for s, eps in self._services.items() if eps)

    def _set(self, service: str) -> Dict[str, Endpoint]:
        if service not in self._services:
            self._services[service] = dict(self._default or {})
        return self._services[service]

    def watch(self, service: str, on_change: OnChange) -> Watch:
        """Hear of registrations in this process (the given list never changes)."""
        return self._watchers.add(service, on_change)

    def register(self, service: str, endpoint: Union[str, Endpoint], ttl: float = 10.0) -> Registration:
        """Add `endpoint` to `service` in this process until the Registration closes (no TTL)."""
        endpoint = as_endpoint(endpoint)
        with self._lock:
            self._set(service)[endpoint.address] = endpoint
            current = list(self._services[service].values())
        self._watchers.notify(service, current)

        def deregister() -> None:
            with self._lock:
                entries = self._set(service)
                entries.pop(endpoint.address, None)
                now = list(entries.values())
            self._watchers.notify(service, now)

        def update(changed: Endpoint) -> None:
            with self._lock:
                self._set(service)[changed.address] = changed
                now = list(self._services[service].values())
            self._watchers.notify(service, now)
        return Registration(service, endpoint, deregister, update)

    def __repr__(self) -> str:
        return f"<StaticDiscovery {sorted(self._services) or 'one list'}>"


def _by_address(endpoints: Iterable[Union[str, Endpoint]]) -> Dict[str, Endpoint]:
    if isinstance(endpoints, (str, Endpoint)):
        raise TypeError("give a list of endpoints, not a single one")
    return {e.address: e for e in map(as_endpoint, endpoints)}
