"""Small pure throttles that keep what clients send from costing the bridge more than a bound.

- ``TokenBucket``: how many commands a reader takes from its clients (rate and burst).
- ``Throttle``: at most a few events per interval, the rest counted (log lines, reports).
- ``ErrorCoalescer``: turns refused commands into ``Error`` topic bodies, a few in full and
  then one summary per interval with a count by reason.

None of them reads a clock or takes a lock: callers pass ``now`` (monotonic seconds) and
serialise their calls. That keeps them exact to test and usable from any loop design.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bridge.intake import Rejection, command_reference, rejection_report


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; starts full.

    Args:
        rate: tokens added per second (0: nothing after the first burst).
        burst: bucket size, at least 1.
    """

    rate: float
    burst: float
    _tokens: float = field(init=False)
    _at: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.burst = max(1.0, float(self.burst))
        self._tokens = self.burst

    def take(self, now: float) -> bool:
        """Spend one token if there is one."""
        if self._at is not None and now > self._at:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        if self._at is None or now > self._at:
            self._at = now
        if self._tokens >= 1.0 - 1e-9:  # float sums of small refills fall just short
            self._tokens -= 1.0
            return True
        return False


@dataclass(slots=True)
class Throttle:
    """Lets ``burst`` events through, then one per ``interval``; counts the ones held back.

    ``allow`` answers ``None`` for a held-back event, or the number held back since the last
    one let through (0 normally), so the event that passes can say how many it stands for.
    """

    interval: float
    burst: int = 1
    _bucket: TokenBucket = field(init=False)
    suppressed: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        rate = 1.0 / self.interval if self.interval > 0 else float("inf")
        self._bucket = TokenBucket(rate=rate, burst=max(1, self.burst))

    def allow(self, now: float) -> int | None:
        if not self._bucket.take(now):
            self.suppressed += 1
            return None
        held, self.suppressed = self.suppressed, 0
        return held

    def due(self, now: float) -> int | None:
        """If events were held back and one may pass now, take that slot: their count."""
        if self.suppressed == 0 or not self._bucket.take(now):
            return None
        held, self.suppressed = self.suppressed, 0
        return held


@dataclass(frozen=True, slots=True)
class ErrorReport:
    """One ``Error`` topic body, and what to log with it."""

    body: bytes
    reason: str
    suppressed: int  # refusals this report also stands for (not reported one by one)
    detail: str = ""


class ErrorCoalescer:
    """Refused commands -> ``Error`` reports: ``burst`` in full, then one per ``interval``.

    A refusal while the budget is spent is only counted (by reason). The next report says how
    many were left out; ``flush`` emits a summary of the held-back ones once the interval has
    passed, so a flood that stops is still reported.
    """

    def __init__(self, interval: float = 1.0, burst: int = 5) -> None:
        self._throttle = Throttle(interval, burst)
        self._held: Counter[str] = Counter()

    @property
    def pending(self) -> int:
        return self._throttle.suppressed

    def refused(self, rejection: Rejection, *, topic: str, size: int,
                now: float, command: bytes | None = None) -> ErrorReport | None:
        """A refusal: its report, or None when it is only counted.

        ``command`` (the payload as received) is read only for a report sent in full, to
        name the command (``ref``, ``command_id``) when it is a readable MMS message.
        """
        held = self._throttle.allow(now)
        if held is None:
            self._held[rejection.reason] += 1
            return None
        reference = command_reference(command) if command is not None else None
        body = rejection_report(rejection, topic=topic, size=size, reference=reference)
        if held:
            data = json.loads(body)
            data["suppressed"] = held
            data["suppressed_reasons"] = dict(self._held)
            body = json.dumps(data).encode()
        self._held.clear()
        return ErrorReport(body, rejection.reason, held, rejection.detail)

    def flush(self, *, topic: str, now: float) -> ErrorReport | None:
        """A summary of held-back refusals, when there are some and one may be sent."""
        held = self._throttle.due(now)
        if held is None:
            return None
        reasons = dict(self._held)
        self._held.clear()
        body = {
            "error": "commands_rejected",
            "reason": "summary",
            "detail": f"{held} further commands were refused and not reported one by one",
            "count": held,
            "reasons": reasons,
            "topic": topic,
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
        return ErrorReport(json.dumps(body).encode(), "summary", held, str(body["detail"]))


__all__ = ["ErrorCoalescer", "ErrorReport", "Throttle", "TokenBucket"]
