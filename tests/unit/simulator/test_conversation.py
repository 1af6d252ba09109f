"""Drive the simulated DynaFlex II purely through HID reports, as the bridge does."""

from __future__ import annotations

import time

import pytest

from bridge.errors import DeviceGoneError
from bridge.mms import (
    Message,
    MessageReceived,
    MessageType,
    Reassembler,
    commands,
    decode_tlvs,
    packetize,
    parse_message,
)
from bridge.simulator import TEST_PAN
from bridge.transport.simulated import SimulatedBus, SimulatedTransport

# PROTOCOL.md §4, "Simulator responses": what MagTek's clients parse B123456 from.
SERIAL_87 = ("AA00810482B5D1018204000000008482001CD10181072B06010401F6098501028704020101018906"
             "C104B1234560")
SERIAL_E2 = ("AA0081048200D1018204000000008482001ED10181072B06010401F609850102890EE20CE10AE108"
             "E106C104B1234560")


class Host:
    """A host speaking reports: packetize on write, reassemble on read."""

    def __init__(self, transport: SimulatedTransport) -> None:
        self.transport = transport
        self.reassembler = Reassembler()

    def send(self, message: bytes) -> None:
        for report in packetize(message):
            self.transport.write_report(report)

    def receive(self, timeout: float = 2.0) -> bytes:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            report = self.transport.read_report(0.05)
            if report is None:
                continue
            for event in self.reassembler.feed(report):
                if isinstance(event, MessageReceived):
                    return event.message
        raise AssertionError("no message from the reader")

    def message(self, timeout: float = 2.0) -> Message:
        return parse_message(self.receive(timeout))

    def idle(self, timeout: float = 0.2) -> bool:
        return self.transport.read_report(timeout) is None


@pytest.fixture
def bus() -> SimulatedBus:
    return SimulatedBus(count=1, auto_present=None)


@pytest.fixture
def host(bus: SimulatedBus) -> Host:
    transport = bus.open(bus.enumerate()[0])
    transport.open()
    return Host(transport)


def _ids(messages: list[Message]) -> list[tuple[int, str]]:
    return [(m.command_id, (m.notification_detail or b"").hex().upper()) for m in messages]


def test_get_serial_in_both_forms_is_byte_exact(host):
    host.send(commands.get_serial_number(0xB5))
    assert host.receive().hex().upper() == SERIAL_87
    host.send(commands.get_serial_number_nested(0x00))
    assert host.receive().hex().upper() == SERIAL_E2


def test_get_firmware_id(host):
    host.send(commands.get_firmware_id(0x08))
    response = host.message()
    assert (response.ref, response.command_id) == (0x08, 0xD101)
    assert commands.parse_firmware_id(response) == "1000007183-A1-PCI"


def test_start_transaction_and_tap(host, bus):
    host.send(commands.start_transaction(0x21))
    response = host.message()
    assert response.message_type == MessageType.DEVICE_RESPONSE
    assert (response.ref, response.status.summary, response.status.detail) == (0x21, 0x01, 0)
    prompt = host.message()
    assert (prompt.command_id, prompt.notification_detail.hex()) == (0x1803, "02010200")
    assert bus.readers[0].present_card("tap")
    flow = [host.message() for _ in range(4)]
    assert _ids(flow) == [(0x0101, "20010400"), (0x0101, "20080202"), (0x0105, "20020700"),
                          (0x0101, "20080302")]
    # ARQC layout (§5): 84 82 LLLL | 0101 | 84 82 llll | blob, blob with masked track 2.
    arqc = flow[1]
    assert arqc.raw[14:18] == b"\x84\x82" + (len(arqc.payload)).to_bytes(2, "big")
    inner = decode_tlvs(arqc.payload, offset=2)[0]
    assert inner.tag == b"\x84" and inner.length_form == 2
    blob = inner.value
    assert int.from_bytes(blob[:2], "big") <= len(blob) - 6
    assert f";{TEST_PAN}=".encode() in blob
    assert host.idle()


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("insert", [(0x0101, "10010200"), (0x0101, "10080202"), (0x0105, "10020700"),
                    (0x1803, "02010100"), (0x0101, "10080302"), (0x0101, "10010300")]),
        ("swipe", [(0x0101, "08010100"), (0x0101, "08080202"), (0x0105, "08020700"),
                   (0x0101, "08080302")]),
    ],
)
def test_insert_and_swipe_sequences(host, bus, kind, expected):
    host.send(commands.start_transaction(0x01))
    host.message()
    host.message()
    assert bus.readers[0].present_card(kind)
    if kind == "insert":  # by hand, the card stays in the slot until it is taken out
        seen = [host.message() for _ in expected[:-1]]
        assert host.idle()
        assert bus.readers[0].remove_card()
        seen.append(host.message())
    else:
        seen = [host.message() for _ in expected]
        assert not bus.readers[0].remove_card()  # a swipe leaves nothing behind
    assert _ids(seen) == expected
    assert host.idle()


def test_automatic_card_and_running_transaction_refused():
    bus = SimulatedBus(count=1, auto_present="swipe", present_delay=0.5)
    host = Host(bus.open(bus.enumerate()[0]))
    host.transport.open()
    host.send(commands.start_transaction(0x01))
    assert host.message().status.summary == 0x01
    host.send(commands.start_transaction(0x02))  # while the first is still running
    messages = [host.message() for _ in range(6)]
    refused = [m for m in messages if m.message_type == MessageType.DEVICE_RESPONSE]
    assert [(m.ref, m.status.summary, m.status.detail) for m in refused] == [(2, 0x80, 0x020308)]
    assert (0x0101, "08010100") in _ids(messages)


def test_cancel_with_and_without_transaction(host):
    host.send(commands.cancel_transaction(0x13))
    refused = host.message()
    assert (refused.status.summary, refused.status.detail) == (0x80, 0x020304)
    host.send(commands.start_transaction(0x01))
    host.message()
    host.message()
    host.send(commands.cancel_transaction(0x13))
    ok = host.message()
    assert ok.raw.hex().upper() == "AA00810482131008820400000000"
    done = host.message()
    assert (done.command_id, done.notification_detail.hex()) == (0x0105, "00030100")


def test_transaction_timeout():
    bus = SimulatedBus(count=1, auto_present=None)
    host = Host(bus.open(bus.enumerate()[0]))
    host.transport.open()
    start = commands.start_transaction(0x01, timeout_s=1)
    host.send(start)
    host.message()
    host.message()
    done = host.message(timeout=3)
    assert (done.command_id, done.notification_detail.hex()) == (0x0105, "00010000")


def test_reset_unplugs_and_comes_back_with_power_up(host, bus):
    host.send(commands.reset_device(0x12))
    assert host.receive().hex().upper() == "AA00810482121F01820400000000"
    assert _ids([host.message()]) == [(0x1001, "00030000")]
    with pytest.raises(DeviceGoneError):
        for _ in range(100):
            host.transport.read_report(0.05)
    deadline = time.monotonic() + 3
    while not bus.enumerate() and time.monotonic() < deadline:
        time.sleep(0.02)
    fresh = Host(bus.open(bus.enumerate()[0]))
    fresh.transport.open()
    power = fresh.message()
    assert power.raw.hex().upper() == "AA00810483001001820400000000840810018101028201" + "00"
    with pytest.raises(DeviceGoneError):
        host.transport.read_report(0.01)  # the old transport stays dead


def test_buzzer_unknown_and_malformed(host):
    host.send(commands.buzzer())
    assert host.message().status.summary == 0x01
    assert _ids([host.message()]) == [(0x1805, "05040100")]
    host.send(bytes.fromhex("AA0081040107ABCD8402ABCD"))
    unknown = host.message()
    assert (unknown.ref, unknown.command_id, unknown.status.summary, unknown.status.detail) == (
        0x07, 0xABCD, 0x80, 0x010113)
    host.send(bytes.fromhex("AA0081040108100184041001820 1".replace(" ", "")))  # cut TLV
    bad = host.message()
    assert (bad.status.summary, bad.status.detail) == (0x80, 0x010102)


def test_garbage_reports_are_dropped_and_reader_still_answers(host):
    for report in (b"\x07" * 64, b"\x02\x00\x05" + bytes(61), b"\x00\xff" + bytes(62), b""):
        host.transport.write_report(report)
    assert host.idle()
    host.send(commands.get_serial_number(0xB5))
    assert host.receive().hex().upper() == SERIAL_87


def test_multi_kilobyte_file_message(host):
    host.send(bytes.fromhex("AA0081040109D8218408D821" + "8104" + (6000).to_bytes(4, "big").hex()))
    assert host.message().status.summary == 0x00
    file_message = host.message()
    assert file_message.message_type == MessageType.DEVICE_FILE
    assert len(file_message.payload) == 6002


def test_interleaved_reports_of_two_messages_are_not_one(host, bus):
    one = commands.show_qr_code(b"https://example.com/" + b"1" * 80, b"Scan one", ref=1)
    two = commands.show_qr_code(b"https://example.com/" + b"2" * 80, b"Scan two", ref=2)
    first, second = packetize(one), packetize(two)
    assert len(first) == len(second) == 3
    for report in (first[0], second[0], first[1], second[1], first[2], second[2]):
        host.transport.write_report(report)
    # The second head restarts reassembly; the middles then break the sequence: nothing
    # mixed from both messages is ever taken as a command.
    assert list(bus.readers[0].host_messages) == []
    for report in first:
        host.transport.write_report(report)
    assert list(bus.readers[0].host_messages) == [one]


def test_paced_output_takes_a_millisecond_a_report():
    bus = SimulatedBus(count=1, paced=True, auto_present=None)
    host = Host(bus.open(bus.enumerate()[0]))
    host.transport.open()
    reader = bus.readers[0]
    for _ in range(50):
        reader.emit_raw_report(b"\x00\x01\xaa" + bytes(61))
    start = time.monotonic()
    got = 0
    while got < 50:
        if host.transport.read_report(1.0) is not None:
            got += 1
    assert time.monotonic() - start >= 0.045


def test_unplug_makes_io_fail_like_hidapi(host, bus):
    bus.unplug(0)
    with pytest.raises(DeviceGoneError):
        host.transport.read_report(0.01)
    with pytest.raises(DeviceGoneError):
        host.transport.write_report(bytes(64))
    assert bus.enumerate() == []
    bus.replug(0)
    assert [d.path for d in bus.enumerate()] == ["sim:0"]


def test_stream_of_notifications_for_benchmarks():
    bus = SimulatedBus(count=1, auto_present=None, stream_rate=2000)
    host = Host(bus.open(bus.enumerate()[0]))
    host.transport.open()
    details = [host.message().notification_detail for _ in range(50)]
    assert [int.from_bytes(d, "big") for d in details] == list(range(1, 51))
