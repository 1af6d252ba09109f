"""The one small interface every reader transport implements.

A transport moves whole HID reports (64 bytes for MMS readers, without a report-id byte) and
nothing else: framing lives in ``bridge.mms``; what the bytes mean is not its business.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol, runtime_checkable

MAGTEK_VENDOR_ID: Final = 0x0801

# PROTOCOL.md §1: the MMS product ids. Boot-mode ids (0x2021/0x2022) are listed so discovery
# can report them, but the bridge does not open them (whether they speak MMS is unconfirmed).
MMS_PRODUCT_IDS: Final[dict[int, str]] = {
    0x2020: "DynaFlex family",
    0x2023: "DynaProx",
    0x2024: "DynaFlex II Go",
}
BOOT_PRODUCT_IDS: Final[dict[int, str]] = {
    0x2021: "DynaFlex boot mode 0",
    0x2022: "DynaFlex boot mode 1",
}

REPORT_LEN: Final = 64  # PROTOCOL.md §1: 64 data bytes in both directions


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """Identity of one attached reader, as discovery sees it.

    Attributes:
        path: backend-specific, stable while the reader stays plugged in (hidraw path, or
            ``sim:<n>`` for a simulated reader). The key the supervisor tracks readers by.
        vendor_id: USB vendor id (0x0801 for MagTek).
        product_id: USB product id.
        product: USB product string, e.g. ``"DynaFlex II"``.
        usb_serial: USB iSerialNumber string, may be empty (the MMS serial is read separately).
        backend: name of the backend that found it (``"hid"`` or ``"simulated"``).
    """

    path: str
    vendor_id: int
    product_id: int
    product: str
    usb_serial: str = ""
    backend: str = "hid"


@runtime_checkable
class Transport(Protocol):
    """An open (or openable) connection to one reader, report by report.

    ``read_report`` returns one report of ``report_len`` bytes, or ``None`` when ``timeout``
    seconds pass with nothing to read; with ``timeout`` 0 it never waits (a report already
    received, or ``None``). Both I/O methods raise ``DeviceGoneError`` once the
    reader is unplugged. ``close`` is idempotent.
    """

    @property
    def info(self) -> DeviceInfo: ...

    @property
    def report_len(self) -> int: ...

    def open(self) -> None: ...

    def close(self) -> None: ...

    def read_report(self, timeout: float) -> bytes | None: ...

    def write_report(self, report: bytes) -> None: ...


class Backend(Protocol):
    """Finds readers and opens transports to them."""

    name: str

    def enumerate(self) -> list[DeviceInfo]: ...

    def open(self, info: DeviceInfo) -> Transport: ...
