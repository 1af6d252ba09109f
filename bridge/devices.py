"""``magtek-bridge devices``: the readers hidapi finds, the backend it used, and every MagTek
hidraw node the kernel has that we cannot open, with the reason and the fix."""

from __future__ import annotations

import json
from importlib import metadata
from typing import Any, TextIO

from bridge.transport.base import DeviceInfo
from bridge.transport.hid import HidApi, HidBackend
from bridge.transport.hidraw_nodes import NodeProblem

_NONE_FOUND = ("No MagTek MMS readers found (vendor 0x0801). Check the USB cable, and that the "
               "udev rule systemd/70-magtek-mms.rules is installed.")


def _hidapi_version() -> str:
    try:
        return metadata.version("hidapi")
    except metadata.PackageNotFoundError:
        return "?"


def list_devices(api: HidApi, out: TextIO, *, as_json: bool = False) -> int:
    """Print what the hid backend sees; 0 when it could enumerate at all."""
    backend = HidBackend(api, warn_unlisted=False)  # diagnose() reports those, on stdout
    found = backend.enumerate()
    problems = backend.diagnose(found)
    unusable = {p.node.devnode for p in problems}
    usable = [d for d in found if d.path not in unusable]
    if as_json:
        print(json.dumps(_as_dict(backend.api, usable, problems), indent=2), file=out)
        return 0
    print(f"backend: {backend.api} (hidapi {_hidapi_version()})", file=out)
    for d in usable:
        print(f"{d.path}  {d.vendor_id:04X}:{d.product_id:04X}  {d.product}  "
              f"usb-serial={d.usb_serial or '-'}", file=out)
    for p in problems:
        node = p.node
        print(f"not usable: {node.devnode}  {node.vendor_id:04X}:{node.product_id:04X}  "
              f"{node.hid_name or '-'}  serial={node.uniq or '-'}: {p.kind}: {p.detail}",
              file=out)
    if not usable and not problems:
        print(_NONE_FOUND, file=out)
    return 0


def _as_dict(api: str, usable: list[DeviceInfo],
             problems: list[NodeProblem]) -> dict[str, Any]:
    return {
        "backend": api,
        "hidapi": _hidapi_version(),
        "readers": [
            {"path": d.path, "vendor_id": f"0x{d.vendor_id:04X}",
             "product_id": f"0x{d.product_id:04X}", "product": d.product,
             "usb_serial": d.usb_serial} for d in usable
        ],
        "not_usable": [
            {"path": p.node.devnode, "vendor_id": f"0x{p.node.vendor_id:04X}",
             "product_id": f"0x{p.node.product_id:04X}", "name": p.node.hid_name,
             "serial": p.node.uniq, "reason": p.kind, "detail": p.detail} for p in problems
        ],
    }


__all__ = ["list_devices"]
