"""``audit``'s rule (``stale_disks``): a disk passes when it has an owned ``available`` snapshot younger
than ``--max-age``; and, for snapshot groups, whether the newest group of each server is complete.

- **Group members count**: a member of a group of the tool (its marker tag, ``ownership``) counts for
  its disk when the group and the member are ``available``; members come from the v5 member list
  (``members``), never from the v2 list, so a region that hides them from the v2 list is audited the
  same. A line about a disk whose newest snapshot is a member names the group.
- **Incomplete groups**: the manifest's ``server_id`` column (``select`` writes it) says which selected
  disks are on which server. The newest group of the tool of each such server must hold a member of
  each of them; a group that lacks one (a member deleted, or a disk the group missed) is a finding:
  one line naming the group, its server and the disks without a member, and exit 1. A manifest
  without ``server_id`` makes no such check.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from orchestrator.members import Units, scope_units
from orchestrator.models import utc_now
from orchestrator.retention import age, duration_text, newest_first
from orchestrator.selection import list_scope, scopes_of

if TYPE_CHECKING:
    from datetime import datetime

    from orchestrator.api.routes import Router
    from orchestrator.api.views import Snapshot, SnapshotGroup
    from orchestrator.ownership import Ownership
    from orchestrator.retry import RetryPolicy
    from orchestrator.selection import Target

NOTHING = "nothing was audited"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
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
            group = (
                f", member of snapshot group {snapshot.snapshot_group_id}"
                if snapshot.snapshot_group_id
                else ""
            )
            return f"{snapshot.id} ({old}, created {snapshot.created_at}{group})"

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


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class Incomplete:
    """The newest group of the tool of a server, without a member of some disks the manifest puts there."""

    group: SnapshotGroup
    project_id: str
    missing: tuple[str, ...]  # the disks without a member

    def line(self) -> str:
        disks = ", ".join(self.missing)
        return (
            f"snapshot group {self.group.id} (server {self.group.server_id}, project {self.project_id}, "
            f"created {self.group.created_at}) is incomplete: no member of disk {disks}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "snapshot_group_id": self.group.id,
            "server_id": self.group.server_id,
            "project_id": self.project_id,
            "missing_volume_ids": list(self.missing),
        }


def incomplete_groups(units: Units, targets: list[Target], project_id: str) -> list[Incomplete]:
    """The newest group of each server the targets name (``server_id``) that lacks one of its disks."""
    servers: dict[str, set[str]] = {}
    for target in targets:
        if target.server_id:
            servers.setdefault(target.server_id, set()).add(target.volume_id)
    found = []
    for server, disks in sorted(servers.items()):
        ours = [unit for unit in units.units if unit.group.server_id == server]
        if not ours:
            continue
        newest = max(ours, key=lambda unit: (unit.group.created_at or "", unit.group.id))
        missing = tuple(sorted(disks - newest.volumes))
        if missing:
            found.append(Incomplete(group=newest.group, project_id=project_id, missing=missing))
    return found


async def stale_disks(
    router: Router, targets: list[Target], *, max_age: float, ownership: Ownership, policy: RetryPolicy
) -> tuple[list[Stale], list[Incomplete]]:
    """``audit``'s rule: the selected disks without an owned ``available`` snapshot younger than
    ``max_age`` seconds (every project listed once, 1000 a request), and the incomplete groups."""
    stale: list[Stale] = []
    incomplete: list[Incomplete] = []
    for scope in await scopes_of(router, targets, outcome=NOTHING):
        owned: dict[str, list[Snapshot]] = {volume: [] for volume in scope.volumes}
        listed = await list_scope(scope, policy, outcome=NOTHING)
        units = await scope_units(scope.route, policy, outcome=NOTHING)  # after the v2 list (``members``)
        members = units.members
        for snapshot in listed:
            if snapshot.volume_id in owned and snapshot.id not in members and ownership.owns(snapshot):
                owned[snapshot.volume_id].append(snapshot)
        for unit in units.units:
            for member in unit.members:
                if member.volume_id in owned:  # a member of a group not available is not available
                    usable = unit.group.status == "available"
                    shown = member if usable else dataclasses.replace(member, status=unit.group.status)
                    owned[member.volume_id].append(shown)
        mine = [t for t in targets if t.volume_id in scope.volumes]
        incomplete += incomplete_groups(units, mine, scope.route.project_id)
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
    return stale, incomplete
