"""Logs never carry card data or secrets, whatever was passed in."""

from __future__ import annotations

import io
import json

import structlog

from bridge.logs import configure_logging, redact_text

PAN = "4761730000000119"


def test_redact_text_patterns():
    assert PAN not in redact_text(f"card {PAN} seen")
    assert "4761 7300 0000 0119" not in redact_text("card 4761 7300 0000 0119")
    assert "=2512" not in redact_text(f"track ;{PAN}=25122010000000000000?")
    assert "B4761" not in redact_text(f"%B{PAN}^TEST/CARD^2512201?")
    blob = "AB" * 40
    assert blob not in redact_text(f"blob {blob}")
    assert redact_text("reader B123456 ref 0xB5 at 2026-11-22T12:00:00Z") == (
        "reader B123456 ref 0xB5 at 2026-11-22T12:00:00Z")


def test_debug_events_are_redacted_in_json():
    stream = io.StringIO()
    configure_logging("debug", "json", stream=stream)
    log = structlog.get_logger("test")
    log.debug("card_event", pan=PAN, nested={"track": f";{PAN}=2512?", "list": [PAN]},
              password="hunter2", token="abc", payload=bytes(40), serial="B123456",
              raw="AA00" * 30)
    line = stream.getvalue().strip()
    record = json.loads(line)
    assert PAN not in line and "hunter2" not in line and "AA00AA00" not in line
    assert record["serial"] == "B123456"
    assert record["event"] == "card_event"
    assert record["level"] == "debug"
    assert record["payload"] == "<40 bytes>"


def test_level_filtering():
    stream = io.StringIO()
    configure_logging("warning", "json", stream=stream)
    structlog.get_logger("test").info("hidden")
    structlog.get_logger("test").warning("shown")
    assert "hidden" not in stream.getvalue()
    assert "shown" in stream.getvalue()
