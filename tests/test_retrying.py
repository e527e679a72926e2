"""The one retry loop (``retry.retrying``): attempts, pauses, patience, and what giving up raises."""

from __future__ import annotations

import random

import pytest

from orchestrator.retry import RetryPolicy, TryAgain, retrying

pytestmark = pytest.mark.anyio


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
