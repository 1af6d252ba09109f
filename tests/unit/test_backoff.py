"""The retry delay policy, driven by a seeded RNG (no sleeping)."""

from __future__ import annotations

import random

import pytest

from bridge.backoff import Backoff


def test_ceiling_doubles_up_to_the_cap_and_reset():
    backoff = Backoff(0.5, 10.0, rng=random.Random(1))
    ceilings = []
    for _ in range(8):
        ceilings.append(backoff.ceiling())
        delay = backoff.next_delay()
        assert 0.5 <= delay <= ceilings[-1]
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    backoff.reset()
    assert backoff.attempts == 0
    assert backoff.ceiling() == 0.5


def test_jitter_spreads_delays():
    backoff = Backoff(1.0, 60.0, rng=random.Random(7))
    for _ in range(6):
        backoff.next_delay()
    draws = {round(backoff.next_delay(), 3) for _ in range(20)}
    assert len(draws) > 10


def test_invalid_arguments():
    with pytest.raises(ValueError):
        Backoff(0, 1)
    with pytest.raises(ValueError):
        Backoff(2, 1)
