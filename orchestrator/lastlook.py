"""The last look before a DELETE of ``prune`` or ``cleanup`` (``deleter.Deleter``): a hold made after
their listing (``hold --snapshot``, which takes no lock of theirs) keeps the snapshot.

Just before a job's ``sending`` line and its DELETE, the snapshot is read again: one GET through the
route (``safe.show_snapshot``; a snapshot group: ``groups.show_group``, whose tags hold its marker and
its hold). Then it is judged as its listing judged it:

- **gone** (404): its record is ``deleted`` (``http_status`` 404), as a DELETE answered 404 is; no DELETE.
- **another marker** than its listing showed (``ownership.changed_hands``): ``refused``, left alone.
- **held** (its ``evs_snapshot_hold`` metadata key; a group: its tag, ``views.hold_in`` as at the listing):
  the record the command gives a held snapshot (``on_hold``: ``prune`` ``kept`` with rule ``hold:
  REASON``; ``cleanup`` ``blocked`` ``HELD``, or with ``--include-held`` deleted all the same).
- **unreadable** (the GET's retries spent): ``failed`` (``DELETE_UNCHECKED``), not deleted: its hold is
  unknown. A refusal of the credentials or project raises ``RouteClosed``, as the DELETE's does.

Otherwise its ``sending`` line is written and the DELETE goes. The line comes after the GET: a job that
ends here sent nothing, and no line names it. What is left: the one round trip between the GET's answer
and the DELETE's arrival; a hold made in it, from another machine, is still lost. A member's own hold is
judged from the listing only (the group is read again, not its members). The duplicate sweep of
``create`` and ``wait`` (``sweep``, ``groupsweep``) takes no last look: it deletes only the second
snapshot of a row its own run made moments before, under the run's lock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

from orchestrator.actions import Action, ActionRecord
from orchestrator.api.groups import show_group
from orchestrator.api.safe import show_snapshot
from orchestrator.errors import ListingFailed
from orchestrator.ownership import changed_hands

if TYPE_CHECKING:
    from orchestrator.api.routes import Route
    from orchestrator.api.views import Snapshot, SnapshotGroup
    from orchestrator.retry import RetryPolicy

UNCHECKED = "DELETE_UNCHECKED"
# A held snapshot's (group's) record, from the job's record and what the last look read; ``None``: it is
# deleted all the same (``cleanup --include-held``).
OnHold = Callable[[ActionRecord, "Snapshot | SnapshotGroup"], ActionRecord | None]


async def last_look(
    route: Route, record: ActionRecord, policy: RetryPolicy, on_hold: OnHold, *, group: bool = False
) -> ActionRecord | None:
    """The record a job (``record``; with ``group``, a snapshot group's) ends in without its DELETE, as the
    module docstring says; ``None``: send it."""
    try:
        seen: Snapshot | SnapshotGroup | None
        seen = await (show_group if group else show_snapshot)(route, record.key, policy)
    except ListingFailed as exc:
        why = f"it could not be read again before its DELETE (a hold unknown): {exc}; not deleted"
        return record.ending(Action.FAILED, UNCHECKED, why)
    if seen is None:
        return dataclasses.replace(record.ending(Action.DELETED), http_status=404)
    refused = changed_hands(seen, record.source_run)
    if refused is not None:
        return record.ending(Action.REFUSED, refused.code, f"{refused.message}; left alone")
    if seen.hold is not None:
        return on_hold(record, seen)
    return None
