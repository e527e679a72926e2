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
        """Retries, throttling, uncertain rows being looked up, and requests without an answer yet."""
        parts = []
        if self.router is not None:
            counts = self.router.counts()
            sent = counts.get("creates", 0)
            retries = max(0, sent - self.tally.attempts) if sent else 0
            if retries:
                parts.append(f"retries {retries}")
            if self.router.throttled:
                parts.append(f"throttled {self.router.throttled}")
            if counts.get("lookups"):
                parts.append(f"lookups {counts['lookups']}")
            if sent == 0 and done_none(self.tally):
                parts.append(f"waiting for the first answer ({time.monotonic() - self.started:.0f}s)")
        if self.runner is not None and self.runner.settling:
            parts.append(f"settling {self.runner.settling}")
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


def done_none(tally: Tally) -> bool:
    return tally.done == 0
