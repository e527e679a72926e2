"""``create``'s run: read the manifest twice (check, then send), run, sweep, report.

The first pass reads the whole manifest without sending anything, so that a file that cannot be read
as a whole stops the run with exit 2 before the first request; it also counts rows, finds the keys
that may be duplicated, and digests the file for the report's header (an honest ``--resume``). The
second pass validates each row and streams it to the runner (``runner.Runner``, or with
``--consistency server`` ``grouprun.GroupRunner``), inside the run frame and its freeze hooks. When
every row is done, the sweep removes any second snapshot (or group) a late commit made, then
``--wait`` polls until each settles. The settings, their checks and the steps a dry run shares are
in ``planning`` (a dry run with nothing for the loop to do runs there, ``planning.plan``);
``commands/create.py`` only wires its options to one of the two.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from orchestrator.console import Console
from orchestrator.defaults import HOLD_KEY
from orchestrator.errors import EvsSnapshotError, ListingFailed, UsageError
from orchestrator.frame import Frame
from orchestrator.groupplan import Server, check_groups_offered, check_zones, plan_servers, valid_tag
from orchestrator.grouprun import GroupRunner
from orchestrator.groupsweep import sweep_run
from orchestrator.hooks import hook_servers
from orchestrator.manifest import manifest_digest, read_rows, spooled
from orchestrator.planning import CreateSettings, begin, checked, identify, lock, new_frame, phase
from orchestrator.preflight import quota_short
from orchestrator.progress import Progress
from orchestrator.report import final_records
from orchestrator.rules import first_pass
from orchestrator.runner import Runner, RunPlan
from orchestrator.signals import cancel_on_signal, drain_on_signal, in_thread
from orchestrator.sweep import sweep_policy
from orchestrator.tally import Tally
from orchestrator.waiter import Waiter

if TYPE_CHECKING:
    from orchestrator.api.routes import Router
    from orchestrator.config import RunIdentity
    from orchestrator.console import Console
    from orchestrator.frame import Frame
    from orchestrator.manifest import RawRow
    from orchestrator.models import Outcome
    from orchestrator.report import ReportWriter, ResumeBook
    from orchestrator.tally import Tally

QUOTA_CHECK_SECONDS = 10.0  # the pre-flight quota check never holds the run up longer


async def create(settings: CreateSettings, *, console: Console) -> int:
    """Run the whole job and return the exit code; raises ``EvsSnapshotError`` for run-level errors."""
    started = time.monotonic()  # the run's time and --deadline count from here
    settings = checked(settings, console)
    hold = settings.defaults.hold
    if settings.grouped and hold is not None and not valid_tag(HOLD_KEY, hold):
        raise UsageError(
            f"--hold {hold!r}: with --consistency server the hold is a tag of the snapshot group, and a tag "
            "value is at most 43 letters, digits, '_', '.' or '-'"
        )
    also_known = frozenset({"emulator_status"}) if settings.emulator else frozenset()
    display = settings.source.shown
    with spooled(settings.source) as source:

        def rows() -> Iterator[RawRow]:
            return read_rows(source, display=display, also_known=also_known)

        # A signal stops a long pass promptly (the passes run in a worker thread).
        digest = await in_thread(lambda: manifest_digest(source, display=display))
        frame = new_frame(settings, console)
        async with frame:
            held = lock(frame, settings, digest)
            total, keys = await in_thread(
                lambda: first_pass(
                    source, settings.defaults, display=display, warn=console.warn, also_known=also_known
                )
            )
            servers = None
            if settings.grouped:  # rows without a server, or servers no group takes: exit 2 here
                servers = await in_thread(lambda: plan_servers(rows(), settings.defaults))
            book, identity = identify(held, settings, total=total, digest=digest, display=display)
            await _locked(
                frame,
                settings,
                identity,
                book,
                total,
                digest,
                display,
                rows,
                keys,
                console,
                started,
                servers,
            )
        return frame.exit_code


async def _locked(
    frame: Frame,
    settings: CreateSettings,
    identity: RunIdentity,
    book: ResumeBook[int, Outcome] | None,
    total: int,
    digest: str,
    display: str,
    rows: Callable[..., Iterator[RawRow]],
    candidates: set[bytes],
    console: Console,
    started: float,
    servers: dict[str, Server] | None,
) -> None:
    servers_hooked = await hook_servers(settings.hooks, rows)  # exit 2 here when a row names no server
    if settings.emulator:
        # the emulator's server and aiohttp: 574 M instructions, spared without --emulator (results.md)
        from orchestrator.demo import with_emulator  # noqa: PLC0415 - see above

        defaults, connection = await frame.enter(
            with_emulator(settings.defaults, settings.connection, rows(), display=display)
        )
        settings = dataclasses.replace(settings, defaults=defaults, connection=connection)
    router: Router | None = None
    if not settings.dry_run:
        router = await frame.connect(settings.connection, settings.policy)
        left = QUOTA_CHECK_SECONDS
        if settings.deadline is not None:
            left = min(left, started + settings.deadline - time.monotonic())
        with anyio.move_on_after(left) as quota_scope:
            await _warn_over_quota(settings, router, total, console)
        if quota_scope.cancelled_caught:
            console.warn(f"the project's snapshot quota did not answer within {left:.0f}s; going on")
        if servers is not None:  # before the report: a region without groups, two zones exit 2
            await check_groups_offered(router, servers, settings.policy)
            await check_zones(router, servers, settings.policy)
    writer, validator, tally = begin(
        frame,
        settings,
        identity,
        total=total,
        digest=digest,
        display=display,
        candidates=candidates,
        started=started,
    )
    plan = RunPlan(
        run_id=identity.run_id,
        concurrency=settings.connection.limits.concurrency,
        dry_run=settings.dry_run,
        policy=settings.policy,
        deadline=None if settings.deadline is None else started + settings.deadline,
        settle=settings.settle,
        timeout=settings.connection.limits.timeout,
    )
    runner: Runner | GroupRunner
    async with anyio.create_task_group() as group:
        async with frame.freezing(  # inside the drain: a post-hook owed runs before the drain ends
            settings.hooks, manifest=settings.source.path, servers=servers_hooked, deadline=plan.deadline
        ) as gate:
            if servers is None:
                runner = Runner(plan, router=router, writer=writer, tally=tally, resume=book, gate=gate)
            else:
                runner = GroupRunner(
                    plan,
                    servers=servers,
                    router=router,
                    writer=writer,
                    tally=tally,
                    resume=book,
                    warn=console.warn,
                    gate=gate,
                )
            if settings.progress:
                shown = runner if isinstance(runner, Runner) else None
                progress = Progress(tally, total, console.stream, router=router, runner=shown)
                group.start_soon(progress.run)
            with anyio.CancelScope() as run_scope:
                group.start_soon(
                    lambda: drain_on_signal(
                        stop=runner.stop,
                        scope=run_scope,
                        grace=settings.grace,
                        received=frame.signals,
                        console=console,
                        sync=writer.sync,
                    )
                )
                await runner.run(validator.validate_all(rows()))
        group.cancel_scope.cancel()
    phase(tally, "create", started, router)
    if router is not None and not frame.signals:
        frame.tally = await _after_create(
            settings,
            identity,
            router,
            writer,
            tally,
            console,
            frame.signals,
            started,
            in_doubt=runner.in_doubt,
            servers=servers,
        )


async def _after_create(
    settings: CreateSettings,
    identity: RunIdentity,
    router: Router,
    writer: ReportWriter,
    tally: Tally,
    console: Console,
    signals: list[int],
    run_started: float,
    *,
    in_doubt: bool,
    servers: dict[str, Server] | None = None,
) -> Tally:
    """The sweep (exactly one snapshot per accepted row), then ``--wait``; both within ``--deadline``.

    The sweep runs when some create was in doubt (resent, answered 5xx, cut off; for a resume, also in an
    earlier process, as its journal shows, or a row it sent is sent again):
    a run whose every row was sent once and answered for sure cannot hold two snapshots of a row.
    """

    report = Path(settings.report) if settings.report != "-" else None
    deadline = None if settings.deadline is None else run_started + settings.deadline
    if report is not None:
        started = time.monotonic()
        if in_doubt:
            writer.sync()
            with anyio.move_on_after(None if deadline is None else deadline - time.monotonic()) as scope:
                await _sweep(settings, identity, router, writer, tally, console, report, servers)
            if scope.cancelled_caught:
                tally.unfinished.append("the --deadline passed before the duplicate sweep finished")
                console.error(f"{tally.unfinished[-1]}; run `evs-snapshot wait {report}` to sweep again")
                return tally
        phase(tally, "sweep", started, router)  # a sweep with nothing to look at is a phase of 0 requests
    if settings.wait is None or report is None:
        return tally
    started = time.monotonic()
    writer.sync()
    console.event("waiting", f"create done; waiting for snapshots (up to {settings.wait.timeout:g}s)")
    waited = tally.carried_over()
    waiter = Waiter(settings.wait, router=router, writer=writer, tally=waited, on_round=console.wait_round)
    waiter.load(final_records(report))
    async with anyio.create_task_group() as group:
        group.start_soon(cancel_on_signal, group.cancel_scope, signals)
        with anyio.move_on_after(None if deadline is None else deadline - time.monotonic()) as scope:
            await waiter.run()
        group.cancel_scope.cancel()
    if scope.cancelled_caught:
        waited.unfinished.append("the --deadline passed while waiting")
        console.error(f"{waited.unfinished[-1]}; run `evs-snapshot wait {report}` to wait for the rest")
    phase(waited, "wait", started, router)
    return waited


async def _sweep(
    settings: CreateSettings,
    identity: RunIdentity,
    router: Router,
    writer: ReportWriter,
    tally: Tally,
    console: Console,
    report: Path,
    servers: dict[str, Server] | None,
) -> None:
    """The sweep of single snapshots (``sweep``), or of snapshot groups (``groupsweep``, ``servers``)."""
    policy, patience = sweep_policy(settings.policy), max(settings.settle, 10.0)
    what = "snapshots" if servers is None else "snapshot groups"
    try:
        result = await sweep_run(
            router,
            servers,
            run_id=identity.run_id,
            report=report,
            writer=writer,
            tally=tally,
            policy=policy,
            keep_duplicates=settings.keep_duplicates,
            patience=patience,
            all_succeeded=tally.all_succeeded(),
        )
    except ListingFailed as exc:
        tally.unfinished.append(f"the duplicate sweep could not list: {exc}")
        console.error(f"{tally.unfinished[-1]}; run `evs-snapshot wait {report}` to sweep again")
        return
    if result.found or result.reconciled:
        console.warn(
            f"sweep: {result.found} extra {what} of this run found, {result.removed} deleted; "
            f"{result.reconciled} rows found created after all"
        )


async def _warn_over_quota(settings: CreateSettings, router: Router, total: int, console: Console) -> None:
    """Before the first create: warn when the rows exceed the project's remaining snapshot quota
    (``preflight.quota_short``).

    Checked for the ``--project-id`` project (rows naming their own project are not counted); a quota
    that cannot be read is said, not fatal.
    """
    from orchestrator.api.routes import Route  # noqa: PLC0415 - aiohttp loads only when sending

    project = settings.defaults.project_id
    if project is None or settings.resume:
        return
    try:
        route: Route = router.route_at(settings.defaults.region, project)
        short = await quota_short(route, total, dataclasses.replace(settings.policy, max_attempts=3))
    except EvsSnapshotError as exc:
        console.warn(f"the project's snapshot quota could not be read ({exc}); going on")
        return
    if short is not None:
        console.warn(short.warning(), rows=total, remaining=short.remaining)
