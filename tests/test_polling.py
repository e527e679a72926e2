"""The one wait-and-check loop (``retry.polling``): growing pauses, a reset, a caller's cut, a deadline
on an injected clock, and patience as the pauses' own sum. Time is a fake clock the sleeps move on."""

from __future__ import annotations

import pytest

from orchestrator.retry import polling
from tests.helpers import FakeTime

pytestmark = pytest.mark.anyio


async def test_pauses_grow_to_the_cap_and_start_again_on_a_reset() -> None:
    """0.2, doubled up to 1; ``reset`` starts at 0.2 again, ``within`` cuts one pause only."""
    clock = FakeTime()
    async for poll in polling(first=0.2, factor=2.0, cap=1.0, clock=clock.clock, sleep=clock.sleep):
        if poll.number == 6:
            poll.reset()
        if poll.number == 7:
            poll.within(0.05)
        if poll.number == 9:
            break
    assert clock.slept == pytest.approx([0.2, 0.4, 0.8, 1.0, 1.0, 0.2, 0.05, 0.8])


async def test_a_timeout_cuts_the_last_pause_and_ends_after_the_pass_at_the_deadline() -> None:
    """Pauses 1, 2, then 4 cut to the 2 left: passes at 0, 1, 3 and 5 seconds, the last at the
    deadline; no pause after it."""
    clock = FakeTime()
    passes = [
        clock.now - 100.0
        async for _ in polling(
            first=1.0, factor=2.0, cap=10.0, timeout=5.0, clock=clock.clock, sleep=clock.sleep
        )
    ]
    assert passes == [0.0, 1.0, 3.0, 5.0]
    assert clock.slept == [1.0, 2.0, 2.0]


async def test_patience_counts_the_pauses_and_lead_pauses_before_the_first_pass() -> None:
    """Steps of 1 with 2.5 s of patience and ``lead``: pauses 1, 1, 0.5, a pass after each; the time the
    passes take is not counted."""
    clock = FakeTime()
    passes = 0
    async for _ in polling(
        first=1.0, factor=1.0, cap=1.0, patience=2.5, lead=True, clock=clock.clock, sleep=clock.sleep
    ):
        clock.now += 10.0  # a slow pass
        passes += 1
    assert clock.slept == [1.0, 1.0, 0.5]
    assert passes == 3
