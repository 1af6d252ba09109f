"""The relays in progress, on disk: which payment requests are relayed and which of their
transactions were published, so a restarted bridge resumes them and publishes each
transaction once.

One small JSON file in the state directory (``mppg.state_dir``, else systemd's
``$STATE_DIRECTORY``, the spool's place), rewritten whole on each change (a temporary file
renamed over it: a crash leaves the old or the new one, never half of one). Without a state
directory the journal lives in memory only and relays do not survive a restart. It holds
payment request and transaction ids only: no tokens, links or card data.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Final

import structlog

_log = structlog.get_logger("bridge.mppg.journal")

FILE_NAME: Final = "mppg-relays.json"
# Per request: enough for any usage limit a POS sets; the oldest ids go first.
MAX_IDS_PER_REQUEST: Final = 1000
_VERSION: Final = 1


class RelayJournal:
    """Request id -> transaction ids already published, kept in ``path`` (or memory)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._entries: dict[str, list[str]] = self._read() if path is not None else {}
        self._failed = False

    def _read(self) -> dict[str, list[str]]:
        assert self.path is not None
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            _log.warning("mppg_journal_unreadable", path=str(self.path),
                         error=type(exc).__name__)
            return {}
        relays = data.get("relays") if isinstance(data, dict) else None
        if not isinstance(relays, dict):
            return {}
        return {str(k): [str(t) for t in v][-MAX_IDS_PER_REQUEST:]
                for k, v in relays.items() if isinstance(v, list)}

    def requests(self) -> list[str]:
        """The requests that were being relayed, oldest first."""
        with self._lock:
            return list(self._entries)

    def published(self, request_id: str) -> set[str]:
        with self._lock:
            return set(self._entries.get(request_id, ()))

    def add(self, request_id: str, published: set[str] | None = None) -> None:
        with self._lock:
            known = self._entries.setdefault(request_id, [])
            known.extend(sorted((published or set()) - set(known)))
            self._write()

    def record(self, request_id: str, transaction_id: str) -> None:
        """``transaction_id`` was published for ``request_id``."""
        with self._lock:
            known = self._entries.setdefault(request_id, [])
            if transaction_id in known:
                return
            known.append(transaction_id)
            del known[:-MAX_IDS_PER_REQUEST]
            self._write()

    def remove(self, request_id: str) -> None:
        with self._lock:
            if self._entries.pop(request_id, None) is not None:
                self._write()

    def _write(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            tmp.write_text(json.dumps({"version": _VERSION, "relays": self._entries}))
            os.replace(tmp, self.path)
        except OSError as exc:
            if not self._failed:  # once: the relays go on, only their resumption is lost
                _log.error("mppg_journal_write_failed", path=str(self.path),
                           error=type(exc).__name__)
            self._failed = True
            return
        self._failed = False


def journal_path(state_dir: Path | None, environ: dict[str, str] | None = None) -> Path | None:
    """Where the journal lives: ``state_dir``, else ``$STATE_DIRECTORY`` (its first entry),
    else nowhere (``None``)."""
    if state_dir is not None:
        return state_dir / FILE_NAME
    env = os.environ if environ is None else environ
    state = env.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(state) / FILE_NAME if state else None


__all__ = ["FILE_NAME", "RelayJournal", "journal_path"]
