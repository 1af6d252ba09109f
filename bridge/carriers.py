"""Which MQTT session carries each reader's messages, and the hand-over between them.

A reader's own session carries its messages while the reader is attached; otherwise the
bridge's own session (the fallback) does, and it also does while a reader session cannot get
through. An outbox changes carrier only when nothing is in flight, so order holds: a detaching
reader's session gets ``drain_timeout`` for its acks, then what is still unacknowledged is
taken back (sent again, marked replayed, by the next carrier).

``Carriers`` is the base of ``bridge.courier.Courier``, which constructs every attribute used
here and supplies the outboxes and the pump.
"""

from __future__ import annotations

import abc
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from bridge.mqtt.link import MqttLink
from bridge.mqtt.loop import IoLoop
from bridge.outbox import Entry, Outbox

if TYPE_CHECKING:
    from bridge.courier import CourierOptions

_log = structlog.get_logger("bridge.courier")


@dataclass(slots=True)
class _Detach:
    serial: str
    link: MqttLink
    deadline: float
    done: threading.Event


class Carriers(abc.ABC):
    """Attaching and detaching readers' sessions, and choosing an outbox's carrier.

    The attributes below are set by ``Courier.__init__`` and shared with it: ``options``,
    ``loop``, ``_outboxes``, ``_carriers`` (serial -> attached reader link), ``_fallback``,
    ``_sending`` (serial -> link holding its in-flight entries), ``_in_flight``,
    ``_link_load``, ``_detaching`` and ``_taken_back`` (links whose connection ended, for
    ``Courier._process_acks`` to release). ``Courier`` supplies ``_outbox`` and ``pump_once``.
    """

    options: CourierOptions
    loop: IoLoop | None
    _outboxes: dict[str, Outbox]
    _carriers: dict[str, MqttLink]
    _sending: dict[str, MqttLink]
    _in_flight: dict[tuple[int, int], tuple[Outbox, Entry]]
    _link_load: dict[int, int]
    _fallback: MqttLink | None
    _detaching: list[_Detach]
    _taken_back: deque[MqttLink]

    @abc.abstractmethod
    def _outbox(self, serial: str) -> Outbox:
        """The reader's outbox, made on first use (``Courier``)."""

    @abc.abstractmethod
    def pump_once(self) -> float | None:
        """One turn of the pump (``Courier``)."""

    def _on_loop(self, call: Callable[[], None]) -> None:
        if self.loop is None:
            call()
        else:
            self.loop.call_in_loop(call)

    # -- carriers (any thread; applied on the loop) ------------------------------------------

    def set_fallback(self, link: MqttLink | None) -> None:
        """The bridge's own session: carries messages of readers that are not attached."""
        def apply() -> None:
            self._fallback = link
        self._on_loop(apply)

    def attach(self, serial: str, link: MqttLink) -> None:
        def apply() -> None:
            self._carriers[serial] = link
            self._outbox(serial)
        self._on_loop(apply)

    def detach(self, serial: str, link: MqttLink) -> None:
        """The reader's session is ending: give its in-flight acks a moment, then take back
        what is still unacknowledged (it will be re-sent, marked replayed, by another carrier)."""
        request = _Detach(serial, link, time.monotonic() + self.options.drain_timeout,
                          threading.Event())
        if self.loop is None:
            request.deadline = 0.0
            self._detaching.append(request)
            self.pump_once()
            return
        self.loop.call_soon(lambda: self._detaching.append(request))
        request.done.wait(self.options.drain_timeout + 5.0)

    def taken_back(self, link: MqttLink) -> None:
        """``link``'s connection ended: what it held in flight is ours to send again."""
        self._taken_back.append(link)

    def _finish_detaches(self, now: float) -> None:
        for request in list(self._detaching):
            outbox = self._outboxes.get(request.serial)
            if (outbox is not None and outbox.in_flight
                    and self._sending.get(request.serial) is request.link
                    and request.link.connected.is_set() and now < request.deadline):
                continue  # its acks may still come
            self._detaching.remove(request)
            if self._carriers.get(request.serial) is request.link:
                del self._carriers[request.serial]
            self._release(request.serial, request.link)
            request.done.set()

    def _release(self, serial: str, link: MqttLink) -> None:
        if self._sending.get(serial) is not link:
            return
        del self._sending[serial]
        key_link = link.token
        for key in [k for k, (box, _) in self._in_flight.items()
                    if k[0] == key_link and box.serial == serial]:
            del self._in_flight[key]
            self._link_load[key_link] -= 1
        outbox = self._outboxes.get(serial)
        if outbox is not None:
            returned = outbox.return_in_flight()
            if returned:
                _log.info("outbox_in_flight_returned", serial=serial, count=returned)

    def _carrier(self, serial: str) -> MqttLink | None:
        reader = self._carriers.get(serial)
        fallback = self._fallback
        # A reader session that cannot get through (refused, ACL) must not hold its messages
        # hostage while the bridge's own session is up.
        if reader is not None and (reader.ready.is_set() or fallback is None
                                   or not fallback.ready.is_set()):
            return reader
        return fallback


__all__ = ["Carriers"]
