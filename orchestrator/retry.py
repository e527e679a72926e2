"""Retry policy, backoff and the adaptive rate limiter (pure logic: clock, sleep and randomness injected).

What is retried, and whether a retry needs a lookup first:

==========================================  ==========  ====================================
answer                                      verdict     why
==========================================  ==========  ====================================
2xx                                         success
429, or ``APIGW.0308`` / ``APIG.0308``      retry       the gateway refused it before EVS
500, 502, 503, 504 (not a final code)       uncertain   EVS may have acted; look up first
no connection (refused, DNS, TLS)           retry       the request never left
no answer (reset, timeout)                  uncertain   the request may have reached EVS
other 4xx, or 5xx with a final EVS code     final       the API refused this request
401, 400 Common.0013, wrong project         refused     decided by the route (``api.routes``)
==========================================  ==========  ====================================
"""

from __future__ import annotations

import dataclasses
import enum
import random
from datetime import UTC, datetime

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
    REFUSED = "refused"


def classify(status: int, error_code: str | None) -> Verdict:
    """What to do after an HTTP answer (refusals of the credentials are the route's to decide)."""
    if 200 <= status < 300:
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
