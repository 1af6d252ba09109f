"""MQTT request/response for the Payment Request API.

Requests arrive on ``<bridge root>/PaymentRequest/{create,list,get,update}`` as JSON objects
with an optional ``correlation_id`` and ``client_id``; each gets exactly one reply on
``.../<op>/response`` (and, with MQTT v5, also on the request's response topic with its
correlation data):

    {"correlation_id": ..., "op": "create", "ok": true, "result": {...}, "relay": "started"}
    {"correlation_id": ..., "op": "create", "ok": false,
     "error": {"code": 40023, "message": "...", "source": "mppg"}}

The service has its own MQTT session (``<client_id_prefix>-<host id>-payments``), persistent
for ``session_expiry`` seconds, so requests published while the bridge is down are queued by
the broker and answered when it is back (and the reader command topics on the bridge's own
session are never queued). The I/O loop's thread only checks the size and queues the message;
``workers`` threads run the HTTP calls from a bounded queue, each operation within
``operation_timeout``. A request that finds the queue full is answered at once with
``BridgeCode.BUSY``. Create and update replies are kept by requester and correlation id
(``bridge.mppg.replies``): a redelivery gets the same reply, a different request under the
same key is refused.
"""

from __future__ import annotations

import json
import queue
import threading
from typing import TYPE_CHECKING, Any, Final, Protocol

import structlog

from bridge.mppg.client import MppgClient
from bridge.mppg.errors import BridgeCode, BridgeInputError, BridgeSideError, ErrorCode, MppgError
from bridge.mppg.journal import RelayJournal, journal_path
from bridge.mppg.metrics import MppgMetrics
from bridge.mppg.operations import Deadline, Operations
from bridge.mppg.relay import RelayOptions
from bridge.mppg.relays import RelayManager
from bridge.mppg.replies import ENVELOPE, ReplyCache, request_digest, too_deep
from bridge.mppg.topics import PaymentTopics
from bridge.mqtt.link import InboundMessage, LinkOptions, MqttLink
from bridge.mqtt.loop import IoLoop

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from bridge.config import MppgSettings
    from bridge.metrics import Metrics

_log = structlog.get_logger("bridge.mppg")

_STOP_JOIN_S: Final = 3.0
_MAX_CLIENT_ID: Final = 128
_CACHED_OPS: Final = ("create", "update")


class Publisher(Protocol):
    """The part of ``MqttLink`` the service uses."""

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                correlation_data: bytes | None = None, kind: str = "message") -> object: ...


class PaymentRequestService:
    """Payment requests over MQTT: parse, call MPPG, reply, start status relays.

    Args:
        settings: the ``[mppg]`` section.
        bridge_root: ``BridgeTopics.root``.
        client: injected by tests; built from ``settings`` otherwise.
        registry: where the payment metrics go (the bridge's registry).
        link_options, client_id: with both, the service opens its own persistent MQTT
            session; without, ``attach()`` gives it a publisher (tests).
        loop: the I/O loop that drives that session (the bridge's own).
    """

    def __init__(self, settings: MppgSettings, bridge_root: str, *,
                 client: MppgClient | None = None,
                 registry: CollectorRegistry | None = None,
                 link_options: LinkOptions | None = None, client_id: str | None = None,
                 link_metrics: Metrics | None = None,
                 environ: dict[str, str] | None = None,
                 loop: IoLoop | None = None) -> None:
        self.topics = PaymentTopics(bridge_root)
        self.client = client if client is not None else MppgClient.from_settings(settings)
        self.metrics = MppgMetrics(registry)
        self.settings = settings
        self.operations = Operations(self.client, default_processor=settings.processor_name)
        self._publisher: Publisher | None = None
        # Bounded by ``settings.queue_size`` in on_message (the only producer), not by the
        # queue itself: stop() must always be able to queue the workers' wake-ups.
        self._queue: queue.SimpleQueue[tuple[str, InboundMessage] | None] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._workers = [threading.Thread(target=self._work, name=f"mppg-requests-{n}",
                                          daemon=True) for n in range(settings.workers)]
        self._replies = ReplyCache()
        self.journal = RelayJournal(journal_path(settings.state_dir, environ))
        self.relays = RelayManager(
            client=self.client, topics=self.topics, publish=self._publish_relay,
            options=RelayOptions(connect_timeout=settings.connect_timeout,
                                 reconnect_min_delay=settings.relay_reconnect_min_delay,
                                 reconnect_max_delay=settings.relay_reconnect_max_delay),
            max_relays=settings.max_relays, metrics=self.metrics, journal=self.journal)
        self.link: MqttLink | None = None
        if link_options is not None and client_id is not None:
            # Acknowledged once answered (manual_ack): a request the bridge was running when
            # it stopped or crashed is delivered again by the broker (persistent session).
            self.link = MqttLink(link_options, client_id=client_id, name="payments",
                                 subscriptions=self.subscriptions(), on_message=self.on_message,
                                 metrics=link_metrics, session_expiry=settings.session_expiry,
                                 loop=loop, manual_ack=True)
            self._publisher = self.link

    # -- wiring ------------------------------------------------------------------------------

    def subscriptions(self) -> list[tuple[str, int]]:
        return self.topics.subscriptions(qos=1)

    def attach(self, publisher: Publisher) -> None:
        """Where replies and relayed messages go, when the service has no link of its own."""
        self._publisher = publisher

    def start(self) -> None:
        """Workers first (the broker delivers queued requests right after CONNACK), then the
        relays the journal lists, then the MQTT session."""
        for worker in self._workers:
            worker.start()
        resumed = self.relays.resume()
        if resumed:
            self.metrics.relays_resumed.inc(len(resumed))
            _log.info("mppg_relays_resumed", count=len(resumed))
        if self.link is not None:
            self.link.start()

    def stop(self) -> None:
        self._stopping.set()
        for _ in self._workers:
            self._queue.put(None)
        self.relays.stop_all()
        for worker in self._workers:
            if worker.is_alive():
                worker.join(_STOP_JOIN_S)
        if self.link is not None:
            self.link.stop()
        self.client.close()

    # -- the I/O loop's thread ---------------------------------------------------------------

    def on_message(self, message: InboundMessage) -> None:
        """Queue a request for the workers; never blocks the I/O loop, never parses a
        request that is over the limits (their refusal is the worker's job). What is not
        queued is acknowledged here, what is queued by the worker once answered: every
        message once, or every later acknowledgement would wait behind it (arrival order)."""
        if not self._enqueue(message):
            _acknowledge(message)

    def _enqueue(self, message: InboundMessage) -> bool:
        """Queue ``message`` for a worker (True), or answer it here (False)."""
        op = self.topics.operation_of(message.topic)
        if op is None:
            return False
        if message.retain:
            # A retained request is a stale one the broker replays to every new session:
            # running it would create a payment request on each bridge restart.
            self._reply(op, message, self._envelope_of(message.payload),
                        error=BridgeSideError(BridgeCode.RETAINED_REQUEST,
                                              "retained requests are refused; publish with "
                                              "retain=false"))
            return False
        if self._queue.qsize() >= self.settings.queue_size:
            self._reply(op, message, self._envelope_of(message.payload),
                        error=BridgeSideError(BridgeCode.BUSY, "too many payment requests "
                                              "waiting; try again shortly"))
            return False
        self._queue.put((op, message))
        return True

    # -- the workers -------------------------------------------------------------------------

    def _work(self) -> None:
        while (item := self._queue.get()) is not None and not self._stopping.is_set():
            op, message = item
            try:
                self._serve(op, message)
            except Exception:  # one bad request must not end the worker
                _log.exception("mppg_request_failed", op=op)
            finally:
                _acknowledge(message)

    def _serve(self, op: str, message: InboundMessage) -> None:
        try:
            body = self._parse_body(message.payload, allow_empty=op == "list")
        except MppgError as exc:
            self._reply(op, message, {}, error=exc)
            return
        envelope: dict[str, Any] = {k: body[k] for k in ("correlation_id", "client_id")
                                    if k in body}
        client_id = body.get("client_id")
        if client_id is not None and not (isinstance(client_id, str)
                                          and 0 < len(client_id) <= _MAX_CLIENT_ID):
            self._reply(op, message, envelope, error=BridgeInputError(
                ErrorCode.INPUT_FORMAT, f"client_id must be a string of 1..{_MAX_CLIENT_ID} "
                "characters"))
            return
        # The body's correlation_id, else the MQTT v5 correlation data.
        correlation: str | None = None
        if body.get("correlation_id") is not None:
            correlation = json.dumps(body["correlation_id"], sort_keys=True)
        elif message.correlation_data:
            correlation = f"v5:{message.correlation_data.hex()}"
        key: tuple[str, str, str] | None = None
        if op in _CACHED_OPS and correlation is not None:
            requester = message.response_topic or client_id or ""
            key = (requester, op, correlation)
            claim, earlier = self._replies.claim(key, request_digest(op, body),
                                                 wait=self.settings.operation_timeout)
            if claim == "replay" and earlier is not None:
                _log.info("mppg_request_replayed", op=op)
                self._send(op, message, earlier)
                return
            if claim == "conflict":
                key = None  # the entry is the other request's
                self._reply(op, message, envelope, error=BridgeSideError(
                    BridgeCode.CORRELATION_REUSED, "this correlation_id was already used for a "
                    "different request (from the same response topic / client_id, or from a "
                    "client that gave neither); use a new one"))
                return
        payload: bytes | None = None
        try:
            payload = self._run(op, message, body, envelope)
        finally:
            if key is not None:
                self._replies.finish(key, payload)

    def _run(self, op: str, message: InboundMessage, body: dict[str, Any],
             envelope: dict[str, Any]) -> bytes | None:
        """Run the operation and reply; the reply when it succeeded."""
        fields = {k: v for k, v in body.items() if k not in ENVELOPE}
        try:
            outcome = self.operations.run(op, fields, Deadline(self.settings.operation_timeout),
                                          redelivered=message.duplicate)
        except MppgError as exc:
            _log.info("mppg_request_refused", op=op, code=exc.code, source=exc.source)
            self._reply(op, message, envelope, error=exc)
            return None
        if outcome.notes and outcome.notes.get("recovered"):
            self.metrics.creates_recovered.inc()
        relay: str | None = None
        if outcome.detail is not None:
            _log.info("mppg_request_done", op=op,
                      payment_request=outcome.detail.payment_request_id,
                      status=outcome.detail.status)
            relay = "not requested"
            if body.get("relay", True) is not False:
                relay = self._start_relay(outcome)
        return self._reply(op, message, envelope, result=outcome.result, relay=relay,
                           notes=outcome.notes)

    def _start_relay(self, outcome: Any) -> str:
        try:
            return self.relays.start(outcome.detail)
        except MppgError as exc:  # an id we cannot put in a topic
            _log.warning("mppg_relay_refused", error=exc.message)
            return "refused"

    def _parse_body(self, payload: bytes, *, allow_empty: bool) -> dict[str, Any]:
        limit = self.settings.max_request_bytes
        if len(payload) > limit:
            raise BridgeSideError(BridgeCode.TOO_LARGE, f"the request is {len(payload)} "
                                  f"bytes; at most {limit} are accepted")
        if allow_empty and not payload.strip():
            return {}
        if too_deep(payload, self.settings.max_json_depth):
            raise BridgeInputError(ErrorCode.INPUT_FORMAT, "the request nests deeper than "
                                   f"{self.settings.max_json_depth} levels")
        try:
            body = json.loads(payload)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise BridgeInputError(ErrorCode.INPUT_FORMAT,
                                   "the request is not valid JSON") from None
        if not isinstance(body, dict):
            raise BridgeInputError(ErrorCode.INPUT_FORMAT, "the request must be a JSON object")
        return body

    def _envelope_of(self, payload: bytes) -> dict[str, Any]:
        """The correlation and client ids of a request we will not run, if readable."""
        try:
            body = self._parse_body(payload, allow_empty=True)
        except MppgError:
            return {}
        return {k: body[k] for k in ("correlation_id", "client_id") if k in body}

    # -- publishing --------------------------------------------------------------------------

    def _reply(self, op: str, message: InboundMessage, envelope: dict[str, Any], *,
               result: dict[str, Any] | None = None, relay: str | None = None,
               error: MppgError | None = None, notes: dict[str, Any] | None = None) -> bytes:
        reply: dict[str, Any] = {"correlation_id": envelope.get("correlation_id")}
        if "client_id" in envelope:
            reply["client_id"] = envelope["client_id"]
        reply.update({"op": op, "ok": error is None})
        if error is not None:
            reply["error"] = error.to_dict()
            self.metrics.request_done(op, f"{error.source}_error")
        else:
            reply["result"] = result
            if relay is not None:
                reply["relay"] = relay
            reply.update(notes or {})
            self.metrics.request_done(op, "ok")
        payload = json.dumps(reply).encode()
        self._send(op, message, payload)
        return payload

    def _send(self, op: str, message: InboundMessage, payload: bytes) -> None:
        publisher = self._publisher
        if publisher is None:
            return
        targets = [self.topics.response(op)]
        if message.response_topic and message.response_topic not in targets:
            targets.append(message.response_topic)
        for topic in targets:
            publisher.publish(topic, payload, qos=1, retain=False,
                              correlation_data=message.correlation_data, kind="payment")

    def _publish_relay(self, topic: str, payload: bytes, retain: bool) -> None:
        publisher = self._publisher
        if publisher is not None:
            publisher.publish(topic, payload, qos=1, retain=retain, kind="payment")


def _acknowledge(message: InboundMessage) -> None:
    """Done with ``message``: the broker may forget it (no-op unless manual_ack)."""
    if message.ack is not None:
        message.ack()


__all__ = ["PaymentRequestService", "Publisher"]
