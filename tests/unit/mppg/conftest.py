"""A fake MPPG service and a client for it, per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bridge.mppg.client import MppgClient
from tests.fakes.mppg_fake import FakeMppg


@pytest.fixture
def fake_mppg() -> Iterator[FakeMppg]:
    with FakeMppg() as fake:
        yield fake


@pytest.fixture
def mppg_client(fake_mppg: FakeMppg) -> Iterator[MppgClient]:
    with MppgClient(fake_mppg.base_url, fake_mppg.username, fake_mppg.password,
                    connect_timeout=2.0, request_timeout=5.0) as client:
        yield client
