"""The limiter's start against a limit it is not told: the burst is not taken for the rate.

A fake clock drives ``RateLimiter``; requests are counted and ordered, never timed.
"""

from __future__ import annotations

import itertools

import anyio
import pytest

from orchestrator.throttle import RateLimiter, SendWindow, told_limit
from tests.helpers import FakeTime


async def burst(
    limiter: RateLimiter, fake: FakeTime, *, successes: int, in_flight: int, seconds: float
) -> None:
    """An unpaced start: ``in_flight`` requests out at once, each success sending the next, ``successes``
    of them spread over ``seconds``; ``in_flight`` requests are still out at the end."""
    for _ in range(in_flight):
        await limiter.acquire()
    for _ in range(successes):
        fake.now += seconds / successes
        limiter.on_success()
        await limiter.acquire()


async def test_the_first_estimate_is_never_scaled_up_from_a_burst() -> None:
    """50 successes in 10 ms, then a 429 with 32 requests out: the rate is about 50/s less the burst,
    not the 5,000/s (or 500/s over a 0.1 s floor) the successes would show scaled to a second."""
    fake = FakeTime()
    limiter = RateLimiter(None, clock=fake.clock, sleep=fake.sleep)
    await burst(limiter, fake, successes=50, in_flight=32, seconds=0.01)
    assert limiter.rate is None
    assert fake.slept == []  # unpaced until the first 429
    limiter.on_throttled()
    assert limiter.rate is not None
    assert limiter.rate <= 50 * RateLimiter.DECREASE
    assert limiter.rate >= 50 / (RateLimiter.WINDOW + 0.01) * RateLimiter.DECREASE * 0.99


async def test_answers_in_flight_at_the_first_429_refine_it_and_later_ones_do_not() -> None:
    """Of the 31 requests still out at the first 429, each success raises the estimate (they were sent
    before anything was known); once they are all answered, a success only adds back a little."""
    fake = FakeTime()
    limiter = RateLimiter(None, clock=fake.clock, sleep=fake.sleep)
    await burst(limiter, fake, successes=30, in_flight=32, seconds=0.01)
    limiter.on_throttled()  # one of the 32 out; 31 more are owed
    first = limiter.rate
    assert first is not None
    rates = [first]
    for _ in range(20):
        limiter.on_success()
        assert limiter.rate is not None
        rates.append(limiter.rate)
    for _ in range(11):
        limiter.on_throttled()
    assert rates == sorted(rates)
    assert rates[-1] - first > 15 * RateLimiter.DECREASE / (RateLimiter.WINDOW + 0.01)
    settled = limiter.rate
    assert settled == rates[-1]  # the owed 429s lower nothing: less than a window of history
    limiter.on_success()  # owed nothing now
    assert limiter.rate is not None
    assert 0 < limiter.rate - settled < RateLimiter.RECOVERY * 50


async def test_a_later_429_lowers_the_rate_only_after_a_window_of_its_own_history() -> None:
    """The success history starts again at the first 429: 429s within a window of it change nothing;
    one after a window of successes at 30/s cuts the rate to just under 30/s."""
    fake = FakeTime()
    limiter = RateLimiter(None, clock=fake.clock, sleep=fake.sleep)
    await burst(limiter, fake, successes=50, in_flight=1, seconds=0.5)
    limiter.on_throttled()
    first = limiter.rate
    assert first is not None
    for _ in range(10):
        fake.now += 0.05
        limiter.on_throttled()
    assert limiter.rate == first
    for _ in range(30):  # a second at 30 successes
        fake.now += 1 / 30
        limiter.on_success()
    limiter.on_throttled()
    assert limiter.rate == pytest.approx(30 * RateLimiter.DECREASE, rel=0.05)


async def test_a_low_first_estimate_grows_until_a_later_429_then_only_recovers() -> None:
    """A window without a 429 after the first grows the rate by PROBE a second (a slow start); once a
    later 429 has cut it, a window without 429s adds back only RECOVERY."""
    fake = FakeTime()
    limiter = RateLimiter(None, clock=fake.clock, sleep=fake.sleep)
    await burst(limiter, fake, successes=10, in_flight=1, seconds=0.01)
    limiter.on_throttled()
    low = limiter.rate
    assert low is not None
    fake.now += RateLimiter.WINDOW  # a whole window without a 429
    for _ in range(round(low)):  # about a second of successes at that rate
        limiter.on_success()
    assert limiter.rate == pytest.approx(low * RateLimiter.PROBE, rel=0.05)
    for _ in range(round(limiter.rate)):  # a second of successes, then a 429
        fake.now += 1 / limiter.rate
        limiter.on_success()
    limiter.on_throttled()
    cut = limiter.rate
    assert cut is not None
    fake.now += RateLimiter.WINDOW
    for _ in range(round(cut)):
        limiter.on_success()
    assert 0 < limiter.rate - cut < (RateLimiter.PROBE - 1) * cut / 2


async def test_after_the_first_429_starts_are_paced() -> None:
    """Once cut, starts are spaced evenly at the new rate: the requests waiting slept, in order."""
    fake = FakeTime()
    limiter = RateLimiter(None, clock=fake.clock, sleep=fake.sleep)
    await burst(limiter, fake, successes=20, in_flight=4, seconds=0.01)
    limiter.on_throttled()
    rate = limiter.rate
    assert rate is not None
    starts = []
    for _ in range(5):
        await limiter.acquire()
        starts.append(fake.now)
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert gaps == pytest.approx([1 / rate] * 4)
    assert len(fake.slept) == 5


def test_the_limit_a_429_names_is_read_per_second() -> None:
    """The gateway's message names its limit (evs-api.md 3.4): per second or per minute; else nothing."""
    said = "The throttling threshold has been reached: policy user over ratelimit,limit:{},time:1 {}"
    assert told_limit(said.format(50, "second")) == 50
    assert told_limit(said.format(600, "minute")) == 10
    assert told_limit(said.format(0, "second")) is None
    assert told_limit(said.format(5, "second").replace("time:1", "time:0")) is None
    assert told_limit("The throttling threshold has been reached") is None
    assert told_limit(None) is None


async def test_a_told_limit_caps_the_rate_and_its_probing() -> None:
    """After a 429 that names the limit, the rate never goes above TOLD_SHARE of it, however long
    the successes go on; a 429 that names none leaves the limiter as it was."""
    fake = FakeTime()
    limiter = RateLimiter(None, clock=fake.clock, sleep=fake.sleep)
    await burst(limiter, fake, successes=200, in_flight=32, seconds=0.05)
    limiter.on_throttled(told=50.0)
    ceiling = 50.0 * RateLimiter.TOLD_SHARE
    assert limiter.ceiling == ceiling
    assert limiter.rate is not None
    assert limiter.rate <= ceiling
    highest = 0.0
    for _ in range(10):  # ten windows of successes, with no 429: the probing stops at the ceiling
        fake.now += RateLimiter.WINDOW
        for _ in range(60):
            fake.now += 1 / 60
            limiter.on_success()
            highest = max(highest, limiter.rate)
    assert highest == pytest.approx(ceiling)
    untold = RateLimiter(None, clock=fake.clock, sleep=fake.sleep)
    await burst(untold, fake, successes=200, in_flight=32, seconds=0.05)
    untold.on_throttled()
    assert untold.ceiling is None


def test_a_told_limit_lowers_a_max_rps_above_it_and_keeps_one_below() -> None:
    """With --max-rps too, the lower of the two is the ceiling."""
    fake = FakeTime()
    above = RateLimiter(100.0, clock=fake.clock, sleep=fake.sleep)
    above.on_throttled(told=50.0)
    assert above.ceiling == 50.0 * RateLimiter.TOLD_SHARE
    below = RateLimiter(10.0, clock=fake.clock, sleep=fake.sleep)
    below.on_throttled(told=50.0)
    assert below.ceiling == 10.0


async def test_a_told_limit_is_taken_at_once_until_a_paced_429_shows_it_is_not_the_one_that_binds() -> None:
    """The first 429 names 50/s: the rate goes straight to just under it, not to the first estimate.
    Once the requests out at that 429 are answered, a 429 while paced under it means another limit
    binds: the rate falls back to the first estimate and climbs from there (the told cap stays)."""
    fake = FakeTime()
    limiter = RateLimiter(None, clock=fake.clock, sleep=fake.sleep)
    await burst(limiter, fake, successes=10, in_flight=4, seconds=0.2)
    limiter.on_throttled(told=50.0)  # one of the 4 out; 3 more are owed
    ceiling = 50.0 * RateLimiter.TOLD_SHARE
    assert limiter.rate == ceiling
    estimate = RateLimiter(None, clock=fake.clock, sleep=fake.sleep)
    fake.now = 0.0
    await burst(estimate, fake, successes=10, in_flight=4, seconds=0.2)
    estimate.on_throttled()
    assert estimate.rate is not None
    assert estimate.rate < ceiling / 2  # what the untold limiter starts from
    for _ in range(3):  # the owed answers: throttled too, they were sent before the limit was known
        limiter.on_throttled(told=50.0)
    assert limiter.rate == ceiling
    limiter.on_throttled(told=50.0)  # paced under 50/s and still throttled
    assert limiter.rate == pytest.approx(estimate.rate)
    assert limiter.ceiling == ceiling


async def test_a_429_for_a_slot_taken_before_the_unpaced_start_was_answered_keeps_the_told_limit() -> None:
    """The requests still out at the first 429 spend the gateway's tokens as they arrive, so a paced
    request sent before the last of them was answered may be throttled for them: that 429 keeps the
    named limit. A 429 for a slot taken after every one of them was answered shows another limit."""
    fake = FakeTime()
    limiter = RateLimiter(None, clock=fake.clock, sleep=fake.sleep)
    await burst(limiter, fake, successes=10, in_flight=4, seconds=0.2)
    limiter.on_throttled(told=50.0)  # 3 more are owed
    ceiling = 50.0 * RateLimiter.TOLD_SHARE
    early = limiter.slot(), limiter.started  # paced, while answers of the unpaced start are still due
    limiter.on_success()
    limiter.on_throttled(told=50.0)
    limiter.on_success()  # the last of them
    assert limiter.rate == ceiling
    limiter.on_throttled(told=50.0, ticket=early[1])
    assert limiter.rate == ceiling  # throttled for the tokens the unpaced start spent
    limiter.slot()
    limiter.on_throttled(told=50.0, ticket=limiter.started)  # paced alone, and still throttled
    assert limiter.rate is not None
    assert limiter.rate < ceiling / 2


async def test_a_clump_under_a_told_limit_costs_a_cut_not_the_first_estimate() -> None:
    """Paced under the named limit for half a second, every request through, then one 429 (the sends
    came in a clump, or another client shares the limit): the rate goes to just under what got through,
    not back to the low first estimate, and the told cap stays."""
    fake = FakeTime()
    limiter = RateLimiter(None, clock=fake.clock, sleep=fake.sleep)
    await burst(limiter, fake, successes=10, in_flight=4, seconds=0.2)
    limiter.on_throttled(told=50.0)
    estimate = limiter._estimate
    ceiling = 50.0 * RateLimiter.TOLD_SHARE
    for _ in range(3):  # the answers owed for the requests out at the first 429
        limiter.on_success()
    for _ in range(24):  # half a second paced at the ceiling, every request through
        fake.now += 1 / ceiling
        limiter.on_success()
    through = limiter.success_rate()
    assert through > 4 * estimate
    limiter.on_throttled(told=50.0)
    assert limiter.rate == pytest.approx(RateLimiter.DECREASE * through)
    assert limiter.ceiling == ceiling
    shared = RateLimiter(None, clock=fake.clock, sleep=fake.sleep)  # another client takes most of it
    await burst(shared, fake, successes=10, in_flight=4, seconds=0.2)
    shared.on_throttled(told=50.0)
    for _ in range(3):
        shared.on_throttled(told=50.0)
    fake.now += 0.5  # half a second with nothing through
    shared.on_throttled(told=50.0)
    assert shared.rate == pytest.approx(shared._estimate)  # the first estimate at the least


async def test_after_a_gap_in_the_sending_a_window_passes_before_a_429_counts() -> None:
    """A process stopped for a second (a stopped job, a stalled machine) sends nothing, then the
    requests out before the gap arrive in a clump: the 429s of the window after it change nothing.
    Measured: a 1.2 s SIGSTOP took a 400-row run at a named 75/s from 5 s to 98-100 s before."""
    fake = FakeTime()
    limiter = RateLimiter(None, clock=fake.clock, sleep=fake.sleep)
    await burst(limiter, fake, successes=10, in_flight=4, seconds=0.2)
    limiter.on_throttled(told=50.0)
    ceiling = 50.0 * RateLimiter.TOLD_SHARE
    for _ in range(3):
        limiter.on_success()
    for _ in range(60):  # a window and more, paced at the ceiling
        fake.now += 1 / ceiling
        limiter.slot()
        limiter.on_success()
    fake.now += 1.2  # the process stood still
    limiter.slot()
    for _ in range(3):  # the clump of requests out before the gap, and one sent after it
        limiter.on_throttled(told=50.0, ticket=limiter.started)
    assert limiter.rate == ceiling
    for _ in range(60):
        fake.now += 1 / ceiling
        limiter.slot()
        limiter.on_success()
    limiter.on_throttled(told=50.0, ticket=limiter.started)  # a window after the gap: it counts
    assert limiter.rate is not None
    assert limiter.rate < ceiling


async def test_under_a_told_limit_a_cut_rate_climbs_back_by_probing() -> None:
    """Cut under a named limit, the rate climbs back about PROBE times a quiet window (not the slow
    saw-tooth of an unknown limit): the ceiling already bounds it."""
    fake = FakeTime()
    limiter = RateLimiter(None, clock=fake.clock, sleep=fake.sleep)
    await burst(limiter, fake, successes=10, in_flight=4, seconds=0.2)
    limiter.on_throttled(told=50.0)
    for _ in range(3):
        limiter.on_success()
    limiter.on_throttled(told=50.0)  # paced alone and throttled: down to the first estimate
    fake.now += RateLimiter.WINDOW
    limiter.on_success()
    limiter.on_throttled(told=50.0)  # a window later: the saw-tooth's cut, which ends the probing
    low = limiter.rate
    assert low is not None
    fake.now += RateLimiter.WINDOW
    for _ in range(5):  # five quiet windows
        for _ in range(max(1, int(limiter.rate or 1))):
            fake.now += 1 / (limiter.rate or 1)
            limiter.on_success()
    assert limiter.rate > low * RateLimiter.PROBE**3  # the saw-tooth would add about 2% of it


def window_of(fake: FakeTime, concurrency: int = 100, *, proof: float | None = None) -> SendWindow:
    """A route's send window; ``proof``: the seconds its first request (sent alone) took to answer."""
    limiter = RateLimiter(None, concurrency=concurrency, clock=fake.clock, sleep=fake.sleep)
    window = limiter.window
    assert window is not None
    if proof is not None:
        entered = fake.now
        assert window.try_enter(fake.now)
        fake.now += proof
        window.leave(entered)
    return window


def enter_all(window: SendWindow, fake: FakeTime, count: int) -> int:
    """How many of ``count`` requests the window lets out now."""
    return sum(window.try_enter(fake.now) for _ in range(count))


def test_the_send_window_starts_small_and_doubles_while_answers_are_slow() -> None:
    """The quickest answer took a period or more (a latency-bound service): 16 out at once, then a
    full window doubles each period (16, 32, 64); the next doubling reaches --concurrency: open,
    nothing counted any more. An answer lets one more out meanwhile."""
    fake = FakeTime()
    window = window_of(fake, proof=0.03)
    assert enter_all(window, fake, 40) == SendWindow.FIRST
    fake.now += SendWindow.PERIOD / 2
    window.leave(fake.now - 0.03)
    assert enter_all(window, fake, 40) == 1
    assert window.period_left(fake.now) == pytest.approx(SendWindow.PERIOD / 2)
    sizes = []
    for _ in range(3):
        fake.now += SendWindow.PERIOD
        let_out = enter_all(window, fake, 200)
        sizes.append((window.size, let_out, window.opened))
    assert sizes == [(32, 16, False), (64, 32, False), (128, 200, True)]


def test_a_send_window_doubles_before_any_answer_came() -> None:
    """No answer at all yet (no proof went first): a period with the window full doubles it."""
    fake = FakeTime()
    window = window_of(fake)
    assert enter_all(window, fake, 40) == SendWindow.FIRST  # and 24 held back: a period starts
    fake.now += SendWindow.PERIOD * 0.8
    assert enter_all(window, fake, 40) == 0
    fake.now += SendWindow.PERIOD * 0.25
    assert enter_all(window, fake, 40) == SendWindow.FIRST
    assert window.size == 2 * SendWindow.FIRST


def test_quick_answers_keep_the_send_window_at_16() -> None:
    """The proof came back in 4 ms: however long the window stays full, and however slow the fan-out's
    first answers (new connections, a loaded machine), it stays at 16 until something opens it."""
    fake = FakeTime()
    window = window_of(fake, proof=0.004)
    assert enter_all(window, fake, 40) == SendWindow.FIRST
    for _ in range(30):
        fake.now += SendWindow.PERIOD
        window.leave(fake.now - 0.2)
        assert enter_all(window, fake, 40) == 1
    assert (window.size, window.out, window.opened) == (SendWindow.FIRST, SendWindow.FIRST, False)


def test_time_before_the_window_first_fills_is_no_period() -> None:
    """The fan-out comes later than a period after the proof (the report is opened, the rows read):
    the period starts when the window first holds a request back."""
    fake = FakeTime()
    window = window_of(fake, 32, proof=0.03)
    fake.now += 3 * SendWindow.PERIOD
    assert enter_all(window, fake, 32) == SendWindow.FIRST
    assert (window.size, window.opened) == (SendWindow.FIRST, False)


def test_the_send_window_opens_at_the_first_429() -> None:
    """The first 429 opens the window: the limiter paces every request from then on."""
    fake = FakeTime()
    limiter = RateLimiter(None, concurrency=32, clock=fake.clock, sleep=fake.sleep)
    window = limiter.window
    assert window is not None
    assert enter_all(window, fake, 32) == SendWindow.FIRST
    limiter.on_throttled()
    assert window.opened
    limiter.on_throttled()  # and stays open
    assert window.opened
    assert enter_all(window, fake, 32) == 32
    window.leave(fake.now)  # a request let out before it opened: nothing to count
    assert window.out == SendWindow.FIRST


def test_the_send_window_opens_a_second_after_the_first_request() -> None:
    """Answers keep coming quickly and no 429 for OPEN_AFTER: the burst was not the limit; open."""
    fake = FakeTime()
    window = window_of(fake, proof=0.004)
    assert enter_all(window, fake, 100) == SendWindow.FIRST
    while fake.now + 0.01 < 100.0 + SendWindow.OPEN_AFTER:
        fake.now += 0.01
        window.leave(fake.now - 0.004)
        assert enter_all(window, fake, 100) == 1
    fake.now += 0.01
    assert enter_all(window, fake, 100) == 100
    assert window.opened


@pytest.mark.parametrize(("first_answer", "opens"), [(0.076, True), (0.07, False)])
def test_the_send_window_opens_at_a_slow_first_answer(first_answer: float, opens: bool) -> None:
    """The route's first answer took SLOW (75 ms) or more: the window would double open before any
    answer of the fan-out came back, so it opens at once; a later slow answer changes nothing."""
    fake = FakeTime()
    window = window_of(fake, proof=first_answer)
    assert window.opened is opens
    entered = fake.now
    assert window.try_enter(fake.now)
    fake.now += 0.2
    window.leave(entered)
    assert window.opened is opens


def test_no_send_window_when_paced_or_when_it_would_not_be_smaller() -> None:
    """--max-rps paces from the first request; --concurrency 16 or less is no wider than the window."""
    fake = FakeTime()
    assert RateLimiter(10.0, concurrency=100, clock=fake.clock, sleep=fake.sleep).window is None
    assert RateLimiter(None, clock=fake.clock, sleep=fake.sleep).window is None
    small = RateLimiter(None, concurrency=SendWindow.FIRST, clock=fake.clock, sleep=fake.sleep)
    assert small.window is None


async def test_a_request_the_window_holds_goes_when_a_period_widens_it_or_at_an_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A request over the window waits: with no answer yet, the end of the period doubles the window
    and lets it out; an answer lets a waiting request out (the clock is real here: the period is
    made short, then long; it never opens, however slow a loaded machine is between two requests)."""
    monkeypatch.setattr(SendWindow, "PERIOD", 0.02)
    monkeypatch.setattr(SendWindow, "OPEN_AFTER", 3600.0)
    window = SendWindow(100)
    for _ in range(SendWindow.FIRST):
        await window.enter()
    await window.enter()  # held back: a period starts, ends, and the window doubles
    assert (window.size, window.out) == (2 * SendWindow.FIRST, SendWindow.FIRST + 1)
    monkeypatch.setattr(SendWindow, "PERIOD", 3600.0)
    entered = [await window.enter() for _ in range(window.size - window.out)]
    async with anyio.create_task_group() as group:
        group.start_soon(window.enter)
        await anyio.wait_all_tasks_blocked()
        assert window.out == window.size  # held
        window.leave(entered[-1])
    assert (window.size, window.out, window.opened) == (2 * SendWindow.FIRST, 2 * SendWindow.FIRST, False)
