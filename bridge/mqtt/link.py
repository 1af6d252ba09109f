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

This module keeps the link's API, its publishing and the I/O turn; how its connections come
and go (connect, CONNACK/SUBACK and births, a lost connection, the stop) is its base
``LinkLifecycle`` in ``bridge.mqtt.lifecycle``.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Final, Literal

import structlog

from bridge.backoff import Backoff
from bridge.metrics import Metrics
from bridge.mqtt import packets
from bridge.mqtt.connecting import ConnectFailures, tls_context
from bridge.mqtt.inbound import Deliveries, MessageHandler
from bridge.mqtt.lifecycle import LinkLifecycle
from bridge.mqtt.loop import IoLoop, default_loop
from bridge.mqtt.options import (
    InboundMessage,
    LinkOptions,
    Publication,
    TlsOptions,
)
from bridge.mqtt.outbound import Held, Publisher
from bridge.mqtt.wire import Connection, ConnectionClosed

_log = structlog.get_logger("bridge.mqtt")

# How long stop() waits for the final publishes (retained "disconnected") to be acknowledged.
STOP_PUBLISH_TIMEOUT: Final = 3.0
# lazy_acks: a stream's acknowledgements are read at the latest this long after a turn (well
# within the courier's SPOOL_AFTER, so a healthy stream still never touches the spool).
ACK_COLLECT: Final = 0.01
_READ: Final = 1  # selectors.EVENT_READ
_WRITE: Final = 2  # selectors.EVENT_WRITE

_link_tokens = itertools.count(1)

# (link, mid, failure reason or None) once the broker acknowledged a QoS>0 publish.
PublishedHandler = Callable[["MqttLink", int, str | None], None]


class MqttLink(LinkLifecycle):
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
        lazy_acks: a stream's PUBACKs are read on the loop's turns instead of waking it
            (``ACK_COLLECT`` at the latest); see ``_reads_lazily``.
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
        lazy_acks: bool = False,
    ) -> None:
        self._options = options
        self._lazy_acks = lazy_acks
        self._read_wanted = False
        self._session_expiry = session_expiry
        self._client_id = client_id
        self._name = name
        self._will = will
        self._subscriptions = list(subscriptions)
        self._births = list(births)
        self._on_published = on_published
        self._on_ready = on_ready
        self._on_taken_back = on_taken_back
        self._loop = loop if loop is not None else default_loop()
        self._tls_context = tls_context(options.tls) if options.tls is not None else None
        self.token = next(_link_tokens)  # unique for the process (id() values get reused)
        self.generation = 0  # counts successful connections
        self._metrics = metrics
        self._log = _log.bind(link=name, client_id=client_id, **(log_context or {}))
        self.v5 = options.protocol == "5"
        self.connected = threading.Event()
        self.ready = threading.Event()  # connected, subscribed and births sent
        self.last_error: str | None = None
        self._failures = ConnectFailures(options, self._log)
        self._lock = threading.Lock()  # births only
        self._backoff = Backoff(options.reconnect_min_delay, options.reconnect_max_delay)
        self.reconnect_delays: deque[float] = deque(maxlen=32)  # the last ones drawn
        self._out = Publisher(v5=self.v5, metrics=metrics, log=self._log)
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
        self._connected_at = 0.0
        self._inbound = Deliveries(on_message, manual_ack=manual_ack,
                                   on_loop=self._loop.call_in_loop, log=self._log)

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

    def publish_message(self, topic: str, payload: bytes, qos: int,
                        properties: bytes | None) -> int | None:
        """The courier's publish of a device message, on the I/O loop's thread: its packet id
        (0 at QoS 0), or None if refused (not connected, stopping, over the broker's limits).
        ``properties``: the encoded v5 block (``bridge.mqtt.encoding.message_properties``).
        Not counted in the publish metric: ``count_published`` takes the batch's count."""
        conn = self._conn
        if conn is None or self._state != "open" or self._stopping:
            self._out.failed(topic, "not connected")
            return None
        return self._out.send_message(conn, topic, payload, qos, properties)

    def count_published(self, count: int) -> None:
        if self._metrics is not None:
            self._metrics.mqtt_publish("message", count)

    @property
    def max_packet_size(self) -> int:
        """The broker's limit from its MQTT v5 CONNACK; 0: none said."""
        return self._out.max_packet_size

    def _publish_or_hold(self, item: Held, tracked: bool) -> int | None:
        if tracked or self.connected.is_set() or self._state == "stopped":
            return self._publish_now(item)
        self._out.hold(item)  # untracked, while away: sent right after the next CONNACK
        return 0

    def _release_held(self) -> None:
        """Right after CONNACK: what was published while we were away, in order."""
        held = self._out.held
        while held and self.connected.is_set():
            self._publish_now(held.popleft())

    def _publish_now(self, item: Held) -> int | None:
        conn = self._conn
        if (conn is None or self._state != "open"
                or (self._stopping and item[6] not in ("status", "final"))):
            self._out.failed(item[0], "not connected")
            return None
        return self._out.send(conn, item)

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
        if state == "open" and conn.in_flight and not self._events & _READ:
            # Unwatched since the last turn: the acknowledgements that came meanwhile are read
            # before deciding, or a new burst on top of the last one's unread acknowledgements
            # looks like a half-full window and the socket is watched again for one turn.
            self._on_io(_READ)
            if self._conn is not conn:
                return None
        lazy = self._reads_lazily(conn, state)
        try:
            pending = conn.flush(now) if conn.out else False
        except OSError as exc:
            self._lost(exc, before_connack=state == "handshake")
            return None
        events = (_WRITE if pending else 0) | (0 if lazy else _READ)
        if events != self._events:  # a selector change is a system call: only on change
            self._events = events
            if events:
                self._loop.register(conn.sock, events, self._on_io)
            else:
                self._loop.unregister(conn.sock)
        if lazy:
            due = min(due, now + ACK_COLLECT)
        return due

    def _reads_lazily(self, conn: Connection, state: str) -> bool:
        """While a stream is acknowledged well within the window, acknowledgements are read
        on the loop's next turn (or within ``ACK_COLLECT``) rather than each waking the loop:
        a wake-up per PUBACK costs more than the PUBACK. Otherwise (idle, a full window, a
        ping or a command awaited, stopping) the socket is watched as usual."""
        return (self._lazy_acks and state == "open" and not self._stopping
                and not self._read_wanted and conn.ping_sent is None
                and 0 < len(conn.in_flight) < conn.window // 2)

    def read_now(self) -> None:
        """Something for this session is on its way (a command seen on another session):
        read now, and watch the socket until something comes (the loop's thread)."""
        conn = self._conn
        if conn is None or self._events & _READ:
            return
        self._read_wanted = True
        self._on_io(_READ)

    def _on_io(self, mask: int) -> None:
        conn = self._conn
        if conn is None:
            return
        now = time.monotonic()
        try:
            if mask & _READ:
                received = conn.read(now)
                if received:
                    self._read_wanted = False
                for packet in received:
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
            self._inbound.publish(conn, packet)
        elif isinstance(packet, packets.Connack):
            self._on_connack(conn, packet)
        elif isinstance(packet, packets.Suback):
            self._on_suback(conn, packet)
        elif isinstance(packet, packets.Pingresp):
            conn.ping_sent = None
        else:  # Disconnect from the broker (v5)
            self._lost(f"the broker disconnected us: {packets.reason_name(packet.reason)}",
                       before_connack=self._state == "handshake")

    def _on_ack(self, conn: Connection, ack: packets.Ack) -> None:
        kind = ack.kind
        if kind == packets.PUBREL:  # the broker's QoS 2 delivery to us is complete
            self._inbound.release(conn, ack.mid)
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


__all__ = [
    "InboundMessage",
    "LinkOptions",
    "MqttLink",
    "Publication",
    "TlsOptions",
]
