"""Which ``<root>/Error`` reports ``send`` takes as its command's refusal."""

from __future__ import annotations

import json

from bridge.client import refuses
from bridge.mms import commands, parse_message
from bridge.mqtt.link import InboundMessage

REQUEST = parse_message(commands.get_serial_number(0xB5))


def _report(body: dict[str, object] | bytes, correlation: bytes | None = None) -> InboundMessage:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    return InboundMessage("r/Error", payload, retain=False, qos=1, received_at=0.0,
                          correlation_data=correlation)


def test_correlation_data_decides_when_the_report_has_some():
    named = {"error": "command_rejected", "reason": "busy", "ref": "B5", "command_id": "D101"}
    assert refuses(_report(named, b"mine"), REQUEST, b"mine")
    # Another client sent the very same command: same ref and id, not ours.
    assert not refuses(_report(named, b"theirs"), REQUEST, b"mine")
    assert not refuses(_report(named, b"theirs"), REQUEST, None)


def test_without_correlation_data_ref_and_command_id_decide():
    assert refuses(_report({"reason": "busy", "ref": "b5", "command_id": "d101"}), REQUEST, None)
    assert refuses(_report({"reason": "busy", "ref": "B5", "command_id": "D101"}), REQUEST,
                   b"mine")  # a bridge on MQTT 3.1.1 gets no correlation data to echo
    assert not refuses(_report({"reason": "busy", "ref": "13", "command_id": "1008"}), REQUEST,
                       None)


def test_reports_naming_no_command_are_not_ours():
    assert not refuses(_report({"error": "command_rejected", "reason": "not_hex"}), REQUEST, None)
    assert not refuses(_report({"error": "commands_rejected", "reason": "summary", "count": 9}),
                       REQUEST, None)
    assert not refuses(_report(b"not json"), REQUEST, None)
    assert not refuses(_report(b"[1, 2]"), REQUEST, None)
    assert not refuses(_report({"ref": "zz", "command_id": "D101"}), REQUEST, None)
