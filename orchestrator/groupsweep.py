"""The end-of-run sweep of ``create --consistency server``: exactly one snapshot group per server.

For each server of the run, the group list (``server_id`` and the run's marker tag) shows the run's
groups. The one the report names is kept (none named: the oldest, and the server's rows that did not
succeed get an ``accepted`` record with ``reconciled: true`` from its members); every other is a second
group of the same server and run, made by a create the cloud carried out late or twice, and is deleted
whole through ``deleter.delete`` (``--keep-duplicates``: only reported). Each extra group is told by one
``duplicate_deleted`` / ``duplicate_found`` side record per row of the server, naming the group.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.api.groups import group_members, list_groups
from orchestrator.api.views import Snapshot, SnapshotGroup
from orchestrator.deleter import Ended, delete
from orchestrator.errors import ListingFailed, RouteClosed
from orchestrator.groupplan import GONE, Server
from orchestrator.models import Outcome, Record, utc_iso, utc_now
from orchestrator.report import ReportWriter, final_records, read_records
from orchestrator.retry import RetryPolicy
from orchestrator.sweep import SweepResult, sweep
from orchestrator.tally import Tally

if TYPE_CHECKING:
    from orchestrator.api.routes import Route, Router


async def sweep_groups(
    router: Router,
    servers: Mapping[str, Server],
    *,
    run_id: str,
    report: Path,
    writer: ReportWriter,
    tally: Tally,
    policy: RetryPolicy,
    keep_duplicates: bool,
    patience: float,
) -> SweepResult:
    """Find and remove each server's second group of this run; append records for what it did."""
    result = SweepResult()
    server_of = {row: server for server, entry in servers.items() for row in entry.rows}
    rows: dict[str, list[Record]] = {}
    for record in final_records(report):
        server = server_of.get(record.row)
        if server is not None and record.outcome is not Outcome.INVALID:
            rows.setdefault(server, []).append(record)
    for server, entry in sorted(servers.items()):
        try:
            route = await router.route_for(entry.project_id, entry.region)
            found = await list_groups(route, policy, server_id=server, run_id=run_id)
        except RouteClosed:
            continue  # refused now: the run exits 3 and says why
        alive = [group for group in found if group.status not in GONE]
        if not alive:
            continue
        records = rows.get(server, [])
        named = {record.snapshot_group_id for record in records if record.succeeded}
        alive.sort(key=lambda group: (group.id not in named, group.created_at or ""))
        keep, extras = alive[0], alive[1:]
        unsettled = [r for r in records if not r.succeeded and r.outcome is not Outcome.SNAPSHOT_ERROR]
        if unsettled:
            members = await _members(route, keep, policy)
            for record in unsettled:
                reconciled = _reconciled(record, keep, members.get(str(record.volume_id)))
                writer.write(reconciled)
                tally.replace(record, reconciled)
                result.reconciled += 1
        for extra in extras:
            result.found += 1
            error: tuple[str, str | None] | None = None
            outcome = Outcome.DUPLICATE_FOUND
            if not keep_duplicates:
                deletion = await delete(route, extra.id, policy, patience=patience, group=True)
                if deletion.ended is Ended.DONE:
                    result.removed += 1
                    outcome = Outcome.DUPLICATE_DELETED
                else:
                    error = ("DELETE_FAILED", deletion.why)
            for record in records:
                side = _side(record, extra, keep.id, outcome, error)
                writer.write(side)
                tally.add(side)
    writer.sync()
    return result


async def sweep_run(
    router: Router,
    servers: Mapping[str, Server] | None,
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
    """A run's sweep, for ``create`` and ``wait``: of its single snapshots (``sweep.sweep``), or with
    ``servers`` (a ``--consistency server`` run) of its snapshot groups (``sweep_groups``)."""
    if servers is None:
        return await sweep(
            run_routes(router, report),
            run_id=run_id,
            report=report,
            writer=writer,
            tally=tally,
            policy=policy,
            keep_duplicates=keep_duplicates,
            patience=patience,
            all_succeeded=all_succeeded,
        )
    return await sweep_groups(
        router,
        servers,
        run_id=run_id,
        report=report,
        writer=writer,
        tally=tally,
        policy=policy,
        keep_duplicates=keep_duplicates,
        patience=patience,
    )


def run_routes(router: Router, report: Path) -> list[Route]:
    """Every route the run's creates went out on: those of this process, and those of an earlier process
    of the run (a resume that sends nothing has none of its own, and its sweep would list nothing)."""
    for region, project in {(r.region, r.project_id) for r in read_records(report) if r.project_id}:
        router.route_at(region, project)
    return list(router.routes.values())


async def servers_of_run(
    router: Router, records: Iterable[Record], *, run_id: str, policy: RetryPolicy
) -> dict[str, Server]:
    """The servers of a ``--consistency server`` run as its report shows them, for ``wait``'s sweep
    (``create`` has the manifest; ``wait`` has only the report): the run's groups, listed once per
    project by the marker tag, each give their server; a row belongs to the server of the group its
    record names. A row whose record names no group is left out (``create --resume`` finds it)."""
    places: dict[tuple[str | None, str | None], list[Record]] = {}
    for record in records:
        if record.snapshot_group_id:
            places.setdefault((record.project_id, record.region), []).append(record)
    servers: dict[str, Server] = {}
    for (project_id, region), named in places.items():
        try:
            route = await router.route_for(project_id, region)
            groups = await list_groups(route, policy, run_id=run_id)
        except RouteClosed:
            continue  # refused now: the run exits 3 and says why
        server_of = {group.id: group.server_id.lower() for group in groups if group.server_id}
        for record in named:
            server = server_of.get(str(record.snapshot_group_id))
            if server is not None:
                entry = servers.setdefault(server, Server(project_id=project_id, region=region))
                entry.rows.append(record.row)
    return servers


async def _members(route: Route, group: SnapshotGroup, policy: RetryPolicy) -> dict[str, Snapshot]:
    try:
        listed = await group_members(route, group.id, policy)
    except ListingFailed:
        return {}
    return {member.volume_id: member for member in listed}


def _reconciled(record: Record, group: SnapshotGroup, member: Snapshot | None) -> Record:
    return dataclasses.replace(
        record,
        outcome=Outcome.ACCEPTED,
        snapshot_id=None if member is None else member.id,
        snapshot_status=None if member is None else member.status,
        snapshot_group_id=group.id,
        error_code=None,
        error_message=None,
        reconciled=True,
        finished_at=utc_iso(utc_now()),
    )


def _side(
    record: Record, group: SnapshotGroup, kept: str, outcome: Outcome, error: tuple[str, str | None] | None
) -> Record:
    now = utc_iso(utc_now())
    message = (
        f"a second snapshot group of this run for the row's server ({group.server_id}); the row keeps {kept}"
    )
    return dataclasses.replace(
        record,
        outcome=outcome,
        snapshot_id=None,
        snapshot_status=group.status,
        snapshot_group_id=group.id,
        error_code="DUPLICATE" if error is None else error[0],
        error_message=message if error is None else f"{message}; delete failed: {error[1]}",
        attempts=0,
        reconciled=False,
        started_at=now,
        finished_at=now,
        elapsed_ms=0,
    )
