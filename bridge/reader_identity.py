"""Who a reader is (its MMS serial, firmware, model and topic root: PROTOCOL.md §4), and its
presence on MQTT (the reader's own connection, its retained ``Status`` and ``Info``).

Identification asks the reader for its serial number and firmware id through ``request``,
which writes a request of our own and returns its response (or None after the timeout); the
session's read thread supplies it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from bridge import __version__
from bridge.courier import Courier
from bridge.errors import ProtocolError
from bridge.metrics import Metrics
from bridge.mms import Message
from bridge.mms import commands as mms_commands
from bridge.mqtt.link import InboundMessage, LinkOptions, MqttLink, Publication
from bridge.mqtt.topics import ReaderTopics, model_segment, reader_root
from bridge.transport import DeviceInfo

IDENTIFY_REF: Final = 0xB5  # the reference MagTek's own device client uses (PROTOCOL.md §4)
FIRMWARE_REF: Final = 0x02
NO_SERIAL: Final = "reader did not answer the get-serial request"
STATUS_CONNECTED: Final = b"connected"
STATUS_DISCONNECTED: Final = b"disconnected"


@dataclass(frozen=True, slots=True)
class ReaderIdentity:
    serial: str
    firmware: str
    model: str
    root: str


class IdentifyError(Exception):
    """The reader did not say who it is."""


def identify(
    request: Callable[[bytes], Message | None],
    info: DeviceInfo,
    *,
    attempts: int,
    prefix: str,
    friendly_names: Mapping[str, str] | None = None,
    on_serial: Callable[[], None] | None = None,
) -> ReaderIdentity:
    """Ask for the serial (``attempts`` times at most), then the firmware id (once: a reader
    that does not say is still served, with an empty firmware id)."""
    serial = ""
    for _attempt in range(attempts):
        response = request(mms_commands.get_serial_number(IDENTIFY_REF))
        if response is not None and response.status is not None and response.status.ok:
            serial = mms_commands.parse_serial_number(response)
            break
    if not serial:
        raise IdentifyError(NO_SERIAL)
    if on_serial is not None:
        on_serial()
    firmware = ""
    response = request(mms_commands.get_firmware_id(FIRMWARE_REF))
    if response is not None and response.status is not None and response.status.ok:
        try:
            firmware = mms_commands.parse_firmware_id(response)
        except ProtocolError:
            firmware = ""
    model = model_segment(info.product) or "MMS"
    root = reader_root(prefix, model, serial, (friendly_names or {}).get(serial))
    return ReaderIdentity(serial=serial, firmware=firmware, model=model, root=root)


def info_payload(identity: ReaderIdentity, info: DeviceInfo, *, host_id: str,
                 since: datetime) -> bytes:
    """The retained ``Info`` document of a connected reader."""
    document = {
        "model": identity.model,
        "product": info.product,
        "serial": identity.serial,
        "firmware_id": identity.firmware,
        "vendor_id": f"0x{info.vendor_id:04X}",
        "product_id": f"0x{info.product_id:04X}",
        "bridge_version": __version__,
        "host_id": host_id,
        "connected_since": since.isoformat(timespec="seconds"),
        "root": identity.root,
    }
    return json.dumps(document).encode()


def status_publication(topics: ReaderTopics, payload: bytes, qos: int) -> Publication:
    """The retained ``Status`` (``connected``, or ``disconnected``: also the last will)."""
    return Publication(topics.status, payload, qos=qos, retain=True)


def reader_link(
    identity: ReaderIdentity,
    topics: ReaderTopics,
    info: DeviceInfo,
    *,
    client_id: str,
    host_id: str,
    qos_status: int,
    since: datetime,
    link_options: LinkOptions,
    metrics: Metrics,
    courier: Courier,
    on_command: Callable[[InboundMessage], None],
) -> MqttLink:
    """The reader's own MQTT connection: its will and births, its ``SendCommand``
    subscription, acknowledgements to the courier; driven by the courier's I/O loop."""
    info_body = info_payload(identity, info, host_id=host_id, since=since)
    return MqttLink(
        link_options,
        client_id=client_id,
        name="reader",
        will=status_publication(topics, STATUS_DISCONNECTED, qos_status),
        subscriptions=[(topics.send_command, 1)],
        births=[status_publication(topics, STATUS_CONNECTED, qos_status),
                Publication(topics.info, info_body, qos=1, retain=True)],
        on_message=on_command,
        metrics=metrics,
        # Its PUBACKs are read on the loop's turns while a stream flows; its commands are
        # seen first by the bridge's own session (a wildcard subscription), which pokes it.
        lazy_acks=True,
        log_context={"root": identity.root},
        on_published=courier.published,
        on_taken_back=courier.taken_back,
        loop=courier.loop,
    )


__all__ = ["NO_SERIAL", "STATUS_CONNECTED", "STATUS_DISCONNECTED", "IdentifyError",
           "ReaderIdentity", "identify", "info_payload", "reader_link", "status_publication"]
