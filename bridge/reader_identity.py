"""Who a reader is: its MMS serial, firmware, model and topic root (PROTOCOL.md §4).

Identification asks the reader for its serial number and firmware id through ``request``,
which writes a request of our own and returns its response (or None after the timeout); the
session's read thread supplies it. What is published about the reader (``Info``) is built here
too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from bridge import __version__
from bridge.errors import ProtocolError
from bridge.mms import Message
from bridge.mms import commands as mms_commands
from bridge.mqtt.topics import model_segment, reader_root
from bridge.transport import DeviceInfo

IDENTIFY_REF: Final = 0xB5  # the reference MagTek's own device client uses (PROTOCOL.md §4)
FIRMWARE_REF: Final = 0x02
NO_SERIAL: Final = "reader did not answer the get-serial request"


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


__all__ = ["NO_SERIAL", "IdentifyError", "ReaderIdentity", "identify", "info_payload"]
