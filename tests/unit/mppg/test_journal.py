"""The relay journal: where it lives, what survives a restart, what a broken file does."""

from __future__ import annotations

import json
from pathlib import Path

from bridge.mppg.journal import FILE_NAME, MAX_IDS_PER_REQUEST, RelayJournal, journal_path


def test_place_follows_the_spool(tmp_path: Path):
    assert journal_path(tmp_path, {}) == tmp_path / FILE_NAME
    assert journal_path(None, {"STATE_DIRECTORY": f"{tmp_path}:/other"}) == tmp_path / FILE_NAME
    assert journal_path(None, {}) is None


def test_entries_survive_a_new_process(tmp_path: Path):
    path = tmp_path / FILE_NAME
    journal = RelayJournal(path)
    journal.add("req-1", {"tx-a"})
    journal.record("req-1", "tx-b")
    journal.record("req-1", "tx-b")  # once
    journal.add("req-2")
    reread = RelayJournal(path)
    assert reread.requests() == ["req-1", "req-2"]
    assert reread.published("req-1") == {"tx-a", "tx-b"}
    reread.remove("req-1")
    assert RelayJournal(path).requests() == ["req-2"]
    assert not list(tmp_path.glob(".*.tmp"))  # written whole, then renamed


def test_ids_per_request_are_bounded(tmp_path: Path):
    journal = RelayJournal(tmp_path / FILE_NAME)
    for n in range(MAX_IDS_PER_REQUEST + 5):
        journal.record("req", f"tx-{n}")
    kept = RelayJournal(tmp_path / FILE_NAME).published("req")
    assert len(kept) == MAX_IDS_PER_REQUEST and "tx-0" not in kept


def test_a_broken_or_unwritable_file_costs_only_the_resumption(tmp_path: Path):
    path = tmp_path / FILE_NAME
    path.write_text("{not json")
    assert RelayJournal(path).requests() == []
    path.write_text(json.dumps({"relays": {"a": "not a list", "b": ["t"]}}))
    assert RelayJournal(path).requests() == ["b"]
    gone = RelayJournal(tmp_path / "missing-dir" / FILE_NAME)
    gone.add("req")  # logged, not raised
    assert gone.requests() == ["req"]
