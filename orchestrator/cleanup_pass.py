"""Cleaning up one create run: where its snapshots may be (``Search``), and one pass (``Pass``) that
lists those projects, judges each snapshot found and deletes the run's (``cleanup``'s policy; the
create report is read by ``createrun``, whose snapshot is whose by ``ownership``, deletions by
``deleter``).

A snapshot is the run's when it carries the run's ``evs_snapshot_run`` marker (SPEC, "Snapshot
identity"); the report tells which run, which disks and which projects, but not every snapshot: a
create killed with requests in flight, or a report cut mid-line, made snapshots that no record names.
So cleanup goes by the marker, not by the records:

- **The disks**: those the report's records name and, when rows have no record, those the run's
  manifest names: the file the header names (``manifest``, relative to the current directory when it
  was given so), read only when it is there and its digest is the header's. When it is missing,
  unreadable or changed, the disks are unknown: every snapshot carrying this run's marker in the
  projects searched is deleted, whatever its disk (the run id is unique to the run, so such a
  snapshot is still the run's), and a warning says so.
- **The projects**: those of the records, of the manifest's disks, and, for rows without a record,
  the create's ``--project-id`` / region (from the header) or cleanup's own ``--project-id``. Each is
  listed once (1000 snapshots a request) before anything is deleted.
- **What goes**: every listed snapshot with this run's marker on one of those disks, and the snapshot
  a row's last record names (a recorded snapshot the listing does not show is looked up once: 404
  means already gone, counted as deleted). A recorded snapshot without this run's marker, or of
  another row's disk, is ``refused`` and left alone; so is a snapshot with the marker on a disk the
  manifest does not name (``OTHER_VOLUME``; the codes are ``ownership``'s). A held snapshot (its
  ``evs_snapshot_hold`` key is set: ``create --hold``, ``hold``) is ``blocked`` with ``HELD`` and left
  alone, unless ``--include-held``; so is one found held at its last look before its DELETE
  (``lastlook``: after the listing; ``blocked_held``), and no DELETE is sent for it.
- **Snapshot groups** (a ``create --consistency server`` run: its records name a ``snapshot_group_id``,
  or its header's shape says ``consistency: server``): the run's groups are those carrying the run's
  marker tag (v5 group list), and those the records name; each goes whole, with one group DELETE, or
  not at all (``members``). Each member gets its own record (with ``snapshot_group_id``). A group
  named by a record without the run's tag is ``refused`` (``GROUP_NOT_THIS_RUN``); a group with a
  member on a disk the report and manifest do not name is ``refused`` (``OTHER_VOLUME``); one held
  member blocks the whole group (``HELD``, unless ``--include-held``); a group or member not in a
  deletable state blocks it (``SNAPSHOT_BUSY``); a named group already gone is ``deleted`` (404).
- **DELETEs an earlier run sent** (``--resume``): each DELETE's ``sending`` line is written before it
  leaves (``deleter``); a snapshot one was sent for, no record settled, and this pass did not meet (the
  listings no longer show it) is looked up (``Pass.sends``): gone, it gets its ``deleted`` record
  (``EARLIER_DELETE``); still there, it is judged as a listed one.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from orchestrator.actions import Action, ActionRecord, now_iso
from orchestrator.api.groups import show_group
from orchestrator.api.safe import show_snapshot
from orchestrator.api.views import Snapshot, SnapshotGroup
from orchestrator.createrun import CreateRun, manifest_disks
from orchestrator.deleter import (
    DELETABLE,
    DELETING,
    EARLIER_DELETE,
    EARLIER_UNDER_WAY,
    Deleter,
    Job,
    look_again,
)
from orchestrator.errors import UsageError
from orchestrator.members import BUSY, Unit, Units, group_record, scope_units, unit_job
from orchestrator.models import utc_iso
from orchestrator.ownership import OTHER_VOLUME, group_refusal, of_run, refusal
from orchestrator.selection import Scope, Target, list_scope, scopes_of

HELD = "HELD"  # a held snapshot, blocked without --include-held

if TYPE_CHECKING:
    from orchestrator.api.routes import Router
    from orchestrator.config import Connection
    from orchestrator.console import Console
    from orchestrator.frame import Closing, Frame
    from orchestrator.models import Record
    from orchestrator.retry import RetryPolicy


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class CleanupSettings:
    source: Path  # the create report
    apply: bool
    wait_timeout: float | None  # None: --no-wait
    connection: Connection
    policy: RetryPolicy
    report: str
    resume: bool
    lock_file: Path | None
    closing: Closing
    project_id: str | None = None  # of rows without a record, when the create report does not say
    include_held: bool = False  # delete held snapshots too (else blocked with HELD)


async def until_quiet(settings: CleanupSettings, run_: CreateRun, console: Console) -> str | None:
    """Rows whose create left without an answer for sure (in flight at a kill, or ``failed``) may still
    get their snapshot until the run's window (``--timeout`` + ``--settle``) has passed since that send.
    With ``--apply`` cleanup waits until then before it looks, so that exit 0 means nothing of the run
    is left; a plan does not wait, and returns the note that says so (exit 1)."""

    quiet = run_.quiet_at()
    left = 0.0 if quiet is None else quiet - time.time()
    if quiet is None or left <= 0:
        return None
    when = utc_iso(datetime.fromtimestamp(quiet, UTC))
    rows = f"{run_.doubtful_rows} row{'s' if run_.doubtful_rows > 1 else ''}"
    why = (
        f"{rows} of run {run_.run_id} left without an answer for sure; "
        f"their snapshots may appear until {when}"
    )
    if not settings.apply:
        return f"{why}: this plan may miss them; plan again after then (exit 1)"
    console.event("waiting", f"{why}: waiting {left:.0f}s before looking", seconds=round(left, 1))
    await anyio.sleep(left)
    return None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class Search:
    """Where cleanup looks for the run's snapshots: the disks named, and the project of rows that name
    none; ``anywhere`` (a warning) when rows have no record and the manifest cannot tell their disks."""

    disks: list[Target]
    rows: int  # the header's
    fallback: tuple[str | None, str | None]  # project and region of rows that name neither
    missing: int
    rows_text: str
    anywhere: str | None

    @classmethod
    def of(cls, settings: CleanupSettings, run_: CreateRun) -> Search:

        disks = [Target(str(r.volume_id).lower(), r.project_id, r.region, r.row) for r in run_.sent]
        shape = run_.header.shape
        project = shape.get("project_id") or settings.project_id
        region = shape.get("region") or settings.connection.endpoints.home_region
        missing, rows_text = run_.unrecorded()
        anywhere = None
        if missing:
            named, why = manifest_disks(run_.header, project_id=project, region=region)
            if named is not None:
                disks += named
            else:
                fate = "deleted" if settings.apply else "planned for deletion"
                anywhere = (
                    f"{why}: the disks of the {missing} rows without a record are unknown, so every "
                    f"snapshot carrying run {run_.run_id}'s marker in the projects searched is {fate}, "
                    "whatever its disk"
                )
                if project is None and region is None and not disks:
                    raise UsageError(
                        f"{settings.source}: no record and no option names a project to search for run "
                        f"{run_.run_id}'s snapshots: give --project-id (or --region); nothing was deleted"
                    )
        return cls(
            disks=disks,
            rows=run_.header.rows,
            fallback=(project, region),
            missing=missing,
            rows_text=rows_text,
            anywhere=anywhere,
        )

    def notes(self, run_id: str) -> list[str]:
        """The summary line about rows without a record and how their snapshots were found."""
        if not self.missing:
            return []
        where = (
            "on any disk of the projects searched (the manifest could not tell their disks)"
            if self.anywhere
            else "on the disks the manifest names"
        )
        return [
            f"{self.missing} of {self.rows} rows have no record ({self.rows_text}): their snapshots, if any, "
            f"were found by run {run_id}'s marker {where}"
        ]


def held_why(held: Snapshot | Unit) -> str:
    """The message of a ``HELD`` record: a held snapshot's, or each member's of a held group."""
    if isinstance(held, Snapshot):
        return f"the snapshot is held ({held.hold}); left alone (--include-held deletes it)"
    return f"{held.hold_text()}: the whole group is left alone (--include-held deletes it)"


class Pass:
    """One cleanup pass: list the projects, judge each snapshot found (write its record, or queue its
    deletion), delete, and count the run's snapshots that are left."""

    def __init__(self, settings: CleanupSettings, action: Frame, run_id: str) -> None:
        self.settings = settings
        self.action = action
        self.run_id = run_id
        self.outcome = "nothing was deleted" if settings.apply else "nothing was planned"
        self.ours: set[str] = set()  # the run's snapshots found (by id)
        self.going: set[str] = set()  # those deleted, deleting, or (in a plan) planned
        self.looked: set[str] = set()  # every snapshot judged (or settled) by this pass, by id
        self.jobs: list[Job] = []

    def write(self, record: ActionRecord) -> None:
        self.action.write(record)
        if record.outcome is Action.DELETED or (record.outcome is Action.PLANNED and not record.error_code):
            self.going.add(record.key)

    async def run(self, router: Router, run_: CreateRun, search: Search) -> int:
        """Carry out the pass; the number of the run's snapshots found that are not going."""
        targets = list(search.disks)
        if search.anywhere is not None and search.fallback != (None, None):
            targets.append(Target("", *search.fallback, 0))  # its project is searched; "" names no disk
        scopes = await scopes_of(router, targets, outcome=self.outcome)
        listed: dict[tuple[int, str], Snapshot] = {}
        ours: dict[tuple[int, str], list[Snapshot]] = {}
        grouped = run_.header.shape.get("consistency") == "server" or any(
            r.snapshot_group_id for r in run_.sent
        )
        units: dict[int, Units] = {}
        for scope in scopes:
            scope.volumes.pop("", None)
            items = await list_scope(scope, self.settings.policy, outcome=self.outcome)
            if grouped:  # after the v2 list: a member listed there is in a group listed now
                units[id(scope.route)] = await scope_units(
                    scope.route, self.settings.policy, run_id=self.run_id, outcome=self.outcome, listed=items
                )
            members = units[id(scope.route)].members if grouped else frozenset()
            for item in items:
                if item.id in members or item.snapshot_group_id:
                    continue  # a group member: judged with its group, below
                listed[(id(scope.route), item.id)] = item
                if of_run(item, self.run_id):
                    self.ours.add(item.id)
                    ours.setdefault((id(scope.route), item.volume_id), []).append(item)
        by_route = {id(scope.route): scope for scope in scopes}
        claimed: set[str] = set()
        for row in run_.sent:
            route = await router.route_for(row.project_id, row.region)  # known by now: no request
            scope = by_route[id(route)]
            if row.snapshot_group_id:
                continue  # its group's, below
            volume = str(row.volume_id).lower()
            found: dict[str, Snapshot | None] = {s.id: s for s in ours.get((id(scope.route), volume), [])}
            claimed |= set(found)
            if row.snapshot_id and row.snapshot_id not in found:  # the recorded one, checked like the others
                found[row.snapshot_id] = listed.get((id(scope.route), row.snapshot_id))
            target = Target(volume, row.project_id, row.region, row.row)
            for snapshot_id, snapshot in found.items():
                await self.judge(scope, target, row.name, snapshot_id, snapshot)
        for (route_id, volume), items in ours.items():  # rows without a record: found by the marker alone
            scope = by_route[route_id]
            first = scope.volumes.get(volume)
            named = first is not None or search.anywhere is not None
            target = Target(volume, scope.route.project_id, scope.region, first or 0)
            for item in items:
                if item.id not in claimed:
                    await self.judge(scope, target, None, item.id, item, named=named)
        if grouped:
            await self.groups(router, run_, search, by_route, units)
        await self.sends(by_route)
        if self.jobs:
            deleter = Deleter(
                policy=self.settings.policy,
                concurrency=self.settings.connection.limits.concurrency,
                wait_timeout=self.settings.wait_timeout,
                write=self.write,
                stopping=self.action.stopping,
                on_hold=self.blocked_held,
                journal=self.action.journal,
            )
            with self.action.draining():
                await deleter.run(self.jobs)
        return len(self.ours - self.going)

    async def sends(self, by_route: dict[int, Scope]) -> None:
        """``--resume``: the DELETEs an earlier run sent (``Frame.sent``) that no record settled, of
        snapshots this pass did not meet (the listings no longer show them), looked up: gone, each gets
        its ``deleted`` record; still there, it is judged (a group's member: with its group, not here)."""
        left = [line for key, line in self.action.sent.items() if key not in self.looked]
        for scope in by_route.values() if left else ():
            lines = {line.key: line for line in left if line.project_id == scope.route.project_id}
            gone, found = await look_again(scope.route, lines.values(), self.settings.policy)
            for record in gone:
                self.write(record)
            for snapshot in [found_ for found_ in found if not found_.snapshot_group_id]:
                line = lines[snapshot.id]
                target = Target(str(line.volume_id), line.project_id, line.region, line.row or 0)
                await self.judge(scope, target, line.snapshot_name, snapshot.id, snapshot)

    async def groups(
        self,
        router: Router,
        run_: CreateRun,
        search: Search,
        by_route: dict[int, Scope],
        units: dict[int, Units],
    ) -> None:
        """The run's snapshot groups: those found by the run's marker tag, and those the records name."""
        rows: dict[str, list[Record]] = {}  # group id -> the records naming it
        for row in run_.sent:
            if row.snapshot_group_id:
                rows.setdefault(row.snapshot_group_id, []).append(row)
        for route_id, found in units.items():
            scope = by_route[route_id]
            for unit in found.units:
                self.judge_group(scope, unit, rows.pop(unit.group.id, []), search)
        for group_id, named in rows.items():  # named by records, not found by the run's tag
            route = await router.route_for(named[0].project_id, named[0].region)
            scope = by_route[id(route)]
            group = await show_group(route, group_id, self.settings.policy)
            refused = None if group is None else group_refusal(group, run_id=self.run_id)
            for row in named:
                member = Snapshot(
                    id=str(row.snapshot_id), volume_id=str(row.volume_id).lower(), name=row.name
                )
                target = Target(member.volume_id, row.project_id, row.region, row.row)
                self.looked.add(member.id)
                if self.action.book.last.get(member.id) in (Action.DELETED, Action.REFUSED):
                    continue
                if refused is None:  # gone: its members went with it
                    fields: dict[str, Any] = {
                        "http_status": 404,
                        "error_message": "its snapshot group is gone (404)",
                    }
                    self.write(self.record(scope, target, member, group_id, Action.DELETED, **fields))
                else:
                    message = f"{refused.message}; left alone"
                    self.write(
                        self.record(
                            scope,
                            target,
                            member,
                            group_id,
                            Action.REFUSED,
                            error_code=refused.code,
                            error_message=message,
                        )
                    )

    def judge_group(self, scope: Scope, unit: Unit, named: list[Record], search: Search) -> None:
        """Write the records of one group's members (refused, blocked, planned) or queue its deletion."""
        if not unit.members:
            return  # it holds no snapshot of the run: nothing to delete, and no record to write
        rows = {str(row.volume_id).lower(): row.row for row in named}
        group_id = unit.group.id
        targets = {
            member.id: Target(
                member.volume_id,
                scope.route.project_id,
                scope.region,
                rows.get(member.volume_id) or scope.volumes.get(member.volume_id) or 0,
            )
            for member in unit.members
        }
        self.ours |= set(targets)
        self.looked |= set(targets)
        last = self.action.book.last
        if all(last.get(member.id) is Action.DELETED for member in unit.members):
            self.going |= set(targets)
            return
        if any(last.get(member.id) is Action.REFUSED for member in unit.members):
            return  # --resume: settled
        unnamed = [m.volume_id for m in unit.members if not targets[m.id].row and search.anywhere is None]

        def each(outcome: Action, **fields: Any) -> list[ActionRecord]:
            return [self.record(scope, targets[m.id], m, group_id, outcome, **fields) for m in unit.members]

        if unnamed:
            message = (
                f"snapshot group {group_id} carries run {self.run_id}'s marker, but its member of disk "
                f"{unnamed[0]} is of a disk the run's report and manifest do not name; the group is left "
                "alone"
            )
            for record in each(Action.REFUSED, error_code=OTHER_VOLUME, error_message=message):
                self.write(record)
            return
        if unit.held and not self.settings.include_held:
            for record in each(Action.BLOCKED, error_code=HELD, error_message=held_why(unit)):
                self.write(record)
            return
        if unit.group.status == DELETING:
            if self.settings.apply:
                records = each(Action.DELETED)
                self.jobs.append(
                    Job(scope.route, group_record(unit, records), sent=True, members=tuple(records))
                )
            else:
                self.going |= set(targets)
            return
        queued = unit_job(
            unit, scope.route, each(Action.PLANNED), apply=self.settings.apply, write=self.write
        )
        self.jobs += [queued] if queued is not None else []

    def blocked_held(self, record: ActionRecord, seen: Snapshot | SnapshotGroup) -> ActionRecord | None:
        """A snapshot (group) found held at its last look before its DELETE (``lastlook``): ``blocked``
        ``HELD``, as if held when listed; ``None`` (deleted all the same) with ``--include-held``."""
        if self.settings.include_held:
            return None
        held = seen if isinstance(seen, Snapshot) else Unit(seen, ())
        return record.ending(Action.BLOCKED, HELD, held_why(held))

    def record(
        self, scope: Scope, target: Target, member: Snapshot, group_id: str, outcome: Action, **fields: Any
    ) -> ActionRecord:
        """A group member's record."""
        stamp = now_iso()
        return ActionRecord(
            run_id=self.action.run_id,
            command="cleanup",
            key=member.id,
            outcome=outcome,
            row=target.row or None,
            volume_id=member.volume_id,
            project_id=scope.route.project_id,
            region=target.region,
            snapshot_id=member.id,
            snapshot_group_id=group_id,
            snapshot_name=member.name,
            created_at=member.created_at,
            source_run=self.run_id,
            started_at=stamp,
            finished_at=stamp,
            **fields,
        )

    async def judge(
        self,
        scope: Scope,
        target: Target,
        name: str | None,
        snapshot_id: str,
        snapshot: Snapshot | None,
        *,
        named: bool = True,
    ) -> None:
        """Write the snapshot's record (planned, refused, blocked, or deleted when already gone) or queue
        its deletion; ``named``: its disk is one the report or the manifest names."""
        self.looked.add(snapshot_id)
        done = self.action.book.last.get(snapshot_id)
        if done is Action.DELETED:
            self.going.add(snapshot_id)
        if done in (Action.DELETED, Action.REFUSED):  # --resume: already settled
            return
        route = scope.route
        if snapshot is None:  # not listed: a GET tells gone (404) from a listing that lags
            snapshot = await show_snapshot(route, snapshot_id, self.settings.policy)
        stamp = now_iso()

        def record(outcome: Action, **fields: Any) -> ActionRecord:
            return ActionRecord(
                run_id=self.action.run_id,
                command="cleanup",
                key=snapshot_id,
                outcome=outcome,
                row=target.row or None,
                volume_id=target.volume_id,
                project_id=route.project_id,
                region=target.region,
                snapshot_id=snapshot_id,
                snapshot_name=(snapshot.name if snapshot is not None else None) or name or None,
                created_at=None if snapshot is None else snapshot.created_at,
                source_run=self.run_id if snapshot is None else snapshot.marker,
                started_at=stamp,
                finished_at=stamp,
                **fields,
            )

        journaled = snapshot_id in self.action.sent  # an earlier run's DELETE, no record settled
        if snapshot is None:
            message = EARLIER_DELETE if journaled else "already gone (404)"
            self.write(record(Action.DELETED, http_status=404, error_message=message))
            return
        refused = refusal(snapshot, run_id=self.run_id, volume_id=target.volume_id, named=named)
        if refused is not None:
            message = f"{refused.message}; left alone"
            self.write(record(Action.REFUSED, error_code=refused.code, error_message=message))
            return
        if snapshot.held and not self.settings.include_held:
            self.write(record(Action.BLOCKED, error_code=HELD, error_message=held_why(snapshot)))
            return
        if snapshot.status == DELETING:
            if self.settings.apply:
                under_way = EARLIER_UNDER_WAY if journaled else None
                self.jobs.append(Job(route, record(Action.DELETED, error_message=under_way), sent=True))
            else:
                self.going.add(snapshot_id)
            return
        if snapshot.status not in DELETABLE:
            busy = f"the snapshot is {snapshot.status}"
            message = f"{busy}; only available or error snapshots can be deleted (run again later)"
            self.write(record(Action.BLOCKED, error_code=BUSY, error_message=message))
        elif self.settings.apply:
            self.jobs.append(Job(route, record(Action.PLANNED)))
        else:
            self.write(record(Action.PLANNED))
