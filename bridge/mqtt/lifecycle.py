"""How an ``MqttLink``'s connections come and go: connecting, the CONNACK and SUBACK (then the
births), a lost connection and the wait before the next attempt, and the stopping sequence
(final publishes, DISCONNECT, stopped).

``LinkLifecycle`` is the base of ``bridge.mqtt.link.MqttLink``, which supplies the publishing
and the I/O turn (``service``, ``_on_io``: the hot path) and constructs every attribute this
base uses. Everything here runs on the I/O loop's thread, but for ``_connect``'s blocking part
(the loop's connector thread).
"""

from __future__ import annotations

import abc
import contextlib
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final, Literal

from bridge.backoff import Backoff
from bridge.metrics import Metrics
from bridge.mqtt import packets
from bridge.mqtt.connecting import ConnectFailures, connect_packet, keepalive_for, tls_reason
from bridge.mqtt.inbound import Deliveries
from bridge.mqtt.loop import IoLoop
from bridge.mqtt.options import LinkOptions, Publication, failure_reason
from bridge.mqtt.outbound import Held, Publisher
from bridge.mqtt.wire import Connection, open_socket

_STABLE_AFTER: Final = 10.0  # seconds a connection lasts before the backoff starts over
_READ: Final = 1  # selectors.EVENT_READ (as in bridge.mqtt.link)


class LinkLifecycle(abc.ABC):
    """The connection state machine of ``MqttLink`` (its base; not used on its own).

    ``_state`` goes new -> waiting -> connecting -> handshake -> open, back to waiting when a
    connection is lost or an attempt fails, and to stopped once ``stop()`` has run its course.

    The attributes below are set by ``MqttLink.__init__`` and shared with it: the
    configuration (``_options``, ``_client_id``, ``_will``, ``_session_expiry``,
    ``_tls_context``, ``_subscriptions``, ``_births`` under ``_lock``, ``_name``,
    ``_metrics``, ``_log``, ``_on_ready``, ``_on_taken_back``), its parts (``_loop``,
    ``_failures``, ``_backoff``, ``_out``, ``_inbound``), what others read (``connected``,
    ``ready``, ``last_error``, ``generation``, ``reconnect_delays``, ``v5``) and the loop
    thread's state (``_conn``, ``_attempt``, ``_state``, ``_next_attempt``, ``_events``,
    ``_read_wanted``, ``_sub_mid``, ``_stopping``, ``_final_mids``, ``_stop_deadline``,
    ``_stopped``, ``_connected_at``). ``MqttLink`` supplies ``service`` and ``_on_io`` (the
    I/O turn), ``_publish_now`` and ``_release_held`` (publishing).
    """

    _options: LinkOptions
    _client_id: str
    _will: Publication | None
    _session_expiry: int
    _tls_context: ssl.SSLContext | None
    _subscriptions: list[tuple[str, int]]
    _births: list[Publication]
    _lock: threading.Lock
    _name: str
    _metrics: Metrics | None
    _log: Any
    _on_ready: Callable[[Any], None] | None  # given an MqttLink (this class's subclass)
    _on_taken_back: Callable[[Any], None] | None  # likewise
    _loop: IoLoop
    _failures: ConnectFailures
    _backoff: Backoff
    _out: Publisher
    _inbound: Deliveries
    connected: threading.Event
    ready: threading.Event
    last_error: str | None
    generation: int
    reconnect_delays: deque[float]
    v5: bool
    _conn: Connection | None
    _attempt: int
    _state: Literal["new", "waiting", "connecting", "handshake", "open", "stopped"]
    _next_attempt: float
    _events: int
    _read_wanted: bool
    _sub_mid: int | None
    _stopping: bool
    _final_mids: set[int]
    _stop_deadline: float
    _stopped: threading.Event
    _connected_at: float

    @abc.abstractmethod
    def service(self, now: float) -> float | None:
        """One turn of the I/O loop for this link (``MqttLink``)."""

    @abc.abstractmethod
    def _on_io(self, mask: int) -> None:
        """The socket is readable/writable (``MqttLink``)."""

    @abc.abstractmethod
    def _publish_now(self, item: Held) -> int | None:
        """Publish on the open connection, or refuse (``MqttLink``)."""

    @abc.abstractmethod
    def _release_held(self) -> None:
        """Send what was published while away (``MqttLink``)."""

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
        keepalive = keepalive_for(o)
        connect = connect_packet(o, self._client_id, will=self._will,
                                 session_expiry=self._session_expiry)
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
        self._conn = Connection(sock, v5=self.v5, keepalive=keepalive, now=time.monotonic(),
                                max_packet=self._options.max_incoming_packet)
        self._state = "handshake"
        self._events = _READ
        self._loop.register(sock, _READ, self._on_io)

    def _connect_failed(self, attempt: int, exc: BaseException) -> None:
        if attempt != self._attempt:
            return
        if self._stopping:
            self._finish_stop()
            return
        self.last_error = self._failures.failed(exc, last_error=self.last_error)
        self._wait_to_reconnect()

    def _wait_to_reconnect(self) -> None:
        delay = self._backoff.next_delay()
        self.reconnect_delays.append(delay)
        self._state = "waiting"
        self._next_attempt = time.monotonic() + delay

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
            if isinstance(cause, BaseException) and (
                    tls := tls_reason(self._options, cause)) is not None:
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
        if self.connected.is_set() and time.monotonic() - self._connected_at >= _STABLE_AFTER:
            # A loss after a lasting connection draws its first delay from [min, 2 x min]:
            # readers that lost the same broker do not come back in the same instant. One
            # the broker ends at once (session taken over, a setting it refuses) keeps
            # backing off instead of reconnecting at the minimum delay forever.
            self._backoff.reset()
            self._backoff.attempts = 1
        self._loop.unregister(conn.sock)
        conn.close()
        self._events = 0
        self._read_wanted = False
        self._inbound.ended()
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
            self._failures.log("mqtt_connect_refused", quiet=self._stopping, reason=name)
            self._end_connection(report=False)
            if self._stopping:
                self._finish_stop()
            else:
                self._wait_to_reconnect()
            return
        self.last_error = None
        self._failures.succeeded()
        self._inbound.opened(conn, session_present=connack.session_present)
        self._connected_at = time.monotonic()  # the backoff restarts if this one lasts
        self.generation += 1
        props = connack.properties
        self._out.limits(props)
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
            self._publish_now(_status(birth))
        self.ready.set()
        if self._on_ready is not None:
            self._on_ready(self)

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
            mid = self._publish_now(_status(publication))
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


def _status(publication: Publication) -> Held:
    return (publication.topic, publication.payload, publication.qos, publication.retain, (),
            None, "status", None)


__all__ = ["LinkLifecycle"]
