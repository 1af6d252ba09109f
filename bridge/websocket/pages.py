"""What the endpoint serves over plain HTTP: the test page and its two JSON documents.

The page (``ui.html``, package data) has no build step and loads nothing from elsewhere; it
asks ``/readers`` which readers there are and ``/commands`` what it can send. The commands are
built here by ``bridge.mms.commands``, in the ``SENDCOMMAND,<hex>`` form of the WebSocket MMS
demo, so the page never carries hex of its own.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from importlib import resources
from urllib.parse import quote

from bridge.mms import commands


def demo_commands() -> list[dict[str, str]]:
    """The commands the page offers: a label and the text frame to send."""
    entries: list[tuple[str, Callable[[], bytes]]] = [
        ("Get serial number", commands.get_serial_number),
        ("Get firmware id", commands.get_firmware_id),
        ("Start transaction ($1.00, swipe, insert or tap)", commands.start_transaction),
        ("Start contactless ($1.00 USD, 10 s)", lambda: commands.start_transaction(
            timeout_s=10, msr=False, contact=False, currency=840)),
        ("Cancel transaction", commands.cancel_transaction),
        ("Reset device", commands.reset_device),
        ("Set user event notifications (all)", commands.set_user_events),
    ]
    return [{"label": label, "command": "SENDCOMMAND," + build().hex().upper()}
            for label, build in entries]


@cache
def ui_page() -> bytes:
    """The test page (read once from the package)."""
    return resources.files("bridge.websocket").joinpath("ui.html").read_bytes()


def readers_document(roots: list[str]) -> str:
    """``/readers``: every connected reader root and the WebSocket path that reaches it."""
    return json.dumps({"readers": [{"root": root, "path": "/" + quote(root)} for root in roots]})


def commands_document() -> str:
    """``/commands``: the page's command list."""
    return json.dumps({"commands": demo_commands()})


__all__ = ["commands_document", "demo_commands", "readers_document", "ui_page"]
