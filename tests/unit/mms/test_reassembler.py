"""Reassembler: the strict receiver of PROTOCOL.md §2.2, one test per drop reason, plus
property and fuzz tests that a damaged stream never yields a corrupted message."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.mms.packets import (
    DEFAULT_MAX_MESSAGE_SIZE,
    DropReason,
    FrameDropped,
    FramingError,
    MessageReceived,
    PacketReassembler,
    Reassembler,
    packetize,
)

R = DropReason


def feed_all(reassembler, reports):
    return [reassembler.feed(report) for report in reports]


def pad(report: bytes, report_len: int = 64) -> bytes:
    return report + bytes(report_len - len(report))


def head(total: int, data: bytes = b"\x11" * 59) -> bytes:
    return b"\x01" + total.to_bytes(4, "big") + data


def middle(number: int, data: bytes = b"\x22" * 61) -> bytes:
    return b"\x02" + number.to_bytes(2, "big") + data


def tail(data: bytes, n: int | None = None) -> bytes:
    return pad(bytes((0x03, len(data) if n is None else n)) + data)


@pytest.fixture
def qr(golden, golden_reports):
    """The 150-byte §2.1 message and its three reports R1, R2, R3."""
    return golden("show_qr_request"), golden_reports("show_qr_reports")


def test_worked_example_reassembles_one_report_at_a_time(qr):
    message, reports = qr
    r = Reassembler()
    assert feed_all(r, reports) == [[], [], [MessageReceived(message)]]
    assert not r.pending
    assert PacketReassembler is Reassembler


def test_single_packet_examples_come_out_without_padding(golden, golden_reports):
    r = Reassembler()
    assert feed_all(r, golden_reports("single_reports")) == [
        [MessageReceived(golden("cancel_request"))], [MessageReceived(golden("start_emv_request"))]]


def test_single_between_head_and_tail_is_delivered_and_the_message_goes_on(qr, golden):
    message, (r1, r2, r3) = qr
    cancel = packetize(golden("cancel_request"))[0]
    r = Reassembler()
    assert feed_all(r, [r1, cancel, r2, cancel, r3]) == [
        [], [MessageReceived(golden("cancel_request"))], [],
        [MessageReceived(golden("cancel_request"))], [MessageReceived(message)]]


def test_restarted_head_drops_the_pending_message_and_the_new_one_is_accepted(qr):
    message, (r1, r2, r3) = qr
    r = Reassembler()
    assert feed_all(r, [r1, r2]) == [[], []]
    assert r.pending
    assert feed_all(r, [r1, r2, r3]) == [
        [FrameDropped(R.RESTARTED, 59 + 61)], [], [MessageReceived(message)]]


def test_middle_and_tail_with_nothing_pending_are_orphans(qr):
    _message, (_r1, r2, r3) = qr
    assert feed_all(Reassembler(), [r2, r3]) == [
        [FrameDropped(R.ORPHAN, 61)], [FrameDropped(R.ORPHAN, 30)]]


def test_unexpected_middle_number_drops_the_message(qr):
    _message, (r1, _r2, r3) = qr
    r = Reassembler()
    assert feed_all(r, [r1, middle(2), r3]) == [
        [], [FrameDropped(R.SEQUENCE_ERROR, 59 + 61)], [FrameDropped(R.ORPHAN, 30)]]


def test_duplicated_middle_is_a_sequence_error():
    message = random.Random(1).randbytes(200)  # head + 2 middles + tail(19)
    h, m1, m2, t = packetize(message)
    assert feed_all(Reassembler(), [h, m1, m1, m2, t]) == [
        [], [], [FrameDropped(R.SEQUENCE_ERROR, 59 + 61 + 61)],
        [FrameDropped(R.ORPHAN, 61)], [FrameDropped(R.ORPHAN, 19)]]


def test_cancel_drops_the_pending_message_and_is_counted_when_idle(qr):
    _message, (r1, r2, _r3) = qr
    cancel = pad(b"\x04\x00\x00")
    r = Reassembler()
    assert feed_all(r, [cancel, r1, cancel, r2]) == [
        [FrameDropped(R.CANCELLED, 0)], [], [FrameDropped(R.CANCELLED, 59)],
        [FrameDropped(R.ORPHAN, 61)]]


def test_tail_that_does_not_complete_the_declared_total_is_a_length_mismatch(qr):
    _message, (r1, r2, r3) = qr
    short_total = b"\x01" + (149).to_bytes(4, "big") + r1[5:]
    assert feed_all(Reassembler(), [short_total, r2, r3]) == [
        [], [], [FrameDropped(R.LENGTH_MISMATCH, 150)]]
    long_total = b"\x01" + (151).to_bytes(4, "big") + r1[5:]
    assert feed_all(Reassembler(), [long_total, r2, r3]) == [
        [], [], [FrameDropped(R.LENGTH_MISMATCH, 150)]]


def test_middle_that_overflows_the_declared_total_is_a_length_mismatch():
    assert feed_all(Reassembler(), [head(100), middle(1), tail(b"\x33")]) == [
        [], [FrameDropped(R.LENGTH_MISMATCH, 120)], [FrameDropped(R.ORPHAN, 1)]]


def test_head_declaring_less_than_it_carries_is_a_length_mismatch():
    r = Reassembler()
    assert feed_all(r, [head(10)]) == [[FrameDropped(R.LENGTH_MISMATCH, 59)]]
    assert not r.pending


def test_total_above_the_cap_is_too_large_and_the_rest_are_orphans(qr):
    message, reports = qr
    assert feed_all(Reassembler(max_message_size=149), reports) == [
        [FrameDropped(R.TOO_LARGE, 59)], [FrameDropped(R.ORPHAN, 61)], [FrameDropped(R.ORPHAN, 30)]]
    assert feed_all(Reassembler(max_message_size=150), reports)[-1] == [MessageReceived(message)]
    assert Reassembler().max_message_size == DEFAULT_MAX_MESSAGE_SIZE == 1 << 20


@pytest.mark.parametrize(
    ("report", "event"),
    [
        (pad(b"\x00\x00"), FrameDropped(R.BAD_LENGTH, 0)),
        (pad(b"\x00\x3f\xaa"), FrameDropped(R.BAD_LENGTH, 62)),  # N = 63 > RL-2
        (pad(b"\x00\xff\xaa"), FrameDropped(R.BAD_LENGTH, 62)),
    ],
)
def test_single_with_zero_or_oversized_length_is_bad_length(report, event):
    assert Reassembler().feed(report) == [event]


@pytest.mark.parametrize("n", [0, 63, 200])
def test_tail_with_zero_or_oversized_length_is_bad_length_and_drops_the_message(qr, n):
    _message, (r1, r2, r3) = qr
    bad_tail = bytes((0x03, n)) + r3[2:]
    r = Reassembler()
    events = feed_all(r, [r1, r2, bad_tail])
    assert events == [[], [], [FrameDropped(R.BAD_LENGTH, 120 + min(n, 62))]]
    assert not r.pending


@pytest.mark.parametrize("kind", [0x05, 0x10, 0x80, 0xFF])
def test_unknown_type_is_dropped_and_leaves_the_pending_message_alone(qr, kind):
    message, (r1, r2, r3) = qr
    junk = pad(bytes((kind, 1, 2, 3)))
    assert feed_all(Reassembler(), [r1, junk, r2, junk, r3]) == [
        [], [FrameDropped(R.UNKNOWN_TYPE, 0)], [], [FrameDropped(R.UNKNOWN_TYPE, 0)],
        [MessageReceived(message)]]


def test_reports_shorter_than_their_header_says_are_short_reports(qr):
    message, (r1, r2, r3) = qr
    assert Reassembler().feed(b"") == [FrameDropped(R.SHORT_REPORT, 0)]
    assert Reassembler().feed(b"\x00") == [FrameDropped(R.SHORT_REPORT, 0)]
    assert Reassembler().feed(b"\x00\x0a" + b"\xaa" * 5) == [FrameDropped(R.SHORT_REPORT, 5)]
    assert Reassembler().feed(b"\x04\x00") == [FrameDropped(R.SHORT_REPORT, 0)]
    # A short head still ends the pending message (restarted), then is dropped itself.
    r = Reassembler()
    assert feed_all(r, [r1, r1[:40]]) == [
        [], [FrameDropped(R.RESTARTED, 59), FrameDropped(R.SHORT_REPORT, 35)]]
    assert not r.pending
    # A short middle or tail breaks the message it belongs to.
    assert feed_all(Reassembler(), [r1, r2[:63]]) == [[], [FrameDropped(R.SHORT_REPORT, 59 + 60)]]
    assert feed_all(Reassembler(), [r1, r2, r3[:31]]) == [
        [], [], [FrameDropped(R.SHORT_REPORT, 120 + 29)]]
    # Shorter than RL is fine as long as the declared bytes are there (padding is optional).
    assert feed_all(Reassembler(), [r1, r2, r3[:32]]) == [[], [], [MessageReceived(message)]]
    assert Reassembler().feed(b"\x00\x02\xaa\x00") == [MessageReceived(b"\xaa\x00")]


def test_bytes_beyond_the_report_length_are_ignored_like_padding(qr):
    message, reports = qr
    assert feed_all(Reassembler(), [rep + b"\xee" * 7 for rep in reports])[-1] == [
        MessageReceived(message)]


def test_reset_abandons_a_pending_message(qr):
    _message, (r1, r2, _r3) = qr
    r = Reassembler()
    assert r.reset() == []
    r.feed(r1)
    assert r.reset() == [FrameDropped(R.ABANDONED, 59)]
    assert not r.pending
    assert r.reset() == []
    assert r.feed(r2) == [FrameDropped(R.ORPHAN, 61)]


@pytest.mark.parametrize(("total", "nonconforming"), [(60, True), (62, True), (63, False)])
def test_head_for_a_message_that_fits_a_single_packet_is_accepted_but_flagged(total, nonconforming):
    message = random.Random(total).randbytes(total)
    reports = [head(total, message[:59]), tail(message[59:])]
    assert feed_all(Reassembler(), reports)[-1] == [MessageReceived(message, nonconforming)]


def test_bad_construction_arguments_are_refused():
    with pytest.raises(FramingError):
        Reassembler(report_len=4)
    with pytest.raises(FramingError):
        Reassembler(max_message_size=0)


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(1, 70_000),
    report_len=st.sampled_from([64, 32]),
    seed=st.integers(0, 2**32 - 1),
    singles=st.lists(st.tuples(st.floats(0, 1), st.integers(1, 30)), max_size=4),
)
def test_any_message_is_recovered_even_with_singles_interleaved(size, report_len, seed, singles):
    rng = random.Random(seed)
    message = rng.randbytes(size)
    reports = packetize(message, report_len)
    expected_singles = []
    for where, length in singles:
        extra = rng.randbytes(length)
        reports.insert(int(where * len(reports)), packetize(extra, report_len)[0])
        expected_singles.append(extra)
    r = Reassembler(report_len)
    events = [event for report in reports for event in r.feed(report)]
    assert all(isinstance(e, MessageReceived) and not e.nonconforming for e in events)
    delivered = [e.message for e in events if isinstance(e, MessageReceived)]
    assert sorted(delivered) == sorted([message, *expected_singles])
    assert not r.pending


def test_random_reports_never_raise_and_only_valid_singles_yield_messages():
    rng = random.Random(20240501)
    for report_len in (64, 32):
        r = Reassembler(report_len)
        for _ in range(25_000):
            kind = rng.choice((0, 1, 2, 3, 4, rng.randrange(256)))
            report = bytes((kind,)) + rng.randbytes(rng.randrange(0, report_len + 4))
            for event in r.feed(report):
                if isinstance(event, MessageReceived):
                    # Random multi-packet pieces never add up; only a well-formed single does.
                    assert kind == 0
                    assert event.message == report[2 : 2 + report[1]]
                else:
                    assert isinstance(event.reason, DropReason)
                    assert event.discarded_bytes >= 0


# --- Fault-injection fuzz ----------------------------------------------------------------
#
# HID framing carries no checksum and no message id, so some damage is invisible to any
# receiver: a tail whose type byte becomes 00 is a valid single, a single whose length byte
# shrinks is a shorter valid single, and tails of equal length from two messages can stand in
# for each other. The fault model below therefore keeps to damage that the §2.2 checks are
# meant to catch, and the stream is built so that neighbouring multi-packet messages have
# distinct, even tail lengths and singles odd lengths. Under that model every delivered
# message must be byte-identical to one that was sent.


def _message_sizes(report_len: int) -> tuple[list[int], list[int]]:
    head_cap, middle_cap, short_cap = report_len - 5, report_len - 3, report_len - 2
    tails = list(range(2, short_cap + 1, 2))
    multi = [head_cap + k * middle_cap + n for k in (0, 1, 2, 3, 5, 8, 20) for n in tails]
    singles = list(range(1, short_cap, 2))
    return multi, singles


def _faulty(reports: list[bytes], rng: random.Random, report_len: int) -> tuple[list[bytes], bool]:
    """Apply at most one fault; return the reports and whether the message was touched."""
    if rng.random() < 0.55:
        return reports, False
    out = list(reports)
    i = rng.randrange(len(out))
    kind = out[i][0]
    fault = rng.randrange(9)
    if fault == 0:
        del out[i]
    elif fault == 1:
        out.insert(i, out[i])
    elif fault == 2:  # swap two neighbours (a single report is duplicated instead)
        if len(out) == 1:
            out.append(out[0])
        else:
            j = min(i, len(out) - 2)
            out[j], out[j + 1] = out[j + 1], out[j]
    elif fault == 3:  # flip the type byte (a tail never becomes a single: undetectable)
        choices = [t for t in range(256) if t != kind and not (kind == 3 and t == 0)]
        out[i] = bytes((rng.choice(choices),)) + out[i][1:]
    elif fault == 4 and kind == 1:
        total = int.from_bytes(out[i][1:5], "big")
        wrong = rng.choice([rng.randrange(2**32), total + rng.choice((-61, -1, 1, 61))])
        wrong = wrong if wrong != total else total + 1
        out[i] = b"\x01" + (wrong % 2**32).to_bytes(4, "big") + out[i][5:]
    elif fault == 4 and kind == 2:
        number = int.from_bytes(out[i][1:3], "big")
        wrong = (number + rng.randrange(1, 0xFFFF)) % 0x10000
        out[i] = b"\x02" + wrong.to_bytes(2, "big") + out[i][3:]
    elif fault == 4 and kind in (0, 3):  # only lengths the header checks can refute
        n = out[i][1]
        bad = rng.choice([0, rng.randrange(report_len - 1, 256)] if kind == 0 else
                         [x for x in range(256) if x != n])
        out[i] = bytes((kind, bad)) + out[i][2:]
    elif fault == 5:
        out[i] = out[i][: rng.randrange(0, len(out[i]))]
    elif fault == 6:
        out.insert(i, pad(b"\x04" + rng.randbytes(2), report_len))
    elif fault == 7:
        out.insert(i, bytes((rng.randrange(5, 256),)) + rng.randbytes(rng.randrange(report_len)))
    else:
        out.insert(i, b"")
    return out, True


@pytest.mark.faults
def test_fuzzed_streams_never_raise_and_never_deliver_a_corrupted_message():
    rng = random.Random(0xF022)
    fed = 0
    for report_len in (64, 32):
        multi, singles = _message_sizes(report_len)
        r = Reassembler(report_len, max_message_size=DEFAULT_MAX_MESSAGE_SIZE)
        sent: set[bytes] = set()
        intact: list[bytes] = []
        delivered: list[bytes] = []
        for index in range(12_000 if report_len == 64 else 9_000):
            size = multi[index % len(multi)] if rng.random() < 0.6 else rng.choice(singles)
            message = rng.randbytes(size)
            sent.add(message)
            reports, touched = _faulty(packetize(message, report_len), rng, report_len)
            if not touched:
                intact.append(message)
            for report in reports:
                fed += 1
                for event in r.feed(report):
                    if isinstance(event, MessageReceived):
                        assert event.message in sent
                        delivered.append(event.message)
        delivered_set = set(delivered)
        # Damage is contained: a fault never costs a neighbouring message.
        assert all(m in delivered_set for m in intact)
        assert len(intact) > 1000
    assert fed >= 100_000
