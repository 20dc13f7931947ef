"""The metrics and status of a service run as several workers, summed.

``fastrpc serve --workers N --metrics http://host:port``: each worker serves
its own numbers on a private port; at each scrape this HTTP server reads them
all (``/status?format=json``), adds them up (fastrpc.observability.snapshot.merge)
and answers ``/metrics`` in Prometheus's format and ``/status`` as HTML or
JSON, so the service reports one coherent set whichever worker served which
call. A worker that does not answer within SCRAPE_TIMEOUT is left out of that
scrape (and named in the status JSON's ``missing``); a restarted worker's
counters start again from zero, which Prometheus reads as a counter reset.
"""
from __future__ import annotations

import concurrent.futures
import json
import logging
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Tuple

from fastrpc.net.address import parse_address, tcp_url
from fastrpc.observability import prometheus, status
from fastrpc.observability.snapshot import merge

__all__ = ["MetricsServer", "SCRAPE_TIMEOUT"]

log = logging.getLogger("fastrpc.cli")

#: Seconds a worker has to answer a scrape.
SCRAPE_TIMEOUT = 2.0


def _fetch(url: str) -> Dict[str, Any]:
    with urllib.request.urlopen(url + "/status?format=json", timeout=SCRAPE_TIMEOUT) as reply:
        snapshot: Dict[str, Any] = json.loads(reply.read())
    # The status JSON gives per-method rows; merge() takes them by name.
    for group in ("servers", "clients", "balancers"):
        for entry in snapshot.get(group, []):
            if isinstance(entry.get("methods"), list):
                entry["methods"] = {m.pop("method"): m for m in entry["methods"]}
            if isinstance(entry.get("endpoints"), list):
                entry["endpoints"] = {e.pop("address"): e for e in entry["endpoints"]}
    return snapshot


class MetricsServer:
    """An HTTP server of the summed metrics of `sources()` (worker URLs)."""

    def __init__(self, address: str, sources: Callable[[], List[str]]) -> None:
        if not address.startswith("http://"):
            raise ValueError(f"--metrics is an http://host:port address, not {address!r}")
        addr = parse_address("tcp://" + address[len("http://"):])
        self.sources = sources
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:           # noqa: N802 (the stdlib's name)
                owner.answer(self)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("metrics: " + format, *args)

        self.httpd = ThreadingHTTPServer((addr.host, addr.port), Handler)
        self.url = tcp_url(addr.host, self.httpd.server_address[1], "http")
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="fastrpc-metrics", daemon=True)
        self._thread.start()

    def collect(self) -> Tuple[Dict[str, Any], List[str]]:
        """Every worker's snapshot, summed; and the workers that did not answer."""
        urls = self.sources()
        snapshots, missing = [], []
        with concurrent.futures.ThreadPoolExecutor(max(1, len(urls))) as pool:
            for url, future in [(u, pool.submit(_fetch, u)) for u in urls]:
                try:
                    snapshots.append(future.result())
                except Exception as exc:
                    log.warning("worker metrics at %s unavailable: %s", url, exc)
                    missing.append(url)
        return merge(snapshots), missing

    def answer(self, request: BaseHTTPRequestHandler) -> None:
        path, _, query = request.path.partition("?")
        if path not in ("/metrics", "/status"):
            self._reply(request, 404, "text/plain; charset=utf-8", b"404 page not found\n")
            return
        snapshot, missing = self.collect()
        if path == "/metrics":
            try:
                body, kind = prometheus.render(snapshot), prometheus.CONTENT_TYPE
            except ImportError:
                self._reply(request, 501, "text/plain; charset=utf-8", prometheus.MISSING.encode())
                return
        elif "format=json" in query.split("&"):
            snapshot["missing"] = missing
            body, kind = status.status_json(snapshot), "application/json"
        else:
            body, kind = status.status_html(snapshot), "text/html; charset=utf-8"
        self._reply(request, 200, kind, body)

    @staticmethod
    def _reply(request: BaseHTTPRequestHandler, code: int, kind: str, body: bytes) -> None:
        request.send_response(code)
        request.send_header("Content-Type", kind)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    def close(self) -> None:
        """Stop serving."""
        self.httpd.shutdown()
        self.httpd.server_close()
