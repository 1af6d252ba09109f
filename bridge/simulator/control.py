"""Hands on the simulated reader: present or remove a card from outside the bridge.

For demos and integrators in manual mode (``readers.simulate_card = "manual"``): a card is
presented only when asked, by publishing ``insert``, ``swipe``, ``tap`` or ``remove`` to
``<root>/Simulator/Present`` (the ``present`` command does that). Only the bridge's in-process
simulated readers listen there; a real reader's root has no such topic, and an action for one
is refused in the log.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

from bridge.simulator.cards import CardKind
from bridge.simulator.reader import SimulatedReader

PRESENT_LEAF: Final = "Simulator/Present"
CardAction = Literal["insert", "swipe", "tap", "remove"]
ACTIONS: Final[tuple[str, ...]] = get_args(CardAction)
_KINDS: Final[dict[str, CardKind]] = {"insert": "insert", "swipe": "swipe", "tap": "tap"}


def present_topic(root: str) -> str:
    return f"{root.rstrip('/')}/{PRESENT_LEAF}"


def present_wildcard(prefix: str) -> str:
    """Every simulated reader's ``Present`` topic under the device prefix."""
    return f"{prefix}+/+/{PRESENT_LEAF}"


def parse_present_topic(prefix: str, topic: str) -> str | None:
    """The reader root of a ``.../Simulator/Present`` topic under ``prefix``, else None."""
    suffix = "/" + PRESENT_LEAF
    if not topic.startswith(prefix) or not topic.endswith(suffix):
        return None
    root = topic.removesuffix(suffix)
    levels = root[len(prefix):].split("/")
    return root if len(levels) == 2 and all(levels) else None


def apply_action(reader: SimulatedReader, payload: bytes) -> tuple[bool, str]:
    """Do what ``payload`` asks; (done?, what happened) for the log."""
    action = payload.decode("ascii", "replace").strip().lower()
    if action == "remove":
        done = reader.remove_card()
        return done, "card removed" if done else "no card to remove"
    kind = _KINDS.get(action)
    if kind is not None:
        done = reader.present_card(kind)
        return done, f"{kind} presented" if done else f"{kind} not taken by the reader"
    return False, f"unknown action {action[:20]!r} (use {', '.join(ACTIONS)})"


__all__ = ["ACTIONS", "PRESENT_LEAF", "CardAction", "apply_action", "parse_present_topic",
           "present_topic", "present_wildcard"]
