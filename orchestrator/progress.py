"""A one-line progress display on a terminal: done/total, ok/failed, rate, ETA."""

from __future__ import annotations

import time
from typing import TextIO

import anyio

from orchestrator.models import SUCCESSFUL, Outcome
from orchestrator.tally import Tally

INTERVAL = 0.5


class Progress:
    """Redraws one status line on ``stream`` until cancelled."""

    def __init__(self, tally: Tally, total: int, stream: TextIO) -> None:
        self.tally = tally
        self.total = total
        self.stream = stream
        self.started = time.monotonic()

    def line(self) -> str:
        done = self.tally.done
        ok = sum(count for outcome, count in self.tally.outcomes.items() if Outcome(outcome) in SUCCESSFUL)
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = done / elapsed
        eta = f"{(self.total - done) / rate:.0f}s" if rate > 0 and done < self.total else "-"
        return f"{done}/{self.total} rows  ok {ok}  not ok {done - ok}  {rate:.1f} rows/s  ETA {eta}"

    async def run(self) -> None:
        try:
            while True:
                self.stream.write("\r\x1b[2K" + self.line())
                self.stream.flush()
                await anyio.sleep(INTERVAL)
        finally:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
