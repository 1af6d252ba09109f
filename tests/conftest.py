"""Shared test hygiene: structlog reset and a thread-leak check."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Final

import pytest
import structlog

from bridge.mqtt.loop import IoLoop

# How long threads a test started may take to finish after it (paho's network thread
# leaves its select() within a second of disconnect()). Shared by all of them.
THREAD_EXIT_BUDGET_S: Final = 2.0
_PAHO_THREAD_PREFIX: Final = "paho-mqtt-client-"
# A bridge's I/O loop (every MQTT connection it has); CLI tools share a process-wide one
# under another name, which lives as long as the process.
_IO_LOOP_THREAD: Final = "mqtt-io"


@pytest.fixture
def loop() -> Iterator[IoLoop]:
    """A started I/O loop of the test's own, stopped after it."""
    io = IoLoop(name="test-io")
    io.start()
    yield io
    io.stop()


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """Tests that configure structlog must not leak their stream into later tests."""
    yield
    structlog.reset_defaults()


def _watched(thread: threading.Thread) -> bool:
    # Non-daemon threads keep the interpreter alive; paho's threads are daemons, but one
    # left running means an MQTT client nobody closed.
    return (not thread.daemon or thread.name.startswith(_PAHO_THREAD_PREFIX)
            or thread.name == _IO_LOOP_THREAD)


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves behind a non-daemon (or paho) thread it started."""
    before = set(threading.enumerate())
    yield
    started = [t for t in threading.enumerate() if t not in before and _watched(t)]
    if not started:
        return
    deadline = time.monotonic() + THREAD_EXIT_BUDGET_S
    for thread in started:
        thread.join(max(deadline - time.monotonic(), 0.0))
    leaked = sorted(t.name for t in started if t.is_alive())
    if leaked:
        pytest.fail(f"threads still running {THREAD_EXIT_BUDGET_S} s after the test: {leaked}",
                    pytrace=False)


@pytest.fixture(autouse=True)
def _cards_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process simulated readers present their card at once (a person takes about a
    second; tests that wait for a card say so with ``present_delay``)."""
    monkeypatch.setattr("bridge.simulator.reader.DEFAULT_PRESENT_DELAY", 0.0)
