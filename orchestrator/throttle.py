"""The adaptive rate limiter: evenly paced request starts that back off on throttling, and the send
window of a route's start (the slow start). Pure logic on an injected clock, but for the waits."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable

import anyio

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

# The gateway's 429 names its limit: "...policy user over ratelimit,limit:50,time:1 second" (evs-api.md 3.4).
TOLD_LIMIT = re.compile(r"limit:\s*(\d+(?:\.\d+)?)\s*,\s*time:\s*(\d+)\s*(second|minute|hour)", re.IGNORECASE)
UNIT_SECONDS = {"second": 1.0, "minute": 60.0, "hour": 3600.0}


def told_limit(message: str | None) -> float | None:
    """Requests a second that a throttled answer's message names as the limit, or ``None``."""
    found = TOLD_LIMIT.search(message or "")
    if found is None:
        return None
    count, span, unit = float(found.group(1)), int(found.group(2)), found.group(3).lower()
    seconds = span * UNIT_SECONDS[unit]
    return count / seconds if count > 0 and seconds > 0 else None


class SendWindow:
    """The slow start of a route with no ``--max-rps``: how many requests may be out before it opens.

    A gateway lets a burst through (a limit of R a second lets about R through at once, then R a
    second), so an unpaced start cannot see a limit before the burst runs out, and every request out
    at that moment is throttled. The window keeps that number small while answers come quickly (a
    small window then costs nothing: it turns over many times a second), and opens as soon as it
    would only cost time:

    - ``FIRST`` requests may be out at once (a route whose ``--concurrency`` is not larger has no
      window);
    - a full window doubles after each ``PERIOD`` (the first from the first request it held back)
      while the route's quickest answer so far took ``PERIOD`` or more, or none came yet (a
      latency-bound service: the run needs the width). The quickest answer, not the latest: the
      first answers of a fan-out wait for new connections and, on a loaded machine, for the CPU;
    - it opens for good at the first 429 (the limiter paces from then on), once ``OPEN_AFTER``
      seconds have passed since the route's first request without one (the burst is a second's
      worth), when it has doubled to ``--concurrency``, or at the route's first answer when that
      took ``SLOW`` or more (a service that slow answers nothing before the window would have
      doubled open: the slow start would protect nothing and cost those doublings).

    The route's first request is its credential proof, sent alone, so in practice the first answer
    tells the service's latency before any create fans out.
    """

    FIRST = 16
    PERIOD = 0.025
    SLOW = 0.075
    OPEN_AFTER = 1.0

    def __init__(self, limit: int, *, clock: Clock = time.monotonic) -> None:
        self.limit = limit
        self.size = self.FIRST
        self.opened = limit <= self.FIRST
        self.out = 0
        self._clock = clock
        self._started: float | None = None
        self._full_since: float | None = None  # the period's start (the first held back, the last check)
        self._quickest: float | None = None  # the quickest answer so far, in seconds
        self._waiters: deque[asyncio.Future[None]] = deque()  # held back, the first first

    def try_enter(self, now: float) -> bool:
        """Let a request out now (counted until ``leave``) unless the window is full; an open window
        lets everything out uncounted."""
        if self.opened:
            return True
        if self._started is None:
            self._started = now
        elif now - self._started >= self.OPEN_AFTER:
            self.open()
            return True
        if self.out >= self.size:
            if self._full_since is None:  # the first request the window holds back: a period starts
                self._full_since = now
            elif now - self._full_since >= self.PERIOD:
                self._full_since = now
                if self._quickest is None or self._quickest >= self.PERIOD:
                    self._grow()
                    if self.opened:
                        return True
            if self.out >= self.size:
                return False
        self.out += 1
        return True

    def period_left(self, now: float) -> float:
        """Seconds until the period of a full window ends (it may then double)."""
        since = now if self._full_since is None else self._full_since
        return max(0.0, since + self.PERIOD - now)

    def leave(self, entered: float) -> None:
        """A request let out at ``entered`` (``enter``'s answer) is answered, or failed."""
        if self.opened:
            return
        now = self._clock()
        self.out -= 1
        took = now - entered
        if self._quickest is None:
            self._quickest = took
            if took >= self.SLOW:
                self.open()
                return
        else:
            self._quickest = min(self._quickest, took)
        self._wake(1)

    def open(self) -> None:
        if not self.opened:
            self.opened = True
            self._wake(len(self._waiters))

    def _grow(self) -> None:
        added = self.size
        self.size *= 2
        if self.size >= self.limit:
            self.open()
        else:
            self._wake(added)

    def _wake(self, count: int) -> None:
        for _ in range(min(count, len(self._waiters))):
            woken = self._waiters.popleft()
            if not woken.done():  # a request cancelled while held back spends its wake, as before
                woken.set_result(None)

    async def enter(self) -> float:
        """Wait until the window lets this request out; returns when it was let out (for ``leave``).

        A request held back waits for an answer's wake or the period's end, whichever comes first, on
        a future of the event loop's own and a timer: an ``anyio.Event`` and a cancel scope cost about
        500 bytecodes a wait more, and a fast service's start holds half the requests of its first
        second (``benchmarks.bytecodes`` with every request held: 9,852 a row, 7,519 with none)."""
        while True:
            now = self._clock()
            if self.try_enter(now):
                return now
            loop = asyncio.get_running_loop()
            woken = loop.create_future()
            self._waiters.append(woken)
            timer = loop.call_later(self.period_left(now), self._expire, woken)
            try:
                await woken
            finally:
                timer.cancel()
                if woken.cancelled() or not woken.done():  # stopped from outside (a deadline, a signal)
                    with contextlib.suppress(ValueError):  # unless a wake took it first (and is spent)
                        self._waiters.remove(woken)

    def _expire(self, woken: asyncio.Future[None]) -> None:
        """The period ended for a request still held back: it tries again, as an answer would let it."""
        if not woken.done():
            self._waiters.remove(woken)
            woken.set_result(None)


class RateLimiter:
    """Paces request starts evenly at ``rate`` per second, and adapts to throttling.

    With no ``--max-rps`` it starts unpaced (but for the send window of its start, ``SendWindow``:
    ``window``, given the ``--concurrency``). On a 429 it lowers the rate to ``DECREASE`` times the
    rate of *successes* over the last second (what the service really lets through, whatever was
    sent); a burst of 429s sees the same success rate, so it does not compound. When nothing at all
    succeeded for a second, it halves the rate once per ``COOLDOWN``. Each success adds a little
    back (about ``RECOVERY`` of the last measured rate per second), never above ``max_rps``. Against
    a limit it is not told, it settles in a shallow saw-tooth just under it.

    A 429 whose message names the limit (``told_limit``) makes ``TOLD_SHARE`` of it a ceiling, as
    ``--max-rps`` is: the saw-tooth then stays under the limit instead of probing past it. The first
    such 429 also sets the rate to that ceiling (no slow climb from a low first estimate); a limit
    shared with other clients, or a message that names another policy's limit, still meets the cuts:
    a 429 while paced under the named limit takes the rate to ``DECREASE`` times what got through
    since the first 429 (the first estimate at the least), and it climbs from there. Under a named
    limit every ``WINDOW`` without a 429 grows the rate by ``PROBE`` (the ceiling bounds it).

    A gap of more than ``GAP`` in the sending, though the pace allowed a request (no row was ready, or
    the process stood still), starts the success history again: the window before it says nothing
    of the limit, and a 429 lowers the rate only once a ``WINDOW`` of the new history exists.

    The first 429 ends the unpaced start. A gateway's burst allowance (a limit of R a second lets
    about R through at once, then R a second) makes the service look faster than its limit until
    then, so:

    - the first estimate never scales up the successes of a fraction of a second: it counts them
      over a whole ``WINDOW``, and when requests were still in flight at that 429 (the run was
      sending as fast as it could, so the burst was spent), over the time since the first success
      plus a ``WINDOW`` (the burst taken for one window of the rate);
    - the answers still due for those requests in flight (sent before anything was known) may raise
      that estimate as they come, not only add back ``RECOVERY``;
    - the success history starts again at the first 429 (what succeeds from then on is the limit),
      and a later 429 lowers the rate only once a ``WINDOW`` of that history exists: right after
      the first 429 many workers wait out their backoff, and their few successes would look like
      a low limit;
    - an estimate may still be low (a burst smaller than a second's worth): from the first 429
      until a later one lowers the rate, each ``WINDOW`` without a 429 grows the rate by ``PROBE``
      (a slow start from the estimate), where the saw-tooth after it only adds back ``RECOVERY``.
    """

    DECREASE = 0.9
    RECOVERY = 0.02
    COOLDOWN = 1.0
    MIN_RATE = 0.5
    WINDOW = 1.0
    PROBE = 1.25
    TOLD_SHARE = 0.97
    GAP = 0.25  # seconds with no request sent though the pace allowed one: the history starts again
    KEEP = 64  # successes kept untrimmed at the least (``_trim``)

    def __init__(
        self,
        max_rps: float | None = None,
        *,
        concurrency: int | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = anyio.sleep,
    ):
        # The slow start (``SendWindow``): only for an unpaced start of more than its first window.
        self.window = (
            SendWindow(concurrency, clock=clock)
            if max_rps is None and concurrency is not None and concurrency > SendWindow.FIRST
            else None
        )
        self.ceiling = max_rps
        self._trusting = False  # pacing at a limit a 429 named, not yet shown wrong
        self._estimate = 0.0  # the first estimate, for when a named limit proves wrong
        self.rate = max_rps
        self._clock = clock
        self._sleep = sleep
        self._next = 0.0
        self._successes: deque[float] = deque()  # the success times of the last WINDOW (and a few older)
        self._keep = self.KEEP  # ``on_success`` trims the history when it is longer
        self._first_success: float | None = None  # of the history: the first 429 starts it again
        self._last_cut = -1e9
        self._cut_from = max_rps or 0.0
        self.throttled = 0
        self.started = 0  # requests let through
        self._answered = 0  # successes and 429s seen
        self._restarted: float | None = None  # when the first 429 came
        self._since = 0.0  # when the success history started again (the first 429, or after a gap)
        self._after_gap = False  # it started again after a gap in the sending (``slot``)
        self._early = 0  # successes of the first estimate (the last window's before the first 429)
        self._early_span = self.WINDOW  # the seconds they are counted over
        self._owed = 0  # answers still due for requests in flight at the first 429
        self._clear_at = 0  # ``started`` when the last of those came: a slot taken after is paced alone
        self._probing = False  # from the first 429 until a later one lowers the rate
        self._told = False  # a 429 named the limit: under it, the rate climbs back as when probing
        self._last_throttle = -1e9

    async def acquire(self) -> None:
        """Wait for this request's slot."""
        wait = self.slot()
        if wait > 0:
            await self.wait(wait)

    def slot(self) -> float:
        """Take this request's slot: the seconds until it starts (0: at once; ``wait`` them out)."""
        self.started += 1
        if self.rate is None:
            return 0.0
        now = self._clock()
        if now - self._next > self.GAP and self._restarted is not None:
            # Nothing was sent for a while though the pace allowed it (no row was ready, or the process
            # stood still: a stopped job, a busy machine): the last window's successes say nothing of
            # the limit, and the requests out before the gap may arrive in a clump. The history starts
            # again, and a 429 lowers the rate once a window of it exists.
            self._successes.clear()
            self._first_success = None
            self._since, self._after_gap = now, True
        slot = max(now, self._next)
        self._next = slot + 1.0 / self.rate
        return slot - now

    async def wait(self, seconds: float) -> None:
        await self._sleep(seconds)

    def success_rate(self) -> float:
        """Successes per second over the last ``WINDOW`` (or the shorter time since the first one)."""
        now = self._clock()
        self._trim(now)
        if self._first_success is None:
            return 0.0
        span = max(0.1, min(self.WINDOW, now - self._first_success))
        return len(self._successes) / span

    def _trim(self, now: float) -> None:
        """Drop the successes older than a ``WINDOW`` before ``now``; the next trim in ``on_success``
        comes when the history has doubled (no check of its oldest at every success)."""
        successes = self._successes
        edge = now - self.WINDOW
        while successes and successes[0] < edge:
            successes.popleft()
        self._keep = max(self.KEEP, 2 * len(successes))

    def on_throttled(self, told: float | None = None, ticket: int | None = None) -> None:
        """A 429; ``told``: the requests a second its message names as the limit (``told_limit``);
        ``ticket``: ``started`` just after this request took its slot (``None``: after all others)."""
        if told is not None:
            self._told = True
            ceiling = max(self.MIN_RATE, told * self.TOLD_SHARE)
            self.ceiling = ceiling if self.ceiling is None else min(self.ceiling, ceiling)
        self.throttled += 1
        self._answered += 1
        if self.window is not None:
            self.window.open()  # paced from now on
        now = self._clock()
        self._last_throttle = now
        if self._restarted is None:
            self._first_throttle(now)
            self._probing = True
            if told is not None and self.ceiling is not None and self.rate is not None:
                # The gateway said its limit: start just under it rather than climb from the (low)
                # first estimate, until a 429 shows it is not the limit that binds (below).
                self._estimate, self._trusting = self.rate, True
                self.rate, self._cut_from, self._probing = self.ceiling, told, False
        else:
            if self._owed > 0:
                self._owed -= 1
                if not self._owed:
                    self._clear_at = self.started
            elif (
                self._trusting
                and (ticket is None or ticket > self._clear_at)
                and (not self._after_gap or now - self._since >= self.WINDOW)
            ):
                # Paced under the named limit, and still throttled, though sent after every request of
                # the unpaced start was answered (those still out spend the gateway's tokens too), and
                # not in the window after a gap (the requests out before it arrive in a clump): the
                # limit that binds is another (shared with other clients, or another policy's), or the
                # sends came in a clump (a loaded machine). Down to just under what got through since
                # the first 429, never below the first estimate, and climb.
                self._trusting, self._probing = False, True
                through = max(self._estimate, self.DECREASE * self.success_rate())
                self.rate = min(through, self.ceiling or through)
            if now - self._since >= self.WINDOW:
                self._probing = False
                self._cut(now, self.success_rate())
        if self.rate is not None:
            if self.ceiling is not None:
                self.rate = min(self.rate, self.ceiling)
            self._next = max(self._next, now + 1.0 / self.rate)

    def _first_throttle(self, now: float) -> None:
        """The unpaced start ends: the first estimate, and the success history starts again."""
        self.success_rate()  # drops the successes older than a window
        self._early = len(self._successes)
        self._owed = self.started - self._answered
        self._clear_at = self.started
        if self._owed > 0 and self._first_success is not None:
            self._early_span += min(self.WINDOW, now - self._first_success)
        self._restarted = self._since = now
        self._successes.clear()
        self._first_success = now
        self._cut(now, self._early / self._early_span)
        self._last_cut = now

    def _cut(self, now: float, allowed: float) -> None:
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

    def on_success(self) -> None:
        self._answered += 1
        now = self._clock()
        if self._owed > 0:  # in flight at the first 429: part of the first estimate, not of the history
            self._owed -= 1
            if not self._owed:
                self._clear_at = self.started
            self._early += 1
            allowed = self._early / self._early_span
            if self.rate is not None and allowed * self.DECREASE > self.rate:
                self.rate, self._cut_from = allowed * self.DECREASE, allowed
        else:
            if self._first_success is None:
                self._first_success = now
            successes = self._successes
            successes.append(now)
            if len(successes) > self._keep:  # memory stays flat: at most about two windows' worth
                self._trim(now)
        if self.rate is None:
            return
        if (self._probing or self._told) and now - self._last_throttle >= self.WINDOW:
            self.rate *= self.PROBE ** (1.0 / self.rate)  # about PROBE times per second
        else:
            self.rate += self.RECOVERY * self._cut_from / self.rate  # about RECOVERY * cut-from per second
        if self.ceiling is not None:
            self.rate = min(self.rate, self.ceiling)
