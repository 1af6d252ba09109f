"""What clients send a reader, admitted or refused (MQTT ``SendCommand``, WebSocket).

Admission is cheap and happens on the sender's thread (the I/O loop for MQTT, the WebSocket
thread): a token bucket across all the reader's clients, then ``validate_command``, then the
reader's ``CommandPipeline`` (refused as ``busy`` when its queue is full). A refusal is
counted at once and reported through the ``RefusalReporter``: the first few in full on the
reader's ``Error`` topic and in the log, then one summary per interval.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Final

import structlog

from bridge.command_pipeline import CommandPipeline
from bridge.intake import Command, Rejection, clears_retained_command, validate_command
from bridge.metrics import Metrics
from bridge.mqtt.link import InboundMessage
from bridge.refusals import RefusalReporter, Schedule
from bridge.throttle import ErrorReport, TokenBucket

RATE_LIMITED: Final = Rejection(
    "rate_limited", "more commands than this reader takes (readers.command_rate); not run")
READER_ABSENT: Final = Rejection("reader_absent", "the reader is not connected")
BUSY: Final = Rejection("busy", "too many commands waiting for this reader")


class CommandIntake:
    """Admits one reader's commands into its pipeline and reports what it refuses.

    Args:
        pipeline: where admitted commands wait for the reader.
        metrics: shared collectors.
        max_message_size: the largest MMS message relayed.
        rate, burst: the token bucket shared by all the reader's clients.
        error_interval, error_burst: refusals reported in full, then summarised.
        absent: True once the reader is going away (commands are refused, not queued).
        publish_error: publishes a refusal report on the reader's ``Error`` topic (or drops
            it while the reader has no MQTT session).
        log: returns the session's current bound logger.
    """

    def __init__(
        self,
        *,
        pipeline: CommandPipeline,
        metrics: Metrics,
        max_message_size: int,
        rate: float,
        burst: int,
        error_interval: float,
        error_burst: int,
        absent: Callable[[], bool],
        publish_error: Callable[[bytes, bytes | None], None],
        log: Callable[[], structlog.typing.FilteringBoundLogger],
        schedule: Schedule | None = None,
    ) -> None:
        self._pipeline = pipeline
        self._metrics = metrics
        self._max_size = max_message_size
        self._absent = absent
        self._publish_error = publish_error
        self._log = log
        # Several threads submit; only the bucket needs the lock (a refusal costs a counter).
        self._lock = threading.Lock()
        self._bucket = TokenBucket(rate, burst)
        # Summaries of a flood are sent from the I/O loop (``IoLoop.call_later``).
        self._refusals = RefusalReporter(interval=error_interval, burst=error_burst,
                                         send=self._report, summary_topic="SendCommand",
                                         schedule=schedule)

    def close(self) -> None:
        self._refusals.close()

    def on_message(self, inbound: InboundMessage, send_command_topic: str | None) -> None:
        """A message on the reader's ``SendCommand`` subscription (the I/O loop)."""
        if send_command_topic is not None and inbound.topic != send_command_topic:
            # Not what we subscribed to (the demo's embedded broker has been seen handing a
            # reader session another client's retained message): not a command for us.
            self._log().debug("unexpected_topic_ignored", topic=inbound.topic)
            return
        if clears_retained_command(inbound.payload):
            self._log().debug("retained_command_cleared", topic=inbound.topic)
            return
        result = self.submit(
            inbound.payload,
            retained=inbound.retain,
            received_at=inbound.received_at,
            expiry_interval=inbound.expiry_interval,
            response_topic=inbound.response_topic,
            correlation_data=inbound.correlation_data,
        )
        if isinstance(result, Rejection):
            self.reject(result, topic=inbound.topic, size=len(inbound.payload),
                        command=inbound.payload, correlation_data=inbound.correlation_data)

    def submit(
        self,
        payload: bytes,
        *,
        retained: bool = False,
        received_at: float | None = None,
        expiry_interval: int | None = None,
        response_topic: str | None = None,
        correlation_data: bytes | None = None,
    ) -> Command | Rejection:
        """Validate a command from any channel and queue it for the reader (counted here;
        reporting a ``Rejection`` is the caller's job, on its own channel)."""
        now = time.monotonic() if received_at is None else received_at
        with self._lock:
            admitted = self._bucket.take(now)
        result: Command | Rejection = RATE_LIMITED
        if admitted:
            result = validate_command(
                payload,
                max_size=self._max_size,
                retained=retained,
                received_at=now,
                expiry_interval=expiry_interval,
                response_topic=response_topic,
                correlation_data=correlation_data,
            )
        if isinstance(result, Command) and self._absent():
            result = READER_ABSENT
        if isinstance(result, Command) and not self._pipeline.offer(result):
            result = BUSY
        if isinstance(result, Rejection):
            self._metrics.command_rejected(result.reason)
        else:
            self._metrics.command_accepted()
        return result

    def reject(self, rejection: Rejection, *, topic: str, size: int,
               command: bytes | None = None, correlation_data: bytes | None = None) -> None:
        """Report a refused command on ``<root>/Error`` and in the log (counted by the caller).

        Coalesced: the first few in full, then one report per interval saying how many more
        were refused, so a flood of bad commands costs neither the broker link nor the log.
        A report in full names the command (``ref``, ``command_id``) when it was readable and
        echoes its MQTT v5 correlation data, so its sender can tell it from others'.
        """
        self._refusals.refused(rejection, topic=topic, size=size, command=command,
                               correlation_data=correlation_data)

    def refuse_queued(self, rejection: Rejection, command: Command) -> None:
        """A command accepted earlier and refused now (expired, write failed): counted as
        rejected as well."""
        self._metrics.command_rejected(rejection.reason)
        self.reject(rejection, topic="SendCommand", size=len(command.data), command=command.data,
                    correlation_data=command.correlation_data)

    def _report(self, report: ErrorReport, topic: str | None, size: int,
                correlation_data: bytes | None) -> None:
        self._log().warning("command_rejected", reason=report.reason, detail=report.detail,
                            topic=topic, size=size, suppressed=report.suppressed)
        self._publish_error(report.body, correlation_data)


__all__ = ["BUSY", "RATE_LIMITED", "READER_ABSENT", "CommandIntake"]
