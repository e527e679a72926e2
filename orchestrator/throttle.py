"""The adaptive rate limiter: evenly paced request starts that back off on throttling (pure logic)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable

import anyio

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class RateLimiter:
    """Paces request starts evenly at ``rate`` per second, and adapts to throttling.

    With no ``--max-rps`` it starts unpaced. On a 429 it lowers the rate to ``DECREASE`` times the
    rate of *successes* over the last second (what the service really lets through, whatever was
    sent); a burst of 429s sees the same success rate, so it does not compound. When nothing at all
    succeeded for a second, it halves the rate once per ``COOLDOWN``. Each success adds a little
    back (about ``RECOVERY`` of the last measured rate per second), never above ``max_rps``. Against
    a limit it is not told, it settles in a shallow saw-tooth just under it.
    """

    DECREASE = 0.9
    RECOVERY = 0.02
    COOLDOWN = 1.0
    MIN_RATE = 0.5
    WINDOW = 1.0

    def __init__(
        self, max_rps: float | None = None, *, clock: Clock = time.monotonic, sleep: Sleep = anyio.sleep
    ):
        self.ceiling = max_rps
        self.rate = max_rps
        self._clock = clock
        self._sleep = sleep
        self._next = 0.0
        self._successes: deque[float] = deque()
        self._first_success: float | None = None
        self._last_cut = -1e9
        self._cut_from = max_rps or 0.0
        self.throttled = 0

    async def acquire(self) -> None:
        """Wait for this request's slot."""
        if self.rate is None:
            return
        now = self._clock()
        slot = max(now, self._next)
        self._next = slot + 1.0 / self.rate
        if slot > now:
            await self._sleep(slot - now)

    def success_rate(self) -> float:
        """Successes per second over the last ``WINDOW`` (or the shorter time since the first one)."""
        now = self._clock()
        while self._successes and self._successes[0] < now - self.WINDOW:
            self._successes.popleft()
        if self._first_success is None:
            return 0.0
        span = max(0.1, min(self.WINDOW, now - self._first_success))
        return len(self._successes) / span

    def on_throttled(self) -> None:
        self.throttled += 1
        now = self._clock()
        allowed = self.success_rate()
        if allowed > 0:
            # Idempotent for a burst of 429s: they all see the same success rate, so nothing compounds.
            target = max(self.MIN_RATE, allowed * self.DECREASE)
            if self.rate is None or target < self.rate:
                self.rate, self._cut_from = target, allowed
        elif now - self._last_cut >= self.COOLDOWN:
            # Nothing got through for a whole window: halve, once per cooldown.
            self.rate = max(self.MIN_RATE, (self.rate or 2 * self.MIN_RATE) / 2)
            self._cut_from = self.rate
            self._last_cut = now
        if self.rate is not None:
            self._next = max(self._next, now + 1.0 / self.rate)

    def on_success(self) -> None:
        now = self._clock()
        if self._first_success is None:
            self._first_success = now
        self._successes.append(now)
        while self._successes[0] < now - self.WINDOW:  # keep one window: memory stays flat
            self._successes.popleft()
        if self.rate is None:
            return
        self.rate += self.RECOVERY * self._cut_from / self.rate  # about RECOVERY * cut-from per second
        if self.ceiling is not None:
            self.rate = min(self.rate, self.ceiling)
