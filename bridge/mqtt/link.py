"""One MQTT session, wrapped: the only module that imports paho.

Each reader gets its own ``MqttLink`` because a last will belongs to one connection and every
reader needs its own retained ``Status=disconnected`` will (PROTOCOL.md §6.1). Paho runs its own
network thread (``loop_start``); our callbacks run there and must stay short.

On every successful CONNACK the link subscribes first and publishes its "birth" messages only
once the SUBACK has arrived, so a consumer that reacts to ``connected`` can never lose its first
command (MagTek's browser client announces before subscribing; PROTOCOL.md §6.1).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from bridge.metrics import Metrics

_log = structlog.get_logger("bridge.mqtt")

# How long stop() waits for the final publishes (retained "disconnected") to be acknowledged.
STOP_PUBLISH_TIMEOUT: Final = 3.0


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """TLS material for the broker connection (paths; the key password is read by config)."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    key_password: str | None = field(default=None, repr=False)
    check_hostname: bool = True


@dataclass(frozen=True, slots=True)
class LinkOptions:
    """Where and how to connect. Built from the ``[mqtt]`` config section."""

    host: str = "127.0.0.1"
    port: int = 1883
    protocol: Literal["5", "3.1.1"] = "5"
    keepalive: int = 30
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: TlsOptions | None = None
    reconnect_min_delay: float = 0.5
    reconnect_max_delay: float = 10.0
    # paho's in-flight cap; above the outbox window, so status and responses never queue.
    max_inflight: int = 20


@dataclass(frozen=True, slots=True)
class Publication:
    """A message to publish (birth, will, final)."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A message delivered to us, with the MQTT v5 properties the bridge cares about."""

    topic: str
    payload: bytes
    retain: bool
    qos: int
    received_at: float
    response_topic: str | None = None
    correlation_data: bytes | None = None
    expiry_interval: int | None = None


_link_tokens = itertools.count(1)

MessageHandler = Callable[[InboundMessage], None]
# (link, mid, failure reason or None) once the broker acknowledged a QoS>0 publish.
PublishedHandler = Callable[["MqttLink", int, str | None], None]


def publish_packet_size(
    topic: str,
    payload: bytes,
    user_properties: Sequence[tuple[str, str]] = (),
    *,
    qos: int = 1,
    expiry: int | None = None,
    correlation_data: bytes | None = None,
) -> int:
    """Bytes of the PUBLISH packet on the wire, to hold against the broker's maximum."""
    properties = sum(5 + len(k.encode()) + len(v.encode()) for k, v in user_properties)
    if expiry is not None:
        properties += 5
    if correlation_data is not None:
        properties += 3 + len(correlation_data)
    remaining = 2 + len(topic.encode()) + (2 if qos else 0) + len(payload)
    if user_properties or expiry is not None or correlation_data is not None:
        remaining += len(_varint(properties)) + properties
    return 1 + len(_varint(remaining)) + remaining


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value % 128, value // 128
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _utf8(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return len(data).to_bytes(2, "big") + data


def encode_publish_properties(
    user_properties: Sequence[tuple[str, str]] = (),
    *,
    correlation_data: bytes | None = None,
    expiry_interval: int | None = None,
) -> bytes:
    """MQTT v5 PUBLISH properties as on the wire (length prefix included), §3.3.2.3."""
    body = bytearray()
    if expiry_interval is not None:
        body += b"\x02" + expiry_interval.to_bytes(4, "big")
    if correlation_data is not None:
        body += b"\x09" + _utf8(correlation_data)
    for key, value in user_properties:
        body += b"\x26" + _utf8(key) + _utf8(value)
    return _varint(len(body)) + bytes(body)


class PackedProperties(Properties):
    """PUBLISH properties already encoded (``encode_publish_properties``): paho's own class
    checks every attribute set and re-encodes on every send, which cost more per message than
    all the rest of the bridge. A regular subclass: paho's constructor runs, only ``pack`` is
    ours."""

    packed: bytes

    def __init__(self, packed: bytes) -> None:
        super().__init__(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        object.__setattr__(self, "packed", packed)  # not a property name: skip paho's check

    def pack(self) -> bytes:
        return self.packed

    def __str__(self) -> str:
        return f"<{len(self.packed)} bytes of properties>"


def describe_tls_failure(exc: BaseException) -> str | None:
    """Say why a TLS handshake failed, in an operator's words (paho only says it failed)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        message = (exc.verify_message or str(exc)).lower()
        if "hostname" in message or "ip address mismatch" in message:
            return f"TLS: broker certificate does not match the host name ({exc.verify_message})"
        if "expired" in message:
            return "TLS: broker certificate has expired"
        if "not yet valid" in message:
            return "TLS: broker certificate is not yet valid (check the clock)"
        if "self-signed" in message or "issuer" in message or "unknown ca" in message:
            return ("TLS: broker certificate is signed by an unknown CA "
                    f"({exc.verify_message}); check mqtt.tls.ca_file")
        return f"TLS: broker certificate rejected ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return describe_tls_alert(f"{exc.reason or ''} {exc}")
    return None


def describe_tls_alert(text: str) -> str | None:
    """The same for an SSL error known only by its text: with TLS 1.3 the broker refuses a
    client certificate after the handshake, and paho only logs what the next read raised."""
    reason = text.upper()
    if "SSL" in reason or "TLS" in reason:
        if "CERTIFICATE_REQUIRED" in reason:
            return "TLS: the broker requires a client certificate (mqtt.tls.cert_file)"
        if "UNKNOWN_CA" in reason or "BAD_CERTIFICATE" in reason or "CERTIFICATE_UNKNOWN" in reason:
            return f"TLS: the broker refused our client certificate ({text.strip()})"
        if "EXPIRED" in reason:
            return f"TLS: the broker refused our client certificate as expired ({text.strip()})"
        if ("WRONG_VERSION_NUMBER" in reason or "RECORD_LAYER" in reason
                or "UNEXPECTED_EOF" in reason or "EOF OCCURRED" in reason):
            return ("TLS: the broker closed or did not answer the TLS handshake "
                    "(a plain MQTT port?)")
        return f"TLS: handshake failed ({text.strip()})"
    return None


class _TrackingContext(ssl.SSLContext):
    """Remembers the socket it wrapped last: when a handshake fails inside paho's connect,
    paho drops that socket without closing it, leaking a descriptor on every retry."""

    last: ssl.SSLSocket | None = None

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        self.last = super().wrap_socket(*args, **kwargs)
        return self.last


class _LastError(logging.Handler):
    def __init__(self, link: MqttLink) -> None:
        super().__init__(logging.ERROR)
        self._link = link

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self._link.record_paho_error(record.getMessage())


class MqttLink:
    """A paho client with our connect sequence, will and reconnect policy.

    Args:
        options: broker address, protocol, credentials, TLS, reconnect delays.
        client_id: unique per session.
        name: ``"bridge"`` or ``"reader"``; the metric label and log context.
        will: published by the broker if we vanish without a clean DISCONNECT.
        subscriptions: (topic filter, qos) made on every connect, before the births.
        births: published after the subscriptions are acknowledged, on every connect.
        on_message: called on paho's thread for every inbound message.
        metrics: where to count; optional for CLI tools.
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
    ) -> None:
        self._options = options
        self._name = name
        self._subscriptions = list(subscriptions)
        self._births = list(births)
        self._on_message_handler = on_message
        self._on_published = on_published
        self._on_ready = on_ready
        self._tls_context: _TrackingContext | None = None
        self._on_taken_back = on_taken_back
        self.token = next(_link_tokens)  # unique for the process (id() values get reused)
        self._tracked: set[int] = set()  # mids of publishes made with tracked=True
        self._tracked_lock = threading.Lock()
        self.generation = 0  # counts successful connections
        self.max_packet_size = 0  # the broker's limit from the MQTT v5 CONNACK; 0: none said
        self._metrics = metrics
        self._log = _log.bind(link=name, client_id=client_id, **(log_context or {}))
        self.v5 = options.protocol == "5"
        self.connected = threading.Event()
        self.ready = threading.Event()  # connected, subscribed and births sent
        self._lock = threading.Lock()
        self._sub_mid: int | None = None
        self._ever_connected = False
        self._stopping = False
        self.last_error: str | None = None

        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if self.v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if self.v5 else True,
        )
        if options.username:
            self._client.username_pw_set(options.username, options.password)
        if options.tls is not None:
            self._configure_tls(options.tls)
        if will is not None:
            self._client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        # paho's default cap of 120 s would leave a store idle for minutes after the broker
        # returns; the issue asks for about 10 s. paho types these as int but uses floats fine.
        self._client.reconnect_delay_set(
            min_delay=max(1, round(options.reconnect_min_delay)),
            max_delay=max(1, round(options.reconnect_max_delay)),
        )
        self._client.max_inflight_messages_set(options.max_inflight)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_socket_open = self._on_socket_open
        self._client.on_publish = self._on_publish
        # paho formats a debug line for every packet when on_log is set; a logger at ERROR
        # level costs nothing per packet and still hands us socket errors (TLS alerts).
        self._paho_error: str | None = None
        paho_logger = logging.Logger(f"paho.{name}", logging.ERROR)
        paho_logger.addHandler(_LastError(self))
        self._client.enable_logger(paho_logger)

    def _configure_tls(self, tls: TlsOptions) -> None:
        context = _TrackingContext(ssl.PROTOCOL_TLS_CLIENT)
        if tls.ca_file:
            context.load_verify_locations(cafile=tls.ca_file)
        else:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        if tls.cert_file:
            context.load_cert_chain(tls.cert_file, tls.key_file, password=tls.key_password)
        context.check_hostname = tls.check_hostname
        self._client.tls_set_context(context)
        self._tls_context = context

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background; paho retries until the broker answers."""
        # paho pings after one idle keepalive and gives up one keepalive later: half the
        # configured value makes it a bound on noticing a dead (black-holed) connection.
        self._client.connect_async(
            self._options.host, self._options.port, keepalive=max(1, self._options.keepalive // 2)
        )
        self._client.loop_start()

    def stop(
        self, final: Sequence[Publication] = (), timeout: float = STOP_PUBLISH_TIMEOUT
    ) -> None:
        """Publish ``final`` (if connected), disconnect cleanly (no will), stop the thread."""
        self._stopping = True
        deadline = time.monotonic() + timeout
        if self.connected.is_set():
            infos = [self._client.publish(p.topic, p.payload, p.qos, p.retain) for p in final]
            for info in infos:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    info.wait_for_publish(remaining)
                except (RuntimeError, ValueError):
                    break  # connection lost meanwhile: the will covers it
        self._client.disconnect()
        self._client.loop_stop()
        if self.connected.is_set():
            self.connected.clear()
            self._gauge(-1)

    def thread_alive(self) -> bool:
        """Is paho's network thread running (it retries connecting by itself)?"""
        thread = self._client._thread
        return thread is not None and thread.is_alive()

    def wait_ready(self, timeout: float) -> bool:
        return self.ready.wait(timeout)

    def set_births(self, births: Sequence[Publication]) -> None:
        with self._lock:
            self._births = list(births)

    # -- publishing ------------------------------------------------------------------------

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
        """Queue one publish; paho keeps QoS>0 messages across a reconnect.

        Returns the message id (matched by ``on_published``), or None if paho refused it.
        """
        properties: Properties | None = None
        if self.v5 and (user_properties or correlation_data is not None
                        or expiry_interval is not None):
            properties = PackedProperties(encode_publish_properties(
                user_properties, correlation_data=correlation_data,
                expiry_interval=expiry_interval))
        try:
            info = self._client.publish(topic, payload, qos=qos, retain=retain,
                                        properties=properties)
        except ValueError as exc:  # paho's own checks (topic, payload size)
            self._publish_failed(topic, str(exc))
            return None
        if info.rc in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            if self._metrics is not None:
                self._metrics.mqtt_publish(kind)
            if tracked:
                with self._tracked_lock:
                    self._tracked.add(info.mid)
            return info.mid
        self._publish_failed(topic, paho.error_string(info.rc))
        return None

    def _publish_failed(self, topic: str, error: str) -> None:
        if self._metrics is not None:
            self._metrics.mqtt_publish_failures.inc()
        self._log.warning("mqtt_publish_failed", topic=topic, error=error)

    # -- paho callbacks (paho's thread) ------------------------------------------------------

    def _gauge(self, delta: int) -> None:
        if self._metrics is not None:
            self._metrics.mqtt_connected.labels(self._name).inc(delta)

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if self._tls_context is not None:
            self._tls_context.last = None  # paho's live socket now: never ours to close
        if reason_code.is_failure:
            self.last_error = f"broker refused the connection: {reason_code}"
            self._log.warning("mqtt_connect_refused", reason=str(reason_code))
            return
        self.last_error = None
        self._take_back_tracked(client)
        self.generation += 1
        announced = getattr(properties, "MaximumPacketSize", None) if properties else None
        self.max_packet_size = int(announced) if announced else 0
        if self._ever_connected and self._metrics is not None:
            self._metrics.mqtt_reconnects.inc()
        self._log.info("mqtt_connected", reconnect=self._ever_connected)
        self._ever_connected = True
        self.connected.set()
        self._gauge(1)
        with self._lock:
            if self._subscriptions:
                rc, mid = client.subscribe(self._subscriptions)
                self._sub_mid = mid if rc == MQTTErrorCode.MQTT_ERR_SUCCESS else None
                return
        self._publish_births()

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        if mid != self._sub_mid:
            return
        failed = [str(rc) for rc in reason_codes if rc.is_failure]
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
            self.publish(birth.topic, birth.payload, qos=birth.qos, retain=birth.retain,
                         kind="status")
        self.ready.set()
        if self._on_ready is not None:
            self._on_ready(self)

    def _take_back_tracked(self, client: paho.Client) -> None:
        """Before paho re-sends its in-flight messages after a reconnect (it does so right after
        this callback), take back the tracked ones: their owner re-checks their time-to-live
        and re-sends them with a fresh expiry, marked replayed. paho would send them as they
        were, hours late if the outage was long."""
        with self._tracked_lock:
            tracked, self._tracked = self._tracked, set()
        if not tracked:
            return
        with client._out_message_mutex:
            taken = [mid for mid in tracked if client._out_messages.pop(mid, None) is not None]
        if taken and self._on_taken_back is not None:
            self._on_taken_back(self)

    def _on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._tracked_lock:
            self._tracked.discard(mid)
        if self._on_published is None:
            return
        # v5 PUBACK reason codes >= 0x80 are refusals (quota, not authorized, bad topic...).
        failure = str(reason_code) if reason_code.is_failure else None
        self._on_published(self, mid, failure)

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.ready.clear()
        if self.connected.is_set():
            self.connected.clear()
            self._gauge(-1)
        tls_reason = None
        if self._options.tls is not None and self._paho_error is not None:
            tls_reason = describe_tls_alert(self._paho_error)
        self._paho_error = None
        if tls_reason is not None and not self._stopping:
            if tls_reason != self.last_error:
                self._log.error("mqtt_tls_failed", reason=tls_reason)
            self.last_error = tls_reason
        elif not self._stopping:
            self.last_error = f"connection lost: {reason_code}"
            self._log.warning("mqtt_disconnected", reason=str(reason_code))

    def record_paho_error(self, text: str) -> None:
        # paho reports socket errors (e.g. a TLS alert) only in its log, before on_disconnect.
        self._paho_error = text

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        # paho leaves Nagle's algorithm on: a small publish then waits for the broker's
        # delayed ACK (~40 ms a round), which made every command round trip ~88 ms.
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        # paho calls this inside its ``except OSError`` block: the exception is still there.
        exc = sys.exc_info()[1]
        context = self._tls_context
        if context is not None and context.last is not None:
            with contextlib.suppress(OSError):
                context.last.close()
            context.last = None
        reason = describe_tls_failure(exc) if exc is not None else None
        if reason is None and self._options.tls is not None and isinstance(
                exc, ConnectionResetError | BrokenPipeError):
            reason = ("TLS: the broker closed the connection during the TLS handshake "
                      "(a plain MQTT port, or it refused us)")
        where = f"{self._options.host}:{self._options.port}"
        if reason is not None:
            error = f"{reason} [{where}]"
            if error != self.last_error:
                self._log.error("mqtt_tls_failed", reason=reason, host=self._options.host,
                                port=self._options.port)
            self.last_error = error
            return
        detail = f": {exc}" if exc is not None else ""
        self.last_error = f"cannot connect to {where}{detail}"
        self._log.debug("mqtt_connect_failed", host=self._options.host, port=self._options.port,
                        error=str(exc) if exc is not None else None)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        handler = self._on_message_handler
        if handler is None:
            return
        props = message.properties
        response_topic = getattr(props, "ResponseTopic", None) if props is not None else None
        correlation = getattr(props, "CorrelationData", None) if props is not None else None
        expiry = getattr(props, "MessageExpiryInterval", None) if props is not None else None
        inbound = InboundMessage(
            topic=message.topic,
            payload=bytes(message.payload),
            retain=bool(message.retain),
            qos=message.qos,
            received_at=time.monotonic(),
            response_topic=response_topic,
            correlation_data=correlation,
            expiry_interval=expiry,
        )
        try:
            handler(inbound)
        except Exception:  # a handler bug must not kill paho's network thread
            self._log.exception("mqtt_handler_failed", topic=message.topic)


__all__ = [
    "InboundMessage",
    "LinkOptions",
    "MqttLink",
    "PackedProperties",
    "Publication",
    "TlsOptions",
    "describe_tls_alert",
    "describe_tls_failure",
    "encode_publish_properties",
    "publish_packet_size",
]
