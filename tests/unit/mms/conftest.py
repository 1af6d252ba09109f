"""Golden vectors from tests/data/mms_*.hex (each file names its PROTOCOL.md source)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2] / "data"


def _lines(name: str) -> list[str]:
    text = (DATA / f"mms_{name}.hex").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert text.startswith("# source: PROTOCOL.md"), f"{name}: first line must name its source"
    return ["".join(line.split()) for line in lines]


def read_vector(name: str) -> bytes:
    """One message: every non-comment line of the file, joined."""
    return bytes.fromhex("".join(_lines(name)))


def read_reports(name: str) -> list[bytes]:
    """One report per non-comment line."""
    return [bytes.fromhex(line) for line in _lines(name)]


@pytest.fixture
def golden() -> Callable[[str], bytes]:
    return read_vector


@pytest.fixture
def golden_reports() -> Callable[[str], list[bytes]]:
    return read_reports
