"""The durable spool with a real bridge process: SIGTERM and SIGKILL during a broker outage."""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

import pytest

from tests.integration.harness import bridge_process, wait_until
from tests.integration.support.consumer import DurableConsumer, message_number

pytestmark = [pytest.mark.integration, pytest.mark.faults]

TOPIC = "MagTek/Device/+/+/MMSMessage"
# Mosquitto drops QoS 1 messages beyond max_queued_messages (1000) per subscriber.
PERSISTENT = (
    "persistence true\npersistence_location {dir}/\nautosave_interval 0\n"
    "max_queued_messages 100000\n"
)


def _last_spooled_number(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        payloads = [row[0] for row in db.execute("SELECT payload FROM entries")]
    finally:
        db.close()
    return max(message_number(bytes(p)) for p in payloads)


def _spool_rows(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("SELECT COUNT(*) FROM entries").fetchone()[0])
    finally:
        db.close()


def _env(spool: Path, rate: float) -> dict[str, str]:
    return {
        "MAGTEK_BRIDGE_READERS__SIMULATE": "1",
        "MAGTEK_BRIDGE_READERS__SIMULATE_STREAM_RATE": str(rate),
        "MAGTEK_BRIDGE_OUTBOX__SPOOL_PATH": str(spool),
        "MAGTEK_BRIDGE_LOGGING__FORMAT": "json",
    }


def _first_boot_numbers(consumer: DurableConsumer) -> tuple[str, list[int]]:
    unique = consumer.unique()
    first_boot = unique[0].boot_id
    assert first_boot is not None
    return first_boot, [d.number for d in unique if d.boot_id == first_boot]


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL],
                         ids=["sigterm", "sigkill"])
def test_spool_survives_bridge_restart_during_outage(broker_factory, tmp_path, stop_signal):
    store = tmp_path / "mosq-store"
    store.mkdir()
    broker = broker_factory(extra=PERSISTENT.format(dir=store))
    consumer = DurableConsumer(broker.host, broker.port, TOPIC)
    spool = tmp_path / "state" / "outbox.sqlite"
    spool.parent.mkdir()
    # SIGKILL hits while the spool is being written as fast as the reader can stream.
    rate = 20.0 if stop_signal == signal.SIGTERM else 500.0
    try:
        with bridge_process(broker, tmp_path, env=_env(spool, rate)) as first:
            assert consumer.wait_for_count(10, 20), first.log_text()[-2000:]
            broker.stop()
            time.sleep(2.0)
            first.signal(stop_signal)
            code = first.wait(15)
            assert code == (0 if stop_signal == signal.SIGTERM else -signal.SIGKILL)
        db = sqlite3.connect(spool)
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        db.close()
        held = _spool_rows(spool)
        assert held > 0
        last = _last_spooled_number(spool)
        broker.start()
        log_dir = tmp_path / "second"
        log_dir.mkdir()
        with bridge_process(broker, log_dir, env=_env(spool, 0.0)) as second:
            assert wait_until(lambda: _spool_rows(spool) == 0, 30), second.log_text()[-3000:]
            got = lambda: _first_boot_numbers(consumer)[1]  # noqa: E731
            assert wait_until(lambda: last in got(), 10), (
                f"last={last} got {len(got())}: {got()[:5]}..{got()[-5:]} "
                f"all={len(consumer.deliveries)} {second.log_text()[-1500:]}")
            boot, numbers = _first_boot_numbers(consumer)
            # Every message the first process accepted arrives once, in order, none missing.
            assert numbers == list(range(1, last + 1))
            assert "spool_failed" not in second.log_text()
            assert "spool_restored" in second.log_text()
            replayed = sum(d.replayed for d in consumer.unique() if d.boot_id == boot)
            print(f"\n[faults] {stop_signal.name} during outage: delivered={len(numbers)}, "
                  f"spooled_at_stop={held}, replayed={replayed}, lost=0")
            second.signal(signal.SIGTERM)
            assert second.wait(15) == 0
    finally:
        consumer.close()
