"""The I/O loop and the links it drives: hand-overs, reconnect policy, no paho internals."""

from __future__ import annotations

import re
import socket
import threading
from pathlib import Path

from bridge.backoff import Backoff
from bridge.mqtt.link import LinkOptions, MqttLink
from bridge.mqtt.loop import IoLoop
from tests.integration.harness import on_loop, wait_until


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens once the socket closes


def test_hand_overs_run_in_order_on_the_loop_thread():
    loop = IoLoop(name="test-io")
    loop.start()
    try:
        seen: list[tuple[int, bool]] = []
        done = threading.Event()
        for index in range(100):
            loop.call_soon(lambda i=index: seen.append((i, loop.in_loop())))
        loop.call_soon(done.set)
        assert done.wait(10)
        assert seen == [(i, True) for i in range(100)]
        assert not loop.in_loop()
    finally:
        loop.stop()
    assert not loop.alive()


def test_a_socket_is_watched_changed_dropped_and_watched_again():
    loop = IoLoop(name="test-io")
    loop.start()
    ours, peer = socket.socketpair()
    try:
        seen: list[tuple[str, int]] = []
        readable = threading.Event()

        def handler(name: str):
            def on_io(mask: int) -> None:
                seen.append((name, mask))
                ours.recv(16)
                readable.set()
            return on_io

        def watch(name: str, events: int) -> None:
            readable.clear()
            on_loop(loop, lambda: loop.register(ours, events, handler(name)))

        watch("first", 1)  # EVENT_READ
        peer.send(b"a")
        assert readable.wait(10)
        watch("changed", 1)  # registered already: the handler is replaced
        peer.send(b"b")
        assert readable.wait(10)
        on_loop(loop, lambda: loop.unregister(ours))
        on_loop(loop, lambda: loop.unregister(ours))  # twice is harmless
        watch("again", 1)
        peer.send(b"c")
        assert readable.wait(10)
        assert seen == [("first", 1), ("changed", 1), ("again", 1)]
    finally:
        loop.stop()
        ours.close()
        peer.close()


def test_call_later_runs_in_due_order_on_the_loop_thread_and_cancel_holds():
    loop = IoLoop(name="test-io")
    loop.start()
    try:
        seen: list[tuple[str, bool]] = []
        done = threading.Event()
        loop.call_later(0.2, lambda: seen.append(("late", loop.in_loop())))
        cancelled = loop.call_later(0.1, lambda: seen.append(("cancelled", True)))
        loop.call_later(0.05, lambda: seen.append(("early", loop.in_loop())))
        loop.call_later(0.3, done.set)
        cancelled.cancel()
        assert done.wait(10)
        assert seen == [("early", True), ("late", True)]
    finally:
        loop.stop()


def test_a_turn_hook_runs_again_when_it_asks_to():
    loop = IoLoop(name="test-io")
    turns: list[float] = []
    enough = threading.Event()

    def hook() -> float | None:
        turns.append(0.0)
        if len(turns) >= 5:
            enough.set()
            return None
        return 0.0  # due at once: another turn without any wake-up

    loop.add_hook(hook)
    loop.start()
    try:
        assert enough.wait(10)
    finally:
        loop.stop()


def test_reconnect_delays_come_from_the_configured_backoff_exactly():
    # paho's own policy rounded a 0.3 s minimum up to 1 s and had no jitter.
    loop = IoLoop(name="test-io")
    loop.start()
    options = LinkOptions(port=_closed_port(), reconnect_min_delay=0.3, reconnect_max_delay=0.4)
    link = MqttLink(options, client_id="test-backoff", loop=loop)
    try:
        link.start()
        assert wait_until(lambda: len(link.reconnect_delays) >= 3, 30)
        delays = list(link.reconnect_delays)
        assert all(0.3 <= delay <= 0.4 for delay in delays), delays
        assert "cannot connect" in (link.last_error or "")
        assert not link.connected.is_set()
    finally:
        link.stop()
        loop.stop()


def test_backoff_after_a_lost_connection_is_jittered_from_the_first_retry():
    backoff = Backoff(0.5, 10.0)
    delays = set()
    for _ in range(20):
        backoff.reset()
        backoff.attempts = 1  # what MqttLink sets after a good connection
        delays.add(backoff.next_delay())
    assert all(0.5 <= d <= 1.0 for d in delays)
    assert len(delays) > 1  # spread, not lockstep


def test_stop_without_a_broker_ends_promptly_and_stops_retrying():
    loop = IoLoop(name="test-io")
    loop.start()
    link = MqttLink(LinkOptions(port=_closed_port(), reconnect_min_delay=0.05,
                                reconnect_max_delay=0.05), client_id="test-stop", loop=loop)
    try:
        link.start()
        assert wait_until(lambda: len(link.reconnect_delays) >= 1, 30)
        link.stop()
        count = len(link.reconnect_delays)
        # The loop keeps turning; a stopped link schedules nothing more.
        done = threading.Event()
        loop.call_soon(done.set)
        assert done.wait(10)
        assert len(link.reconnect_delays) == count
    finally:
        loop.stop()


def test_no_paho_private_attribute_anywhere_in_the_bridge():
    # The issue: correctness hung on paho's _thread, _out_message_mutex, _out_messages.
    private = re.compile(r"\b(?:client|_client)\._[a-z]")
    offenders = []
    for path in Path("bridge").rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if private.search(line) or "_out_message" in line:
                offenders.append(f"{path}:{number}: {line.strip()}")
    assert offenders == []
