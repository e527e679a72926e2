"""``evs-snapshot create``: read the manifest twice (check, then send), run, report, summarize.

The first pass reads the whole manifest without sending anything, so that a file that cannot be read
as a whole stops the run with exit 2 before the first request; it also counts rows and finds the
keys that may be duplicated. The second pass validates each row and streams it to the runner.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
from yarl import URL

from orchestrator.config import Connection, RowDefaults, RunIdentity
from orchestrator.console import Console
from orchestrator.duplicates import duplicate_candidates, volume_key
from orchestrator.errors import UsageError
from orchestrator.finish import Closing, finish, round_logger, stop_on_signal
from orchestrator.lock import ReportLock, lock_path
from orchestrator.manifest import ManifestSource, RawRow, read_rows, spooled
from orchestrator.models import utc_now
from orchestrator.progress import Progress
from orchestrator.report import ReportWriter, ResumeBook, final_records
from orchestrator.retry import RetryPolicy
from orchestrator.rules import RowValidator, check_template
from orchestrator.runner import Runner, RunPlan
from orchestrator.tally import Tally
from orchestrator.waiter import Waiter, WaitPlan

if TYPE_CHECKING:
    from orchestrator.api.routes import Router

EMULATOR_STATUS_COLUMN = "emulator_status"
GRACE_SECONDS = 10.0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CreateSettings:
    """Everything ``create`` was told, resolved from options and the environment."""

    source: ManifestSource
    report: str
    defaults: RowDefaults
    connection: Connection
    closing: Closing = dataclasses.field(default_factory=Closing)
    dry_run: bool = False
    progress: bool = False
    emulator: bool = False
    resume: bool = False
    lock_file: Path | None = None
    policy: RetryPolicy = dataclasses.field(default_factory=RetryPolicy)
    deadline: float | None = None  # seconds for the whole run
    wait: WaitPlan | None = None
    grace: float = GRACE_SECONDS


async def create(settings: CreateSettings, *, console: Console) -> int:
    """Run the whole job and return the exit code; raises ``EvsSnapshotError`` for run-level errors."""
    started = time.monotonic()
    check_template(settings.defaults.name_template)
    if settings.wait is not None and settings.report == "-":
        raise UsageError("--wait reads the report back, so it needs a --report file, not standard output")
    with contextlib.ExitStack() as locks:
        path = lock_path(settings.report, settings.lock_file)
        if path is not None:
            locks.enter_context(ReportLock(path))
        book = _resume_book(settings)
        identity = RunIdentity.resumed(book.run_id) if book is not None else RunIdentity.new(utc_now())
        return await _locked(settings, identity, book, started, console)


def _resume_book(settings: CreateSettings) -> ResumeBook | None:
    if not settings.resume:
        return None
    if settings.report == "-":
        raise UsageError("--resume needs a --report file to read, not standard output")
    return ResumeBook.load(Path(settings.report))


async def _locked(
    settings: CreateSettings, identity: RunIdentity, book: ResumeBook | None, started: float, console: Console
) -> int:
    also_known = frozenset({EMULATOR_STATUS_COLUMN}) if settings.emulator else frozenset()
    display = "<stdin>" if settings.source.path == "-" else settings.source.path
    with spooled(settings.source) as source:

        def rows(*, warn_columns: bool = False) -> Iterator[RawRow]:
            warn = console.warn if warn_columns else None
            return read_rows(source, display=display, warn=warn, also_known=also_known)

        total, candidates = duplicate_candidates(rows(warn_columns=True), settings.defaults)
        async with contextlib.AsyncExitStack() as stack:
            if settings.emulator:
                settings = await stack.enter_async_context(_with_emulator(settings, rows()))
            router = None
            if not settings.dry_run:
                from orchestrator.api.routes import connect  # noqa: PLC0415 - aiohttp loads only when sending

                router = await connect(stack, settings.connection)
            writer = stack.enter_context(ReportWriter(settings.report, resume=settings.resume))
            validator = RowValidator(
                defaults=settings.defaults,
                identity=identity,
                candidates=candidates,
                region_required=settings.connection.endpoints.evs is None,
            )
            plan = RunPlan(
                run_id=identity.run_id,
                concurrency=settings.connection.limits.concurrency,
                dry_run=settings.dry_run,
                policy=settings.policy,
                deadline=None if settings.deadline is None else started + settings.deadline,
            )
            tally = Tally()
            runner = Runner(plan, router=router, writer=writer, tally=tally, resume=book)
            signals: list[int] = []
            async with anyio.create_task_group() as group:
                if settings.progress:
                    group.start_soon(Progress(tally, total, console.stream).run)
                with anyio.CancelScope() as run_scope:
                    group.start_soon(_watch_signals, runner, run_scope, settings.grace, writer, signals)
                    await runner.run(validator.validate_all(rows()))
                group.cancel_scope.cancel()
            if settings.wait is not None and router is not None and not signals:
                writer.sync()
                console.event(
                    "waiting", f"create done; waiting for snapshots (up to {settings.wait.timeout:g}s)"
                )
                async with anyio.create_task_group() as group:
                    group.start_soon(stop_on_signal, group.cancel_scope, signals)
                    tally = await _wait(settings.wait, router, writer, Path(settings.report), console)
                    group.cancel_scope.cancel()
    code = finish(
        tally, settings.closing, router=router, console=console, report=settings.report, command="create"
    )
    if signals:
        name = signal.Signals(signals[0]).name
        console.error(f"stopped by {name}; run again with --resume to finish the job", signal=name)
        return 128 + signals[0]
    return code


async def _wait(
    plan: WaitPlan, router: Router, writer: ReportWriter, report: Path, console: Console
) -> Tally:
    tally = Tally()
    waiter = Waiter(plan, router=router, writer=writer, tally=tally, on_round=round_logger(console))
    waiter.load(final_records(report))
    await waiter.run()
    return tally


async def _watch_signals(
    runner: Runner, run_scope: anyio.CancelScope, grace: float, writer: ReportWriter, received: list[int]
) -> None:
    """First SIGINT/SIGTERM: take no new rows, give rows in flight ``grace`` seconds. Second: exit now."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            if received:
                writer.sync()
                os._exit(128 + signum)
            received.append(signum)
            runner.stop()
            run_scope.deadline = anyio.current_time() + grace


@contextlib.asynccontextmanager
async def _with_emulator(settings: CreateSettings, rows: Iterator[RawRow]) -> AsyncIterator[CreateSettings]:
    """Start an in-process emulator seeded with the manifest's volumes; point the run at it.

    A manifest column ``emulator_status`` (``available``, ``in-use``, ``error``, ... or ``missing``)
    sets each disk's state, so a demo or rehearsal can show every outcome.
    """
    from orchestrator.emulator import EmulatorSettings, SeedVolume, serving  # noqa: PLC0415
    from orchestrator.emulator.settings import DEFAULT_AK, DEFAULT_PROJECT_ID, DEFAULT_SK  # noqa: PLC0415

    project = settings.defaults.project_id or DEFAULT_PROJECT_ID
    region = settings.defaults.region or "cn-north-4"
    seeds: dict[str, SeedVolume] = {}
    for raw in rows:
        key = volume_key(raw.fields, settings.defaults) if raw.fields is not None else None
        status = str((raw.fields or {}).get(EMULATOR_STATUS_COLUMN) or "available").strip()
        if key is not None and status != "missing":
            volume_id = key.decode().split("/")[0]
            seeds[volume_id] = SeedVolume(volume_id=volume_id, status=status)
    emulator_settings = EmulatorSettings(
        volumes=tuple(seeds.values()), project_id=project, region=region, creating_seconds=2.0
    )
    async with serving(emulator_settings) as running:
        connection = settings.connection
        yield dataclasses.replace(
            settings,
            defaults=dataclasses.replace(settings.defaults, project_id=project, region=region),
            connection=dataclasses.replace(
                connection,
                endpoints=dataclasses.replace(
                    connection.endpoints, evs=URL(running.url), iam=URL(running.url)
                ),
                auth_kind="aksk",
                token_file=None,
                environ={"HUAWEICLOUD_SDK_AK": DEFAULT_AK, "HUAWEICLOUD_SDK_SK": DEFAULT_SK},
            ),
        )
