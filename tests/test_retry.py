"""Retry policy and rate limiter logic, and the one retry loop (``retry.retrying``: attempts, pauses,
patience, and what giving up raises), with an injected clock and sleep (no real waiting)."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from orchestrator.retry import RetryPolicy, TryAgain, Verdict, classify, retry_after, retrying
from orchestrator.throttle import RateLimiter
from tests.helpers import FakeTime


@pytest.mark.parametrize(
    ("status", "code", "verdict"),
    [
        (202, None, Verdict.SUCCESS),
        (429, "APIGW.0308", Verdict.RETRY),
        (403, "APIG.0308", Verdict.RETRY),
        (400, "APIGW.0308", Verdict.RETRY),
        (500, "EVS.5500", Verdict.UNCERTAIN),
        (502, "APIGW.0202", Verdict.UNCERTAIN),
        (503, None, Verdict.UNCERTAIN),
        (504, None, Verdict.UNCERTAIN),
        (500, "EVS.2024", Verdict.FINAL),
        (400, "EVS.5400", Verdict.FINAL),
        (404, "EVS.5404", Verdict.FINAL),
        (401, "APIGW.0301", Verdict.FINAL),
        (501, None, Verdict.FINAL),
    ],
)
def test_classify(status: int, code: str | None, verdict: Verdict) -> None:
    """Throttling is retried, server errors are uncertain, other refusals are final."""
    assert classify(status, code) is verdict


def test_backoff_full_jitter_bounds() -> None:
    """Each wait lies between 0 and min(max_wait, initial * 2^(n-1)), and varies."""
    policy = RetryPolicy(initial_wait=0.5, max_wait=4.0)
    rng = random.Random(1)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0)]:
        waits = [policy.backoff(attempt, rng) for _ in range(200)]
        assert all(0 <= wait <= ceiling for wait in waits)
        assert max(waits) > ceiling * 0.8
    assert RetryPolicy(max_attempts=1).max_lookups == 3


def test_retry_after_forms() -> None:
    """Retry-After as seconds or an HTTP date; garbage is ignored."""
    now = datetime(2026, 11, 27, 3, 0, 0, tzinfo=UTC)
    assert retry_after("3", now) == 3.0
    assert retry_after(" 1.5 ", now) == 1.5
    assert retry_after("Fri, 27 Nov 2026 03:00:07 GMT", now) == 7.0
    assert retry_after("Fri, 27 Nov 2026 02:00:00 GMT", now) == 0.0
    assert retry_after("soon", now) is None
    assert retry_after(None, now) is None


async def test_limiter_paces_evenly_at_ceiling() -> None:
    """With --max-rps 10, starts are spaced 0.1 s apart and never faster."""
    fake = FakeTime()
    limiter = RateLimiter(10.0, clock=fake.clock, sleep=fake.sleep)
    for _ in range(20):
        await limiter.acquire()
    assert fake.now == pytest.approx(100.0 + 19 * 0.1)
    for _ in range(50):
        limiter.on_success()
    assert limiter.rate == 10.0


async def test_limiter_adapts_to_throttling() -> None:
    """Unpaced until the first 429; then just under the success rate, not compounding; slow recovery."""
    fake = FakeTime()
    limiter = RateLimiter(None, clock=fake.clock, sleep=fake.sleep)
    for _ in range(50):  # 50 successes within the last second
        await limiter.acquire()
        limiter.on_success()
        fake.now += 0.02
    assert limiter.rate is None
    assert fake.slept == []
    for _ in range(10):  # a burst of 429s from requests already in flight
        limiter.on_throttled()
    assert limiter.throttled == 10
    assert limiter.rate == pytest.approx(50 * RateLimiter.DECREASE, rel=0.03)
    fake.now += 1.5  # a second and a half with no success at all: halve, once per cooldown
    limiter.on_throttled()
    limiter.on_throttled()
    assert limiter.rate == pytest.approx(50 * RateLimiter.DECREASE / 2, rel=0.05)
    low = limiter.rate
    for _ in range(int(low)):  # about one second of successes at that rate
        limiter.on_success()
    gained = limiter.rate - low
    assert 0 < gained < 0.1 * low


async def test_limiter_never_stops() -> None:
    """However many 429s, the rate stays at least MIN_RATE."""
    fake = FakeTime()
    limiter = RateLimiter(5.0, clock=fake.clock, sleep=fake.sleep)
    for _ in range(100):
        limiter.on_throttled()
        fake.now += 2
    assert limiter.rate == RateLimiter.MIN_RATE


def test_retry_after_date_without_a_zone_is_read_as_utc() -> None:
    """An HTTP date with ``-0000`` (no zone) counts from UTC: 10 s after ``now``."""
    now = datetime(2026, 11, 27, 3, 54, 22, tzinfo=UTC)
    assert retry_after("Fri, 27 Nov 2026 03:54:32 -0000", now) == 10.0
    assert retry_after("Fri, 27 Nov 2026 03:54:32 GMT", now) == 10.0


# --- the one retry loop (retry.retrying) --------------------------------------------------------------


class Sleeps:
    """Records the pauses a loop asks for instead of sleeping them."""

    def __init__(self) -> None:
        self.pauses: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)


async def test_a_block_that_succeeds_ends_the_loop_after_one_attempt() -> None:
    """A block without a retryable error ends the loop: one attempt, no pause."""
    sleeps = Sleeps()
    numbers = []
    async for attempt in retrying(RetryPolicy(max_attempts=5), sleep=sleeps):
        with attempt:
            numbers.append(attempt.number)
    assert numbers == [1]
    assert sleeps.pauses == []


async def test_retryable_errors_are_absorbed_until_the_last_attempt_which_raises() -> None:
    """Each ``TryAgain`` but the last is absorbed with a backoff pause; the last one reaches the caller."""
    sleeps = Sleeps()
    numbers: list[int] = []

    async def busy() -> None:
        async for attempt in retrying(RetryPolicy(max_attempts=3, initial_wait=1, max_wait=4), sleep=sleeps):
            with attempt:
                numbers.append(attempt.number)
                raise TryAgain(f"busy {attempt.number}")

    with pytest.raises(TryAgain, match="busy 3"):
        await busy()
    assert numbers == [1, 2, 3]
    assert len(sleeps.pauses) == 2
    assert 0 <= sleeps.pauses[0] <= 1
    assert 0 <= sleeps.pauses[1] <= 2


async def test_without_reraise_the_loop_ends_and_keeps_the_last_error() -> None:
    """``reraise=False``: giving up ends the loop quietly; ``last`` holds the final error."""
    loop = retrying(RetryPolicy(max_attempts=2), sleep=Sleeps(), reraise=False)
    async for attempt in loop:
        with attempt:
            raise TryAgain(f"busy {attempt.number}")
    assert loop.number == 2
    assert str(loop.last) == "busy 2"


async def test_a_wait_asked_for_replaces_the_backoff() -> None:
    """``TryAgain(wait=...)`` (a Retry-After) sets the next pause."""
    sleeps = Sleeps()
    async for attempt in retrying(RetryPolicy(max_attempts=3), sleep=sleeps):
        with attempt:
            if attempt.number == 1:
                raise TryAgain("throttled", wait=7.5)
    assert sleeps.pauses == [7.5]


async def test_patience_keeps_trying_past_the_attempts_until_the_pauses_add_up() -> None:
    """With ``patience``, attempts go on past ``max_attempts`` until the pauses reach it."""
    sleeps = Sleeps()
    loop = retrying(
        RetryPolicy(max_attempts=2), patience=10.0, pause=lambda _n, _r: 3.0, sleep=sleeps, reraise=False
    )
    async for attempt in loop:
        with attempt:
            raise TryAgain("creating")
    assert sleeps.pauses == [3.0, 3.0, 3.0, 3.0]  # 12 s >= 10 s of patience after the fifth attempt
    assert loop.number == 5


async def test_other_exceptions_go_through_at_once() -> None:
    """An error the loop was not told to retry is raised from the first attempt."""
    numbers: list[int] = []

    async def broken() -> None:
        async for attempt in retrying(RetryPolicy(max_attempts=5), sleep=Sleeps(), rng=random.Random(1)):
            with attempt:
                numbers.append(attempt.number)
                raise KeyError("no")

    with pytest.raises(KeyError):
        await broken()
    assert numbers == [1]
