"""``create --consistency server``: one v5 snapshot group per server, each row's record naming its member
and group; the refusals before anything is sent (exit 2); identity before a resend; the sweep of a
second group; a region without groups."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.emulator import SeedVolume
from tests.helpers import create_args, header, invoke, journal, last_per_row, requests_of, volume_ids

GROUP_CREATE = "POST /v5/{project_id}/snapshot-groups"
GROUP_LIST = "GET /v5/{project_id}/snapshot-groups/detail"
SERVERS = [str(uuid.UUID(int=0x5E00 + index, version=4)) for index in range(4)]
DISKS = volume_ids(12, seed=0x6A3)
QUICK = ("--max-attempts", "6", "--backoff-initial", "0.01", "--backoff-max", "0.05", "--settle", "0.3")
QUICK += ("--timeout", "2")


def server_disks(servers: int = 2, per: int = 2, zone: str | None = None) -> tuple[SeedVolume, ...]:
    return tuple(
        SeedVolume(
            volume_id=DISKS[s * per + d],
            server_id=SERVERS[s],
            device=f"/dev/vd{chr(98 + d)}",
            availability_zone=zone,
        )
        for s in range(servers)
        for d in range(per)
    )


def manifest(
    write: Callable[..., Path], rows: list[tuple[str, str]], *, zones: list[str] | None = None
) -> Path:
    """A manifest as ``select`` writes it (volume_id, server_id, availability_zone when given)."""
    if zones is None:
        text = "volume_id,server_id\n" + "".join(f"{v},{s}\n" for v, s in rows)
    else:
        text = "volume_id,server_id,availability_zone\n" + "".join(
            f"{v},{s},{z}\n" for (v, s), z in zip(rows, zones, strict=True)
        )
    return write("m.csv", text)


def rows_of(volumes: tuple[SeedVolume, ...]) -> list[tuple[str, str]]:
    return [(v.volume_id, str(v.server_id)) for v in volumes]


def groups_per_server(state: dict[str, Any], run_id: str) -> Counter[str]:
    """Live groups (not deleting) carrying the run's marker, by server."""
    return Counter(
        g["server_id"]
        for g in state["snapshot_groups"]
        if g["tags"].get("evs_snapshot_run") == run_id and g["status"] != "deleting"
    )


def group_args(url: str, source: Path, report: Path, *extra: str, **flags: object) -> list[str]:
    return create_args(url, source, report, "--consistency", "server", *QUICK, *extra, **flags)


def test_one_group_per_server(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """Two servers, two disks each: two group creates, each row's record names its member and group;
    the group carries the run's marker and the metadata as tags; --wait sees the members available."""
    volumes = server_disks()
    emu = emulator_thread(volumes=volumes, creating_seconds=0.05)
    report = tmp_path / "r.jsonl"
    result = invoke(
        group_args(
            emu.url,
            manifest(write, rows_of(volumes)),
            report,
            "--metadata",
            "team=db",
            wait=True,
            poll_interval=0.05,
        )
    )
    assert result.exit_code == 0, result.output + result.stderr
    run_id = header(report)["run_id"]
    assert header(report)["shape"]["consistency"] == "server"
    state = emu.state()
    assert groups_per_server(state, run_id) == {SERVERS[0]: 1, SERVERS[1]: 1}
    assert {g["tags"]["team"] for g in state["snapshot_groups"]} == {"db"}
    assert requests_of(state, GROUP_CREATE) == {"202": 2}
    final = last_per_row(report)
    assert {r["outcome"] for r in final.values()} == {"available"}
    members = {s["id"]: s["volume_id"] for s in state["snapshots"]}
    by_group = {g["id"]: g for g in state["snapshot_groups"]}
    for record in final.values():
        assert members[record["snapshot_id"]] == record["volume_id"]
        assert record["volume_id"] in by_group[record["snapshot_group_id"]]["volume_ids"]
    assert len(journal(report)) == 4  # one sending line per row, before its group's create


def test_rows_without_a_server_are_a_usage_error(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """A row without server_id: exit 2 naming the rows, nothing sent."""
    volumes = server_disks(1)
    emu = emulator_thread(volumes=volumes)
    source = write("m.csv", f"volume_id,server_id\n{DISKS[0]},{SERVERS[0]}\n{DISKS[1]},\n")
    result = invoke(group_args(emu.url, source, tmp_path / "r.jsonl"))
    assert result.exit_code == 2
    assert "row 2 (line 3)" in result.stderr
    assert emu.state()["requests"] == {}


@pytest.mark.parametrize(
    ("disks", "zones", "reason"),
    [(65, None, "at most 64 disks"), (2, ["cn-north-4a", "cn-north-4b"], "2 availability zones")],
)
def test_servers_no_group_takes_are_refused(
    emulator_thread: Callable[..., Any],
    write: Callable[..., Path],
    tmp_path: Path,
    disks: int,
    zones: list[str] | None,
    reason: str,
) -> None:
    """More than 64 disks, or two zones (from the manifest's column): exit 2 with the reason, nothing sent."""
    ids = volume_ids(disks, seed=0x6A4)
    emu = emulator_thread(volumes=tuple(SeedVolume(volume_id=v, server_id=SERVERS[0]) for v in ids))
    result = invoke(
        group_args(
            emu.url, manifest(write, [(v, SERVERS[0]) for v in ids], zones=zones), tmp_path / "r.jsonl"
        )
    )
    assert result.exit_code == 2, result.output + result.stderr
    assert reason in result.stderr
    assert emu.state()["requests"] == {}


def test_zones_learned_from_the_disk_list(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """Without an availability_zone column, one disk list by server_id learns the zones: two, exit 2
    before any create."""
    volumes = (
        SeedVolume(volume_id=DISKS[0], server_id=SERVERS[0], availability_zone="cn-north-4a"),
        SeedVolume(volume_id=DISKS[1], server_id=SERVERS[0], availability_zone="cn-north-4b"),
    )
    emu = emulator_thread(volumes=volumes)
    result = invoke(group_args(emu.url, manifest(write, rows_of(volumes)), tmp_path / "r.jsonl"))
    assert result.exit_code == 2, result.output + result.stderr
    assert "2 availability zones" in result.stderr
    state = emu.state()
    assert requests_of(state, "GET /v2/{project_id}/cloudvolumes/detail") == {"200": 1}
    assert requests_of(state, GROUP_CREATE) == {}


def test_a_region_without_groups(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """--no-snapshot-groups: exit 2 before any create, telling to use --consistency disk with hooks."""
    volumes = server_disks(1)
    emu = emulator_thread(volumes=volumes, no_snapshot_groups=True)
    report = tmp_path / "r.jsonl"
    result = invoke(group_args(emu.url, manifest(write, rows_of(volumes)), report))
    assert result.exit_code == 2, result.output + result.stderr
    assert "--consistency disk" in result.stderr
    assert "--pre-hook" in result.stderr
    state = emu.state()
    assert requests_of(state, GROUP_LIST) == {"404": 1}
    assert requests_of(state, GROUP_CREATE) == {}
    assert not report.exists()
