"""Running the bridge against a test broker: in-process, or as a real subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry

from bridge.app import BridgeApp
from bridge.config import Settings, load_settings
from bridge.metrics import Metrics
from bridge.mqtt.loop import IoLoop
from bridge.transport.simulated import SimulatedBus

REPO = Path(__file__).resolve().parents[2]


def bridge_settings(broker: Any, **sections: Mapping[str, Any]) -> Settings:
    """Settings for a bridge talking to ``broker``, fast scan, no metrics server."""
    overrides: dict[str, Any] = {
        "mqtt": {"host": broker.host, "port": broker.port, "reconnect_max_delay": 1.0},
        "readers": {"backend": "simulated", "scan_interval": 0.2},
        "metrics": {"enabled": False},
        "topics": {"host_id": "testhost"},
    }
    for name, values in sections.items():
        overrides.setdefault(name, {}).update(values)
    return load_settings(None, overrides=overrides, environ={})


@contextmanager
def running_bridge(
    broker: Any, *, bus: SimulatedBus | None = None, **sections: Mapping[str, Any]
) -> Iterator[tuple[BridgeApp, SimulatedBus]]:
    """An in-process bridge with simulated readers; stopped (cleanly) on exit."""
    settings = bridge_settings(broker, **sections)
    bus = bus if bus is not None else SimulatedBus(count=1, auto_present=None)
    app = BridgeApp(settings, backend=bus, metrics=Metrics(CollectorRegistry()))
    app.start()
    try:
        yield app, bus
    finally:
        app.stop()


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


class BridgeProcess:
    """``python -m bridge run`` as a child process, its stderr captured to a file."""

    def __init__(self, args: list[str], env: Mapping[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("MAGTEK_BRIDGE_")}
        full_env.update(env)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", *args],
            cwd=REPO, env=full_env, stdout=self._log, stderr=subprocess.STDOUT,
        )

    def log_text(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 15.0) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()


@contextmanager
def bridge_process(
    broker: Any, tmp_path: Path, *extra_args: str, env: Mapping[str, str] | None = None,
) -> Iterator[BridgeProcess]:
    base_env = {
        "MAGTEK_BRIDGE_MQTT__HOST": broker.host,
        "MAGTEK_BRIDGE_MQTT__PORT": str(broker.port),
        "MAGTEK_BRIDGE_MQTT__RECONNECT_MAX_DELAY": "1",
        "MAGTEK_BRIDGE_METRICS__ENABLED": "false",
        "MAGTEK_BRIDGE_TOPICS__HOST_ID": "proc",
        "PYTHONUNBUFFERED": "1",
    }
    base_env.update(env or {})
    process = BridgeProcess(["run", *extra_args], base_env, tmp_path / "bridge.log")
    try:
        yield process
    finally:
        process.close()


def wait_until(predicate: Any, timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


__all__ = [
    "BridgeProcess",
    "bridge_process",
    "bridge_settings",
    "running_bridge",
    "signal",
    "wait_until",
    "write_config",
]


R = TypeVar("R")


def on_loop(loop: IoLoop, call: Callable[[], R], timeout: float = 30.0) -> R:
    """Run ``call`` on the loop's thread (where ``publish`` returns what it did) and wait."""
    result: list[R] = []
    done = threading.Event()

    def run() -> None:
        try:
            result.append(call())
        finally:
            done.set()

    loop.call_soon(run)
    assert done.wait(timeout), "the I/O loop did not run the call"
    assert result, "the call raised on the loop (see the log)"
    return result[0]
