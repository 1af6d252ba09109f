"""Roots served and ghost roots (bridge.ghosts), without a broker."""

from __future__ import annotations

import json

from bridge.ghosts import GhostSweeper, RootMemory, clear_publications, memory_file
from bridge.mqtt.link import Publication

OLD = "MagTek/Device/DynaFlexII/B123456"
NEW = "MagTek/Device/DynaFlexII/Lane1-B123456"


def _sweeper(memory: RootMemory, *, names: dict[str, str] | None = None,
             live: tuple[str, ...] = ()) -> tuple[GhostSweeper, list[Publication]]:
    sent: list[Publication] = []
    sweeper = GhostSweeper(memory, prefix="MagTek/Device/", friendly_names=names or {},
                           publish=sent.append, served_now=lambda: live)
    return sweeper, sent


def test_clearing_a_root_empties_status_info_and_command_then_says_disconnected():
    assert [(p.topic, p.payload, p.retain) for p in clear_publications(OLD + "/")] == [
        (f"{OLD}/Status", b"", True), (f"{OLD}/Info", b"", True),
        (f"{OLD}/SendCommand", b"", True), (f"{OLD}/Status", b"disconnected", False)]


def test_memory_file_is_in_the_state_directory_only():
    assert memory_file({}) is None
    assert str(memory_file({"STATE_DIRECTORY": "/var/lib/mb:/other"})) == (
        "/var/lib/mb/served-roots.json")


def test_a_new_friendly_name_makes_the_old_root_a_ghost_and_the_file_remembers(tmp_path):
    path = tmp_path / "served-roots.json"
    first, _ = _sweeper(RootMemory(path))
    assert first.reader_identified("B123456", "DynaFlexII", OLD) == []
    assert json.loads(path.read_text()) == [
        {"serial": "B123456", "model": "DynaFlexII", "root": OLD}]
    # Restart with a friendly name: the remembered root is not what the settings give now.
    again, sent = _sweeper(RootMemory(path), names={"B123456": "Lane 1"})
    assert again.sweep() == [OLD]
    assert {p.topic for p in sent} == {f"{OLD}/Status", f"{OLD}/Info", f"{OLD}/SendCommand"}
    assert again.reader_identified("B123456", "DynaFlexII", NEW) == []
    assert json.loads(path.read_text())[0]["root"] == NEW
    assert again.sweep() == []  # nothing left to clear


def test_root_change_while_running_and_live_roots_are_never_cleared():
    sweeper, sent = _sweeper(RootMemory(None), live=(NEW,))
    sweeper.reader_identified("B123456", "DynaFlexII", NEW)
    assert sweeper.reader_identified("B123456", "MMS", OLD) == []  # NEW is live: kept
    assert sent == []
    sweeper, sent = _sweeper(RootMemory(None))
    sweeper.reader_identified("B123456", "DynaFlexII", OLD)
    assert sweeper.reader_identified("B123456", "DynaFlexII", NEW) == [OLD]


def test_seeding_from_the_retained_info_clears_what_is_no_longer_served():
    info = json.dumps({"served_roots": [
        {"serial": "B123456", "model": "DynaFlexII", "root": OLD},
        {"serial": "B654321", "model": "DynaFlexII", "root": "MagTek/Device/DynaFlexII/B654321"},
        {"serial": "", "model": "x", "root": "y"},  # malformed entries are ignored
    ]}).encode()
    # The reader was identified under its new root before the retained copy arrived.
    sweeper, _ = _sweeper(RootMemory(None), names={"B123456": "Lane 1"})
    sweeper.reader_identified("B123456", "DynaFlexII", NEW)
    assert sweeper.seed(info) == [OLD]
    assert [e.serial for e in sweeper.memory.entries()] == ["B123456", "B654321"]
    assert sweeper.seed(b"not json") == [] and sweeper.seed(b"") == []
