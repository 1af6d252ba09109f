"""The hidapi backend against a fake ``hid`` module: the thin layer's own rules."""

from __future__ import annotations

import errno
import sys
import types

import pytest

from bridge.errors import DeviceGoneError, DevicePermissionError
from bridge.transport import get_backend
from bridge.transport.base import DeviceInfo


class FakeDevice:
    def __init__(self, fail_open: OSError | None = None) -> None:
        self.written: list[bytes] = []
        self.reads: list[list[int] | OSError] = []
        self.read_args: list[tuple[int, int]] = []
        self.fail_open = fail_open
        self.closed = False
        self.nonblocking = False

    def open_path(self, path: bytes) -> None:
        if self.fail_open:
            raise self.fail_open

    def write(self, data: bytes) -> int:
        self.written.append(bytes(data))
        return len(data)

    def read(self, max_length: int, timeout_ms: int = 0) -> list[int]:
        self.read_args.append((max_length, timeout_ms))
        item = self.reads.pop(0) if self.reads else []
        if isinstance(item, OSError):
            raise item
        return item

    def set_nonblocking(self, value: int) -> int:
        self.nonblocking = bool(value)
        return 0

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_hid(monkeypatch):
    module = types.ModuleType("hid")
    module.devices = []
    module.entries = []
    module.enumerate = lambda vid=0, pid=0: [e for e in module.entries if e["vendor_id"] == vid]

    def device():
        dev = module.next_device if hasattr(module, "next_device") else FakeDevice()
        module.devices.append(dev)
        return dev

    module.device = device
    # The same fake answers for both of the wheel's modules (hidraw is "auto" on Linux).
    monkeypatch.setitem(sys.modules, "hid", module)
    monkeypatch.setitem(sys.modules, "hidraw", module)
    return module


INFO = DeviceInfo(path="/dev/hidraw3", vendor_id=0x0801, product_id=0x2020,
                  product="DynaFlex II")


def test_write_prepends_report_id_zero(fake_hid):
    transport = get_backend("hid").open(INFO)
    transport.open()
    report = bytes(range(64))
    transport.write_report(report)
    assert fake_hid.devices[0].written == [b"\x00" + report]
    assert len(fake_hid.devices[0].written[0]) == 65


def test_read_returns_report_or_none(fake_hid):
    transport = get_backend("hid").open(INFO)
    transport.open()
    fake_hid.devices[0].reads = [list(range(64)), []]
    assert transport.read_report(0.25) == bytes(range(64))
    assert transport.read_report(0.25) is None
    assert fake_hid.devices[0].read_args == [(64, 250), (64, 250)]


def test_a_read_without_timeout_never_blocks(fake_hid):
    # Draining a burst reads with timeout 0: hidapi's hid_read, which blocks unless the device
    # was made non-blocking; a timed read passes its timeout (hid_read_timeout ignores the flag).
    transport = get_backend("hid").open(INFO)
    transport.open()
    device = fake_hid.devices[0]
    assert device.nonblocking
    device.reads = [list(range(64)), []]
    assert transport.read_report(0) == bytes(range(64))
    assert transport.read_report(0.05) is None
    assert device.read_args == [(64, 0), (64, 50)]


def test_io_errors_mean_the_reader_is_gone(fake_hid):
    transport = get_backend("hid").open(INFO)
    transport.open()
    fake_hid.devices[0].reads = [OSError("read error")]
    with pytest.raises(DeviceGoneError):
        transport.read_report(0.1)
    transport.close()
    transport.close()  # idempotent
    with pytest.raises(DeviceGoneError):
        transport.write_report(bytes(64))


def test_permission_error_says_how_to_fix(fake_hid):
    fake_hid.next_device = FakeDevice(fail_open=OSError(errno.EACCES, "Permission denied"))
    with pytest.raises(DevicePermissionError, match="udev rule"):
        get_backend("hid").open(INFO).open()


def test_enumerate_keeps_magtek_vendor_interface(fake_hid):
    fake_hid.entries = [
        {"path": b"/dev/hidraw1", "vendor_id": 0x0801, "product_id": 0x2020,
         "product_string": "DynaFlex II", "serial_number": "B123456", "usage_page": 0xFF00},
        {"path": b"/dev/hidraw2", "vendor_id": 0x0801, "product_id": 0x2020,
         "product_string": "DynaFlex II", "serial_number": "B123456", "usage_page": 0x0001},
        {"path": b"/dev/hidraw5", "vendor_id": 0x046D, "product_id": 0xC52B,
         "product_string": "Receiver", "serial_number": "", "usage_page": 0xFF00},
    ]
    found = get_backend("hid").enumerate()
    assert [(d.path, d.product, d.usb_serial) for d in found] == [
        ("/dev/hidraw1", "DynaFlex II", "B123456")]
