"""The deletion engine (``retention.Deleter``) and prune's selection, on the paths the happy runs skip:
wrong-state and refused DELETEs, failed confirmations, stops, unusable manifest rows, project lookups."""

from __future__ import annotations

import dataclasses
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from orchestrator.actions import Action, ActionRecord
from orchestrator.api.routes import Route
from orchestrator.deleter import Deleter, Job
from orchestrator.emulator import SeedSnapshot
from tests.helpers import (
    CLOSED_PORT,
    DELETE,
    LIST,
    PROJECT,
    QUICK,
    SHOW,
    WRONG,
    csv_manifest,
    hits,
    invoke,
    planned,
    prune,
    records,
    requests_of,
    routed,
    snap,
    start,
    volume_ids,
)


def seeded(status: str, *, project_id: str | None = None) -> SeedSnapshot:
    (disk,) = volume_ids(1, seed=901)
    return SeedSnapshot(
        id=str(uuid.uuid5(uuid.NAMESPACE_OID, f"{status}/{project_id}")),
        volume_id=disk,
        status=status,
        project_id=project_id,
    )


async def delete_all(
    url: str,
    jobs: Callable[[Route], list[Job]],
    *,
    wait_timeout: float | None = 2.0,
    stopping: Callable[[], bool] = lambda: False,
    environ: dict[str, str] | None = None,
    concurrency: int = 1,
    on_write: Callable[[ActionRecord], None] | None = None,
) -> list[ActionRecord]:
    written: list[ActionRecord] = []

    def write(record: ActionRecord) -> None:
        written.append(record)
        if on_write is not None:
            on_write(record)

    async with routed(url, environ) as route:
        deleter = Deleter(
            policy=QUICK, concurrency=concurrency, wait_timeout=wait_timeout, write=write, stopping=stopping
        )
        await deleter.run(jobs(route))
    return written


@pytest.mark.anyio
async def test_delete_of_a_busy_snapshot_is_rejected_with_its_state(emulator: Callable[..., Any]) -> None:
    """A DELETE refused with EVS.1047 looks the snapshot up: one backing-up is rejected, naming its state."""
    busy = seeded("backing-up")
    emu = await emulator(snapshots=(busy,))
    written = await delete_all(emu.url, lambda route: [Job(route, planned(busy.id))])
    [record] = written
    assert (record.outcome, record.error_code, record.http_status) == (Action.REJECTED, "EVS.1047", 400)
    assert record.error_message is not None
    assert record.error_message.endswith("(the snapshot is backing-up)")
    assert hits(emu, DELETE) == {"400": 1}
    assert hits(emu, SHOW) == {"200": 1}


@pytest.mark.anyio
async def test_delete_of_a_deleting_snapshot_waits_and_times_out(emulator: Callable[..., Any]) -> None:
    """EVS.1047 on a snapshot already deleting counts as sent; one that never goes ends DELETE_WAIT_TIMEOUT."""
    stuck = seeded("deleting")
    emu = await emulator(snapshots=(stuck,))
    written = await delete_all(emu.url, lambda route: [Job(route, planned(stuck.id))], wait_timeout=0.4)
    [record] = written
    assert (record.outcome, record.error_code) == (Action.FAILED, "DELETE_WAIT_TIMEOUT")
    assert record.error_message == "deletion accepted (202); not gone in time"
    assert hits(emu, DELETE) == {"400": 1}
    assert hits(emu, SHOW)["200"] >= 2  # one pending: looked at by GET, and seen still deleting


@pytest.mark.anyio
async def test_error_deleting_is_rejected_then_reported_when_seen_while_waiting(
    emulator: Callable[..., Any],
) -> None:
    """DELETE of an error_deleting snapshot is rejected (500 EVS.2019, final); one found so while waiting fails."""
    broken = seeded("error_deleting")
    emu = await emulator(snapshots=(broken,))
    [rejected] = await delete_all(emu.url, lambda route: [Job(route, planned(broken.id))])
    assert (rejected.outcome, rejected.error_code, rejected.http_status) == (Action.REJECTED, "EVS.2019", 500)
    assert rejected.attempts == 1
    sent = dataclasses.replace(planned(broken.id), outcome=Action.DELETED)
    [waited] = await delete_all(emu.url, lambda route: [Job(route, sent, sent=True)])
    assert (waited.outcome, waited.error_code) == (Action.FAILED, "ERROR_DELETING")
    assert hits(emu, DELETE) == {"500": 1}  # the job already sent is not sent again


@pytest.mark.anyio
async def test_server_errors_spend_the_attempts(emulator: Callable[..., Any]) -> None:
    """Every DELETE answered 5xx: the row fails after max_attempts requests, with the last status."""
    target = seeded("available")
    emu = await emulator(snapshots=(target,), fault_5xx=1.0)
    [record] = await delete_all(emu.url, lambda route: [Job(route, planned(target.id))])
    assert record.outcome is Action.FAILED
    assert record.attempts == QUICK.max_attempts
    assert record.http_status is not None
    assert record.http_status >= 500
    assert sum(hits(emu, DELETE).values()) == QUICK.max_attempts


@pytest.mark.anyio
async def test_refused_credentials_fail_one_job_and_skip_the_rest(emulator: Callable[..., Any]) -> None:
    """A 401 closes the route: the job that met it fails with the refusal, later jobs get no record."""
    first, second = seeded("available"), seeded("error")
    emu = await emulator(snapshots=(first, second))
    written = await delete_all(
        emu.url,
        lambda route: [Job(route, planned(first.id)), Job(route, planned(second.id))],
        environ=WRONG,
    )
    assert [(r.snapshot_id, r.outcome) for r in written] == [(first.id, Action.FAILED)]
    assert written[0].error_message is not None
    assert "credentials refused" in written[0].error_message
    assert sum(hits(emu, DELETE).values()) == 1
    assert [emu.world.status_of(s) for s in emu.world.snapshots.values()] == ["available", "error"]


@pytest.mark.anyio
async def test_unreachable_endpoint_fails_the_delete() -> None:
    """No connection at all: the DELETE fails with a transport error code after its attempts."""
    [record] = await delete_all(CLOSED_PORT, lambda route: [Job(route, planned(str(uuid.uuid4())))])
    assert record.outcome is Action.FAILED
    assert record.attempts == QUICK.max_attempts
    assert record.http_status is None
    assert record.error_code


@pytest.mark.anyio
async def test_a_stop_before_the_first_job_sends_nothing(emulator: Callable[..., Any]) -> None:
    """When the run is already stopping, no DELETE is sent and no record is written (--resume redoes it)."""
    target = seeded("available")
    emu = await emulator(snapshots=(target,))
    written = await delete_all(emu.url, lambda route: [Job(route, planned(target.id))], stopping=lambda: True)
    assert written == []
    assert not hits(emu, DELETE)


@pytest.mark.anyio
async def test_a_stop_while_confirming_records_the_accepted_deletions(emulator: Callable[..., Any]) -> None:
    """A stop during the wait: deletions already accepted are recorded deleted, 'not waited for'."""
    stuck = seeded("deleting")
    emu = await emulator(snapshots=(stuck,))
    stopped: list[bool] = []
    sent = dataclasses.replace(planned(stuck.id), outcome=Action.DELETED)
    gone = planned(str(uuid.uuid4()))  # answered 404: finished at once, and the stop comes then
    written = await delete_all(
        emu.url,
        lambda route: [Job(route, sent, sent=True), Job(route, gone)],
        stopping=lambda: bool(stopped),
        on_write=lambda record: stopped.append(True),
        wait_timeout=30.0,
    )
    assert [(r.snapshot_id, r.outcome, r.http_status) for r in written] == [
        (gone.snapshot_id, Action.DELETED, 404),
        (stuck.id, Action.DELETED, None),
    ]
    assert written[1].error_message == "deletion accepted (202); not waited for: the run stopped"
    assert not hits(emu, LIST)


@pytest.mark.anyio
async def test_confirmation_that_cannot_list_is_unconfirmed(emulator: Callable[..., Any]) -> None:
    """Status checks that keep failing end an accepted deletion as DELETE_UNCONFIRMED, not as deleted:
    by listing (more pending than the in-flight limit), and by GET (as few as that)."""
    stuck = [seeded("deleting"), seeded("deleting", project_id=PROJECT)]
    emu = await emulator(snapshots=tuple(stuck), fault_list=1.0)
    sent = [dataclasses.replace(planned(s.id), outcome=Action.DELETED) for s in stuck]
    written = await delete_all(emu.url, lambda route: [Job(route, r, sent=True) for r in sent])
    assert {(r.outcome, r.error_code) for r in written} == {(Action.FAILED, "DELETE_UNCONFIRMED")}
    assert len(written) == 2
    assert all("could not be confirmed" in str(r.error_message) for r in written)
    assert hits(emu, LIST) == {"503": QUICK.max_attempts}
    assert not hits(emu, SHOW)
    emu = await emulator(snapshots=tuple(stuck), fault_5xx=1.0)
    written = await delete_all(emu.url, lambda route: [Job(route, r, sent=True) for r in sent], concurrency=2)
    assert {(r.outcome, r.error_code) for r in written} == {(Action.FAILED, "DELETE_UNCONFIRMED")}
    assert sum(hits(emu, SHOW).values()) == 2 * QUICK.max_attempts
    assert not hits(emu, LIST)


# --- prune's selection -------------------------------------------------------------------------
def test_unusable_manifest_rows_are_warned_and_skipped(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """Rows naming no usable disk are each warned and skipped (exit 1); a repeated disk is selected once."""
    disk, other = volume_ids(2, seed=902)
    owned = [snap(disk, d) for d in (1, 2, 3)]
    emu = start(emulator_thread, [disk, other], [*owned, snap(other, 1), snap(other, 2)])
    rows = [
        {"volume_id": disk, "project_id": PROJECT},
        {"volume_id": disk.upper(), "project_id": PROJECT},  # the same disk again
        {"volume_id": "not-a-uuid", "project_id": PROJECT},
        {"volume_id": other, "project_id": "XYZ"},
        {"volume_id": other, "project_id": PROJECT, "region": "Not A Region"},
        {"volume_id": other},
    ]
    manifest = write("m.jsonl", "".join(orjson.dumps(row).decode() + "\n" for row in rows) + "[1, 2]\n")
    report = tmp_path / "r.jsonl"
    result = invoke(
        [
            "prune",
            str(manifest),
            "--endpoint",
            emu.url,
            "--report",
            str(report),
            "--keep-last",
            "1",
            "--apply",
        ]
    )
    assert result.exit_code == 1, result.output
    assert "volume_id 'not-a-uuid' is not a UUID" in result.output
    assert "project_id 'XYZ' is not 32 lower-case hex characters" in result.output
    assert "region 'Not A Region' is not a region id" in result.output
    assert "no project_id (row or --project-id) and no region" in result.output
    assert "row 7" in result.output  # the line that is not a row object
    assert "5 manifest rows skipped" in result.output
    assert Counter(r["outcome"] for r in records(report)) == {"deleted": 2}
    assert {r["volume_id"] for r in records(report)} == {disk}
    assert requests_of(emu.state(), DELETE) == {"202": 2}


def test_project_lookup_failures_stop_before_listing(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """Rows without a project: an unknown region or an unreachable IAM exits 3, nothing listed or deleted."""
    (disk,) = volume_ids(1, seed=903)
    emu = start(emulator_thread, [disk], [snap(disk, d) for d in (1, 2)])
    manifest = csv_manifest(write, [disk])
    base = ["prune", str(manifest), "--endpoint", emu.url, "--keep-last", "1", "--apply"]
    unknown = invoke(
        [
            *base,
            "--iam-endpoint",
            emu.url,
            "--region",
            "ap-southeast-9",
            "--report",
            str(tmp_path / "a.jsonl"),
        ]
    )
    assert unknown.exit_code == 3, unknown.output
    assert "cannot find the project of region ap-southeast-9" in unknown.output
    assert "nothing was deleted" in unknown.output
    away = invoke(
        [
            *base,
            "--iam-endpoint",
            CLOSED_PORT,
            "--region",
            "cn-north-4",
            "--report",
            str(tmp_path / "b.jsonl"),
        ]
    )
    assert away.exit_code == 3, away.output
    assert "cannot reach IAM to find a project" in away.output
    assert LIST not in emu.state()["requests"]
    assert DELETE not in emu.state()["requests"]


def test_all_volumes_refused_listing_of_disks_exits_3(
    emulator_thread: Callable[..., Any], tmp_path: Path
) -> None:
    """--all-volumes with refused credentials: 'cannot list the disks', exit 3, no snapshot listed."""
    (disk,) = volume_ids(1, seed=904)
    emu = start(emulator_thread, [disk], [snap(disk, d) for d in (1, 2)])
    result = prune(emu, None, tmp_path / "r.jsonl", "--all-volumes", "--keep-last", "1", "--apply", env=WRONG)
    assert result.exit_code == 3, result.output
    assert "cannot list the disks of" in result.output
    assert LIST not in emu.state()["requests"]
    no_project = invoke(["prune", "--all-volumes", "--keep-last", "1", "--endpoint", emu.url])
    assert no_project.exit_code == 2
    assert "--all-volumes without a MANIFEST needs --project-id or --region" in no_project.output


def test_unreadable_creation_time_is_kept_as_newest(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """A snapshot whose created_at cannot be read counts as newest: keep-last and keep-within both keep it."""
    (disk,) = volume_ids(1, seed=905)
    odd = SeedSnapshot(
        id=str(uuid.uuid4()),
        volume_id=disk,
        name="odd",
        created_at="yesterday",
        metadata={"evs_snapshot_run": "20261101T000000Z-0a0b0c"},
    )
    dated = [snap(disk, d) for d in (1, 2, 3)]
    emu = start(emulator_thread, [disk], [odd, *dated])
    manifest = csv_manifest(write, [disk])
    result = prune(emu, manifest, tmp_path / "a.jsonl", "--keep-last", "1", "--allow-none")
    assert result.exit_code == 0, result.output
    assert {r["snapshot_id"] for r in records(tmp_path / "a.jsonl")} == {s.id for s in dated}
    result = prune(emu, manifest, tmp_path / "b.jsonl", "--keep-within", "1h", "--allow-none")
    assert result.exit_code == 0, result.output
    assert {r["snapshot_id"] for r in records(tmp_path / "b.jsonl")} == {s.id for s in dated}


def test_resume_takes_up_deletions_already_under_way(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """--apply --resume: an owned snapshot already deleting is recorded deleted without a second DELETE,
    and a later --resume skips what the report already deleted."""
    (disk,) = volume_ids(1, seed=906)
    newest, old = snap(disk, 1), snap(disk, 5)
    going = snap(disk, 3, status="deleting")
    emu = start(emulator_thread, [disk], [newest, old, going])
    manifest = csv_manifest(write, [disk])
    report = tmp_path / "r.jsonl"
    plan = prune(emu, manifest, report, "--keep-last", "1")
    assert plan.exit_code == 0, plan.output
    assert [(r["snapshot_id"], r["outcome"]) for r in records(report)] == [(old.id, "planned")]
    applied = prune(emu, manifest, report, "--keep-last", "1", "--apply", "--resume", "--no-wait")
    assert applied.exit_code == 0, applied.output
    done = {r["snapshot_id"]: r["outcome"] for r in records(report)[1:]}
    assert done == {old.id: "deleted", going.id: "deleted"}
    assert requests_of(emu.state(), DELETE) == {"202": 1}  # only the old one: the other was going already
    again = prune(emu, manifest, report, "--keep-last", "1", "--apply", "--resume", "--no-wait")
    assert again.exit_code == 0, again.output
    assert len(records(report)) == 3
    assert requests_of(emu.state(), DELETE) == {"202": 1}


def test_side_files_that_cannot_be_written_are_refused_first(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """--metrics-file that is a folder, or under a file: exit 2 before any request is sent."""
    (disk,) = volume_ids(1, seed=907)
    emu = start(emulator_thread, [disk], [snap(disk, d) for d in (1, 2)])
    manifest = csv_manifest(write, [disk])
    folder = prune(emu, manifest, tmp_path / "a.jsonl", "--keep-last", "1", "--metrics-file", str(tmp_path))
    assert folder.exit_code == 2, folder.output
    assert "is a directory" in folder.output
    under_a_file = write("not-a-dir", "x") / "metrics.prom"
    blocked = prune(
        emu, manifest, tmp_path / "b.jsonl", "--keep-last", "1", "--summary-json", str(under_a_file)
    )
    assert blocked.exit_code == 2, blocked.output
    assert f"--summary-json {under_a_file}: cannot write there" in blocked.output
    assert emu.state()["requests"] == {}
