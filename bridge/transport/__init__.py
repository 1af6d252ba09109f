"""Reader transports: one small interface, a hidapi backend and a simulated one."""

from __future__ import annotations

from typing import Any

from bridge.errors import TransportError
from bridge.transport.base import (
    BOOT_PRODUCT_IDS,
    MAGTEK_VENDOR_ID,
    MMS_PRODUCT_IDS,
    REPORT_LEN,
    Backend,
    DeviceInfo,
    Transport,
)


def get_backend(name: str, **options: Any) -> Backend:
    """A backend by name, imported lazily (a missing libhidapi never breaks the simulator)."""
    if name == "simulated":
        from bridge.transport.simulated import SimulatedBus  # noqa: PLC0415

        return SimulatedBus(**options)
    if name == "hid":
        from bridge.transport.hid import HidBackend  # noqa: PLC0415

        return HidBackend(**options)
    raise TransportError(f"unknown transport backend {name!r} (use 'hid' or 'simulated')")


__all__ = [
    "BOOT_PRODUCT_IDS",
    "MAGTEK_VENDOR_ID",
    "MMS_PRODUCT_IDS",
    "REPORT_LEN",
    "Backend",
    "DeviceInfo",
    "Transport",
    "get_backend",
]
