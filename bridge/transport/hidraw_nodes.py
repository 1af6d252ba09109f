"""What the kernel says about MagTek hidraw nodes, and why one cannot be opened (Linux, stdlib).

hidapi tells us what it could enumerate, and only "open failed" when it cannot open a node.
An operator needs more: that a reader is there at all, and whether the node is refused for
permission (the udev rule and group are missing) or busy. sysfs has every hidraw node's HID
identity in ``/sys/class/hidraw/<node>/device/uevent`` (``HID_ID=bus:vendor:product``,
``HID_NAME``, ``HID_UNIQ``), readable by anyone and without netlink, so we read it ourselves.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import pwd
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from bridge.transport.base import MAGTEK_VENDOR_ID

SYSFS_HIDRAW: Final = Path("/sys/class/hidraw")
DEV: Final = Path("/dev")
UDEV_RULE: Final = "70-magtek-mms.rules"
SERVICE_GROUP: Final = "magtek"
PERMISSION_HINT: Final = (
    f"install the udev rule (sudo cp systemd/{UDEV_RULE} /etc/udev/rules.d/ && sudo udevadm "
    "control --reload-rules && sudo udevadm trigger) and run the bridge as a member of group "
    f"'{SERVICE_GROUP}'"
)

ProblemKind = Literal["permission", "busy", "missing", "unlisted", "error"]


@dataclass(frozen=True, slots=True)
class HidrawNode:
    """One hidraw node and the HID device behind it, as sysfs describes them.

    Attributes:
        name: the node's name, e.g. ``hidraw3``.
        devnode: its device file, e.g. ``/dev/hidraw3``.
        bus: HID bus type (3 = USB).
        vendor_id: vendor id (0x0801 for MagTek).
        product_id: product id.
        hid_name: the HID name (for USB: manufacturer and product strings).
        uniq: the HID unique id (for USB: the serial number string), may be empty.
    """

    name: str
    devnode: str
    bus: int
    vendor_id: int
    product_id: int
    hid_name: str
    uniq: str


@dataclass(frozen=True, slots=True)
class NodeProblem:
    """Why a node cannot be opened: ``kind`` for code, ``detail`` (with the fix) for people."""

    node: HidrawNode
    kind: ProblemKind
    detail: str


def parse_uevent(text: str) -> dict[str, str]:
    """``KEY=value`` lines of a sysfs uevent file."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def _node(name: str, fields: dict[str, str], dev: Path) -> HidrawNode | None:
    parts = fields.get("HID_ID", "").split(":")
    if len(parts) != 3:
        return None
    try:
        bus, vendor, product = (int(part, 16) for part in parts)
    except ValueError:
        return None
    return HidrawNode(name=name, devnode=str(dev / name), bus=bus, vendor_id=vendor,
                      product_id=product, hid_name=fields.get("HID_NAME", ""),
                      uniq=fields.get("HID_UNIQ", ""))


def scan_hidraw(vendor_id: int | None = MAGTEK_VENDOR_ID, *, sysfs: Path = SYSFS_HIDRAW,
                dev: Path = DEV) -> list[HidrawNode]:
    """Every hidraw node the kernel has (of ``vendor_id`` unless None), sorted by name."""
    nodes: list[HidrawNode] = []
    try:
        entries = sorted(sysfs.iterdir(), key=lambda p: (len(p.name), p.name))
    except OSError:
        return []  # no hidraw support, or not Linux
    for entry in entries:
        try:
            fields = parse_uevent((entry / "device" / "uevent").read_text())
        except OSError:
            continue  # removed while we looked
        node = _node(entry.name, fields, dev)
        if node is not None and (vendor_id is None or node.vendor_id == vendor_id):
            nodes.append(node)
    return nodes


def _who() -> str:
    uid, gid = os.geteuid(), os.getegid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    groups = []
    for group_id in sorted({gid, *os.getgroups()}):
        try:
            groups.append(grp.getgrgid(group_id).gr_name)
        except KeyError:
            groups.append(str(group_id))
    return f"user {user}, groups {','.join(groups)}"


def _owner(path: str) -> str:
    try:
        info = os.stat(path)
    except OSError:
        return "unknown owner"
    try:
        owner = pwd.getpwuid(info.st_uid).pw_name
    except KeyError:
        owner = str(info.st_uid)
    try:
        group = grp.getgrgid(info.st_gid).gr_name
    except KeyError:
        group = str(info.st_gid)
    return f"{owner}:{group} mode {stat.S_IMODE(info.st_mode):04o}"


def explain(node: HidrawNode, error: OSError) -> NodeProblem:
    """Turn the error of opening ``node`` into a reason and what to do about it."""
    code = error.errno
    if code in (errno.EACCES, errno.EPERM):
        return NodeProblem(node, "permission", (
            f"permission denied opening {node.devnode} ({_owner(node.devnode)}; we are "
            f"{_who()}): {PERMISSION_HINT}"))
    if code == errno.EBUSY:
        return NodeProblem(node, "busy", (
            f"{node.devnode} is busy: another program holds the reader exclusively "
            "(a second bridge, or a libusb program that detached the kernel driver)"))
    if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
        return NodeProblem(node, "missing", (
            f"{node.devnode} does not exist although sysfs lists {node.name} (no devtmpfs "
            "or udev on this system, or a container without the device)"))
    return NodeProblem(node, "error", f"cannot open {node.devnode}: {error}")


def probe(node: HidrawNode,
          opener: Callable[[str, int], int] = os.open) -> NodeProblem | None:
    """Open and close ``node`` the way hidapi does (read-write); None when that works."""
    try:
        fd = opener(node.devnode, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        return explain(node, exc)
    with contextlib.suppress(OSError):
        os.close(fd)
    return None


def node_for_path(path: str, nodes: list[HidrawNode]) -> HidrawNode:
    """The node for a device path (hidapi's ``/dev/hidrawN``), known to sysfs or not."""
    for node in nodes:
        if node.devnode == path:
            return node
    return HidrawNode(name=Path(path).name, devnode=path, bus=0, vendor_id=0, product_id=0,
                      hid_name="", uniq="")


__all__ = [
    "PERMISSION_HINT",
    "HidrawNode",
    "NodeProblem",
    "explain",
    "node_for_path",
    "parse_uevent",
    "probe",
    "scan_hidraw",
]
