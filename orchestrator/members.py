"""Snapshot groups as the lifecycle commands see them: a group with its members (``Unit``), listed per
project (``scope_units``), for ``cleanup``, ``prune`` and ``audit`` (``wait`` and ``rollback`` go by a
record's ``snapshot_group_id``).

- **Found**: a project's groups carrying the tool's marker tag (a run's, for ``cleanup``) come from the
  v5 group list, and each group's members from the v5 member list (``?snapshot_group_id=``): never from
  the v2 snapshot list, where members may or may not appear (evs-api.md 10). The v2 list is read
  first, so a member listed there is in a group listed after: its id is set aside
  (``Units.members``) and it is never judged, nor deleted, as a single snapshot; its hold, when the
  v2 list shows one (``hold`` sets it as v2 metadata, which the v5 member list does not show), is
  kept on the member.
- **Whole, or not at all**: a group is deleted with one ``DELETE /v5/.../snapshot-groups/{id}``
  (``deleter``), which takes its members with it; a member is never deleted alone. A held member
  holds its group, as does a hold tag on the group itself (``held``); a group or member in a state
  the service does not delete from blocks the group (``busy``).
- **A region without groups** (the v5 list answers 404 ``APIGW.0101``): no groups, and the command says
  so once; nothing else is decided from that answer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from orchestrator.actions import Action, ActionRecord
from orchestrator.api.groups import group_members, list_groups
from orchestrator.deleter import DELETABLE, DELETING, Job
from orchestrator.errors import ApiMissing, ListingFailed, RouteClosed
from orchestrator.ownership import Ownership, group_refusal

if TYPE_CHECKING:
    from orchestrator.api.routes import Route
    from orchestrator.api.views import Snapshot, SnapshotGroup
    from orchestrator.retry import RetryPolicy

GROUP_DELETABLE = DELETABLE  # a group is deleted from available or error, as a snapshot is
BUSY = "SNAPSHOT_BUSY"  # deleter's code for a state the service does not delete from


@dataclasses.dataclass(frozen=True, slots=True, eq=False, repr=False)
class Unit:
    """One snapshot group and its members as listed: deleted whole, or not at all."""

    group: SnapshotGroup
    members: tuple[Snapshot, ...]

    @property
    def volumes(self) -> frozenset[str]:
        return frozenset(member.volume_id for member in self.members)

    @property
    def held(self) -> list[str]:
        """The holds on it (its own ``evs_snapshot_hold`` tag, its members'): any one holds it whole."""
        group = [] if self.group.hold is None else [self.group.hold]
        return group + [member.hold for member in self.members if member.hold is not None]

    def busy(self) -> str | None:
        """Why the group cannot be deleted now (``None``: it can): its state, or a member's."""
        if self.group.status not in GROUP_DELETABLE:
            return f"the snapshot group is {self.group.status}"
        for member in self.members:
            if member.status not in DELETABLE:
                return f"its member {member.id} is {member.status}"
        return None

    def hold_text(self) -> str:
        return f"snapshot group {self.group.id} is held ({', '.join(sorted(set(self.held)))})"


@dataclasses.dataclass(frozen=True, slots=True, eq=False, repr=False)
class Units:
    """A project's groups of the tool, and the ids of all their members."""

    units: tuple[Unit, ...] = ()
    absent: bool = False  # the region has no snapshot groups (404 APIGW.0101 on the group list)

    @property
    def members(self) -> frozenset[str]:
        return frozenset(member.id for unit in self.units for member in unit.members)


async def scope_units(
    route: Route,
    policy: RetryPolicy,
    *,
    run_id: str | None = None,
    outcome: str,
    listed: Iterable[Snapshot] = (),
) -> Units:
    """The project's groups carrying the tool's marker (``run_id``'s, when given), with their members
    (a member's hold taken from the v2 list, ``listed``, when it shows one); raises ``ListingFailed``
    (naming ``outcome``) rather than guess."""
    holds = {snapshot.id: snapshot.hold for snapshot in listed if snapshot.held}
    try:
        try:
            groups = await list_groups(route, policy, run_id=run_id, optional=True)
        except ApiMissing:
            return Units(absent=True)
        ours = [
            group
            for group in groups
            if (
                Ownership.owns_group(group) if run_id is None else group_refusal(group, run_id=run_id) is None
            )
        ]
        units = []
        for group in ours:
            members = await group_members(route, group.id, policy)
            shown = [dataclasses.replace(m, hold=m.hold or holds.get(m.id)) for m in members]
            units.append(Unit(group, tuple(shown)))
    except (ListingFailed, RouteClosed) as exc:
        raise ListingFailed(f"cannot list the snapshot groups of {route.name}: {exc}; {outcome}") from None
    return Units(tuple(units))


def unit_verdicts(
    unit: Unit, reasons: dict[str, list[str]], selected: dict[str, int]
) -> dict[str, list[str]]:
    """``prune``'s judgement of one group as a unit: the reasons that keep each member.

    ``reasons`` holds what the rules (and holds) say of each member alone, on its own disk; a hold tag of
    the group itself (``create --hold``) keeps each member, ``hold: REASON`` first. A group is
    kept whole when any member is kept (a rule keeps it, or it is held), or when a member is of a
    disk outside the selection (the rules did not judge it): each member that nothing kept alone then
    gets the reason its group stays (``group G: kept with member S (keep-last 2)``). Otherwise every
    member is a candidate, and the group goes whole.
    """
    group = unit.group.id
    own = [f"hold: {unit.group.hold}"] if unit.group.hold is not None else []  # the group's tag holds each
    verdicts = {member.id: own + list(reasons.get(member.id, [])) for member in unit.members}
    outside = [m for m in unit.members if m.volume_id not in selected]
    kept = [m for m in unit.members if verdicts[m.id]]
    if outside:
        why = f"group {group}: a member is of disk {outside[0].volume_id}, outside the selection"
    elif kept:
        why = f"group {group}: kept with member {kept[0].id} ({verdicts[kept[0].id][0]})"
    else:
        return verdicts
    return {member_id: found or [why] for member_id, found in verdicts.items()}


def dropped(units: Units, verdicts: dict[str, list[str]], selected: dict[str, int]) -> list[Unit]:
    """The groups ``prune`` deletes whole: every member selected and kept by nothing (``verdicts``)."""
    return [
        unit
        for unit in units.units
        if unit.group.status != DELETING
        and unit.members  # a group without members holds no snapshot: no disk's retention speaks of it
        and all(m.volume_id in selected and not verdicts.get(m.id) for m in unit.members)
    ]


def unit_job(
    unit: Unit,
    route: Route,
    records: list[ActionRecord],
    *,
    apply: bool,
    write: Callable[[ActionRecord], None],
) -> Job | None:
    """A group to delete whole, with one record per member (``records``, ``planned``): each member
    ``blocked`` (``SNAPSHOT_BUSY``) when the group or a member is in a state the service does not
    delete from; written ``planned`` without ``--apply``; else the group's one deletion job."""
    busy = unit.busy()
    if busy is not None:
        message = f"{busy}; a group is deleted whole, from available or error only (run again later)"
        for item in records:
            write(item.ending(Action.BLOCKED, BUSY, message))
        return None
    if not apply:
        for item in records:
            write(item)
        return None
    return Job(route, group_record(unit, records), members=tuple(records))


def group_record(unit: Unit, records: list[ActionRecord]) -> ActionRecord:
    """The record a group's deletion job carries (keyed by the group's id, ``source_run`` its marker tag, as
    listed); only its members' are written."""
    return dataclasses.replace(
        records[0],
        key=unit.group.id,
        snapshot_id=None,
        volume_id=None,
        row=None,
        source_run=unit.group.marker,
    )
