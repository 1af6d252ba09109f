"""The pure throttles behind the command intake: token bucket, throttle, Error coalescer."""

from __future__ import annotations

import json
import threading
import time

from bridge.intake import Rejection
from bridge.mqtt.loop import IoLoop
from bridge.refusals import RefusalReporter
from bridge.throttle import ErrorCoalescer, Throttle, TokenBucket

BAD = Rejection("not_hex", "payload is not hex")


def _started_since(before: set[threading.Thread]) -> list[str]:
    """Threads started since ``before`` (other tests' MQTT machinery aside)."""
    return [t.name for t in set(threading.enumerate()) - before
            if not t.name.startswith("mqtt-")]


def test_bucket_gives_the_burst_then_the_rate():
    bucket = TokenBucket(rate=10, burst=5)
    assert [bucket.take(100.0) for _ in range(7)] == [True] * 5 + [False] * 2
    assert bucket.take(100.05) is False  # half a token
    assert bucket.take(100.1) is True  # one token after 0.1 s at 10/s
    assert bucket.take(100.1) is False
    # A long pause refills to the burst, never beyond.
    assert sum(bucket.take(200.0) for _ in range(20)) == 5


def test_bucket_ignores_a_clock_that_goes_back():
    bucket = TokenBucket(rate=1, burst=1)
    assert bucket.take(10.0) is True
    assert bucket.take(5.0) is False
    assert bucket.take(10.5) is False
    assert bucket.take(11.0) is True


def test_bucket_admits_rate_times_time_over_a_flood():
    bucket = TokenBucket(rate=50, burst=100)
    # 10,000 commands/s for 5 s, one every 0.1 ms.
    admitted = sum(bucket.take(i / 10_000) for i in range(50_000))
    assert 349 <= admitted <= 350  # burst + rate * 5 s, never more


def test_throttle_counts_what_it_holds_back():
    throttle = Throttle(interval=1.0, burst=2)
    assert throttle.allow(0.0) == 0
    assert throttle.allow(0.0) == 0
    assert [throttle.allow(0.1) for _ in range(3)] == [None, None, None]
    assert throttle.due(0.5) is None  # not yet
    assert throttle.allow(1.2) == 3  # the line that passes stands for the three held back
    assert throttle.due(5.0) is None  # nothing held back


def test_coalescer_reports_a_few_in_full_then_one_summary_per_interval():
    errors = ErrorCoalescer(interval=1.0, burst=3)
    reports = [errors.refused(BAD, topic="t/SendCommand", size=4, now=0.0) for _ in range(1000)]
    full = [r for r in reports if r is not None]
    assert len(full) == 3
    assert json.loads(full[0].body)["reason"] == "not_hex"
    assert errors.pending == 997
    assert errors.flush(topic="t/SendCommand", now=0.5) is None  # within the interval
    summary = errors.flush(topic="t/SendCommand", now=1.0)
    assert summary is not None and summary.suppressed == 997
    body = json.loads(summary.body)
    assert body["error"] == "commands_rejected" and body["count"] == 997
    assert body["reasons"] == {"not_hex": 997}
    assert errors.pending == 0 and errors.flush(topic="t", now=10.0) is None


def test_coalescer_report_after_a_pause_says_how_many_were_left_out():
    errors = ErrorCoalescer(interval=1.0, burst=1)
    assert errors.refused(BAD, topic="t", size=1, now=0.0) is not None
    limited = Rejection("rate_limited", "too many")
    for _ in range(5):
        assert errors.refused(limited, topic="t", size=1, now=0.1) is None
    report = errors.refused(BAD, topic="t", size=1, now=2.0)
    assert report is not None and report.suppressed == 5
    body = json.loads(report.body)
    assert body["reason"] == "not_hex"
    assert body["suppressed"] == 5 and body["suppressed_reasons"] == {"rate_limited": 5}


def test_a_flood_makes_at_most_one_report_per_interval():
    errors = ErrorCoalescer(interval=1.0, burst=5)
    sent = 0
    for i in range(50_000):  # 10,000/s for 5 s, flushing as a loop would every 0.5 s
        now = i / 10_000
        sent += errors.refused(BAD, topic="t", size=1, now=now) is not None
        if i % 5000 == 0:
            sent += errors.flush(topic="t", now=now) is not None
    assert sent <= 5 + 5 + 1


def test_reporter_sends_the_held_back_summary_from_the_io_loop():
    sent: list[tuple[str, int, str]] = []
    done = threading.Event()

    def send(report, topic, size, correlation):
        sent.append((report.reason, report.suppressed, threading.current_thread().name))
        if report.reason == "summary":
            done.set()

    loop = IoLoop(name="refusal-test-io")
    loop.start()
    before = set(threading.enumerate())
    try:
        reporter = RefusalReporter(interval=0.2, burst=2, send=send, summary_topic="t",
                                   schedule=loop.call_later)
        caller = threading.current_thread().name
        for _ in range(10):
            reporter.refused(BAD, topic="t/SendCommand", size=3)
        assert sent == [("not_hex", 0, caller), ("not_hex", 0, caller)]
        assert not _started_since(before)  # no timer thread while it waits
        assert done.wait(10)  # no one flushed: the loop's timer did
        assert sent[-1] == ("summary", 8, "refusal-test-io")
        assert not _started_since(before)
        reporter.close()
    finally:
        loop.stop()


def test_a_closed_reporter_sends_no_summary():
    sent: list[str] = []
    scheduled: list[tuple[float, object]] = []

    class Handle:
        cancelled = False

        def cancel(self):
            self.cancelled = True

    handle = Handle()

    def schedule(delay, call):
        scheduled.append((delay, call))
        return handle

    reporter = RefusalReporter(interval=1.0, burst=1, send=lambda r, *_: sent.append(r.reason),
                               summary_topic="t", schedule=schedule)
    for _ in range(5):
        reporter.refused(BAD, topic="t", size=1)
    assert len(scheduled) == 1 and scheduled[0][0] == 1.0  # armed once, for one interval
    reporter.close()
    assert handle.cancelled
    scheduled[0][1]()  # a timer that fired anyway (cancel raced it): nothing sent
    assert sent == ["not_hex"]


def test_without_a_scheduler_the_next_refusal_carries_the_count():
    sent: list[tuple[str, int]] = []
    before = set(threading.enumerate())
    reporter = RefusalReporter(interval=0.1, burst=1, summary_topic="t",
                               send=lambda r, *_: sent.append((r.reason, r.suppressed)))
    for _ in range(4):
        reporter.refused(BAD, topic="t", size=1)
    assert not _started_since(before)  # nothing started to flush
    assert sent == [("not_hex", 0)]
    time.sleep(0.2)  # the interval passes (no timing asserted: only that it has passed)
    reporter.refused(BAD, topic="t", size=1)
    assert sent == [("not_hex", 0), ("not_hex", 3)]
    reporter.close()


def test_reports_in_full_name_their_command_summaries_do_not():
    errors = ErrorCoalescer(interval=1.0, burst=1)
    command = bytes.fromhex("AA00810482131008820400000000")  # a device response: refused
    report = errors.refused(Rejection("not_request", "x"), topic="t", size=14, now=0.0,
                            command=command.hex().encode())
    assert report is not None
    body = json.loads(report.body)
    assert (body["ref"], body["command_id"]) == ("13", "1008")
    assert errors.refused(BAD, topic="t", size=1, now=0.1, command=command) is None
    summary = errors.flush(topic="t", now=2.0)
    assert summary is not None and "ref" not in json.loads(summary.body)
