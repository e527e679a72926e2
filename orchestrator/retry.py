"""Retry policy, backoff and the adaptive rate limiter (pure logic: clock, sleep and randomness injected).

What is retried, and whether a retry needs a lookup first:

==========================================  ==========  ====================================
answer                                      verdict     why
==========================================  ==========  ====================================
202                                         success
429, or ``APIGW.0308`` / ``APIG.0308``      retry       the gateway refused it before EVS
500, 502, 503, 504 (not a final code)       uncertain   EVS may have acted; look up first
no connection (refused, DNS, TLS)           retry       the request never left
no answer (reset, timeout)                  uncertain   the request may have reached EVS
other 4xx, or 5xx with a final EVS code     final       the API refused this snapshot
==========================================  ==========  ====================================
"""

from __future__ import annotations

import dataclasses
import enum
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import anyio

from orchestrator import defaults

THROTTLING_CODES = frozenset({"APIGW.0308", "APIG.0308"})
RETRYABLE_STATUSES = frozenset({500, 502, 503, 504})
# 5xx answers that describe the disk, not the service: sending again cannot help.
FINAL_SERVER_CODES = frozenset({"EVS.2024", "EVS.2019"})


class Verdict(enum.Enum):
    SUCCESS = "success"
    RETRY = "retry"
    UNCERTAIN = "uncertain"
    FINAL = "final"


def classify(status: int, error_code: str | None) -> Verdict:
    """What to do after an HTTP answer to a create request."""
    if status == 202:
        return Verdict.SUCCESS
    if status == 429 or error_code in THROTTLING_CODES:
        return Verdict.RETRY
    if status in RETRYABLE_STATUSES and error_code not in FINAL_SERVER_CODES:
        return Verdict.UNCERTAIN
    return Verdict.FINAL


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How often and how patiently to retry: exponential backoff with full jitter."""

    max_attempts: int = defaults.MAX_ATTEMPTS
    initial_wait: float = defaults.BACKOFF_INITIAL
    max_wait: float = defaults.BACKOFF_MAX

    @property
    def max_lookups(self) -> int:
        """Lookups per row at most: they are safe GETs, so at least three even with one attempt."""
        return max(3, self.max_attempts)

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after the ``attempt``-th failed attempt (1-based)."""
        ceiling = min(self.max_wait, self.initial_wait * 2 ** (attempt - 1))
        return rng.uniform(0, ceiling)


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), or ``None``."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime  # noqa: PLC0415 - rare; keeps start-up fast

    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())


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
