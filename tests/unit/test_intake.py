"""Command validation: what may reach a reader, and the reason for what may not."""

from __future__ import annotations

import json

import pytest

from bridge.intake import (
    Command,
    Rejection,
    command_reference,
    rejection_report,
    validate_command,
)
from bridge.mms import commands

CANCEL = bytes.fromhex("AA0081040113100884021008")  # PROTOCOL.md §3.6


def _ok(result: Command | Rejection) -> Command:
    assert isinstance(result, Command), result
    return result


def _reason(result: Command | Rejection) -> str:
    assert isinstance(result, Rejection), result
    return result.reason


@pytest.mark.parametrize(
    "payload",
    [
        b"AA0081040113100884021008",
        b"aa0081040113100884021008",
        b"AA 00 81 04 01 13 10 08\n84 02 10 08",
        b"SENDCOMMAND,AA0081040113100884021008",
        b"sendcommand,aa0081040113100884021008",
        CANCEL,  # raw binary MMS starts with 0xAA
    ],
)
def test_accepted_forms(payload):
    command = _ok(validate_command(payload, max_size=4096))
    assert command.data == CANCEL
    assert command.key == (0x13, 0x1008)
    assert command.deadline is None


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "empty"),
        (b"   ", "empty"),
        (b"hello", "not_hex"),
        (b"AA008", "odd_length"),
        (b"0102", "not_mms"),
        (b"AA00810482131008820400000000", "not_request"),  # a device response
        (b"AA00810483001001820400000000", "not_request"),  # a device notification
    ],
)
def test_rejections(payload, reason):
    assert _reason(validate_command(payload, max_size=4096)) == reason


def test_size_cap_counts_message_bytes():
    big = commands.EXAMPLES["show_qr"]  # 150 bytes, PROTOCOL.md §2.1
    assert _reason(validate_command(big.hex().encode(), max_size=len(big) - 1)) == "too_large"
    _ok(validate_command(big.hex().encode(), max_size=len(big)))


def test_huge_text_refused_before_parsing():
    assert _reason(validate_command(b"A" * 1_000_000, max_size=1024)) == "too_large"


def test_retained_and_expired_are_stale():
    assert _reason(validate_command(CANCEL.hex().encode(), max_size=64, retained=True)) == (
        "retained"
    )
    assert _reason(validate_command(CANCEL.hex().encode(), max_size=64, expiry_interval=0)) == (
        "expired"
    )


def test_expiry_becomes_a_deadline():
    command = _ok(validate_command(CANCEL.hex().encode(), max_size=64, received_at=100.0,
                                   expiry_interval=5))
    assert command.deadline == 105.0
    assert not command.expired(104.9)
    assert command.expired(105.0)


def test_response_topic_and_correlation_kept():
    command = _ok(validate_command(CANCEL.hex().encode(), max_size=64, response_topic="r/t",
                                   correlation_data=b"\x01\x02"))
    assert command.response_topic == "r/t"
    assert command.correlation_data == b"\x01\x02"


@pytest.mark.parametrize("payload", [
    commands.get_serial_number(0xB5).hex().upper().encode(),
    b"SENDCOMMAND," + commands.get_serial_number(0xB5).hex().encode(),
    commands.get_serial_number(0xB5),  # raw binary
    bytes.fromhex("AA00810482B5D101820400000000"),  # readable, refused (a device response)
])
def test_a_readable_refused_command_is_named_in_its_report(payload):
    reference = command_reference(payload)
    assert reference == (0xB5, 0xD101)
    body = json.loads(rejection_report(Rejection("not_request", "x"), topic="t", size=3,
                                       reference=reference))
    assert body["ref"] == "B5" and body["command_id"] == "D101"
    # The published fields stay as they were.
    assert {"error", "reason", "detail", "topic", "size", "time"} <= set(body)


@pytest.mark.parametrize("payload", [b"zz", b"ABC", b"AA00", b"", b"\xaa\x00\x81"])
def test_an_unreadable_refused_command_is_not_named(payload):
    assert command_reference(payload) is None
    body = json.loads(rejection_report(Rejection("not_hex", "x"), topic="t", size=2))
    assert "ref" not in body and "command_id" not in body
