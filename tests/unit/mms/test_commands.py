"""Command builders, the PROTOCOL.md example commands, and serial / firmware parsing (§4)."""

from __future__ import annotations

import pytest

from bridge.mms import commands
from bridge.mms.commands import (
    EXAMPLES,
    buzzer,
    command_by_name,
    get_property,
    parse_firmware_id,
    parse_serial_number,
    set_property,
    start_transaction,
)
from bridge.mms.messages import MessageError, build_request, build_response, parse_message
from bridge.mms.properties import (
    PropertyValue,
    format_path,
    parse_path,
    property_response,
    read_property,
)

# EXAMPLES name -> golden vector file.
EXAMPLE_VECTORS = {
    "get_serial": "get_serial_request",
    "get_serial_nested": "get_serial_nested_request",
    "get_firmware_id": "get_firmware_request",
    "start_emv": "start_emv_request",
    "start_contactless": "start_contactless_request",
    "cancel": "cancel_request",
    "reset": "reset_request",
    "set_user_events": "set_user_events_request",
    "set_websocket_connections": "set_websocket_connections_request",
    "show_qr": "show_qr_request",
}


def test_examples_are_exactly_the_documented_commands(golden):
    assert set(EXAMPLES) == set(EXAMPLE_VECTORS)
    for name, vector in EXAMPLE_VECTORS.items():
        assert EXAMPLES[name] == golden(vector), name


def test_builders_with_defaults_give_the_documented_bytes(golden):
    assert commands.get_serial_number() == golden("get_serial_request")
    assert commands.get_serial_number_nested() == golden("get_serial_nested_request")
    assert commands.get_firmware_id() == golden("get_firmware_request")
    assert commands.cancel_transaction() == golden("cancel_request")
    assert commands.reset_device() == golden("reset_request")
    assert commands.start_transaction() == golden("start_emv_request")
    assert commands.set_user_events() == golden("set_user_events_request")
    assert commands.get_serial_number(0x42)[5] == 0x42


@pytest.mark.parametrize(
    ("vector", "serial"),
    [
        ("get_serial_response_manual", "B61378A"),
        ("sim_serial_response_87", "B123456"),
        ("sim_serial_response_nested", "B123456"),
    ],
)
def test_serial_number_is_parsed_from_either_path_form(golden, vector, serial):
    assert parse_serial_number(parse_message(golden(vector))) == serial


def test_firmware_id_is_ascii_without_nul_padding(golden):
    assert parse_firmware_id(parse_message(golden("get_firmware_response"))) == "1000007183-A1-PCI"


def test_property_response_mirrors_the_request_layout_byte_for_byte(golden):
    value = bytes.fromhex("B1234560")
    assert property_response(parse_message(golden("get_serial_request")), value) == golden(
        "sim_serial_response_87")
    assert property_response(parse_message(golden("get_serial_nested_request")), value) == golden(
        "sim_serial_response_nested")
    firmware_request = parse_message(commands.get_firmware_id(0x08))
    assert property_response(firmware_request, b"1000007183-A1-PCI\0\0") == golden(
        "get_firmware_response")
    failure = property_response(firmware_request, b"", status=(0x80, 0x020102))
    assert parse_message(failure).status is not None
    assert not parse_message(failure).status.ok


@pytest.mark.parametrize(
    ("vector", "expected"),
    [
        ("get_serial_request", PropertyValue((2, 2, 1, 1, 1, 1), b"", "87")),
        ("get_serial_nested_request", PropertyValue((2, 2, 1, 1, 1, 1), b"", "nested")),
        ("get_firmware_request", PropertyValue((2, 1, 2, 2, 2, 2), b"", "nested")),
        ("set_user_events_request",
         PropertyValue((1, 2, 7, 1, 2, 1), bytes.fromhex("9F000000"), "87")),
        ("set_websocket_connections_request", PropertyValue((1, 2, 2, 1, 1, 0xA), b"\x01", "87")),
    ],
)
def test_property_paths_are_read_back(golden, vector, expected):
    assert read_property(parse_message(golden(vector))) == expected


def test_property_path_notation_and_builders():
    assert parse_path("1.2.2.1.1.A") == (1, 2, 2, 1, 1, 10)
    assert format_path((1, 2, 2, 1, 1, 10)) == "1.2.2.1.1.A"
    assert PropertyValue((2, 2, 1, 1, 1, 1), b"", "87").name == "Device Serial Number"
    assert get_property("2.2.1.1.1.1", 0xB5, form="87") == commands.get_serial_number()
    assert set_property("1.2.2.1.1.A", b"\x04", 0x55) == bytes.fromhex(
        "AA0081040155D1118410D1118501018704020201018903CA0104")
    for bad in ("1", "1.2.1F", "x.y", (1, 31), ()):
        with pytest.raises(MessageError) as caught:
            parse_path(bad)
        assert caught.value.reason == "bad_argument"


def test_parsing_a_message_without_a_property_fails_with_a_reason(golden):
    with pytest.raises(MessageError) as caught:
        parse_serial_number(parse_message(golden("cancel_response")))
    assert caught.value.reason == "no_property"
    short = build_response(0xD101, 0xB5, (0, 0), bytes.fromhex("8501028704020101018903C10100"))
    with pytest.raises(MessageError) as caught:
        parse_serial_number(parse_message(short))
    assert caught.value.reason == "bad_serial"
    truncated = build_response(0xD101, 0x08, (0, 0),
                               bytes.fromhex("850102890AE108E206E204E202C2FF"))
    with pytest.raises(MessageError) as caught:
        parse_firmware_id(parse_message(truncated))
    assert caught.value.reason == "no_property"  # C2 FF: length past the end
    garbled = build_response(0xD101, 0x08, (0, 0), bytes.fromhex("85010289 05 E103C201FF"
                                                                 .replace(" ", "")))
    with pytest.raises(MessageError) as caught:
        parse_firmware_id(parse_message(garbled))
    assert caught.value.reason == "bad_firmware_id"


def test_start_transaction_options_land_in_the_documented_tags():
    message = parse_message(start_transaction(
        0x07, amount_cents=123_456, timeout_s=0, msr=False, contact=True, contactless=False,
        currency=978))
    assert message.ref == 0x07
    assert [(t.tag_hex, t.value.hex().upper()) for t in message.payload_tlvs()] == [
        ("82", "00"), ("A3", "810100820101830100"), ("84", "0003"),
        ("86", "9C01009F02060000001234569F03060000000000005F2A020978")]
    for bad in ({"amount_cents": -1}, {"amount_cents": 10**12}, {"timeout_s": 256},
                {"currency": 10_000}, {"options": 0x10000}):
        with pytest.raises(MessageError):
            start_transaction(**bad)


def test_buzzer_and_qr_code_builders():
    assert buzzer([(2000, 200), (1000, 100)], ref=3) == build_request(
        0x1805, bytes.fromhex("810807D000C803E80064"), 3)
    with pytest.raises(MessageError):
        buzzer([])
    with pytest.raises(MessageError):
        buzzer([(1, 1)] * 11)
    with pytest.raises(MessageError):
        commands.show_qr_code(b"x", b"y", timeout_s=300)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("get_serial", "get_serial"), ("GET_SERIAL", "get_serial"),
     ("get-firmware-id", "get_firmware_id"), ("Cancel", "cancel"), ("PCIRESET", "reset"),
     ("GetDeviceSN", "get_serial"),
     ("getfirmwareid", "get_firmware_id"), (" start_emv ", "start_emv")],
)
def test_commands_are_found_by_name(name, expected):
    assert command_by_name(name) == EXAMPLES[expected]


def test_unknown_command_name_lists_the_known_ones():
    with pytest.raises(KeyError) as caught:
        command_by_name("launch_rocket")
    assert "launch_rocket" in str(caught.value)
    assert "get_serial" in str(caught.value)
    assert "pcireset" in str(caught.value)
