"""The ops HTTP server's bounds: connection cap, timeouts, request size, methods."""

from __future__ import annotations

import contextlib
import socket
import time

import pytest

from bridge.http import OpsServer
from bridge.metrics import CollectorRegistry, Metrics


@pytest.fixture
def server():
    metrics = Metrics(CollectorRegistry(), process_metrics=False)
    ops = OpsServer(metrics, liveness=lambda: (True, {"stuck": []}),
                    readiness=lambda: (False, {"reasons": ["mqtt: not connected"]}),
                    port=0, max_connections=4, request_timeout=0.5)
    ops.start()
    yield ops, metrics
    ops.stop()


def _ask(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _dropped(metrics: Metrics, reason: str) -> float:
    return metrics.registry.get_sample_value(
        "magtek_bridge_ops_http_dropped_connections_total", {"reason": reason}) or 0.0


def test_routes_methods_and_head(server):
    ops, _ = server
    assert _ask(ops.port, b"GET /healthz HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 200 OK")
    ready = _ask(ops.port, b"GET /readyz HTTP/1.0\r\n\r\n")
    assert ready.startswith(b"HTTP/1.1 503") and b"mqtt: not connected" in ready
    assert b"magtek_bridge_commands_total" in _ask(ops.port, b"GET /metrics HTTP/1.1\r\n\r\n")
    head = _ask(ops.port, b"HEAD /healthz HTTP/1.1\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and head.endswith(b"\r\n\r\n")
    assert _ask(ops.port, b"POST /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 405")
    assert _ask(ops.port, b"GET /nope HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404")
    assert _ask(ops.port, b"garbage\r\n\r\n").startswith(b"HTTP/1.1 400")


def test_oversize_heads_are_refused(server):
    ops, metrics = server
    answer = _ask(ops.port, b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n")
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431")
    assert _dropped(metrics, "too_large") == 1


def test_idle_clients_time_out_and_make_room(server):
    ops, metrics = server
    idle = [socket.create_connection(("127.0.0.1", ops.port)) for _ in range(10)]
    try:
        for sock in idle:
            sock.sendall(b"GET /metrics HTTP/1.1\r\n")
        # Beyond the cap the oldest idle ones were closed; a real request still gets through.
        assert _ask(ops.port, b"GET /healthz HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 200")
        deadline = time.monotonic() + 10
        while _dropped(metrics, "timeout") + _dropped(metrics, "evicted") < 10:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert _dropped(metrics, "evicted") >= 6  # 10 idle + 1 request, 4 held at most
        for sock in idle:  # closed by the server (evicted ones reset), never answered
            sock.settimeout(10)
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(100) == b""
    finally:
        for sock in idle:
            sock.close()


def test_stopping_with_idle_clients_is_quiet(capsys):
    metrics = Metrics(CollectorRegistry(), process_metrics=False)
    ops = OpsServer(metrics, liveness=lambda: (True, {}), readiness=lambda: (True, {}),
                    port=0, max_connections=8, request_timeout=30)
    ops.start()
    idle = [socket.create_connection(("127.0.0.1", ops.port)) for _ in range(5)]
    try:
        for sock in idle:
            sock.sendall(b"GET /he")
        assert _ask(ops.port, b"GET /healthz HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 200")
        ops.stop()
        captured = capsys.readouterr()
        assert "Task was destroyed" not in captured.out + captured.err
        assert "Traceback" not in captured.out + captured.err
    finally:
        for sock in idle:
            sock.close()
