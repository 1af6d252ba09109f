"""Names for ids and codes (PROTOCOL.md §3.3, §3.6, §3.7, §5)."""

from __future__ import annotations

import pytest

from bridge.mms.names import (
    command_name,
    detail_name,
    notification_detail_name,
    notification_name,
    summary_name,
)


@pytest.mark.parametrize(
    ("command_id", "name"),
    [
        (0xD101, "Get Property"), (0xD111, "Set Property"), (0x1001, "Start Transaction"),
        (0x1004, "Resume Transaction"), (0x1008, "Cancel Transaction"), (0x1F01, "Reset Device"),
        (0x1F02, "Set Notification Subscriptions"), (0x1803, "Display Message"),
        (0x1804, "Read Barcode"), (0x1805, "Buzzer"), (0x1822, "Show QR Code"),
        (0x1840, "Card Emulation"), (0xD821, "Start Get File"), (0xABCD, "unknown command ABCD"),
    ],
)
def test_command_names(command_id, name):
    assert command_name(command_id) == name


@pytest.mark.parametrize(
    ("notification_id", "name"),
    [
        (0x0101, "Transaction Information Update"), (0x0105, "Transaction Operation Complete"),
        (0x0205, "Banking Operation Complete"), (0x1001, "Device Information Update"),
        (0x1803, "UI Host Action Request"), (0x1805, "UI Operation Complete"),
        (0x0907, "Firmware Up To Date"), (0x7777, "unknown notification 7777"),
    ],
)
def test_notification_names(notification_id, name):
    assert notification_name(notification_id) == name


@pytest.mark.parametrize(
    ("notification_id", "detail", "name"),
    [
        (0x0101, "08010100", "MSR swiped"),
        (0x0101, "10010200", "contact card inserted"),
        (0x0101, "20010400", "contactless EMV card detected"),
        (0x0101, "20010402", "contactless MIFARE card detected"),
        (0x0101, "20080202", "ARQC data attached (EMV contactless)"),
        (0x0101, "10080302", "batch data attached (EMV contact)"),
        (0x0101, "07080202", "ARQC data attached (manual entry)"),
        (0x0101, "20080402", "NFC UID attached"),
        (0x0101, "00100103", "transaction started by device"),
        (0x0105, "00010000", "timed out / no card"),
        (0x0105, "00030100", "cancelled by host"),
        (0x0105, "20020700", "Quick Chip deferred (EMV contactless)"),
        (0x0105, "08020600", "approved (MSR)"),
        (0x0105, "10020605", "approved, signature captured (EMV contact)"),
        (0x0105, "10028001", "declined (EMV contact)"),
        (0x0105, "10020803", "ICC failed, MSR fallback"),
        (0x1001, "00000000", "reset occurred"),
        (0x1001, "00020037", "low battery"),
        (0x1001, "00030000", "reset by command 1F01"),
        (0x1001, "01000300", "contactless presented"),
        (0x1001, "01020000", "card seated"),
        (0x1001, "02000000", "session expiring"),
        (0x1803, "02010200", "show message with cancel"),
        (0x1805, "05040100", "buzzer done"),
        (0x1805, "05040200", "buzzer failed"),
        (0x1805, "06050100", "card emulation done"),
        (0x1805, "99999999", "unknown detail 99999999"),
        (0x0101, "00", "malformed detail"),
    ],
)
def test_notification_detail_names(notification_id, detail, name):
    assert notification_detail_name(notification_id, bytes.fromhex(detail)) == name


def test_status_names():
    assert summary_name(0x00) == "OK, done"
    assert summary_name(0x01) == "OK, started"
    assert summary_name(0x81) == "failed operation"
    assert detail_name(0x000000) == "all good"
    assert detail_name(0x010113) == "feature not available"
    assert detail_name(0x000012) == "RTC, key generation, tamper or soft-AP error"
    assert detail_name(0x02030D) == "signature, transaction-state or PIN-state error"
    assert detail_name(0x020539) == "unknown detail 020539"
