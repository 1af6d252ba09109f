"""A virtual DynaFlex in the Linux kernel: the simulated reader behind ``/dev/uhid``.

The kernel sees an ordinary HID device (bus USB, vendor 0x0801, a vendor-defined 64-byte
input and output report, no report ids: PROTOCOL.md §1), binds hid-generic to it and makes a
``/dev/hidrawN`` node, so the bridge's real hidapi path opens it exactly like a USB reader.
Output reports written to that node come back here as ``UHID_OUTPUT`` events (with hidraw's
leading report-id byte, stripped before the simulated reader sees them); its answers go to
the kernel as ``UHID_INPUT2``. Stdlib only.

The event layouts are those of ``include/uapi/linux/uhid.h``: packed structs in the host's
byte order, every event the size of the largest union member (``uhid_create2_req``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import struct
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from bridge.errors import DeviceGoneError
from bridge.simulator.reader import SimulatedReader

UHID_PATH: Final = "/dev/uhid"

# enum uhid_event_type (the legacy values 0, 7 and 8 are never used here)
UHID_DESTROY: Final = 1
UHID_START: Final = 2
UHID_STOP: Final = 3
UHID_OPEN: Final = 4
UHID_CLOSE: Final = 5
UHID_OUTPUT: Final = 6
UHID_GET_REPORT: Final = 9
UHID_GET_REPORT_REPLY: Final = 10
UHID_CREATE2: Final = 11
UHID_INPUT2: Final = 12
UHID_SET_REPORT: Final = 13
UHID_SET_REPORT_REPLY: Final = 14

UHID_OUTPUT_REPORT: Final = 1  # enum uhid_report_type: FEATURE 0, OUTPUT 1, INPUT 2
BUS_USB: Final = 0x03
UHID_DATA_MAX: Final = 4096
HID_MAX_DESCRIPTOR_SIZE: Final = 4096

# u32 type, then the union. "=" is the host's byte order with no padding, like the packed
# kernel structs.
_TYPE: Final = struct.Struct("=I")
_CREATE2: Final = struct.Struct(f"=I128s64s64sHHIIII{HID_MAX_DESCRIPTOR_SIZE}s")
_INPUT2_HEAD: Final = struct.Struct("=IH")
_OUTPUT: Final = struct.Struct(f"=I{UHID_DATA_MAX}sHB")
_GET_REPORT: Final = struct.Struct("=IIBB")
_GET_REPORT_REPLY_HEAD: Final = struct.Struct("=IIHH")
_SET_REPORT_HEAD: Final = struct.Struct("=IIBBH")
_SET_REPORT_REPLY: Final = struct.Struct("=IIH")
_START: Final = struct.Struct("=IQ")
EVENT_SIZE: Final = _CREATE2.size  # 4376: sizeof(struct uhid_event)

_EIO: Final = 5

# Vendor-defined usage page 0xFF00, one application collection holding a 64-byte input and a
# 64-byte output report of 8-bit fields, and no Report ID item (PROTOCOL.md §1).
REPORT_DESCRIPTOR: Final = bytes((
    0x06, 0x00, 0xFF,  # Usage Page (Vendor Defined 0xFF00)
    0x09, 0x01,        # Usage (0x01)
    0xA1, 0x01,        # Collection (Application)
    0x15, 0x00,        #   Logical Minimum (0)
    0x26, 0xFF, 0x00,  #   Logical Maximum (255)
    0x75, 0x08,        #   Report Size (8)
    0x95, 0x40,        #   Report Count (64)
    0x09, 0x01,        #   Usage (0x01)
    0x81, 0x02,        #   Input (Data, Variable, Absolute)
    0x95, 0x40,        #   Report Count (64)
    0x09, 0x01,        #   Usage (0x01)
    0x91, 0x02,        #   Output (Data, Variable, Absolute)
    0xC0,              # End Collection
))

PRODUCT_NAMES: Final[dict[int, str]] = {0x2024: "DynaFlex II Go", 0x2020: "DynaFlex II"}


def _field(text: str, size: int) -> bytes:
    data = text.encode()
    if len(data) >= size:
        raise ValueError(f"{text!r} does not fit in {size - 1} bytes")
    return data  # struct pads with NULs


def encode_create2(*, name: str, phys: str, uniq: str, vendor: int, product: int,
                   descriptor: bytes = REPORT_DESCRIPTOR, bus: int = BUS_USB,
                   version: int = 0x0100, country: int = 0) -> bytes:
    """``UHID_CREATE2``: a new HID device with this identity and report descriptor."""
    if len(descriptor) > HID_MAX_DESCRIPTOR_SIZE:
        raise ValueError("report descriptor too long")
    return _CREATE2.pack(UHID_CREATE2, _field(name, 128), _field(phys, 64), _field(uniq, 64),
                         len(descriptor), bus, vendor, product, version, country, descriptor)


def encode_input2(report: bytes) -> bytes:
    """``UHID_INPUT2``: one input report from the device (no report-id byte: we have none)."""
    if len(report) > UHID_DATA_MAX:
        raise ValueError("input report too long")
    event = _INPUT2_HEAD.pack(UHID_INPUT2, len(report)) + report
    return event.ljust(EVENT_SIZE, b"\x00")


def encode_destroy() -> bytes:
    """``UHID_DESTROY``: the device leaves (the kernel's view of an unplug)."""
    return _TYPE.pack(UHID_DESTROY).ljust(EVENT_SIZE, b"\x00")


def encode_get_report_reply(request_id: int, err: int, data: bytes = b"") -> bytes:
    """``UHID_GET_REPORT_REPLY``: the answer to a GET_REPORT (``err`` is a positive errno)."""
    event = _GET_REPORT_REPLY_HEAD.pack(UHID_GET_REPORT_REPLY, request_id, err, len(data)) + data
    return event.ljust(EVENT_SIZE, b"\x00")


def encode_set_report_reply(request_id: int, err: int) -> bytes:
    """``UHID_SET_REPORT_REPLY``: the answer to a SET_REPORT."""
    return _SET_REPORT_REPLY.pack(UHID_SET_REPORT_REPLY, request_id, err).ljust(EVENT_SIZE,
                                                                               b"\x00")


@dataclass(frozen=True, slots=True)
class UhidEvent:
    """One event read from ``/dev/uhid``; fields not used by its type stay at their defaults.

    Attributes:
        type: the ``enum uhid_event_type`` value.
        data: OUTPUT and SET_REPORT payload (with the report-id byte the kernel passes on).
        report_type: OUTPUT / GET_REPORT / SET_REPORT report type (``enum uhid_report_type``).
        request_id: GET_REPORT / SET_REPORT id to answer with.
        report_number: GET_REPORT / SET_REPORT report number.
        dev_flags: START flags (numbered-report flags; always 0 for our descriptor).
    """

    type: int
    data: bytes = b""
    report_type: int = 0
    request_id: int = 0
    report_number: int = 0
    dev_flags: int = 0


def decode_event(buffer: bytes) -> UhidEvent:
    """Decode one event the kernel wrote (``read(2)`` on ``/dev/uhid``)."""
    if len(buffer) < _TYPE.size:
        raise ValueError("uhid event shorter than its type field")
    buffer = buffer.ljust(EVENT_SIZE, b"\x00")
    (kind,) = _TYPE.unpack_from(buffer)
    if kind == UHID_OUTPUT:
        _, data, size, rtype = _OUTPUT.unpack_from(buffer)
        return UhidEvent(kind, data=data[:min(size, UHID_DATA_MAX)], report_type=rtype)
    if kind == UHID_GET_REPORT:
        _, request_id, rnum, rtype = _GET_REPORT.unpack_from(buffer)
        return UhidEvent(kind, request_id=request_id, report_number=rnum, report_type=rtype)
    if kind == UHID_SET_REPORT:
        _, request_id, rnum, rtype, size = _SET_REPORT_HEAD.unpack_from(buffer)
        start = _SET_REPORT_HEAD.size
        data = buffer[start:start + min(size, UHID_DATA_MAX)]
        return UhidEvent(kind, data=data, request_id=request_id, report_number=rnum,
                         report_type=rtype)
    if kind == UHID_START:
        _, flags = _START.unpack_from(buffer)
        return UhidEvent(kind, dev_flags=flags)
    return UhidEvent(kind)


class VirtualReader:
    """One ``SimulatedReader`` behind a uhid device, from ``create()`` to ``destroy()``.

    Two threads: ``uhid-events`` reads kernel events (output reports go to the simulated
    reader); ``uhid-input`` moves the reader's reports to the kernel while some host has the
    hidraw node open (a real device's interrupt endpoint is polled only then, and hidraw
    drops input nobody reads).

    Args:
        reader: the simulated device (its public host/device-report interface only).
        product_id: 0x2024 (DynaFlex II Go) or 0x2020 (DynaFlex family).
        name: the HID name, which hidapi reports as the product string.
        fd: an already open uhid file descriptor (tests pass one end of a socket pair).
    """

    def __init__(self, reader: SimulatedReader, *, product_id: int = 0x2024,
                 name: str | None = None, fd: int | None = None) -> None:
        self.reader = reader
        self.product_id = product_id
        self.name = name or PRODUCT_NAMES.get(product_id, "DynaFlex")
        self.reports_in = 0  # reports handed to the kernel (input)
        self.reports_out = 0  # output reports received from the kernel
        self.opened = threading.Event()
        self.started = threading.Event()
        self._fd = fd
        self._stop_read, self._wake = os.pipe()
        self._stop = threading.Event()
        self._write_lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def create(self) -> None:
        """Create the kernel device and start relaying."""
        if self._fd is None:
            self._fd = os.open(UHID_PATH, os.O_RDWR | os.O_CLOEXEC)
        self._write(encode_create2(
            name=self.name, phys=f"magtek-bridge-uhid/{self.reader.serial}",
            uniq=self.reader.serial, vendor=0x0801, product=self.product_id))
        for target, name in ((self._events, "uhid-events"), (self._input, "uhid-input")):
            thread = threading.Thread(target=target, name=f"{name}[{self.reader.serial}]",
                                      daemon=True)
            self._threads.append(thread)
            thread.start()

    def destroy(self, timeout: float = 5.0) -> None:
        """Remove the device from the kernel (an unplug) and stop both threads."""
        if self._fd is None:
            return
        self._stop.set()
        os.write(self._wake, b"x")
        for thread in self._threads:
            thread.join(timeout)
        fd, self._fd = self._fd, None
        try:
            with self._write_lock:
                os.write(fd, encode_destroy())
        except OSError:
            pass  # closing the uhid fd destroys the device as well
        finally:
            os.close(fd)
            os.close(self._stop_read)
            os.close(self._wake)

    def send_input(self, report: bytes) -> None:
        """Hand one input report to the kernel."""
        self._write(encode_input2(report))
        self.reports_in += 1

    def _write(self, event: bytes) -> None:
        if self._fd is None:
            raise DeviceGoneError("uhid device is not created")
        with self._write_lock:
            os.write(self._fd, event)

    def _events(self) -> None:
        assert self._fd is not None
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._stop_read, select.POLLIN)
        while not self._stop.is_set():
            ready = {fd for fd, _ in poller.poll()}
            if self._stop_read in ready or self._stop.is_set():
                return
            try:
                event = decode_event(os.read(self._fd, EVENT_SIZE))
            except OSError:
                return
            self._handle(event)

    def _handle(self, event: UhidEvent) -> None:
        if event.type == UHID_START:
            self.started.set()
        elif event.type == UHID_OPEN:
            self.opened.set()
        elif event.type == UHID_CLOSE:
            self.opened.clear()
        elif event.type == UHID_OUTPUT and event.report_type == UHID_OUTPUT_REPORT:
            report = event.data
            # hidraw passes on the report-id byte its writer put first (0: no report ids).
            if len(report) == self.reader.report_len + 1 and report[0] == 0:
                report = report[1:]
            self.reports_out += 1
            # An unplugged simulated reader ignores the host.
            with contextlib.suppress(DeviceGoneError):
                self.reader.handle_host_report(report)
        elif event.type == UHID_GET_REPORT:
            self._write(encode_get_report_reply(event.request_id, _EIO))  # no feature reports
        elif event.type == UHID_SET_REPORT:
            self._write(encode_set_report_reply(event.request_id, _EIO))

    def _input(self) -> None:
        while not self._stop.is_set():
            if not self.opened.wait(0.1):
                continue
            try:
                report = self.reader.next_device_report(0.1)
            except DeviceGoneError:
                return
            if report is not None and not self._stop.is_set():
                try:
                    self.send_input(report)
                except OSError:
                    return


def main(argv: Sequence[str] | None = None) -> int:
    """``magtek-bridge-uhid``: keep virtual readers in the kernel until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="magtek-bridge-uhid",
        description="Create virtual MagTek DynaFlex readers through /dev/uhid (needs root or "
                    "access to /dev/uhid, and the uhid and hid-generic kernel modules).")
    parser.add_argument("--serial", action="append", default=[],
                        help="reader serial (7 hex digits); repeat for several readers "
                             "(default B123456)")
    parser.add_argument("--product-id", type=lambda text: int(text, 0), default=0x2024,
                        choices=sorted(PRODUCT_NAMES), metavar="{0x2024,0x2020}")
    parser.add_argument("--name", help="HID name = product string (default from product id)")
    parser.add_argument("--card", choices=["tap", "insert", "swipe", "none"], default="tap",
                        help="card presented automatically after a transaction starts")
    args = parser.parse_args(argv)
    card = None if args.card == "none" else args.card
    readers = [VirtualReader(SimulatedReader(serial, paced=True, auto_present=card),
                             product_id=args.product_id, name=args.name)
               for serial in (args.serial or ["B123456"])]
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    try:
        for virtual in readers:
            virtual.create()
            print(f"created {virtual.name} serial={virtual.reader.serial} "
                  f"vid:pid=0801:{virtual.product_id:04X}", flush=True)
    except OSError as exc:
        print(f"error: cannot create a uhid device through {UHID_PATH}: {exc}", file=sys.stderr)
        for virtual in readers:
            virtual.destroy()
        return 1
    done.wait()
    for virtual in readers:
        virtual.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())

__all__ = [
    "EVENT_SIZE",
    "REPORT_DESCRIPTOR",
    "UhidEvent",
    "VirtualReader",
    "decode_event",
    "encode_create2",
    "encode_destroy",
    "encode_get_report_reply",
    "encode_input2",
    "encode_set_report_reply",
    "main",
]
