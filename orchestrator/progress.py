"""A one-line progress display on a terminal: done/total, ok/not ok, rate, ETA, and what is going on."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, TextIO

import anyio

from orchestrator.models import SUCCESSFUL, Outcome
from orchestrator.tally import Tally

if TYPE_CHECKING:
    from orchestrator.api.routes import Router
    from orchestrator.runner import Runner

INTERVAL = 0.5


class Progress:
    """Redraws one status line on ``stream`` until cancelled."""

    def __init__(
        self,
        tally: Tally,
        total: int,
        stream: TextIO,
        *,
        router: Router | None = None,
        runner: Runner | None = None,
    ) -> None:
        self.tally = tally
        self.total = total
        self.stream = stream
        self.router = router
        self.runner = runner
        self.started = time.monotonic()

    def line(self) -> str:
        done = self.tally.done
        ok = sum(count for outcome, count in self.tally.outcomes.items() if Outcome(outcome) in SUCCESSFUL)
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = done / elapsed
        eta = f"{(self.total - done) / rate:.0f}s" if rate > 0 and done < self.total else "-"
        line = f"{done}/{self.total} rows  ok {ok}  not ok {done - ok}  {rate:.1f} rows/s  ETA {eta}"
        return line + self._activity()

    def _activity(self) -> str:
        """What is going on besides finished rows: requests out, retries, throttling, lookups, silence.

        ``retries`` counts the creates of rows not recorded yet that did not settle them, so that each
        was or is about to be sent again: all of them but the one in flight or being looked up. A row
        sent once and still waiting for its answer is never a retry.
        """
        parts = []
        settling = 0 if self.runner is None else self.runner.settling
        if self.router is not None:
            counts = self.router.counts()
            sent = counts.get("creates", 0)
            in_flight = self.router.limits.concurrency - self.router.in_flight.value
            retries = max(0, sent - self.tally.attempts - in_flight - settling)
            if sent:
                parts.append(f"sent {sent}")
            if in_flight:
                parts.append(f"in flight {in_flight}")
            if retries:
                parts.append(f"retries {retries}")
            if self.router.throttled:
                parts.append(f"throttled {self.router.throttled}")
            if counts.get("lookups"):
                parts.append(f"lookups {counts['lookups']}")
            answered = any(route.endpoint.answered for route in self.router.routes.values())
            if self.tally.done < self.total and not answered:
                parts.append(f"no answer yet ({time.monotonic() - self.started:.0f}s)")
        if settling:
            parts.append(f"settling {settling}")
        return ("  " + "  ".join(parts)) if parts else ""

    async def run(self) -> None:
        try:
            while True:
                self.stream.write("\r\x1b[2K" + self.line())
                self.stream.flush()
                await anyio.sleep(INTERVAL)
        finally:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
