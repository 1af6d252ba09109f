"""Redaction (PROTOCOL.md §9): describe() and safe_summary() never show card data."""

from __future__ import annotations

import json
import re

import pytest

from bridge.mms.messages import build_notification, build_request, parse_message
from bridge.mms.redact import describe, describe_dict, safe_summary
from bridge.mms.tlv import tlv

PAN = "4761730000000119"  # the masked Visa test PAN (PROTOCOL.md §9), fake
NAME = b"TEST/CARDHOLDER"
LONG_HEX = re.compile(r"[0-9A-Fa-f]{33,}")
# Every way the PAN could leak: digits, BCD bytes, ASCII as hex, and their prefixes.
PAN_FORMS = (PAN, "476173", PAN.encode().hex().upper(), PAN.encode().hex(), "343736313733")


def renderings(message, *, mask=True):
    return [describe(message, mask=mask), json.dumps(describe_dict(message, mask=mask)),
            json.dumps(safe_summary(message))]


def assert_clean(text: str) -> None:
    for form in PAN_FORMS:
        assert form not in text
    assert NAME.decode() not in text
    assert NAME.hex().upper() not in text
    assert LONG_HEX.search(text) is None, LONG_HEX.search(text)


def arqc_with_name() -> bytes:
    """A 0101 ARQC notification whose blob also carries 5F20 (cardholder name, clear)."""
    track = tlv("DFDF4D", f";{PAN}=25122010000000000000?".encode())
    inner = tlv("70", tlv("5F20", NAME).encode() + track.encode())
    f9 = tlv("F9", tlv("DFDF25", b"B123456").encode() + tlv("FA", inner.encode()).encode())
    blob = len(f9.encode()).to_bytes(2, "big") + f9.encode() + bytes(4)
    payload = tlv("84", blob, length_form=2).encode()
    return build_notification(0x0101, bytes.fromhex("20080202"), payload, long_payload=True)


@pytest.mark.parametrize("source", ["golden", "with_name"])
def test_arqc_notification_renders_without_pan_name_or_long_blobs(golden, source):
    data = golden("arqc_notification") if source == "golden" else arqc_with_name()
    message = parse_message(data)
    for text in renderings(message):
        assert_clean(text)
    line = describe(message)
    assert line.startswith("device notification 0101 Transaction Information Update: 20080202 "
                           "(ARQC data attached (EMV contactless))")
    assert f"84[{len(message.payload or b'')}]=<masked>" in line


def test_masked_payload_shows_which_tags_it_holds_and_no_values():
    message = parse_message(arqc_with_name())
    line = describe(message)
    # The tags present, nested into the ARQC blob's F9 container: names only.
    assert "=<masked>{0101 tags: 84{F9{DFDF25 FA{70{5F20 DFDF4D}}}}}" in line
    payload = describe_dict(message)["tlvs"][-1]
    assert payload["value"] == "<masked>"
    assert payload["tags"] == [{"tag": "84", "tags": [{"tag": "F9", "tags": [
        {"tag": "DFDF25"},
        {"tag": "FA", "tags": [{"tag": "70", "tags": [{"tag": "5F20"}, {"tag": "DFDF4D"}]}]},
    ]}]}]
    assert "B123456" not in line and b"B123456".hex().upper() not in line


def test_unmasked_rendering_does_show_the_data_so_the_mask_is_what_hides_it(golden):
    message = parse_message(arqc_with_name())
    text = describe(message, mask=False)
    assert PAN.encode().hex().upper() in text
    assert NAME.hex().upper() in text


def test_sensitive_tags_are_masked_wherever_they_are_nested():
    payload = tlv("A1", b"".join([
        tlv("5A", bytes.fromhex(PAN)).encode(),
        tlv("5F20", NAME).encode(),
        tlv("5F24", bytes.fromhex("251231")).encode(),
        tlv("9F02", bytes.fromhex("000000000100")).encode(),
    ])).encode()
    message = parse_message(build_request(0x1234, payload, 0x21))
    for text in renderings(message):
        assert_clean(text)
    line = describe(message)
    assert "A1[43]{5A[8]=<masked> 5F20[15]=<masked> 5F24[3]=<masked> 9F02[6]=000000000100}" in line
    assert line.startswith("host request 21 1234 unknown command 1234 |")


@pytest.mark.parametrize(
    ("notification", "detail", "payload_hex"),
    [
        # 1001 01xx user event with an NFC UID (DF79).
        (0x1001, "01000200", "84 0A DF79 07 04A1B2C3D4E5F6"),
        # 0205 PIN complete: F5 {DF71, 99 PIN block, DFDF41 KSN, DFDF42}.
        (0x0205, "00000000", "F5 1B DF71 01 00 99 08 1122334455667788"
                             " DFDF41 0A 00112233445566778899 DFDF42 01 00"),
        (0x1803, "02010100", "81 01 00 82 01 01 83 05 48454C4C4F"),
        (0x1805, "01060101", "84 04 4A4F484E"),
    ],
)
def test_payloads_of_card_and_ui_notifications_are_masked_whole(notification, detail, payload_hex):
    payload = bytes.fromhex(payload_hex.replace(" ", ""))
    message = parse_message(build_notification(notification, bytes.fromhex(detail), payload))
    line = describe(message)
    assert f"84[{len(payload) + 2}]=<masked>" in line
    assert payload.hex().upper()[-8:] not in line
    summary = safe_summary(message)
    assert payload.hex().upper()[-8:] not in json.dumps(summary)


def test_reset_notification_payload_is_shown(golden):
    line = describe(parse_message(golden("reset_notification")))
    assert line == ("device notification 1001 Device Information Update: 00000000 (reset occurred)"
                    " | 81[4]=83001001 82[4]=00000000 84[8]{1001 81[1]=02 82[1]=00}")


def test_file_payloads_are_masked():
    data = bytes.fromhex("AA00 8108 84 03 D821 D8000001 8404 D821 ABCD".replace(" ", ""))
    assert describe(parse_message(data)).endswith("84[4]=<masked>")


def test_long_values_are_masked_and_short_ones_shown():
    payload = tlv("82", bytes(range(17))).encode() + tlv("83", bytes(range(16))).encode()
    line = describe(parse_message(build_request(0x1234, payload)))
    assert "82[17]=<masked>" in line
    assert "83[16]=000102030405060708090A0B0C0D0E0F" in line


def test_get_serial_request_and_response_show_command_and_property(golden):
    request = describe(parse_message(golden("get_serial_request")))
    assert request == (
        "host request B5 D101 Get Property property 2.2.1.1.1.1 Device Serial Number"
        " | 81[4]=01B5D101 84[24]{D101 81[7]=2B06010401F609 85[1]=02 87[4]=02010101"
        " 89[2]{C1[0]=}}")
    response = describe(parse_message(golden("get_serial_response_manual")))
    assert response.startswith("device response B5 D101 Get Property: 00 000000 (OK, done; "
                               "all good) property 2.2.1.1.1.1 Device Serial Number "
                               "serial B61378A |")
    assert response.endswith("89[6]{C1[4]=B61378A0}}")


def test_firmware_response_shows_the_firmware_text(golden):
    info = describe_dict(parse_message(golden("get_firmware_response")))
    assert info["property"] == {
        "path": "2.1.2.2.2.2", "name": "Main Firmware Version", "form": "nested",
        "value": b"1000007183-A1-PCI\0\0".hex().upper(), "text": "1000007183-A1-PCI"}
    assert "C2[19]='1000007183-A1-PCI'" in describe(parse_message(golden("get_firmware_response")))


def test_start_transaction_shows_the_amount(golden):
    line = describe(parse_message(golden("start_emv_request")))
    assert "86[21]{9C[1]=00 9F02[6]=000000000100 9F03[6]=000000000000}" in line


def test_failure_status_is_named(golden):
    info = describe_dict(parse_message(golden("low_battery_response")))
    assert info["status"] == {"summary": "80", "detail": "020316",
                              "text": "failed to start; low battery (5 % or less)", "ok": False}


def test_safe_summary_holds_ids_status_and_tags_only(golden):
    assert safe_summary(parse_message(golden("get_serial_response_manual"))) == {
        "message_type": "device_response", "ref": "B5", "command_id": "D101", "length": 46,
        "tags": ["81", "82", "84"], "status": "00000000", "payload_length": 28,
        "payload_tags": ["81", "85", "87", "89"]}
    assert safe_summary(parse_message(golden("arqc_notification"))) == {
        "message_type": "device_notification", "ref": "00", "command_id": "0101", "length": 172,
        "tags": ["81", "82", "84"], "detail": "20080202", "payload_length": 154,
        "payload_tags": ["84"]}
    broken = parse_message(build_request(0x1234, bytes.fromhex("5A0501")))
    assert safe_summary(broken)["payload_tags"] is None
