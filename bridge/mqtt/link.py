"""One MQTT session, wrapped: our connect sequence, will, reconnect policy and publishing.

Each reader gets its own ``MqttLink`` because a last will belongs to one connection and every
reader needs its own retained ``Status=disconnected`` will (PROTOCOL.md §6.1). Every link of
the process is driven by one ``IoLoop`` thread: packets come from ``bridge.mqtt.packets`` (our
codec) and go through a ``bridge.mqtt.wire.Connection`` (non-blocking socket). Only opening a
connection (TCP, TLS handshake, CONNECT) blocks: it runs on the loop's connector thread.
Callbacks run on the loop's thread and must stay short.

Nothing is re-sent across connections: what was in flight when a connection ended is the
owner's to send again (``on_taken_back``: the courier re-checks the time-to-live and re-sends
it marked replayed). Reconnects wait for the project's jittered ``Backoff`` between
``reconnect_min_delay`` and ``reconnect_max_delay``, exactly.

On every successful CONNACK the link subscribes first and publishes its "birth" messages only
once the SUBACK has arrived, so a consumer that reacts to ``connected`` can never lose its first
command (MagTek's browser client announces before subscribing; PROTOCOL.md §6.1).
"""

from __future__ import annotations

import contextlib
import itertools
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Final, Literal

import structlog

from bridge.backoff import Backoff
from bridge.metrics import Metrics
from bridge.mqtt import packets
from bridge.mqtt.encoding import (
    describe_tls_failure,
    encode_publish_properties,
    publish_packet_size,
)
from bridge.mqtt.loop import IoLoop, default_loop
from bridge.mqtt.options import (
    InboundMessage,
    LinkOptions,
    Publication,
    TlsOptions,
    failure_reason,
)
from bridge.mqtt.wire import Connection, ConnectionClosed, open_socket

_log = structlog.get_logger("bridge.mqtt")

# How long stop() waits for the final publishes (retained "disconnected") to be acknowledged.
STOP_PUBLISH_TIMEOUT: Final = 3.0
_HELD_LIMIT: Final = 1000  # publishes held while not connected (oldest dropped beyond)
_TOPIC_CACHE: Final = 4096  # encoded topic names kept (a reader publishes to a handful)
_READ: Final = 1  # selectors.EVENT_READ
_WRITE: Final = 2  # selectors.EVENT_WRITE
_NO_PROPERTIES: Final = b"\x00"

_link_tokens = itertools.count(1)

MessageHandler = Callable[[InboundMessage], None]
# (link, mid, failure reason or None) once the broker acknowledged a QoS>0 publish.
PublishedHandler = Callable[["MqttLink", int, str | None], None]
_Held = tuple[str, bytes, int, bool, tuple[tuple[str, str], ...], bytes | None, str, int | None]


class MqttLink:
    """A broker session with our connect sequence, will and reconnect policy.

    Args:
        options: broker address, protocol, credentials, TLS, reconnect delays.
        client_id: unique per session.
        name: ``"bridge"`` or ``"reader"``; the metric label and log context.
        will: published by the broker if we vanish without a clean DISCONNECT.
        subscriptions: (topic filter, qos) made on every connect, before the births.
        births: published after the subscriptions are acknowledged, on every connect.
        on_message: called on the I/O loop's thread for every inbound message.
        metrics: where to count; optional for CLI tools.
        on_published: a QoS>0 publish was acknowledged (I/O loop's thread).
        on_ready: connected, subscribed, births sent (I/O loop's thread).
        on_taken_back: a connection ended; what was in flight on it is the owner's again.
        loop: the I/O loop that drives it (default: the process's own).
        session_expiry: 0 (default) starts a clean session on every connect; N > 0 keeps
            the session (subscriptions, QoS 1 messages queued while we are away) for N
            seconds after a disconnect, across process restarts (MQTT v5: clean start off
            and Session Expiry Interval N; 3.1.1: clean session off, kept as the broker's
            configuration says).
        manual_ack: a QoS 1 message is acknowledged when the handler calls its ``ack``
            (after the work is done), not when the handler returns; acknowledgements still
            go out in the order the messages came (MQTT §4.6).
    """

    def __init__(
        self,
        options: LinkOptions,
        *,
        client_id: str,
        name: str = "reader",
        will: Publication | None = None,
        subscriptions: Sequence[tuple[str, int]] = (),
        births: Sequence[Publication] = (),
        on_message: MessageHandler | None = None,
        metrics: Metrics | None = None,
        log_context: dict[str, Any] | None = None,
        on_published: PublishedHandler | None = None,
        on_ready: Callable[[MqttLink], None] | None = None,
        on_taken_back: Callable[[MqttLink], None] | None = None,
        loop: IoLoop | None = None,
        session_expiry: int = 0,
        manual_ack: bool = False,
    ) -> None:
        self._options = options
        self._manual_ack = manual_ack
        self._session_expiry = session_expiry
        self._client_id = client_id
        self._name = name
        self._will = will
        self._subscriptions = list(subscriptions)
        self._births = list(births)
        self._on_message_handler = on_message
        self._on_published = on_published
        self._on_ready = on_ready
        self._on_taken_back = on_taken_back
        self._loop = loop if loop is not None else default_loop()
        self._tls_context = _tls_context(options.tls) if options.tls is not None else None
        self.token = next(_link_tokens)  # unique for the process (id() values get reused)
        self.generation = 0  # counts successful connections
        self.max_packet_size = 0  # the broker's limit from the MQTT v5 CONNACK; 0: none said
        self._metrics = metrics
        self._log = _log.bind(link=name, client_id=client_id, **(log_context or {}))
        self.v5 = options.protocol == "5"
        self.connected = threading.Event()
        self.ready = threading.Event()  # connected, subscribed and births sent
        self.last_error: str | None = None
        self._failures = 0  # connect attempts failed since the last success
        self._failure_logged_at: float | None = None
        self._lock = threading.Lock()  # births only
        self._backoff = Backoff(options.reconnect_min_delay, options.reconnect_max_delay)
        self.reconnect_delays: deque[float] = deque(maxlen=32)  # the last ones drawn
        # Untracked publishes made while not connected, sent after the next CONNACK.
        self._held: deque[_Held] = deque(maxlen=_HELD_LIMIT)
        # -- owned by the I/O loop's thread --
        self._conn: Connection | None = None
        self._attempt = 0  # numbers connection attempts; stale connector results are ignored
        self._state: Literal["new", "waiting", "connecting", "handshake", "open",
                             "stopped"] = "new"
        self._next_attempt = 0.0
        self._events = 0  # what the selector watches on the current socket
        self._sub_mid: int | None = None
        self._stopping = False
        self._final_mids: set[int] = set()
        self._stop_deadline = 0.0
        self._stopped = threading.Event()
        self._topics: dict[str, bytes] = {}
        self._qos2_inbound: set[int] = set()  # delivered, waiting for the broker's PUBREL
        # manual_ack: QoS 1 packet ids in arrival order, True once handled (acked in order).
        self._unacked: dict[int, bool] = {}

    # -- lifecycle (any thread) --------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background; retried with the backoff until the broker answers."""
        self._loop.call_soon(self._begin)

    def stop(
        self, final: Sequence[Publication] = (), timeout: float = STOP_PUBLISH_TIMEOUT
    ) -> None:
        """Publish ``final`` (if connected), disconnect cleanly (no will), stop reconnecting."""
        if self._loop.in_loop():
            raise RuntimeError("MqttLink.stop() waits for the I/O loop: not from its thread")
        finals = list(final)
        self._loop.call_soon(lambda: self._begin_stop(finals, timeout))
        if not self._stopped.wait(timeout + 2.0) and not self._loop.alive():
            self._stopped.set()

    def thread_alive(self) -> bool:
        """Is the I/O loop that drives this link running?"""
        return self._loop.alive()

    def wait_ready(self, timeout: float) -> bool:
        return self.ready.wait(timeout)

    def set_births(self, births: Sequence[Publication]) -> None:
        with self._lock:
            self._births = list(births)

    # -- publishing (any thread) -------------------------------------------------------------

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        user_properties: Sequence[tuple[str, str]] = (),
        correlation_data: bytes | None = None,
        kind: str = "message",
        expiry_interval: int | None = None,
        tracked: bool = False,
    ) -> int | None:
        """Publish on the current connection.

        On the I/O loop's thread: returns the packet identifier (matched by ``on_published``;
        0 at QoS 0), or None if the publish was refused (not connected, an invalid topic, over
        the broker's maximum packet size). From any other thread the publish is handed to the
        loop and 0 is returned. Made while not connected, an untracked publish (status, error,
        response) waits (bounded) and goes out right after the next CONNACK, 0 returned; a
        tracked one (the courier's, which re-sends itself) is refused (None). Nothing is
        re-sent across connections: what must survive an outage goes through the courier.
        """
        item = (topic, payload, qos, retain, tuple(user_properties), correlation_data, kind,
                expiry_interval)
        if not self._loop.in_loop():
            def later() -> None:
                self._publish_or_hold(item, tracked)
            self._loop.call_soon(later)
            return 0
        return self._publish_or_hold(item, tracked)

    def _publish_or_hold(self, item: _Held, tracked: bool) -> int | None:
        if tracked or self.connected.is_set() or self._state == "stopped":
            return self._publish_item(item)
        if len(self._held) == self._held.maxlen:
            self._publish_failed(self._held[0][0], "too many publishes held while disconnected")
        self._held.append(item)
        return 0

    def _release_held(self) -> None:
        """Right after CONNACK: what was published while we were away, in order."""
        while self._held and self.connected.is_set():
            self._publish_item(self._held.popleft())

    def _publish_item(self, item: _Held) -> int | None:
        topic, payload, qos, retain, props, correlation, kind, expiry = item
        return self._publish_now(topic, payload, qos, retain, user_properties=props,
                                 correlation_data=correlation, kind=kind,
                                 expiry_interval=expiry)

    def _publish_now(self, topic: str, payload: bytes, qos: int, retain: bool, *,
                     user_properties: Sequence[tuple[str, str]] = (),
                     correlation_data: bytes | None = None, kind: str = "message",
                     expiry_interval: int | None = None) -> int | None:
        conn = self._conn
        if (conn is None or self._state != "open"
                or (self._stopping and kind not in ("status", "final"))):
            self._publish_failed(topic, "not connected")
            return None
        properties: bytes | None = None
        if self.v5:
            properties = _NO_PROPERTIES
            if user_properties or correlation_data is not None or expiry_interval is not None:
                properties = encode_publish_properties(
                    user_properties, correlation_data=correlation_data,
                    expiry_interval=expiry_interval)
        mid = 0
        try:
            name = self._topics.get(topic)
            if name is None:
                name = packets.check_topic(topic)
                if len(self._topics) >= _TOPIC_CACHE:
                    self._topics.clear()
                self._topics[topic] = name
            mid = conn.next_mid() if qos else 0
            packet = packets.encode_publish(name, payload, qos=qos, mid=mid, retain=retain,
                                            properties=properties)
        except ValueError as exc:
            conn.release_mid(mid)
            self._publish_failed(topic, str(exc))
            return None
        limit = self.max_packet_size
        if limit and len(packet) > limit:
            conn.release_mid(mid)
            self._publish_failed(topic, f"{len(packet)} bytes, over the broker's maximum "
                                        f"packet size of {limit}")
            return None
        if qos:
            conn.send_tracked(mid, packet)
        else:
            conn.out += packet
        if self._metrics is not None:
            self._metrics.mqtt_publish(kind)
        return mid

    def _publish_failed(self, topic: str, error: str) -> None:
        if self._metrics is not None:
            self._metrics.mqtt_publish_failures.inc()
        self._log.warning("mqtt_publish_failed", topic=topic, error=error)

    # -- connecting (the I/O loop's thread, but for the connector's blocking part) ------------

    def _begin(self) -> None:
        if self._state != "new" or self._stopping:
            return
        self._state = "waiting"
        self._next_attempt = time.monotonic()
        self._loop.add(self)

    def _connect(self) -> None:
        self._attempt += 1
        attempt = self._attempt
        self._state = "connecting"
        o = self._options
        # The broker drops us after 1.5 keepalives of silence and we ping after one: half the
        # configured value makes it a bound on noticing a dead (black-holed) connection.
        keepalive = max(1, o.keepalive // 2)
        will = self._will
        connect = packets.encode_connect(
            self._client_id, keepalive=keepalive, v5=self.v5,
            clean_start=self._session_expiry == 0,
            session_expiry=self._session_expiry if self.v5 else 0,
            username=o.username or None, password=o.password if o.username else None,
            will=None if will is None else packets.Will(will.topic, will.payload, will.qos,
                                                        will.retain))
        context = self._tls_context

        def blocking_connect() -> None:  # the connector thread
            try:
                sock = open_socket(o.host, o.port, context, connect)
            except Exception as exc:  # every failure is reported the same way
                failure = exc
                self._loop.call_soon(lambda: self._connect_failed(attempt, failure))
                return
            self._loop.call_soon(lambda: self._socket_open(attempt, sock, keepalive))

        self._loop.connect_in_background(blocking_connect)

    def _socket_open(self, attempt: int, sock: Any, keepalive: int) -> None:
        if attempt != self._attempt or self._stopping:
            with contextlib.suppress(OSError):
                sock.close()
            if self._stopping:
                self._finish_stop()
            return
        self._conn = Connection(sock, v5=self.v5, keepalive=keepalive, now=time.monotonic())
        self._state = "handshake"
        self._events = _READ
        self._loop.register(sock, _READ, self._on_io)

    def _connect_failed(self, attempt: int, exc: BaseException) -> None:
        if attempt != self._attempt:
            return
        if self._stopping:
            self._finish_stop()
            return
        reason = describe_tls_failure(exc) if self._options.tls is not None else None
        if reason is None and self._options.tls is not None and isinstance(
                exc, ConnectionResetError | BrokenPipeError | ConnectionClosed):
            reason = ("TLS: the broker closed the connection during the TLS handshake "
                      "(a plain MQTT port, or it refused us)")
        where = f"{self._options.host}:{self._options.port}"
        if reason is not None:
            error = f"{reason} [{where}]"
            if error != self.last_error:
                self._log.error("mqtt_tls_failed", reason=reason, host=self._options.host,
                                port=self._options.port)
            self.last_error = error
        else:
            self.last_error = f"cannot connect to {where}: {exc}"
            self._log_connect_failure("mqtt_connect_failed", host=self._options.host,
                                      port=self._options.port, reason=failure_reason(exc))
        self._wait_to_reconnect()

    def _log_connect_failure(self, event: str, **fields: Any) -> None:
        """Warn about the first failed attempt, then once per ``failure_log_interval`` with the
        count since; the attempts in between go to debug."""
        self._failures += 1
        if self._stopping:
            return
        now = time.monotonic()
        interval = self._options.failure_log_interval
        if self._failure_logged_at is None or now - self._failure_logged_at >= interval:
            self._failure_logged_at = now
            self._log.warning(event, failed_attempts=self._failures,
                              next_report_in_s=round(interval), **fields)
        else:
            self._log.debug(event, failed_attempts=self._failures, **fields)

    def _wait_to_reconnect(self) -> None:
        delay = self._backoff.next_delay()
        self.reconnect_delays.append(delay)
        self._state = "waiting"
        self._next_attempt = time.monotonic() + delay

    # -- the open connection (the I/O loop's thread) ------------------------------------------

    def service(self, now: float) -> float | None:
        """One turn: reconnect when due, keepalive, write what is queued."""
        state = self._state
        if state == "waiting":
            if now < self._next_attempt:
                return self._next_attempt
            self._connect()
            return None
        conn = self._conn
        if conn is None or state not in ("open", "handshake"):
            return None
        if self._stopping and (not self._final_mids or now >= self._stop_deadline
                               or not self.connected.is_set()):
            self._disconnect()
            return None
        due = conn.keepalive_due(now)
        if due is None:
            self._lost("no answer from the broker within the keepalive "
                       f"({conn.keepalive:g} s)", before_connack=state == "handshake")
            return None
        try:
            pending = conn.flush(now) if conn.out else False
        except OSError as exc:
            self._lost(exc, before_connack=state == "handshake")
            return None
        events = _READ | _WRITE if pending else _READ
        if events != self._events:  # a selector change is a system call: only on change
            self._events = events
            self._loop.register(conn.sock, events, self._on_io)
        return due

    def _on_io(self, mask: int) -> None:
        conn = self._conn
        if conn is None:
            return
        now = time.monotonic()
        try:
            if mask & _READ:
                for packet in conn.read(now):
                    self._handle(conn, packet)
                    if self._conn is not conn:
                        return
            if mask & _WRITE:
                conn.flush(now)
        except (OSError, ConnectionClosed, packets.MalformedPacket) as exc:
            if self._conn is conn:
                self._lost(exc, before_connack=self._state == "handshake")
        except Exception:  # a bug in a callback: this connection ends, a fresh one follows
            self._log.exception("mqtt_io_failed")
            if self._conn is conn:
                self._lost("connection dropped after an internal error", before_connack=False)

    def _handle(self, conn: Connection, packet: packets.Packet) -> None:
        if isinstance(packet, packets.Ack):
            self._on_ack(conn, packet)
        elif isinstance(packet, packets.Publish):
            self._on_publish_in(conn, packet)
        elif isinstance(packet, packets.Connack):
            self._on_connack(conn, packet)
        elif isinstance(packet, packets.Suback):
            self._on_suback(conn, packet)
        elif isinstance(packet, packets.Pingresp):
            conn.ping_sent = None
        else:  # Disconnect from the broker (v5)
            self._lost(f"the broker disconnected us: {packets.reason_name(packet.reason)}",
                       before_connack=self._state == "handshake")

    def _lost(self, cause: BaseException | str, *, before_connack: bool) -> None:
        """The connection is gone (or must go): say why, then end it."""
        conn = self._conn
        if conn is None:
            return
        if before_connack and not self._stopping and not isinstance(cause, str):
            self._end_connection(report=False)
            self._connect_failed(self._attempt, cause)
            return
        if not self._stopping:
            text = cause if isinstance(cause, str) else failure_reason(cause)
            if (self._options.tls is not None and isinstance(cause, ssl.SSLError)
                    and (tls := describe_tls_failure(cause)) is not None):
                text = tls
                self._log.error("mqtt_tls_failed", reason=tls)
            else:
                self._log.warning("mqtt_disconnected", reason=text)
            self.last_error = f"connection lost: {text}"
        self._end_connection(report=True)

    def _end_connection(self, *, report: bool) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        self._loop.unregister(conn.sock)
        conn.close()
        self._events = 0
        if not self._session_expiry:  # a kept session may resume the QoS 2 deliveries
            self._qos2_inbound.clear()
        self._unacked.clear()
        self.ready.clear()
        if self.connected.is_set():
            self.connected.clear()
            self._gauge(-1)
        self._final_mids.clear()
        if not report:
            return
        if self._on_taken_back is not None:
            self._on_taken_back(self)
        if self._stopping:
            self._finish_stop()
        else:
            self._wait_to_reconnect()

    def _on_connack(self, conn: Connection, connack: packets.Connack) -> None:
        if connack.reason >= 0x80:
            name = packets.reason_name(connack.reason)
            self.last_error = f"broker refused the connection: {name}"
            self._log_connect_failure("mqtt_connect_refused", reason=name)
            self._end_connection(report=False)
            if self._stopping:
                self._finish_stop()
            else:
                self._wait_to_reconnect()
            return
        self.last_error = None
        if self._failures:
            self._log.info("mqtt_connect_recovered", failed_attempts=self._failures)
        self._failures, self._failure_logged_at = 0, None
        self._backoff.reset()
        # A loss after a good connection draws its first delay from [min, 2 x min] already:
        # readers that lost the same broker do not come back in the same instant.
        self._backoff.attempts = 1
        self.generation += 1
        if not connack.session_present:  # QoS 2 deliveries in progress went with the session
            self._qos2_inbound.clear()
        props = connack.properties
        self.max_packet_size = int(props.get("MaximumPacketSize", 0))  # type: ignore[call-overload]
        receive_maximum = int(props.get("ReceiveMaximum", 65535))  # type: ignore[call-overload]
        conn.window = max(1, min(self._options.max_inflight, receive_maximum))
        server_keepalive = props.get("ServerKeepAlive")
        if isinstance(server_keepalive, int):
            conn.keepalive = server_keepalive
        if self.generation > 1 and self._metrics is not None:
            self._metrics.mqtt_reconnects.inc()
        self._log.info("mqtt_connected", reconnect=self.generation > 1,
                       session_present=connack.session_present)
        if self._options.password_in_clear:
            self._log.warning("mqtt_password_sent_in_clear", host=self._options.host,
                              setting="mqtt.allow_password_without_tls")
        self._state = "open"
        self.connected.set()
        self._gauge(1)
        if self._stopping:
            return
        if self._subscriptions:
            self._sub_mid = conn.next_mid()
            conn.out += packets.encode_subscribe(self._sub_mid, self._subscriptions, v5=self.v5)
            self._release_held()
            return
        self._release_held()
        self._publish_births()

    def _on_suback(self, conn: Connection, suback: packets.Suback) -> None:
        conn.release_mid(suback.mid)
        if suback.mid != self._sub_mid:
            return
        failed = [packets.reason_name(code) for code in suback.reasons if code >= 0x80]
        if failed:
            # Without our command subscription we must not claim to be connected.
            self.last_error = f"subscription refused: {', '.join(failed)}"
            self._log.error("mqtt_subscribe_refused", reasons=failed)
            return
        self._publish_births()

    def _publish_births(self) -> None:
        with self._lock:
            births = list(self._births)
        for birth in births:
            self._publish_now(birth.topic, birth.payload, birth.qos, birth.retain, kind="status")
        self.ready.set()
        if self._on_ready is not None:
            self._on_ready(self)

    def _on_ack(self, conn: Connection, ack: packets.Ack) -> None:
        kind = ack.kind
        if kind == packets.PUBREL:  # the broker's QoS 2 delivery to us is complete
            self._qos2_inbound.discard(ack.mid)
            conn.out += packets.encode_ack(packets.PUBCOMP, ack.mid)
            return
        if kind == packets.PUBREC and ack.reason < 0x80:  # our QoS 2 publish, half way
            conn.out += packets.encode_ack(packets.PUBREL, ack.mid)
            return
        if not conn.acknowledged(ack.mid):
            return
        self._final_mids.discard(ack.mid)
        if self._on_published is not None:
            # v5 reason codes >= 0x80 are refusals (quota, not authorized, bad topic...).
            failure = packets.reason_name(ack.reason) if ack.reason >= 0x80 else None
            self._on_published(self, ack.mid, failure)

    def _on_publish_in(self, conn: Connection, message: packets.Publish) -> None:
        if message.qos == 2:
            if message.mid not in self._qos2_inbound:
                self._qos2_inbound.add(message.mid)
                self._deliver(message, None)
            conn.out += packets.encode_ack(packets.PUBREC, message.mid)
        elif message.qos == 1 and self._manual_ack and self._on_message_handler is not None:
            if message.mid in self._unacked:
                return  # still being handled: its ack will come
            self._unacked[message.mid] = False
            self._deliver(message, self._acker(conn, message.mid))
        else:
            self._deliver(message, None)
            if message.qos == 1:
                conn.out += packets.encode_ack(packets.PUBACK, message.mid)

    def _acker(self, conn: Connection, mid: int) -> Callable[[], None]:
        def handled() -> None:
            self._on_loop(lambda: self._handled(conn, mid))
        return handled

    def _on_loop(self, call: Callable[[], None]) -> None:
        if self._loop.in_loop():
            call()
        else:
            self._loop.call_soon(call)

    def _handled(self, conn: Connection, mid: int) -> None:
        if self._conn is not conn or mid not in self._unacked:
            return  # that connection ended: the broker sends it again (persistent session)
        self._unacked[mid] = True
        for first, done in list(self._unacked.items()):  # in arrival order (MQTT §4.6)
            if not done:
                break
            del self._unacked[first]
            conn.out += packets.encode_ack(packets.PUBACK, first)

    def _deliver(self, message: packets.Publish, ack: Callable[[], None] | None) -> None:
        handler = self._on_message_handler
        if handler is None:
            return
        props = message.properties
        response_topic = props.get("ResponseTopic")
        correlation = props.get("CorrelationData")
        expiry = props.get("MessageExpiryInterval")
        inbound = InboundMessage(
            topic=message.topic,
            payload=message.payload,
            retain=message.retain,
            qos=message.qos,
            received_at=time.monotonic(),
            response_topic=response_topic if isinstance(response_topic, str) else None,
            correlation_data=correlation if isinstance(correlation, bytes) else None,
            expiry_interval=expiry if isinstance(expiry, int) else None,
            duplicate=message.dup,
            ack=ack,
        )
        try:
            handler(inbound)
        except Exception:  # a handler bug must not stop the I/O loop
            self._log.exception("mqtt_handler_failed", topic=message.topic)
            if ack is not None:
                ack()  # nobody else will: it would hold back every later acknowledgement

    # -- stopping (the I/O loop's thread) -----------------------------------------------------

    def _begin_stop(self, final: list[Publication], timeout: float) -> None:
        self._stopping = True
        if self._state != "open" or not self.connected.is_set():
            if self._state in ("open", "handshake"):
                self._disconnect()
            elif self._state != "connecting":
                self._finish_stop()
            return  # a connect in progress finishes the stop when it returns
        self._stop_deadline = time.monotonic() + timeout
        for publication in final:
            mid = self._publish_now(publication.topic, publication.payload, publication.qos,
                                    publication.retain, kind="status")
            if mid and publication.qos:
                self._final_mids.add(mid)
        self._loop.wake()

    def _disconnect(self) -> None:
        conn = self._conn
        if conn is not None:
            conn.out += packets.DISCONNECT_PACKET
            with contextlib.suppress(OSError):
                conn.flush(time.monotonic())  # best effort: the socket closes next
        self._end_connection(report=True)
        if self._state != "stopped":
            self._finish_stop()

    def _finish_stop(self) -> None:
        self._state = "stopped"
        self._loop.remove(self)
        if self.connected.is_set():
            self.connected.clear()
            self._gauge(-1)
        self.ready.clear()
        self._stopped.set()

    def _gauge(self, delta: int) -> None:
        if self._metrics is not None:
            self._metrics.mqtt_connected.labels(self._name).inc(delta)


def _tls_context(tls: TlsOptions) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if tls.ca_file:
        context.load_verify_locations(cafile=tls.ca_file)
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if tls.cert_file:
        context.load_cert_chain(tls.cert_file, tls.key_file, password=tls.key_password)
    context.check_hostname = tls.check_hostname
    return context


__all__ = [
    "InboundMessage",
    "LinkOptions",
    "MqttLink",
    "Publication",
    "TlsOptions",
    "encode_publish_properties",
    "publish_packet_size",
]
