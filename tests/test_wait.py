"""wait / create --wait: final states match the emulator row by row, within the N/1000 request bound."""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import orjson
import pytest
from yarl import URL

from orchestrator.api.credentials import AkSkAuth
from orchestrator.api.routes import connect
from orchestrator.config import Connection, Endpoints
from orchestrator.emulator.settings import (
    DEFAULT_AK,
    DEFAULT_DOMAIN,
    DEFAULT_PASSWORD,
    DEFAULT_SK,
    DEFAULT_USER,
)
from orchestrator.models import Outcome, Record
from orchestrator.report import ReportWriter
from orchestrator.tally import Tally
from orchestrator.waiter import Waiter, WaitPlan
from tests.helpers import AKSK, PROJECT, call, invoke, last_per_row, volume_ids

AKSK_NO_TOKEN = {"OS_AUTH_TOKEN": "", **AKSK}


def manifest(write: Callable[..., Path], ids: list[str]) -> Path:
    return write("m.csv", "volume_id\n" + "".join(f"{i}\n" for i in ids))


def test_create_wait_matches_emulator_state(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """create --wait: each row's final record is the emulator's final status of its snapshot."""
    ids = volume_ids(40, seed=61)
    emu = emulator_thread(any_volume=True, creating_seconds=1.0, fault_snapshot_error=0.25, seed=61)
    report = tmp_path / "r.jsonl"
    result = invoke(
        [
            "create",
            str(manifest(write, ids)),
            "--endpoint",
            emu.url,
            "--project-id",
            PROJECT,
            "--report",
            str(report),
            "--wait",
            "--poll-interval",
            "0.3",
        ]
    )
    assert result.exit_code == 1, result.output  # some snapshots end in error
    final = last_per_row(report)
    state = {s["id"]: s["status"] for s in emu.state()["snapshots"]}
    assert sorted(final) == list(range(1, 41))
    for record in final.values():
        expected = "available" if state[record["snapshot_id"]] == "available" else "snapshot_error"
        assert record["outcome"] == expected
        assert record["snapshot_status"] == state[record["snapshot_id"]]
    outcomes = Counter(r["outcome"] for r in final.values())
    assert outcomes["snapshot_error"] > 0
    assert outcomes["available"] > 0
    lists = sum(emu.state()["requests"]["GET /v2/{project_id}/cloudsnapshots/detail"].values())
    assert lists <= 12  # one page per round: 40 pending is far below 1000
    assert "GET /v2/{project_id}/cloudsnapshots/{snapshot_id}" not in emu.state()["requests"]


def test_wait_command_timeout_and_vanished(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """wait: a deleted snapshot is SNAPSHOT_NOT_FOUND; ones still creating at the timeout are wait_timeout."""
    ids = volume_ids(4, seed=62)
    fast = emulator_thread(any_volume=True, creating_seconds=0.0)
    report = tmp_path / "r.jsonl"
    args = ["--endpoint", fast.url, "--project-id", PROJECT, "--report", str(report)]
    assert invoke(["create", str(manifest(write, ids)), *args]).exit_code == 0
    doomed = last_per_row(report)[1]["snapshot_id"]

    async def delete() -> None:
        async with aiohttp.ClientSession() as http:
            path = f"/v2/{PROJECT}/cloudsnapshots/{doomed}"
            status, _, _ = await call(http, fast, "DELETE", path, auth=AkSkAuth(DEFAULT_AK, DEFAULT_SK))
            assert status == 202
            await anyio.sleep(0.7)

    anyio.run(delete)
    result = invoke(["wait", str(report), "--endpoint", fast.url, "--poll-interval", "0.1"])
    assert result.exit_code == 1, result.output
    final = last_per_row(report)
    assert (final[1]["outcome"], final[1]["error_code"]) == ("snapshot_error", "SNAPSHOT_NOT_FOUND")
    assert {final[n]["outcome"] for n in (2, 3, 4)} == {"available"}
    slow = emulator_thread(any_volume=True, creating_seconds=60)
    report2 = tmp_path / "r2.jsonl"
    args2 = ["--endpoint", slow.url, "--project-id", PROJECT, "--report", str(report2)]
    assert invoke(["create", str(manifest(write, volume_ids(3, seed=63))), *args2]).exit_code == 0
    result = invoke(
        ["wait", str(report2), "--endpoint", slow.url, "--wait-timeout", "1s", "--poll-interval", "0.2"]
    )
    assert result.exit_code == 1
    assert {(r["outcome"], r["snapshot_status"]) for r in last_per_row(report2).values()} == {
        ("wait_timeout", "creating")
    }


def test_wait_outlives_token_lifetime(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """A wait longer than the IAM token's lifetime keeps working: tokens are renewed."""
    ids = volume_ids(10, seed=64)
    emu = emulator_thread(any_volume=True, creating_seconds=2.5, token_ttl=1.0)
    report = tmp_path / "r.jsonl"
    env = {
        "HUAWEICLOUD_SDK_AK": "",
        "OS_USERNAME": DEFAULT_USER,
        "OS_PASSWORD": DEFAULT_PASSWORD,
        "OS_USER_DOMAIN_NAME": DEFAULT_DOMAIN,
    }
    result = invoke(
        [
            "create",
            str(manifest(write, ids)),
            "--endpoint",
            emu.url,
            "--iam-endpoint",
            emu.url,
            "--project-id",
            PROJECT,
            "--report",
            str(report),
            "--wait",
            "--poll-interval",
            "0.3",
        ],
        env=env,
    )
    assert result.exit_code == 0, result.output
    assert {r["outcome"] for r in last_per_row(report).values()} == {"available"}
    assert emu.state()["requests"]["POST /v3/auth/tokens"]["201"] >= 3


async def test_poll_round_costs_about_n_over_1000(emulator: Callable[..., Any], tmp_path: Path) -> None:
    """2,500 pending snapshots in one project cost 3 list requests a round (pages of 1000), not 2,500."""
    emu = await emulator(any_volume=True, creating_seconds=1.5, seed=65)
    ids = volume_ids(2500, seed=65)
    # The snapshots are made in the emulator's world directly (2,500 signed POSTs would be most of the
    # test's cost); the waiter under test still polls them over HTTP.
    created: list[Record] = []
    for row, volume_id in enumerate(ids, start=1):
        volume = emu.world.volume(volume_id)
        assert volume is not None
        snapshot = emu.world.create_snapshot(volume=volume, name=f"n{row}", description=None, metadata={})
        created.append(
            Record(
                run_id="r",
                row=row,
                volume_id=volume_id,
                project_id=PROJECT,
                region=None,
                name=f"n{row}",
                outcome=Outcome.ACCEPTED,
                snapshot_id=snapshot.id,
                snapshot_status="creating",
                attempts=1,
                started_at="2026-11-27T00:00:00.000Z",
                finished_at="2026-11-27T00:00:00.000Z",
                elapsed_ms=1,
            )
        )
    connection = Connection(endpoints=Endpoints(evs=URL(emu.url)), environ=AKSK_NO_TOKEN)
    async with contextlib.AsyncExitStack() as stack:
        router = await connect(stack, connection)
        tally = Tally()
        with ReportWriter(str(tmp_path / "r.jsonl")) as writer:
            waiter = Waiter(WaitPlan(timeout=30, interval=0.5), router=router, writer=writer, tally=tally)
            waiter.load(created)
            await waiter.run()
    assert tally.outcomes == {"available": 2500}
    assert waiter.round_requests
    assert max(waiter.round_requests) <= math.ceil(2500 / 1000)


def action_report(path: Path, command: str) -> Path:
    """A prune, cleanup or rollback report: its run header and one record."""
    head = {
        "type": "run",
        "run_id": "20261127T035432Z-abc123",
        "command": command,
        "manifest": "m.csv",
        "rows": 0,
        "digest": "",
        "shape": {},
        "started_at": "2026-11-27T03:54:32.000Z",
    }
    line = {
        "run_id": "20261127T035432Z-abc123",
        "command": command,
        "key": "row:1" if command == "rollback" else "s1",
        "outcome": "planned",
        "row": 1 if command == "rollback" else None,
        "started_at": "2026-11-27T03:54:32.100Z",
        "finished_at": "2026-11-27T03:54:32.200Z",
    }
    path.write_bytes(orjson.dumps(head) + b"\n" + orjson.dumps(line) + b"\n")
    return path


@pytest.mark.parametrize("command", ["prune", "cleanup", "rollback"])
def test_wait_says_what_kind_of_report_it_was_given(
    command: str, emulator_thread: Callable[..., Any], tmp_path: Path
) -> None:
    """wait of a prune, cleanup or rollback report names the kind (exit 2) and sends nothing."""
    emu = emulator_thread(any_volume=True)
    report = action_report(tmp_path / f"{command}.jsonl", command)
    result = invoke(["wait", str(report), "--endpoint", emu.url])
    assert result.exit_code == 2, result.output
    assert f"{report} is a {command} report: wait reads the report of a create run" in result.stderr
    assert emu.state()["requests"] == {}


def test_wait_counts_rows_without_a_record_against_the_header(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """A create report cut to 1 of 3 records: wait settles that row, names rows 2 and 3, exits 1."""
    emu = emulator_thread(any_volume=True, creating_seconds=0.0)
    report = tmp_path / "r.jsonl"
    args = ["--endpoint", emu.url, "--project-id", PROJECT, "--report", str(report)]
    assert invoke(["create", str(manifest(write, volume_ids(3, seed=66))), *args]).exit_code == 0
    lines = report.read_bytes().splitlines(keepends=True)
    first = next(n for n, line in enumerate(lines) if n and b'"outcome":"sending"' not in line)
    report.write_bytes(b"".join(lines[: first + 1]))  # as a kill leaves it: the journal, one row record
    result = invoke(["wait", str(report), "--endpoint", emu.url, "--poll-interval", "0.1"])
    assert result.exit_code == 1, result.output
    assert "2 of 3 rows have no record (rows 2, 3)" in result.stderr
    assert "run the same create command with --resume" in result.stderr
    assert {row: r["outcome"] for row, r in last_per_row(report).items()} == {1: "available"}


def unsent_report(kind: str, write: Callable[..., Path], tmp_path: Path, url: str) -> Path:
    """A create report of a --dry-run (against the emulator at ``url``) or of --emulator (in-process)."""
    report = tmp_path / f"{kind}.jsonl"
    if kind == "dry-run":
        args = ["--endpoint", url, "--project-id", PROJECT, "--dry-run"]
        source = manifest(write, volume_ids(2, seed=67))
    else:
        args = ["--emulator"]
        source = Path(__file__).parent.parent / "samples" / "volumes.csv"
    invoke(["create", str(source), "--report", str(report), *args])
    assert orjson.loads(report.read_bytes().splitlines()[0])[kind.replace("-", "_")] is True
    return report


@pytest.mark.parametrize("kind", ["dry-run", "emulator"])
@pytest.mark.parametrize("command", ["wait", "cleanup", "rollback"])
def test_reports_of_dry_runs_and_of_the_demo_emulator_are_refused(
    kind: str, command: str, emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """wait, cleanup and rollback of a --dry-run or --emulator report: exit 2 with the reason, no request."""
    emu = emulator_thread(any_volume=True)
    report = unsent_report(kind, write, tmp_path, emu.url)
    before = emu.state()["requests"]
    extra = [] if command == "wait" else ["--report", str(tmp_path / "out.jsonl"), "--apply"]
    result = invoke([command, str(report), "--endpoint", emu.url, *extra])
    assert result.exit_code == 2, result.output
    reason = "nothing was sent" if kind == "dry-run" else "in-process emulator that ended with that run"
    assert reason in result.stderr
    assert "Traceback" not in result.output
    assert emu.state()["requests"] == before
    assert not (tmp_path / "out.jsonl").exists()
