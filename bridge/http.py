"""The operator HTTP endpoint: ``/metrics``, ``/healthz`` (liveness), ``/readyz`` (readiness).

One thread runs an asyncio loop that serves every connection: three tiny GET routes do not
justify a web framework, and a thread per connection let 1,000 idle clients take the process
down (issue 16). Bounds instead:

- at most ``max_connections`` connections are held; a new one closes the oldest that has not
  yet sent its request, so slow or idle clients cannot lock out a scrape;
- a client gets ``request_timeout`` seconds to send its request head (at most 8 KiB) and as
  long again to take the answer; one request per connection (``Connection: close``);
- clients that go away early are counted, never printed (no tracebacks on stderr).

Health checks are callables injected by the app, each returning ``(ok, details)``; the body
is small JSON saying why.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import socket
import threading
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, Final

import structlog

from bridge.metrics import Metrics

_log = structlog.get_logger("bridge.http")

Check = Callable[[], tuple[bool, dict[str, Any]]]
Route = Callable[[], tuple[int, bytes, str]]

MAX_REQUEST_HEAD: Final = 8192
_JSON: Final = "application/json"


class OpsServer:
    """Serves metrics and health on ``address:port`` until ``stop()``.

    Args:
        metrics: rendered at ``/metrics``; also counts dropped connections.
        liveness: backs ``/healthz``.
        readiness: backs ``/readyz``.
        address: bind address (``127.0.0.1`` by default; ``0.0.0.0`` in Docker).
        port: TCP port; 0 picks a free one (tests), see ``port`` after construction.
        max_connections: connections held at once (the oldest idle one makes room).
        request_timeout: seconds to send the request head, and again to read the answer.
    """

    def __init__(self, metrics: Metrics, *, liveness: Check, readiness: Check,
                 address: str = "127.0.0.1", port: int = 9108, max_connections: int = 64,
                 request_timeout: float = 5.0) -> None:
        self._routes: dict[str, Route] = {
            "/metrics": lambda: (200, *metrics.render()),
            "/healthz": lambda: _check_response(liveness),
            "/readyz": lambda: _check_response(readiness),
        }
        self._metrics = metrics
        self._max_connections = max(1, max_connections)
        self._timeout = request_timeout
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        # Bound here, so a taken port fails the start before anything else runs.
        self._sock = socket.create_server((address, port), family=family, backlog=512)
        self._sock.setblocking(False)
        self.address = address
        self.port: int = self._sock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._waiting: dict[asyncio.StreamWriter, None] = {}  # no request yet, oldest first
        self._evicted: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ops-http", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(5)
        _log.info("ops_http_listening", address=self.address, port=self.port,
                  max_connections=self._max_connections)

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        with contextlib.suppress(OSError):
            self._sock.close()

    # -- the loop's thread ------------------------------------------------------------------

    def _run(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        loop.set_exception_handler(_quiet_exception)
        server = loop.run_until_complete(
            asyncio.start_server(self._serve, sock=self._sock, limit=MAX_REQUEST_HEAD))
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            server.close()
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            with contextlib.suppress(Exception):
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.close()

    def _dropped(self, reason: str) -> None:
        self._metrics.ops_http_dropped.labels(reason).inc()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._waiting) >= self._max_connections:
            oldest = next(iter(self._waiting))
            del self._waiting[oldest]
            self._evicted.add(oldest)
            oldest.transport.abort()
            self._dropped("evicted")
        self._waiting[writer] = None
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self._timeout)
            finally:
                self._waiting.pop(writer, None)
            response = self._respond(head)
            writer.write(response)
            await asyncio.wait_for(writer.drain(), self._timeout)
        except TimeoutError:
            self._dropped("timeout")
        except (asyncio.LimitOverrunError, ValueError):
            self._dropped("too_large")
            with contextlib.suppress(Exception):
                writer.write(_response(431, b'{"error": "request head too large"}\n', _JSON))
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            if writer not in self._evicted:
                self._dropped("client_closed")
        finally:
            self._evicted.discard(writer)
            writer.close()

    def _respond(self, head: bytes) -> bytes:
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            self._dropped("bad_request")
            return _response(400, b'{"error": "bad request"}\n', _JSON)
        method, target = parts[0], parts[1]
        if method not in ("GET", "HEAD"):
            return _response(405, b'{"error": "method not allowed"}\n', _JSON,
                             extra="Allow: GET, HEAD\r\n")
        route = self._routes.get(target.split("?", 1)[0])
        if route is None:
            return _response(404, b'{"error": "not found"}\n', _JSON)
        status, body, content_type = route()
        return _response(status, body, content_type, head_only=method == "HEAD")


def _response(status: int, body: bytes, content_type: str, *, head_only: bool = False,
              extra: str = "") -> bytes:
    head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            f"Server: magtek-bridge\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n")
    return head.encode("latin-1") + (b"" if head_only else body)


def _quiet_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    # A client's socket error is not ours to print; anything else is logged, in our format.
    exc = context.get("exception")
    if isinstance(exc, ConnectionError | TimeoutError):
        return
    _log.warning("ops_http_error", message=context.get("message"),
                 error=repr(exc) if exc is not None else None)


def _check_response(check: Check) -> tuple[int, bytes, str]:
    try:
        ok, details = check()
    except Exception as exc:  # a broken check must answer, not hang the probe
        ok, details = False, {"error": f"health check failed: {exc}"}
    body = json.dumps({"status": "ok" if ok else "fail", **details}).encode() + b"\n"
    return (200 if ok else 503), body, _JSON


def raise_open_file_limit() -> int:
    """Raise this process's soft limit on open files to the hard limit (idle clients of the
    HTTP and WebSocket endpoints hold descriptors); the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft >= hard:
        return soft
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft


__all__ = ["OpsServer", "raise_open_file_limit"]
