"""MMS messages: every PROTOCOL.md example decodes to its documented fields and re-encodes."""

from __future__ import annotations

import contextlib
import random

import pytest

from bridge.errors import ProtocolError
from bridge.mms.commandtext import normalize_command_hex
from bridge.mms.messages import (
    MessageError,
    MessageType,
    OperationStatus,
    build_notification,
    build_request,
    build_response,
    parse_message,
)
from bridge.mms.tlv import TlvError, decode_tlvs

REQ = MessageType.HOST_REQUEST
RESP = MessageType.DEVICE_RESPONSE
NOTE = MessageType.DEVICE_NOTIFICATION
OID = ("81", "2B06010401F609")
QR_DATA = (b"https://example.com/receipt/" + b"0" * 60 + b"1").hex().upper()

# name: (type, ref, id, status, notification detail, 84 length form, payload TLVs after the echo)
# ``None`` for the payload TLVs means the message has no tag 84.
EXPECTED = {
    "get_serial_request": (REQ, 0xB5, 0xD101, None, None, 0, [
        OID, ("85", "02"), ("87", "02010101"), ("89", "C100")]),
    "get_serial_response_manual": (RESP, 0xB5, 0xD101, (0, 0), None, 2, [
        OID, ("85", "02"), ("87", "02010101"), ("89", "C104B61378A0")]),
    "get_serial_nested_request": (REQ, 0x00, 0xD101, None, None, 0, [
        OID, ("85", "02"), ("89", "E208E106E104E102C100")]),
    "sim_serial_response_87": (RESP, 0xB5, 0xD101, (0, 0), None, 2, [
        OID, ("85", "02"), ("87", "02010101"), ("89", "C104B1234560")]),
    "sim_serial_response_nested": (RESP, 0x00, 0xD101, (0, 0), None, 2, [
        OID, ("85", "02"), ("89", "E20CE10AE108E106C104B1234560")]),
    "get_firmware_request": (REQ, 0x02, 0xD101, None, None, 0, [
        OID, ("85", "02"), ("89", "E108E206E204E202C200")]),
    "get_firmware_response": (RESP, 0x08, 0xD101, (0, 0), None, 2, [
        OID, ("85", "02"),
        ("89", "E11BE219E217E215C213" + b"1000007183-A1-PCI\0\0".hex().upper())]),
    "start_emv_request": (REQ, 0x00, 0x1001, None, None, 0, [
        ("82", "3C"), ("A3", "810101820101830101"), ("84", "0003"),
        ("86", "9C01009F02060000000001009F0306000000000000")]),
    "start_emv_response": (RESP, 0x00, 0x1001, (0x01, 0), None, None, None),
    "start_contactless_request": (REQ, 0x00, 0x1001, None, None, 0, [
        ("82", "0A"), ("A3", "810100820100830101"), ("84", "0003"),
        ("86", "9C01009F02060000000001009F03060000000000005F2A020840")]),
    "cancel_request": (REQ, 0x13, 0x1008, None, None, 0, []),
    "cancel_response": (RESP, 0x13, 0x1008, (0, 0), None, None, None),
    "reset_request": (REQ, 0x12, 0x1F01, None, None, 0, []),
    "reset_response": (RESP, 0x12, 0x1F01, (0, 0), None, None, None),
    "set_user_events_request": (REQ, 0x55, 0xD111, None, None, 0, [
        ("85", "01"), ("87", "02070102"), ("89", "C1049F000000")]),
    "set_websocket_connections_request": (REQ, 0x55, 0xD111, None, None, 0, [
        ("85", "01"), ("87", "02020101"), ("89", "CA0101")]),
    "show_qr_request": (REQ, 0x05, 0x1822, None, None, 0, [
        ("81", "3C"), ("82", QR_DATA), ("83", "00"), ("84", "FF"), ("85", "01"), ("86", "28"),
        ("87", "000000"), ("88", "FFFFFF"), ("89", b"Please scan QR code".hex().upper())]),
    "reset_notification": (NOTE, 0x00, 0x1001, None, "00000000", 0, [("81", "02"), ("82", "00")]),
    "low_battery_response": (RESP, 0x01, 0x1001, (0x80, 0x020316), None, None, None),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_golden_vector_decodes_to_documented_fields_and_reencodes(golden, name):
    data = golden(name)
    kind, ref, command_id, status, detail, form, payload_tlvs = EXPECTED[name]
    message = parse_message(data)
    assert message.version == 0
    assert message.message_type is kind
    assert message.ref == ref
    assert message.command_id == command_id
    assert message.status == (None if status is None else OperationStatus(*status))
    assert message.notification_detail == (None if detail is None else bytes.fromhex(detail))
    assert message.file_type is None
    assert message.raw == data
    assert message.encode() == data
    if payload_tlvs is None:
        assert message.payload is None
        assert message.payload_tlvs() == []
        return
    payload_item = next(t for t in message.tlvs if t.tag == b"\x84")
    assert payload_item.length_form == form
    assert message.payload is not None
    assert message.payload[:2] == command_id.to_bytes(2, "big")  # the id echo (§3.4)
    assert [(t.tag_hex, t.value.hex().upper()) for t in message.payload_tlvs()] == payload_tlvs


def test_arqc_notification_decodes_down_to_the_masked_track(golden):
    message = parse_message(golden("arqc_notification"))
    assert (message.message_type, message.ref, message.command_id) == (NOTE, 0, 0x0101)
    assert message.notification_detail == bytes.fromhex("20080202")
    assert [t.tag_hex for t in message.tlvs] == ["81", "82", "84"]
    assert message.tlvs[2].length_form == 2  # 84 82 00 9A
    assert message.encode() == message.raw
    (inner,) = message.payload_tlvs()
    assert (inner.tag_hex, inner.length_form, len(inner.value)) == ("84", 2, 0x94)
    blob = inner.value
    blob_length = int.from_bytes(blob[:2], "big")
    assert blob_length == 0x88
    (f9,) = decode_tlvs(blob[2 : 2 + blob_length])
    assert f9.tag_hex == "F9"
    assert [t.tag_hex for t in f9.children()] == ["DFDF54", "DFDF55", "DFDF25", "FA"]
    assert f9.children()[2].value == b"B123456"
    fa = f9.children()[3]
    (seventy,) = fa.children()
    assert [t.tag_hex for t in seventy.children()] == ["DFDF53", "DFDF4D", "DFDF52", "F8"]
    assert seventy.children()[1].value == b";4761730000000119=25122010000000000000?"
    assert [t.tag_hex for t in seventy.children()[3].children()] == [
        "DFDF59", "DFDF56", "DFDF57", "DFDF58"]
    assert blob[2 + blob_length :] == bytes(len(blob) - 2 - blob_length)  # padding + zero MAC


def test_builders_reproduce_the_documented_messages(golden):
    assert build_request(0x1008, b"", 0x13) == golden("cancel_request")
    assert build_request(0x1F01, ref=0x12) == golden("reset_request")
    assert build_response(0x1008, 0x13, (0, 0)) == golden("cancel_response")
    assert build_response(0x1F01, 0x12, OperationStatus(0, 0)) == golden("reset_response")
    assert build_response(0x1001, 0x00, (0x01, 0)) == golden("start_emv_response")
    assert build_response(0x1001, 0x01, (0x80, 0x020316)) == golden("low_battery_response")
    assert build_notification(0x1001, bytes(4), bytes.fromhex("810102820100")) == golden(
        "reset_notification")
    payload = golden("sim_serial_response_87")[20:]
    assert build_response(0xD101, 0xB5, (0, 0), payload, long_payload=True) == golden(
        "sim_serial_response_87")


def test_builders_write_the_echo_and_the_long_form():
    # §3.4: a response echoing only the id, and the long 84 form of data notifications.
    assert build_response(0x1F04, 0x07, (0, 0), b"") == bytes.fromhex(
        "AA0081048207 1F04 820400000000 84021F04".replace(" ", ""))
    assert build_notification(0x0101, bytes.fromhex("20080202"), b"\x99", long_payload=True) == (
        bytes.fromhex("AA00810483000101820420080202848200030101 99".replace(" ", "")))
    assert build_request(0x1008, ref=1, version=2)[:2] == b"\xaa\x02"


@pytest.mark.parametrize(
    "call",
    [
        lambda: build_request(0x10000),
        lambda: build_request(0x1008, ref=256),
        lambda: build_request(0x1008, version=-1),
        lambda: build_response(0x1008, 0, (0x100, 0)),
        lambda: build_response(0x1008, 0, (0, 0x1000000)),
        lambda: build_notification(0x0101, b"\x00\x00\x00"),
    ],
)
def test_builders_refuse_out_of_range_arguments(call):
    with pytest.raises(MessageError) as caught:
        call()
    assert caught.value.reason == "bad_argument"


def test_file_messages_carry_a_file_type():
    data = bytes.fromhex("AA00 8108 84 03 D821 D8000001 8404 D821 ABCD".replace(" ", ""))
    message = parse_message(data)
    assert message.message_type is MessageType.DEVICE_FILE
    assert (message.ref, message.command_id) == (3, 0xD821)
    assert message.file_type == bytes.fromhex("D8000001")
    assert message.encode() == data


@pytest.mark.parametrize(
    ("hex_in", "reason", "offset"),
    [
        ("", "empty", 0),
        ("AB0081040113100884021008", "no_start_byte", 0),
        ("AA", "truncated", 1),
        ("AA00", "truncated", 2),
        ("AA0081", "truncated", 3),
        ("AA00810401131008840210", "truncated", 9),  # 84 02 with one byte left
        ("AA0081040113100884021008 84".replace(" ", ""), "truncated", 13),  # trailing tag
        ("AA0381040113100884021008", "bad_version", 1),
        ("AA00820400000000", "bad_message_info", 2),  # first TLV is not 81
        ("AA008105011310080084021008", "bad_message_info", 2),
        ("AA00810883001001000000008400", "bad_message_info", 2),  # 81 08 on a non-file
        ("AA008104840310088400", "bad_message_info", 2),  # 81 04 on a file
        ("AA0081040513100884021008", "unknown_type", 4),
        ("AA00810482131008820300000084021008", "bad_status", None),
        ("AA0081040113100800", "bad_tlv", 8),  # 00 tag byte
        ("AA00810401131008 5A80".replace(" ", ""), "bad_tlv", 9),  # indefinite length
        # [manual]'s malformed low-battery example (PROTOCOL.md §5): "82 00 02 00 0D".
        ("AA00810483001001820002000D", "truncated", 13),
    ],
)
def test_malformed_messages_raise_message_error_with_reason(hex_in, reason, offset):
    with pytest.raises(MessageError) as caught:
        parse_message(bytes.fromhex(hex_in))
    assert caught.value.reason == reason
    assert caught.value.offset == offset
    assert isinstance(caught.value, ProtocolError)


def test_random_and_mutated_bytes_parse_or_raise_message_error(golden):
    rng = random.Random(1234)
    seeds = [golden(n) for n in EXPECTED] + [golden("arqc_notification")]
    parsed = 0
    for _ in range(20_000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.3:
            del data[rng.randrange(len(data)) :]
        try:
            message = parse_message(bytes(data))
        except MessageError:
            continue
        parsed += 1
        assert message.encode() == bytes(data)
        with contextlib.suppress(TlvError):
            message.payload_tlvs()
    assert parsed > 1000


def test_operation_status_names_and_success():
    low = OperationStatus.from_bytes(bytes.fromhex("80020316"))
    assert (low.summary, low.detail, low.ok) == (0x80, 0x020316, False)
    assert low.summary_name == "failed to start"
    assert low.detail_name == "low battery (5 % or less)"
    assert str(low) == "80 020316 (failed to start; low battery (5 % or less))"
    assert low.to_bytes() == bytes.fromhex("80020316")
    assert OperationStatus(0x01, 0).ok and OperationStatus(0x41, 0).ok
    assert not OperationStatus(0x81, 0x020304).ok
    assert OperationStatus(0x81, 0x020304).detail_name == "device state: no transaction"
    assert OperationStatus(0, 0x020520).detail_name == "TR-31 / key-management error"
    assert OperationStatus(0x77, 0x7F7F7F).summary_name == "unknown summary 77"
    assert OperationStatus(0x77, 0x7F7F7F).detail_name == "unknown detail 7F7F7F"
    with pytest.raises(MessageError):
        OperationStatus.from_bytes(b"\x00")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("AA0081040113100884021008", "AA0081040113100884021008"),
        ("aa0081040113100884021008", "AA0081040113100884021008"),
        ("  AA00 8104 0113\t1008\n84021008 \r\n", "AA0081040113100884021008"),
        ("SENDCOMMAND,AA0081040113100884021008", "AA0081040113100884021008"),
        ("sendcommand,aa00 8104 0113 1008 8402 1008", "AA0081040113100884021008"),
        (" SendCommand, AA0081040113100884021008", "AA0081040113100884021008"),
        ("AA:00:81:04:01:13:10:08:84:02:10:08", "AA0081040113100884021008"),
        ("aa-00-81-04-01-13-10-08-84-02-10-08", "AA0081040113100884021008"),
        ("AA00,8104, 0113 ,1008\n8402:1008", "AA0081040113100884021008"),
        ("SENDCOMMAND,AA:00:81:04:01:13:10:08:84:02:10:08", "AA0081040113100884021008"),
    ],
)
def test_command_text_is_normalised(text, expected):
    assert normalize_command_hex(text) == bytes.fromhex(expected)


@pytest.mark.parametrize(
    ("text", "reason", "offset"),
    [
        ("", "empty", None),
        ("   \n", "empty", None),
        ("SENDCOMMAND,", "empty", None),
        ("AA00 81G4", "not_hex", 6),
        ("AA00;8104", "not_hex", 4),
        ("AA0:08104", "not_hex", 3),  # a separator inside a byte
        ("AA00.81.04", "not_hex", 4),
        ("AA00_8104", "not_hex", 4),
        ("0xAA00", "not_hex", 1),
        ("SENDCOMMAND;AA00", "not_hex", 0),  # not the verb: S is no hex digit
        ("AA0", "odd_length", None),
    ],
)
def test_bad_command_text_is_refused_with_a_reason(text, reason, offset):
    with pytest.raises(MessageError) as caught:
        normalize_command_hex(text)
    assert (caught.value.reason, caught.value.offset) == (reason, offset)
