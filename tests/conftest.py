"""Shared test hygiene."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """Tests that configure structlog must not leak their stream into later tests."""
    yield
    structlog.reset_defaults()
