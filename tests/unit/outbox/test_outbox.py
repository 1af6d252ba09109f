"""Outbox bookkeeping: order, bounds, time-to-live, in-flight hand-back, spool calls."""

from __future__ import annotations

import pytest

from bridge.outbox import DropReason, Entry, Outbox, OutboxLimits, expiry_for


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class RecordingSpool:
    def __init__(self) -> None:
        self.rows: dict[int, Entry] = {}
        self._next = 0

    def add(self, entry: Entry) -> None:
        self._next += 1
        entry.spool_id = self._next
        self.rows[self._next] = entry

    def remove(self, entries) -> None:
        for entry in entries:
            self.rows.pop(entry.spool_id, None)


def _entry(n: int, clock: Clock, size: int = 10) -> Entry:
    return Entry(serial="S1", topic="t", payload=bytes([n % 256]) * size,
                 user_properties=(("seq", str(n)),), created=clock.now)


def _make(limits: OutboxLimits, spool=None):
    clock = Clock()
    drops: list[tuple[str, DropReason]] = []
    box = Outbox("S1", limits, spool=spool, clock=clock,
                 on_drop=lambda e, r: drops.append((dict(e.user_properties)["seq"], r)))
    return box, clock, drops


def _seq(entry: Entry) -> str:
    return dict(entry.user_properties)["seq"]


def test_fifo_order_and_in_flight_window():
    box, clock, drops = _make(OutboxLimits())
    entries = [_entry(n, clock) for n in range(5)]
    for e in entries:
        box.put(e)
    first, second = box.next_to_send(), box.next_to_send()
    assert (_seq(first), _seq(second)) == ("0", "1")
    assert box.in_flight == 2 and box.waiting() == 3
    box.complete(first)
    assert len(box) == 4 and box.in_flight == 1
    assert drops == []


def test_full_by_count_drops_oldest_waiting_not_in_flight():
    box, clock, drops = _make(OutboxLimits(max_messages=3))
    for n in range(3):
        box.put(_entry(n, clock))
    in_flight = box.next_to_send()
    box.put(_entry(3, clock))
    box.put(_entry(4, clock))
    assert _seq(in_flight) == "0"
    assert drops == [("1", DropReason.FULL), ("2", DropReason.FULL)]
    remaining = [_seq(box.next_to_send()) for _ in range(2)]
    assert remaining == ["3", "4"]


def test_full_by_bytes():
    box, clock, drops = _make(OutboxLimits(max_bytes=35))
    for n in range(4):
        box.put(_entry(n, clock, size=9))  # 10 bytes each with the topic
    assert [r for _, r in drops] == [DropReason.FULL]
    assert box.bytes == 30


def test_expired_entries_are_dropped_when_sending_and_by_expire():
    box, clock, drops = _make(OutboxLimits(ttl=10))
    box.put(_entry(0, clock))
    clock.now += 5
    box.put(_entry(1, clock))
    clock.now += 6  # entry 0 is 11 s old, entry 1 is 6 s old
    sent = box.next_to_send()
    assert _seq(sent) == "1"
    assert drops == [("0", DropReason.EXPIRED)]
    box.put(_entry(2, clock))
    clock.now += 11
    assert box.expire() == 1
    assert drops[-1] == ("2", DropReason.EXPIRED)
    assert len(box) == 1  # the in-flight one stays: the broker has it


def test_take_hands_out_the_oldest_waiting_in_order_and_marks_them_in_flight():
    box, clock, drops = _make(OutboxLimits(ttl=60))
    for n in range(3):
        box.put(_entry(n, clock))
    clock.now += 61  # 0..2 expire
    for n in range(3, 9):
        box.put(_entry(n, clock))
    assert [_seq(e) for e in box.take(4)] == ["3", "4", "5", "6"]
    assert [seq for seq, _ in drops] == ["0", "1", "2"]
    assert box.in_flight == 4 and box.waiting() == 2
    assert [_seq(e) for e in box.take(10)] == ["7", "8"]  # no more than is waiting
    assert box.take(1) == [] and box.in_flight == 6
    box.return_in_flight()
    assert [_seq(e) for e in box.take(2)] == ["3", "4"]  # returned ones go out first again


def test_expiry_interval_matches_remaining_ttl():
    clock = Clock()
    entry = _entry(0, clock)
    clock.now += 100.4
    assert expiry_for(entry.remaining_ttl(300, clock.now)) == 200
    clock.now += 199.9
    # never 0: that would mean "no expiry"
    assert expiry_for(entry.remaining_ttl(300, clock.now)) == 1


def test_return_in_flight_puts_them_back_first_and_marks_replayed():
    box, clock, _ = _make(OutboxLimits())
    for n in range(4):
        box.put(_entry(n, clock))
    sent = [box.next_to_send() for _ in range(2)]
    assert box.return_in_flight() == 2
    assert all(e.replayed for e in sent)
    again = [_seq(box.next_to_send()) for _ in range(4)]
    assert again == ["0", "1", "2", "3"]


def test_refused_completion_counts_a_drop():
    box, clock, drops = _make(OutboxLimits())
    box.put(_entry(7, clock))
    entry = box.next_to_send()
    box.complete(entry, dropped=DropReason.OVERSIZE)
    assert drops == [("7", DropReason.OVERSIZE)] and len(box) == 0 and box.bytes == 0


def test_spool_rows_follow_entries():
    spool = RecordingSpool()
    box, clock, _ = _make(OutboxLimits(max_messages=2), spool=spool)
    for n in range(3):
        box.put(_entry(n, clock))
    assert sorted(_seq(e) for e in spool.rows.values()) == ["1", "2"]
    a, b = box.next_to_send(), box.next_to_send()
    box.complete_many([a, b])
    assert spool.rows == {} and len(box) == 0


def test_put_without_spooling_keeps_existing_row_id():
    spool = RecordingSpool()
    box, clock, _ = _make(OutboxLimits(), spool=spool)
    entry = _entry(1, clock)
    entry.spool_id = 99
    box.put(entry, spool=False)
    assert spool.rows == {}
    box.complete(box.next_to_send())
    assert entry.spool_id == 99


@pytest.mark.parametrize("count", [1, 50])
def test_complete_many_keeps_order_of_the_rest(count):
    box, clock, _ = _make(OutboxLimits())
    for n in range(count + 3):
        box.put(_entry(n, clock))
    sent = [box.next_to_send() for _ in range(count)]
    box.complete_many(sent[::-1])
    assert [_seq(box.next_to_send()) for _ in range(3)] == [str(count), str(count + 1),
                                                             str(count + 2)]


def test_complete_many_out_of_order_keeps_the_unacknowledged_in_flight_in_place():
    box, clock, _ = _make(OutboxLimits())
    for n in range(6):
        box.put(_entry(n, clock))
    sent = [box.next_to_send() for _ in range(4)]  # 0..3 in flight, 4 and 5 waiting
    box.complete_many([sent[0], sent[2]])  # 0 from the front, 2 from the middle
    assert box.in_flight == 2 and len(box) == 4
    assert box.return_in_flight() == 2  # 1 and 3 wait again, ahead of 4 and 5
    assert [_seq(box.next_to_send()) for _ in range(4)] == ["1", "3", "4", "5"]


@pytest.mark.parametrize("limits", [OutboxLimits(max_messages=5), OutboxLimits(max_bytes=45),
                                    OutboxLimits(max_messages=3, max_bytes=1_000),
                                    OutboxLimits(max_bytes=5)])
@pytest.mark.parametrize("in_flight", [0, 2])
def test_put_many_keeps_and_drops_exactly_what_puts_one_by_one_do(limits, in_flight):
    # The courier takes a reader's burst over with one put_many: same entries kept, same
    # drops in the same order, same bytes, as a put of each in turn.
    def run(batched: bool):
        box, clock, drops = _make(limits)
        for n in range(4):
            box.put(_entry(n, clock, size=9 if n != 2 else 30))
        for _ in range(in_flight):
            box.next_to_send()
        burst = [_entry(n, clock, size=9 if n % 3 else 20) for n in range(4, 12)]
        if batched:
            box.put_many(burst)
        else:
            for entry in burst:
                box.put(entry, spool=False)
        kept = []
        while (entry := box.next_to_send()) is not None:
            kept.append(_seq(entry))
        return kept, drops, box.bytes, box.in_flight

    one_by_one = run(batched=False)
    assert one_by_one[1], "the bounds must drop something for this to prove anything"
    assert run(batched=True) == one_by_one
