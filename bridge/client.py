"""Operator tools that talk to a running bridge through the broker: ``send`` and ``monitor``.

They use the same ``MqttLink`` as the bridge (subscribe first, then act) and print messages
decoded with card data masked.
"""

from __future__ import annotations

import json
import queue
import secrets
import sys
import time
from collections.abc import Callable
from typing import Final, TextIO

from bridge.errors import ProtocolError
from bridge.mms import (
    Message,
    MessageType,
    command_by_name,
    describe,
    describe_dict,
    normalize_command_hex,
    parse_message,
)
from bridge.mqtt.link import InboundMessage, LinkOptions, MqttLink
from bridge.mqtt.topics import ReaderTopics, device_list_wildcard

EXIT_OK: Final = 0
EXIT_DEVICE_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_TIMEOUT: Final = 3
EXIT_REJECTED: Final = 4
EXIT_INTERRUPTED: Final = 130  # Ctrl-C before any answer (128 + SIGINT, as shells report)
_CONNECT_TIMEOUT: Final = 10.0


def _connect(options: LinkOptions, subscriptions: list[tuple[str, int]],
             inbox: queue.Queue[InboundMessage], role: str,
             timeout: float = _CONNECT_TIMEOUT) -> MqttLink:
    """Connected and subscribed (SUBACK received), or ``ConnectionError`` at the first failed
    attempt: a tool must not sit in a reconnect loop while the operator waits."""
    link = MqttLink(
        options,
        client_id=f"magtek-bridge-{role}-{secrets.token_hex(3)}",
        name=role,
        subscriptions=subscriptions,
        on_message=inbox.put,
    )
    link.start()
    deadline = time.monotonic() + timeout
    while not link.wait_ready(0.05):
        if link.last_error is not None or time.monotonic() >= deadline:
            error = link.last_error or f"no answer within {timeout:g} s"
            link.stop()
            raise ConnectionError(
                f"broker {options.host}:{options.port}: {error} (set --host/--port, "
                "[mqtt] in the config, or MAGTEK_BRIDGE_MQTT__HOST/__PORT)")
    return link


def resolve_root(options: LinkOptions, prefix: str, root: str, timeout: float = 2.0) -> str:
    """``root`` as given when it has a ``/``; else the connected reader whose root ends with it.

    ``auto`` picks the only connected reader. Uses the retained ``Status`` messages.
    """
    if "/" in root:
        return root.rstrip("/")
    inbox: queue.Queue[InboundMessage] = queue.Queue()
    link = _connect(options, [(device_list_wildcard(prefix), 1)], inbox, "lookup")
    found: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                msg = inbox.get(timeout=0.2)
            except queue.Empty:
                if found:
                    break
                continue
            if msg.payload.strip().lower() == b"connected":
                found.append(msg.topic.removesuffix("/Status"))
    finally:
        link.stop()
    matches = found if root == "auto" else [r for r in found if r.endswith(root)]
    if len(matches) != 1:
        raise LookupError(f"cannot pick one reader for {root!r}: connected readers are {found}")
    return matches[0]


def command_bytes(text: str) -> bytes:
    """A command given on the command line: a known name (``get_serial``) or hex."""
    try:
        return command_by_name(text)
    except KeyError:
        return normalize_command_hex(text)


def send(
    options: LinkOptions,
    root: str,
    command: bytes,
    *,
    timeout: float = 10.0,
    follow: float = 0.0,
    as_json: bool = False,
    out: TextIO = sys.stdout,
) -> int:
    """Publish ``command`` to ``<root>/SendCommand`` and wait for its matching response.

    Returns an exit code: 0 when the reader reports success, 1 on a failure status, 3 on
    timeout, 4 when the bridge rejected the command. Ctrl-C ends ``follow`` quietly with the
    response's code (130 when no response had come).
    """
    request = parse_message(command)
    topics = ReaderTopics.for_root(root)
    inbox: queue.Queue[InboundMessage] = queue.Queue()
    link = _connect(options, [(topics.mms_message, 1), (topics.error, 1)], inbox, "send")
    code = EXIT_TIMEOUT
    # Echoed on the Error report that refuses this command (MQTT v5): other clients'
    # refusals on the same topic are not ours.
    correlation = secrets.token_bytes(8) if link.v5 else None
    unnamed = 0  # refusals reported only as a count (a flood): ours may be among them
    try:
        link.publish(topics.send_command, command.hex().upper().encode(), qos=1, kind="command",
                     correlation_data=correlation)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = inbox.get(timeout=0.1)
            except queue.Empty:
                continue
            if msg.topic == topics.error:
                if not refuses(msg, request, correlation):
                    unnamed += _summarised(msg.payload)  # others', or a flood summary
                    continue
                print(f"rejected by the bridge: {msg.payload.decode(errors='replace')}", file=out)
                return EXIT_REJECTED
            parsed = _parse_hex(msg.payload)
            if parsed is None:
                continue
            _print(parsed, as_json, out)
            if (parsed.message_type == MessageType.DEVICE_RESPONSE
                    and (parsed.ref, parsed.command_id) == (request.ref, request.command_id)):
                ok = parsed.status is not None and parsed.status.ok
                code = EXIT_OK if ok else EXIT_DEVICE_FAILED
                deadline = time.monotonic() + follow
        if code == EXIT_TIMEOUT:
            print(f"no response from {root} within {timeout} s", file=out)
            if unnamed:
                print(f"the bridge meanwhile refused {unnamed} commands for this reader "
                      "without naming them (a flood of refusals): this one may be among them",
                      file=out)
        return code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED if code == EXIT_TIMEOUT else code
    finally:
        link.stop()


def refuses(report: InboundMessage, request: Message, correlation: bytes | None) -> bool:
    """Is this ``<root>/Error`` report the refusal of ``request``, sent with ``correlation``?

    By the echoed correlation data when the report has some (exact: two clients may send the
    same command); else by the ``ref`` and ``command_id`` it names. A report naming no command
    (a flood summary, a payload that was not MMS) refuses no command of ours.
    """
    if report.correlation_data is not None:
        return correlation is not None and report.correlation_data == correlation
    try:
        body = json.loads(report.payload)
    except ValueError:
        return False
    if not isinstance(body, dict):
        return False
    ref, command_id = body.get("ref"), body.get("command_id")
    if not isinstance(ref, str) or not isinstance(command_id, str):
        return False
    try:
        return (int(ref, 16), int(command_id, 16)) == (request.ref, request.command_id)
    except ValueError:
        return False


def _summarised(payload: bytes) -> int:
    """How many refusals an ``Error`` summary stands for (0 for anything else)."""
    try:
        body = json.loads(payload)
    except ValueError:
        return 0
    count = body.get("count") if isinstance(body, dict) else None
    return count if isinstance(count, int) and body.get("reason") == "summary" else 0


def monitor(
    options: LinkOptions,
    prefix: str,
    root: str | None = None,
    *,
    count: int = 0,
    duration: float = 0.0,
    as_json: bool = False,
    out: TextIO = sys.stdout,
    on_ready: Callable[[list[str]], None] | None = None,
) -> int:
    """Print decoded messages and status changes as they arrive (all readers, or one).

    ``duration`` bounds the whole run, connecting included; ``on_ready`` is called with the
    topic filters once the broker has acknowledged the subscription (nothing is missed after).
    """
    started = time.monotonic()
    deadline = started + duration if duration > 0 else float("inf")
    base = root.rstrip("/") if root else prefix + "+/+"
    subs = [(f"{base}/{leaf}", 1) for leaf in ("MMSMessage", "Status", "Error", "Info")]
    inbox: queue.Queue[InboundMessage] = queue.Queue()
    link = _connect(options, subs, inbox, "monitor",
                    timeout=min(_CONNECT_TIMEOUT, duration) if duration > 0 else _CONNECT_TIMEOUT)
    if on_ready is not None:
        on_ready([topic for topic, _ in subs])
    seen = 0
    try:
        while time.monotonic() < deadline and (count <= 0 or seen < count):
            try:
                msg = inbox.get(timeout=max(0.0, min(0.2, deadline - time.monotonic())))
            except queue.Empty:
                continue
            seen += 1
            reader, _, leaf = msg.topic.rpartition("/")
            if leaf == "MMSMessage" and (parsed := _parse_hex(msg.payload)) is not None:
                if as_json:
                    print(json.dumps({"root": reader, **describe_dict(parsed)}), file=out)
                else:
                    print(f"{reader}: {describe(parsed)}", file=out)
            elif as_json:
                print(json.dumps({"root": reader, leaf.lower(): msg.payload.decode(
                    errors="replace")}), file=out)
            else:
                print(f"{reader}: {leaf} {msg.payload.decode(errors='replace')}", file=out)
            out.flush()
    except KeyboardInterrupt:
        pass
    finally:
        link.stop()
    return EXIT_OK


def _parse_hex(payload: bytes) -> Message | None:
    try:
        return parse_message(bytes.fromhex(payload.decode("ascii")))
    except (ValueError, ProtocolError):
        return None


def _print(message: Message, as_json: bool, out: TextIO) -> None:
    if as_json:
        print(json.dumps(describe_dict(message)), file=out)
    else:
        print(describe(message), file=out)
    out.flush()


__all__ = ["command_bytes", "monitor", "refuses", "resolve_root", "send"]
