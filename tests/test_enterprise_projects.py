"""Disks in other enterprise projects: every list asks for all of them, so nothing is missed or doubled.

Without ``enterprise_project_id`` a list may show only the default enterprise project (evs-api.md
section 9); the emulator does so. A lookup blind to a disk's enterprise project would miss the
snapshot a late commit made and send the row again.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from orchestrator.emulator import EmulatorThread, SeedSnapshot, SeedVolume
from tests.helpers import (
    CREATE_ROUTE,
    FAST_RETRIES,
    PROJECT,
    TOKEN,
    create_args,
    csv_manifest,
    header,
    invoke,
    last_per_row,
    requests_of,
    snapshots_per_volume,
)

OTHER = "ep-0b1c2d3e"
IDS = [str(uuid.UUID(int=0xE900 + index, version=4)) for index in range(6)]
SERVER = "6a0c1a6e-7a52-4c1e-9a1b-0c0f4e2d8a0e"


async def listed(http: aiohttp.ClientSession, url: str, path: str, key: str, **query: str) -> set[str]:
    async with http.get(f"{url}/v2/{PROJECT}/{path}", params=query, headers={"X-Auth-Token": TOKEN}) as got:
        assert got.status == 200
        body = await got.json()
    return {item["id"] for item in body[key]}


async def test_lists_show_the_default_enterprise_project_unless_asked_for_all(
    emulator: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    """No parameter: the default enterprise project only; ``all_granted_eps``: all; an id: that one."""
    volumes = (SeedVolume(volume_id=IDS[0]), SeedVolume(volume_id=IDS[1], enterprise_project_id=OTHER))
    snapshots = (
        SeedSnapshot(id=IDS[2], volume_id=IDS[0]),
        SeedSnapshot(id=IDS[3], volume_id=IDS[1]),  # takes its disk's enterprise project
    )
    emu = await emulator(token=TOKEN, volumes=volumes, snapshots=snapshots)
    for path, key, default, other in (
        ("cloudvolumes/detail", "volumes", IDS[0], IDS[1]),
        ("cloudsnapshots/detail", "snapshots", IDS[2], IDS[3]),
    ):
        assert await listed(http, emu.url, path, key) == {default}
        assert await listed(http, emu.url, path, key, enterprise_project_id="all_granted_eps") == {
            default,
            other,
        }
        assert await listed(http, emu.url, path, key, enterprise_project_id=OTHER) == {other}
    async with http.get(
        f"{emu.url}/v2/{PROJECT}/cloudsnapshots/{IDS[3]}", headers={"X-Auth-Token": TOKEN}
    ) as got:
        assert (await got.json())["snapshot"]["enterprise_project_id"] == OTHER


@pytest.mark.no_cover
def test_late_commits_on_disks_of_another_enterprise_project_make_no_doubles(
    emulator_thread: Callable[..., EmulatorThread], write: Callable[..., Path], tmp_path: Path
) -> None:
    """504 answered, the snapshot appearing later, disks outside the default enterprise project: the
    lookups see it (the row is reconciled, not resent) and each disk ends with one snapshot."""
    ids = IDS[:4]
    volumes = tuple(SeedVolume(volume_id=volume, enterprise_project_id=OTHER) for volume in ids)
    emu = emulator_thread(volumes=volumes, seed=7, fault_late_commit=1.0, late_commit_seconds=0.2)
    report = tmp_path / "r.jsonl"
    result = invoke(create_args(emu.url, csv_manifest(write, ids), report, *FAST_RETRIES, settle="3s"))
    assert result.exit_code == 0, result.output
    final = last_per_row(report)
    assert {(r["outcome"], r["reconciled"]) for r in final.values()} == {("accepted", True)}
    assert requests_of(emu.state(), CREATE_ROUTE) == {"504": 4}  # never sent twice
    assert snapshots_per_volume(emu.state(), str(header(report)["run_id"])) == dict.fromkeys(ids, 1)


def test_select_finds_disks_in_every_enterprise_project(
    emulator_thread: Callable[..., EmulatorThread],
) -> None:
    """A server's disks in two enterprise projects are all selected."""
    volumes = (
        SeedVolume(volume_id=IDS[4], server_id=SERVER, device="/dev/vda", bootable=True),
        SeedVolume(volume_id=IDS[5], server_id=SERVER, device="/dev/vdb", enterprise_project_id=OTHER),
    )
    emu = emulator_thread(volumes=volumes)
    result = invoke(["select", "--endpoint", emu.url, "--project-id", PROJECT, "--server", SERVER])
    assert result.exit_code == 0, result.stderr
    assert {line.split(",")[0] for line in result.stdout.splitlines()[1:]} == {IDS[4], IDS[5]}
