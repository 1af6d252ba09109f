"""MQTT request/response for the Payment Request API.

Requests arrive on ``<bridge root>/PaymentRequest/{create,list,get,update}`` as JSON objects
with an optional ``correlation_id``; each gets exactly one reply on ``.../<op>/response``
(and, with MQTT v5, also on the request's response topic with its correlation data):

    {"correlation_id": ..., "op": "create", "ok": true, "result": {...}, "relay": "started"}
    {"correlation_id": ..., "op": "create", "ok": false,
     "error": {"code": 40023, "message": "...", "source": "mppg"}}

paho's network thread only parses the topic and queues the message: the HTTP calls (up to
``request_timeout`` each) run on one worker thread, in arrival order, from a bounded queue;
a request that finds the queue full is answered at once with ``BridgeCode.BUSY``.
"""

from __future__ import annotations

import json
import queue
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Final, Protocol

import structlog

from bridge.mppg.client import MppgClient
from bridge.mppg.definition import check_request_id, parse_definition, parse_list_query
from bridge.mppg.errors import BridgeCode, BridgeSideError, ErrorCode, MppgError, MppgInputError
from bridge.mppg.metrics import MppgMetrics
from bridge.mppg.models import PaymentRequestDetail
from bridge.mppg.relay import RelayOptions
from bridge.mppg.relays import RelayManager
from bridge.mppg.topics import PaymentTopics
from bridge.mqtt.link import InboundMessage

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from bridge.config import MppgSettings

_log = structlog.get_logger("bridge.mppg")

# Keys of a request body that belong to the bridge, not to MPPG's definition or filters.
_ENVELOPE: Final = ("correlation_id", "relay")
# Recent create replies by correlation id: a QoS 1 redelivery must not create a second
# payment request.
_REPLAY_CACHE: Final = 256
_STOP_JOIN_S: Final = 3.0


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
    """

    def __init__(self, settings: MppgSettings, bridge_root: str, *,
                 client: MppgClient | None = None,
                 registry: CollectorRegistry | None = None) -> None:
        self.topics = PaymentTopics(bridge_root)
        self.client = client if client is not None else MppgClient.from_settings(settings)
        self.metrics = MppgMetrics(registry)
        self._default_processor = settings.processor_name
        self._publisher: Publisher | None = None
        self._queue: queue.Queue[tuple[str, InboundMessage]] = queue.Queue(settings.queue_size)
        self._stopping = threading.Event()
        self._worker = threading.Thread(target=self._work, name="mppg-requests", daemon=True)
        self._replies: OrderedDict[str, bytes] = OrderedDict()
        self.relays = RelayManager(
            client=self.client, topics=self.topics, publish=self._publish_relay,
            options=RelayOptions(connect_timeout=settings.connect_timeout,
                                 reconnect_min_delay=settings.relay_reconnect_min_delay,
                                 reconnect_max_delay=settings.relay_reconnect_max_delay),
            max_relays=settings.max_relays, metrics=self.metrics)

    # -- wiring ------------------------------------------------------------------------------

    def subscriptions(self) -> list[tuple[str, int]]:
        return self.topics.subscriptions(qos=1)

    def attach(self, publisher: Publisher) -> None:
        """Where replies and relayed messages go (the bridge's ``MqttLink``)."""
        self._publisher = publisher

    def start(self) -> None:
        self._worker.start()

    def stop(self) -> None:
        self._stopping.set()
        self.relays.stop_all()
        if self._worker.is_alive():
            self._worker.join(_STOP_JOIN_S)
        self.client.close()

    # -- paho's thread -----------------------------------------------------------------------

    def on_message(self, message: InboundMessage) -> None:
        """Queue a request for the worker; never blocks paho's thread."""
        op = self.topics.operation_of(message.topic)
        if op is None:
            return
        if message.retain:
            # A retained request is a stale one the broker replays to every new session:
            # running it would create a payment request on each bridge restart.
            self._reply(op, message, _correlation_of(message.payload),
                        error=BridgeSideError(BridgeCode.RETAINED_REQUEST,
                                              "retained requests are refused; publish with "
                                              "retain=false"))
            return
        try:
            self._queue.put_nowait((op, message))
        except queue.Full:
            self._reply(op, message, _correlation_of(message.payload),
                        error=BridgeSideError(BridgeCode.BUSY, "too many payment requests "
                                              "waiting; try again shortly"))

    # -- the worker --------------------------------------------------------------------------

    def _work(self) -> None:
        while not self._stopping.is_set():
            try:
                op, message = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self._serve(op, message)
            except Exception:  # one bad request must not end the worker
                _log.exception("mppg_request_failed", op=op)

    def _serve(self, op: str, message: InboundMessage) -> None:
        try:
            body = _parse_body(message.payload, allow_empty=op == "list")
        except MppgError as exc:
            self._reply(op, message, None, error=exc)
            return
        correlation = body.get("correlation_id")
        cache_key = f"{correlation}" if op == "create" and correlation is not None else None
        if cache_key is not None and cache_key in self._replies:
            _log.info("mppg_request_replayed", op=op)
            self._send(op, message, self._replies[cache_key])
            return
        try:
            result, relay = self.handle(op, body)
        except MppgError as exc:
            _log.info("mppg_request_refused", op=op, code=exc.code, source=exc.source)
            self._reply(op, message, correlation, error=exc)
            return
        payload = self._reply(op, message, correlation, result=result, relay=relay)
        if cache_key is not None:
            self._replies[cache_key] = payload
            while len(self._replies) > _REPLAY_CACHE:
                self._replies.popitem(last=False)

    def handle(self, op: str, body: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        """Run one operation: (the result as MPPG's JSON, what happened to the relay).

        Raises:
            MppgError: the request was refused, here or by MPPG.
        """
        fields = {k: v for k, v in body.items() if k not in _ENVELOPE}
        want_relay = body.get("relay", True) is not False
        detail: PaymentRequestDetail
        if op == "list":
            return self.client.list_requests(parse_list_query(fields)).to_wire(), None
        if op == "create":
            detail = self.client.create(
                parse_definition(fields, default_processor=self._default_processor))
        elif op == "get":
            detail = self.client.get(_request_id(fields, only_id=True))
        else:
            request_id = _request_id(fields, only_id=False)
            fields = {k: v for k, v in fields.items() if k not in ("paymentRequestID", "id")}
            detail = self.client.update(
                request_id, parse_definition(fields, default_processor=self._default_processor))
        _log.info("mppg_request_done", op=op, payment_request=detail.payment_request_id,
                  status=detail.status)
        relay = self._start_relay(detail) if want_relay else "not requested"
        return detail.to_wire(), relay

    def _start_relay(self, detail: PaymentRequestDetail) -> str:
        try:
            return self.relays.start(detail)
        except MppgError as exc:  # an id we cannot put in a topic
            _log.warning("mppg_relay_refused", error=exc.message)
            return "refused"

    # -- publishing --------------------------------------------------------------------------

    def _reply(self, op: str, message: InboundMessage, correlation: Any, *,
               result: dict[str, Any] | None = None, relay: str | None = None,
               error: MppgError | None = None) -> bytes:
        reply: dict[str, Any] = {"correlation_id": correlation, "op": op, "ok": error is None}
        if error is not None:
            reply["error"] = error.to_dict()
            self.metrics.request_done(op, f"{error.source}_error")
        else:
            reply["result"] = result
            if relay is not None:
                reply["relay"] = relay
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


def _parse_body(payload: bytes, *, allow_empty: bool) -> dict[str, Any]:
    if allow_empty and not payload.strip():
        return {}
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise MppgInputError(ErrorCode.INPUT_FORMAT, "the request is not valid JSON") from None
    if not isinstance(body, dict):
        raise MppgInputError(ErrorCode.INPUT_FORMAT, "the request must be a JSON object")
    return body


def _correlation_of(payload: bytes) -> Any:
    """The correlation id of a request we will not run, if it has a readable one."""
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    return body.get("correlation_id") if isinstance(body, dict) else None


def _request_id(fields: dict[str, Any], *, only_id: bool) -> str:
    value = fields.get("paymentRequestID", fields.get("id"))
    if only_id:
        extra = set(fields) - {"paymentRequestID", "id"}
        if extra:
            raise MppgInputError(ErrorCode.INPUT_FORMAT,
                                 f"unknown keys: {', '.join(sorted(extra))}")
    return check_request_id(value)


__all__ = ["PaymentRequestService", "Publisher"]
