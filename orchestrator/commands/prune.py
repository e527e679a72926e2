"""``evs-snapshot prune MANIFEST``: delete the tool's own snapshots beyond a retention rule.

For each selected disk, its owned snapshots (``retention.Ownership``) are ranked newest first. One kept
by ``--keep-last N`` (the newest N) or by ``--keep-within DURATION`` (younger than that) is kept; so is
the newest ``available`` one unless ``--allow-none``. Every other one is a candidate and gets one record
naming the rule that condemned it: ``planned`` without ``--apply``; with it ``deleted``, ``rejected`` or
``failed``; ``blocked`` when its state cannot be deleted from. Every project is listed before anything
is deleted, and a failed listing stops the command (exit 3).
"""

from __future__ import annotations

import dataclasses
import sys
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from orchestrator import options
from orchestrator.cli import run

if TYPE_CHECKING:
    from collections.abc import Callable

    from orchestrator.actions import ActionRecord
    from orchestrator.api.routes import Router
    from orchestrator.config import Connection
    from orchestrator.console import Console
    from orchestrator.frame import Closing
    from orchestrator.frame import Frame as ActionRun
    from orchestrator.lock import Lock
    from orchestrator.manifest import ManifestSource
    from orchestrator.retention import Job, Scope, Target
    from orchestrator.retry import RetryPolicy


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Rules:
    """The retention rules of a prune."""

    keep_last: int | None = None
    keep_within: float | None = None  # seconds
    allow_none: bool = False

    def condemning(self) -> str:
        """The rule (or rules) a deleted snapshot falls outside of, as the record's ``rule``."""
        from orchestrator.retention import duration_text  # noqa: PLC0415

        parts = []
        if self.keep_last is not None:
            parts.append(f"keep-last {self.keep_last}")
        if self.keep_within is not None:
            parts.append(f"keep-within {duration_text(self.keep_within)}")
        return " and ".join(parts)

    def judge(self, owned: list[dict[str, Any]], now: datetime) -> list[tuple[dict[str, Any], bool]]:
        """Each owned snapshot of one disk, newest first, with True when it is kept."""
        from orchestrator.retention import age, newest_first  # noqa: PLC0415

        ranked = newest_first(owned)
        newest_available = next((s for s in ranked if s.get("status") == "available"), None)
        verdicts = []
        for index, snapshot in enumerate(ranked):
            seconds = age(snapshot, now)
            kept = (
                (self.keep_last is not None and index < self.keep_last)
                or (self.keep_within is not None and (seconds is None or seconds < self.keep_within))
                or (snapshot is newest_available and not self.allow_none)
            )
            verdicts.append((snapshot, kept))
        return verdicts


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PruneSettings:
    source: ManifestSource | None
    all_volumes: bool
    project_id: str | None
    rules: Rules
    name_prefix: str | None
    apply: bool
    wait_timeout: float | None  # None: --no-wait
    verbose: bool
    connection: Connection
    policy: RetryPolicy
    report: str
    resume: bool
    lock_file: Path | None
    closing: Closing


async def selection(settings: PruneSettings, console: Console) -> tuple[str, list[Target], int, str]:
    """What the run covers (for the lock and header), its disks, rows skipped, and the manifest digest."""
    from orchestrator.manifest import manifest_digest, spooled  # noqa: PLC0415
    from orchestrator.retention import Target, read_targets  # noqa: PLC0415
    from orchestrator.signals import in_thread  # noqa: PLC0415

    region = settings.connection.endpoints.home_region
    if settings.source is None:  # --all-volumes alone: one scope, its disks listed later
        return (
            f"all-volumes:{settings.project_id or region}",
            [Target("", settings.project_id, region, 0)],
            0,
            "",
        )
    with spooled(settings.source) as source:

        def read() -> tuple[list[Target], int, str]:
            found = read_targets(source, project_id=settings.project_id, region=region, warn=console.warn)
            return (*found, manifest_digest(source))

        targets, bad, digest = await in_thread(read)  # a signal stops a long manifest pass promptly
    return ("<stdin>" if settings.source.path == "-" else settings.source.path), targets, bad, digest


def _locks(settings: PruneSettings, what: str, digest: str) -> list[Lock]:
    """The manifest's locks, the ones ``create`` takes (for --all-volumes alone, the scope's)."""
    from orchestrator.lock import content_lock, given_lock, manifest_lock, scope_lock  # noqa: PLC0415

    if settings.source is not None:
        locks = [manifest_lock(settings.source.path, digest=digest, lock_file=settings.lock_file)]
        if settings.lock_file is None and settings.source.path != "-":
            locks.append(content_lock(digest))
        return locks
    return [given_lock(settings.lock_file) if settings.lock_file is not None else scope_lock(what)]


async def prune(settings: PruneSettings, *, console: Console) -> int:
    """Plan (and with ``--apply``, carry out) the deletions; the exit code of SPEC."""
    from orchestrator.frame import Frame  # noqa: PLC0415

    what, targets, bad, digest = await selection(settings, console)
    rules = settings.rules
    shape = {
        "keep_last": str(rules.keep_last),
        "keep_within": str(rules.keep_within),
        "allow_none": str(rules.allow_none),
        "name_prefix": settings.name_prefix or "",
        "all_volumes": str(settings.all_volumes),
        "digest": digest,
    }
    async with Frame(
        command="prune", console=console, report=settings.report, closing=settings.closing
    ) as frame:
        frame.lock(_locks(settings, what, digest))  # before anything is sent
        router = await frame.connect(settings.connection)
        frame.open_actions(source=what, shape=shape, resume=settings.resume, nothing="nothing was deleted")
        counts = await _prune(settings, router, targets, frame)
        if bad:
            frame.tally.notes.append(f"{bad} manifest rows skipped: they name no usable disk")
            frame.at_least = 1
        frame.summary["volumes"] = {volume: dict(c) for volume, c in sorted(counts.items())}
        kept = sum(c["kept"] for c in counts.values())
        frame.summary["kept"] = kept
        frame.also["kept"] = kept
    return frame.exit_code


async def _prune(
    settings: PruneSettings, router: Router, targets: list[Target], action: ActionRun
) -> dict[str, Counter[str]]:
    """List every scope, judge each disk, write the records; returns outcome counts per volume."""
    from orchestrator.deleter import Deleter  # noqa: PLC0415
    from orchestrator.retention import add_all_volumes, list_scope, scopes_of  # noqa: PLC0415

    outcome = "nothing was deleted" if settings.apply else "nothing was planned"
    scopes = await scopes_of(router, targets, outcome=outcome)
    if settings.all_volumes:
        for scope in scopes:
            scope.volumes.pop("", None)
            await add_all_volumes(scope, settings.policy, outcome=outcome)
    listed = [(scope, await list_scope(scope, settings.policy, outcome=outcome)) for scope in scopes]
    counts: dict[str, Counter[str]] = defaultdict(Counter)

    def write(record: ActionRecord) -> None:
        action.write(record)
        counts[str(record.volume_id)][record.outcome.value] += 1

    jobs = [
        job
        for scope, snapshots in listed
        for job in _judge_scope(settings, action, scope, snapshots, counts, write)
    ]
    if jobs:
        deleter = Deleter(
            policy=settings.policy,
            concurrency=settings.connection.limits.concurrency,
            wait_timeout=settings.wait_timeout,
            write=write,
            stopping=action.stopping,
        )
        with action.draining():
            await deleter.run(jobs)
    action.tally.notes.extend(per_volume_notes(counts))
    total = sum(counts.values(), Counter())
    done = ", ".join(
        f"{total[key]} {key}" for key in ("kept", "deleted", "planned") if total[key] or key != "planned"
    )
    action.tally.notes.append(f"{len(counts)} volumes with snapshots of the tool: {done}")
    return counts


def _judge_scope(
    settings: PruneSettings,
    action: ActionRun,
    scope: Scope,
    snapshots: list[dict[str, Any]],
    counts: dict[str, Counter[str]],
    write: Callable[[ActionRecord], None],
) -> list[Job]:
    """Records for one project's candidates (planned, blocked, kept with --verbose) and the jobs to run."""
    from orchestrator.actions import Action, ActionRecord, now_iso  # noqa: PLC0415
    from orchestrator.api.safe import DELETING  # noqa: PLC0415
    from orchestrator.models import utc_now  # noqa: PLC0415
    from orchestrator.retention import DELETABLE, Job, Ownership, source_run  # noqa: PLC0415

    ownership = Ownership(settings.name_prefix)
    by_volume: dict[str, list[dict[str, Any]]] = defaultdict(list)
    jobs: list[Job] = []
    now = utc_now()
    rule = settings.rules.condemning()

    def record(snapshot: dict[str, Any], outcome: Action, **fields: Any) -> ActionRecord:
        volume_id = str(snapshot.get("volume_id") or "").lower()
        stamp = now_iso()
        return ActionRecord(
            run_id=action.run_id,
            command="prune",
            key=str(snapshot.get("id")),
            outcome=outcome,
            row=scope.volumes.get(volume_id) or None,
            volume_id=volume_id,
            project_id=scope.route.project_id,
            region=scope.region,
            snapshot_id=str(snapshot.get("id")),
            snapshot_name=None if snapshot.get("name") is None else str(snapshot.get("name")),
            created_at=None if snapshot.get("created_at") is None else str(snapshot.get("created_at")),
            source_run=source_run(snapshot),
            started_at=stamp,
            finished_at=stamp,
            **fields,
        )

    for snapshot in snapshots:
        volume_id = str(snapshot.get("volume_id") or "").lower()
        if volume_id not in scope.volumes or not ownership.owns(snapshot):
            continue
        key = str(snapshot.get("id"))
        if action.book.last.get(key) is Action.DELETED:
            continue
        if snapshot.get("status") == DELETING:
            if settings.apply and settings.resume and action.book.last.get(key) is not Action.DELETED:
                jobs.append(Job(scope.route, record(snapshot, Action.DELETED, rule=rule), sent=True))
            continue  # on its way out: neither kept nor a candidate
        by_volume[volume_id].append(snapshot)
    for volume_id, owned in by_volume.items():
        for snapshot, kept in settings.rules.judge(owned, now):
            if kept:
                counts[volume_id]["kept"] += 1
                if settings.verbose:
                    action.write(record(snapshot, Action.KEPT))
            elif snapshot.get("status") not in DELETABLE:
                status = snapshot.get("status")
                message = f"the snapshot is {status}; only available or error snapshots can be deleted"
                write(
                    record(
                        snapshot, Action.BLOCKED, rule=rule, error_code="SNAPSHOT_BUSY", error_message=message
                    )
                )
            elif not settings.apply:
                write(record(snapshot, Action.PLANNED, rule=rule))
            else:
                jobs.append(Job(scope.route, record(snapshot, Action.PLANNED, rule=rule)))
    return jobs


def per_volume_notes(counts: dict[str, Counter[str]], *, shown: int = 20) -> list[str]:
    """Summary lines: snapshots kept and deleted per volume (volumes with deletions first, capped)."""
    ordered = sorted(counts.items(), key=lambda item: (item[1]["kept"] - item[1].total(), item[0]))
    notes = [
        f"volume {volume_id}: " + ", ".join(f"{n} {name}" for name, n in sorted(outcome.items()) if n)
        for volume_id, outcome in ordered[:shown]
    ]
    if len(ordered) > shown:
        notes.append(f"... and {len(ordered) - shown} more volumes")
    return notes


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
    """Delete the tool's own snapshots beyond --keep-last / --keep-within (plans unless --apply)."""
    from orchestrator.config import check_project_id  # noqa: PLC0415
    from orchestrator.console import Console  # noqa: PLC0415
    from orchestrator.errors import UsageError  # noqa: PLC0415
    from orchestrator.frame import default_report  # noqa: PLC0415
    from orchestrator.manifest import ManifestSource  # noqa: PLC0415
    from orchestrator.retention import check_name_prefix  # noqa: PLC0415

    if keep_last is None and keep_within is None:
        raise UsageError("prune needs a retention rule: --keep-last N and/or --keep-within DURATION")
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
        rules=Rules(keep_last=keep_last, keep_within=keep_within, allow_none=allow_none),
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
