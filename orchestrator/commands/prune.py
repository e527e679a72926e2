"""``evs-snapshot prune MANIFEST``: delete the tool's own snapshots beyond a retention rule.

The rules are ``orchestrator.retention``'s (whose snapshots: ``ownership``; which disks:
``selection``; deleting: ``deleter``). Every project is listed before anything is deleted, and a
failed listing stops the command (exit 3).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from orchestrator import options
from orchestrator.config import check_project_id
from orchestrator.console import Console
from orchestrator.entry import run
from orchestrator.errors import UsageError
from orchestrator.frame import Frame, default_report
from orchestrator.lock import given_lock, manifest_locks, scope_lock
from orchestrator.manifest import ManifestSource
from orchestrator.ownership import check_name_prefix
from orchestrator.retention import PruneSettings, Rules, local_zone, named_zone, prune_scopes
from orchestrator.selection import manifest_selection

if TYPE_CHECKING:
    from collections.abc import Callable

    from orchestrator.config import Connection
    from orchestrator.console import Console
    from orchestrator.frame import Closing
    from orchestrator.lock import Lock
    from orchestrator.retention import PruneSettings
    from orchestrator.retry import RetryPolicy


def _locks(settings: PruneSettings, what: str, digest: str) -> list[Lock]:
    """The manifest's locks, the ones ``create`` takes (for --all-volumes alone, the scope's)."""

    if settings.source is not None:
        return manifest_locks(settings.source.path, digest, settings.lock_file)
    given = [] if settings.lock_file is None else [given_lock(settings.lock_file)]
    return [*given, scope_lock(what)]


async def prune(settings: PruneSettings, *, console: Console) -> int:
    """Plan (and with ``--apply``, carry out) the deletions; the exit code of SPEC."""

    what, targets, bad, digest = await manifest_selection(
        settings.source,
        project_id=settings.project_id,
        region=settings.connection.endpoints.home_region,
        warn=console.warn,
    )
    shape = {
        **settings.rules.shape(),
        "name_prefix": settings.name_prefix or "",
        "all_volumes": str(settings.all_volumes),
        "digest": digest,
    }
    frame = Frame(
        command="prune",
        console=console,
        report=settings.report,
        closing=settings.closing,
        reads="" if settings.source is None else settings.source.path,
    )
    async with frame:
        frame.lock(_locks(settings, what, digest))  # before anything is sent
        router = await frame.connect(settings.connection, settings.policy)
        frame.open_actions(
            source=what,
            shape=shape,
            resume=settings.resume,
            apply=settings.apply,
            nothing="nothing was deleted",
            connection=settings.connection,
        )
        counts = await prune_scopes(settings, router, targets, frame)
        if bad:
            frame.tally.notes.append(f"{bad} manifest rows skipped: they name no usable disk")
            frame.at_least = 1
        kept = sum(c["kept"] for c in counts.values())
        frame.summary.update(volumes={volume: dict(c) for volume, c in sorted(counts.items())}, kept=kept)
        frame.also["kept"] = kept
    return frame.exit_code


def _calendar_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """``--keep-hourly`` ... ``--keep-yearly`` (``retention.PERIODS``), one option per period."""
    periods = (
        ("hourly", "hours"),
        ("daily", "days"),
        ("weekly", "ISO weeks"),
        ("monthly", "months"),
        ("yearly", "years"),
    )
    for kind, unit in reversed(periods):
        function = click.option(
            f"--keep-{kind}",
            type=click.IntRange(0, 100000),
            help=f"Keep the newest owned available snapshot of each of the last N {unit} that hold one.",
        )(function)
    return function


@click.command("prune")
@click.argument("manifest", required=False)
@click.option(
    "--format",
    "manifest_format",
    type=click.Choice(["csv", "json", "jsonl"]),
    help="Manifest format (default: from the extension; required for -).",
)
@click.option(
    "--all-volumes",
    is_flag=True,
    help="Every disk of each project named (by the manifest's rows, or by --project-id / --region).",
)
@options.PROJECT_OF_ROWS
@click.option(
    "--keep-last", type=click.IntRange(0, 100000), help="Keep the newest N owned snapshots of each disk."
)
@click.option(
    "--keep-within", type=options.Duration(), help="Keep owned snapshots younger than this (36h, 7d)."
)
@_calendar_options
@click.option(
    "--tz",
    "tz",
    metavar="ZONE",
    help="Time zone of the calendar periods (an IANA name: Europe/Berlin).  [default: the machine's]",
)
@click.option(
    "--allow-none",
    is_flag=True,
    help="Let the rules delete a disk's newest available snapshot too (kept by default).",
)
@click.option(
    "--name-prefix",
    default=None,
    help="Also own snapshots named with this prefix (made before run markers existed).",
)
@click.option("--verbose", is_flag=True, help="Also write a kept record for each snapshot a rule keeps.")
@options.DELETING
@options.CONNECTION
@options.RETRIES
@options.CLOSING
@options.LOG_FORMAT
@options.DEBUG
def command(
    *,
    manifest: str | None,
    manifest_format: str | None,
    all_volumes: bool,
    project_id: str | None,
    keep_last: int | None,
    keep_within: float | None,
    keep_hourly: int | None,
    keep_daily: int | None,
    keep_weekly: int | None,
    keep_monthly: int | None,
    keep_yearly: int | None,
    tz: str | None,
    allow_none: bool,
    name_prefix: str | None,
    verbose: bool,
    apply: bool,
    wait_for_gone: bool,
    wait_timeout: float,
    report_path: str | None,
    resume: bool,
    lock_file: Path | None,
    connection: Connection,
    policy: RetryPolicy,
    closing: Closing,
    log_format: str,
) -> NoReturn:
    """Delete the tool's own snapshots beyond --keep-last / --keep-within / the calendar rules
    (plans unless --apply)."""

    try:
        zone = local_zone() if tz is None else named_zone(tz)
    except ValueError as exc:
        raise UsageError(f"--tz: {exc}") from None
    rules = Rules(
        keep_last=keep_last,
        keep_within=keep_within,
        keep_hourly=keep_hourly,
        keep_daily=keep_daily,
        keep_weekly=keep_weekly,
        keep_monthly=keep_monthly,
        keep_yearly=keep_yearly,
        allow_none=allow_none,
        zone=zone,
    )
    if not rules.any():
        raise UsageError(
            "prune needs a retention rule: --keep-last N, --keep-within DURATION and/or "
            "--keep-hourly/--keep-daily/--keep-weekly/--keep-monthly/--keep-yearly N"
        )
    if manifest is None and not all_volumes:
        raise UsageError("prune needs a MANIFEST, or --all-volumes with --project-id or --region")
    if manifest is None and project_id is None and connection.endpoints.home_region is None:
        raise UsageError(
            "--all-volumes without a MANIFEST needs --project-id or --region to name the project"
        )
    console = Console(sys.stderr, json=log_format == "json")
    settings = PruneSettings(
        source=None if manifest is None else ManifestSource.of(manifest, manifest_format),
        all_volumes=all_volumes,
        project_id=check_project_id(project_id, option="--project-id"),
        rules=rules,
        name_prefix=check_name_prefix(name_prefix),
        apply=apply,
        wait_timeout=wait_timeout if wait_for_gone else None,
        verbose=verbose,
        connection=connection,
        policy=policy,
        report=default_report("prune", report_path),
        resume=resume,
        lock_file=lock_file,
        closing=closing,
    )
    raise SystemExit(run(lambda: prune(settings, console=console), console=console))
