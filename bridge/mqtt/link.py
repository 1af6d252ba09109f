"""One MQTT session, wrapped: with ``bridge.mqtt.loop`` the only code that drives paho.

Each reader gets its own ``MqttLink`` because a last will belongs to one connection and every
reader needs its own retained ``Status=disconnected`` will (PROTOCOL.md §6.1). Every link of
the process is driven by one ``IoLoop`` thread through paho's external-loop API; callbacks
run on that thread and must stay short.

Each connection is a fresh paho client: paho never re-sends a message from an earlier
connection (hours late, or one the broker refused as too large). What was in flight when a
connection ended is the owner's to send again (``on_taken_back``: the courier re-checks the
time-to-live and re-sends it marked replayed). Reconnects wait for the project's jittered
``Backoff`` between ``reconnect_min_delay`` and ``reconnect_max_delay``, exactly.

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
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from bridge.backoff import Backoff
from bridge.metrics import Metrics
from bridge.mqtt.encoding import (
    PackedProperties,
    describe_tls_alert,
    describe_tls_failure,
    encode_publish_properties,
    publish_packet_size,
)
from bridge.mqtt.loop import MAX_SLEEP, IoLoop, default_loop

_log = structlog.get_logger("bridge.mqtt")

# How long stop() waits for the final publishes (retained "disconnected") to be acknowledged.
STOP_PUBLISH_TIMEOUT: Final = 3.0
_HELD_LIMIT: Final = 1000  # publishes held while not connected (oldest dropped beyond)
_READ: Final = 1  # selectors.EVENT_READ
_WRITE: Final = 2  # selectors.EVENT_WRITE


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
    # The password goes to a broker beyond loopback without TLS (explicitly allowed by the
    # config): said at every connect, so it is never forgotten.
    password_in_clear: bool = False
    # Connect failures are logged at warning: the first one, then one summary per interval
    # (reconnects come every few seconds; a line each time would bury everything else).
    failure_log_interval: float = 300.0


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
    ) -> None:
        self._options = options
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
        self._tls_context: _TrackingContext | None = None
        if options.tls is not None:
            self._tls_context = self._make_tls_context(options.tls)
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
        self._held: deque[tuple[str, bytes, int, bool, tuple[tuple[str, str], ...],
                                bytes | None, str, int | None]] = deque(maxlen=_HELD_LIMIT)
        self._paho_logger = logging.Logger(f"paho.{name}", logging.ERROR)
        self._paho_logger.addHandler(_LastError(self))
        self._paho_error: str | None = None
        # -- owned by the I/O loop's thread --
        self._client: paho.Client | None = None
        self._sock: Any = None
        self._attempt = 0  # numbers connection attempts; stale connector results are ignored
        self._state: Literal["new", "waiting", "connecting", "open", "stopped"] = "new"
        self._next_attempt = 0.0
        self._misc_at = 0.0
        self._events = 0  # what the selector watches on the current socket
        self._sub_mid: int | None = None
        self._lost = False
        self._ever_connected = False
        self._stopping = False
        self._final_mids: set[int] = set()
        self._stop_deadline = 0.0
        self._stopped = threading.Event()

    @staticmethod
    def _make_tls_context(tls: TlsOptions) -> _TrackingContext:
        context = _TrackingContext(ssl.PROTOCOL_TLS_CLIENT)
        if tls.ca_file:
            context.load_verify_locations(cafile=tls.ca_file)
        else:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        if tls.cert_file:
            context.load_cert_chain(tls.cert_file, tls.key_file, password=tls.key_password)
        context.check_hostname = tls.check_hostname
        return context

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

        On the I/O loop's thread: returns the message id (matched by ``on_published``), or
        None if paho refused it. From any other thread the publish is handed to the loop and 0
        is returned. Made while not connected, an untracked publish (status, error, response)
        waits (bounded) and goes out right after the next CONNACK, 0 returned; a tracked one
        (the courier's, which re-sends itself) is refused (None). Nothing is re-sent across
        connections: what must survive an outage goes through the courier's outbox.
        """
        if not self._loop.in_loop():
            props = tuple(user_properties)

            def later() -> None:
                self._publish_or_hold(topic, payload, qos, retain, user_properties=props,
                                      correlation_data=correlation_data, kind=kind,
                                      expiry_interval=expiry_interval, tracked=tracked)

            self._loop.call_soon(later)
            return 0
        return self._publish_or_hold(topic, payload, qos, retain,
                                     user_properties=user_properties,
                                     correlation_data=correlation_data, kind=kind,
                                     expiry_interval=expiry_interval, tracked=tracked)

    def _publish_or_hold(self, topic: str, payload: bytes, qos: int, retain: bool, *,
                         user_properties: Sequence[tuple[str, str]], correlation_data: bytes | None,
                         kind: str, expiry_interval: int | None, tracked: bool) -> int | None:
        if tracked or self.connected.is_set() or self._state == "stopped":
            return self._publish_now(topic, payload, qos, retain,
                                     user_properties=user_properties,
                                     correlation_data=correlation_data, kind=kind,
                                     expiry_interval=expiry_interval)
        if len(self._held) == self._held.maxlen:
            self._publish_failed(self._held[0][0], "too many publishes held while disconnected")
        self._held.append((topic, payload, qos, retain, tuple(user_properties),
                           correlation_data, kind, expiry_interval))
        return 0

    def _release_held(self) -> None:
        """Right after CONNACK: what was published while we were away, in order."""
        while self._held and self.connected.is_set():
            topic, payload, qos, retain, props, correlation, kind, expiry = self._held.popleft()
            self._publish_now(topic, payload, qos, retain, user_properties=props,
                              correlation_data=correlation, kind=kind, expiry_interval=expiry)

    def _publish_now(self, topic: str, payload: bytes, qos: int, retain: bool, *,
                     user_properties: Sequence[tuple[str, str]] = (),
                     correlation_data: bytes | None = None, kind: str = "message",
                     expiry_interval: int | None = None) -> int | None:
        client = self._client
        if client is None or (self._stopping and kind not in ("status", "final")):
            self._publish_failed(topic, "not connected")
            return None
        properties: Properties | None = None
        if self.v5 and (user_properties or correlation_data is not None
                        or expiry_interval is not None):
            properties = PackedProperties.of(encode_publish_properties(
                user_properties, correlation_data=correlation_data,
                expiry_interval=expiry_interval))
        try:
            info = client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        except ValueError as exc:  # paho's own checks (topic, payload size)
            self._publish_failed(topic, str(exc))
            return None
        if info.rc in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            if self._metrics is not None:
                self._metrics.mqtt_publish(kind)
            return info.mid
        self._publish_failed(topic, paho.error_string(info.rc))
        return None

    def _publish_failed(self, topic: str, error: str) -> None:
        if self._metrics is not None:
            self._metrics.mqtt_publish_failures.inc()
        self._log.warning("mqtt_publish_failed", topic=topic, error=error)

    # -- the I/O loop's side -----------------------------------------------------------------

    def _begin(self) -> None:
        if self._state != "new" or self._stopping:
            return
        self._state = "waiting"
        self._next_attempt = time.monotonic()
        self._loop.add(self)

    def service(self, now: float) -> float | None:
        """One turn: reconnect when due, keepalive, write what is queued."""
        if self._state == "waiting":
            if now < self._next_attempt:
                return self._next_attempt
            self._connect()
            return None
        if self._state != "open":
            return None
        client = self._client
        assert client is not None
        if self._stopping and (not self._final_mids or now >= self._stop_deadline
                               or not self.connected.is_set()):
            self._disconnect()
            return None
        if now >= self._misc_at:
            self._misc_at = now + MAX_SLEEP
            self._drive(client.loop_misc)
            if self._client is not client:
                return None
        pending = client.want_write()
        if pending and self.connected.is_set():
            self._drive(client.loop_write)  # before CONNACK the selector decides (read first)
            if self._client is not client:
                return None
            pending = client.want_write()
        events = _READ | _WRITE if pending else _READ
        if events != self._events:  # a selector change is a system call: only on change
            self._events = events
            self._loop.register(self._sock, events, self._on_io)
        return self._misc_at

    def _connect(self) -> None:
        self._attempt += 1
        attempt = self._attempt
        client = self._new_client()
        self._state = "connecting"
        o = self._options
        # paho pings after one idle keepalive and gives up one keepalive later: half the
        # configured value makes it a bound on noticing a dead (black-holed) connection.
        keepalive = max(1, o.keepalive // 2)
        persistent: dict[str, Any] = {}
        if self.v5 and self._session_expiry > 0:
            connect_properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            connect_properties.SessionExpiryInterval = self._session_expiry
            persistent = {"clean_start": False, "properties": connect_properties}

        def blocking_connect() -> None:  # the connector thread
            try:
                client.connect(o.host, o.port, keepalive=keepalive, **persistent)
            except Exception as exc:  # every failure is reported the same way
                self._close_failed_tls()
                failure = exc
                self._loop.call_soon(lambda: self._connect_failed(attempt, failure))
                return
            self._loop.call_soon(lambda: self._socket_open(attempt, client))

        self._loop.connect_in_background(blocking_connect)

    def _new_client(self) -> paho.Client:
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self._client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if self.v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if self.v5 else self._session_expiry == 0,
        )
        o = self._options
        if o.username:
            client.username_pw_set(o.username, o.password)
        if self._tls_context is not None:
            client.tls_set_context(self._tls_context)
        if self._will is not None:
            w = self._will
            client.will_set(w.topic, w.payload, qos=w.qos, retain=w.retain)
        client.max_inflight_messages_set(o.max_inflight)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_socket_open = self._on_socket_open
        # With this set paho queues packets instead of writing inside publish() (or inside
        # connect()): the loop writes everything due in a turn, and reads first when both
        # are possible (a broker refusing our certificate after a TLS 1.3 handshake sends
        # its alert, the reason we report, before we would write CONNECT).
        client.on_socket_register_write = self._on_register_write
        # paho formats a debug line for every packet when on_log is set; a logger at ERROR
        # level still costs a call per packet, so it is there only where its socket errors
        # matter: TLS alerts, which paho reports nowhere else.
        if self._tls_context is not None:
            client.enable_logger(self._paho_logger)
        return client

    def _on_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        if not self._loop.in_loop():
            self._loop.wake()

    def _close_failed_tls(self) -> None:
        context = self._tls_context
        if context is not None and context.last is not None:
            with contextlib.suppress(OSError):
                context.last.close()
            context.last = None

    def _socket_open(self, attempt: int, client: paho.Client) -> None:
        if self._tls_context is not None:
            self._tls_context.last = None  # paho's live socket now: never ours to close
        sock = client.socket()
        if attempt != self._attempt or self._stopping or sock is None:
            with contextlib.suppress(OSError, AttributeError):
                sock.close()  # type: ignore[union-attr]
            if self._stopping:
                self._finish_stop()
            elif attempt == self._attempt:
                # Lost while paho wrote CONNECT (a broker refusing us after the handshake).
                self._connect_failed(attempt, ConnectionError(self._paho_error or "closed"))
            return
        self._client = client
        self._sock = sock
        self._state = "open"
        self._lost = False
        self._misc_at = time.monotonic() + MAX_SLEEP
        self._events = _READ | _WRITE if client.want_write() else _READ
        self._loop.register(sock, self._events, self._on_io)

    def _connect_failed(self, attempt: int, exc: BaseException) -> None:
        if attempt != self._attempt:
            return
        if self._stopping:
            self._finish_stop()
            return
        reason = describe_tls_failure(exc)
        paho_error, self._paho_error = self._paho_error, None
        if reason is None and self._options.tls is not None and paho_error is not None:
            reason = describe_tls_alert(paho_error)
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
        else:
            self.last_error = f"cannot connect to {where}: {exc}"
            self._log_connect_failure("mqtt_connect_failed", host=self._options.host,
                                      port=self._options.port, reason=_failure_reason(exc))
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

    def _on_io(self, mask: int) -> None:
        client = self._client
        if client is None:
            return
        if mask & _READ:
            self._drive(client.loop_read)
            sock = self._sock
            # TLS may hold decrypted bytes the selector cannot see.
            while (self._client is client and isinstance(sock, ssl.SSLSocket)
                   and sock.pending()):
                self._drive(client.loop_read)
        if mask & _WRITE and self._client is client:
            self._drive(client.loop_write)

    def _drive(self, step: Callable[[], MQTTErrorCode]) -> None:
        try:
            step()
        except Exception:  # a bug in a callback: this connection ends, a fresh one follows
            self._log.exception("mqtt_io_failed")
            if self._client is not None and not self._lost:
                self.ready.clear()
                if self.connected.is_set():
                    self.connected.clear()
                    self._gauge(-1)
                self.last_error = "connection dropped after an internal error"
                self._lost = True
        if self._lost:
            self._connection_ended()

    def _connection_ended(self) -> None:
        """paho reported the connection gone: forget this client for good."""
        self._lost = False
        self._loop.unregister(self._sock)
        with contextlib.suppress(OSError, AttributeError):
            self._sock.close()
        self._client = None
        self._sock = None
        self._final_mids.clear()
        if self._on_taken_back is not None:
            self._on_taken_back(self)
        if self._stopping:
            self._finish_stop()
        else:
            self._wait_to_reconnect()

    def _begin_stop(self, final: list[Publication], timeout: float) -> None:
        self._stopping = True
        if self._state != "open" or not self.connected.is_set():
            if self._state == "open":
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
        client = self._client
        if client is not None:
            with contextlib.suppress(Exception):
                client.disconnect()
                client.loop_write()  # the DISCONNECT: paho then reports the end itself
        if self._client is not None:
            self._lost = False
            self._connection_ended()

    def _finish_stop(self) -> None:
        self._state = "stopped"
        self._loop.remove(self)
        if self.connected.is_set():
            self.connected.clear()
            self._gauge(-1)
        self.ready.clear()
        self._stopped.set()

    # -- paho callbacks (the I/O loop's thread) ----------------------------------------------

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
        if reason_code.is_failure:
            self.last_error = f"broker refused the connection: {reason_code}"
            self._log_connect_failure("mqtt_connect_refused", reason=str(reason_code))
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
        announced = getattr(properties, "MaximumPacketSize", None) if properties else None
        self.max_packet_size = int(announced) if announced else 0
        if self._ever_connected and self._metrics is not None:
            self._metrics.mqtt_reconnects.inc()
        self._log.info("mqtt_connected", reconnect=self._ever_connected)
        if self._options.password_in_clear:
            self._log.warning("mqtt_password_sent_in_clear", host=self._options.host,
                              setting="mqtt.allow_password_without_tls")
        self._ever_connected = True
        self.connected.set()
        self._gauge(1)
        if self._stopping:
            return
        if self._subscriptions:
            rc, mid = client.subscribe(self._subscriptions)
            self._sub_mid = mid if rc == MQTTErrorCode.MQTT_ERR_SUCCESS else None
            self._release_held()
            return
        self._release_held()
        self._publish_births()

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        if mid != self._sub_mid or client is not self._client:
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
            self._publish_now(birth.topic, birth.payload, birth.qos, birth.retain,
                              kind="status")
        self.ready.set()
        if self._on_ready is not None:
            self._on_ready(self)

    def _on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if client is not self._client:
            return
        self._final_mids.discard(mid)
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
        if client is not self._client:
            return
        self._lost = True  # handled once paho's call returns
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
        elif not self._stopping and (self.last_error is None
                                     or not self.last_error.startswith("broker refused")):
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
        except Exception:  # a handler bug must not stop the I/O loop
            self._log.exception("mqtt_handler_failed", topic=message.topic)


def _failure_reason(exc: BaseException | None) -> str:
    """A socket error as an operator reads it: what happened, not just an errno."""
    if exc is None:
        return "unknown"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (nothing listening on that port, or a firewall)"
    if isinstance(exc, socket.gaierror):
        return f"host name not resolved ({exc.strerror or exc})"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out (host unreachable or packets dropped)"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


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
