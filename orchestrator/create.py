"""``evs-snapshot create``: read the manifest twice (check, then send), run, report, summarize.

The first pass reads the whole manifest without sending anything, so that a file that cannot be read
as a whole stops the run with exit 2 before the first request; it also counts rows and finds the
keys that may be duplicated. The second pass validates each row and streams it to the runner.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import signal
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import TextIO

import anyio
from aiohttp import ClientSession
from yarl import URL

from orchestrator import auth as credentials
from orchestrator.client import Caller, IamClient, new_session
from orchestrator.config import Endpoints, Limits, RowDefaults, RunIdentity
from orchestrator.errors import RunAborted, UsageError
from orchestrator.iam import PasswordAuth, ProjectResolver
from orchestrator.manifest import ManifestSource, RawRow, read_rows, spooled
from orchestrator.models import Summary, utc_now
from orchestrator.progress import Progress
from orchestrator.report import ReportLock, ReportWriter, ResumeBook, Tally
from orchestrator.retry import RetryPolicy
from orchestrator.routing import Router
from orchestrator.rows import RowValidator, check_template, duplicate_candidates, volume_key
from orchestrator.runner import Runner, RunPlan

EMULATOR_STATUS_COLUMN = "emulator_status"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CreateSettings:
    """Everything ``create`` was told, resolved from options and the environment."""

    source: ManifestSource
    report: str
    defaults: RowDefaults
    limits: Limits
    endpoints: Endpoints
    auth_kind: credentials.AuthKind | None = None
    token_file: Path | None = None
    dry_run: bool = False
    progress: bool = False
    summary_json: Path | None = None
    emulator: bool = False
    resume: bool = False
    lock_file: Path | None = None
    policy: RetryPolicy = dataclasses.field(default_factory=RetryPolicy)
    max_rps: float | None = None
    deadline: float | None = None  # seconds for the whole run
    grace: float = 10.0
    environ: Mapping[str, str] = dataclasses.field(default_factory=dict)


async def create(settings: CreateSettings, *, stderr: TextIO) -> int:
    """Run the whole job and return the exit code; raises ``EvsSnapshotError`` for run-level errors."""
    started = time.monotonic()
    check_template(settings.defaults.name_template)
    lock_path = settings.lock_file or (None if settings.report == "-" else Path(settings.report + ".lock"))
    with contextlib.ExitStack() as locks:
        if lock_path is not None:
            locks.enter_context(ReportLock(lock_path))
        book = _resume_book(settings)
        identity = RunIdentity.resumed(book.run_id) if book is not None else RunIdentity.new(utc_now())
        return await _locked(settings, identity, book, started, stderr)


def _resume_book(settings: CreateSettings) -> ResumeBook | None:
    if not settings.resume:
        return None
    if settings.report == "-":
        raise UsageError("--resume needs a --report file to read, not standard output")
    return ResumeBook.load(Path(settings.report))


async def _locked(
    settings: CreateSettings, identity: RunIdentity, book: ResumeBook | None, started: float, stderr: TextIO
) -> int:
    def warn(message: str) -> None:
        print(f"evs-snapshot: warning: {message}", file=stderr, flush=True)

    also_known = frozenset({EMULATOR_STATUS_COLUMN}) if settings.emulator else frozenset()
    display = "<stdin>" if settings.source.path == "-" else settings.source.path
    with spooled(settings.source) as source:

        def rows(*, warn_columns: bool = False) -> Iterator[RawRow]:
            return read_rows(
                source, display=display, warn=warn if warn_columns else None, also_known=also_known
            )

        total, candidates = duplicate_candidates(rows(warn_columns=True), settings.defaults)
        async with contextlib.AsyncExitStack() as stack:
            if settings.emulator:
                settings = await stack.enter_async_context(_with_emulator(settings, rows()))
            found = None
            if not settings.dry_run:
                found = credentials.discover(
                    environ=settings.environ, forced=settings.auth_kind, token_file=settings.token_file
                )
            writer = stack.enter_context(ReportWriter(settings.report, resume=settings.resume))
            router = None
            if found is not None:
                session = await stack.enter_async_context(
                    new_session(
                        connections=settings.limits.concurrency, ca_bundle=settings.endpoints.ca_bundle
                    )
                )
                router = _router(session, found, settings)
            validator = RowValidator(
                defaults=settings.defaults,
                identity=identity,
                candidates=candidates,
                region_required=settings.endpoints.evs is None,
            )
            plan = RunPlan(
                run_id=identity.run_id,
                concurrency=settings.limits.concurrency,
                dry_run=settings.dry_run,
                policy=settings.policy,
                deadline=None if settings.deadline is None else started + settings.deadline,
            )
            tally = Tally()
            runner = Runner(plan, router=router, writer=writer, tally=tally, resume=book)
            signals: list[int] = []
            async with anyio.create_task_group() as group:
                if settings.progress:
                    group.start_soon(Progress(tally, total, stderr).run)
                with anyio.CancelScope() as run_scope:
                    group.start_soon(_watch_signals, runner, run_scope, settings.grace, writer, signals)
                    await runner.run(validator.validate_all(rows()))
                group.cancel_scope.cancel()
    code = _finish(tally.summary(), settings, router, stderr)
    if signals:
        name = signal.Signals(signals[0]).name
        print(f"evs-snapshot: stopped by {name}; run again with --resume to finish the job", file=stderr)
        return 128 + signals[0]
    return code


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


def _finish(summary: Summary, settings: CreateSettings, router: Router | None, stderr: TextIO) -> int:
    """Print and write the summary; the exit code is 3 when credentials were refused anywhere."""
    where = "standard output" if settings.report == "-" else settings.report
    print(f"{summary.render()}\nreport: {where}", file=stderr, flush=True)
    if settings.summary_json is not None:
        _write_atomically(settings.summary_json, summary.to_json())
    refusals = [] if router is None else router.closed()
    for refused in refusals:
        print(f"evs-snapshot: error: {refused}", file=stderr, flush=True)
    if refusals:
        print(
            "evs-snapshot: the run stopped sending where the credentials were refused; fix them and run "
            "again with --resume to finish the job",
            file=stderr,
            flush=True,
        )
        return RunAborted.exit_code
    return summary.exit_code


def _router(
    session: ClientSession,
    found: credentials.Authenticator | credentials.PasswordCredentials,
    settings: CreateSettings,
) -> Router:
    iam = IamClient(Caller(session, settings.endpoints.iam_url(), timeout=settings.limits.timeout))
    auth: credentials.Authenticator
    if isinstance(found, credentials.PasswordCredentials):
        auth = PasswordAuth(user=found.user, password=found.password, domain=found.domain, iam=iam)
    else:
        auth = found
    return Router(
        session=session,
        auth=auth,
        endpoints=settings.endpoints,
        timeout=settings.limits.timeout,
        resolver=ProjectResolver(iam, auth),
        max_rps=settings.max_rps,
    )


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
        yield dataclasses.replace(
            settings,
            defaults=dataclasses.replace(settings.defaults, project_id=project, region=region),
            endpoints=dataclasses.replace(settings.endpoints, evs=URL(running.url), iam=URL(running.url)),
            auth_kind="aksk",
            token_file=None,
            environ={"HUAWEICLOUD_SDK_AK": DEFAULT_AK, "HUAWEICLOUD_SDK_SK": DEFAULT_SK},
        )


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)
