"""Messages as the probe sees them, and MQTT v5 PUBLISH properties to send."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

# Failure messages show at most this much of a payload, so a failing test never dumps a
# whole card-data message.
PREVIEW_BYTES: Final = 24


@dataclass(frozen=True, slots=True)
class Received:
    """One delivered message, with the MQTT v5 properties tests look at."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Properties | None
    user_properties: tuple[tuple[str, str], ...]
    response_topic: str | None
    correlation_data: bytes | None
    content_type: str | None

    def describe(self) -> str:
        """Topic, size, retain flag and a short payload prefix (never the whole payload)."""
        head = self.payload[:PREVIEW_BYTES]
        more = "..." if len(self.payload) > PREVIEW_BYTES else ""
        return f"{self.topic} [{len(self.payload)} B, retain={self.retain}] {head!r}{more}"


def make_properties(*, user_properties: Iterable[tuple[str, str]] = (),
                    response_topic: str | None = None, correlation_data: bytes | None = None,
                    content_type: str | None = None) -> Properties:
    """PUBLISH properties (MQTT v5 section 3.3.2.3) for ``MqttProbe.publish``."""
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    pairs = list(user_properties)
    if pairs:
        props.UserProperty = pairs
    if response_topic is not None:
        props.ResponseTopic = response_topic
    if correlation_data is not None:
        props.CorrelationData = correlation_data
    if content_type is not None:
        props.ContentType = content_type
    return props


def received_from(message: paho.MQTTMessage) -> Received:
    """A ``Received`` from what paho delivered to on_message."""
    props = message.properties
    return Received(
        topic=message.topic, payload=bytes(message.payload), qos=int(message.qos),
        retain=bool(message.retain), properties=props,
        user_properties=tuple(getattr(props, "UserProperty", ())),
        response_topic=getattr(props, "ResponseTopic", None),
        correlation_data=getattr(props, "CorrelationData", None),
        content_type=getattr(props, "ContentType", None))
