"""The emulator's time: an injected monotonic clock, a manual one for tests, and wall time derived from it.

Everything time-based in the emulator (snapshot states, token expiry, throttling buckets, late
commits, rollbacks, the AK lock) reads one ``Clock``. The wall timestamps it writes (``created_at``,
a token's ``expires_at``) are ``wall_at_start + (clock() - clock_at_start)``, so advancing a
``ManualClock`` ages them too. Request latency stays real sleeping; it is not the world's time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

Clock = Callable[[], float]
EVS_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"


def evs_time(moment: datetime) -> str:
    """EVS timestamps: UTC, microseconds, no ``Z`` (``EVS_TIME_FORMAT``; ``isoformat`` writes it faster)."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")


class ManualClock:
    """A monotonic-like clock that moves only when told: ``clock()`` reads it, ``advance(s)`` moves it.

    A lock guards the value, so a test thread may advance it while an emulator thread reads it.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (never backward)."""
        if seconds < 0:
            raise ValueError("a clock only moves forward")
        with self._lock:
            self._now += seconds


class Timeline:
    """Monotonic readings of one clock, and the wall times they stand for."""

    def __init__(self, clock: Clock, wall_at_start: datetime | None = None) -> None:
        self.clock = clock
        self._start = clock()
        self._wall_start = wall_at_start or datetime.now(UTC)

    def now(self) -> float:
        return self.clock()

    def wall(self, at: float | None = None) -> datetime:
        """The wall time (UTC) of the clock reading ``at`` (now by default)."""
        reading = self.clock() if at is None else at
        return self._wall_start + timedelta(seconds=reading - self._start)
