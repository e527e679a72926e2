"""cleanup: one create run's snapshots go, each only after its marker and volume are checked."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from tests.conftest import volume_ids
from tests.helpers import (
    FAST_RETRIES,
    create_args,
    csv_manifest,
    invoke,
    last_per_row,
    records,
    requests_of,
)
from tests.test_prune import DELETE, FAST, LIST, live, snap, start


def cleanup(emu: Any, source: Path, report: Path, *extra: str, env: dict[str, str] | None = None) -> Any:
    return invoke(
        ["cleanup", str(source), "--endpoint", emu.url, "--report", str(report), *FAST, *extra], env
    )


def created(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path, count: int, seed: int
) -> tuple[Any, Path, list[Any]]:
    """An emulator where a create run made one snapshot per disk, beside older and foreign snapshots."""
    disks = volume_ids(count, seed=seed)
    others = [snap(disk, 3) for disk in disks] + [snap(disks[0], 4, run=None, name="by-hand")]
    others.append(snap(disks[0], 5, name="autobk_snapshot_1", run=None))
    emu = start(emulator_thread, disks, others, creating_seconds=0.0)
    report = tmp_path / "create.jsonl"
    result = invoke(create_args(emu.url, csv_manifest(write, disks), report, *FAST_RETRIES))
    assert result.exit_code == 0, result.output
    return emu, report, others


def test_cleanup_plans_then_deletes_only_the_runs_snapshots(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """Dry run: planned, no DELETE; --apply --resume: the run's snapshots go, older and foreign ones stay."""
    emu, report, others = created(emulator_thread, write, tmp_path, 4, seed=151)
    made = {r["snapshot_id"] for r in last_per_row(report).values()}
    plan = tmp_path / "plan.jsonl"
    result = cleanup(emu, report, plan)
    assert result.exit_code == 0, result.output
    assert {(r["snapshot_id"], r["outcome"]) for r in records(plan)} == {(i, "planned") for i in made}
    assert DELETE not in emu.state()["requests"]
    lists = sum(requests_of(emu.state(), LIST).values())
    result = cleanup(emu, report, plan, "--apply", "--resume")  # the runbook: plan, then apply the plan
    assert result.exit_code == 0, result.output
    done = records(plan)[4:]
    assert {(r["snapshot_id"], r["outcome"]) for r in done} == {(i, "deleted") for i in made}
    assert {r["row"] for r in done} == {1, 2, 3, 4}
    assert {r["run_id"] for r in records(plan)} == {records(plan)[0]["run_id"]}
    assert set(live(emu)) == {s.id for s in others}
    assert requests_of(emu.state(), DELETE) == {"202": 4}
    assert sum(requests_of(emu.state(), LIST).values()) - lists <= 2  # one listing, one confirmation round
    again = cleanup(emu, report, tmp_path / "again.jsonl", "--apply")
    assert again.exit_code == 0, again.output
    assert Counter((r["outcome"], r["http_status"]) for r in records(tmp_path / "again.jsonl")) == {
        ("deleted", 404): 4  # already gone counts as done
    }
    assert requests_of(emu.state(), DELETE) == {"202": 4}


def test_cleanup_refuses_snapshots_of_another_run_or_volume(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """A recorded snapshot not of this run or of another disk is refused; each row's own is found by marker."""
    emu, report, others = created(emulator_thread, write, tmp_path, 3, seed=152)
    final = last_per_row(report)
    tampered = tmp_path / "tampered.jsonl"
    lines = []
    for line in report.read_bytes().splitlines():
        data = orjson.loads(line)
        if data.get("row") == 1 and data.get("snapshot_id"):
            data["snapshot_id"] = others[0].id  # an older run's snapshot of the same disk
        elif data.get("row") == 2 and data.get("snapshot_id"):
            data["snapshot_id"] = final[3]["snapshot_id"]  # this run's, but of row 3's disk
        elif data.get("row") == 3 and data.get("snapshot_id"):
            data.update(outcome="failed", snapshot_id=None)  # as if the create were confirmed late
        lines.append(orjson.dumps(data))
    tampered.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out.jsonl"
    result = cleanup(emu, tampered, out, "--apply")
    assert result.exit_code == 0, result.output  # refusing is the safe outcome, not a failure
    outcomes = Counter((r["row"], r["snapshot_id"], r["outcome"], r["error_code"]) for r in records(out))
    assert outcomes == {
        (1, final[1]["snapshot_id"], "deleted", None): 1,
        (1, others[0].id, "refused", "NOT_THIS_RUN"): 1,
        (2, final[2]["snapshot_id"], "deleted", None): 1,
        (2, final[3]["snapshot_id"], "refused", "OTHER_VOLUME"): 1,
        (3, final[3]["snapshot_id"], "deleted", None): 1,
    }
    assert set(live(emu)) == {s.id for s in others}


def test_cleanup_resume_and_refusals(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """--resume skips what is done; wrong credentials stop with exit 3; a non-create report is a usage error."""
    emu, report, _ = created(emulator_thread, write, tmp_path, 2, seed=153)
    out = tmp_path / "out.jsonl"
    wrong = {"HUAWEICLOUD_SDK_AK": "WRONGAK0000000000000"}
    refused = cleanup(emu, report, out, "--apply", env=wrong)
    assert refused.exit_code == 3, refused.output
    assert "nothing was deleted" in refused.output
    assert DELETE not in emu.state()["requests"]
    result = cleanup(emu, report, out, "--apply", "--resume")
    assert result.exit_code == 0, result.output
    assert Counter(r["outcome"] for r in records(out)) == {"deleted": 2}
    result = cleanup(emu, report, out, "--apply", "--resume")
    assert result.exit_code == 0, result.output
    assert len(records(out)) == 2  # nothing done twice
    assert requests_of(emu.state(), DELETE) == {"202": 2}
    assert cleanup(emu, out, tmp_path / "x.jsonl").exit_code == 2  # a cleanup report is not a create report
    assert cleanup(emu, report, report, "--resume").exit_code == 2  # its own report is not the create report
    other = tmp_path / "other.jsonl"
    other.write_bytes(report.read_bytes())
    assert cleanup(emu, other, out, "--resume").exit_code == 2  # resumed with another create report
