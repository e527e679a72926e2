"""``evs-snapshot audit MANIFEST --max-age DURATION``: does every disk have a recent snapshot of the tool?

GETs only: each project of the manifest is listed once (1000 snapshots a request). A disk passes when
it has an owned (``evs_snapshot_run`` marker, from any run) ``available`` snapshot younger than
``--max-age`` (``retention.stale_disks``). Exit 0 when every disk passes; else exit 1 and one line on
stdout per disk that does not, with the age of its newest snapshot. ``--metrics-file`` writes
``evs_snapshot_audit_volumes_missing``, so an alert fires when cron itself stopped running.

Audit changes nothing, so it takes no lock (an alert must not fail because a prune runs) and writes no
report to resume: running it again is the resume.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import TYPE_CHECKING, NoReturn, TextIO

import click

from orchestrator import options
from orchestrator.entry import run

if TYPE_CHECKING:
    from datetime import datetime

    from orchestrator.config import Connection
    from orchestrator.console import Console
    from orchestrator.frame import Closing
    from orchestrator.manifest import ManifestSource
    from orchestrator.retention import Stale
    from orchestrator.retry import RetryPolicy

LISTED_IN_SUMMARY = 1000


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class AuditSettings:
    source: ManifestSource
    project_id: str | None
    max_age: float  # seconds
    name_prefix: str | None
    connection: Connection
    policy: RetryPolicy
    closing: Closing


async def audit(settings: AuditSettings, *, console: Console, stdout: TextIO) -> int:
    """List every project of the manifest; exit 0 when each disk has a fresh snapshot, else 1."""
    import contextlib  # noqa: PLC0415

    import anyio  # noqa: PLC0415

    from orchestrator.api.routes import connect  # noqa: PLC0415
    from orchestrator.errors import Interrupted  # noqa: PLC0415
    from orchestrator.frame import recording_aborts  # noqa: PLC0415
    from orchestrator.manifest import spooled  # noqa: PLC0415
    from orchestrator.models import utc_now  # noqa: PLC0415
    from orchestrator.ownership import Ownership  # noqa: PLC0415
    from orchestrator.retention import duration_text, stale_disks  # noqa: PLC0415
    from orchestrator.selection import read_targets  # noqa: PLC0415
    from orchestrator.signals import cancel_on_signal, in_thread  # noqa: PLC0415

    region = settings.connection.endpoints.home_region
    with spooled(settings.source) as source:
        targets, bad = await in_thread(  # a signal stops a long manifest pass promptly
            lambda: read_targets(source, project_id=settings.project_id, region=region, warn=console.warn)
        )
    received: list[int] = []
    findings: list[Stale] = []
    async with contextlib.AsyncExitStack() as stack:
        stack.enter_context(recording_aborts(settings.closing, "audit", console))
        router = await connect(stack, settings.connection)
        async with anyio.create_task_group() as group:
            group.start_soon(cancel_on_signal, group.cancel_scope, received)
            findings = await stale_disks(
                router,
                targets,
                max_age=settings.max_age,
                ownership=Ownership(settings.name_prefix),
                policy=settings.policy,
            )
            group.cancel_scope.cancel()
        requests = dict(router.counts())
    if received:
        raise Interrupted(received[0], "run audit again")
    now = utc_now()
    for finding in findings:
        stdout.write(finding.line(now) + "\n")
    limit = duration_text(settings.max_age)
    stdout.write(
        f"{len(targets)} volumes: {len(targets) - len(findings)} with a snapshot of the tool younger than "
        f"{limit}, {len(findings)} without" + (f"; {bad} manifest rows skipped" if bad else "") + "\n"
    )
    code = 1 if findings or bad else 0
    _side_files(settings, len(targets), findings, bad, requests, code, now, console)
    return code


def _side_files(
    settings: AuditSettings,
    volumes: int,
    findings: list[Stale],
    bad: int,
    requests: dict[str, int],
    code: int,
    now: datetime,
    console: Console,
) -> None:
    from orchestrator.frame import write_side_files  # noqa: PLC0415
    from orchestrator.metrics import PREFIX  # noqa: PLC0415

    label = 'command="audit"'
    write_side_files(
        settings.closing,
        command="audit",
        summary={
            "volumes": volumes,
            "volumes_missing": len(findings),
            "rows_skipped": bad,
            "max_age_s": settings.max_age,
            "missing": [finding.to_dict(now) for finding in findings[:LISTED_IN_SUMMARY]],
            "requests": requests,
            "exit_code": code,
        },
        families=[
            (
                f"{PREFIX}_audit_volumes",
                "Disks the last audit checked.",
                [f"{PREFIX}_audit_volumes{{{label}}} {volumes}"],
            ),
            (
                f"{PREFIX}_audit_volumes_missing",
                "Disks without an available snapshot of the tool younger than --max-age (last audit).",
                [f"{PREFIX}_audit_volumes_missing{{{label}}} {len(findings)}"],
            ),
        ],
        exit_code=code,
        console=console,
    )


@click.command("audit")
@options.MANIFEST
@click.option(
    "--max-age",
    type=options.Duration(positive=True),
    required=True,
    help="A disk passes with an available snapshot of the tool younger than this (26h, 7d).",
)
@options.PROJECT_OF_ROWS
@click.option(
    "--name-prefix",
    default=None,
    help="Also count snapshots named with this prefix (made before run markers existed).",
)
@options.CONNECTION
@options.RETRIES
@options.SIDE_FILES
@options.LOG_FORMAT
@options.DEBUG
def command(
    *,
    source: ManifestSource,
    max_age: float,
    project_id: str | None,
    name_prefix: str | None,
    connection: Connection,
    policy: RetryPolicy,
    closing: Closing,
    log_format: str,
) -> NoReturn:
    """Exit 1 when a disk has no available snapshot of the tool younger than --max-age (GETs only)."""
    from orchestrator.config import check_project_id  # noqa: PLC0415
    from orchestrator.console import Console  # noqa: PLC0415
    from orchestrator.ownership import check_name_prefix  # noqa: PLC0415

    console = Console(sys.stderr, json=log_format == "json")
    settings = AuditSettings(
        source=source,
        project_id=check_project_id(project_id, option="--project-id"),
        max_age=max_age,
        name_prefix=check_name_prefix(name_prefix),
        connection=connection,
        policy=policy,
        closing=closing,
    )
    raise SystemExit(run(lambda: audit(settings, console=console, stdout=sys.stdout), console=console))
