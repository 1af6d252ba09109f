"""Durable copy of the outboxes: SQLite in WAL mode, so held messages survive a restart.

Entries hold encrypted card data: the file is created 0600, ``secure_delete`` overwrites rows
as they are removed, and a row lives only until its ack or its time-to-live. WAL with
``synchronous=NORMAL`` survives a killed process (only a power cut may lose the last commits).
Any SQLite failure (full disk, corrupt file, I/O error) turns the spool off for the rest of the
run: the outboxes carry on in memory, and ``failure`` says why (log, metric, ``/readyz``).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Final

import structlog

from bridge.outbox import Entry

_log = structlog.get_logger("bridge.spool")

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    serial TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    properties TEXT NOT NULL,
    created REAL NOT NULL
)
"""

FailureHandler = Callable[[str], None]


class Spool:
    """One SQLite file for every reader of this bridge.

    Args:
        path: the database file (its directory must exist; systemd's StateDirectory).
        max_bytes: cap on the file size (SQLite ``max_page_count``); reaching it is a
            "disk full" failure like any other.
        on_failure: told the reason once, when the spool turns itself off.
    """

    def __init__(
        self, path: Path, *, max_bytes: int = 0, on_failure: FailureHandler | None = None
    ) -> None:
        self.path = path
        self.failure: str | None = None
        self.expired_at_load = 0
        self._truncated_at = 0.0
        self._on_failure = on_failure
        self._lock = threading.RLock()
        self._batch = False  # inside batch(): writes join one transaction
        self._begun = False
        self._removed_in_batch = False
        self._db: sqlite3.Connection | None = None
        try:
            self._db = self._open(path, max_bytes)
        except (sqlite3.Error, OSError) as exc:
            self._fail("open", exc)

    @staticmethod
    def _open(path: Path, max_bytes: int) -> sqlite3.Connection:
        # Create it 0600 ourselves: sqlite3 would honour the umask. The -wal and -shm files
        # take the database file's permissions.
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        os.chmod(path, 0o600)
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=1.0)
        try:
            check = db.execute("PRAGMA quick_check").fetchone()
            if check is None or check[0] != "ok":
                raise sqlite3.DatabaseError(f"integrity check failed: {check}")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA secure_delete=ON")
            if max_bytes > 0:
                page = db.execute("PRAGMA page_size").fetchone()[0]
                db.execute(f"PRAGMA max_page_count={max(8, max_bytes // page)}")
            db.execute(_SCHEMA)
        except BaseException:
            db.close()
            raise
        return db

    @property
    def ok(self) -> bool:
        return self._db is not None

    def _fail(self, operation: str, exc: BaseException) -> None:
        reason = f"{operation}: {exc}"
        first = self.failure is None
        self.failure = reason
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):  # already broken; turning it off anyway
                self._db.close()
            self._db = None
            if operation != "open":
                # Rows it can no longer delete would come back at the next start (already
                # delivered or counted as dropped): remove the file. The in-memory outbox
                # still holds every undelivered entry. A file that failed to open is kept
                # for the operator instead: it was never ours to trust.
                for suffix in ("", "-wal", "-shm"):
                    with contextlib.suppress(OSError):
                        os.unlink(f"{self.path}{suffix}")
        if first:
            _log.error("spool_failed", path=str(self.path), operation=operation, error=str(exc),
                       fallback="in-memory outbox")
            if self._on_failure is not None:
                self._on_failure(reason)

    # -- the outbox's side ----------------------------------------------------------------

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Every add and remove inside is one transaction, begun at the first write (the I/O
        loop wraps each turn in one: a turn's new entries and its acks cost one commit)."""
        with self._lock:
            self._batch, self._begun, self._removed_in_batch = True, False, False
            try:
                yield
            finally:
                self._batch = False
                if self._begun and self._db is not None:
                    try:
                        self._db.execute("COMMIT")
                        if self._removed_in_batch:
                            self._truncate_wal_when_empty()
                    except sqlite3.Error as exc:
                        self._fail("write", exc)
                self._begun = False

    def _join_batch(self) -> bool:
        """In a batch: make sure its transaction is open; True if so (caller holds the lock)."""
        if not self._batch or self._db is None:
            return False
        if not self._begun:
            self._db.execute("BEGIN")
            self._begun = True
        return True

    def add(self, entry: Entry) -> None:
        with self._lock:
            if self._db is None:
                return
            try:
                self._join_batch()
                cursor = self._db.execute(
                    "INSERT INTO entries (serial, topic, payload, properties, created)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (entry.serial, entry.topic, entry.payload,
                     json.dumps(entry.user_properties),
                     time.time() - (time.monotonic() - entry.created)),
                )
                entry.spool_id = cursor.lastrowid
            except sqlite3.Error as exc:
                self._fail("write", exc)

    def add_many(self, entries: list[Entry]) -> None:
        """Several entries in one transaction (the I/O loop's batch of a turn)."""
        if len(entries) == 1:
            self.add(entries[0])
            return
        with self._lock:
            if self._db is None or not entries:
                return
            wall_offset = time.time() - time.monotonic()
            try:
                batched = self._join_batch()
                if not batched:
                    self._db.execute("BEGIN")
                for entry in entries:
                    cursor = self._db.execute(
                        "INSERT INTO entries (serial, topic, payload, properties, created)"
                        " VALUES (?, ?, ?, ?, ?)",
                        (entry.serial, entry.topic, entry.payload,
                         json.dumps(entry.user_properties), wall_offset + entry.created),
                    )
                    entry.spool_id = cursor.lastrowid
                if not batched:
                    self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                for entry in entries:
                    entry.spool_id = None
                self._fail("write", exc)

    def remove(self, entries: Iterable[Entry]) -> None:
        ids = [(e.spool_id,) for e in entries if e.spool_id is not None]
        if not ids:
            return
        with self._lock:
            if self._db is None:
                return
            try:
                if self._join_batch():
                    self._db.executemany("DELETE FROM entries WHERE id = ?", ids)
                    self._removed_in_batch = True
                    return
                if len(ids) == 1:
                    self._db.execute("DELETE FROM entries WHERE id = ?", ids[0])
                else:
                    self._db.execute("BEGIN")
                    self._db.executemany("DELETE FROM entries WHERE id = ?", ids)
                    self._db.execute("COMMIT")
                self._truncate_wal_when_empty()
            except sqlite3.Error as exc:
                self._fail("delete", exc)

    def _truncate_wal_when_empty(self) -> None:
        # secure_delete does not scrub WAL frames already written: once nothing is held,
        # fold the WAL into the (scrubbed) database and truncate it, at most once a second.
        now = time.monotonic()
        if self._db is None or now - self._truncated_at < 1.0:
            return
        if self._db.execute("SELECT 1 FROM entries LIMIT 1").fetchone() is None:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._truncated_at = now

    # -- start-up ------------------------------------------------------------------------------

    def load(self, ttl: float, now: float | None = None) -> dict[str, list[Entry]]:
        """What a previous run left undelivered, per serial, oldest first; expired rows are
        deleted (and counted by the caller as the difference it sees in ``expired_at_load``)."""
        result: dict[str, list[Entry]] = defaultdict(list)
        with self._lock:
            if self._db is None:
                return {}
            wall_now = time.time() if now is None else now
            cutoff = wall_now - ttl
            try:
                cursor = self._db.execute("DELETE FROM entries WHERE created <= ?", (cutoff,))
                self.expired_at_load = cursor.rowcount
                rows = self._db.execute(
                    "SELECT id, serial, topic, payload, properties, created FROM entries"
                    " ORDER BY id"
                ).fetchall()
            except sqlite3.Error as exc:
                self._fail("read", exc)
                return {}
        for row_id, serial, topic, payload, properties, created in rows:
            try:
                props = tuple((str(k), str(v)) for k, v in json.loads(properties))
            except (ValueError, TypeError):
                props = ()
            result[serial].append(Entry(
                serial=serial, topic=topic, payload=bytes(payload), user_properties=props,
                created=time.monotonic() - max(0.0, wall_now - created), replayed=True,
                spool_id=row_id,
            ))
        return dict(result)

    def count(self) -> int:
        with self._lock:
            if self._db is None:
                return 0
            try:
                return int(self._db.execute("SELECT COUNT(*) FROM entries").fetchone()[0])
            except sqlite3.Error as exc:
                self._fail("read", exc)
                return 0

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                try:
                    self._db.close()
                finally:
                    self._db = None


__all__ = ["Spool"]
