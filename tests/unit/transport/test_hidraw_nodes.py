"""sysfs scanning and open-failure reasons for MagTek hidraw nodes (a fake sysfs tree)."""

from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path

import pytest

from bridge.transport import hid as hid_transport
from bridge.transport.hid import HidBackend, resolve_api
from bridge.transport.hidraw_nodes import (
    HidrawNode,
    explain,
    parse_uevent,
    probe,
    scan_hidraw,
)


def make_node(sysfs: Path, name: str, hid_id: str, hid_name: str, uniq: str) -> None:
    device = sysfs / name / "device"
    device.mkdir(parents=True)
    (device / "uevent").write_text(
        f"DRIVER=hid-generic\nHID_ID={hid_id}\nHID_NAME={hid_name}\nHID_PHYS=x\n"
        f"HID_UNIQ={uniq}\nMODALIAS=hid:b0003\n")


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    root = tmp_path / "class" / "hidraw"
    make_node(root, "hidraw10", "0003:00000801:00002020", "MagTek DynaFlex II", "B654321")
    make_node(root, "hidraw2", "0003:00000801:00002024", "DynaFlex II Go", "B123456")
    make_node(root, "hidraw0", "0003:0000046D:0000C52B", "Logitech Receiver", "")
    (root / "hidraw7").mkdir()  # vanished while we looked: no uevent
    return root


def test_parse_uevent():
    assert parse_uevent("A=1\nHID_NAME=Dyna=Flex\n\nbad\n") == {"A": "1", "HID_NAME": "Dyna=Flex"}


def test_scan_finds_magtek_nodes_in_numeric_order(sysfs: Path):
    nodes = scan_hidraw(sysfs=sysfs, dev=Path("/dev"))
    assert nodes == [
        HidrawNode("hidraw2", "/dev/hidraw2", 3, 0x0801, 0x2024, "DynaFlex II Go", "B123456"),
        HidrawNode("hidraw10", "/dev/hidraw10", 3, 0x0801, 0x2020, "MagTek DynaFlex II",
                   "B654321"),
    ]
    assert len(scan_hidraw(None, sysfs=sysfs)) == 3
    assert scan_hidraw(sysfs=sysfs.parent / "missing") == []


NODE = HidrawNode("hidraw2", "/dev/hidraw2", 3, 0x0801, 0x2024, "DynaFlex II Go", "B123456")


@pytest.mark.parametrize(("code", "kind", "words"), [
    (errno.EACCES, "permission", "udev rule"),
    (errno.EPERM, "permission", "group 'magtek'"),
    (errno.EBUSY, "busy", "exclusively"),
    (errno.ENOENT, "missing", "does not exist"),
    (errno.EIO, "error", "cannot open"),
])
def test_explain_names_the_reason_and_the_fix(code: int, kind: str, words: str):
    problem = explain(NODE, OSError(code, os.strerror(code)))
    assert problem.kind == kind
    assert words in problem.detail and "/dev/hidraw2" in problem.detail


def test_probe_opens_read_write_and_closes(tmp_path: Path):
    opened: list[tuple[str, int]] = []

    def opener(path: str, flags: int) -> int:
        opened.append((path, flags))
        return os.open(os.devnull, os.O_RDONLY)

    assert probe(NODE, opener) is None
    assert opened[0][0] == "/dev/hidraw2" and opened[0][1] & os.O_RDWR

    def refuse(path: str, flags: int) -> int:
        raise PermissionError(errno.EACCES, "Permission denied", path)

    problem = probe(NODE, refuse)
    assert problem is not None and problem.kind == "permission"


@pytest.mark.parametrize(("requested", "platform", "api"), [
    ("auto", "linux", "hidraw"), ("hidraw", "linux", "hidraw"), ("libusb", "linux", "libusb"),
    ("auto", "darwin", "native"), ("auto", "win32", "native"),
])
def test_resolve_api(requested, platform, api):
    assert resolve_api(requested, platform) == api


def test_hidraw_or_libusb_elsewhere_is_a_configuration_error():
    from bridge.errors import TransportError  # noqa: PLC0415

    with pytest.raises(TransportError, match="only on Linux"):
        resolve_api("libusb", "darwin")


def test_devices_reports_backend_and_unusable_nodes(monkeypatch, capsys):
    from bridge.devices import list_devices  # noqa: PLC0415

    class FakeHidraw:
        @staticmethod
        def enumerate(vid: int, pid: int) -> list[dict[str, object]]:
            return [{"path": b"/dev/hidraw2", "vendor_id": 0x0801, "product_id": 0x2024,
                     "product_string": "DynaFlex II Go", "serial_number": "B123456",
                     "usage_page": 0xFF00}]

    monkeypatch.setattr(hid_transport, "_hid_module", lambda api="native": FakeHidraw)
    denied = explain(NODE, OSError(errno.EACCES, "Permission denied"))
    monkeypatch.setattr(HidBackend, "diagnose", lambda self, found: [denied])
    assert list_devices("hidraw", sys.stdout) == 0
    out = capsys.readouterr().out
    assert out.startswith("backend: hidraw (hidapi ")
    assert "not usable: /dev/hidraw2" in out and "permission" in out and "udev rule" in out
    assert list_devices("hidraw", sys.stdout, as_json=True) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["backend"] == "hidraw" and data["readers"] == []
    assert data["not_usable"][0]["reason"] == "permission"


def test_service_warns_once_about_a_node_hidapi_cannot_list(monkeypatch, sysfs):
    warnings: list[dict[str, object]] = []

    class Log:
        def warning(self, event: str, **fields: object) -> None:
            warnings.append({"event": event, **fields})

    class NoReaders:
        @staticmethod
        def enumerate(vid: int, pid: int) -> list[dict[str, object]]:
            return []

    monkeypatch.setattr(hid_transport, "_hid_module", lambda api="native": NoReaders)
    monkeypatch.setattr(hid_transport, "_log", Log())
    monkeypatch.setattr(hid_transport, "scan_hidraw",
                        lambda: scan_hidraw(sysfs=sysfs, dev=sysfs / "nodev"))
    backend = HidBackend("libusb")
    assert backend.enumerate() == []
    assert backend.enumerate() == []  # no repeat while nothing changed
    assert [w["path"] for w in warnings] == [str(sysfs / "nodev" / "hidraw2"),
                                             str(sysfs / "nodev" / "hidraw10")]
    assert "libusb backend does not see it" in str(warnings[0]["reason"])
    assert "does not exist" in str(warnings[0]["reason"])  # probing the node failed too


def test_diagnose_names_nodes_libusb_cannot_see(monkeypatch, sysfs):
    monkeypatch.setattr(hid_transport, "scan_hidraw", lambda: scan_hidraw(sysfs=sysfs))
    monkeypatch.setattr(hid_transport, "probe", lambda node: None)  # openable
    problems = HidBackend("libusb", warn_unlisted=False).diagnose([])
    assert [(p.node.devnode, p.kind) for p in problems] == [
        ("/dev/hidraw2", "unlisted"), ("/dev/hidraw10", "unlisted")]
    assert "hid_api = 'auto'" in problems[0].detail
