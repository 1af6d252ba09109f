"""The SQLite spool: durable rows, 0600, secure_delete, and degrading on full or corrupt."""

from __future__ import annotations

import sqlite3
import stat
import time

from bridge.outbox import Entry
from bridge.spool import Spool


def _entry(n: int, created: float | None = None, size: int = 16) -> Entry:
    return Entry(serial=f"S{n % 2}", topic=f"MagTek/Device/X/S{n % 2}/MMSMessage",
                 payload=b"%05d" % n + b"\xaa" * size, user_properties=(("seq", str(n)),),
                 created=time.monotonic() if created is None else created)


def test_rows_survive_reopen_in_order_per_serial(tmp_path):
    path = tmp_path / "outbox.sqlite"
    spool = Spool(path)
    entries = [_entry(n) for n in range(6)]
    for e in entries:
        spool.add(e)
    spool.remove([entries[0], entries[3]])
    spool.close()
    again = Spool(path)
    loaded = again.load(ttl=60)
    assert {k: [dict(e.user_properties)["seq"] for e in v] for k, v in loaded.items()} == {
        "S0": ["2", "4"], "S1": ["1", "5"]}
    assert all(e.replayed and e.spool_id is not None for v in loaded.values() for e in v)
    assert loaded["S1"][0].payload == entries[1].payload
    assert loaded["S1"][0].topic == entries[1].topic
    again.close()


def test_file_is_private_and_settings_applied(tmp_path):
    path = tmp_path / "outbox.sqlite"
    spool = Spool(path)
    spool.add(_entry(1))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for sidecar in (tmp_path / "outbox.sqlite-wal", tmp_path / "outbox.sqlite-shm"):
        if sidecar.exists():
            assert stat.S_IMODE(sidecar.stat().st_mode) & 0o077 == 0
    spool.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_secure_delete_leaves_no_payload_bytes_in_the_file(tmp_path):
    path = tmp_path / "outbox.sqlite"
    spool = Spool(path)
    marker = b"CARDDATA-SECRET-" * 8
    entry = Entry(serial="S", topic="t", payload=marker, user_properties=(),
                  created=time.monotonic())
    spool.add(entry)
    spool.remove([entry])
    spool.close()  # checkpoints the WAL into the main file
    blobs = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert marker not in blobs


def test_expired_rows_deleted_at_load_and_counted(tmp_path):
    spool = Spool(tmp_path / "s.sqlite")
    spool.add(_entry(1, created=time.monotonic() - 100))
    spool.add(_entry(2))
    loaded = spool.load(ttl=30)
    assert spool.expired_at_load == 1
    assert sum(len(v) for v in loaded.values()) == 1
    assert spool.count() == 1


def test_full_spool_turns_itself_off_and_says_why(tmp_path):
    failures: list[str] = []
    spool = Spool(tmp_path / "s.sqlite", max_bytes=1 << 16, on_failure=failures.append)
    assert spool.ok
    for n in range(200):
        spool.add(_entry(n, size=2000))
    assert not spool.ok
    assert failures and failures[0].startswith("write:") and "full" in failures[0]
    assert len(failures) == 1  # told once
    spool.add(_entry(999))  # a no-op now, never an exception
    # Rows it can no longer delete must not come back at the next start.
    assert not (tmp_path / "s.sqlite").exists()
    spool.remove([_entry(1)])


def test_corrupt_file_degrades_at_open(tmp_path):
    path = tmp_path / "s.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    failures: list[str] = []
    spool = Spool(path, on_failure=failures.append)
    assert not spool.ok
    assert failures[0].startswith("open:")
    assert spool.load(ttl=10) == {}
    assert path.read_bytes().startswith(b"this is not")  # evidence kept for the operator
