"""One reader, end to end: HID reports <-> MMS messages <-> its own MQTT session.

One thread per reader, ``hid-read[<path>]`` (``SessionLifecycle`` starts it): it opens the reader,
identifies it (writes get-serial/get-firmware and reads the responses itself), connects the
reader's MQTT session, then only reads reports, reassembles messages and hands each whole
message to the courier (the I/O loop takes what came since its last turn as one batch).

Commands go the other way without a thread of their own: the I/O loop's thread validates them
and runs the reader's ``CommandPipeline`` (one command at a time, response timer on the loop);
the blocking HID write runs on the process's shared ``HidWriter`` thread, so a wedged device
stalls neither the loop nor other readers, and the watchdog sees it (``writer_busy_since``).

How the session starts and ends (its threads, the transport's last user, the rescue of a
session stuck in the device) is ``SessionLifecycle``'s, in ``bridge.session_lifecycle``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final

import structlog

from bridge.command_intake import CommandIntake
from bridge.command_pipeline import CommandPipeline
from bridge.courier import Courier
from bridge.errors import DeviceGoneError, ProtocolError, TransportError
from bridge.hid_writer import HidWriter
from bridge.intake import Command, Rejection
from bridge.metrics import Metrics
from bridge.mms import FrameDropped, Message, MessageType, Reassembler, parse_message, safe_summary
from bridge.mqtt.link import InboundMessage, LinkOptions, MqttLink
from bridge.mqtt.loop import default_loop
from bridge.mqtt.topics import ReaderTopics
from bridge.reader_identity import (
    NO_SERIAL,
    STATUS_DISCONNECTED,
    IdentifyError,
    ReaderIdentity,
    identify,
    reader_link,
    status_publication,
)
from bridge.session_lifecycle import READ_EXIT_GRACE, SessionLifecycle
from bridge.session_options import ReaderObserver, SessionOptions
from bridge.transport import Transport

_log = structlog.get_logger("bridge.session")

# Messages held while the reader is being identified.
EARLY_MESSAGE_LIMIT: Final = 256
_DRAIN_LIMIT: Final = 64  # reports read before a hand-over, at most (a burst, not a stream)


class ReaderGone(Exception):  # noqa: N818 - internal control flow, never escapes the module
    """The reader vanished during identification."""


class ReaderSession(SessionLifecycle):
    """Keeps one open reader connected to MQTT until it goes away or we stop."""

    def __init__(
        self,
        transport: Transport,
        *,
        options: SessionOptions,
        link_options: LinkOptions,
        metrics: Metrics,
        courier: Courier,
        boot_id: str,
        next_seq: Callable[[str], int],
        on_identified: Callable[[ReaderSession], None] | None = None,
        before_connect: Callable[[ReaderSession], None] | None = None,
        observers: tuple[ReaderObserver, ...] = (),
        writer: HidWriter | None = None,
    ) -> None:
        self.transport = transport
        self.options = options
        self._link_options = link_options
        self._metrics = metrics
        self._courier = courier
        self._boot_id = boot_id
        self._next_seq = next_seq
        self._on_identified = on_identified
        self._before_connect = before_connect
        self._observers = observers
        self.info = transport.info
        self._log = _log.bind(path=self.info.path)
        super().__init__(transport, metrics, log=self._log, read_timeout=options.read_timeout,
                         loop=courier.loop if courier.loop is not None else default_loop())
        # A session on its own (tests, tools) brings its own writer and stops it at the end.
        self._own_writer = writer is None
        self._writer = writer if writer is not None else HidWriter(self._loop)
        self.identity: ReaderIdentity | None = None
        self.topics: ReaderTopics | None = None
        self.link: MqttLink | None = None
        self.connected_since: datetime | None = None
        self._reassembler = Reassembler(
            report_len=transport.report_len, max_message_size=options.max_message_size
        )
        self._pipeline = CommandPipeline(
            loop=self._loop, write=self._write_off_loop,
            response_timeout=options.command_timeout, capacity=options.command_queue_size,
            metrics=metrics, refuse=self._refuse_queued, answer=self._answer, log=self._log)
        self._intake = CommandIntake(
            pipeline=self._pipeline, metrics=metrics, max_message_size=options.max_message_size,
            rate=options.command_rate, burst=options.command_burst,
            error_interval=options.error_interval, error_burst=options.error_burst,
            absent=lambda: self.stopping.is_set() or self.gone.is_set(),
            publish_error=self._publish_error, log=lambda: self._log,
            schedule=self._loop.call_later)
        # What clients send, validated and queued (``CommandIntake.submit``), or refused.
        self.submit = self._intake.submit
        self.reject = self._intake.reject
        # The read thread's own state during identification (no other thread touches it).
        self._awaited: tuple[int, int] | None = None
        self._answer_box: Message | None = None
        self._serial_known = False
        self._early: list[tuple[bytes, Message | None]] = []
        self._handed = False  # enqueued without waking the I/O loop (the read thread's)
        self._types_seen: dict[str, int] = {}  # messages by type since the last count update
        self.read_heartbeat = time.monotonic()
        self.writer_limit = max(options.command_timeout, options.identify_timeout)

    # -- lifecycle (the rest is ``SessionLifecycle``'s) ---------------------------------------

    def _serve(self) -> None:
        """The read thread: open, identify, connect, then read until the end."""
        try:
            self.transport.open()
            identify_budget = (self.options.identify_timeout * (self.options.identify_attempts + 1)
                               + self.options.read_timeout + READ_EXIT_GRACE)
            overdue = self._loop.call_later(identify_budget, self._identify_overdue)
            try:
                self.identity = self._identify()
            finally:
                overdue.cancel()
            if self._before_connect is not None:
                # Waits (at most SESSION_STOP_TIMEOUT, the liveness limit) for this reader's
                # previous session to end; reports wait in the device's buffer meanwhile.
                self.read_heartbeat = time.monotonic()
                self._before_connect(self)
            if not self.stopping.is_set():
                self._connect_mqtt(self.identity)
                self._pipeline.start()
                self._read_loop()
        except ReaderGone:
            self._fail("reader unplugged during identification")
        except TransportError as exc:
            if self._fail(f"transport: {exc}"):
                self._metrics.reader_open_failures.labels("transport").inc()
                self._log.warning("reader_open_failed", error=str(exc))
        except IdentifyError as exc:
            if self._fail(str(exc)):
                self._metrics.reader_open_failures.labels("identify").inc()
                self._log.warning("reader_identify_failed", error=str(exc))

    def _identify_overdue(self) -> None:
        # The loop: identification should have ended by now, so the read thread is inside a
        # read that does not return. A write that does not return is left to the watchdog
        # (the session stays, busy): reopening the reader would strand one thread per retry.
        if self.identity is not None or self.finished.is_set():
            return
        if self.writer_busy_since is not None:
            return
        self._fail(NO_SERIAL if not self._serial_known
                   else "reader stopped answering during identification")
        self.stopping.set()
        self._rescue()

    def _close(self) -> None:
        self._pipeline.close()
        self._intake.close()
        if self.link is not None and self.topics is not None:
            if self.identity is not None:
                # Unacknowledged messages go back to the outbox (another carrier sends them).
                self._courier.detach(self.identity.serial, self.link)
            self.link.stop(final=[status_publication(
                self.topics, STATUS_DISCONNECTED, self.options.qos_status)])
        if self.identity is not None:
            self._metrics.reader_connected.labels(self.identity.serial).set(0)
            self._notify("reader_disconnected")
        if self._own_writer:
            self._writer.stop()
        self._handle.close_when_idle()
        if threading.current_thread() is self._threads[0]:
            self._reset_reassembler()
        self._log.info("reader_closed", reason="unplugged" if self.gone.is_set() else "stopped",
                       root=self.topics.root if self.topics else None)

    def _reset_reassembler(self) -> None:
        # The read thread's: a message cut short by the end is a framing error like any other.
        for event in self._reassembler.reset():
            if isinstance(event, FrameDropped):
                self._metrics.framing_error(event.reason.value)

    # -- identification (the read thread) -----------------------------------------------------

    def _identify(self) -> ReaderIdentity:
        def serial_known() -> None:
            self._serial_known = True

        return identify(self._request, self.info, attempts=self.options.identify_attempts,
                        prefix=self.options.prefix, friendly_names=self.options.friendly_names,
                        on_serial=serial_known)

    def _request(self, data: bytes) -> Message | None:
        """Write a request of our own and read until its response (never published)."""
        request = parse_message(data)
        self._awaited = (request.ref, request.command_id)
        self._answer_box = None
        try:
            if self.stopping.is_set():
                return None
            self._handle.write_message(data, _no_progress)
            deadline = time.monotonic() + self.options.identify_timeout
            while self._answer_box is None and not self.stopping.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._read_once(min(left, self.options.read_timeout))
        finally:
            self._awaited = None
        if self.gone.is_set():
            raise ReaderGone
        return self._answer_box

    def _connect_mqtt(self, identity: ReaderIdentity) -> None:
        self.topics = topics = ReaderTopics.for_root(identity.root)
        self._log = self._log.bind(root=identity.root, serial=identity.serial)
        self._pipeline.log = self._log
        self.connected_since = datetime.now(UTC)
        o = self.options
        link = reader_link(
            identity, topics, self.info,
            client_id=f"{o.client_id_prefix}-{o.host_id}-{identity.model}-{identity.serial}",
            host_id=o.host_id, qos_status=o.qos_status, since=self.connected_since,
            link_options=self._link_options, metrics=self._metrics, courier=self._courier,
            on_command=self._on_command)
        self._metrics.reader_connected.labels(identity.serial).set(1)
        self._metrics.reader_reconnects.labels(identity.serial)
        self._metrics.reader_info.labels(identity.serial, identity.model, identity.firmware).set(1)
        self._log.info("reader_identified", model=identity.model, firmware=identity.firmware)
        # The read thread itself publishes the messages that came during identification, in
        # their order, before it reads any more.
        self.link = link
        self._courier.attach(identity.serial, link)
        link.start()
        early, self._early = self._early, []
        for data, parsed in early:
            self._publish_device_message(data, parsed)
        self._hand_over()
        if self._on_identified is not None:
            self._on_identified(self)
        self._notify("reader_connected")

    def _notify(self, event: str, *args: bytes) -> None:
        for observer in self._observers:
            try:
                getattr(observer, event)(self, *args)
            except Exception:  # an observer bug must not take the reader down
                # Not ``event=``: structlog's first argument is the event (a TypeError here).
                self._log.exception("observer_failed", observer=type(observer).__name__,
                                    method=event)

    # -- device -> MQTT (the read thread) -----------------------------------------------------

    def _read_loop(self) -> None:
        timeout = self.options.read_timeout
        while not self.stopping.is_set() and self._read_once(timeout):
            pass

    def _read_once(self, timeout: float) -> bool:
        """Read a report (or time out), and whatever else is already there, and feed them;
        False once the reader is gone."""
        self.read_heartbeat = time.monotonic()
        drained = 0
        try:
            report = self.transport.read_report(timeout)
            # What is already there is read before the hand-over (reads that never wait), so
            # a burst costs the I/O loop one wake-up and one turn; never a wait to fill a
            # batch, and bounded so a streaming reader still hands over.
            while report is not None:
                self._feed(report)
                drained += 1
                report = self.transport.read_report(0) if drained < _DRAIN_LIMIT else None
        except (DeviceGoneError, TransportError) as exc:
            if not self.stopping.is_set():
                self._log.warning("reader_unplugged", error=str(exc))
            self.gone.set()
            self.stop()
            return False
        finally:
            if drained:
                self._metrics.report_in(drained)  # one counter update per burst
            if self._types_seen:
                for label, count in self._types_seen.items():
                    self._metrics.message("in", label, count)
                self._types_seen.clear()
            self._hand_over()
        return True

    def _hand_over(self) -> None:
        """Wake the I/O loop once for what was enqueued since the last hand-over."""
        if self._handed:
            self._handed = False
            self._courier.hand_over()

    def _feed(self, report: bytes) -> None:
        for event in self._reassembler.feed(report):
            if isinstance(event, FrameDropped):
                self._metrics.framing_error(event.reason.value)
                self._log.warning("framing_error", reason=event.reason.value,
                                  discarded_bytes=event.discarded_bytes)
            else:
                self._on_device_message(event.message)

    def _on_device_message(self, data: bytes) -> None:
        try:
            parsed: Message | None = parse_message(data)
        except ProtocolError as exc:
            # Still published: a consumer may understand what we do not; never lose data.
            parsed = None
            self._metrics.device_protocol_errors.labels(exc.reason).inc()
            self._log.warning("device_message_malformed", reason=exc.reason, length=len(data))
        if parsed is not None:
            label = _type_label(parsed)  # counted once per burst (``_read_once``)
            self._types_seen[label] = self._types_seen.get(label, 0) + 1
            if (self._awaited is not None
                    and parsed.message_type == MessageType.DEVICE_RESPONSE
                    and (parsed.ref, parsed.command_id) == self._awaited):
                self._answer_box = parsed  # our own request's: identification reads it
                return
        if self.link is None:
            # Before identification finishes; bounded so a chatty reader cannot grow it.
            if len(self._early) >= EARLY_MESSAGE_LIMIT:
                self._early.pop(0)
                self._log.warning("early_message_dropped", limit=EARLY_MESSAGE_LIMIT)
            self._early.append((data, parsed))
            return
        self._publish_device_message(data, parsed)

    def _publish_device_message(self, data: bytes, parsed: Message | None) -> None:
        assert self.link is not None and self.topics is not None and self.identity is not None
        payload = data.hex().upper().encode("ascii")
        properties: tuple[tuple[str, str], ...] = ()
        if self.link.v5:
            seq = self._next_seq(self.identity.serial)
            properties = (("boot_id", self._boot_id), ("seq", str(seq)))
        self._courier.enqueue(self.identity.serial, self.topics.mms_message, payload, properties,
                              wake=False)
        self._handed = True  # the read loop wakes the I/O loop once its burst is read
        if self._observers:
            self._notify("reader_message", payload)
        if parsed is None:
            return
        if self.options.log_messages:
            self._log.debug("reader_message", **safe_summary(parsed))
        self._pipeline.response(parsed, payload)  # the pending command's, if it matches

    # -- MQTT -> device -----------------------------------------------------------------------

    def _on_command(self, inbound: InboundMessage) -> None:
        self._intake.on_message(inbound, self.topics.send_command if self.topics else None)

    def _publish_error(self, body: bytes, correlation_data: bytes | None) -> None:
        if self.link is not None and self.topics is not None:
            self.link.publish(self.topics.error, body, qos=1, kind="error",
                              correlation_data=correlation_data)

    def _refuse_queued(self, rejection: Rejection, command: Command) -> None:
        self._intake.refuse_queued(rejection, command)

    def _answer(self, command: Command, payload: bytes) -> None:
        if command.response_topic and self.link is not None:
            self.link.publish(command.response_topic, payload, qos=1,
                              correlation_data=command.correlation_data, kind="response")

    def _write_off_loop(self, data: bytes, done: Callable[[Exception | None], None]) -> None:
        self._handle.write_on(self._writer, data, done)  # never on the I/O loop: it blocks


def _no_progress() -> None:
    """Identification writes on the read thread: nothing else waits behind them."""


_TYPE_LABELS: Final = {t: t.name.lower() for t in MessageType}


def _type_label(message: Message) -> str:
    return _TYPE_LABELS.get(message.message_type, "unknown")


__all__ = ["ReaderIdentity", "ReaderObserver", "ReaderSession", "SessionOptions"]
