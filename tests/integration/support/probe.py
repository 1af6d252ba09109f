"""``MqttProbe``: a paho-mqtt 2.x test client that collects what a broker delivers.

Every wait is bounded and fails with an ``AssertionError`` saying what happened instead.
Failure messages describe messages with ``Received.describe()``: topic, length and a short
prefix, never a whole card-data message.
"""

from __future__ import annotations

import itertools
import os
import queue
import secrets
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from tests.integration.support.broker import Broker
from tests.integration.support.messages import Received, received_from

CONNECT_TIMEOUT_S: Final = 5.0
ACK_TIMEOUT_S: Final = 5.0
WAIT_TIMEOUT_S: Final = 5.0
RECONNECT_TIMEOUT_S: Final = 15.0
# paho's reconnect back-off (whole seconds in its API) while a broker is down.
RECONNECT_MIN_DELAY_S: Final = 1
RECONNECT_MAX_DELAY_S: Final = 2
KEEPALIVE_S: Final = 30
SHOWN_MESSAGES: Final = 20
KEPT_ERRORS: Final = 20
# MQTT v5 section 2.4: reason codes from 0x80 up are failures.
FAILURE_REASON: Final = 0x80

_ids = itertools.count(1)


class ProbeConnectError(Exception):
    """The broker refused the connection (CONNACK failure) or dropped it before CONNACK.

    Attributes:
        reason_code: the CONNACK reason code, or None when none arrived.
        detail: the reason's name, or paho's error messages (e.g. a TLS alert).
    """

    def __init__(self, reason_code: int | None, detail: str) -> None:
        self.reason_code = reason_code
        self.detail = detail
        code = "no CONNACK" if reason_code is None else f"CONNACK reason 0x{reason_code:02X}"
        super().__init__(f"{code}: {detail}")


class _ClosingContext(ssl.SSLContext):
    """Remembers the last socket it wrapped: when the TLS handshake fails inside paho's
    connect(), paho drops that socket without closing it (a ResourceWarning, which is an
    error under our pytest settings), so the probe closes it."""

    _last: ssl.SSLSocket | None = None

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        self._last = super().wrap_socket(*args, **kwargs)
        return self._last

    def close_last(self) -> None:
        if self._last is not None:
            self._last.close()
            self._last = None


class MqttProbe:
    """A test client on one broker: subscribe, publish with acks, wait for messages.

    Credentials and TLS default to what ``broker`` needs (its first user, its CA, and its
    client certificate when it requires one); the keyword arguments override them.

    Args:
        broker: where to connect.
        client_id: defaults to a unique ``probe-<pid>-<n>-<random>``.
        username: overrides the broker's user (with ``password``).
        password: the password for ``username``.
        anonymous: connect without credentials even to a password broker.
        protocol: MQTT version (v5 by default).
        ca_file: trust this CA instead of the broker's.
        client_cert: present the broker's client certificate (True), none (False), a
            (cert, key) pair, or, by default, the broker's one only if it requires one.
        tls_version: speak only this TLS version (a refusal looks different in 1.2 and 1.3).
        session_expiry: MQTT v5 session expiry interval in seconds: the broker keeps the
            session (subscriptions and queued QoS 1/2 messages) that long after a
            disconnect, and reconnects resume it. The first connect still starts clean.
    """

    def __init__(self, broker: Broker, *, client_id: str | None = None,
                 username: str | None = None, password: str | None = None,
                 anonymous: bool = False,
                 protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5,
                 ca_file: Path | None = None,
                 client_cert: bool | tuple[Path, Path] | None = None,
                 tls_version: ssl.TLSVersion | None = None,
                 session_expiry: int | None = None) -> None:
        if session_expiry is not None and protocol != MQTTProtocolVersion.MQTTv5:
            raise ValueError("session_expiry needs MQTT v5")
        self.broker = broker
        self.session_expiry = session_expiry
        self.client_id = client_id or f"probe-{os.getpid()}-{next(_ids)}-{secrets.token_hex(3)}"
        self.inbox: queue.Queue[Received] = queue.Queue()
        self._kept: list[Received] = []
        self._cond = threading.Condition()
        self._connack: tuple[int, str] | None = None
        self._connections = 0
        self._subacks: dict[int, list[int]] = {}
        self._pubacks: dict[int, tuple[int, str]] = {}
        self._subscriptions: list[tuple[str, int]] = []
        self._resubscribe_mid: int | None = None
        self._errors: deque[str] = deque(maxlen=KEPT_ERRORS)
        self._dropped = False
        self._looping = False
        self._closed = False
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                                  protocol=protocol)
        self.client.reconnect_delay_set(RECONNECT_MIN_DELAY_S, RECONNECT_MAX_DELAY_S)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message
        self.client.on_log = self._on_log
        if username is None and not anonymous:
            username, password = broker.username, broker.password
        if username is not None:
            self.client.username_pw_set(username, password)
        self._context: _ClosingContext | None = None
        self._configure_tls(ca_file, client_cert, tls_version)

    def _configure_tls(self, ca_file: Path | None, client_cert: bool | tuple[Path, Path] | None,
                       tls_version: ssl.TLSVersion | None) -> None:
        if not self.broker.tls and ca_file is None:
            return
        ca = ca_file or self.broker.ca_file
        assert ca is not None
        # PROTOCOL_TLS_CLIENT verifies the chain and the host name (SAN IP:127.0.0.1).
        context = _ClosingContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(cafile=str(ca))
        if tls_version is not None:
            context.minimum_version = context.maximum_version = tls_version
        pair: tuple[Path, Path] | None = None
        if isinstance(client_cert, tuple):
            pair = client_cert
        elif client_cert or (client_cert is None and self.broker.require_certificate):
            assert self.broker.client_cert is not None and self.broker.client_key is not None
            pair = (self.broker.client_cert, self.broker.client_key)
        if pair is not None:
            context.load_cert_chain(str(pair[0]), str(pair[1]))
        self._context = context
        self.client.tls_set_context(context)

    # -- paho callbacks (network thread) ------------------------------------------------

    def _on_connect(self, client: paho.Client, _userdata: Any, _flags: Any,
                    reason: ReasonCode, _props: Properties | None) -> None:
        with self._cond:
            self._connack = (int(reason.value), str(reason))
            if not reason.is_failure:
                self._connections += 1
                # A restarted broker (persistence false) forgot our session: subscribe again.
                if self._connections > 1 and self._subscriptions:
                    self._resubscribe_mid = client.subscribe(list(self._subscriptions))[1]
            self._cond.notify_all()

    def _on_disconnect(self, client: paho.Client, _userdata: Any, _flags: Any,
                       _reason: ReasonCode, _props: Properties | None) -> None:
        with self._cond:
            self._dropped = True
            never_connected = self._connections == 0
            self._cond.notify_all()
        if never_connected:
            # A refused probe must not retry: paho's thread ends now instead of sleeping
            # through its reconnect delay (loop_stop() from paho's own thread only flags it).
            client.loop_stop()

    def _on_subscribe(self, _client: paho.Client, _userdata: Any, mid: int,
                      reasons: list[ReasonCode], _props: Properties | None) -> None:
        with self._cond:
            self._subacks[mid] = [int(r.value) for r in reasons]
            self._cond.notify_all()

    def _on_publish(self, _client: paho.Client, _userdata: Any, mid: int,
                    reason: ReasonCode, _props: Properties | None) -> None:
        with self._cond:
            self._pubacks[mid] = (int(reason.value), str(reason))
            self._cond.notify_all()

    def _on_message(self, _client: paho.Client, _userdata: Any,
                    message: paho.MQTTMessage) -> None:
        self.inbox.put(received_from(message))

    def _on_log(self, _client: paho.Client, _userdata: Any, level: int, text: str) -> None:
        if level in (paho.MQTT_LOG_ERR, paho.MQTT_LOG_WARNING):
            self._errors.append(text)

    # -- connection ---------------------------------------------------------------------

    def connect(self, timeout: float = CONNECT_TIMEOUT_S) -> MqttProbe:
        """Connect (TCP and TLS handshake happen here), start paho's network thread and
        wait for a successful CONNACK.

        Raises:
            ssl.SSLError: the TLS handshake failed (e.g. the broker's CA is not trusted).
            OSError: nothing listens on the port.
            ProbeConnectError: CONNACK with a failure reason, or the connection dropped.
        """
        properties: Properties | None = None
        if self.session_expiry is not None:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = self.session_expiry
        try:
            # paho starts clean the first time only (its default), then resumes the session.
            self.client.connect(self.broker.host, self.broker.port, keepalive=KEEPALIVE_S,
                                properties=properties)
        except OSError:
            self._closed = True
            if self._context is not None:
                self._context.close_last()
            raise
        # paho may already have met the broker's refusal inside connect() (a TLS 1.3
        # alert): then there is nothing for its thread to do but retry, so none is started.
        if not self._dropped:
            self.client.loop_start()
            self._looping = True
        with self._cond:
            self._cond.wait_for(lambda: self._connack is not None or self._dropped, timeout)
            connack = self._connack
        if connack is not None and connack[0] < FAILURE_REASON:
            return self
        self.close()
        if connack is not None:
            raise ProbeConnectError(connack[0], connack[1])
        raise ProbeConnectError(None, "; ".join(self._errors) or f"nothing within {timeout} s")

    @property
    def connections(self) -> int:
        """How many successful CONNACKs this probe has had (reconnects included)."""
        with self._cond:
            return self._connections

    def wait_connections(self, count: int, timeout: float = RECONNECT_TIMEOUT_S) -> None:
        """Wait until ``count`` connections succeeded and subscriptions are back in place.

        Use after a broker outage: ``n = probe.connections``, restart the broker, then
        ``probe.wait_connections(n + 1)``.
        """
        def ready() -> bool:
            mid = self._resubscribe_mid
            return self._connections >= count and (mid is None or mid in self._subacks)

        with self._cond:
            if not self._cond.wait_for(ready, timeout):
                raise AssertionError(f"{self.client_id}: {self._connections} connections "
                                     f"after {timeout} s, wanted {count}; last errors: "
                                     f"{list(self._errors)[-3:]}")

    # -- subscribe and publish ----------------------------------------------------------

    def _wait_ack(self, acks: dict[int, Any], mid: int, timeout: float, what: str) -> Any:
        with self._cond:
            if not self._cond.wait_for(lambda: mid in acks, timeout):
                raise AssertionError(f"{self.client_id}: no {what} within {timeout} s; "
                                     f"last errors: {list(self._errors)[-3:]}")
            return acks.pop(mid)

    def subscribe(self, *topics: str, qos: int = 1, timeout: float = ACK_TIMEOUT_S) -> list[int]:
        """Subscribe and wait for the SUBACK; returns the granted QoS per topic.

        Raises:
            AssertionError: no SUBACK in time, or the broker refused a topic.
        """
        wanted = [(topic, qos) for topic in topics]
        result, mid = self.client.subscribe(wanted)
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise AssertionError(f"subscribe {topics} not sent: {paho.error_string(result)}")
        assert mid is not None
        codes: list[int] = self._wait_ack(self._subacks, mid, timeout, f"SUBACK for {topics}")
        if any(code >= FAILURE_REASON for code in codes):
            raise AssertionError(f"broker refused subscription {topics}: {codes}")
        with self._cond:
            self._subscriptions.extend(wanted)
        return codes

    def publish(self, topic: str, payload: bytes | str, *, qos: int = 1, retain: bool = False,
                properties: Properties | None = None, timeout: float = ACK_TIMEOUT_S,
                check: bool = True) -> int:
        """Publish and wait until it is acknowledged (QoS 0: sent); returns the reason code.

        Args:
            check: fail on a refusal (reason >= 0x80); False returns its code instead.

        Raises:
            AssertionError: not acknowledged in time, or refused while ``check``.
        """
        info = self.client.publish(topic, payload, qos=qos, retain=retain,
                                   properties=properties)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise AssertionError(f"publish to {topic} not sent: {paho.error_string(info.rc)}")
        assert info.mid is not None
        code, name = self._wait_ack(self._pubacks, info.mid, timeout, f"PUBACK for {topic}")
        if check and code >= FAILURE_REASON:
            raise AssertionError(f"broker refused publish to {topic}: 0x{code:02X} {name}")
        return int(code)

    # -- received messages --------------------------------------------------------------

    def wait_for(self, match: str | Callable[[Received], bool],
                 timeout: float = WAIT_TIMEOUT_S) -> Received:
        """The first message, in arrival order, on topic ``match`` or satisfying it.

        Messages passed over on the way are dropped if they share the matched message's
        topic (they came before it) and kept for later calls otherwise.

        Raises:
            AssertionError: nothing matched within ``timeout``; lists what arrived instead.
        """
        def test(message: Received) -> bool:
            return message.topic == match if isinstance(match, str) else bool(match(message))

        skipped: list[Received] = []
        deadline = time.monotonic() + timeout
        while True:
            if self._kept:
                message = self._kept.pop(0)
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._kept = skipped + self._kept
                    got = [m.describe() for m in skipped[-SHOWN_MESSAGES:]]
                    wanted = match if isinstance(match, str) else "predicate"
                    raise AssertionError(f"{self.client_id}: nothing matched {wanted} within "
                                         f"{timeout} s; got {len(skipped)}: {got}")
                try:
                    message = self.inbox.get(timeout=remaining)
                except queue.Empty:
                    continue
            if test(message):
                self._kept = [m for m in skipped if m.topic != message.topic] + self._kept
                return message
            skipped.append(message)

    def expect_retained(self, topic: str, payload: bytes, timeout: float = WAIT_TIMEOUT_S, *,
                        stored: bool = False) -> Received:
        """Wait until ``topic`` carries ``payload``: live, or as the broker's stored copy.

        Args:
            stored: require the retain flag, i.e. the copy the broker kept (a live
                delivery to an existing subscriber has it cleared, MQTT v5 section 3.3.1.3).
        """
        return self.wait_for(lambda m: m.topic == topic and m.payload == payload
                             and (m.retain or not stored), timeout)

    def drain(self) -> list[Received]:
        """Forget, and return, everything received but not yet matched."""
        drained, self._kept = self._kept, []
        while True:
            try:
                drained.append(self.inbox.get_nowait())
            except queue.Empty:
                return drained

    # -- cleanup ------------------------------------------------------------------------

    def close(self) -> None:
        """Disconnect and stop paho's thread; idempotent."""
        if self._closed:
            return
        self._closed = True
        self.client.disconnect()
        if self._looping:
            # paho leaves its loop within a second once disconnect() set its state, even
            # while it is waiting to reconnect to a stopped broker.
            self.client.loop_stop()

    def __enter__(self) -> MqttProbe:
        if not self._looping and not self._closed:
            self.connect()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
