"""HidWriter: every reader's HID writes on one thread, and a wedged write strands only itself."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from bridge.hid_writer import HidWriter, Progress
from bridge.mqtt.loop import IoLoop
from tests.integration.harness import wait_until

STALL = 0.05


@pytest.fixture
def writer(loop: IoLoop) -> Iterator[HidWriter]:
    shared = HidWriter(loop, stall_after=STALL)
    yield shared
    shared.stop()


def _recorder(done: list[tuple[str, str]], label: str) -> object:
    def job(progress: Progress) -> None:
        progress()
        done.append((label, threading.current_thread().name))
    return job


def test_jobs_run_in_order_on_one_thread(writer: HidWriter) -> None:
    done: list[tuple[str, str]] = []
    for label in "abcdef":
        writer.submit(_recorder(done, label))  # type: ignore[arg-type]
    assert wait_until(lambda: len(done) == 6, 10)
    assert [label for label, _ in done] == list("abcdef")
    assert {name for _, name in done} == {"hid-write"}
    assert len(writer.threads) == 1
    assert writer.abandoned_threads == 0


def test_a_stalled_job_leaves_its_thread_and_the_others_go_on(writer: HidWriter) -> None:
    entered, release = threading.Event(), threading.Event()
    stuck_thread: list[threading.Thread] = []

    def wedged(progress: Progress) -> None:
        progress()
        stuck_thread.append(threading.current_thread())
        entered.set()
        release.wait(60)

    done: list[tuple[str, str]] = []
    writer.submit(wedged)
    assert entered.wait(10)
    writer.submit(_recorder(done, "b"))  # type: ignore[arg-type]
    writer.submit(_recorder(done, "c"))  # type: ignore[arg-type]
    assert wait_until(lambda: len(done) == 2, 10)  # while the first write still blocks
    assert not release.is_set()
    assert [label for label, _ in done] == ["b", "c"]
    assert writer.abandoned_threads == 1
    assert writer.threads[0] is not stuck_thread[0]
    release.set()
    stuck_thread[0].join(10)
    assert not stuck_thread[0].is_alive()  # it ended once its write returned
    writer.submit(_recorder(done, "d"))  # type: ignore[arg-type]
    assert wait_until(lambda: len(done) == 3, 10)
    assert writer.abandoned_threads == 1


def test_a_long_job_with_nobody_waiting_keeps_its_thread(loop: IoLoop,
                                                          writer: HidWriter) -> None:
    entered, release = threading.Event(), threading.Event()

    def slow(progress: Progress) -> None:
        progress()
        entered.set()
        release.wait(60)

    writer.submit(slow)
    assert entered.wait(10)
    later = threading.Event()
    loop.call_later(4 * STALL, later.set)  # well past the stall limit
    assert later.wait(10)
    assert writer.abandoned_threads == 0
    release.set()


def test_a_failing_job_does_not_end_the_writer(writer: HidWriter) -> None:
    def broken(progress: Progress) -> None:
        raise ValueError("a bug in a job")

    done: list[tuple[str, str]] = []
    writer.submit(broken)
    writer.submit(_recorder(done, "after"))  # type: ignore[arg-type]
    assert wait_until(lambda: len(done) == 1, 10)


def test_stopped_writer_refuses_jobs(writer: HidWriter) -> None:
    writer.stop()
    assert writer.submit(lambda progress: None) is False
