"""How runs end: the summary on stderr, the summary JSON, metrics, the exit code, and stopping on a signal."""

from __future__ import annotations

import dataclasses
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from orchestrator import metrics
from orchestrator.console import Console
from orchestrator.errors import RunAborted
from orchestrator.tally import Tally

if TYPE_CHECKING:
    from orchestrator.api.routes import Router


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Closing:
    """Where a run's summary and metrics go besides stderr."""

    summary_json: Path | None = None
    metrics_file: Path | None = None


def finish(
    tally: Tally, closing: Closing, *, router: Router | None, console: Console, report: str, command: str
) -> int:
    """Print and write the summary and metrics; the exit code is 3 when credentials were refused anywhere."""
    summary = tally.summary()
    where = "standard output" if report == "-" else report
    console.event(
        "summary",
        f"{summary.render()}\nreport: {where}",
        rows=summary.rows,
        outcomes=dict(summary.outcomes),
        error_codes=dict(summary.error_codes),
        requests=summary.requests,
        elapsed_s=round(summary.elapsed_s, 3),
        report=where,
    )
    summary_json = closing.summary_json
    if summary_json is not None:
        _write(console, "--summary-json", lambda: metrics.write_atomically(summary_json, summary.to_json()))
    refusals = [] if router is None else router.closed()
    for refused in refusals:
        console.error(str(refused), code=refused.code)
    code = summary.exit_code
    if refusals:
        console.error(
            "stopped sending where the credentials were refused; fix them and run again with --resume"
        )
        code = RunAborted.exit_code
    if closing.metrics_file is not None:
        throttled = 0 if router is None else router.throttled
        path = closing.metrics_file
        _write(
            console,
            "--metrics-file",
            lambda: metrics.write(path, summary, command=command, exit_code=code, throttled=throttled),
        )
    return code


def _write(console: Console, option: str, write: Callable[[], None]) -> None:
    """Write a side file; failing to is reported but does not change what the run did or its exit code."""
    try:
        write()
    except OSError as exc:
        console.error(f"{option}: cannot write {exc.filename or ''}: {exc.strerror}")


async def stop_on_signal(scope: anyio.CancelScope, received: list[int]) -> None:
    """Cancel ``scope`` at the first SIGINT/SIGTERM and note which one (for waits: nothing is in flight)."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            received.append(signum)
            scope.cancel()
            return


def round_logger(console: Console) -> Callable[[int, int], None]:
    """A waiter callback that reports each poll round (requests it used, snapshots still pending)."""

    def log(requests: int, pending: int) -> None:
        console.event(
            "wait_round",
            f"poll round: {requests} requests, {pending} pending",
            requests=requests,
            pending=pending,
        )

    return log
