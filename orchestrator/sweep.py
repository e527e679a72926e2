"""The end-of-run sweep: exactly one snapshot per accepted row, even when the cloud acted late.

It pages each project's snapshots (1000 a request: at most N/1000 + 1 list requests per project, plus
one lookup per volume that may hold a second snapshot of the run) and groups those carrying this
run's marker by volume, with flat memory (a Bloom filter of the volumes seen). Where a volume holds
more than one, the one the report names is kept and the others are deleted (``--keep-duplicates``:
only reported); each is a ``duplicate_deleted`` / ``duplicate_found`` side record of the row, which
does not change the row's state. Where a row's last record is not a success but its snapshot exists
(a lookup that could not confirm it, then a late commit), an ``accepted`` record with
``reconciled: true`` is appended.

The paged listing only finds candidates: it pages by offset over a list with no documented order,
which may skip an item when the list changes between two pages (evs-api.md 10). So a row whose
create was in doubt (the journal shows it sent more than once, or sent and then ``failed``) is never
judged from the listing alone: its disk is looked up by ``volume_id`` (one request, complete).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.api.safe import snapshot_pages, volume_snapshots
from orchestrator.api.views import Snapshot
from orchestrator.deleter import delete_snapshot
from orchestrator.duplicates import BloomFilter
from orchestrator.errors import RouteClosed
from orchestrator.models import Outcome, Record, utc_iso, utc_now
from orchestrator.ownership import of_run
from orchestrator.report import ReportWriter, final_records, read_records
from orchestrator.retry import RetryPolicy
from orchestrator.tally import Tally

if TYPE_CHECKING:
    from orchestrator.api.routes import Route

GONE = frozenset({"deleting", "error_deleting"})


def sweep_policy(policy: RetryPolicy) -> RetryPolicy:
    """The sweep lists and deletes with safe calls: at least 8 tries each, whatever --max-attempts says."""
    return dataclasses.replace(policy, max_attempts=max(8, policy.max_attempts))


@dataclasses.dataclass(slots=True, eq=False, repr=False)
class SweepResult:
    found: int = 0
    removed: int = 0
    reconciled: int = 0
    requests: int = 0


async def sweep(
    routes: Iterable[Route],
    *,
    run_id: str,
    report: Path,
    writer: ReportWriter,
    tally: Tally,
    policy: RetryPolicy,
    keep_duplicates: bool,
    patience: float,
    all_succeeded: bool = False,
) -> SweepResult:
    """Find and remove this run's extra snapshots in each project; append records for what it did.

    ``all_succeeded`` says every row's last record is a success (create knows it from its tally): then
    no row can need reconciling, and the report is read only for volumes that hold two snapshots.
    """

    def emit(record: Record, previous: Record | None) -> None:
        writer.write(record)
        if previous is None:
            tally.add(record)  # a side record
        else:
            tally.replace(previous, record)  # the row's state changed (found created after all)

    result = SweepResult()
    ours = await _ours(routes, run_id=run_id, report=report, policy=policy, all_succeeded=all_succeeded)
    if not ours:
        return result
    rows = {
        record.volume_id: record
        for record in final_records(report)
        if record.volume_id is not None and record.volume_id in ours
    }
    for volume_id, found in ours.items():
        record = rows.get(volume_id)
        if record is None:
            continue  # not a row of this report (another manifest with the same run id cannot exist)
        named = record.snapshot_id if record.succeeded else None
        found.sort(key=lambda item: (item[1].id != named, item[1].created_at or ""))
        keep = found[0][1]
        if not record.succeeded and record.outcome is not Outcome.SNAPSHOT_ERROR:
            emit(_reconciled(record, keep), record)
            result.reconciled += 1
        kept = keep.id
        for route, extra in found[1:]:
            result.found += 1
            if keep_duplicates:
                emit(_side(record, extra, kept, Outcome.DUPLICATE_FOUND, None), None)
                continue
            deleted, why = await delete_snapshot(route, extra.id, policy, patience=patience)
            if deleted:
                result.removed += 1
                emit(_side(record, extra, kept, Outcome.DUPLICATE_DELETED, None), None)
            else:
                emit(_side(record, extra, kept, Outcome.DUPLICATE_FOUND, ("DELETE_FAILED", why)), None)
    writer.sync()
    return result


async def _ours(
    routes: Iterable[Route], *, run_id: str, report: Path, policy: RetryPolicy, all_succeeded: bool
) -> dict[str, list[tuple[Route, Snapshot]]]:
    """The volumes that need the sweep: two snapshots of this run, or a row that did not succeed.

    Memory stays flat in the number of rows: a page at a time, a fixed-size Bloom filter of the
    volumes seen, and exact lists only for volumes that may hold two snapshots of this run (looked
    up once each) and for rows that did not succeed (their snapshot may have appeared late).
    """
    routes = [route for route in routes if route.closed is None]  # nothing can be listed on the others
    if not routes:
        return {}
    doubted = _doubted(report)
    # Volumes of rows that did not succeed, as a Bloom filter (flat memory however many rows failed):
    # a false positive only makes a settled row's volume a candidate, which the exact check drops.
    unsettled = BloomFilter(bits=1 << 23)
    any_unsettled = False
    if not all_succeeded:
        for record in final_records(report):
            if (
                record.volume_id is not None
                and not record.succeeded
                and record.outcome is not Outcome.INVALID
            ):
                unsettled.add(record.volume_id.encode())
                any_unsettled = True
    seen = BloomFilter(bits=1 << 23)
    ours: defaultdict[str, list[tuple[Route, Snapshot]]] = defaultdict(list)
    twice: list[tuple[Route, str]] = []
    for route in routes:  # open above; one refused since raises RouteClosed at its first request
        try:
            async for page in snapshot_pages(route, policy, marker=run_id):
                for snapshot in page:
                    if not _ours_alive(snapshot, run_id):
                        continue
                    volume = snapshot.volume_id
                    if any_unsettled and volume.encode() in unsettled:
                        ours[volume].append((route, snapshot))
                    elif seen.add(volume.encode()):
                        twice.append((route, volume))
        except RouteClosed:
            continue  # refused now (IAM, say): the run exits 3 and says why
    looked: set[tuple[str, str]] = set()
    for route, volume in twice:
        looked.add((route.project_id, volume))
        listed = await volume_snapshots(route, volume, policy)
        found = [(route, snapshot) for snapshot in listed if _ours_alive(snapshot, run_id)]
        if len(found) > 1:
            ours[volume] = found
    for project, volume in sorted(doubted):  # the listing may have skipped one of them: look it up
        for route in routes:
            if (project and route.project_id != project) or (route.project_id, volume) in looked:
                continue
            looked.add((route.project_id, volume))
            try:
                listed = await volume_snapshots(route, volume, policy)
            except RouteClosed:
                continue  # refused now: the run exits 3 and says why
            found = [(route, snapshot) for snapshot in listed if _ours_alive(snapshot, run_id)]
            if found:
                ours[volume] = [*(item for item in ours[volume] if item[0] is not route), *found]
    return {volume: found for volume, found in ours.items() if found}


def _doubted(report: Path) -> set[tuple[str, str]]:
    """The (project, volume) of each row whose create was in doubt: its journal shows it sent more than
    once (two snapshots are possible), or sent and then ``failed`` (one may have appeared late). The
    project is ``""`` when the row named none (every route is asked).

    Memory: a Bloom filter of the rows sent once, and exact entries only for the rows in doubt (a
    false positive only adds one lookup).
    """
    sent = BloomFilter(bits=1 << 23)
    doubted: set[tuple[str, str]] = set()
    for record in read_records(report):
        if record.volume_id is None:
            continue
        key = str(record.row).encode()
        if record.outcome is Outcome.SENDING:
            if sent.add(key):
                doubted.add((record.project_id or "", record.volume_id.lower()))
        elif record.outcome is Outcome.FAILED and key in sent:
            doubted.add((record.project_id or "", record.volume_id.lower()))
    return doubted


def _ours_alive(snapshot: Snapshot, run_id: str) -> bool:
    """The run's (``ownership.of_run``), and not on its way out."""
    return of_run(snapshot, run_id) and snapshot.status not in GONE


def _reconciled(record: Record, snapshot: Snapshot) -> Record:
    now = utc_iso(utc_now())
    return dataclasses.replace(
        record,
        outcome=Outcome.ACCEPTED,
        snapshot_id=snapshot.id,
        snapshot_status=str(snapshot.status),
        error_code=None,
        error_message=None,
        reconciled=True,
        finished_at=now,
    )


def _side(
    record: Record,
    snapshot: Snapshot,
    kept: str,
    outcome: Outcome,
    error: tuple[str, str | None] | None,
) -> Record:
    now = utc_iso(utc_now())
    message = f"a second snapshot of this run on volume {record.volume_id}; the row keeps {kept}"
    return dataclasses.replace(
        record,
        outcome=outcome,
        snapshot_id=snapshot.id,
        snapshot_status=str(snapshot.status),
        error_code="DUPLICATE" if error is None else error[0],
        error_message=message if error is None else f"{message}; delete failed: {error[1]}",
        attempts=0,
        reconciled=False,
        started_at=now,
        finished_at=now,
        elapsed_ms=0,
    )
