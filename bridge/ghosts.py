"""Ghost readers: retained ``Status``/``Info`` of roots this bridge no longer serves.

A root changes when a friendly name is added, the prefix changes, or the product string does;
the old root's retained ``Status``/``Info`` would otherwise stay on the broker forever and
every device list would show a reader that does not exist. The bridge remembers, per serial,
the root it served (``RootMemory``): in ``served-roots.json`` of its state directory
(``$STATE_DIRECTORY``) when there is one, and always in its retained ``BridgeInfo``
(``served_roots``), which it reads back at start when there is no file. At start, and
whenever a reader is identified, every remembered root that the current settings would no
longer give its serial is cleared with an empty retained publish.

A reader moved to another bridge keeps its root, so nothing here notices; ``clear_root`` (the
``clear-root`` command) clears a root by hand.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

import structlog

from bridge.mqtt.link import InboundMessage, LinkOptions, MqttLink, Publication
from bridge.mqtt.topics import ReaderTopics, reader_root

_log = structlog.get_logger("bridge.ghosts")

MEMORY_FILE: Final = "served-roots.json"
_CONNECT_TIMEOUT: Final = 10.0


@dataclass(frozen=True, slots=True)
class ServedRoot:
    """A root this bridge published a reader under."""

    serial: str
    model: str
    root: str


def memory_file(environ: Mapping[str, str]) -> Path | None:
    """``served-roots.json`` in the systemd/Docker state directory, if there is one."""
    state = environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(state) / MEMORY_FILE if state else None


def clear_publications(root: str) -> list[Publication]:
    """Empty retained publishes that delete a root's ``Status`` and ``Info`` (and a retained
    ``SendCommand`` someone left there), then a plain ``disconnected`` on ``Status``.

    The broker hands the empty ``Status`` to live subscribers too, and MagTek's consumer pages
    list every ``Status`` they get as a device, hidden only when it says ``disconnected``: the
    last, non-retained word hides the ghost in pages already open, and nothing is stored for
    pages opened later.
    """
    topics = ReaderTopics.for_root(root)
    cleared = [Publication(topic, b"", qos=1, retain=True)
               for topic in (topics.status, topics.info, topics.send_command)]
    return [*cleared, Publication(topics.status, b"disconnected", qos=1, retain=False)]


def _parse_entries(items: object) -> dict[str, ServedRoot]:
    out: dict[str, ServedRoot] = {}
    if not isinstance(items, list):
        return out
    for item in items:
        if (isinstance(item, dict) and all(isinstance(item.get(k), str) and item.get(k)
                                           for k in ("serial", "model", "root"))):
            out[item["serial"]] = ServedRoot(item["serial"], item["model"], item["root"])
    return out


class RootMemory:
    """The roots this bridge served, per serial; thread-safe.

    Args:
        path: the JSON file to keep them in, or None (then only the retained ``BridgeInfo``
            carries them: ``seed`` it from there).
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._served: dict[str, ServedRoot] = {}
        self.loaded_from_file = False
        if path is not None and path.exists():
            try:
                self._served = _parse_entries(json.loads(path.read_text()))
                self.loaded_from_file = True
            except (OSError, ValueError) as exc:
                _log.warning("served_roots_unreadable", path=str(path), error=str(exc))

    def entries(self) -> list[ServedRoot]:
        with self._lock:
            return sorted(self._served.values(), key=lambda e: e.serial)

    def as_json(self) -> list[dict[str, str]]:
        return [asdict(entry) for entry in self.entries()]

    def seed(self, info_payload: bytes) -> list[str]:
        """Take the ``served_roots`` of a retained ``BridgeInfo``. Serials not known yet are
        added; for a serial already served under another root (identified before the
        retained copy arrived) the remembered root is returned: a ghost to clear."""
        try:
            document = json.loads(info_payload or b"{}")
        except ValueError:
            return []
        found = _parse_entries(document.get("served_roots") if isinstance(document, dict)
                               else None)
        replaced: list[str] = []
        with self._lock:
            for serial, entry in found.items():
                current = self._served.get(serial)
                if current is None:
                    self._served[serial] = entry
                elif current.root != entry.root:
                    replaced.append(entry.root)
        return replaced

    def served(self, serial: str, model: str, root: str) -> str | None:
        """Record that ``serial`` is served under ``root``; the root it had before if that
        differs (a ghost to clear), else None."""
        with self._lock:
            old = self._served.get(serial)
            self._served[serial] = ServedRoot(serial, model, root)
        return old.root if old is not None and old.root != root else None

    def stale(self, prefix: str, friendly_names: Mapping[str, str]) -> list[ServedRoot]:
        """Remembered roots the current settings no longer give their serial; forgotten."""
        with self._lock:
            gone = [e for e in self._served.values()
                    if reader_root(prefix, e.model, e.serial, friendly_names.get(e.serial))
                    != e.root]
            for entry in gone:
                del self._served[entry.serial]
        return gone

    def save(self) -> None:
        """Write the file (atomically); a failure is logged, the retained copy remains."""
        if self.path is None:
            return
        temporary = self.path.with_suffix(".tmp")
        try:
            temporary.write_text(json.dumps(self.as_json(), indent=1))
            os.replace(temporary, self.path)
        except OSError as exc:
            _log.warning("served_roots_not_saved", path=str(self.path), error=str(exc))


class GhostSweeper:
    """Clears ghost roots through the bridge's own MQTT session.

    Args:
        memory: the roots served.
        prefix, friendly_names: the ``[topics]`` settings that make a serial's root now.
        publish: queues one publication on the bridge's session.
        served_now: the roots connected readers use right now (never cleared).
    """

    def __init__(self, memory: RootMemory, *, prefix: str, friendly_names: Mapping[str, str],
                 publish: Callable[[Publication], None],
                 served_now: Callable[[], Iterable[str]]) -> None:
        self.memory = memory
        self._prefix = prefix
        self._friendly_names = dict(friendly_names)
        self._publish = publish
        self._served_now = served_now
        self.cleared: list[str] = []

    def sweep(self) -> list[str]:
        """Clear every remembered root the settings no longer give; the roots cleared."""
        ghosts = [e.root for e in self.memory.stale(self._prefix, self._friendly_names)]
        return self._clear(ghosts)

    def seed(self, info_payload: bytes) -> list[str]:
        """Our retained ``BridgeInfo`` came back: clear what it shows we no longer serve."""
        replaced = self.memory.seed(info_payload)
        ghosts = [e.root for e in self.memory.stale(self._prefix, self._friendly_names)]
        return self._clear([*replaced, *ghosts])

    def reader_identified(self, serial: str, model: str, root: str) -> list[str]:
        """A reader is served under ``root``: clear its old root if it had another."""
        old = self.memory.served(serial, model, root)
        return self._clear([old] if old is not None else [])

    def _clear(self, roots: list[str]) -> list[str]:
        # Once per run: the state file and the retained info may both name the same ghost.
        skip = set(self._served_now()) | set(self.cleared)
        cleared = [r for r in dict.fromkeys(roots) if r not in skip]
        for root in cleared:
            _log.info("ghost_root_cleared", root=root)
            for publication in clear_publications(root):
                self._publish(publication)
        self.cleared.extend(cleared)
        self.memory.save()
        return cleared


def clear_root(options: LinkOptions, root: str, *, force: bool = False,
               wait: float = 1.0) -> tuple[bool, str]:
    """Clear one root's retained ``Status``/``Info`` by hand (the ``clear-root`` command).

    Refuses (``False``) a root whose retained ``Status`` says ``connected``, unless
    ``force``: a live reader would vanish from device lists until it reconnects.
    """
    root = root.rstrip("/")
    topics = ReaderTopics.for_root(root)
    inbox: queue.Queue[InboundMessage] = queue.Queue()
    link = MqttLink(options, client_id=f"magtek-bridge-clear-{secrets.token_hex(3)}",
                    name="clear-root", subscriptions=[(topics.status, 1)], on_message=inbox.put)
    link.start()
    try:
        if not link.wait_ready(_CONNECT_TIMEOUT):
            raise TimeoutError(link.last_error or "no answer from the broker")
        status = b""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                message = inbox.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if message.retain:
                status = message.payload
                break
        if status.strip().lower() == b"connected" and not force:
            link.stop()
            return False, f"{root} is connected (retained Status); use --force to clear it"
    except BaseException:
        link.stop()
        raise
    link.stop(final=clear_publications(root))  # waits for the broker to take them
    was = status.decode("utf-8", "replace") or "nothing retained"
    return True, f"cleared {root}/Status, /Info and /SendCommand (Status was: {was})"


__all__ = [
    "MEMORY_FILE",
    "GhostSweeper",
    "RootMemory",
    "ServedRoot",
    "clear_publications",
    "clear_root",
    "memory_file",
]
