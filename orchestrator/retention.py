"""The retention rules of ``prune``: which of the tool's own snapshots of a disk are kept, and what
becomes of the others.

For each selected disk, its owned snapshots (``ownership.Ownership``) are ranked newest first
(``newest_first``; an unreadable ``created_at`` counts as newest, so it is kept; one the zone cannot
place has no calendar period and is kept too). One kept by ``--keep-last N`` (the newest N), by
``--keep-within DURATION`` (younger than that) or by a calendar rule (``--keep-daily N`` ...: the newest
``available`` snapshot of each of the last N days that hold one, restic's meaning, in ``Rules.zone``) is
kept; so is the newest ``available`` one unless ``--allow-none``; so is a held one (its
``evs_snapshot_hold`` key is set: ``create --hold``, ``hold``), whatever the rules say. A kept record
(``--verbose``; always for a snapshot an earlier run sent a DELETE for, so that send ends in a record)
names the rules that kept it (``daily 2026-12-05, weekly 2026-W48``; ``hold: REASON`` first for a held
one). Held snapshots still take their place in the
rules' walk (``--keep-last`` counts them). Every other one is a candidate and gets one record naming the
rules it falls outside of: ``planned`` without ``--apply``; with it ``deleted``, ``rejected`` or
``failed`` (``deleter``); ``blocked`` (``SNAPSHOT_BUSY``) when its state cannot be deleted from. One
found held, gone or marked otherwise at its last look before its DELETE (``lastlook``) is ``kept``
(``kept_held``: rule ``hold: REASON``, written even without ``--verbose``), ``deleted`` (404) or
``refused``, and no DELETE is sent. A
snapshot already ``deleting`` is neither kept nor a candidate (``--resume`` waits for it when an earlier
run sent its DELETE). Each DELETE's ``sending`` line is written before it leaves (``deleter``): ``--resume``
looks up each snapshot an earlier run sent one for, no record settled, and the listing no longer shows
(``unlisted``): gone, it gets its ``deleted`` record; still there, it is judged as a listed one.

A snapshot group of the tool (v5, its marker tag well-formed) is kept or dropped as one unit
(``members.unit_verdicts``): its members are judged with the other snapshots of their disks, and the
group is kept whole when any member is kept (by a rule, or a hold) or is of a disk outside the
selection; otherwise all its members are candidates and the group is deleted whole, with one DELETE
(``blocked`` as a whole when the group or a member is not in a deletable state).

Every project is listed (``selection``) before anything is deleted. When the snapshots a disk keeps
fill its slots (``SNAPSHOTS_PER_DISK``), the plan warns that tonight's create will be refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time as clock
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from orchestrator.actions import Action, ActionRecord, now_iso
from orchestrator.api.views import Snapshot, SnapshotGroup
from orchestrator.defaults import SNAPSHOTS_PER_DISK
from orchestrator.deleter import DELETABLE, DELETING, EARLIER_UNDER_WAY, Deleter, Job, look_again
from orchestrator.members import BUSY, Units, dropped, scope_units, unit_job, unit_verdicts
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


PERIODS = ("hourly", "daily", "weekly", "monthly", "yearly")
"""The calendar rules, shortest period first (``--keep-hourly`` ... ``--keep-yearly``)."""


@dataclasses.dataclass(frozen=True, slots=True, eq=False, repr=False)
class Zone:
    """The time zone calendar periods are counted in: ``tzinfo`` ``None`` is the machine's local time,
    read per instant (so its DST changes are followed even without a zone name)."""

    name: str
    tzinfo: tzinfo | None = None

    def placed(self, snapshot: Snapshot) -> datetime | None:
        """The snapshot's ``created_at`` as wall time of this zone: the one place a snapshot's time is
        turned local. ``None`` when it cannot be read (``Snapshot.created``) or the zone cannot place it
        (9999-12-31T23:30 UTC is past the calendar's end in Tokyo, 0001-01-01 before its start in
        New York)."""
        moment = snapshot.created
        if moment is None:
            return None
        try:
            return moment.astimezone(self.tzinfo)
        except (OverflowError, OSError):  # OSError: the C library's local time refuses the year
            return None


UTC_ZONE = Zone("UTC", UTC)


def named_zone(name: str) -> Zone:
    """``--tz ZONE``: an IANA name (``Europe/Berlin``); ``ValueError`` when the zone database lacks it."""

    try:
        return Zone(name, ZoneInfo(name))
    except (ValueError, KeyError, OSError) as exc:  # ZoneInfoNotFoundError is a KeyError
        raise ValueError(f"{name!r} is not a zone of the time zone database (e.g. Europe/Berlin)") from exc


def local_zone() -> Zone:
    """The machine's zone: ``TZ``, else what ``/etc/localtime`` links to, named when the zone database
    knows it; else the local time of the C library, named so that two that place days differently
    never share a name (``--resume`` compares it): by the ``TZ`` string (``local (TZ=UTC+3)``, a
    POSIX rule), else by its abbreviations and offsets (``local (CET UTC+01:00, CEST UTC+02:00)``)."""

    key = os.environ.get("TZ", "").removeprefix(":")
    if key:
        with contextlib.suppress(ValueError):
            return named_zone(key)
        return Zone(f"local (TZ={key})")
    with contextlib.suppress(OSError):
        target = os.path.realpath("/etc/localtime")
        with contextlib.suppress(ValueError):
            return named_zone(target.partition("/zoneinfo/")[2])
    return Zone(
        f"local ({offsets(clock.tzname, (clock.timezone, clock.altzone), daylight=bool(clock.daylight))})"
    )


def offsets(names: tuple[str, str], west: tuple[int, int], *, daylight: bool) -> str:
    """The C library's local time (``time.tzname``, ``time.timezone``/``altzone`` in seconds west of
    UTC) as abbreviations and UTC offsets: ``CET UTC+01:00, CEST UTC+02:00``; the first alone without DST."""
    parts = []
    for name, seconds in list(zip(names, west, strict=True))[: 2 if daylight else 1]:
        hours, minutes = divmod(abs(seconds) // 60, 60)
        parts.append(f"{name} UTC{'-' if seconds > 0 else '+'}{hours:02d}:{minutes:02d}")
    return ", ".join(parts)


def period(kind: str, local: datetime) -> str:
    """The period of a local time, as a kept record names it: ``hourly 2026-12-05T14``, ``daily
    2026-12-05``, ``weekly 2026-W48`` (ISO week), ``monthly 2026-12``, ``yearly 2026``."""
    if kind == "hourly":
        label = f"{local.year:04d}-{local.month:02d}-{local.day:02d}T{local.hour:02d}"
    elif kind == "daily":
        label = f"{local.year:04d}-{local.month:02d}-{local.day:02d}"
    elif kind == "weekly":
        year, week, _ = local.isocalendar()
        label = f"{year:04d}-W{week:02d}"
    elif kind == "monthly":
        label = f"{local.year:04d}-{local.month:02d}"
    else:
        label = f"{local.year:04d}"
    return f"{kind} {label}"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class Rules:
    """The retention rules of a prune."""

    keep_last: int | None = None
    keep_within: float | None = None  # seconds
    keep_hourly: int | None = None
    keep_daily: int | None = None
    keep_weekly: int | None = None
    keep_monthly: int | None = None
    keep_yearly: int | None = None
    allow_none: bool = False
    zone: Zone = UTC_ZONE  # where the calendar periods are counted

    def calendar(self) -> list[tuple[str, int]]:
        """The calendar rules given, as (period kind, N), shortest period first."""
        counts = (self.keep_hourly, self.keep_daily, self.keep_weekly, self.keep_monthly, self.keep_yearly)
        return [(kind, n) for kind, n in zip(PERIODS, counts, strict=True) if n is not None]

    def any(self) -> bool:
        return self.keep_last is not None or self.keep_within is not None or bool(self.calendar())

    def shape(self) -> dict[str, str]:
        """The rules as the report header records them (``--resume`` refuses others); the calendar
        rules and the zone only when a calendar rule is given, so older reports resume as before."""
        shape = {
            "keep_last": str(self.keep_last),
            "keep_within": str(self.keep_within),
            "allow_none": str(self.allow_none),
        }
        if self.calendar():
            shape |= {f"keep_{kind}": str(n) for kind, n in self.calendar()}
            shape["tz"] = self.zone.name
        return shape

    def condemning(self) -> str:
        """The rule (or rules) a deleted snapshot falls outside of, as the record's ``rule``."""
        parts = []
        if self.keep_last is not None:
            parts.append(f"keep-last {self.keep_last}")
        if self.keep_within is not None:
            parts.append(f"keep-within {duration_text(self.keep_within)}")
        parts += [f"keep-{kind} {n}" for kind, n in self.calendar()]
        return " and ".join(parts)

    def judge(self, owned: list[Snapshot], now: datetime) -> list[tuple[Snapshot, list[str]]]:
        """Each owned snapshot of one disk, newest first, with the rules that keep it (none: a
        candidate): ``keep-last 6``, ``keep-within 14d``, ``daily 2026-12-05``, ..., ``newest available``.

        A calendar rule of N walks the disk's ``available`` snapshots newest first and keeps the newest
        of each of the last N periods that hold one (restic's ``--keep-daily`` ...); other states fill
        no period. A snapshot whose ``created_at`` is unreadable, or that the zone cannot place
        (``Zone.placed``), has no period: a calendar rule keeps it (``created_at unreadable``), as
        ``--keep-last`` does by ranking an unreadable one newest.
        """
        ranked = newest_first(owned)
        newest_available = next((s for s in ranked if s.status == "available"), None)
        reasons: dict[str, list[str]] = {s.id: [] for s in ranked}
        for index, snapshot in enumerate(ranked):
            seconds = age(snapshot, now)
            if self.keep_last is not None and index < self.keep_last:
                reasons[snapshot.id].append(f"keep-last {self.keep_last}")
            if self.keep_within is not None and (seconds is None or seconds < self.keep_within):
                reasons[snapshot.id].append(f"keep-within {duration_text(self.keep_within)}")
        calendar = self.calendar()
        if calendar:
            dated = []
            for snapshot in ranked:
                local = self.zone.placed(snapshot)
                if local is None:
                    reasons[snapshot.id].append("created_at unreadable")
                elif snapshot.status == "available":
                    dated.append((snapshot, local))
            for kind, count in calendar:
                seen: set[str] = set()
                for snapshot, local in dated:
                    if len(seen) >= count:
                        break
                    label = period(kind, local)
                    if label not in seen:  # the newest snapshot of a period not met yet
                        seen.add(label)
                        reasons[snapshot.id].append(label)
        if newest_available is not None and not self.allow_none:
            reasons[newest_available.id].append("newest available")
        return [(snapshot, reasons[snapshot.id]) for snapshot in ranked]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
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
    listed = []
    for scope in scopes:  # the v2 list first: a member listed there is in a group listed after it
        snapshots = await list_scope(scope, settings.policy, outcome=outcome)
        units = await scope_units(scope.route, settings.policy, outcome=outcome, listed=snapshots)
        listed.append((scope, snapshots, units))
    for scope, _, units in listed:
        if units.absent:
            action.tally.notes.append(
                f"{scope.route.name} has no snapshot groups (the v5 group list answers 404)"
            )
    counts: dict[str, Counter[str]] = defaultdict(Counter)

    def write(record: ActionRecord) -> None:
        action.write(record)
        counts[str(record.volume_id)][record.outcome.value] += 1

    for scope, snapshots, units in listed:  # --resume: DELETEs an earlier run sent, no record settled
        gone, found = await look_again(
            scope.route, unlisted(action, scope, snapshots, units), settings.policy
        )
        for record in gone:
            write(record)
        snapshots.extend(found)  # still there (a listing that lagged, or deleting): judged as listed ones
    jobs = [
        job
        for scope, snapshots, units in listed
        for job in judge_scope(settings, action, scope, snapshots, counts, write, units)
    ]
    if jobs:
        deleter = Deleter(
            policy=settings.policy,
            concurrency=settings.connection.limits.concurrency,
            wait_timeout=settings.wait_timeout,
            write=write,
            stopping=action.stopping,
            on_hold=kept_held,
            journal=action.journal,
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
    units: Units | None = None,
) -> list[Job]:
    """Records for one project's candidates (planned, blocked; kept with --verbose, or when an earlier
    run sent its DELETE) and the jobs to run."""
    units = units or Units()
    group_of = {member.id: unit for unit in units.units for member in unit.members}
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

    by_volume, others, going = _owned(settings, action, scope, snapshots, units)
    for snapshot in going:  # --resume: a DELETE an earlier run sent; waited for
        journaled = EARLIER_UNDER_WAY if snapshot.id in action.sent else None
        jobs.append(
            Job(scope.route, record(snapshot, Action.DELETED, rule=rule, error_message=journaled), sent=True)
        )
    judged = {volume_id: _judged(settings.rules, owned, now) for volume_id, owned in by_volume.items()}
    alone = {snapshot.id: reasons for verdicts in judged.values() for snapshot, reasons in verdicts}
    as_units: dict[str, list[str]] = {}
    for unit in units.units:
        as_units |= unit_verdicts(unit, alone, scope.volumes)
    for unit in dropped(units, as_units, scope.volumes):
        records = [
            record(m, Action.PLANNED, rule=rule, snapshot_group_id=unit.group.id) for m in unit.members
        ]
        job = unit_job(unit, scope.route, records, apply=settings.apply, write=write)
        jobs += [job] if job is not None else []
    for volume_id, verdicts in judged.items():
        staying = others[volume_id]
        held = 0
        for snapshot, found in verdicts:
            reasons = as_units.get(snapshot.id, found)
            held += snapshot.held
            if snapshot.id in group_of and not reasons:
                continue  # its group goes whole: recorded above
            if reasons:
                staying += 1
                counts[volume_id]["kept"] += 1
                # A DELETE an earlier run sent (its sending line) is settled by a record, kept too
                if settings.verbose or snapshot.id in action.sent:
                    grouped = group_of[snapshot.id].group.id if snapshot.id in group_of else None
                    action.write(
                        record(snapshot, Action.KEPT, rule=", ".join(reasons), snapshot_group_id=grouped)
                    )
            elif snapshot.status not in DELETABLE:
                staying += 1
                message = (
                    f"the snapshot is {snapshot.status}; only available or error snapshots can be deleted"
                )
                write(record(snapshot, Action.BLOCKED, rule=rule, error_code=BUSY, error_message=message))
            elif not settings.apply:
                write(record(snapshot, Action.PLANNED, rule=rule))
            else:
                jobs.append(Job(scope.route, record(snapshot, Action.PLANNED, rule=rule)))
        if staying >= SNAPSHOTS_PER_DISK:
            action.console.warn(slots_warning(volume_id, staying, others[volume_id], held=held))
    return jobs


def unlisted(action: Frame, scope: Scope, snapshots: list[Snapshot], units: Units) -> list[ActionRecord]:
    """The sending lines (``Frame.sent``) of this project's DELETEs that no record settled and whose
    snapshots its listing (snapshots and group members) does not show."""
    if not action.sent:
        return []
    shown = {snapshot.id for snapshot in snapshots} | units.members
    project = scope.route.project_id
    return [line for key, line in action.sent.items() if line.project_id == project and key not in shown]


def _owned(
    settings: PruneSettings, action: Frame, scope: Scope, snapshots: list[Snapshot], units: Units
) -> tuple[dict[str, list[Snapshot]], Counter[str], list[Snapshot]]:
    """One project's owned snapshots of the selected disks by disk (group members from the v5 member
    list, never the v2 list's), the snapshots of others holding a slot per disk, and (``--resume
    --apply``) the owned ones already ``deleting``."""
    ownership = Ownership(settings.name_prefix)
    members = units.members
    by_volume: dict[str, list[Snapshot]] = defaultdict(list)
    others: Counter[str] = Counter()
    going: list[Snapshot] = []
    # a member (of any group, when the v2 answer says so) is never judged alone
    gathered = [s for s in snapshots if s.id not in members and not s.snapshot_group_id]
    gathered += [m for unit in units.units if unit.group.status != DELETING for m in unit.members]
    for snapshot in gathered:
        volume_id = snapshot.volume_id
        if volume_id not in scope.volumes:
            continue
        if snapshot.id not in members and not ownership.owns(snapshot):
            if snapshot.counts_toward_limit:
                others[volume_id] += 1
            continue
        if action.book.last.get(snapshot.id) is Action.DELETED:
            continue
        if snapshot.status == DELETING:
            if settings.apply and settings.resume:
                going.append(snapshot)
            continue  # on its way out: neither kept nor a candidate
        by_volume[volume_id].append(snapshot)
    return by_volume, others, going


def _judged(rules: Rules, owned: list[Snapshot], now: datetime) -> list[tuple[Snapshot, list[str]]]:
    """The rules' verdicts on one disk's snapshots, a held one's reasons led by its hold."""
    return [
        (snapshot, [f"hold: {snapshot.hold}", *kept_by] if snapshot.held else kept_by)
        for snapshot, kept_by in rules.judge(owned, now)
    ]


def kept_held(record: ActionRecord, seen: Snapshot | SnapshotGroup) -> ActionRecord:
    """A candidate found held at its last look before its DELETE (``lastlook``): ``kept``, rule ``hold:
    REASON``, as if it had been held when listed (written with or without ``--verbose``)."""
    return dataclasses.replace(record.ending(Action.KEPT), rule=f"hold: {seen.hold}")


def slots_warning(volume_id: str, staying: int, others: int, *, held: int = 0) -> str:
    """The plan's warning when a disk keeps no free slot for tonight's ``create`` (its snapshots
    count as the service counts them: not backup-made, not ``deleting``; evs-api.md 2.8). Held
    snapshots count too, and the warning says how many there are (``release`` frees them)."""
    parts = [f"{held} of them held" if held else "", f"{others} of them not the tool's" if others else ""]
    shown = "; ".join(part for part in parts if part)
    return (
        f"disk {volume_id}: the rules keep {staying} of {SNAPSHOTS_PER_DISK} slots"
        f"{f' ({shown})' if shown else ''}: tonight's create will be refused"
    )


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
