"""One reader's commands, one at a time, driven by the I/O loop.

PROTOCOL.md §2.2: the device services one command at a time, so a command is written only
once the previous one was answered or timed out. The pipeline's state (the waiting commands,
the one pending command, its response timer) belongs to the I/O loop's thread; other threads
only hand things over:

- ``offer`` (any thread: the loop itself for MQTT, the WebSocket thread) queues a validated
  command, refusing it at once when the queue is full;
- the write goes to the shared ``HidWriter`` (a HID write blocks), which reports back with
  ``call_soon``;
- the read thread, which parses every device message anyway, hands a response that matches
  the pending command back with ``call_soon`` (``response``);
- the response timeout is an ``IoLoop.call_later`` timer, armed once the write is done.

No step waits or polls: each transition is an event on the loop.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Final

import structlog

from bridge.intake import Command, Rejection
from bridge.metrics import Metrics
from bridge.mms import Message, MessageType
from bridge.mqtt.loop import IoLoop, TimerHandle

WriteMessage = Callable[[bytes, Callable[[Exception | None], None]], None]
"""Writes one whole message off the loop; calls back (any thread) with the error, if any."""

EXPIRED: Final = Rejection("expired", "message expiry passed while queued")
WRITE_FAILED: Final = Rejection("reader_absent", "the reader went away while writing")


class CommandPipeline:
    """Queues a reader's commands and writes them one at a time, each until its response.

    Args:
        loop: the I/O loop that owns the pipeline's state.
        write: writes a message's reports off the loop (the shared HID writer).
        response_timeout: seconds to wait for a response once the command is written.
        capacity: commands that may wait (beside the pending one) before ``offer`` refuses.
        metrics: shared collectors (outbound message count, round-trip latency).
        refuse: reports a command accepted earlier and refused now (expired, write failed).
        answer: publishes a response for a command that asked for one (MQTT v5 response
            topic); called on the loop.
        log: the session's bound logger.
    """

    def __init__(
        self,
        *,
        loop: IoLoop,
        write: WriteMessage,
        response_timeout: float,
        capacity: int,
        metrics: Metrics,
        refuse: Callable[[Rejection, Command], None],
        answer: Callable[[Command, bytes], None],
        log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self._loop = loop
        self._write = write
        self._timeout = response_timeout
        self._capacity = capacity
        self._metrics = metrics
        self._refuse = refuse
        self._answer = answer
        self.log = log
        # Handed over from any thread: guarded by the lock, taken by the loop.
        self._waiting: deque[Command] = deque()
        self._lock = threading.Lock()
        self._closed = False
        # The loop's thread only.
        self._running = False
        self._pending: Command | None = None
        self._written = False
        self._answered = False
        self._timer: TimerHandle | None = None
        # Read (without a lock) by the read thread to skip responses nobody waits for; set
        # before the write starts, so the device cannot answer before it is set.
        self.pending_key: tuple[int, int] | None = None

    # -- any thread ----------------------------------------------------------------------------

    def offer(self, command: Command) -> bool:
        """Queue ``command``; False when ``capacity`` commands already wait (or closed)."""
        with self._lock:
            if self._closed or len(self._waiting) >= self._capacity:
                return False
            self._waiting.append(command)
        self._loop.call_soon(self._advance)
        return True

    def start(self) -> None:
        """The reader is identified: begin writing (commands offered before wait till now)."""
        self._loop.call_soon(self._begin)

    def close(self) -> None:
        """The session ends: waiting commands are dropped, the pending one is forgotten."""
        with self._lock:
            self._closed = True
            self._waiting.clear()
        self._loop.call_soon(self._end)

    def response(self, message: Message, payload: bytes) -> None:
        """A device response (read thread); matched against the pending command on the loop."""
        if (message.message_type == MessageType.DEVICE_RESPONSE
                and (message.ref, message.command_id) == self.pending_key):
            self._loop.call_soon(lambda: self._on_response(message, payload))

    # -- the loop's thread ---------------------------------------------------------------------

    def _begin(self) -> None:
        if not self._closed:
            self._running = True
            self._advance()

    def _end(self) -> None:
        self._running = False
        self._clear()

    def _advance(self) -> None:
        while self._running and self._pending is None:
            with self._lock:
                if not self._waiting:
                    return
                command = self._waiting.popleft()
            if command.expired():
                self._refuse(EXPIRED, command)
                continue
            self._pending = command
            self._written = self._answered = False
            self.pending_key = command.key
            self._write(command.data, self._written_callback(command))

    def _written_callback(self, command: Command) -> Callable[[Exception | None], None]:
        def written(error: Exception | None) -> None:  # the writer thread
            self._loop.call_soon(lambda: self._on_written(command, error))
        return written

    def _on_written(self, command: Command, error: Exception | None) -> None:
        if command is not self._pending:
            return  # the session ended meanwhile
        self._written = True
        if error is not None:
            if not self._answered:
                self._refuse(WRITE_FAILED, command)
            self._finish()
            return
        self._metrics.message("out", command.message.message_type.name.lower())
        if self._answered:  # the response overtook the writer's report
            self._finish()
            return
        self._timer = self._loop.call_later(self._timeout,
                                            lambda: self._on_timeout(command))

    def _on_response(self, message: Message, payload: bytes) -> None:
        command = self._pending
        if command is None or self._answered or command.key != (message.ref,
                                                                 message.command_id):
            return
        self._answered = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._metrics.command_latency.observe(time.monotonic() - command.received_at)
        if command.response_topic:
            self._answer(command, payload)
        if self._written:
            self._finish()

    def _on_timeout(self, command: Command) -> None:
        if command is not self._pending or self._answered:
            return
        self._timer = None
        self.log.warning("command_timeout", command_id=f"{command.key[1]:04X}",
                         ref=command.key[0])
        self._finish()

    def _finish(self) -> None:
        self._clear()
        self._advance()

    def _clear(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pending = None
        self.pending_key = None


__all__ = ["CommandPipeline", "WriteMessage"]
