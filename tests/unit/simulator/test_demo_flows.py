"""The simulated reader plays every flow of MagTek's demos (seed 004's command list, §5)."""

from __future__ import annotations

import pytest

from bridge.mms import Message, MessageType, commands, parse_message, read_property
from bridge.simulator import SimulatedReader
from bridge.transport.simulated import SimulatedBus
from tests.unit.simulator.test_conversation import Host

# Seed 004 (WebSocket MMS demo guide), the command list, as sent by the demo pages.
START_EMV = ("AA00810401001001842B100182013CA3098101018201018301018402000386159C01009F0206000000"
             "0001009F0306000000000000")
START_CONTACT = ("AA008104010010018430100182013CA30981010082010183010084020003861A9C01009F020600"
                 "00000001009F03060000000000005F2A020840")
START_CONTACTLESS = ("AA008104010010018430100182013CA30981010082010083010184020003861A9C01009F02"
                     "060000000001009F03060000000000005F2A020840")
START_MSR = ("AA008104010010018430100182013CA30981010182010083010084020003861A9C01009F02060000"
             "000001009F03060000000000005F2A020840")
NFC = ("AA00810401031001843D1001820178A3098101008201008301038402020386279C01009F0206000000000100"
       "9F03060000000000005F2A0208405F3601029F150200009F530100")
SEED_COMMANDS = {
    "Get User Notify": "AA0081040155D101840FD1018501018704020701028902C100",
    "Set User Notify to All Events": "AA0081040155D1118413D1118501018704020701028906C1048F000000",
    "Set DynaProx User Notify": "AA0081040155D1118413D1118501018704020701028906C10483000000",
    "Get SN": "AA00810401B5D1018418D10181072B06010401F6098501028704020101018902C100",
    "Get Capabilities": "AA00810401E0D101841AD10181072B06010401F609850102890AE208E106E104E102C200",
    "Display Amount": "AA0081040155180384081803810100820101",
    "Display Approved": "AA0081040155180384081803810100820103",
    "User Selection 0": "AA0081040100180284081802810100820100",
    "Set WebSocket Connections 1": "AA0081040155D1118410D1118501018704020201018903CA0101",
    "Set WebSocket Connections 4": "AA0081040155D1118410D1118501018704020201018903CA0104",
}


def _host(**options: object) -> tuple[SimulatedReader, Host]:
    bus = SimulatedBus(count=1, **options)  # type: ignore[arg-type]
    host = Host(bus.open(bus.enumerate()[0]))
    host.transport.open()
    return bus.readers[0], host


def _ids(messages: list[Message]) -> list[tuple[int, str]]:
    return [(m.command_id, (m.notification_detail or b"").hex().upper()) for m in messages
            if m.message_type == MessageType.DEVICE_NOTIFICATION]


def _until(host: Host, notification_id: int, detail: str, limit: int = 12) -> list[Message]:
    seen = []
    for _ in range(limit):
        seen.append(host.message())
        if _ids(seen[-1:]) == [(notification_id, detail)]:
            return seen
    raise AssertionError(f"no {notification_id:04X} {detail} in {_ids(seen)}")


INSERT = [(0x0101, "10010200"), (0x0101, "10080202"), (0x0105, "10020700"),
          (0x1803, "02010100"), (0x0101, "10080302"), (0x0101, "10010300")]
SWIPE = [(0x0101, "08010100"), (0x0101, "08080202"), (0x0105, "08020700"),
         (0x0101, "08080302")]
TAP = [(0x0101, "20010400"), (0x0101, "20080202"), (0x0105, "20020700"), (0x0101, "20080302")]


@pytest.mark.parametrize(
    ("command", "preference", "expected"),
    [
        (START_CONTACT, "tap", INSERT),
        (START_MSR, "tap", SWIPE),
        (START_CONTACTLESS, "insert", TAP),
        (NFC, "swipe", TAP),
        (START_EMV, "swipe", SWIPE),  # several kinds allowed: the configured preference
        (START_EMV, "insert", INSERT),
    ],
)
def test_start_transaction_honours_reader_types(command, preference, expected):
    _, host = _host(auto_present=preference, present_delay=0)
    host.send(bytes.fromhex(command))
    started = host.message()
    assert (started.command_id, started.status.summary) == (0x1001, 0x01)
    seen = _until(host, *expected[-1])
    assert _ids(seen) == [(0x1803, "02010200"), *expected]
    assert host.idle()


def test_cancel_during_the_wait_ends_as_cancelled():
    _, host = _host(auto_present="tap", present_delay=30)
    host.send(bytes.fromhex(START_EMV))
    assert host.message().status.summary == 0x01
    assert _ids([host.message()]) == [(0x1803, "02010200")]
    host.send(commands.cancel_transaction(0x13))
    response = host.message()
    assert (response.ref, response.command_id, response.status.summary) == (0x13, 0x1008, 0)
    assert _ids([host.message()]) == [(0x0105, "00030100")]
    assert host.idle(0.3)


def test_the_transaction_timeout_of_the_command_is_honoured():
    reader, host = _host(auto_present=None)
    host.send(commands.start_transaction(0x01, timeout_s=1))
    host.message()
    host.message()
    assert host.idle(0.5)  # nobody presents a card
    assert _ids([host.message(timeout=3)]) == [(0x0105, "00010000")]
    assert reader.present_card("tap")  # too late: no transaction reads it any more
    assert host.idle(0.3)


def test_manual_mode_idle_user_events_and_a_card_left_for_the_next_transaction():
    reader, host = _host(auto_present=None)
    host.send(bytes.fromhex(SEED_COMMANDS["Set User Notify to All Events"]))
    assert host.message().status.ok
    assert reader.present_card("insert")
    assert _ids([host.message()]) == [(0x1001, "01020000")]  # card seated
    assert not reader.present_card("insert")  # the slot is taken
    host.send(bytes.fromhex(START_CONTACT))
    seen = _until(host, 0x0101, "10080302")
    assert (0x0101, "10010300") not in _ids(seen)  # still in the slot
    assert reader.remove_card()
    assert _ids([host.message()]) == [(0x0101, "10010300")]
    assert reader.present_card("tap") and _ids([host.message()]) == [(0x1001, "01000000")]
    assert reader.remove_card() and _ids([host.message()]) == [(0x1001, "01010000")]
    assert not reader.remove_card()


def test_no_user_events_unless_enabled():
    reader, host = _host(auto_present=None)
    assert reader.present_card("swipe")
    assert host.idle(0.3)
    host.send(bytes.fromhex(START_MSR))  # the buffered swipe is read at once
    seen = _until(host, *SWIPE[-1])
    assert _ids(seen)[-len(SWIPE):] == SWIPE


def test_a_card_the_transaction_does_not_allow_is_not_read():
    reader, host = _host(auto_present=None)
    host.send(bytes.fromhex(START_CONTACTLESS))
    host.message()
    host.message()
    assert not reader.present_card("swipe")
    assert reader.present_card("tap")
    assert _ids(_until(host, *TAP[-1])) == TAP


@pytest.mark.parametrize("name", sorted(SEED_COMMANDS))
def test_every_other_seed_command_gets_a_successful_response(name):
    _, host = _host(auto_present=None)
    request = parse_message(bytes.fromhex(SEED_COMMANDS[name]))
    host.send(bytes.fromhex(SEED_COMMANDS[name]))
    response = host.message()
    assert (response.message_type, response.ref, response.command_id) == (
        MessageType.DEVICE_RESPONSE, request.ref, request.command_id)
    assert response.status is not None and response.status.ok, response.status


def test_websocket_connections_property_reads_back():
    _, host = _host(auto_present=None)
    host.send(bytes.fromhex(SEED_COMMANDS["Set WebSocket Connections 1"]))
    assert read_property(host.message()).value == b"\x01"
    host.send(bytes.fromhex("AA0081040156D1118410D1118501018704020201018903CA0109"))  # 9 > 4
    assert not host.message().status.ok


def test_nfc_mifare_and_request_pin():
    _, host = _host(auto_present="tap", present_delay=0)
    host.send(bytes.fromhex("AA00810401041100840C110081023000820100830100"))  # NFC Mifare
    assert host.message().status.summary == 0x01
    seen = _until(host, 0x0105, "20050000")
    assert _ids(seen) == [(0x0101, "20010402"), (0x0101, "20080402"), (0x0105, "20050000")]
    host.send(bytes.fromhex(
        "AA008104017A2001841C200181013C82010083020804850100A10B81010C8206123456789012"))
    assert host.message().status.summary == 0x01
    prompt = host.message()
    assert _ids([prompt]) == [(0x1803, "02010200")]
    raw = host.receive()
    assert _ids([parse_message(raw)]) == [(0x0205, "00000000")]
    # MagTek's reference finds the PIN block container F5 after 24 characters of TLV data
    # (status, 84 82 LLLL, 0205), the TLV data starting after the 8-byte header.
    assert raw.hex().upper()[16:][24:26] == "F5"
