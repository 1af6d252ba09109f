"""A simulated DynaFlex II that speaks only HID reports (PROTOCOL.md §10).

Transport-agnostic: the host side calls ``handle_host_report`` and ``next_device_report``,
which with the report queue and the timers come from ``bridge.simulator.reports``; this
module is the device's behaviour: commands, cards, transactions.

Cards (PROTOCOL.md §5): Start Transaction names the reader types it allows (A3: MSR, contact,
contactless); a waiting transaction takes an allowed card. With ``auto_present`` set, the
reader presents a card by itself ``present_delay`` seconds after the start: the only allowed
kind, or ``auto_present`` when several are allowed (else insert, tap, swipe in that order).
With ``auto_present=None`` (manual mode) cards come only from ``present_card`` and
``remove_card``; a card presented while idle stays in the field/slot (a swipe is buffered)
for the next transaction, and sends the idle user events (1001 category 01) when property
1.2.7.1.2.1 enables them (byte 0 bit 7: a simulator choice, the bit map is unconfirmed).

Statuses where PROTOCOL.md leaves the device's answer open: ``bridge.simulator.replies``.
Reports that do not reassemble, and messages that do not parse, are dropped
silently, as a device would.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Final

from bridge.errors import ProtocolError
from bridge.mms import (
    Message,
    MessageType,
    build_response,
    decode_tlvs,
    parse_message,
    property_response,
    read_property,
)
from bridge.simulator.cards import (
    CardKind,
    card_flow,
    card_removed,
    mifare_flow,
    notification,
    pin_complete,
    prompt,
    user_event,
)
from bridge.simulator.replies import (
    BAD_PAYLOAD,
    CAPABILITIES_PATH,
    CARD_ORDER,
    FIRMWARE_PATH,
    HARDWARE_PATH,
    NO_TRANSACTION,
    OK,
    SERIAL_PATH,
    STARTED,
    TRANSACTION_RUNNING,
    UNKNOWN_COMMAND,
    UNKNOWN_PROPERTY,
    USER_EVENTS_PATH,
    WEBSOCKET_CONNECTIONS_PATH,
    file_message,
    padded,
    reader_kinds,
)
from bridge.simulator.reports import ReportQueue

DEFAULT_PRESENT_DELAY = 1.0  # a person takes about a second to tap, insert or swipe
RESET_UNPLUG_DELAY: Final = 0.05  # §3.6: the device resets within 500 ms
RESET_REPLUG_DELAY: Final = 0.3
_HOST_LOG_LIMIT: Final = 10_000


class SimulatedReader(ReportQueue):
    """One simulated reader.

    Args:
        serial: 7 hex digits (sent as 4 bytes with a trailing 0 nibble, §4).
        firmware_id: ASCII main firmware version.
        paced: release at most one report per millisecond, like USB full speed.
        auto_present: the kind of card presented by itself once a transaction waits (the
            preference when it allows several), or None for manual mode.
        present_delay: seconds between the start of a transaction and the card (default
            ``DEFAULT_PRESENT_DELAY``, read when the reader is made).
        report_len: HID report length.
    """

    def __init__(self, serial: str = "B123456", *, firmware_id: str = "1000007183-A1-PCI",
                 paced: bool = False, auto_present: CardKind | None = "tap",
                 present_delay: float | None = None,
                 report_len: int = 64, stream_rate: float = 0.0) -> None:
        super().__init__(serial, paced=paced, report_len=report_len, stream_rate=stream_rate)
        self.firmware_id = firmware_id
        self.auto_present = auto_present
        self.present_delay = DEFAULT_PRESENT_DELAY if present_delay is None else present_delay
        self.host_messages: deque[bytes] = deque(maxlen=_HOST_LOG_LIMIT)
        self.user_events = b"\x00\x00\x00\x00"
        self.websocket_connections = b"\x04"
        self._transaction = False
        self._transaction_id = 0
        self._allowed: tuple[CardKind, ...] = ()
        self._mifare = False  # the waiting transaction is an NFC MIFARE read (1100)
        self._held: CardKind | None = None  # card in the field or slot, or a buffered swipe
        self._removal_due = False  # an inserted card's transaction ended; 0101 10010300 next

    # -- cards and plug (the report side is ReportQueue's) ----------------------------------

    def present_card(self, kind: CardKind = "tap") -> bool:
        """Tap, insert or swipe a card. A waiting transaction that allows ``kind`` reads it;
        while idle the card stays for the next transaction (idle user event if enabled).
        False when nothing happened (a kind the transaction does not allow, a second insert).
        """
        with self._cond:
            if self._transaction:
                if kind not in self._allowed:
                    return False
                self._read_card(kind, self._transaction_id)
                return True
            if kind == "insert" and self._held == "insert":
                return False
            self._held = kind
            self._idle_event(user_event(kind))
            return True

    def remove_card(self) -> bool:
        """Take the card away (from the slot or field); False when there is none."""
        with self._cond:
            held, self._held = self._held, None
            if held is None:
                return False
            if held == "insert" and self._removal_due:
                self._removal_due = False
                self._queue(card_removed())
            else:
                self._idle_event(user_event(held, removed=True))
            return True

    def unplug(self) -> None:
        with self._cond:
            super().unplug()
            self._transaction = False
            self._held = None
            self._removal_due = False

    # -- device behaviour (caller holds the lock) -------------------------------------------

    def _respond(self, request: Message, status: tuple[int, int],
                 payload: bytes | None = None) -> None:
        self._queue(build_response(request.command_id, request.ref, status, payload))

    def _handle_message(self, data: bytes) -> None:
        self.host_messages.append(data)
        try:
            request = parse_message(data)
        except ProtocolError:
            return  # not even a message: a device ignores it
        if request.message_type not in (MessageType.HOST_REQUEST, MessageType.HOST_FILE):
            self._respond(request, BAD_PAYLOAD)
            return
        handler = _HANDLERS.get(request.command_id)
        if handler is None:
            self._respond(request, UNKNOWN_COMMAND)
            return
        handler(self, request)

    def _get_property(self, request: Message) -> None:
        try:
            path = read_property(request).path
        except ProtocolError:
            self._respond(request, BAD_PAYLOAD)
            return
        values: dict[tuple[int, ...], bytes] = {
            SERIAL_PATH: bytes.fromhex(self.serial + "0"),
            FIRMWARE_PATH: padded(self.firmware_id, 19),
            CAPABILITIES_PATH: padded("V=1,SC=1,SR=1,UDE=0,CE=2,CLE=2,BT=0,WF=0", 64),
            HARDWARE_PATH: padded("41PCI450A0", 16),
            USER_EVENTS_PATH: self.user_events,
            WEBSOCKET_CONNECTIONS_PATH: self.websocket_connections,
        }
        value = values.get(path)
        if value is None:
            self._respond(request, UNKNOWN_PROPERTY)
            return
        self._queue(property_response(request, value))

    def _set_property(self, request: Message) -> None:
        try:
            prop = read_property(request)
        except ProtocolError:
            self._respond(request, BAD_PAYLOAD)
            return
        if prop.path == USER_EVENTS_PATH and len(prop.value) == 4:
            self.user_events = prop.value
        elif (prop.path == WEBSOCKET_CONNECTIONS_PATH and len(prop.value) == 1
              and 1 <= prop.value[0] <= 4):
            self.websocket_connections = prop.value
        else:
            self._respond(request, UNKNOWN_PROPERTY)
            return
        self._queue(property_response(request, prop.value))

    def _start_transaction(self, request: Message) -> None:
        if self._transaction:
            self._respond(request, TRANSACTION_RUNNING)
            return
        try:
            items = {t.tag_hex: t.value for t in decode_tlvs(request.payload or b"", offset=2)}
            allowed = reader_kinds(items.get("A3"))
        except ProtocolError:
            self._respond(request, BAD_PAYLOAD)
            return
        if not allowed:
            self._respond(request, BAD_PAYLOAD)
            return
        self._respond(request, STARTED)
        self._queue(prompt("PRESENT CARD", "02010200"))
        self._wait_for_card(allowed, items.get("82", b"\x3c"), mifare=False)

    def _wait_for_card(self, allowed: tuple[CardKind, ...], timeout: bytes, *,
                       mifare: bool) -> None:
        self._transaction = True
        self._transaction_id += 1
        self._allowed = allowed
        self._mifare = mifare
        ident = self._transaction_id
        if timeout and timeout[0]:
            self._later(timeout[0], lambda: self._time_out(ident))
        if self._held in allowed:  # already in the field or slot, or a buffered swipe
            held = self._held
            self._later(0.0, lambda: self._read_card(held, ident))
        elif self.auto_present is not None:
            kind = self.auto_present if self.auto_present in allowed else next(
                k for k in CARD_ORDER if k in allowed)
            self._later(self.present_delay, lambda: self._read_card(kind, ident))

    def _read_card(self, kind: CardKind, ident: int) -> None:
        """The waiting transaction ``ident`` reads a ``kind`` card (if it still waits)."""
        if not (self._transaction and self._transaction_id == ident):
            return
        self._transaction = False
        manual = self.auto_present is None
        flow = mifare_flow() if self._mifare else card_flow(kind, self.serial,
                                                            removed=not manual)
        for message in flow:
            self._queue(message)
        # By hand an inserted card stays in the slot until removed; a swipe is used up.
        self._held = "insert" if kind == "insert" and manual else None
        self._removal_due = self._held == "insert"

    def _time_out(self, ident: int) -> None:
        if self._transaction and self._transaction_id == ident:
            self._transaction = False
            self._queue(notification(0x0105, "00010000"))

    def _idle_event(self, message: bytes | None) -> None:
        if message is not None and not self._transaction and self.user_events[0] & 0x80:
            self._queue(message)

    def _cancel(self, request: Message) -> None:
        if not self._transaction:
            self._respond(request, NO_TRANSACTION)
            return
        self._transaction = False
        self._respond(request, OK)
        self._queue(notification(0x0105, "00030100"))

    def _reset(self, request: Message) -> None:
        self._respond(request, OK)
        self._queue(notification(0x1001, "00030000"))
        # Let the host read the response before the device drops off the bus (§5, §10).
        self._later(RESET_UNPLUG_DELAY, self._reset_unplug)

    def _reset_unplug(self) -> None:
        if not self._out:
            self.unplug()
            self._later(RESET_REPLUG_DELAY, lambda: self.replug(power_up_notification=True))
        else:
            self._later(RESET_UNPLUG_DELAY, self._reset_unplug)

    def _buzzer(self, request: Message) -> None:
        self._respond(request, STARTED)
        self._later(0.01, lambda: self._queue(notification(0x1805, "05040100")))

    def _display(self, request: Message) -> None:
        self._respond(request, OK)

    def _mifare_read(self, request: Message) -> None:
        """1100 NFC MIFARE (seed 004): started, then a tap gives the card's UID."""
        if self._transaction:
            self._respond(request, TRANSACTION_RUNNING)
            return
        self._respond(request, STARTED)
        self._wait_for_card(("tap",), b"\x3c", mifare=True)

    def _request_pin(self, request: Message) -> None:
        """2001 Request PIN: started, a prompt, then (after ``present_delay``: the person
        typing) the 0205 PIN-complete notification with a fake encrypted PIN block."""
        self._respond(request, STARTED)
        self._queue(prompt("ENTER PIN", "02010200"))
        self._later(self.present_delay, lambda: self._queue(pin_complete()))

    def _get_file(self, request: Message) -> None:
        """D821 Start Get File: answers with a device file message of N bytes (multi-KB).

        The requested size is read from payload tag 81 (4 bytes), default 4096: a simulator
        convenience so tests and benchmarks can ask for multi-report output.
        """
        try:
            items = {t.tag_hex: t.value for t in decode_tlvs(request.payload or b"", offset=2)}
        except ProtocolError:
            self._respond(request, BAD_PAYLOAD)
            return
        size = int.from_bytes(items.get("81", (4096).to_bytes(4, "big")), "big")
        size = max(1, min(size, 1 << 20))
        self._respond(request, OK)
        self._queue(file_message(request.ref, size))


_HANDLERS: Final[dict[int, Callable[[SimulatedReader, Message], None]]] = {
    0xD101: SimulatedReader._get_property,
    0xD111: SimulatedReader._set_property,
    0x1001: SimulatedReader._start_transaction,
    0x1008: SimulatedReader._cancel,
    0x1F01: SimulatedReader._reset,
    0x1805: SimulatedReader._buzzer,
    0x1803: SimulatedReader._display,
    0x1822: SimulatedReader._display,
    0x1802: SimulatedReader._display,  # user selection result: acknowledged
    0x1100: SimulatedReader._mifare_read,
    0x2001: SimulatedReader._request_pin,
    0xD821: SimulatedReader._get_file,
}

__all__ = ["SimulatedReader", "file_message"]
