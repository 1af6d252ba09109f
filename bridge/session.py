"""One reader, end to end: HID reports <-> MMS messages <-> its own MQTT session.

Threads (each named after the reader and strongly referenced here):
- ``reader[<path>]`` runs ``run()``: open, identify, connect MQTT, then write commands one
  whole message at a time, waiting for each response (PROTOCOL.md §2.2: the device services one
  command at a time), until the reader goes away or the bridge stops. It sleeps on a queue and
  on events, never polls. It is its own thread because a HID write blocks and a wedged device
  may block it for good: that must stall neither the other readers nor the I/O loop (and the
  watchdog sees it: ``writer_busy_since``).
- ``hid-read[<path>]`` only reads reports and reassembles messages, and hands each whole
  message to the courier (the I/O loop takes what came since its last turn as one batch).
The I/O loop's thread (``bridge.mqtt.loop``) validates inbound commands and queues them
(bounded) for the writer; it also owns the outboxes and every MQTT connection.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, Protocol

import structlog

from bridge import __version__
from bridge.courier import Courier
from bridge.errors import DeviceGoneError, ProtocolError, TransportError
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
from bridge.mqtt.topics import ReaderTopics, model_segment, reader_root
from bridge.refusals import RefusalReporter
from bridge.throttle import ErrorReport, TokenBucket
from bridge.transport import Transport

_log = structlog.get_logger("bridge.session")

STATUS_CONNECTED: Final = b"connected"
STATUS_DISCONNECTED: Final = b"disconnected"
_IDENTIFY_REF: Final = 0xB5  # the reference MagTek's own device client uses (PROTOCOL.md §4)
_FIRMWARE_REF: Final = 0x02
_STOP: Final = object()
# Messages held while the reader is being identified.
EARLY_MESSAGE_LIMIT: Final = 256  # wakes the writer
_DRAIN_LIMIT: Final = 64  # reports read before a hand-over, at most (a burst, not a stream)
_READ_EXIT_GRACE: Final = 2.0  # seconds beyond ``read_timeout`` to wait for the read thread
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
        self.identity: ReaderIdentity | None = None
        self.topics: ReaderTopics | None = None
        self.link: MqttLink | None = None
        self.connected_since: datetime | None = None
        self._reassembler = Reassembler(
            report_len=transport.report_len, max_message_size=options.max_message_size
        )
        self._commands: queue.Queue[object] = queue.Queue(maxsize=options.command_queue_size)
        # What clients publish is admitted and refused under this lock only (the I/O loop's
        # thread and the WebSocket thread both submit); a refusal costs a counter, not a parse
        # or a line.
        self._intake_lock = threading.Lock()
        self._bucket = TokenBucket(options.command_rate, options.command_burst)
        loop = courier.loop  # summaries of a flood are sent from the I/O loop
        self._refusals = RefusalReporter(interval=options.error_interval,
                                         burst=options.error_burst, send=self._report_refusal,
                                         summary_topic="SendCommand",
                                         schedule=loop.call_later if loop is not None else None)
        self._pending: dict[tuple[int, int], Command] = {}
        self._pending_lock = threading.Lock()
        self._response_seen = threading.Event()  # set by the read thread or by stop()
        self._write_lock = threading.Lock()
        self._waiter: tuple[tuple[int, int], threading.Event, list[Message]] | None = None
        self._early: list[tuple[bytes, Message | None]] = []
        self._handed = False  # enqueued without waking the I/O loop (the read thread's)
        self._publish_lock = threading.Lock()
        self.stopping = threading.Event()
        self.gone = threading.Event()
        self.finished = threading.Event()
        self.failure: str | None = None
        self.read_heartbeat = time.monotonic()
        # When the writer took the command (or request) it is busy with; None while it waits
        # for one. Busy longer than ``writer_limit`` means a write that does not return.
        self.writer_busy_since: float | None = None
        self.writer_limit = max(options.command_timeout, options.identify_timeout)
        self._threads: list[threading.Thread] = []
        # hidapi frees the device in ``hid_close``: closing while the read thread sits in
        # ``hid_read_timeout`` is a use-after-free. The handle is closed by whichever of
        # ``_shutdown`` and the read thread comes last, decided under this lock.
        self._transport_lock = threading.Lock()
        self._reading = False
        self._close_pending = False

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        thread = threading.Thread(target=self.run, name=f"reader[{self.info.path}]", daemon=True)
        self._threads.append(thread)
        thread.start()

    def stop(self) -> None:
        """Ask the session to end; ``finished`` is set once it has cleaned up."""
        self.stopping.set()
        self._wake_writer()
        self._interrupt_waits()

    def _interrupt_waits(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            waiter[1].set()
        self._response_seen.set()

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))

    @property
    def alive(self) -> bool:
        return not self.finished.is_set()

    def run(self) -> None:
        try:
            self.transport.open()
            reader = threading.Thread(
                target=self._read_thread, name=f"hid-read[{self.info.path}]", daemon=True
            )
            self._threads.append(reader)
            with self._transport_lock:
                self._reading = True
            reader.start()
            self.identity = self._identify()
            if self._before_connect is not None:
                self._before_connect(self)
            self._connect_mqtt(self.identity)
            self._write_loop()
        except ReaderGone:
            self.failure = "reader unplugged during identification"
        except TransportError as exc:
            self.failure = f"transport: {exc}"
            self._metrics.reader_open_failures.labels("transport").inc()
            self._log.warning("reader_open_failed", error=str(exc))
        except _IdentifyError as exc:
            self.failure = str(exc)
            self._metrics.reader_open_failures.labels("identify").inc()
            self._log.warning("reader_identify_failed", error=str(exc))
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        self.stopping.set()
        self._refusals.close()
        if self.link is not None and self.topics is not None:
            if self.identity is not None:
                # Unacknowledged messages go back to the outbox (another carrier sends them).
                self._courier.detach(self.identity.serial, self.link)
            self.link.stop(final=[self._status(STATUS_DISCONNECTED)])
        if self.identity is not None:
            self._metrics.reader_connected.labels(self.identity.serial).set(0)
            self._notify("reader_disconnected")
        self._close_transport()
        for event in self._reassembler.reset():
            if isinstance(event, FrameDropped):
                self._metrics.framing_error(event.reason.value)
        self._log.info("reader_closed", reason="unplugged" if self.gone.is_set() else "stopped",
                       root=self.topics.root if self.topics else None)
        self.finished.set()

    def _close_transport(self) -> None:
        """Close the handle once no thread is inside ``read_report``, never during a read."""
        readers = [t for t in self._threads if t.name.startswith("hid-read[")]
        for reader in readers:
            # A read returns within ``read_timeout``; the margin covers a loaded machine.
            reader.join(self.options.read_timeout + _READ_EXIT_GRACE)
        with self._transport_lock:
            if self._reading:
                # Still inside a read: the read thread closes the handle when it leaves.
                self._close_pending = True
                self._log.warning("reader_read_slow_to_stop")
                return
        self.transport.close()

    def _read_thread(self) -> None:
        try:
            self._read_loop()
        finally:
            with self._transport_lock:
                self._reading = False
                close = self._close_pending
            if close:
                self.transport.close()

    # -- identification -----------------------------------------------------------------------

    def _identify(self) -> ReaderIdentity:
        serial = ""
        for _attempt in range(self.options.identify_attempts):
            response = self._request(mms_commands.get_serial_number(_IDENTIFY_REF))
            if response is not None and response.status is not None and response.status.ok:
                serial = mms_commands.parse_serial_number(response)
                break
        if not serial:
            raise _IdentifyError("reader did not answer the get-serial request")
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
        """Write a request of our own and wait for its response (never published)."""
        request = parse_message(data)
        done = threading.Event()
        box: list[Message] = []
        self._waiter = ((request.ref, request.command_id), done, box)
        self.writer_busy_since = time.monotonic()
        try:
            if self.stopping.is_set():  # stop() may have run before the waiter was set
                if self.gone.is_set():
                    raise ReaderGone
                return None
            self._write_message(data)
            done.wait(self.options.identify_timeout)  # stop() and unplug set it too
            if self.gone.is_set():
                raise ReaderGone
            return box[0] if box else None
        finally:
            self._waiter = None
            self.writer_busy_since = None

    def _connect_mqtt(self, identity: ReaderIdentity) -> None:
        self.topics = ReaderTopics.for_root(identity.root)
        self._log = self._log.bind(root=identity.root, serial=identity.serial)
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
        # The read thread publishes directly once ``self.link`` is set: set it under the lock,
        # after the early messages, so they keep their place in the order.
        with self._publish_lock:
            self.link = link
            self._courier.attach(identity.serial, link)
            link.start()
            early, self._early = self._early, []
            for data, parsed in early:
                self._publish_device_message(data, parsed)
            if early:
                self._courier.hand_over()
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

    # -- device -> MQTT -----------------------------------------------------------------------

    def _read_loop(self) -> None:
        timeout = self.options.read_timeout
        transport = self.transport
        while not self.stopping.is_set():
            self.read_heartbeat = time.monotonic()
            try:
                report = transport.read_report(timeout)
                # What is already there is read before the hand-over (reads that never wait),
                # so a burst costs the I/O loop one wake-up and one turn; never a wait to
                # fill a batch, and bounded so a streaming reader still hands over.
                drained = 0
                try:
                    while report is not None:
                        self._feed(report)
                        drained += 1
                        report = transport.read_report(0) if drained < _DRAIN_LIMIT else None
                finally:
                    if drained:
                        self._metrics.report_in(drained)  # one counter update per burst
            except (DeviceGoneError, TransportError) as exc:
                if not self.stopping.is_set():
                    self._log.warning("reader_unplugged", error=str(exc))
                self.gone.set()
                self.stop()
                return
            finally:
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
            self._metrics.message("in", _type_label(parsed))
            waiter = self._waiter
            if (
                waiter is not None
                and parsed.message_type == MessageType.DEVICE_RESPONSE
                and (parsed.ref, parsed.command_id) == waiter[0]
            ):
                waiter[2].append(parsed)
                waiter[1].set()
                return
        with self._publish_lock:
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
        if parsed.message_type == MessageType.DEVICE_RESPONSE:
            self._match_response(parsed, payload)

    def _match_response(self, response: Message, payload: bytes) -> None:
        with self._pending_lock:
            command = self._pending.pop((response.ref, response.command_id), None)
        if command is None:
            return
        self._metrics.command_latency.observe(time.monotonic() - command.received_at)
        if command.response_topic and self.link is not None:
            self.link.publish(command.response_topic, payload, qos=1,
                              correlation_data=command.correlation_data, kind="response")
        self._response_seen.set()  # wakes the writer at once

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
        if isinstance(result, Command):
            try:
                self._commands.put_nowait(result)
            except queue.Full:
                result = Rejection("busy", "too many commands waiting for this reader")
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

    def _report_refusal(self, report: ErrorReport, topic: str | None, size: int,
                        correlation_data: bytes | None) -> None:
        self._log.warning("command_rejected", reason=report.reason, detail=report.detail,
                          topic=topic, size=size, suppressed=report.suppressed)
        if self.link is None or self.topics is None:
            return
        self.link.publish(self.topics.error, report.body, qos=1, kind="error",
                          correlation_data=correlation_data)

    def _refuse_queued(self, rejection: Rejection, command: Command) -> None:
        # Accepted earlier, refused now: counted as rejected as well.
        self._metrics.command_rejected(rejection.reason)
        self.reject(rejection, topic="SendCommand", size=len(command.data), command=command.data,
                    correlation_data=command.correlation_data)

    def _wake_writer(self) -> None:
        # When the queue is full the writer is busy and polls ``stopping`` anyway.
        with contextlib.suppress(queue.Full):
            self._commands.put_nowait(_STOP)

    def _write_loop(self) -> None:
        while not self.stopping.is_set():
            item = self._commands.get()  # stop() queues a wake-up
            if not isinstance(item, Command) or self.stopping.is_set():
                continue
            self.writer_busy_since = time.monotonic()
            try:
                self._write_command(item)
            finally:
                self.writer_busy_since = None

    def _write_command(self, item: Command) -> None:
        if item.expired():
            self._refuse_queued(Rejection("expired", "message expiry passed while queued"), item)
            return
        self._response_seen.clear()
        with self._pending_lock:
            self._pending[item.key] = item
        try:
            self._write_message(item.data)
        except TransportError:
            with self._pending_lock:
                self._pending.pop(item.key, None)
            self._refuse_queued(
                Rejection("reader_absent", "the reader went away while writing"), item)
            return
        self._metrics.message("out", _type_label(item.message))
        self._wait_for_response(item)

    def _wait_for_response(self, command: Command) -> None:
        deadline = time.monotonic() + self.options.command_timeout
        while not self.stopping.is_set():
            with self._pending_lock:
                if command.key not in self._pending:
                    return
            left = deadline - time.monotonic()
            if left <= 0:
                with self._pending_lock:
                    self._pending.pop(command.key, None)
                self._log.warning("command_timeout", command_id=f"{command.key[1]:04X}",
                                  ref=command.key[0])
                return
            # Set by the read thread for any matched response (then re-checked) or by stop().
            self._response_seen.wait(left)
            self._response_seen.clear()

    def _write_message(self, data: bytes) -> None:
        """Write one whole message; reports of two messages never interleave."""
        reports = packetize(data, self.transport.report_len)
        with self._write_lock:
            for report in reports:
                self.transport.write_report(report)
        self._metrics.report_out(len(reports))


class _IdentifyError(Exception):
    pass


_TYPE_LABELS: Final = {t: t.name.lower() for t in MessageType}


def _type_label(message: Message) -> str:
    return _TYPE_LABELS.get(message.message_type, "unknown")


__all__ = ["ReaderIdentity", "ReaderObserver", "ReaderSession", "SessionOptions"]
