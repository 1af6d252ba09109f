"""The simulated DynaFlex II: device behaviour only, transport-agnostic (HID reports in/out)."""

from bridge.simulator.cards import TEST_PAN, CardKind
from bridge.simulator.reader import SimulatedReader, file_message

__all__ = ["TEST_PAN", "CardKind", "SimulatedReader", "file_message"]
