"""Service discovery: where balancers learn a service's endpoints and servers announce themselves.

One interface, three registries:

- StaticDiscovery: a list given in code (what ``Balancer([...])`` takes),
  plus in-process registration.
- FileDiscovery: a JSON or TOML file, reloaded when it changes.
- EtcdDiscovery (fastrpc.etcd): a real etcd v3 cluster, with leases.

A service's endpoints are a set keyed by address. ``watch()`` reports the
whole new set on every change, so a consumer (Balancer) applies it with
``set_endpoints``, and no delta can be lost or applied twice.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Union

from fastrpc.endpoint import Endpoint, as_endpoint

__all__ = ["Discovery", "FileDiscovery", "Registration", "StaticDiscovery", "Watch",
           "endpoint_from_dict", "endpoint_to_dict"]

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
    """A server's entry in a registry: ``close()`` removes it at once."""

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

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Registration {self.service} {self.endpoint.address}{' closed' if self.closed else ''}>"


class Discovery:
    """The interface every registry implements."""

    def endpoints(self, service: str) -> List[Endpoint]:
        """The current endpoints of `service` (may be empty)."""
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

    def __exit__(self, *exc) -> None:
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


class _Watchers:
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


# static ------------------------------------------------------------------------------------
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
        self._watchers = _Watchers()

    def endpoints(self, service: str) -> List[Endpoint]:
        """The endpoints given for `service` (or the one list), plus registered ones."""
        with self._lock:
            return list(self._set(service).values())

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


# file ----------------------------------------------------------------------------------------
class FileDiscovery(Discovery):
    """Endpoints from a JSON or TOML file, reloaded when it changes.

    The file maps service names to lists of endpoints; a top-level list (JSON)
    or ``endpoints = [...]`` (TOML) serves every service::

        {"arith": [{"address": "tcp://10.0.0.1:7001", "weight": 2, "zone": "eu-west",
                    "lat": 53.3, "lon": -6.2, "metadata": {"rack": "r1"}},
                   "tcp://10.0.0.2:7001"]}

        [[arith]]
        address = "tcp://10.0.0.1:7001"
        weight = 2

    The file is checked every `poll_interval` seconds (size, mtime and
    content). A file that cannot be read or parsed keeps the last good set:
    the error is logged and kept in ``last_error`` until a good file returns.
    Writers should replace the file atomically (write, then rename).
    """

    def __init__(self, path: Union[str, "os.PathLike[str]"], poll_interval: float = 0.5,
                 format: Optional[str] = None) -> None:
        self.path = os.fspath(path)
        if format is None:
            format = "toml" if self.path.endswith(".toml") else "json"
        if format not in ("json", "toml"):
            raise ValueError(f"format must be 'json' or 'toml', not {format!r}")
        if poll_interval <= 0:
            raise ValueError("poll_interval must be > 0")
        self.format = format
        self.poll_interval = poll_interval
        self.last_error: Optional[str] = None
        self._lock = threading.Lock()
        self._data: Dict[str, Dict[str, Endpoint]] = {}
        self._default: Optional[Dict[str, Endpoint]] = None
        self._content: Optional[bytes] = None
        self._stamp: Any = None
        self._watchers = _Watchers()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.reload()
        if self.last_error is not None:
            raise ValueError(f"cannot load {self.path}: {self.last_error}")

    # loading ---------------------------------------------------------------------------------
    def reload(self) -> bool:
        """Read the file now if it changed; True when the endpoint sets changed."""
        try:
            st = os.stat(self.path)
            stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
            if stamp == self._stamp:
                return False
            with open(self.path, "rb") as f:
                content = f.read()
            self._stamp = stamp
            if content == self._content:
                return False
            default, services = self._parse(content)
        except (OSError, ValueError, TypeError) as exc:
            message = f"{type(exc).__name__}: {exc}"
            if message != self.last_error:
                log.error("discovery file %s: %s; keeping the last good endpoints", self.path, message)
            self.last_error = message
            return False
        if self.last_error is not None:
            log.info("discovery file %s is good again", self.path)
        self.last_error = None
        with self._lock:
            before = {s: self._lookup(s) for s in self._watchers.services()}
            self._content, self._default, self._data = content, default, services
            after = {s: self._lookup(s) for s in before}
        changed = False
        for service, endpoints in after.items():
            if endpoints != before[service]:
                changed = True
                self._watchers.notify(service, list(endpoints.values()))
        return changed or not before

    def _parse(self, content: bytes):
        if self.format == "json":
            try:
                data = json.loads(content.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ValueError(f"not valid JSON: {exc}") from None
        else:
            data = _load_toml(content)
        default = None
        if isinstance(data, list):
            default, data = data, {}
        elif not isinstance(data, dict):
            raise ValueError("the file must hold a table of services or a list of endpoints")
        elif "endpoints" in data and isinstance(data["endpoints"], list):
            default = data.pop("endpoints")
        services = {}
        for service, eps in data.items():
            if not isinstance(eps, list):
                raise ValueError(f"service {service!r}: expected a list of endpoints")
            services[service] = self._endpoints_of(service, eps)
        return (None if default is None else self._endpoints_of("(every service)", default)), services

    @staticmethod
    def _endpoints_of(service: str, items: list) -> Dict[str, Endpoint]:
        out: Dict[str, Endpoint] = {}
        for n, item in enumerate(items):
            try:
                endpoint = endpoint_from_dict(item)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"service {service!r}, endpoint {n + 1}: {exc}") from None
            if endpoint.address in out:
                raise ValueError(f"service {service!r}: {endpoint.address} is listed twice")
            out[endpoint.address] = endpoint
        return out

    def _lookup(self, service: str) -> Dict[str, Endpoint]:
        found = self._data.get(service)
        if found is None:
            found = self._default or {}
        return found

    # the interface -----------------------------------------------------------------------------
    def endpoints(self, service: str) -> List[Endpoint]:
        """The endpoints of `service` in the last good version of the file."""
        with self._lock:
            return list(self._lookup(service).values())

    def watch(self, service: str, on_change: OnChange) -> Watch:
        """Poll the file (every poll_interval) and report `service`'s set when it changes."""
        watch = self._watchers.add(service, on_change)
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._poll, name="fastrpc-file-discovery",
                                                daemon=True)
                self._thread.start()
        return watch

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                self.reload()
            except Exception:               # never let the poller die
                log.exception("discovery file %s: reload failed", self.path)

    def close(self) -> None:
        """Stop polling the file."""
        self._stop.set()

    def __repr__(self) -> str:
        return f"<FileDiscovery {self.path}>"


def _load_toml(content: bytes) -> Any:
    try:
        import tomllib
    except ImportError:                      # Python < 3.11
        try:
            import tomli as tomllib
        except ImportError:
            raise ValueError("TOML files need Python 3.11+ or the tomli package") from None
    try:
        return tomllib.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"not valid TOML: {exc}") from None
