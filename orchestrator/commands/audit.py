"""``evs-snapshot audit MANIFEST --max-age DURATION``: does every disk have a recent snapshot of the tool?

GETs only: each project of the manifest is listed once (1000 snapshots a request). A disk passes when
it has an owned (``evs_snapshot_run`` marker, from any run) ``available`` snapshot younger than
``--max-age`` (``freshness.stale_disks``; a member of a snapshot group of the tool counts, and is named
as one). Exit 0 when every disk passes; else exit 1 and one line on stdout per disk that does not,
with the age of its newest snapshot. With a ``server_id`` column in the manifest, the newest snapshot
group of each server must hold a member of each of its disks: an incomplete group is one line too,
and exit 1. ``--metrics-file`` writes
``evs_snapshot_audit_volumes_missing``, so an alert fires when cron itself stopped running.

Audit changes nothing, so it takes no lock (an alert must not fail because a prune runs) and writes no
report to resume: running it again is the resume.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from typing import TYPE_CHECKING, NoReturn, TextIO

import anyio
import click

from orchestrator import options
from orchestrator.config import check_project_id
from orchestrator.console import Console
from orchestrator.entry import run
from orchestrator.errors import Interrupted
from orchestrator.frame import recording_aborts, write_side_files
from orchestrator.freshness import stale_disks
from orchestrator.manifest import spooled
from orchestrator.metrics import audit_families
from orchestrator.models import utc_now
from orchestrator.ownership import Ownership, check_name_prefix
from orchestrator.retention import duration_text
from orchestrator.selection import read_targets
from orchestrator.signals import cancel_on_signal, in_thread

if TYPE_CHECKING:
    from datetime import datetime

    from orchestrator.config import Connection
    from orchestrator.console import Console
    from orchestrator.frame import Closing
    from orchestrator.freshness import Incomplete, Stale
    from orchestrator.manifest import ManifestSource
    from orchestrator.retry import RetryPolicy

LISTED_IN_SUMMARY = 1000


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
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

    from orchestrator.api.routes import connect  # noqa: PLC0415 - aiohttp loads only when sending

    region = settings.connection.endpoints.home_region
    settings.closing.apart(reads=(settings.source.path, *settings.connection.files()))
    with spooled(settings.source) as source:
        targets, bad = await in_thread(  # a signal stops a long manifest pass promptly
            lambda: read_targets(source, project_id=settings.project_id, region=region, warn=console.warn)
        )
    received: list[int] = []
    findings: list[Stale] = []
    incomplete: list[Incomplete] = []
    async with contextlib.AsyncExitStack() as stack:
        stack.enter_context(recording_aborts(settings.closing, "audit", console))
        router = await connect(stack, settings.connection, settings.policy)
        async with anyio.create_task_group() as group:
            group.start_soon(cancel_on_signal, group.cancel_scope, received)
            findings, incomplete = await stale_disks(
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
    for unit in incomplete:
        stdout.write(unit.line() + "\n")
    limit = duration_text(settings.max_age)
    stdout.write(
        f"{len(targets)} volumes: {len(targets) - len(findings)} with a snapshot of the tool younger than "
        f"{limit}, {len(findings)} without"
        + (f"; {len(incomplete)} snapshot groups incomplete" if incomplete else "")
        + (f"; {bad} manifest rows skipped" if bad else "")
        + "\n"
    )
    code = 1 if findings or incomplete or bad else 0
    _side_files(settings, len(targets), findings, incomplete, bad, requests, code, now, console)
    return code


def _side_files(
    settings: AuditSettings,
    volumes: int,
    findings: list[Stale],
    incomplete: list[Incomplete],
    bad: int,
    requests: dict[str, int],
    code: int,
    now: datetime,
    console: Console,
) -> None:
    write_side_files(
        settings.closing,
        command="audit",
        summary={
            "volumes": volumes,
            "volumes_missing": len(findings),
            "rows_skipped": bad,
            "max_age_s": settings.max_age,
            "missing": [finding.to_dict(now) for finding in findings[:LISTED_IN_SUMMARY]],
            "groups_incomplete": [group.to_dict() for group in incomplete[:LISTED_IN_SUMMARY]],
            "requests": requests,
            "exit_code": code,
        },
        families=audit_families(volumes=volumes, missing=len(findings), groups_incomplete=len(incomplete)),
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
