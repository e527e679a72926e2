"""Whether the service would take a row's snapshot: the checks ``validate --online`` makes for each row
before anything is sent, and the quota check ``create`` warns by before its first create.

- The disk: it must exist (``VOLUME_NOT_FOUND``) and be ``available``, or ``in-use`` with the row's
  ``force`` (``VOLUME_IN_USE`` without it); any other state is ``VOLUME_NOT_SNAPSHOTTABLE``.
- The per-disk limit: at most ``SNAPSHOTS_PER_DISK`` manually created snapshots, counted as the service
  counts (``Snapshot.counts_toward_limit``): ``SNAPSHOT_LIMIT_REACHED``.
- The project's snapshot quota: the rows beyond what it leaves would be refused (413 ``EVS.5413``).
  Also ``SNAPSHOT_LIMIT_REACHED``: the code ``create`` records when the service refuses a row for
  either limit (``runner``), so ``validate`` names the refusal as the report will; the message says
  which limit it is.

``create`` checks nothing of the disk before sending: the service refuses an in-use disk without
force or an unsnapshottable one (400 ``EVS.5400``; an ``error`` disk 500 ``EVS.2024``), the row is
``rejected`` with the service's code and ``summary`` advises by its message; either limit as above.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import TYPE_CHECKING

from orchestrator.api import evs
from orchestrator.api.safe import remaining_quota, show_volume, volume_snapshots
from orchestrator.defaults import SNAPSHOTS_PER_DISK
from orchestrator.models import LIMIT_REACHED

if TYPE_CHECKING:
    from orchestrator.api.routes import Route
    from orchestrator.api.views import Snapshot
    from orchestrator.models import SnapshotRequest
    from orchestrator.retry import RetryPolicy

SNAPSHOTTABLE = frozenset({"available", "in-use"})


@dataclasses.dataclass(frozen=True, slots=True)
class Problem:
    """Why the service would refuse a row's snapshot: an error code and a sentence."""

    code: str
    message: str


def state_problem(status: str, *, force: bool) -> Problem | None:
    """The disk's state as a problem: in use without ``force``, or neither available nor in use."""

    if status == "in-use" and not force:
        return Problem(
            "VOLUME_IN_USE", "the disk is in-use: set force (row or --force) to snapshot it attached"
        )
    if status not in SNAPSHOTTABLE:
        return Problem("VOLUME_NOT_SNAPSHOTTABLE", f"the disk is {status}; it must be available or in-use")
    return None


def counted(snapshots: Iterable[Snapshot]) -> int:
    """How many of a disk's snapshots (as listed) the per-disk limit counts."""

    return sum(1 for snapshot in snapshots if snapshot.counts_toward_limit)


def limit_problem(snapshots: Iterable[Snapshot]) -> Problem | None:
    """The disk's snapshots (as listed) leave no room under the per-disk limit."""

    count = counted(snapshots)
    if count < SNAPSHOTS_PER_DISK:
        return None
    return Problem(
        LIMIT_REACHED,
        f"the disk already has {count} manually created snapshots (at most {SNAPSHOTS_PER_DISK}); "
        "prune old ones first",
    )


async def disk_problem(route: Route, request: SnapshotRequest, policy: RetryPolicy) -> Problem | None:
    """The row's disk problem, or ``None`` when the disk would take a snapshot; GETs only.

    Raises ``ListingFailed`` or ``TransportError`` when the disk or its snapshots cannot be read.
    """

    volume = await show_volume(route, request.volume_id, policy)
    if volume is None:
        return Problem("VOLUME_NOT_FOUND", "the disk does not exist in this project")
    found = state_problem(str(volume.status), force=request.force)
    if found is not None:
        return found
    return limit_problem(await volume_snapshots(route, request.volume_id, policy, kind=evs.Kind.CHECK))


@dataclasses.dataclass(frozen=True, slots=True)
class QuotaShort:
    """More rows than the project's snapshot quota leaves: ``over`` of them would be refused."""

    project: str
    wanted: int
    remaining: int
    code = LIMIT_REACHED

    @property
    def over(self) -> int:
        return self.wanted - self.remaining

    def problem(self) -> Problem:
        """As ``validate`` reports it (once, for the ``over`` rows)."""
        return Problem(
            self.code,
            f"project {self.project}: {self.wanted} rows would be sent but only {self.remaining} snapshots "
            f"are left in the project's quota; {self.over} would be refused "
            "(prune, or ask for a larger quota)",
        )

    def warning(self) -> str:
        """As ``create`` warns before its first create."""
        return (
            f"project {self.project}: {self.wanted} rows to send but only {self.remaining} snapshots left in "
            f"the project's quota; rows beyond it will be refused ({self.code}): prune first, or ask for more"
        )


async def quota_short(route: Route, wanted: int, policy: RetryPolicy) -> QuotaShort | None:
    """The route's project cannot take ``wanted`` more snapshots (``None``: it can, or its quota is
    unlimited or not stated). Raises ``ListingFailed`` when the quota cannot be read."""

    remaining = await remaining_quota(route, policy)
    if remaining is None or wanted <= remaining:
        return None
    return QuotaShort(project=route.project_id, wanted=wanted, remaining=remaining)
