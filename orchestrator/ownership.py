"""Whose a snapshot is: the tool's, a given run's, a given row's. Judged here once, for ``prune``,
``audit``, ``cleanup``, ``rollback``, ``hold``, ``release`` and create's end-of-run sweep.

- **The tool's** (``Ownership.owns``: prune, audit): its ``evs_snapshot_run`` marker is a well-formed
  run id of the tool (``RunIdentity.well_formed``: ``YYYYMMDDTHHMMSSZ-`` and six hex digits) or, with
  an explicit ``--name-prefix``, it is named with that prefix. The marker is metadata that anyone with
  EVS write access can set or copy: it identifies, it does not authenticate.
- **A run's** (``of_run``: cleanup, the sweep): it carries that run's marker.
- **A row's** (``refusal``: cleanup, rollback): it is the run's and of the row's disk.
- **Holdable** (``hold_refusal``: hold, release): a row's, when a create report named it; the tool's
  (by its marker alone: a hold never goes by ``--name-prefix``), when ``--snapshot ID`` did.
- **Still as listed** (``changed_hands``: prune's and cleanup's last look before a DELETE, ``lastlook``):
  it carries the marker its listing showed (a group: its marker tag), and is not named as a backup's.

A snapshot group (v5, ``create --consistency server``) is judged as one: by its own
``evs_snapshot_run`` tag (``Ownership.owns_group``, ``group_refusal``), never by a name prefix, and its
members by their group (``member_refusal``): a member is the tool's, or a run's, exactly when its
group is (a member's own tags are not read).

A backup-made snapshot (named ``autobk_snapshot_*`` or ``manualbk_snapshot_*``) is never the tool's,
whatever it carries. A command that finds a snapshot it was pointed at (by a report's record, or by
a run's marker) but may not touch writes a ``refused`` record; each reason has one error code,
whichever command refuses:

=================  ==============================================================================
code               reason
=================  ==============================================================================
BACKUP_SNAPSHOT    made by a backup service (its name): never the tool's, never deleted or used
NOT_THIS_RUN       it does not carry the run's marker (none, an empty one, or another run's)
OTHER_VOLUME       it carries the run's marker but is of another disk than the row's, or (a row
                   without a record) of a disk the run's report and manifest do not name
NOT_OWNED          it carries no marker of the tool (hold, release by ``--snapshot ID``)
OTHER_GROUP        a snapshot a record names as a member of group G is not a member of G (any more)
GROUP_NOT_THIS_RUN its snapshot group does not carry the run's marker tag (none, or another run's)
=================  ==============================================================================

(``OTHER_VOLUME`` replaces rollback's ``FOREIGN_SNAPSHOT``, which named the same refusal.)
"""

from __future__ import annotations

import dataclasses

from orchestrator.api.views import BACKUP_PREFIXES, Snapshot, SnapshotGroup
from orchestrator.config import RunIdentity
from orchestrator.errors import UsageError

BACKUP_SNAPSHOT = "BACKUP_SNAPSHOT"
NOT_THIS_RUN = "NOT_THIS_RUN"
OTHER_VOLUME = "OTHER_VOLUME"
NOT_OWNED = "NOT_OWNED"
OTHER_GROUP = "OTHER_GROUP"
GROUP_NOT_THIS_RUN = "GROUP_NOT_THIS_RUN"


def check_name_prefix(prefix: str | None) -> str | None:
    """``--name-prefix``: not empty (it would own everything), not a backup service's prefix."""
    if prefix is None:
        return None
    if not prefix.strip():
        raise UsageError("--name-prefix must not be empty: it would make every snapshot the tool's own")
    if prefix.startswith(BACKUP_PREFIXES):  # shorter prefixes are harmless: backup names are never owned
        raise UsageError(f"--name-prefix {prefix!r} names backup-made snapshots, which are never deleted")
    return prefix


@dataclasses.dataclass(frozen=True, slots=True, eq=False, repr=False)
class Ownership:
    """Which snapshots are the tool's own: the run marker, or an explicit name prefix; never a backup's."""

    name_prefix: str | None = None

    def owns(self, snapshot: Snapshot) -> bool:
        if snapshot.is_backup:
            return False
        if snapshot.marker is not None and RunIdentity.well_formed(snapshot.marker):
            return True
        return self.name_prefix is not None and (snapshot.name or "").startswith(self.name_prefix)

    @staticmethod
    def owns_group(group: SnapshotGroup) -> bool:
        """A group is the tool's when its ``evs_snapshot_run`` tag is a well-formed run id (no prefix)."""
        return group.marker is not None and RunIdentity.well_formed(group.marker)


def of_run(snapshot: Snapshot, run_id: str) -> bool:
    """The snapshot is run ``run_id``'s: it carries the run's marker and is not backup-made."""
    return snapshot.marked(run_id) and not snapshot.is_backup


@dataclasses.dataclass(frozen=True, slots=True, eq=False, repr=False)
class Refusal:
    """Why a snapshot may not be touched: an error code of the module docstring, and a sentence."""

    code: str
    message: str


def refusal(snapshot: Snapshot, *, run_id: str, volume_id: str, named: bool = True) -> Refusal | None:
    """Why ``snapshot`` is not run ``run_id``'s snapshot of disk ``volume_id`` (``None``: it is).

    ``named=False``: the snapshot was found by the run's marker alone, and its disk is not one the
    run's report or manifest names.
    """
    shown = f"snapshot {snapshot.id}"
    if snapshot.is_backup:
        return Refusal(
            BACKUP_SNAPSHOT, f"{shown} ({snapshot.name}) was made by a backup service; it is never the tool's"
        )
    if not snapshot.marked(run_id):
        whose = f"run {snapshot.marker}" if snapshot.marker else "no run of this tool"
        return Refusal(NOT_THIS_RUN, f"{shown} was made by {whose}, not by run {run_id}")
    if snapshot.volume_id != volume_id.lower():
        return Refusal(
            OTHER_VOLUME, f"{shown} is of disk {snapshot.volume_id}, not of the row's disk {volume_id}"
        )
    if not named:
        return Refusal(
            OTHER_VOLUME,
            f"{shown} carries run {run_id}'s marker, but its disk {snapshot.volume_id} is not one the run's "
            "report or manifest names",
        )
    return None


def group_refusal(group: SnapshotGroup, *, run_id: str) -> Refusal | None:
    """Why ``group`` is not run ``run_id``'s (``None``: it is): its marker tag must be the run's."""
    if group.marker == run_id:
        return None
    whose = f"run {group.marker}" if group.marker else "no run of this tool"
    return Refusal(GROUP_NOT_THIS_RUN, f"snapshot group {group.id} was made by {whose}, not by run {run_id}")


def member_refusal(
    member: Snapshot, group: SnapshotGroup, *, run_id: str, volume_id: str, group_id: str | None = None
) -> Refusal | None:
    """Why ``member`` of ``group`` is not run ``run_id``'s snapshot of disk ``volume_id`` (``None``: it
    is). ``group_id``: the group a record names; the member must still be in it."""
    shown = f"snapshot {member.id}"
    wanted = group_id or group.id
    if member.snapshot_group_id != wanted or group.id != wanted:
        now = f"of group {member.snapshot_group_id}" if member.snapshot_group_id else "of no group"
        return Refusal(OTHER_GROUP, f"{shown} is {now}, not a member of snapshot group {wanted}")
    if member.is_backup:
        return Refusal(
            BACKUP_SNAPSHOT, f"{shown} ({member.name}) was made by a backup service; it is never the tool's"
        )
    refused = group_refusal(group, run_id=run_id)
    if refused is not None:
        return Refusal(refused.code, f"{shown} is a member of a group not of this run: {refused.message}")
    if member.volume_id != volume_id.lower():
        return Refusal(
            OTHER_VOLUME, f"{shown} is of disk {member.volume_id}, not of the row's disk {volume_id}"
        )
    return None


def hold_refusal(
    snapshot: Snapshot, *, run_id: str | None = None, volume_id: str | None = None
) -> Refusal | None:
    """Why ``hold`` or ``release`` may not touch ``snapshot`` (``None``: it may).

    Named by a create report's row (``run_id`` and the row's ``volume_id``): the row's judgement
    (``refusal``). Named by ``--snapshot ID``: it must be the tool's by its marker (``Ownership`` without
    a name prefix), and not backup-made.
    """
    if run_id is not None and volume_id is not None:
        return refusal(snapshot, run_id=run_id, volume_id=volume_id)
    if Ownership().owns(snapshot):
        return None
    shown = f"snapshot {snapshot.id}"
    if snapshot.is_backup:
        return Refusal(
            BACKUP_SNAPSHOT, f"{shown} ({snapshot.name}) was made by a backup service; it is never the tool's"
        )
    return Refusal(NOT_OWNED, f"{shown} carries no evs_snapshot_run marker: it is not the tool's")


def changed_hands(seen: Snapshot | SnapshotGroup, marker: str | None) -> Refusal | None:
    """Why a snapshot (or group) read again just before its DELETE may not be deleted after all (``None``: it
    may): it carries another marker than ``marker``, the one its listing showed (none, or another run's),
    or, a snapshot, a backup service's name by now."""
    what = "snapshot" if isinstance(seen, Snapshot) else "snapshot group"
    if isinstance(seen, Snapshot) and seen.is_backup:
        return Refusal(
            BACKUP_SNAPSHOT,
            f"snapshot {seen.id} ({seen.name}) is named as a backup service's now; never the tool's",
        )
    if seen.marker == marker:
        return None
    was = f"run {marker}'s marker" if marker else "no marker"
    now = f"run {seen.marker}'s" if seen.marker else "none"
    code = NOT_THIS_RUN if isinstance(seen, Snapshot) else GROUP_NOT_THIS_RUN
    return Refusal(code, f"{what} {seen.id} carried {was} when listed, and {now} just before its DELETE")
