"""``create``'s settings, the checks made before anything is read, and the steps its run and its dry
run share (locks, run identity, report header, row validator); ``plan``, the dry run itself.

A dry run waits for nothing, so it runs without an event loop (``entry.run_now``): no asyncio, no
worker pool, no HTTP client to import (``benchmarks startup``). It takes the same locks, writes the same
header and records, and ends in the same frame as the run of ``creating.create``; a dry run with
something the loop does (freeze hooks, ``--emulator``, ``--consistency server``, notifications, the
progress line of a terminal) runs there. ``commands/create.py`` picks one of the two.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.defaults import GRACE, SETTLE
from orchestrator.errors import UsageError
from orchestrator.frame import RESUME_ADVICE, Frame
from orchestrator.hookplan import HookPlan
from orchestrator.lock import manifest_locks, report_lock, run_lock
from orchestrator.manifest import manifest_digest, read_rows, spooled
from orchestrator.models import Outcome, Record, RunHeader, planned, utc_iso
from orchestrator.report import (
    check_report_path,
    header_path,
    name_shape,
    read_header,
    refuse_existing,
    resume_identity,
)
from orchestrator.rules import RowValidator, first_pass
from orchestrator.signals import draining_rows
from orchestrator.tally import DRY_RUN_ADVICE, Tally

if TYPE_CHECKING:
    from orchestrator.api.routes import Router
    from orchestrator.config import Connection, RowDefaults, RunIdentity, WaitPlan
    from orchestrator.console import Console
    from orchestrator.frame import Closing
    from orchestrator.lock import Held, Lock
    from orchestrator.manifest import ManifestSource, RawRow
    from orchestrator.report import ReportWriter, ResumeBook
    from orchestrator.retry import RetryPolicy

SETTLE_WARN = 10.0  # a shorter --settle may not outlast a late commit


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class CreateSettings:
    """Everything ``create`` was told, resolved from options and the environment."""

    source: ManifestSource
    report: str
    defaults: RowDefaults
    connection: Connection
    closing: Closing
    policy: RetryPolicy
    dry_run: bool = False
    progress: bool = False
    emulator: bool = False
    resume: bool = False
    lock_file: Path | None = None
    deadline: float | None = None  # seconds for the whole run
    settle: float = SETTLE
    keep_duplicates: bool = False
    wait: WaitPlan | None = None
    grace: float = GRACE
    hooks: HookPlan = dataclasses.field(default_factory=HookPlan)
    consistency: str = "disk"  # "server": one v5 snapshot group per server (groupplan, grouprun)

    @property
    def grouped(self) -> bool:
        return self.consistency == "server"

    @property
    def loopless(self) -> bool:
        """A dry run that needs no event loop (``plan``): no hooks, emulator, groups, notifications or
        progress line (redrawn by a task of the loop)."""
        notify = self.closing.notify
        return self.dry_run and not (self.hooks or self.emulator or self.grouped or notify or self.progress)


def checked(settings: CreateSettings, console: Console) -> CreateSettings:
    """The options checked together before anything is read (exit 2); the demo's row defaults."""
    if settings.wait is not None and settings.report == "-":
        raise UsageError("--wait reads the report back, so it needs a --report file, not standard output")
    if settings.resume and settings.report == "-":
        raise UsageError("--resume needs a --report file to read, not standard output")
    if settings.resume and settings.dry_run:
        # A plan written into the run's report would read as rows done: the next --resume would trust it.
        raise UsageError(
            "--dry-run does not mix with --resume: a plan must not be written into the report a resume "
            "reads. To see what a resume would send, run `evs-snapshot summary REPORT`"
        )
    if settings.settle < SETTLE_WARN:
        console.warn(
            f"--settle {settings.settle:g}s is under {SETTLE_WARN:g}s: a create the gateway answered 504 may "
            "commit later than that, and the row would be sent again (the end-of-run sweep deletes a "
            "second snapshot it finds, but keep --settle at 60s for real runs)"
        )
    if settings.emulator and settings.connection.endpoints.evs is not None:
        raise UsageError("--emulator starts its own emulator; leave out --endpoint (or leave out --emulator)")
    if settings.report != "-":
        check_report_path(Path(settings.report))
    if settings.emulator:
        # the emulator's server and aiohttp: 586 M instructions, spared without --emulator (results.md)
        from orchestrator.demo import demo_defaults  # noqa: PLC0415 - see above

        settings = dataclasses.replace(settings, defaults=demo_defaults(settings.defaults))
    return settings


def new_frame(settings: CreateSettings, console: Console) -> Frame:
    return Frame(
        command="create",
        console=console,
        report=settings.report,
        closing=settings.closing,
        grace=settings.grace,
        advice=DRY_RUN_ADVICE if settings.dry_run else RESUME_ADVICE,
        reads=settings.source.path,
    )


def lock(frame: Frame, settings: CreateSettings, digest: str) -> Held:
    """Locks first: a second run of this manifest, report or run exits 75 (not 2, "report exists")."""
    held = frame.lock(_locks(settings, digest), "create --resume" if settings.resume else "create")
    if not settings.resume and settings.report != "-":
        refuse_existing(Path(settings.report))  # before anything is sent
    return held


def _locks(settings: CreateSettings, digest: str) -> list[Lock]:
    """The manifest's locks (and --lock-file), the report's, and the lock of the run the report holds."""

    locks = manifest_locks(settings.source.path, digest, settings.lock_file)
    if settings.report != "-":
        locks.append(report_lock(settings.report))
        with contextlib.suppress(UsageError, OSError):  # not a report: refuse_existing or the resume says so
            header = read_header(Path(settings.report))
            if header is not None:
                locks.append(run_lock(header.run_id))
    return locks


def identify(
    held: Held, settings: CreateSettings, *, total: int, digest: str, display: str
) -> tuple[ResumeBook[int, Outcome] | None, RunIdentity]:
    """The resume book and the run's identity, whose lock is taken before its header names it anywhere."""
    book, identity = resume_identity(
        settings.report, settings.resume, total=total, digest=digest, display=display, shape=shape(settings)
    )
    held.take(run_lock(identity.run_id))
    return book, identity


def begin(
    frame: Frame,
    settings: CreateSettings,
    identity: RunIdentity,
    *,
    total: int,
    digest: str,
    display: str,
    candidates: set[bytes],
    started: float,
) -> tuple[ReportWriter, RowValidator, Tally]:
    """The report opened with its header, the rows' validator, and the run's tally."""
    writer = frame.open_report(
        RunHeader(
            run_id=identity.run_id,
            command="create",
            manifest=header_path(display),
            rows=total,
            digest=digest,
            shape=shape(settings),
            started_at=utc_iso(identity.started),
            emulator=settings.emulator,
            dry_run=settings.dry_run,
            journal=True,
            window=settings.settle + settings.connection.limits.timeout,
            connection={} if settings.emulator else settings.connection.recorded(),
        ),
        resume=settings.resume,
    )
    validator = RowValidator(
        defaults=settings.defaults,
        identity=identity,
        candidates=candidates,
        region_required=settings.connection.endpoints.region_required,
    )
    tally = frame.tally = Tally(manifest_rows=total, dry_run=settings.dry_run)
    tally.started = started
    return writer, validator, tally


def plan(settings: CreateSettings, *, console: Console) -> int:
    """The dry run without an event loop (``settings.loopless``): every row validated and written as
    ``planned`` or ``invalid``, nothing sent; the exit code."""
    started = time.monotonic()
    settings = checked(settings, console)
    display = settings.source.shown
    with spooled(settings.source) as source:

        def rows() -> Iterator[RawRow]:
            return read_rows(source, display=display)

        digest = manifest_digest(source, display=display)
        with new_frame(settings, console) as frame:
            held = lock(frame, settings, digest)
            total, keys = first_pass(source, settings.defaults, display=display, warn=console.warn)
            _, identity = identify(held, settings, total=total, digest=digest, display=display)
            writer, validator, tally = begin(
                frame,
                settings,
                identity,
                total=total,
                digest=digest,
                display=display,
                candidates=keys,
                started=started,
            )
            stopping: list[bool] = []
            with draining_rows(
                stop=lambda: stopping.append(True),
                grace=settings.grace,
                received=frame.signals,
                console=console,
                sync=writer.sync,
            ):
                for item in validator.validate_all(rows()):
                    if stopping:
                        break
                    record = item if isinstance(item, Record) else planned(identity.run_id, item)
                    writer.write(record)
                    tally.add(record)
            phase(tally, "create", started, None)
        return frame.exit_code


def shape(settings: CreateSettings) -> dict[str, str]:
    """The run's shape (``report.name_shape``), and ``consistency`` when it is ``server``: a resume in
    the other mode would look its rows up where they are not."""
    found = name_shape(settings.defaults)
    if settings.grouped:
        found["consistency"] = settings.consistency
    return found


def phase(tally: Tally, name: str, started: float, router: Router | None) -> None:
    tally.phase(name, time.monotonic() - started, {} if router is None else router.counts())
