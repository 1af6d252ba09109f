"""packetize(): the sender algorithm of PROTOCOL.md §2, byte for byte."""

from __future__ import annotations

import random

import pytest

from bridge.errors import ProtocolError
from bridge.mms.packets import FramingError, max_message_size, packetize

# (report length, message bytes): (reports, middles, tail n or None for a single packet).
# RL 64 rows are the §2 table; RL 32 rows use the §2 capacities 30 / 27 / 29 / 30.
LAYOUTS = {
    (64, 1): (1, 0, None),
    (64, 62): (1, 0, None),
    (64, 63): (2, 0, 4),
    (64, 121): (2, 0, 62),
    (64, 122): (3, 1, 2),
    (64, 150): (3, 1, 30),
    (64, 3930): (65, 63, 28),
    (64, 4096): (68, 66, 11),
    (64, 70000): (1148, 1146, 35),
    (32, 1): (1, 0, None),
    (32, 62): (3, 1, 6),
    (32, 63): (3, 1, 7),
    (32, 121): (5, 3, 7),
    (32, 122): (5, 3, 8),
    (32, 150): (6, 4, 7),
    (32, 3930): (136, 134, 17),
    (32, 4096): (142, 140, 9),
    (32, 70000): (2414, 2412, 25),
}


@pytest.mark.parametrize(("report_len", "size"), sorted(LAYOUTS))
def test_layout_matches_the_documented_table(report_len, size):
    reports_expected, middles_expected, tail_n = LAYOUTS[(report_len, size)]
    message = random.Random(size).randbytes(size)
    reports = packetize(message, report_len)
    assert len(reports) == reports_expected
    assert all(len(r) == report_len for r in reports)
    if tail_n is None:
        (single,) = reports
        assert single[:2] == bytes((0x00, size))
        assert single[2 : 2 + size] == message
        assert single[2 + size :] == bytes(report_len - 2 - size)
        return
    head, *middles, tail = reports
    assert head[:5] == b"\x01" + size.to_bytes(4, "big")
    assert head[5:] == message[: report_len - 5]
    assert len(middles) == middles_expected
    pos = report_len - 5
    for number, middle in enumerate(middles, start=1):
        assert middle[:3] == b"\x02" + number.to_bytes(2, "big")
        assert middle[3:] == message[pos : pos + report_len - 3]
        pos += report_len - 3
    assert tail[:2] == bytes((0x03, tail_n))
    assert tail[2 : 2 + tail_n] == message[pos:]
    assert tail[2 + tail_n :] == bytes(report_len - 2 - tail_n)
    assert pos + tail_n == size


def test_worked_example_of_section_2_1_is_reproduced_exactly(golden, golden_reports):
    message = golden("show_qr_request")
    assert len(message) == 150
    assert packetize(message) == golden_reports("show_qr_reports")


def test_single_packet_examples_of_section_2_1(golden, golden_reports):
    cancel_report, start_report = golden_reports("single_reports")
    assert packetize(golden("cancel_request")) == [cancel_report]
    assert packetize(golden("start_emv_request")) == [start_report]
    assert start_report[:2] == bytes.fromhex("0035")


def test_protocol_maximum_is_computed_from_the_report_length():
    assert max_message_size(64) == 59 + 65535 * 61 + 62 == 3_997_756
    assert max_message_size(32) == 27 + 65535 * 29 + 30


def test_largest_message_fills_every_packet_number_and_one_more_byte_is_refused():
    report_len = 16  # same rule, smaller numbers: 11 + 65535 * 13 + 14 bytes
    limit = max_message_size(report_len)
    reports = packetize(bytes(limit), report_len)
    assert len(reports) == 65537
    assert reports[-2][:3] == b"\x02\xff\xff"
    assert reports[-1][:2] == bytes((0x03, report_len - 2))
    with pytest.raises(FramingError) as caught:
        packetize(bytes(limit + 1), report_len)
    assert caught.value.reason == "too_large"


def test_empty_message_is_refused_with_our_value_error():
    with pytest.raises(FramingError) as caught:
        packetize(b"")
    assert caught.value.reason == "empty"
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, ProtocolError)


@pytest.mark.parametrize("report_len", [0, 5, 258, -64])
def test_unusable_report_lengths_are_refused(report_len):
    with pytest.raises(FramingError) as caught:
        packetize(b"\xaa", report_len)
    assert caught.value.reason == "bad_report_len"
