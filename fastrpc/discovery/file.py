"""FileDiscovery: endpoints from a JSON or TOML file, reloaded when it changes."""
from __future__ import annotations

import json
import logging
import os
import threading
from typing import Any, Dict, List, Optional, Union

from fastrpc.discovery.base import Discovery, OnChange, Watch, Watchers, endpoint_from_dict
from fastrpc.net.endpoint import Endpoint

__all__ = ["FileDiscovery"]

log = logging.getLogger("fastrpc.discovery")


class FileDiscovery(Discovery):
    """Endpoints from a JSON or TOML file at `path`, reloaded when it changes.

    `format` is "json" or "toml" (default None: by the file's extension).

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
        self._watchers = Watchers()
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

    def _parse(self, content: bytes) -> Any:
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
    def _endpoints_of(service: str, items: list[Any]) -> Dict[str, Endpoint]:
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

    def services(self) -> List[str]:
        """The services the file names (a file with one top-level list names none)."""
        with self._lock:
            return sorted(s for s, eps in self._data.items() if eps)

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
            import tomli as tomllib  # type: ignore[import-not-found,no-redef]  # the 3.10 backport
        except ImportError:
            raise ValueError("TOML files need Python 3.11+ or the tomli package") from None
    try:
        return tomllib.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"not valid TOML: {exc}") from None
