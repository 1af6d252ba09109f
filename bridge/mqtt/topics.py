"""Topic names, pure: MagTek's contract (PROTOCOL.md §6.1) and our additions beside it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

_NOT_ALNUM: Final = re.compile(r"[^0-9A-Za-z]")


def filter_alnum(text: str) -> str:
    """Keep only ``[0-9A-Za-z]``, as MagTek's device client does for every root segment."""
    return _NOT_ALNUM.sub("", text)


def model_segment(product: str) -> str:
    """USB product string -> topic segment: ``"DynaFlex II"`` -> ``"DynaFlexII"`` (§1)."""
    return filter_alnum(product)


def validate_prefix(prefix: str) -> str:
    """A prefix is concatenated unfiltered (§6.1), so it must be a clean topic path.

    Raises:
        ValueError: wildcards, a leading ``/``, empty levels, or no trailing ``/``.
    """
    if not prefix.endswith("/"):
        raise ValueError("must end with '/'")
    if prefix.startswith("/"):
        raise ValueError("must not start with '/'")
    if "+" in prefix or "#" in prefix:
        raise ValueError("must not contain MQTT wildcards")
    if "" in prefix[:-1].split("/"):
        raise ValueError("must not contain empty levels ('//')")
    if "\x00" in prefix:
        raise ValueError("must not contain NUL")
    return prefix


def reader_root(prefix: str, model: str, serial: str, friendly_name: str | None = None) -> str:
    """``<prefix><model>/<serial>`` or ``<prefix><model>/<name>-<serial>`` (§6.1)."""
    serial_part = filter_alnum(serial)
    if friendly_name and filter_alnum(friendly_name):
        serial_part = f"{filter_alnum(friendly_name)}-{serial_part}"
    return f"{prefix}{filter_alnum(model)}/{serial_part}"


def device_list_wildcard(prefix: str) -> str:
    """The filter that lists every reader's Status at our root depth."""
    return f"{prefix}+/+/Status"


@dataclass(frozen=True, slots=True)
class ReaderTopics:
    """Every topic of one reader root."""

    root: str
    status: str
    mms_message: str
    send_command: str
    info: str
    error: str

    @classmethod
    def for_root(cls, root: str) -> ReaderTopics:
        root = root.rstrip("/")
        return cls(
            root=root,
            status=f"{root}/Status",
            mms_message=f"{root}/MMSMessage",
            send_command=f"{root}/SendCommand",
            info=f"{root}/Info",
            error=f"{root}/Error",
        )


BRIDGE_STATE: Final = "State"
BRIDGE_INFO: Final = "BridgeInfo"


def bridge_list_wildcard(bridge_prefix: str) -> str:
    """The filter that lists every bridge's state (``MagTek/Bridge/+/State`` by default)."""
    return f"{bridge_prefix}+/{BRIDGE_STATE}"


@dataclass(frozen=True, slots=True)
class BridgeTopics:
    """Bridge-level topics: ``<bridge_prefix><host id>/State`` and ``.../BridgeInfo``.

    Never ``Status`` or ``Info``: MagTek's consumers list devices with ``+/+/Status``-style
    wildcards (``MagTek/+/+/Status`` by default), and a bridge topic ending that way would be
    listed as a reader at some prefix depth. ``State`` and ``BridgeInfo`` match no reader
    wildcard at any depth.
    """

    bridge_prefix: str
    host_id: str

    @property
    def root(self) -> str:
        return f"{self.bridge_prefix}{self.host_id}"

    @property
    def status(self) -> str:
        """Retained ``online``/``offline`` (also the last will)."""
        return f"{self.root}/{BRIDGE_STATE}"

    @property
    def info(self) -> str:
        return f"{self.root}/{BRIDGE_INFO}"


def parse_send_command_topic(prefix: str, topic: str) -> str | None:
    """The reader root of a ``SendCommand`` topic under ``prefix``, else ``None``."""
    if not topic.startswith(prefix) or not topic.endswith("/SendCommand"):
        return None
    root = topic.removesuffix("/SendCommand")
    levels = root[len(prefix):].split("/")
    if len(levels) != 2 or not all(levels):
        return None
    return root


__all__ = [
    "BRIDGE_INFO",
    "BRIDGE_STATE",
    "BridgeTopics",
    "ReaderTopics",
    "bridge_list_wildcard",
    "device_list_wildcard",
    "filter_alnum",
    "model_segment",
    "parse_send_command_topic",
    "reader_root",
    "validate_prefix",
]
