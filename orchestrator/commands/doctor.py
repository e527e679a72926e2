"""``evs-snapshot doctor [MANIFEST]``: prove, in the user's own account, what the tool's promises rest on.

Read-only unless ``--live VOLUME_ID`` is given (the checks are ``orchestrator.doctor``'s; the round
trip is ``orchestrator.live_probe``'s). The table goes to stdout (``--json``: one JSON object). Exit 0
when every check passes (a warning does not fail), 1 when one fails, 3 when the endpoint or the
credentials stop it, 2 for usage.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TextIO

import click
import orjson

from orchestrator import options
from orchestrator.config import check_project_id
from orchestrator.console import Console
from orchestrator.doctor import Doctor
from orchestrator.duplicates import UUID_RE
from orchestrator.entry import run
from orchestrator.errors import EvsSnapshotError, RunAborted, UsageError
from orchestrator.findings import Check, Result, Stopped, render, verdict
from orchestrator.live_probe import Live, LiveSettings, live_failed
from orchestrator.manifest import spooled
from orchestrator.models import utc_now
from orchestrator.report import check_report_path
from orchestrator.selection import read_targets

if TYPE_CHECKING:
    from orchestrator.config import Connection
    from orchestrator.manifest import ManifestSource
    from orchestrator.retry import RetryPolicy

LIVE_REPORT = "reports/evs-snapshot-doctor-{datetime}.jsonl"


class DiskId(click.ParamType):  # type: ignore[type-arg]
    """A disk id (a UUID, 8-4-4-4-12 hex), lower-cased; its metavar is VOLUME_ID."""

    name = "volume_id"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> str:

        text = str(value).strip().lower()
        if not UUID_RE.match(text):
            self.fail(f"{value!r} is not a disk id (a UUID, 8-4-4-4-12 hex)", param, ctx)
        return text


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class DoctorSettings:
    source: ManifestSource | None
    project_id: str | None
    connection: Connection
    policy: RetryPolicy
    live: str | None = None  # the scratch disk of --live
    live_rollback: bool = False
    live_report: Path | None = None
    as_json: bool = False
    argv: tuple[str, ...] = ()  # the connection options as given, for the cleanup command it may print


async def doctor(settings: DoctorSettings, *, console: Console, stdout: TextIO) -> int:
    """Run the checks in order, print the table (or JSON) and return the exit code."""

    from orchestrator.api.routes import connect  # noqa: PLC0415 - aiohttp: 65 ms (results.md, session 13)

    targets = None
    if settings.source is not None:
        with spooled(settings.source) as source:
            targets, _ = read_targets(
                source,
                project_id=settings.project_id,
                region=settings.connection.endpoints.home_region,
                warn=console.warn,
            )
    hint: str | None = None
    async with contextlib.AsyncExitStack() as stack:
        router = await connect(stack, settings.connection, settings.policy)
        checks = Doctor(router, settings.connection, settings.policy)
        try:
            await checks.endpoint(settings.project_id)
            await checks.identity(settings.project_id)
            answers = await checks.permissions()
            await checks.enterprise_projects(answers)
            await checks.paging(answers)
            await checks.snapshot_groups()
            await checks.quota(answers, targets)
            if settings.live is not None:
                hint = await _live(checks, settings, console)
        except Stopped:
            pass
        except RunAborted as exc:  # a route closed (unreachable, refused) or retries spent: exit 3
            checks.add(Check(name="stopped", result=Result.STOP, meaning=str(exc)))
    code, last = verdict(checks.checks, checks.where, live=settings.live is not None)
    if settings.as_json:
        data = {
            "region": checks.region,
            "project_id": checks.project_id,
            "checks": [check.to_dict() for check in checks.checks],
            "verdict": last,
            "cleanup": hint,
            "exit_code": code,
        }
        stdout.write(orjson.dumps(data).decode() + "\n")
    else:
        stdout.write(render(checks.checks, last))
    return code


async def _live(checks: Doctor, settings: DoctorSettings, console: Console) -> str | None:
    """The round trip; returns the cleanup command when it stopped with something left."""

    assert settings.live is not None  # noqa: S101 - only with --live
    report = settings.live_report or Path(LIVE_REPORT.format(datetime=f"{utc_now():%Y%m%dT%H%M%SZ}"))
    live = Live(checks, LiveSettings(volume_id=settings.live, report=report, rollback=settings.live_rollback))
    try:
        await live.run()
    except EvsSnapshotError as exc:
        live.add("stopped", Result.FAIL, f"the round trip stopped: {live_failed(exc)}")
    finally:  # a signal too: say what removes the probe before the process ends
        hint = live.cleanup_hint(list(settings.argv))
        if hint is not None:
            console.warn(f"the probe snapshot of doctor --live may be left; remove it with: {hint}")
    return hint


def _argv(connection_args: dict[str, object]) -> tuple[str, ...]:
    """The options a cleanup command needs to reach the same project the same way."""
    out: list[str] = []
    for option, value in connection_args.items():
        if value:
            out += [option, str(value)]
    return tuple(out)


@click.command("doctor")
@options.OPTIONAL_MANIFEST
@click.option(
    "--live",
    "live",
    type=DiskId(),
    default=None,
    help="Also make one snapshot of this scratch disk and delete it: proves the marker, the lookup and "
    "the delete (creates and deletes; nothing else).",
)
@click.option(
    "--live-rollback",
    is_flag=True,
    help="With --live: also roll the disk back to the probe snapshot (the disk must be detached).",
)
@click.option(
    "--live-report",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help=f"With --live: the create report of the probe.  [default: {LIVE_REPORT}]",
)
@click.option("--json", "as_json", is_flag=True, help="Print the checks as one JSON object.")
@options.PROJECT_OF_ROWS
@options.CONNECTION
@options.RETRIES
@options.LOG_FORMAT
@options.DEBUG
def command(
    *,
    source: ManifestSource | None,
    live: str | None,
    live_rollback: bool,
    live_report: Path | None,
    as_json: bool,
    project_id: str | None,
    connection: Connection,
    policy: RetryPolicy,
    log_format: str,
) -> NoReturn:
    """Check endpoint, clock, credentials, project, permissions, enterprise projects and quota (read-only)."""

    console = Console(sys.stderr, json=log_format == "json")
    if (live_rollback or live_report is not None) and live is None:
        raise UsageError("--live-rollback and --live-report go with --live VOLUME_ID")
    if live_report is not None:
        check_report_path(live_report)
        if live_report.exists() and live_report.stat().st_size > 0:  # before anything is sent
            raise UsageError(f"--live-report {live_report} already holds records; choose another path")
    project = check_project_id(project_id, option="--project-id")
    endpoints = connection.endpoints
    settings = DoctorSettings(
        source=source,
        project_id=project,
        connection=connection,
        policy=policy,
        live=live,
        live_rollback=live_rollback,
        live_report=live_report,
        as_json=as_json,
        argv=_argv(
            {
                "--endpoint": endpoints.evs,
                "--region": endpoints.home_region,
                "--iam-endpoint": endpoints.iam,
                "--ca-bundle": endpoints.ca_bundle,
                "--project-id": project,
            }
        ),
    )
    raise SystemExit(run(lambda: doctor(settings, console=console, stdout=sys.stdout), console=console))
