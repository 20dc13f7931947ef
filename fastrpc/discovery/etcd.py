"""EtcdDiscovery: a service registry on etcd v3, spoken through etcd's JSON gateway.

Layout: one key per endpoint, ``{prefix}{service}/{address}``, whose value
is the endpoint as JSON (fastrpc.discovery.base.endpoint_to_dict). A server's key
is attached to a lease with a TTL that a keep-alive thread renews; closing
the Registration revokes the lease (the key goes at once), and a crashed
server's key goes when the lease expires.

The gateway (``POST /v3/kv/range``, ``/v3/watch``, ``/v3/lease/...``) is
part of every etcd v3 server and needs nothing but HTTP/1.1 and JSON, so
this module uses the standard library's http.client: the maintained Python
gRPC clients for etcd pin old protobuf/grpcio releases, and an HTTP library
would add a dependency for a few POSTs and one streamed response.
"""
from __future__ import annotations

import base64
import http.client
import json
import logging
import socket
import ssl
import threading
import time
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union
from urllib.parse import urlsplit

from fastrpc.discovery.base import (Discovery, OnChange, Registration, Watch, endpoint_from_dict,
                               endpoint_to_dict)
from fastrpc.errors import EtcdError
from fastrpc.net.endpoint import Endpoint, as_endpoint

__all__ = ["EtcdDiscovery", "EtcdError"]

log = logging.getLogger("fastrpc.discovery")

# gRPC status codes etcd returns for a token that must be renewed
_UNAUTHENTICATED = 16
_TOKEN_ERRORS = ("invalid auth token", "auth token is expired")


def _b64(text: Union[str, bytes]) -> str:
    raw = text.encode("utf-8") if isinstance(text, str) else text
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: str) -> str:
    return base64.b64decode(text).decode("utf-8")


def _prefix_end(prefix: str) -> bytes:
    """The range end that covers every key starting with `prefix` (etcd's "prefix" idiom)."""
    raw = bytearray(prefix.encode("utf-8"))
    while raw and raw[-1] == 0xFF:
        raw.pop()
    if not raw:
        return b"\0"
    raw[-1] += 1
    return bytes(raw)


class _Gateway:
    """JSON requests to an etcd cluster: tries each endpoint in turn,
    authenticates when given a user, renews an expired token once."""

    def __init__(self, urls: List[str], username: Optional[str], password: Optional[str],
                 ssl_context: Optional[ssl.SSLContext], timeout: float) -> None:
        self.targets = []
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"etcd endpoint {url!r} must look like http://host:port or https://host:port")
            self.targets.append((parts.scheme, parts.hostname, parts.port or 2379))
        if not self.targets:
            raise ValueError("give at least one etcd endpoint")
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        self.username, self.password = username, password
        self.ssl_context = ssl_context
        self.timeout = timeout
        self.current = 0
        self.token: Optional[str] = None
        self.lock = threading.Lock()

    def connect(self, timeout: Optional[float]) -> Tuple[http.client.HTTPConnection, str]:
        """A connection to the first endpoint that answers, starting at the last good one."""
        errors = []
        for step in range(len(self.targets)):
            index = (self.current + step) % len(self.targets)
            scheme, host, port = self.targets[index]
            conn: http.client.HTTPConnection
            if scheme == "https":
                conn = http.client.HTTPSConnection(host, port, timeout=timeout,
                                                   context=self.ssl_context or ssl.create_default_context())
            else:
                conn = http.client.HTTPConnection(host, port, timeout=timeout)
            try:
                conn.connect()
            except OSError as exc:
                conn.close()
                errors.append(f"{scheme}://{host}:{port}: {exc}")
                continue
            self.current = index
            return conn, f"{scheme}://{host}:{port}"
        raise EtcdError("no etcd endpoint reachable: " + "; ".join(errors))

    def call(self, path: str, body: Dict[str, Any], timeout: Optional[float] = None) -> Dict[str, Any]:
        """POST `body` to `path`; return the decoded reply or raise EtcdError."""
        conn, response = self.open_stream(path, body, self.timeout if timeout is None else timeout)
        return _decode(self._read(conn, response, path))

    def open_stream(self, path: str, body: Dict[str, Any], timeout: float,
                    require_leader: bool = False) -> Any:
        """POST `body` and return (connection, response) with status 200 (a watch reads it
        line by line); an expired token is renewed once. `require_leader`: the
        member ends the stream when it loses its leader (etcd's "hasleader"
        metadata, which its gateway takes as a Grpc-Metadata- header), so a
        watch does not stay on a member cut off from the cluster."""
        extra = {"Grpc-Metadata-hasleader": "true"} if require_leader else None
        for attempt in (0, 1):
            conn, response = self._request(path, body, timeout, extra=extra)
            if response.status == 200:
                return conn, response
            reply = _decode(self._read(conn, response, path))
            if attempt == 0 and self._token_expired(reply):
                self.token = None
                continue
            raise EtcdError(f"etcd {path}: {reply.get('error') or reply.get('message') or response.status}")
        raise AssertionError("unreachable")

    def _request(self, path: str, body: Dict[str, Any], timeout: float, authenticated: bool = True,
                 extra: Optional[Dict[str, str]] = None) -> Tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        headers = self._headers() if authenticated else {"Content-Type": "application/json"}
        if extra:
            headers.update(extra)
        conn, where = self.connect(timeout)
        try:
            conn.request("POST", path, json.dumps(body), headers)
            return conn, conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise EtcdError(f"etcd {where}{path}: {type(exc).__name__}: {exc}") from None

    @staticmethod
    def _read(conn: http.client.HTTPConnection, response: http.client.HTTPResponse, path: str) -> bytes:
        try:
            return response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise EtcdError(f"etcd {path}: {type(exc).__name__}: {exc}") from None
        finally:
            conn.close()

    def _headers(self) -> Dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.username is not None:
            with self.lock:
                if self.token is None:
                    path = "/v3/auth/authenticate"
                    conn, response = self._request(path, {"name": self.username, "password": self.password},
                                                   self.timeout, authenticated=False)
                    reply = _decode(self._read(conn, response, path))
                    if response.status != 200 or "token" not in reply:
                        raise EtcdError(f"etcd authentication as {self.username!r} failed: "
                                        f"{reply.get('error') or response.status}")
                    self.token = reply["token"]
                headers["Authorization"] = self.token
        return headers

    @staticmethod
    def _token_expired(reply: Dict[str, Any]) -> bool:
        message = str(reply.get("error") or reply.get("message") or "")
        return reply.get("code") == _UNAUTHENTICATED or any(t in message for t in _TOKEN_ERRORS)


def _probe_when_silent(sock: Any, idle: float) -> None:
    """TCP keep-alive on a watch's socket: probes after `idle` seconds of
    silence, every second, and the connection fails after 3 unanswered
    (where the platform has the options; elsewhere the watch_timeout resync
    bounds a dead watch)."""
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, max(1, int(round(idle))))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
    except OSError:
        pass                                     # best effort: the resync still bounds it


def _decode(data: bytes) -> Dict[str, Any]:
    try:
        value = json.loads(data.decode("utf-8")) if data else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {"error": f"not JSON: {data[:200]!r}"}
    return value if isinstance(value, dict) else {"error": f"unexpected reply {value!r}"}


class EtcdDiscovery(Discovery):
    """Endpoints registered in etcd v3 (3.4 or later), watched for changes.

    ``EtcdDiscovery(["http://10.0.0.5:2379", ...], prefix="/fastrpc/services/",
    username="svc", password="...", ssl_context=ctx)``; or ``ca_file``,
    ``cert_file`` and ``key_file`` to build the TLS context (mutual TLS when
    a client certificate is given). `endpoints` are etcd's client URLs,
    tried in turn; `timeout` bounds each request; a watch request is
    renewed every `watch_timeout` seconds. A watch's connection is probed
    (TCP keep-alive) after `keepalive` seconds of silence, so a member that
    falls silent (a partition sends no reset) is left for another within
    about keepalive + 3 seconds; a member that loses its leader ends the
    watch itself.

    A watch keeps the last known set while etcd is unreachable (logged once)
    and resynchronises when it returns; a registration's keep-alive renews
    its lease every ttl/3 seconds and re-registers if the lease was lost.
    """

    def __init__(self, endpoints: Union[str, Iterable[str]] = ("http://127.0.0.1:2379",), *,
                 prefix: str = "/fastrpc/services/", username: Optional[str] = None,
                 password: Optional[str] = None, ssl_context: Optional[ssl.SSLContext] = None,
                 ca_file: Optional[str] = None, cert_file: Optional[str] = None,
                 key_file: Optional[str] = None, timeout: float = 5.0,
                 watch_timeout: float = 30.0, keepalive: float = 3.0) -> None:
        urls = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        if ssl_context is None and (ca_file or cert_file):
            ssl_context = ssl.create_default_context(cafile=ca_file)
            if cert_file:
                ssl_context.load_cert_chain(cert_file, key_file)
        if not prefix.endswith("/"):
            raise ValueError("prefix must end with '/'")
        if timeout <= 0 or watch_timeout <= 0 or keepalive <= 0:
            raise ValueError("timeouts must be > 0")
        self.prefix = prefix
        self.watch_timeout = watch_timeout
        self.keepalive = keepalive
        self.gateway = _Gateway(urls, username, password, ssl_context, timeout)
        self._closing = threading.Event()
        self._watches: List[_EtcdWatch] = []
        self._leases: List[_Lease] = []

    # keys ----------------------------------------------------------------------------------
    def _service_prefix(self, service: str) -> str:
        if not service or "/" in service:
            raise ValueError(f"service name {service!r} must be non-empty and contain no '/'")
        return f"{self.prefix}{service}/"

    def _snapshot(self, service: str) -> Tuple[Dict[str, Endpoint], int]:
        """The service's endpoints by key, and the revision they were read at."""
        start = self._service_prefix(service)
        reply = self.gateway.call("/v3/kv/range", {"key": _b64(start), "range_end": _b64(_prefix_end(start))})
        entries = {}
        for kv in reply.get("kvs", []):
            key = _unb64(kv["key"])
            endpoint = self._parse(key, kv.get("value", ""))
            if endpoint is not None:
                entries[key] = endpoint
        return entries, int(reply.get("header", {}).get("revision", 0))

    @staticmethod
    def _parse(key: str, value: str) -> Optional[Endpoint]:
        try:
            return endpoint_from_dict(json.loads(_unb64(value)))
        except (ValueError, TypeError) as exc:
            log.warning("etcd key %s holds no valid endpoint (%s): ignored", key, exc)
            return None

    # the interface -------------------------------------------------------------------------
    def endpoints(self, service: str) -> List[Endpoint]:
        """The endpoints registered under `service` now (raises EtcdError if etcd is unreachable)."""
        entries, _ = self._snapshot(service)
        return list(entries.values())

    def services(self) -> List[str]:
        """The services with endpoints under the prefix now (raises EtcdError if etcd is unreachable)."""
        reply = self.gateway.call("/v3/kv/range", {"key": _b64(self.prefix), "range_end": _b64(_prefix_end(self.prefix)),
                                                   "keys_only": True})
        names = {_unb64(kv["key"])[len(self.prefix):].split("/", 1)[0] for kv in reply.get("kvs", [])}
        return sorted(name for name in names if name)

    def watch(self, service: str, on_change: OnChange) -> Watch:
        """Follow `service` from a background thread; see the class notes on outages."""
        self._service_prefix(service)
        watch = _EtcdWatch(self, service, on_change)
        self._watches.append(watch)
        watch.start()
        return Watch(watch.stop)

    def register(self, service: str, endpoint: Union[str, Endpoint], ttl: float = 10.0) -> Registration:
        """Put `endpoint` under `service` with a lease of `ttl` seconds (at least 2), kept alive
        from a background thread until the Registration closes (which revokes the lease)."""
        endpoint = as_endpoint(endpoint)
        key = self._service_prefix(service) + endpoint.address
        lease = _Lease(self, key, json.dumps(endpoint_to_dict(endpoint)), max(2, int(round(ttl))))
        lease.grant_and_put()                    # fail now, loudly, if etcd refuses
        self._leases.append(lease)
        lease.start()
        return Registration(service, endpoint, lease.revoke,
                            lambda changed: lease.put(json.dumps(endpoint_to_dict(changed))))

    def close(self) -> None:
        """Stop every watch and keep-alive (registrations still open are revoked)."""
        self._closing.set()
        for watch in self._watches:
            watch.stop()
        for lease in self._leases:
            lease.revoke()

    def __repr__(self) -> str:
        return f"<EtcdDiscovery {[f'{s}://{h}:{p}' for s, h, p in self.gateway.targets]} {self.prefix}>"


class _EtcdWatch:
    """One watch: snapshot, then stream changes; on any failure, keep the last
    set, back off, and start over from a fresh snapshot."""

    def __init__(self, discovery: EtcdDiscovery, service: str, on_change: OnChange) -> None:
        self.discovery = discovery
        self.service = service
        self.on_change = on_change
        self.stopped = threading.Event()
        self.entries: Optional[Dict[str, Endpoint]] = None    # None: nothing delivered yet
        self.conn: Optional[http.client.HTTPConnection] = None
        self.thread = threading.Thread(target=self.run, name=f"fastrpc-etcd-watch-{service}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        conn = self.conn
        if conn is not None:
            try:
                if conn.sock is not None:
                    conn.sock.shutdown(2)        # wakes the thread blocked reading the stream
            except OSError:
                pass

    def run(self) -> None:
        delay, down_since = 0.1, None
        while not self.stopped.is_set():
            try:
                entries, revision = self.discovery._snapshot(self.service)
                if down_since is not None:
                    log.info("etcd is reachable again: following %s", self.service)
                    down_since = None
                delay = 0.1
                self.deliver(entries)
                self.follow(revision)
            except (EtcdError, OSError, http.client.HTTPException, ValueError, KeyError) as exc:
                if self.stopped.is_set():
                    return
                if down_since is None:
                    down_since = time.monotonic()
                    log.warning("etcd watch of %s interrupted (%s); keeping its last %d endpoints",
                                self.service, exc, len(self.entries or {}))
                self.stopped.wait(delay)
                delay = min(delay * 2, 2.0)

    def follow(self, revision: int) -> None:
        """Stream the changes after `revision` until the stream ends or fails."""
        start = self.discovery._service_prefix(self.service)
        request = {"create_request": {"key": _b64(start), "range_end": _b64(_prefix_end(start)),
                                      "start_revision": str(revision + 1)}}
        conn, response = self.discovery.gateway.open_stream("/v3/watch", request,
                                                            self.discovery.watch_timeout, require_leader=True)
        self.conn = conn
        _probe_when_silent(conn.sock, self.discovery.keepalive)
        try:
            if self.stopped.is_set():
                return
            while not self.stopped.is_set():
                line = response.readline()
                if not line:
                    raise EtcdError("the watch stream ended")
                if not line.strip():
                    continue
                message = json.loads(line)
                if "error" in message:
                    raise EtcdError(str(message["error"].get("message", message["error"])))
                result = message.get("result", {})
                if result.get("canceled") or result.get("compact_revision"):
                    raise EtcdError(f"watch canceled: {result.get('cancel_reason', 'compacted')}")
                events = result.get("events")
                if events:
                    self.apply(events)
        except socket.timeout:                   # idle for watch_timeout: resync
            return
        finally:
            self.conn = None
            conn.close()

    def apply(self, events: List[Dict[str, Any]]) -> None:
        entries = dict(self.entries or {})
        for event in events:
            kv = event.get("kv", {})
            key = _unb64(kv.get("key", ""))
            if event.get("type") == "DELETE":
                entries.pop(key, None)
            else:
                endpoint = self.discovery._parse(key, kv.get("value", ""))
                if endpoint is None:
                    entries.pop(key, None)
                else:
                    entries[key] = endpoint
        self.deliver(entries)

    def deliver(self, entries: Dict[str, Endpoint]) -> None:
        if entries == self.entries or self.stopped.is_set():
            return
        self.entries = entries
        try:
            self.on_change(list(entries.values()))
        except Exception:
            log.exception("discovery watcher of %s failed", self.service)


class _Lease:
    """A registered key under a lease, renewed from a background thread."""

    def __init__(self, discovery: EtcdDiscovery, key: str, value: str, ttl: int) -> None:
        self.discovery = discovery
        self.key = key
        self.value = value
        self.ttl = ttl
        self.lease_id: Optional[str] = None
        self.stopped = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.run, name="fastrpc-etcd-lease", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def grant_and_put(self) -> None:
        gateway = self.discovery.gateway
        reply = gateway.call("/v3/lease/grant", {"TTL": str(self.ttl)})
        lease_id = reply.get("ID")
        if not lease_id or reply.get("error"):
            raise EtcdError(f"etcd did not grant a lease: {reply.get('error') or reply}")
        gateway.call("/v3/kv/put", {"key": _b64(self.key), "value": _b64(self.value), "lease": lease_id})
        with self.lock:
            self.lease_id = lease_id

    def put(self, value: str) -> None:
        """Announce a new value under the same lease."""
        with self.lock:
            lease_id = self.lease_id
            self.value = value
        if lease_id is None:
            raise RuntimeError("this registration is closed")
        self.discovery.gateway.call("/v3/kv/put", {"key": _b64(self.key), "value": _b64(value),
                                                   "lease": lease_id})

    def keep_alive(self) -> bool:
        """Renew the lease; False when etcd no longer knows it (it expired)."""
        reply = self.discovery.gateway.call("/v3/lease/keepalive", {"ID": self.lease_id})
        return int(reply.get("result", {}).get("TTL", 0) or 0) > 0

    def run(self) -> None:
        interval = self.ttl / 3.0
        down = False
        while not self.stopped.wait(interval if not down else min(interval, 0.5)):
            try:
                if not self.keep_alive():
                    log.warning("etcd lease of %s expired; registering again", self.key)
                    self.grant_and_put()
                if down:
                    log.info("etcd is reachable again: %s is registered", self.key)
                down = False
            except (EtcdError, OSError, http.client.HTTPException, ValueError) as exc:
                if not down:
                    log.warning("cannot renew the etcd lease of %s (%s); retrying", self.key, exc)
                down = True

    def revoke(self) -> None:
        """Stop renewing and delete the key now (if etcd is down, the lease expires instead)."""
        if self.stopped.is_set():
            return
        self.stopped.set()
        with self.lock:
            lease_id, self.lease_id = self.lease_id, None
        if lease_id is None:
            return
        try:
            self.discovery.gateway.call("/v3/lease/revoke", {"ID": lease_id})
        except (EtcdError, OSError) as exc:
            log.warning("could not revoke the etcd lease of %s (%s): it expires in %d s",
                        self.key, exc, self.ttl)
