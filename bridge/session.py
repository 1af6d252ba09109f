"""One reader, end to end: HID reports <-> MMS messages <-> its own MQTT session.

One thread per reader, ``hid-read[<path>]`` (strongly referenced here): it opens the reader,
identifies it (writes get-serial/get-firmware and reads the responses itself), connects the
reader's MQTT session, then only reads reports, reassembles messages and hands each whole
message to the courier (the I/O loop takes what came since its last turn as one batch).

Commands go the other way without a thread of their own: the I/O loop's thread validates them
and runs the reader's ``CommandPipeline`` (one command at a time, response timer on the loop);
the blocking HID write runs on the process's shared ``HidWriter`` thread, so a wedged device
stalls neither the loop nor other readers, and the watchdog sees it (``writer_busy_since``).

The transport is closed by whichever of its users (the read thread, a write in progress, the
session's shutdown) comes last: hidapi frees the device in ``hid_close``, so closing under a
read or a write is a use-after-free. A read or write that never returns must not keep the
session from ending either: a loop timer then ends it on a short-lived ``reader-stop`` thread
(``_rescue``), and the stuck thread closes the handle when it comes back.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, Protocol

import structlog

from bridge import __version__
from bridge.command_pipeline import CommandPipeline
from bridge.courier import Courier
from bridge.errors import DeviceGoneError, ProtocolError, TransportError
from bridge.hid_writer import HidWriter, Progress
from bridge.intake import Command, Rejection, clears_retained_command, validate_command
from bridge.metrics import Metrics
from bridge.mms import (
    FrameDropped,
    Message,
    MessageType,
    Reassembler,
    packetize,
    parse_message,
    safe_summary,
)
from bridge.mms import commands as mms_commands
from bridge.mqtt.link import InboundMessage, LinkOptions, MqttLink, Publication
from bridge.mqtt.loop import IoLoop, TimerHandle, default_loop
from bridge.mqtt.topics import ReaderTopics, model_segment, reader_root
from bridge.refusals import RefusalReporter
from bridge.throttle import ErrorReport, TokenBucket
from bridge.transport import Transport

_log = structlog.get_logger("bridge.session")

STATUS_CONNECTED: Final = b"connected"
STATUS_DISCONNECTED: Final = b"disconnected"
_IDENTIFY_REF: Final = 0xB5  # the reference MagTek's own device client uses (PROTOCOL.md §4)
_FIRMWARE_REF: Final = 0x02
# Messages held while the reader is being identified.
EARLY_MESSAGE_LIMIT: Final = 256
_READ_EXIT_GRACE: Final = 2.0  # seconds beyond ``read_timeout`` before a stuck thread is left
RATE_LIMITED: Final = Rejection(
    "rate_limited", "more commands than this reader takes (readers.command_rate); not run")


@dataclass(frozen=True, slots=True)
class SessionOptions:
    """Per-reader behaviour, built from the ``[topics]`` and ``[readers]`` config sections."""

    prefix: str = "MagTek/Device/"
    friendly_names: Mapping[str, str] = field(default_factory=dict)
    client_id_prefix: str = "magtek-bridge"
    host_id: str = "bridge"
    qos_status: int = 1
    read_timeout: float = 0.05
    max_message_size: int = 1 << 20
    command_timeout: float = 5.0
    identify_timeout: float = 2.0
    identify_attempts: int = 3
    command_queue_size: int = 32
    # Commands a reader takes from all its clients together (token bucket), and how its
    # refusals are reported: ``error_burst`` in full, then one summary per ``error_interval``.
    command_rate: float = 50.0
    command_burst: int = 100
    error_interval: float = 1.0
    error_burst: int = 5
    log_messages: bool = False


@dataclass(frozen=True, slots=True)
class ReaderIdentity:
    serial: str
    firmware: str
    model: str
    root: str


class ReaderObserver(Protocol):
    """Something beside MQTT that follows readers (the WebSocket endpoint, for one).

    Called on the session's own threads: implementations must return quickly and never block
    (queue the work). ``reader_message`` gets every device message, in order, as the uppercase
    hex payload published on ``MMSMessage``.
    """

    def reader_connected(self, session: ReaderSession) -> None: ...

    def reader_message(self, session: ReaderSession, payload: bytes) -> None: ...

    def reader_disconnected(self, session: ReaderSession) -> None: ...


class ReaderGone(Exception):  # noqa: N818 - internal control flow, never escapes the module
    """The reader vanished during identification."""


class ReaderSession:
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
        self._loop: IoLoop = courier.loop if courier.loop is not None else default_loop()
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
        # What clients publish is admitted and refused under this lock only (the I/O loop and
        # the WebSocket thread both submit); a refusal costs a counter, not a parse or a line.
        self._intake_lock = threading.Lock()
        self._bucket = TokenBucket(options.command_rate, options.command_burst)
        self._refusals = RefusalReporter(interval=options.error_interval,
                                         burst=options.error_burst, send=self._report_refusal,
                                         summary_topic="SendCommand")
        self._pipeline = CommandPipeline(
            loop=self._loop, write=self._write_off_loop,
            response_timeout=options.command_timeout, capacity=options.command_queue_size,
            metrics=metrics, refuse=self._refuse_queued, answer=self._answer, log=self._log)
        # The read thread's own state during identification (no other thread touches it).
        self._awaited: tuple[int, int] | None = None
        self._answer_box: Message | None = None
        self._serial_known = False
        self._early: list[tuple[bytes, Message | None]] = []
        self.stopping = threading.Event()
        self.gone = threading.Event()
        self.finished = threading.Event()
        self.failure: str | None = None
        self.read_heartbeat = time.monotonic()
        # When the report being written to this reader was handed to the device; None when no
        # write is in progress. Longer than ``writer_limit`` means a write that does not return.
        self.writer_busy_since: float | None = None
        self.writer_limit = max(options.command_timeout, options.identify_timeout)
        self._threads: list[threading.Thread] = []
        # Users of the transport (the read thread for its whole life, each write in progress);
        # the handle is closed once closing was asked for and the last user has left.
        self._transport_lock = threading.Lock()
        self._users = 0
        self._close_requested = False
        self._shutdown_claimed = False
        self._rescue_timer: TimerHandle | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self._users = 1  # the read thread, from before it starts (it opens the handle)
        thread = threading.Thread(target=self._run, name=f"hid-read[{self.info.path}]",
                                  daemon=True)
        self._threads.append(thread)
        thread.start()

    def stop(self) -> None:
        """Ask the session to end; ``finished`` is set once it has cleaned up."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        # The read thread notices within ``read_timeout``; if a wedged device keeps it inside
        # a read or a write, the loop ends the session without it.
        self._rescue_timer = self._loop.call_later(
            self.options.read_timeout + _READ_EXIT_GRACE, self._rescue)

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))

    @property
    def alive(self) -> bool:
        return not self.finished.is_set()

    def _run(self) -> None:
        """The read thread: open, identify, connect, then read until the end."""
        try:
            self.transport.open()
            identify_budget = (self.options.identify_timeout * (self.options.identify_attempts + 1)
                               + self.options.read_timeout + _READ_EXIT_GRACE)
            overdue = self._loop.call_later(identify_budget, self._identify_overdue)
            try:
                self.identity = self._identify()
            finally:
                overdue.cancel()
            if self._before_connect is not None:
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
        except _IdentifyError as exc:
            if self._fail(str(exc)):
                self._metrics.reader_open_failures.labels("identify").inc()
                self._log.warning("reader_identify_failed", error=str(exc))
        finally:
            if self._claim_shutdown():
                self._shutdown()
            self._reset_reassembler()
            self._leave_transport()

    def _fail(self, failure: str) -> bool:
        """Record why the session ends; False when the rescue already gave a reason."""
        if self.failure is not None:
            return False
        self.failure = failure
        return True

    def _identify_overdue(self) -> None:
        # The loop: identification should have ended by now, so the read thread is inside a
        # read that does not return. A write that does not return is left to the watchdog
        # (the session stays, busy): reopening the reader would strand one thread per retry.
        if self.identity is not None or self.finished.is_set():
            return
        if self.writer_busy_since is not None:
            return
        self._fail("reader did not answer the get-serial request" if not self._serial_known
                   else "reader stopped answering during identification")
        self.stopping.set()
        self._rescue()

    def _rescue(self) -> None:
        """The loop: end the session for a read thread stuck in the device (it blocks on the
        link and the courier, so on a short-lived thread of its own, never the loop's)."""
        if not self._claim_shutdown():
            return
        self._log.warning("reader_read_slow_to_stop")
        thread = threading.Thread(target=self._shutdown, name=f"reader-stop[{self.info.path}]",
                                  daemon=True)
        self._threads.append(thread)
        thread.start()

    def _claim_shutdown(self) -> bool:
        with self._transport_lock:
            claimed, self._shutdown_claimed = self._shutdown_claimed, True
        return not claimed

    def _shutdown(self) -> None:
        self.stopping.set()
        if self._rescue_timer is not None:
            self._rescue_timer.cancel()
        self._pipeline.close()
        self._refusals.close()
        if self.link is not None and self.topics is not None:
            if self.identity is not None:
                # Unacknowledged messages go back to the outbox (another carrier sends them).
                self._courier.detach(self.identity.serial, self.link)
            self.link.stop(final=[self._status(STATUS_DISCONNECTED)])
        if self.identity is not None:
            self._metrics.reader_connected.labels(self.identity.serial).set(0)
            self._notify("reader_disconnected")
        if self._own_writer:
            self._writer.stop()
        self._request_close()
        if threading.current_thread() is self._threads[0]:
            self._reset_reassembler()
        self._log.info("reader_closed", reason="unplugged" if self.gone.is_set() else "stopped",
                       root=self.topics.root if self.topics else None)
        self.finished.set()

    def _reset_reassembler(self) -> None:
        # The read thread's: a message cut short by the end is a framing error like any other.
        for event in self._reassembler.reset():
            if isinstance(event, FrameDropped):
                self._metrics.framing_error(event.reason.value)

    # -- the transport's users ----------------------------------------------------------------

    def _enter_transport(self) -> bool:
        with self._transport_lock:
            if self._close_requested:
                return False
            self._users += 1
            return True

    def _leave_transport(self) -> None:
        with self._transport_lock:
            self._users -= 1
            close = self._close_requested and self._users == 0
        if close:
            self.transport.close()

    def _request_close(self) -> None:
        with self._transport_lock:
            self._close_requested = True
            self._users += 1  # leaving below closes it when no one else is inside
        self._leave_transport()

    # -- identification (the read thread) -----------------------------------------------------

    def _identify(self) -> ReaderIdentity:
        serial = ""
        for _attempt in range(self.options.identify_attempts):
            response = self._request(mms_commands.get_serial_number(_IDENTIFY_REF))
            if response is not None and response.status is not None and response.status.ok:
                serial = mms_commands.parse_serial_number(response)
                break
        if not serial:
            raise _IdentifyError("reader did not answer the get-serial request")
        self._serial_known = True
        firmware = ""
        response = self._request(mms_commands.get_firmware_id(_FIRMWARE_REF))
        if response is not None and response.status is not None and response.status.ok:
            try:
                firmware = mms_commands.parse_firmware_id(response)
            except ProtocolError:
                firmware = ""
        model = model_segment(self.info.product) or "MMS"
        root = reader_root(
            self.options.prefix, model, serial, self.options.friendly_names.get(serial)
        )
        return ReaderIdentity(serial=serial, firmware=firmware, model=model, root=root)

    def _request(self, data: bytes) -> Message | None:
        """Write a request of our own and read until its response (never published)."""
        request = parse_message(data)
        self._awaited = (request.ref, request.command_id)
        self._answer_box = None
        try:
            if self.stopping.is_set():
                return None
            self._write_reports(data, _no_progress)
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
        self.topics = ReaderTopics.for_root(identity.root)
        self._log = self._log.bind(root=identity.root, serial=identity.serial)
        self._pipeline.log = self._log
        self.connected_since = datetime.now(UTC)
        o = self.options
        link = MqttLink(
            self._link_options,
            client_id=f"{o.client_id_prefix}-{o.host_id}-{identity.model}-{identity.serial}",
            name="reader",
            will=self._status(STATUS_DISCONNECTED),
            subscriptions=[(self.topics.send_command, 1)],
            births=[self._status(STATUS_CONNECTED), self._info_publication(identity)],
            on_message=self._on_command,
            metrics=self._metrics,
            log_context={"root": identity.root},
            on_published=self._courier.published,
            on_ready=self._courier.link_ready,
            on_taken_back=self._courier.taken_back,
            loop=self._courier.loop,
        )
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
        if self._on_identified is not None:
            self._on_identified(self)
        self._notify("reader_connected")

    def _notify(self, event: str, *args: bytes) -> None:
        for observer in self._observers:
            try:
                getattr(observer, event)(self, *args)
            except Exception:  # an observer bug must not take the reader down
                self._log.exception("observer_failed", observer=type(observer).__name__,
                                    event=event)

    def _status(self, payload: bytes) -> Publication:
        assert self.topics is not None
        return Publication(self.topics.status, payload, qos=self.options.qos_status, retain=True)

    def _info_publication(self, identity: ReaderIdentity) -> Publication:
        assert self.topics is not None
        since = self.connected_since or datetime.now(UTC)
        info = {
            "model": identity.model,
            "product": self.info.product,
            "serial": identity.serial,
            "firmware_id": identity.firmware,
            "vendor_id": f"0x{self.info.vendor_id:04X}",
            "product_id": f"0x{self.info.product_id:04X}",
            "bridge_version": __version__,
            "host_id": self.options.host_id,
            "connected_since": since.isoformat(timespec="seconds"),
            "root": identity.root,
        }
        return Publication(self.topics.info, json.dumps(info).encode(), qos=1, retain=True)

    # -- device -> MQTT (the read thread) -----------------------------------------------------

    def _read_loop(self) -> None:
        timeout = self.options.read_timeout
        while not self.stopping.is_set() and self._read_once(timeout):
            pass

    def _read_once(self, timeout: float) -> bool:
        """Read one report (or time out) and feed it; False once the reader is gone."""
        self.read_heartbeat = time.monotonic()
        try:
            report = self.transport.read_report(timeout)
        except (DeviceGoneError, TransportError) as exc:
            if not self.stopping.is_set():
                self._log.warning("reader_unplugged", error=str(exc))
            self.gone.set()
            self.stop()
            return False
        if report is not None:
            # Each message goes to the courier as soon as it is whole; never a wait to fill a
            # batch. Whatever arrives before the I/O loop's next turn is its batch (one
            # wake-up per turn, not per message: ``IoLoop.wake``).
            self._metrics.report_in()
            self._feed(report)
        return True

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
            self._metrics.message("in", _type_label(parsed))
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
        self._courier.enqueue(self.identity.serial, self.topics.mms_message, payload, properties)
        if self._observers:
            self._notify("reader_message", payload)
        if parsed is None:
            return
        if self.options.log_messages:
            self._log.debug("reader_message", **safe_summary(parsed))
        self._pipeline.response(parsed, payload)  # the pending command's, if it matches

    # -- MQTT -> device -----------------------------------------------------------------------

    def _on_command(self, inbound: InboundMessage) -> None:
        if self.topics is not None and inbound.topic != self.topics.send_command:
            # Not what we subscribed to (the demo's embedded broker has been seen handing a
            # reader session another client's retained message): not a command for us.
            self._log.debug("unexpected_topic_ignored", topic=inbound.topic)
            return
        if clears_retained_command(inbound.payload):
            self._log.debug("retained_command_cleared", topic=inbound.topic)
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
            self.reject(result, topic=inbound.topic, size=len(inbound.payload))

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
        """Validate a command from any channel and queue it for the reader.

        A ``Rejection`` is counted here; reporting it is the caller's job, on its own channel
        (MQTT ``Error`` topic, WebSocket error frame). Nothing rejected reaches the reader.
        """
        now = time.monotonic() if received_at is None else received_at
        with self._intake_lock:
            admitted = self._bucket.take(now)
        result: Command | Rejection = RATE_LIMITED
        if admitted:
            result = validate_command(
                payload,
                max_size=self.options.max_message_size,
                retained=retained,
                received_at=now,
                expiry_interval=expiry_interval,
                response_topic=response_topic,
                correlation_data=correlation_data,
            )
        if isinstance(result, Command) and (self.stopping.is_set() or self.gone.is_set()):
            result = Rejection("reader_absent", "the reader is not connected")
        if isinstance(result, Command) and not self._pipeline.offer(result):
            result = Rejection("busy", "too many commands waiting for this reader")
        if isinstance(result, Rejection):
            self._metrics.command_rejected(result.reason)
        else:
            self._metrics.command_accepted()
        return result

    def reject(self, rejection: Rejection, *, topic: str, size: int) -> None:
        """Report a refused command on ``<root>/Error`` and in the log (counted by the caller).

        Coalesced: the first few in full, then one report per interval saying how many more
        were refused, so a flood of bad commands costs neither the broker link nor the log.
        """
        self._refusals.refused(rejection, topic=topic, size=size)

    def _report_refusal(self, report: ErrorReport, topic: str | None, size: int,
                        correlation_data: bytes | None) -> None:
        self._log.warning("command_rejected", reason=report.reason, detail=report.detail,
                          topic=topic, size=size, suppressed=report.suppressed)
        if self.link is None or self.topics is None:
            return
        self.link.publish(self.topics.error, report.body, qos=1, kind="error")

    def _refuse_queued(self, rejection: Rejection, command: Command) -> None:
        # Accepted earlier, refused now: counted as rejected as well.
        self._metrics.command_rejected(rejection.reason)
        self.reject(rejection, topic="SendCommand", size=len(command.data))

    def _answer(self, command: Command, payload: bytes) -> None:
        if command.response_topic and self.link is not None:
            self.link.publish(command.response_topic, payload, qos=1,
                              correlation_data=command.correlation_data, kind="response")

    def _write_off_loop(self, data: bytes, done: Callable[[Exception | None], None]) -> None:
        """The pipeline's writes: on the shared writer thread, never on the I/O loop."""
        def job(progress: Progress) -> None:
            error: Exception | None = None
            if not self._enter_transport():
                done(TransportError("the reader is closing"))
                return
            try:
                self._write_reports(data, progress)
            except TransportError as exc:
                error = exc
            finally:
                self._leave_transport()
            done(error)

        self._writer.submit(job)

    def _write_reports(self, data: bytes, progress: Progress) -> None:
        """Write one whole message; ``writer_busy_since`` shows a report the device holds."""
        reports = packetize(data, self.transport.report_len)
        try:
            for report in reports:
                progress()
                self.writer_busy_since = time.monotonic()
                self.transport.write_report(report)
        finally:
            self.writer_busy_since = None
        self._metrics.report_out(len(reports))


def _no_progress() -> None:
    """Identification writes on the read thread: nothing else waits behind them."""


class _IdentifyError(Exception):
    pass


_TYPE_LABELS: Final = {t: t.name.lower() for t in MessageType}


def _type_label(message: Message) -> str:
    return _TYPE_LABELS.get(message.message_type, "unknown")


__all__ = ["ReaderIdentity", "ReaderObserver", "ReaderSession", "SessionOptions"]
