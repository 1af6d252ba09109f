"""The hidapi backend: the only importer of cython-hidapi's modules. Thin on purpose.

Which hidapi: the PyPI wheel ships two modules on Linux (PROTOCOL.md §1.1). ``hidraw`` talks to
``/dev/hidrawN`` through the kernel's HID driver, which stays bound; it enumerates through
sysfs (no netlink), so the udev rule (group ``magtek`` on hidraw nodes) and the systemd unit
(``DeviceAllow=char-hidraw``, no AF_NETLINK) fit it. There ``hid`` is the libusb backend: it
needs ``/dev/bus/usb/*`` access, AF_NETLINK and the right to detach the kernel driver, and
sees no reader without them. So ``auto`` means ``hidraw`` on Linux and the native ``hid``
module elsewhere (macOS, Windows); ``readers.hid_api`` forces one.

PROTOCOL.md §1: readers have no report ids, so ``write`` gets a leading 0x00 byte (65 bytes)
and ``read`` returns the 64 report bytes. A failing read or write means the reader is gone.
"""

from __future__ import annotations

import contextlib
import errno
import sys
import threading
from typing import Any, Literal, Protocol, cast

import structlog

from bridge.errors import DeviceGoneError, DevicePermissionError, TransportError
from bridge.transport.base import (
    MAGTEK_VENDOR_ID,
    MMS_PRODUCT_IDS,
    REPORT_LEN,
    DeviceInfo,
)
from bridge.transport.hidraw_nodes import (
    PERMISSION_HINT,
    HidrawNode,
    NodeProblem,
    node_for_path,
    probe,
    scan_hidraw,
)

_log = structlog.get_logger("bridge.transport.hid")

_VENDOR_USAGE_PAGE = 0xFF00
HidApi = Literal["auto", "hidraw", "libusb"]
# What each resolved choice imports: on Linux the wheel's ``hid`` is its libusb build.
_MODULES = {"hidraw": "hidraw", "libusb": "hid", "native": "hid"}


class _HidDevice(Protocol):
    def open_path(self, path: bytes) -> None: ...
    def write(self, data: bytes | list[int]) -> int: ...
    def read(self, max_length: int, timeout_ms: int = 0) -> list[int]: ...
    def set_nonblocking(self, value: int) -> int: ...
    def close(self) -> None: ...


def resolve_api(requested: HidApi = "auto", platform: str = sys.platform) -> str:
    """``hidraw`` / ``libusb`` (Linux) or ``native`` (elsewhere) for a configured choice."""
    linux = platform.startswith("linux")
    if requested == "auto":
        return "hidraw" if linux else "native"
    if not linux:
        raise TransportError(f"readers.hid_api = {requested!r} exists only on Linux; use 'auto'")
    return requested


def _hid_module(api: str = "native") -> Any:
    name = _MODULES[api]
    try:
        # Imported lazily so the simulator runs without libhidapi.
        if name == "hidraw":
            import hidraw as module  # noqa: PLC0415
        else:
            import hid as module  # noqa: PLC0415
    except ImportError as exc:
        raise TransportError(f"hidapi ({name} module) is not available: {exc}") from exc
    return module


class HidTransport:
    """One reader opened through hidapi."""

    def __init__(self, info: DeviceInfo, report_len: int = REPORT_LEN,
                 api: str = "native") -> None:
        self._info = info
        self._report_len = report_len
        self._api = api
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
        device = cast(_HidDevice, _hid_module(self._api).device())
        try:
            device.open_path(self._info.path.encode())
        except OSError as exc:
            raise self._open_error(exc) from exc
        # A read with a timeout waits that long whatever this says; a read without one
        # (``read_report(0)``: what is already there, for draining a burst) must not block.
        device.set_nonblocking(1)
        self._device = device

    def _open_error(self, exc: OSError) -> TransportError:
        """hidapi says only "open failed": ask the kernel why, by opening the node ourselves."""
        if exc.errno in (errno.EACCES, errno.EPERM) or "ermission" in str(exc):
            return DevicePermissionError(
                f"permission denied opening {self._info.path}: {PERMISSION_HINT}")
        if self._api == "hidraw":
            problem = probe(node_for_path(self._info.path, scan_hidraw()))
            if problem is not None and problem.kind == "permission":
                return DevicePermissionError(problem.detail)
            if problem is not None:
                return TransportError(problem.detail)
        return TransportError(f"cannot open {self._info.path}: {exc}")

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
            # timeout_ms 0 is hidapi's hid_read: non-blocking since open (set_nonblocking).
            data = device.read(self._report_len, max(1, int(timeout * 1000)) if timeout > 0
                               else 0)
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
    """Finds MagTek readers with hidapi's ``enumerate`` and opens them.

    On Linux it also reads sysfs for MagTek hidraw nodes hidapi did not list (e.g. the libusb
    backend, which cannot see them under the shipped unit) and warns once per node, so a
    reader the bridge cannot use is never silently absent.

    Args:
        api: ``auto``, ``hidraw`` or ``libusb`` (``readers.hid_api``).
    """

    name = "hid"

    def __init__(self, api: HidApi = "auto", *, warn_unlisted: bool = True) -> None:
        self.api = resolve_api(api)
        self._warn = warn_unlisted
        self._warned: set[str] = set()
        self._warned_lock = threading.Lock()

    def enumerate(self) -> list[DeviceInfo]:
        module = _hid_module(self.api)
        try:
            entries = module.enumerate(MAGTEK_VENDOR_ID, 0)
        except OSError as exc:
            raise TransportError(f"hid enumeration failed: {exc}") from exc
        found = self._readers(entries)
        if self.api != "native" and self._warn:
            self._warn_unlisted(found)
        return found

    def _readers(self, entries: list[dict[str, Any]]) -> list[DeviceInfo]:
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

    def _warn_unlisted(self, found: list[DeviceInfo]) -> None:
        nodes = scan_hidraw()
        listed = {d.path for d in found}
        unlisted = {n.devnode: n for n in nodes if n.devnode not in listed}
        if self.api == "libusb" and found:
            unlisted = {}  # libusb paths are USB bus paths: nothing to compare against
        with self._warned_lock:
            self._warned &= set(unlisted)  # a node that went away may warn again later
            new = [n for path, n in unlisted.items() if path not in self._warned]
            self._warned.update(n.devnode for n in new)
        for node in new:
            _log.warning("reader_not_usable", path=node.devnode, name=node.hid_name,
                         product_id=f"0x{node.product_id:04X}", hid_api=self.api,
                         reason=self._unlisted_reason(node))

    def _unlisted_reason(self, node: HidrawNode) -> str:
        problem = probe(node)
        why = f"; also {problem.detail}" if problem is not None else ""
        if self.api == "libusb":
            return (f"a MagTek reader is at {node.devnode}, but the libusb backend does not see "
                    f"it (it needs /dev/bus/usb access and AF_NETLINK); set readers.hid_api = "
                    f"'auto' to use hidraw{why}")
        return f"hidapi did not list the MagTek hidraw node {node.devnode}{why}"

    def diagnose(self, found: list[DeviceInfo]) -> list[NodeProblem]:
        """Every MagTek hidraw node we cannot open, and why (``magtek-bridge devices``)."""
        if self.api == "native":
            return []
        listed = {d.path for d in found}
        problems = []
        for node in scan_hidraw():
            problem = probe(node)
            if problem is not None:
                problems.append(problem)
            elif node.devnode not in listed and (self.api == "hidraw" or not found):
                problems.append(NodeProblem(node, "unlisted", self._unlisted_reason(node)))
        return problems

    def open(self, info: DeviceInfo) -> HidTransport:
        return HidTransport(info, api=self.api)


__all__ = ["MMS_PRODUCT_IDS", "HidApi", "HidBackend", "HidTransport", "resolve_api"]
