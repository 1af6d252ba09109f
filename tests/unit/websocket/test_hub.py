"""ClientHub: reader events fanned out to clients, bounded per client, never blocking."""

from __future__ import annotations

import asyncio
import json
import threading
from types import SimpleNamespace
from typing import Any

from prometheus_client import CollectorRegistry

from bridge.metrics import Metrics
from bridge.websocket import Client, ClientHub

ROOT = "MagTek/Device/DynaFlexII/B123456"


class _Connection:
    """Stands in for a ServerConnection: records frames and the close."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.closed: tuple[int, str] | None = None
        self.transport = SimpleNamespace(abort=lambda: None)

    async def send(self, frame: str) -> None:
        self.sent.append(frame)

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


def _session(root: str = ROOT) -> Any:
    return SimpleNamespace(topics=SimpleNamespace(root=root))


def _client(hub: ClientHub, metrics: Metrics, root: str = ROOT, *, json_frames: bool = True
            ) -> tuple[Client, _Connection]:
    connection = _Connection()
    client = Client(connection, root, queue_limit=hub.queue_limit,  # type: ignore[arg-type]
                    metrics=metrics, on_slow=hub.cut_off, json_frames=json_frames)
    return client, connection


def test_events_from_reader_threads_reach_attached_clients_in_order():
    metrics = Metrics(CollectorRegistry(), process_metrics=False)
    hub = ClientHub(metrics, queue_limit=100, max_clients=4)

    async def scenario() -> tuple[list[str], list[str], list[str]]:
        hub.bind(asyncio.get_running_loop())
        (one, c1), (two, c2) = _client(hub, metrics), _client(hub, metrics)
        plain, c3 = _client(hub, metrics, json_frames=False)
        assert hub.attach(one) and hub.attach(two) and hub.attach(plain)
        pumps = [asyncio.create_task(c.pump()) for c in (one, two, plain)]

        def reader() -> None:  # what a session's threads do
            session = _session()
            hub.reader_connected(session)
            for n in range(20):
                hub.reader_message(session, f"AA00{n:04X}".encode())
            hub.reader_message(_session("MagTek/Device/DynaFlexII/BOTHER1"), b"AA00FFFF")
            hub.reader_disconnected(session)

        thread = threading.Thread(target=reader)
        thread.start()
        thread.join()
        for _ in range(50):
            await asyncio.sleep(0.01)
            if len(c1.sent) == len(c2.sent) == 22 and len(c3.sent) == 20:
                break
        for pump in pumps:
            pump.cancel()
        return c1.sent, c2.sent, c3.sent

    first, second, third = asyncio.run(scenario())
    assert first == second
    assert third == first[1:21]  # a plain client: the reader's messages and nothing else
    assert json.loads(first[0]) == {"type": "status", "status": "connected", "root": ROOT}
    assert first[1:21] == [f"AA00{n:04X}" for n in range(20)]
    assert json.loads(first[21])["status"] == "disconnected"
    assert metrics.websocket_frames.labels("out")._value.get() == 64


def test_events_without_clients_or_loop_are_dropped_at_once():
    metrics = Metrics(CollectorRegistry(), process_metrics=False)
    hub = ClientHub(metrics, queue_limit=1, max_clients=1)
    hub.reader_message(_session(), b"AA00")  # no loop bound: nothing happens, nothing raises


def test_repeated_status_is_sent_once():
    metrics = Metrics(CollectorRegistry(), process_metrics=False)
    hub = ClientHub(metrics, queue_limit=10, max_clients=1)

    async def scenario() -> list[str]:
        client, connection = _client(hub, metrics)
        client.push_status(True)
        client.push_status(True)
        client.push_status(False)
        pump = asyncio.create_task(client.pump())
        await asyncio.sleep(0.01)
        pump.cancel()
        return connection.sent

    sent = asyncio.run(scenario())
    assert [json.loads(f)["status"] for f in sent] == ["connected", "disconnected"]


def test_max_clients_and_detach():
    metrics = Metrics(CollectorRegistry(), process_metrics=False)
    hub = ClientHub(metrics, queue_limit=10, max_clients=2)

    async def scenario() -> None:
        clients = [_client(hub, metrics)[0] for _ in range(3)]
        assert [hub.attach(c) for c in clients] == [True, True, False]
        assert metrics.websocket_clients._value.get() == 2
        hub.detach(clients[0])
        hub.detach(clients[0])  # idempotent
        assert hub.clients_of(ROOT) == 1
        assert hub.attach(clients[2])
        assert metrics.websocket_clients._value.get() == 2

    asyncio.run(scenario())


def test_a_client_past_its_limit_is_cut_off_and_closed_with_a_reason():
    metrics = Metrics(CollectorRegistry(), process_metrics=False)
    hub = ClientHub(metrics, queue_limit=3, max_clients=4)

    async def scenario() -> tuple[_Connection, _Connection, Client]:
        slow, slow_connection = _client(hub, metrics)
        fast, fast_connection = _client(hub, metrics)
        hub.attach(slow)
        hub.attach(fast)
        fast_pump = asyncio.create_task(fast.pump())
        for n in range(6):  # the slow client's pump never runs: its queue only grows
            hub._deliver(ROOT, f"AA{n:02X}")
            await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        fast_pump.cancel()
        return slow_connection, fast_connection, slow

    slow_connection, fast_connection, slow = asyncio.run(scenario())
    assert slow.cut_off
    assert slow_connection.closed is not None and slow_connection.closed[0] == 1008
    assert "too slow" in slow_connection.closed[1]
    assert fast_connection.sent == [f"AA{n:02X}" for n in range(6)]
    assert hub.clients_of(ROOT) == 1
    assert metrics.websocket_slow_disconnects._value.get() == 1
