"""The retention rules of ``prune``: which of the tool's own snapshots of a disk are kept, and what
becomes of the others.

For each selected disk, its owned snapshots (``ownership.Ownership``) are ranked newest first
(``newest_first``; an unreadable ``created_at`` counts as newest, so it is kept). One kept by
``--keep-last N`` (the newest N) or by ``--keep-within DURATION`` (younger than that) is kept; so is
the newest ``available`` one unless ``--allow-none``; so is a held one (its ``evs_snapshot_hold`` key
is set: ``create --hold``, ``hold``), whatever the rules say, with the rule ``hold: REASON`` on its
``kept`` record. Held snapshots still take their place in the rules' count (``--keep-last`` counts
them). Every other one is a candidate and gets one
record naming the rule that condemned it: ``planned`` without ``--apply``; with it ``deleted``,
``rejected`` or ``failed`` (``deleter``); ``blocked`` (``SNAPSHOT_BUSY``) when its state cannot be
deleted from. A snapshot already ``deleting`` is neither kept nor a candidate (``--resume`` waits for
it when an earlier run sent its DELETE). Every project is listed (``selection``) before anything is
deleted.

``audit``'s rule is here too (``stale_disks``): a disk passes when it has an owned ``available``
snapshot younger than ``--max-age``.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from orchestrator.actions import Action, ActionRecord, now_iso
from orchestrator.api.views import Snapshot
from orchestrator.deleter import DELETABLE, DELETING, Deleter, Job
from orchestrator.models import utc_now
from orchestrator.ownership import Ownership
from orchestrator.selection import Scope, Target, add_all_volumes, list_scope, scopes_of

if TYPE_CHECKING:
    from pathlib import Path

    from orchestrator.api.routes import Router
    from orchestrator.config import Connection
    from orchestrator.frame import Closing, Frame
    from orchestrator.manifest import ManifestSource
    from orchestrator.retry import RetryPolicy


def age(snapshot: Snapshot, now: datetime) -> float | None:
    moment = snapshot.created
    return None if moment is None else (now - moment).total_seconds()


def duration_text(seconds: float, *, units: int = 4) -> str:
    """``604800`` -> ``7d``, ``5400`` -> ``1h30m``; ``units`` caps the parts shown (2: ``2d23h``)."""
    left = max(0, round(seconds))
    parts: list[tuple[int, str]] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, left = divmod(left, size)
        if count or parts:
            parts.append((count, unit))
    shown = [f"{count}{unit}" for count, unit in parts[:units] if count]
    return "".join(shown) or "0s"


def newest_first(snapshots: Iterable[Snapshot]) -> list[Snapshot]:
    """By ``created_at``, newest first; an unreadable ``created_at`` counts as newest (so it is kept)."""
    far = datetime.max.replace(tzinfo=UTC)
    return sorted(snapshots, key=lambda s: (s.created or far, s.id), reverse=True)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Rules:
    """The retention rules of a prune."""

    keep_last: int | None = None
    keep_within: float | None = None  # seconds
    allow_none: bool = False

    def condemning(self) -> str:
        """The rule (or rules) a deleted snapshot falls outside of, as the record's ``rule``."""
        parts = []
        if self.keep_last is not None:
            parts.append(f"keep-last {self.keep_last}")
        if self.keep_within is not None:
            parts.append(f"keep-within {duration_text(self.keep_within)}")
        return " and ".join(parts)

    def judge(self, owned: list[Snapshot], now: datetime) -> list[tuple[Snapshot, bool]]:
        """Each owned snapshot of one disk, newest first, with True when it is kept."""
        ranked = newest_first(owned)
        newest_available = next((s for s in ranked if s.status == "available"), None)
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


async def prune_scopes(
    settings: PruneSettings, router: Router, targets: list[Target], action: Frame
) -> dict[str, Counter[str]]:
    """List every scope, judge each disk, write the records; returns outcome counts per volume."""
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
        for job in judge_scope(settings, action, scope, snapshots, counts, write)
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


def judge_scope(
    settings: PruneSettings,
    action: Frame,
    scope: Scope,
    snapshots: list[Snapshot],
    counts: dict[str, Counter[str]],
    write: Callable[[ActionRecord], None],
) -> list[Job]:
    """Records for one project's candidates (planned, blocked, kept with --verbose) and the jobs to run."""
    ownership = Ownership(settings.name_prefix)
    by_volume: dict[str, list[Snapshot]] = defaultdict(list)
    jobs: list[Job] = []
    now = utc_now()
    rule = settings.rules.condemning()

    def record(snapshot: Snapshot, outcome: Action, **fields: Any) -> ActionRecord:
        stamp = now_iso()
        return ActionRecord(
            run_id=action.run_id,
            command="prune",
            key=snapshot.id,
            outcome=outcome,
            row=scope.volumes.get(snapshot.volume_id) or None,
            volume_id=snapshot.volume_id,
            project_id=scope.route.project_id,
            region=scope.region,
            snapshot_id=snapshot.id,
            snapshot_name=snapshot.name,
            created_at=snapshot.created_at,
            source_run=snapshot.marker,
            started_at=stamp,
            finished_at=stamp,
            **fields,
        )

    for snapshot in snapshots:
        volume_id = snapshot.volume_id
        if volume_id not in scope.volumes or not ownership.owns(snapshot):
            continue
        key = snapshot.id
        if action.book.last.get(key) is Action.DELETED:
            continue
        if snapshot.status == DELETING:
            if settings.apply and settings.resume and action.book.last.get(key) is not Action.DELETED:
                jobs.append(Job(scope.route, record(snapshot, Action.DELETED, rule=rule), sent=True))
            continue  # on its way out: neither kept nor a candidate
        by_volume[volume_id].append(snapshot)
    for volume_id, owned in by_volume.items():
        for snapshot, kept in settings.rules.judge(owned, now):
            if snapshot.held:
                counts[volume_id]["kept"] += 1
                if settings.verbose:
                    action.write(record(snapshot, Action.KEPT, rule=f"hold: {snapshot.hold}"))
            elif kept:
                counts[volume_id]["kept"] += 1
                if settings.verbose:
                    action.write(record(snapshot, Action.KEPT))
            elif snapshot.status not in DELETABLE:
                message = (
                    f"the snapshot is {snapshot.status}; only available or error snapshots can be deleted"
                )
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


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Stale:
    """A disk without an owned available snapshot younger than ``audit --max-age``."""

    volume_id: str
    project_id: str
    region: str | None
    newest_available: Snapshot | None
    newest: Snapshot | None  # the newest owned snapshot of any status

    def line(self, now: datetime) -> str:
        def shown(snapshot: Snapshot) -> str:
            seconds = age(snapshot, now)
            old = "of unknown age" if seconds is None else f"{duration_text(seconds, units=2)} old"
            return f"{snapshot.id} ({old}, created {snapshot.created_at})"

        text = f"volume {self.volume_id} (project {self.project_id}): "
        if self.newest_available is None:
            text += "no available snapshot of the tool"
        else:
            text += f"newest available snapshot of the tool is {shown(self.newest_available)}"
        if self.newest is not None and self.newest is not self.newest_available:
            text += f"; newest of any state is {self.newest.status}: {shown(self.newest)}"
        return text

    def to_dict(self, now: datetime) -> dict[str, Any]:
        newest = self.newest_available
        seconds = None if newest is None else age(newest, now)
        return {
            "volume_id": self.volume_id,
            "project_id": self.project_id,
            "region": self.region,
            "newest_available_id": None if newest is None else newest.id,
            "newest_available_created_at": None if newest is None else newest.created_at,
            "newest_available_age_s": None if seconds is None else round(seconds),
        }


async def stale_disks(
    router: Router, targets: list[Target], *, max_age: float, ownership: Ownership, policy: RetryPolicy
) -> list[Stale]:
    """``audit``'s rule: the selected disks without an owned ``available`` snapshot younger than
    ``max_age`` seconds (every project listed once, 1000 a request)."""
    stale: list[Stale] = []
    for scope in await scopes_of(router, targets, outcome="nothing was audited"):
        owned: dict[str, list[Snapshot]] = {volume: [] for volume in scope.volumes}
        for snapshot in await list_scope(scope, policy, outcome="nothing was audited"):
            if snapshot.volume_id in owned and ownership.owns(snapshot):
                owned[snapshot.volume_id].append(snapshot)
        now = utc_now()
        for volume_id, snapshots in owned.items():
            ranked = newest_first(snapshots)
            available = next((s for s in ranked if s.status == "available"), None)
            seconds = None if available is None else age(available, now)
            if seconds is None or seconds >= max_age:
                stale.append(
                    Stale(
                        volume_id=volume_id,
                        project_id=scope.route.project_id,
                        region=scope.region,
                        newest_available=available,
                        newest=ranked[0] if ranked else None,
                    )
                )
    return stale
