"""The snapshot quota: read before a create run (warned when short) and by validate --online, bounded by --deadline."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.api.safe import remaining_quota
from orchestrator.emulator import SeedSnapshot
from orchestrator.retry import RetryPolicy
from tests.helpers import (
    FAST_RETRIES,
    PROJECT,
    QUICK,
    answering,
    api_seeded,
    cli_args,
    create_args,
    csv_manifest,
    invoke,
    last_per_row,
    records,
    requests_of,
    routed,
    stand_in,
    volume_ids,
)

QUOTA = "GET /v2/{project_id}/os-quota-sets/{target_project_id}"


FEW_RETRIES = ("--max-attempts", "2", "--backoff-initial", "0.01")


async def test_a_quota_without_usage_figures_is_unknown() -> None:
    """A service that answers the quota as a bare number (no usage): the quota is unknown (None)."""
    bare = answering(200, {"quota_set": {"id": PROJECT, "snapshots": 10}})
    quota = {f"GET /v2/{PROJECT}/os-quota-sets/{PROJECT}": bare}
    async with stand_in(quota) as (url, seen), routed(url) as route:
        assert await remaining_quota(route, QUICK) is None
    assert sum(seen.values()) == 1


def test_create_quota_check_cut_short_by_the_deadline(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """A quota check slower than --deadline is given up with a warning; the rows then end
    DEADLINE_EXCEEDED and no snapshot is created."""
    emu = emulator_thread(any_volume=True, latency_ms=400)
    manifest = csv_manifest(write, volume_ids(2, seed=704))
    report = tmp_path / "r.jsonl"
    result = invoke(create_args(emu.url, manifest, report, *FAST_RETRIES, deadline="0.1s"))
    assert result.exit_code == 1, result.stderr
    assert "the project's snapshot quota did not answer within" in result.stderr
    assert {(r["outcome"], r["error_code"]) for r in records(report)} == {("failed", "DEADLINE_EXCEEDED")}
    assert emu.state()["snapshots"] == []


@pytest.mark.no_cover
def test_validate_online_names_rows_beyond_the_project_quota(
    emulator_thread: Callable[..., Any], write: Callable[..., Path]
) -> None:
    """--online: three good rows and one snapshot left in the project's quota: SNAPSHOT_LIMIT_REACHED (the
    code create records for the service's refusal), exit 1."""
    ids = volume_ids(3, seed=711)
    emu = emulator_thread(any_volume=True, snapshot_quota=1)
    manifest = csv_manifest(write, ids)
    args = [*cli_args("validate", manifest, online=True, endpoint=emu.url, project_id=PROJECT), *FEW_RETRIES]
    result = invoke(args)
    assert result.exit_code == 1, result.output
    assert (
        f"SNAPSHOT_LIMIT_REACHED: project {PROJECT}: 3 rows would be sent but only 1 snapshots are left in the "
        "project's quota; 2 would be refused"
    ) in result.stdout
    assert sum(requests_of(emu.state(), QUOTA).values()) == 1


@pytest.mark.no_cover
def test_validate_online_names_the_quota_after_ten_full_disks(
    emulator_thread: Callable[..., Any], write: Callable[..., Path]
) -> None:
    """--online: 11 disks at the per-disk limit (10 lines shown, then a count) and 2 good rows with 1
    snapshot left: the project's quota line is still shown, and counted once with the 11 rows."""
    *full, free, spare = volume_ids(13, seed=717)
    seeded = tuple(
        SeedSnapshot(id=str(uuid.UUID(int=(718 << 64) + 7 * disk + n, version=4)), volume_id=volume_id)
        for disk, volume_id in enumerate(full)
        for n in range(7)
    )
    emu = emulator_thread(any_volume=True, snapshots=seeded, snapshot_quota=len(seeded) + 1)
    manifest = csv_manifest(write, [*full, free, spare])
    result = invoke(cli_args("validate", manifest, online=True, endpoint=emu.url, project_id=PROJECT))
    assert result.exit_code == 1, result.output
    assert result.stdout.count("SNAPSHOT_LIMIT_REACHED: row ") == 10
    assert (
        f"SNAPSHOT_LIMIT_REACHED: project {PROJECT}: 2 rows would be sent but only 1 snapshots are left in "
        "the project's quota; 1 would be refused"
    ) in result.stdout
    assert "SNAPSHOT_LIMIT_REACHED: ... and 1 more rows like these" in result.stdout
    assert "13 rows: 1 would be sent (checked online), 12 with problems (SNAPSHOT_LIMIT_REACHED x12)" in (
        result.stdout
    )


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_validate_online_rows_beyond_the_quota_are_not_counted_as_sendable(
    emulator_thread: Callable[..., Any], write: Callable[..., Path]
) -> None:
    """--online: of three good rows, only the one the quota holds would be sent."""
    emu = emulator_thread(any_volume=True, snapshot_quota=1)
    manifest = csv_manifest(write, volume_ids(3, seed=714))
    result = invoke(cli_args("validate", manifest, online=True, endpoint=emu.url, project_id=PROJECT))
    assert result.exit_code == 1, result.output
    assert "3 rows: 1 would be sent (checked online)" in result.stdout


def test_validate_online_checks_the_quota_of_a_project_looked_up_by_region(
    emulator_thread: Callable[..., Any], write: Callable[..., Path]
) -> None:
    """--online --region: the looked-up project's quota is checked like a --project-id one's."""
    emu = emulator_thread(any_volume=True, snapshot_quota=1)
    manifest = csv_manifest(write, volume_ids(3, seed=715))
    args = cli_args(
        "validate", manifest, online=True, endpoint=emu.url, iam_endpoint=emu.url, region="cn-north-4"
    )
    result = invoke(args)
    assert result.exit_code == 1, result.output
    assert f"SNAPSHOT_LIMIT_REACHED: project {PROJECT}: " in result.stdout


def test_validate_online_asks_no_quota_once_a_project_is_refused(
    emulator_thread: Callable[..., Any], write: Callable[..., Path]
) -> None:
    """--online: the quota of a project whose rows were all good is asked; when another row's project is
    refused (wrong project for these credentials), validate stops with exit 3 and asks no quota."""
    emu = emulator_thread(any_volume=True)
    good = [f"{volume},{PROJECT}" for volume in volume_ids(2, seed=712)]
    fine = write("fine.csv", "volume_id,project_id\n" + "".join(f"{row}\n" for row in good))
    args = cli_args("validate", online=True, endpoint=emu.url, project_id=PROJECT)
    first = invoke([args[0], str(fine), *args[1:]])
    assert first.exit_code == 0, first.output
    assert "2 rows: 2 would be sent (checked online), 0 with problems" in first.stdout
    assert sum(requests_of(emu.state(), QUOTA).values()) == 1
    stranger = f"{volume_ids(1, seed=713)[0]},{'f' * 32}"
    mixed = write("mixed.csv", "volume_id,project_id\n" + "".join(f"{row}\n" for row in [*good, stranger]))
    second = invoke([args[0], str(mixed), *args[1:]])
    assert second.exit_code == 3
    assert "wrong project" in second.stderr
    assert "validate stopped (fix the cause and run it again)" in second.stderr
    assert sum(requests_of(emu.state(), QUOTA).values()) == 1


def test_validate_online_counts_one_quota_for_rows_with_and_without_a_region(
    emulator_thread: Callable[..., Any], write: Callable[..., Path]
) -> None:
    """--online --endpoint: rows naming the region and rows that do not go to the same endpoint and
    project, so they count against one quota: 6 rows, 4 left, 2 beyond it."""
    emu = emulator_thread(any_volume=True, snapshot_quota=4)
    rows = [
        f"{volume},{'cn-north-4' if index % 2 else ''}"
        for index, volume in enumerate(volume_ids(6, seed=716))
    ]
    manifest = write("mixed.csv", "volume_id,region\n" + "".join(f"{row}\n" for row in rows))
    result = invoke(cli_args("validate", manifest, online=True, endpoint=emu.url, project_id=PROJECT))
    assert result.exit_code == 1, result.output
    assert (
        "6 rows: 4 would be sent (checked online), 2 with problems (SNAPSHOT_LIMIT_REACHED x2)"
        in result.stdout
    )
    assert sum(requests_of(emu.state(), QUOTA).values()) == 1


@pytest.mark.anyio
async def test_remaining_quota(emulator: Callable[..., Any]) -> None:
    """The project's snapshot quota left: limit minus in use; None when unlimited."""
    limited = await emulator(snapshots=(api_seeded("available"), api_seeded("error")), snapshot_quota=5)
    unlimited = await emulator()
    async with routed(limited.url) as route:
        assert await remaining_quota(route, RetryPolicy(max_attempts=1)) == 3
    async with routed(unlimited.url) as route:
        assert await remaining_quota(route, RetryPolicy(max_attempts=1)) is None


def test_create_warns_before_sending_when_the_quota_is_short(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """5 rows, 3 snapshots left in the quota: a warning before the first create; 2 rows SNAPSHOT_LIMIT_REACHED."""
    emu = emulator_thread(any_volume=True, snapshot_quota=3)
    report = tmp_path / "r.jsonl"
    args = [
        "create",
        str(csv_manifest(write, volume_ids(5, seed=124))),
        "--endpoint",
        emu.url,
        "--project-id",
        PROJECT,
        "--report",
        str(report),
        "--concurrency",
        "1",
    ]
    result = invoke(args)
    assert result.exit_code == 1
    assert "only 3 snapshots left" in result.stderr
    assert "rows beyond it will be refused (SNAPSHOT_LIMIT_REACHED)" in result.stderr  # as recorded below
    final = last_per_row(report)
    refused = [r for r in final.values() if r["outcome"] == "rejected"]
    assert [r["error_code"] for r in refused] == ["SNAPSHOT_LIMIT_REACHED"] * 2
    assert all("prune" in r["error_message"] for r in refused)


def test_validate_online_says_when_the_quota_cannot_be_read(
    emulator_thread: Callable[..., Any], write: Callable[..., Path]
) -> None:
    """--online with the quota API refused (403, a permission no retry grants): PERMISSION_DENIED names
    the project's quota and the IAM action to grant, exit 1; the project's line is counted apart from
    the rows, so the counts add up (found by hostile13)."""
    ids = volume_ids(2, seed=712)
    emu = emulator_thread(any_volume=True, deny=("evs:quotas:get",))
    manifest = write("m.csv", "volume_id\n" + "".join(f"{i}\n" for i in ids) + "not-a-uuid\n")
    args = [*cli_args("validate", manifest, online=True, endpoint=emu.url, project_id=PROJECT), *FEW_RETRIES]
    result = invoke(args)
    assert result.exit_code == 1, result.output
    denied = f"PERMISSION_DENIED: project {PROJECT}: the snapshot quota could not be read: the IAM action "
    assert denied + "evs:quotas:get is missing" in result.stdout
    assert "EVS.5403" in result.stdout
    assert "CHECK_FAILED" not in result.stdout
    assert result.stdout.splitlines()[-1] == (
        "3 rows: 2 would be sent (checked online), 1 with problems (INVALID_VOLUME_ID x1); "
        "1 project check failed (PERMISSION_DENIED x1)"
    )
    assert sum(requests_of(emu.state(), QUOTA).values()) == 1


async def test_a_quota_that_is_not_a_number_is_unknown() -> None:
    """A quota answer whose limit is not a number: the quota is unknown (None), not a crash."""
    odd = answering(200, {"quota_set": {"id": PROJECT, "snapshots": {"limit": "many", "in_use": 1}}})
    quota = {f"GET /v2/{PROJECT}/os-quota-sets/{PROJECT}": odd}
    async with stand_in(quota) as (url, seen), routed(url) as route:
        assert await remaining_quota(route, QUICK) is None
    assert sum(seen.values()) == 1
