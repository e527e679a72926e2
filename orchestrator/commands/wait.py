"""``evs-snapshot wait REPORT``: poll the snapshots a report accepted until each settles."""

from __future__ import annotations

import contextlib
import dataclasses
import signal
from pathlib import Path

import anyio

from orchestrator.api.routes import connect
from orchestrator.config import Connection
from orchestrator.console import Console
from orchestrator.errors import (
    UsageError,
)
from orchestrator.finish import Closing, finish, round_logger, stop_on_signal
from orchestrator.lock import ReportLock, lock_path
from orchestrator.report import ReportWriter, final_records
from orchestrator.tally import Tally
from orchestrator.waiter import Waiter, WaitPlan


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WaitSettings:
    report: Path
    connection: Connection
    plan: WaitPlan = dataclasses.field(default_factory=WaitPlan)
    closing: Closing = dataclasses.field(default_factory=Closing)
    lock_file: Path | None = None


async def wait(settings: WaitSettings, *, console: Console) -> int:
    """``evs-snapshot wait REPORT``: poll the report's accepted snapshots and append their final states."""
    if not settings.report.is_file():
        raise UsageError(f"{settings.report}: no such report")
    lock = lock_path(str(settings.report), settings.lock_file)
    if lock is None:
        raise UsageError("wait reads and appends to a report file, not standard output")
    with ReportLock(lock):
        async with contextlib.AsyncExitStack() as stack:
            router = await connect(stack, settings.connection)
            writer = stack.enter_context(ReportWriter(str(settings.report), resume=True))
            tally = Tally()
            waiter = Waiter(
                settings.plan, router=router, writer=writer, tally=tally, on_round=round_logger(console)
            )
            waiter.load(final_records(settings.report))
            console.event("waiting", f"waiting for {waiter.waiting} snapshots", pending=waiter.waiting)
            received: list[int] = []
            async with anyio.create_task_group() as group:
                group.start_soon(stop_on_signal, group.cancel_scope, received)
                await waiter.run()
                group.cancel_scope.cancel()
    code = finish(
        tally, settings.closing, router=router, console=console, report=str(settings.report), command="wait"
    )
    if received:
        console.error(f"stopped by {signal.Signals(received[0]).name}; run wait again to go on")
        return 128 + received[0]
    return code
