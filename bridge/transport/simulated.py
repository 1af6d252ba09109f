"""The simulated backend: an in-memory "cable" to simulator readers (a virtual bus).

Used by ``run --simulate N``, the demo and every integration test, so everything above the
transport runs exactly as with hardware. Unplugged readers raise ``DeviceGoneError`` like a
hidapi read on a vanished device; a replugged reader must be opened again.
"""

from __future__ import annotations

import threading

from bridge.errors import DeviceGoneError, DeviceNotFoundError
from bridge.simulator import CardKind, SimulatedReader
from bridge.transport.base import DeviceInfo

_DEFAULT_SERIALS = ("B123456", "B654321", "B111111", "B222222")


class SimulatedTransport:
    """One open connection to a ``SimulatedReader``."""

    def __init__(self, reader: SimulatedReader, info: DeviceInfo) -> None:
        self._reader = reader
        self._info = info
        self._generation: int | None = None
        self._closed = False

    @property
    def info(self) -> DeviceInfo:
        return self._info

    @property
    def reader(self) -> SimulatedReader:
        """The simulated reader behind this connection (for its card controls)."""
        return self._reader

    @property
    def report_len(self) -> int:
        return self._reader.report_len

    def open(self) -> None:
        if not self._reader.plugged:
            raise DeviceGoneError(f"{self._info.path} is unplugged")
        if self._generation is None:
            self._generation = self._reader.generation

    def close(self) -> None:
        self._closed = True

    def _gen(self) -> int:
        if self._closed or self._generation is None:
            raise DeviceGoneError(f"{self._info.path} is not open")
        return self._generation

    def read_report(self, timeout: float) -> bytes | None:
        return self._reader.next_device_report(timeout, self._gen())

    def write_report(self, report: bytes) -> None:
        self._reader.handle_host_report(report, self._gen())

    def __enter__(self) -> SimulatedTransport:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SimulatedBus:
    """A Backend holding simulated readers at paths ``sim:<index>``.

    Args:
        count: readers to create.
        paced: pace each reader's output at 1 report/ms (USB full speed).
        serials: their serial numbers (default B123456, B654321, ...).
        product: USB product string.
        product_id: USB product id (0x2020 DynaFlex family).
        auto_present: the card presented by itself once a transaction waits (the preference
            when it allows several kinds), or None for manual mode (``present_card``).
        card_scenario: alias of ``auto_present`` for the CLI/demo.
        present_delay: seconds from the start of a transaction to the card (None: the
            simulator's default, about a second).
        stream_rate: each reader also emits this many single-report notifications a second
            (benchmarks: 1000 is USB full-speed line rate).
    """

    name = "simulated"

    def __init__(self, count: int = 1, *, paced: bool = False, serials: list[str] | None = None,
                 product: str = "DynaFlex II", product_id: int = 0x2020,
                 auto_present: CardKind | None = "tap", card_scenario: CardKind | None = None,
                 stream_rate: float = 0.0, present_delay: float | None = None) -> None:
        self.product = product
        self.product_id = product_id
        self._lock = threading.Lock()
        self.readers: list[SimulatedReader] = []
        kind = card_scenario if card_scenario is not None else auto_present
        for index in range(count):
            serial = (serials[index] if serials and index < len(serials)
                      else _DEFAULT_SERIALS[index % len(_DEFAULT_SERIALS)] if index < 4
                      else f"C{index:06X}")
            self.add_reader(SimulatedReader(serial, paced=paced, auto_present=kind,
                                            stream_rate=stream_rate,
                                            present_delay=present_delay))

    def add_reader(self, reader: SimulatedReader) -> SimulatedReader:
        with self._lock:
            self.readers.append(reader)
        return reader

    def _info(self, index: int) -> DeviceInfo:
        return DeviceInfo(path=f"sim:{index}", vendor_id=0x0801, product_id=self.product_id,
                          product=self.product, usb_serial=self.readers[index].serial,
                          backend=self.name)

    def enumerate(self) -> list[DeviceInfo]:
        with self._lock:
            readers = list(enumerate(self.readers))
        found = []
        for index, reader in readers:
            reader.poll()
            if reader.plugged:
                found.append(self._info(index))
        return found

    def open(self, info: DeviceInfo) -> SimulatedTransport:
        index = self._index(info.path)
        reader = self.readers[index]
        if not reader.plugged:
            raise DeviceNotFoundError(f"{info.path} is unplugged")
        transport = SimulatedTransport(reader, self._info(index))
        return transport

    def _index(self, path: str) -> int:
        try:
            index = int(path.removeprefix("sim:"))
            self.readers[index]
        except (ValueError, IndexError):
            raise DeviceNotFoundError(f"no simulated reader at {path}") from None
        return index

    def unplug(self, index: int) -> None:
        self.readers[index].unplug()

    def replug(self, index: int) -> None:
        self.readers[index].replug()


__all__ = ["SimulatedBus", "SimulatedTransport"]
