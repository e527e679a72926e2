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
401, 400 Common.0013, wrong project         (raised)    the route closes: ``RouteClosed``
==========================================  ==========  ====================================
"""

from __future__ import annotations

import dataclasses
import enum
import math
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from types import TracebackType

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
    """What to do after an HTTP answer (refusals of the credentials are the route's to decide)."""
    if 200 <= status < 300:
        return Verdict.SUCCESS
    if status == 429 or error_code in THROTTLING_CODES:
        return Verdict.RETRY
    if status in RETRYABLE_STATUSES and error_code not in FINAL_SERVER_CODES:
        return Verdict.UNCERTAIN
    return Verdict.FINAL


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
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


class TryAgain(Exception):
    """Raised inside an attempt for an answer worth another try (throttled, a 5xx, no answer);
    ``wait`` overrides the next pause (a ``Retry-After``)."""

    def __init__(self, why: str, *, wait: float | None = None) -> None:
        super().__init__(why)
        self.why = why
        self.wait = wait


class Attempt:
    """One attempt of a ``retrying`` loop, used as ``with attempt:``.

    The block's retryable error (``TryAgain``, or a type the loop was given) is absorbed when another
    attempt is allowed, and raised when it was the last; any other exception goes through.
    """

    __slots__ = ("loop", "number")

    def __init__(self, loop: retrying, number: int) -> None:
        self.loop = loop
        self.number = number

    def __enter__(self) -> Attempt:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, _tb: TracebackType | None
    ) -> bool:
        loop = self.loop
        if exc is None:
            loop.done = True
            return False
        if not isinstance(exc, loop.on):
            return False
        loop.last = exc
        if loop.more():
            return True
        loop.done = True
        return not loop.reraise


class retrying:
    """The one retry loop, shaped like stamina's ``retry_context``::

        async for attempt in retrying(policy):
            with attempt:
                ...  # raise TryAgain(why) for an answer worth another try; return on success

    Attempts run until a block ends without a retryable error, up to ``policy.max_attempts``, and on
    after that while the pauses so far are under ``patience`` seconds. Between attempts it sleeps the
    policy's backoff (or ``pause(number, rng)``, or the ``wait`` a ``TryAgain`` asks for). The last
    attempt's retryable error is raised to the caller; with ``reraise=False`` the loop just ends, and
    ``last`` holds it.
    """

    __slots__ = (
        "done",
        "last",
        "number",
        "on",
        "patience",
        "pause",
        "policy",
        "reraise",
        "rng",
        "sleep",
        "waited",
    )

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        on: tuple[type[BaseException], ...] = (TryAgain,),
        patience: float = 0.0,
        pause: Callable[[int, random.Random], float] | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        reraise: bool = True,
    ) -> None:
        self.policy = policy
        self.on = on
        self.patience = patience
        self.pause = pause or policy.backoff
        self.rng = rng or random.Random()
        self.sleep = sleep
        self.reraise = reraise
        self.number = 0
        self.waited = 0.0
        self.done = False
        self.last: BaseException | None = None

    def more(self) -> bool:
        """True when another attempt is allowed after the current one failed."""
        return self.number < self.policy.max_attempts or self.waited < self.patience

    def __aiter__(self) -> retrying:
        return self

    async def __anext__(self) -> Attempt:
        if self.done:
            raise StopAsyncIteration
        if self.number:
            asked = self.last.wait if isinstance(self.last, TryAgain) else None
            pause = asked if asked is not None else self.pause(self.number, self.rng)
            self.waited += pause
            if self.sleep is None:
                self.sleep = anyio.sleep
            await self.sleep(pause)
        self.number += 1
        return Attempt(self, self.number)


class polling:
    """The one wait-and-check loop, beside ``retrying`` and shaped like it::

        async for poll in polling(first=0.2, factor=2.0, cap=3.0, timeout=300.0):
            if done(await look()):
                break

    Each pass after the first comes after a pause (with ``lead``, the first too): ``first``, then
    ``factor`` times the one before, at most ``cap``. ``poll.reset()`` starts the pauses at ``first``
    again; ``poll.within(seconds)`` cuts the next one to ``seconds`` (a window of the caller's). With
    ``timeout`` (seconds on ``clock`` from the loop's start), each pause ends by the deadline, and once
    a pass ends past it the loop ends instead of pausing: the last pass is the one at the deadline.
    ``patience`` does the same with the pauses' own sum (the passes' own time not counted). ``clock``
    and ``sleep`` are injected, as ``retrying``'s sleep is.
    """

    __slots__ = (
        "cap",
        "clock",
        "deadline",
        "factor",
        "first",
        "lead",
        "limit",
        "next",
        "number",
        "patience",
        "sleep",
        "waited",
    )

    def __init__(
        self,
        *,
        first: float,
        factor: float,
        cap: float,
        timeout: float = math.inf,
        patience: float = math.inf,
        lead: bool = False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self.first = self.next = first
        self.factor = factor
        self.cap = cap
        self.clock = clock
        self.deadline = clock() + timeout
        self.patience = patience
        self.lead = lead
        self.sleep = sleep
        self.limit = math.inf
        self.number = 0
        self.waited = 0.0

    def reset(self) -> None:
        """The next pause is ``first`` again (something new to look at)."""
        self.next = self.first

    def within(self, seconds: float) -> None:
        """The next pause lasts at most ``seconds``."""
        self.limit = seconds

    def __aiter__(self) -> polling:
        return self

    async def __anext__(self) -> polling:
        if self.number or self.lead:
            left = min(self.deadline - self.clock(), self.patience - self.waited)
            if left <= 0:
                raise StopAsyncIteration
            pause = max(0.0, min(self.next, self.limit, left))
            self.limit = math.inf
            self.next = min(self.cap, self.next * self.factor)
            self.waited += pause
            await (self.sleep or anyio.sleep)(pause)
        self.number += 1
        return self


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), or ``None``."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass

    # email.utils (and socket, calendar, ...): 26 M instructions a dry run never needs (benchmarks startup)
    from email.utils import parsedate_to_datetime  # noqa: PLC0415 - see above

    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())
