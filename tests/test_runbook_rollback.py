"""docs/runbook.md end to end: select -> validate -> create --wait -> (maintenance fails) -> detach ->
rollback --apply -> re-attach, against one emulator."""

from __future__ import annotations

import csv
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from orchestrator.emulator import EmulatorThread, SeedVolume
from tests.helpers import PROJECT, cli_args, create_args, header, invoke, last_per_row, records

WEB, DB = "9a6b7c1d-0e2f-4a3b-8c4d-5e6f7a8b9c01", "9a6b7c1d-0e2f-4a3b-8c4d-5e6f7a8b9c02"
IDS = [str(uuid.UUID(int=0xE000 + index, version=4)) for index in range(5)]
DISKS = (
    SeedVolume(volume_id=IDS[0], name="web-system", server_id=WEB, device="/dev/vda", bootable=True),
    SeedVolume(volume_id=IDS[1], name="web-data", server_id=WEB, device="/dev/vdb"),
    SeedVolume(volume_id=IDS[2], name="web-logs", server_id=WEB, device="/dev/vdc"),
    SeedVolume(volume_id=IDS[3], name="db-system", server_id=DB, device="/dev/vda", bootable=True),
    SeedVolume(volume_id=IDS[4], name="spare"),
)
FAST = ("--max-attempts", "12", "--backoff-initial", "0.05", "--backoff-max", "0.3", "--settle", "0.5")


def hook(emu: EmulatorThread, volume_id: str, action: str, body: dict[str, Any] | None = None) -> None:
    """The emulator's stand-in for the compute API: detach or attach a disk."""
    request = urllib.request.Request(  # noqa: S310 - the loopback emulator
        f"{emu.url}/_emulator/volumes/{volume_id}/{action}",
        data=orjson.dumps(body or {}),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - the loopback emulator
        assert answer.status == 200


def test_runbook_select_create_rollback(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path
) -> None:
    """The whole runbook: every disk of the server is snapshotted once and restored once, then re-attached."""
    emu = emulator_thread(volumes=DISKS, creating_seconds=0.2, rollback_seconds=0.3)
    where = {"endpoint": emu.url, "project_id": PROJECT}
    manifest = tmp_path / "web.csv"

    # 1. select the server's disks (attached, so --force)
    result = invoke(cli_args("select", server=WEB, force=True, output=manifest, **where))
    assert result.exit_code == 0, result.stderr
    with manifest.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["volume_id"], row["device"], row["force"]) for row in rows] == [
        (IDS[0], "/dev/vda", "true"),
        (IDS[1], "/dev/vdb", "true"),
        (IDS[2], "/dev/vdc", "true"),
    ]

    # 2. validate it online: the informational columns raise no warning
    result = invoke(cli_args("validate", manifest, online=True, **where))
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "warning" not in result.stderr
    assert "3 rows: 3 would be sent (checked online), 0 with problems" in result.stdout

    # 3. create --wait, naming snapshots from the informational columns
    created = tmp_path / "create.jsonl"
    args = create_args(emu.url, manifest, created, *FAST, wait=True, poll_interval=0.1)
    result = invoke([*args, "--name-template", "pre-maint-{volume_name}-{date}"])
    assert result.exit_code == 0, result.stderr
    final = last_per_row(created)
    assert {record["outcome"] for record in final.values()} == {"available"}
    assert final[2]["name"].startswith("pre-maint-web-data-")
    run_id = header(created)["run_id"]

    # 4. the maintenance fails; the plan names the blocker while the disks are attached
    plan = tmp_path / "plan.jsonl"
    result = invoke([*cli_args("rollback", created, report=plan, endpoint=emu.url), *FAST])
    assert result.exit_code == 1
    assert {(r["outcome"], r["error_code"]) for r in records(plan)} == {("planned", "VOLUME_ATTACHED")}

    # 5. detach, roll back, re-attach where the manifest says each disk was
    for row in rows:
        hook(emu, row["volume_id"], "detach")
    restored = tmp_path / "rollback.jsonl"
    args = cli_args("rollback", created, apply=True, report=restored, endpoint=emu.url, poll_interval=0.05)
    result = invoke([*args, *FAST])
    assert result.exit_code == 0, result.stderr
    assert {r["outcome"] for r in records(restored)} == {"rolled_back"}
    assert {r["source_run"] for r in records(restored)} == {run_id}
    for row in rows:
        hook(emu, row["volume_id"], "attach", {"server_id": row["server_id"], "device": row["device"]})

    state = emu.state()
    run_snapshots = {
        s["id"]: s["volume_id"] for s in state["snapshots"] if s["metadata"].get("evs_snapshot_run") == run_id
    }
    assert Counter(run_snapshots.values()) == dict.fromkeys(IDS[:3], 1)
    assert sorted((r["snapshot_id"], r["volume_id"]) for r in state["rollbacks"]) == sorted(
        run_snapshots.items()
    )
    volumes = {v["volume_id"]: v for v in state["volumes"]}
    for row in rows:
        volume = volumes[row["volume_id"]]
        assert volume["status"] == "in-use"
        assert [(a["server_id"], a["device"]) for a in volume["attachments"]] == [
            (row["server_id"], row["device"])
        ]
    assert volumes[IDS[4]]["attachments"] == []
