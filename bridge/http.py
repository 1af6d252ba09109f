"""The operator HTTP endpoint: ``/metrics``, ``/healthz`` (liveness), ``/readyz`` (readiness).

Stdlib ``ThreadingHTTPServer`` in one named daemon thread: three tiny GET routes do not
justify a web framework. Health checks are callables injected by the app, each returning
``(ok, details)``; the body is small JSON saying why.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog

from bridge.metrics import Metrics

_log = structlog.get_logger("bridge.http")

Check = Callable[[], tuple[bool, dict[str, Any]]]


class OpsServer:
    """Serves metrics and health on ``address:port`` until ``stop()``.

    Args:
        metrics: rendered at ``/metrics``.
        liveness: backs ``/healthz``.
        readiness: backs ``/readyz``.
        address: bind address (``127.0.0.1`` by default; ``0.0.0.0`` in Docker).
        port: TCP port; 0 picks a free one (tests), see ``port`` after ``start()``.
    """

    def __init__(self, metrics: Metrics, *, liveness: Check, readiness: Check,
                 address: str = "127.0.0.1", port: int = 9108) -> None:
        routes: dict[str, Callable[[], tuple[int, bytes, str]]] = {
            "/metrics": lambda: (200, *metrics.render()),
            "/healthz": lambda: _check_response(liveness),
            "/readyz": lambda: _check_response(readiness),
        }

        class Handler(BaseHTTPRequestHandler):
            server_version = "magtek-bridge"

            def do_GET(self) -> None:
                route = routes.get(self.path.split("?", 1)[0])
                if route is None:
                    status, body, ctype = 404, b'{"error": "not found"}\n', "application/json"
                else:
                    status, body, ctype = route()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return  # scrapes every few seconds would flood the log

        self._server = ThreadingHTTPServer((address, port), Handler)
        self._server.daemon_threads = True
        self.address = address
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="ops-http",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()
        _log.info("ops_http_listening", address=self.address, port=self.port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def _check_response(check: Check) -> tuple[int, bytes, str]:
    try:
        ok, details = check()
    except Exception as exc:  # a broken check must answer, not hang the probe
        ok, details = False, {"error": f"health check failed: {exc}"}
    body = json.dumps({"status": "ok" if ok else "fail", **details}).encode() + b"\n"
    return (200 if ok else 503), body, "application/json"


__all__ = ["OpsServer"]
