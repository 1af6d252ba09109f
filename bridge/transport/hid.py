"""The hidapi backend: the only importer of ``hid`` (cython-hidapi). Thin on purpose.

PROTOCOL.md §1: readers have no report ids, so ``write`` gets a leading 0x00 byte (65 bytes)
and ``read`` returns the 64 report bytes. A failing read or write means the reader is gone.
"""

from __future__ import annotations

import contextlib
import errno
from typing import Any, Protocol, cast

from bridge.errors import DeviceGoneError, DevicePermissionError, TransportError
from bridge.transport.base import (
    MAGTEK_VENDOR_ID,
    MMS_PRODUCT_IDS,
    REPORT_LEN,
    DeviceInfo,
)

_VENDOR_USAGE_PAGE = 0xFF00
_PERMISSION_HINT = (
    "permission denied opening {path}: install the udev rule (sudo cp "
    "systemd/70-magtek-mms.rules /etc/udev/rules.d/ && sudo udevadm control --reload-rules "
    "&& sudo udevadm trigger) and run the bridge as a member of group 'magtek'"
)


class _HidDevice(Protocol):
    def open_path(self, path: bytes) -> None: ...
    def write(self, data: bytes | list[int]) -> int: ...
    def read(self, max_length: int, timeout_ms: int = 0) -> list[int]: ...
    def close(self) -> None: ...


def _hid_module() -> Any:
    try:
        import hid  # noqa: PLC0415 - imported lazily so the simulator runs without libhidapi
    except ImportError as exc:
        raise TransportError(f"hidapi is not available: {exc}") from exc
    return hid


class HidTransport:
    """One reader opened through hidapi."""

    def __init__(self, info: DeviceInfo, report_len: int = REPORT_LEN) -> None:
        self._info = info
        self._report_len = report_len
        self._device: _HidDevice | None = None

    @property
    def info(self) -> DeviceInfo:
        return self._info

    @property
    def report_len(self) -> int:
        return self._report_len

    def open(self) -> None:
        if self._device is not None:
            return
        device = cast(_HidDevice, _hid_module().device())
        try:
            device.open_path(self._info.path.encode())
        except OSError as exc:
            if getattr(exc, "errno", None) in (errno.EACCES, errno.EPERM) or (
                    "ermission" in str(exc)):
                raise DevicePermissionError(_PERMISSION_HINT.format(path=self._info.path)) from exc
            raise TransportError(f"cannot open {self._info.path}: {exc}") from exc
        self._device = device

    def close(self) -> None:
        device, self._device = self._device, None
        if device is not None:
            with contextlib.suppress(OSError):  # already gone
                device.close()

    def _open_device(self) -> _HidDevice:
        if self._device is None:
            raise DeviceGoneError(f"{self._info.path} is not open")
        return self._device

    def read_report(self, timeout: float) -> bytes | None:
        device = self._open_device()
        try:
            data = device.read(self._report_len, max(1, int(timeout * 1000)))
        except (OSError, ValueError) as exc:
            raise DeviceGoneError(f"{self._info.path}: read failed: {exc}") from exc
        return bytes(data) if data else None

    def write_report(self, report: bytes) -> None:
        device = self._open_device()
        try:
            written = device.write(b"\x00" + bytes(report))
        except (OSError, ValueError) as exc:
            raise DeviceGoneError(f"{self._info.path}: write failed: {exc}") from exc
        if written < 0:
            raise DeviceGoneError(f"{self._info.path}: write failed")


class HidBackend:
    """Finds MagTek readers with ``hid.enumerate`` and opens them."""

    name = "hid"

    def enumerate(self) -> list[DeviceInfo]:
        hid = _hid_module()
        try:
            entries = hid.enumerate(MAGTEK_VENDOR_ID, 0)
        except OSError as exc:
            raise TransportError(f"hid enumeration failed: {exc}") from exc
        found: list[DeviceInfo] = []
        seen: set[str] = set()
        for entry in entries:
            usage_page = entry.get("usage_page") or 0
            if usage_page not in (0, _VENDOR_USAGE_PAGE):
                continue  # other interfaces of the same reader
            path = entry.get("path", b"")
            path_text = path.decode(errors="replace") if isinstance(path, bytes) else str(path)
            if path_text in seen:
                continue
            seen.add(path_text)
            found.append(DeviceInfo(
                path=path_text,
                vendor_id=int(entry.get("vendor_id", 0)),
                product_id=int(entry.get("product_id", 0)),
                product=str(entry.get("product_string") or ""),
                usb_serial=str(entry.get("serial_number") or ""),
                backend=self.name,
            ))
        return [d for d in found if d.vendor_id == MAGTEK_VENDOR_ID]

    def open(self, info: DeviceInfo) -> HidTransport:
        return HidTransport(info)


__all__ = ["MMS_PRODUCT_IDS", "HidBackend", "HidTransport"]
