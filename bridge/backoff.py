"""One delay policy for every retry (MQTT reconnect, reader reopen).

Capped exponential with full jitter: attempt n waits uniform(min, min(max, min * factor**n)),
so a fleet of Pis that lost the same broker do not all come back in the same second.
"""

from __future__ import annotations

import random


class Backoff:
    """Delays for successive failures; ``reset()`` after a success.

    Args:
        min_delay: the shortest wait, and the first attempt's ceiling.
        max_delay: the cap of the ceiling.
        factor: growth of the ceiling per failure.
        rng: injected for tests (a seeded ``random.Random``).
    """

    def __init__(self, min_delay: float, max_delay: float, *, factor: float = 2.0,
                 rng: random.Random | None = None) -> None:
        if min_delay <= 0 or max_delay < min_delay or factor < 1:
            raise ValueError("need 0 < min_delay <= max_delay and factor >= 1")
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.factor = factor
        self.attempts = 0
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 - jitter only

    def ceiling(self) -> float:
        """The largest delay the next attempt may draw."""
        return min(self.max_delay, self.min_delay * self.factor ** min(self.attempts, 64))

    def next_delay(self) -> float:
        delay = self._rng.uniform(self.min_delay, self.ceiling())
        self.attempts += 1
        return delay

    def reset(self) -> None:
        self.attempts = 0


__all__ = ["Backoff"]
