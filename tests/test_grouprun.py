"""The group runner's edges, in-process: the deadline (unconfirmed and not sent), lookups that keep
failing, a route refused before or after a group create went out, a stop, and the sweep's reconciling
of rows whose group appeared after all."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from orchestrator.emulator import ManualClock, RunningEmulator, SeedVolume
from orchestrator.groupplan import Server
from orchestrator.grouprun import GroupRunner
from orchestrator.groupsweep import sweep_groups
from orchestrator.report import ReportWriter, ResumeBook, final_records
from orchestrator.runner import RunPlan
from orchestrator.tally import Tally
from tests.helpers import (
    AKSK,
    EDGE_RUN,
    PROJECT,
    QUICK,
    SERVER,
    answering,
    call,
    create_report,
    records,
    router_for,
    snapshot_request,
    stand_in,
    volume_ids,
)

DISKS = volume_ids(2, seed=0x6A6)
GROUPS = f"/v5/{PROJECT}/snapshot-groups"


def servers() -> dict[str, Server]:
    return {SERVER: Server(rows=[1, 2], project_id=PROJECT)}


def requests() -> list[Any]:
    return [snapshot_request(DISKS[0], 1), snapshot_request(DISKS[1], 2)]


@contextlib.asynccontextmanager
async def running(url: str, path: Path, **plan: Any) -> AsyncIterator[tuple[GroupRunner, Tally]]:
    tally = Tally()
    async with router_for(url, AKSK) as router:
        with ReportWriter(str(path)) as writer:
            runner = GroupRunner(
                RunPlan(run_id=EDGE_RUN, concurrency=1, policy=QUICK, **plan),
                servers=servers(),
                router=router,
                writer=writer,
                tally=tally,
            )
            yield runner, tally


def outcomes(path: Path) -> set[tuple[str, str | None]]:
    return {(r["outcome"], r["error_code"]) for r in records(path)}


def failing(status: int) -> Callable[[web.Request], Any]:
    return answering(status, {"error": {"code": f"EVS.{status}", "message": "no"}})


async def test_lookups_that_keep_failing_leave_the_rows_unconfirmed(tmp_path: Path) -> None:
    """A create answered 503 (uncertain), then group lists that keep failing: UNCONFIRMED, never resent."""
    routes = {f"POST {GROUPS}": failing(503), f"GET {GROUPS}/detail": failing(500)}
    # a failed lookup is tried again after min(0.5, settle) s, then twice that: the settle window itself
    # does not end lookups that fail
    async with stand_in(routes) as (url, seen), running(url, tmp_path / "r.jsonl", settle=0.1) as (runner, _):
        await runner.run(requests())
    assert outcomes(tmp_path / "r.jsonl") == {("failed", "UNCONFIRMED")}
    assert seen[f"POST {GROUPS}"] == 1
    assert runner.in_doubt


async def test_a_refusal_before_and_after_a_create_went_out(tmp_path: Path) -> None:
    """A 401 on the first create is its answer (failed, named); a 401 on the lookup after an
    uncertain create leaves the rows unconfirmed."""
    refused = answering(401, {"error_code": "APIGW.0301", "error_msg": "Incorrect IAM authentication"})
    async with (
        stand_in({f"POST {GROUPS}": refused}) as (url, _),
        running(url, tmp_path / "a.jsonl") as (runner, _),
    ):
        await runner.run(requests())
    assert outcomes(tmp_path / "a.jsonl") == {("failed", "APIGW.0301")}
    routes = {f"POST {GROUPS}": failing(503), f"GET {GROUPS}/detail": refused}
    async with stand_in(routes) as (url, _), running(url, tmp_path / "b.jsonl", settle=5.0) as (runner, _):
        await runner.run(requests())
    (record,) = {r["error_message"] for r in records(tmp_path / "b.jsonl")}
    assert outcomes(tmp_path / "b.jsonl") == {("failed", "UNCONFIRMED")}
    assert record is not None
    assert "stopped sending" in record


async def test_the_deadline(clocked: Callable[..., Any], tmp_path: Path) -> None:
    """Past the deadline before sending: DEADLINE_EXCEEDED; while an uncertain create is looked up:
    UNCONFIRMED; a stopped run leaves a server not started without records."""
    emu: RunningEmulator = await clocked(
        volumes=tuple(SeedVolume(volume_id=d, server_id=SERVER) for d in DISKS), fault_drop_before=1.0
    )
    async with running(emu.url, tmp_path / "a.jsonl", deadline=0.0) as (runner, _):
        await runner.run(requests())
    assert outcomes(tmp_path / "a.jsonl") == {("failed", "DEADLINE_EXCEEDED")}
    # 1 s: the create must leave before the deadline (at load 17, 0.3 s was once too short: the row was
    # DEADLINE_EXCEEDED, never sent); every create is dropped, so the lookups run to the deadline
    async with running(emu.url, tmp_path / "b.jsonl", deadline=time.monotonic() + 1.0, settle=30.0) as (
        runner,
        _,
    ):
        await runner.run(requests())
    assert outcomes(tmp_path / "b.jsonl") == {("failed", "UNCONFIRMED")}
    async with running(emu.url, tmp_path / "c.jsonl") as (runner, _):
        runner.stop()
        await runner.run(requests())
    assert records(tmp_path / "c.jsonl") == []


async def test_the_sweep_reconciles_rows_whose_group_appeared(
    clocked: Callable[..., Any], clock: ManualClock, http: Any, tmp_path: Path
) -> None:
    """Rows that ended failed while their group existed after all: an accepted, reconciled record from
    the group's members."""
    emu: RunningEmulator = await clocked(
        volumes=tuple(SeedVolume(volume_id=d, server_id=SERVER) for d in DISKS)
    )
    body = {"snapshot_group": {"server_id": SERVER, "tags": {"evs_snapshot_run": EDGE_RUN}}}
    status, made, _ = await call(http, emu, "POST", GROUPS, body=body)
    assert status == 202
    path = create_report(
        tmp_path / "r.jsonl",
        [
            {"volume_id": d, "outcome": "failed", "error_code": "UNCONFIRMED", "snapshot_id": None}
            for d in DISKS
        ],
        EDGE_RUN,
    )
    tally = Tally()
    for record in final_records(path):
        tally.add(record)
    async with router_for(emu.url, AKSK) as router:
        with ReportWriter(str(path), resume=True) as writer:
            result = await sweep_groups(
                router,
                servers(),
                run_id=EDGE_RUN,
                report=path,
                writer=writer,
                tally=tally,
                policy=QUICK,
                keep_duplicates=True,
                patience=0.0,
            )
    assert result.reconciled == 2
    final = list(final_records(path))
    assert {(r.outcome.value, r.reconciled, r.snapshot_group_id) for r in final} == {
        ("accepted", True, made["snapshot_group_id"])
    }
    assert all(r.snapshot_id for r in final)


async def test_a_second_group_that_cannot_be_deleted_yet_is_reported(
    clocked: Callable[..., Any], clock: ManualClock, http: Any, tmp_path: Path
) -> None:
    """The sweep keeps the group the report names; a second one still creating (and no patience) is
    a duplicate_found with DELETE_FAILED on each row of the server; a server without groups is skipped."""
    emu: RunningEmulator = await clocked(
        volumes=tuple(SeedVolume(volume_id=d, server_id=SERVER) for d in DISKS), creating_seconds=1
    )
    body = {"snapshot_group": {"server_id": SERVER, "tags": {"evs_snapshot_run": EDGE_RUN}}}
    _, first, _ = await call(http, emu, "POST", GROUPS, body=body)
    clock.advance(1)
    _, second, _ = await call(http, emu, "POST", GROUPS, body=body)
    path = create_report(
        tmp_path / "r.jsonl",
        [{"volume_id": d, "snapshot_group_id": first["snapshot_group_id"]} for d in DISKS],
        EDGE_RUN,
    )
    plan = {**servers(), "0e0e0e0e-0000-4000-8000-000000000000": Server(rows=[], project_id=PROJECT)}
    async with router_for(emu.url, AKSK) as router:
        with ReportWriter(str(path), resume=True) as writer:
            result = await sweep_groups(
                router,
                plan,
                run_id=EDGE_RUN,
                report=path,
                writer=writer,
                tally=Tally(),
                policy=QUICK,
                keep_duplicates=False,
                patience=0.0,
            )
    assert (result.found, result.removed) == (1, 0)
    sides = [r for r in records(path) if r["outcome"] == "duplicate_found"]
    assert {(r["error_code"], r["snapshot_group_id"]) for r in sides} == {
        ("DELETE_FAILED", second["snapshot_group_id"])
    }
    assert len(sides) == 2


async def test_a_resumed_server_with_a_finished_row_is_looked_up_not_sent(
    clocked: Callable[..., Any], http: Any, tmp_path: Path
) -> None:
    """A kill between two records of one server: the resume finds the server's group by tag and server
    and records the other row from its member; no second group, no create for part of its disks."""
    emu: RunningEmulator = await clocked(
        volumes=tuple(SeedVolume(volume_id=d, server_id=SERVER) for d in DISKS)
    )
    body = {"snapshot_group": {"server_id": SERVER, "tags": {"evs_snapshot_run": EDGE_RUN}}}
    _, made, _ = await call(http, emu, "POST", GROUPS, body=body)
    path = create_report(
        tmp_path / "r.jsonl",
        [{"volume_id": DISKS[0], "snapshot_group_id": made["snapshot_group_id"]}],
        EDGE_RUN,
        total=2,
    )
    book = ResumeBook.load(path)
    async with router_for(emu.url, AKSK) as router:
        with ReportWriter(str(path), resume=True) as writer:
            runner = GroupRunner(
                RunPlan(run_id=EDGE_RUN, concurrency=1, policy=QUICK, settle=5.0),
                servers=servers(),
                router=router,
                writer=writer,
                tally=Tally(),
                resume=book,
            )
            await runner.run(requests())
    (added,) = [r for r in records(path) if r["row"] == 2]
    assert (added["outcome"], added["reconciled"]) == ("accepted", True)
    assert added["snapshot_group_id"] == made["snapshot_group_id"]
    assert added["snapshot_id"]
    assert len(emu.world.groups) == 1
