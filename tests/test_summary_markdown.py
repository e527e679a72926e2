"""``summary REPORT --format markdown``: the change-ticket block (run id and times, counts, the snapshots
made capped at 200 lines, the rows to retry and why, the follow-up commands), ``--format`` beside the
``--json`` alias, and summaries of prune, cleanup and rollback reports. Reports are written by hand."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from orchestrator.emulator.server import EmulatorThread
from orchestrator.emulator.settings import DEFAULT_AK, DEFAULT_SK
from tests.helpers import PROJECT, create_args, invoke, seeds, volume_ids

RUN = "20261207T010203Z-a1b2c3"
STARTED = "2026-12-07T01:02:03.000Z"


def disk(row: int) -> str:
    return f"00000000-0000-4000-8000-{row:012d}"


def create_header(rows: int, dry_run: bool = False, **shape: str) -> dict[str, Any]:
    return {
        **({"dry_run": True} if dry_run else {}),
        "type": "run",
        "run_id": RUN,
        "command": "create",
        "manifest": "night.csv",
        "rows": rows,
        "digest": "sha256:00",
        "shape": shape,
        "started_at": STARTED,
    }


def made(row: int, **fields: Any) -> dict[str, Any]:
    """A create record: accepted with a snapshot, unless ``fields`` say otherwise."""
    return {
        "run_id": RUN,
        "row": row,
        "volume_id": disk(row),
        "project_id": PROJECT,
        "region": None,
        "name": f"pre-maint-{row}",
        "outcome": "accepted",
        "http_status": 202,
        "snapshot_id": f"10000000-0000-4000-8000-{row:012d}",
        "snapshot_status": "creating",
        "attempts": 1,
        "started_at": "2026-12-07T01:02:04.000Z",
        "finished_at": f"2026-12-07T01:02:{5 + row % 50:02d}.000Z",
        "elapsed_ms": 10,
        **fields,
    }


def action(command: str, key: str, outcome: str, **fields: Any) -> dict[str, Any]:
    return {
        "run_id": RUN,
        "command": command,
        "key": key,
        "outcome": outcome,
        "started_at": "2026-12-07T02:00:00.000Z",
        "finished_at": "2026-12-07T02:00:01.000Z",
        **fields,
    }


def action_header(command: str, source: str, **shape: str) -> dict[str, Any]:
    return {
        "type": "run",
        "run_id": RUN,
        "command": command,
        "manifest": source,
        "rows": 0,
        "digest": "",
        "shape": shape,
        "started_at": STARTED,
    }


def write(path: Path, *items: dict[str, Any]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(item) + b"\n" for item in items))
    return path


def test_the_block_names_the_run_counts_snapshots_retries_and_follow_ups(tmp_path: Path) -> None:
    """Run id and times, counts per outcome, each snapshot made, each row to retry with its reason, and
    the wait, rollback --apply and cleanup --apply commands with the run's region and project."""
    report = write(
        tmp_path / "night.jsonl",
        create_header(4, region="cn-north-4", project_id=PROJECT, name_template="x", metadata="{}"),
        made(1),
        made(2, outcome="available", snapshot_status="available"),
        made(
            3,
            outcome="rejected",
            http_status=400,
            snapshot_id=None,
            snapshot_status=None,
            error_code="EVS.5400",
            error_message="current status is: in-use",
        ),
        made(4, outcome="failed", http_status=None, snapshot_id=None, snapshot_status=None),
    )
    result = invoke(["summary", str(report), "--format", "markdown"])
    assert result.exit_code == 1
    block = result.stdout
    assert block.startswith(f"### evs-snapshot create: run `{RUN}`\n")
    assert f"- started: {STARTED}\n" in block
    assert "- last record: 2026-12-07T01:02:09.000Z\n" in block
    assert "- manifest: `night.csv` (4 rows)\n" in block
    assert "| accepted | 1 |\n| available | 1 |\n| failed | 1 |\n| rejected | 1 |\n" in block
    assert "#### Snapshots made (2)" in block
    assert f"| 1 | {disk(1)} | 10000000-0000-4000-8000-000000000001 | pre-maint-1 | creating |" in block
    assert f"| 2 | {disk(2)} | 10000000-0000-4000-8000-000000000002 | pre-maint-2 | available |" in block
    assert "#### Rows to retry (2)" in block
    assert f"| 3 | {disk(3)} | rejected | EVS.5400 | current status is: in-use: the disk is attached" in block
    assert f"| 4 | {disk(4)} | failed | - | run the same create command with --resume" in block
    where = str(report.resolve())
    assert (
        "```sh\n"
        f"evs-snapshot create night.csv --resume --report {where} --region cn-north-4 --project-id {PROJECT}"
        "  # and the run's other options\n"
        f"evs-snapshot wait {where} --region cn-north-4\n"
        f"evs-snapshot rollback {where} --apply --region cn-north-4\n"
        f"evs-snapshot cleanup {where} --apply --region cn-north-4 --project-id {PROJECT}\n"
        "```\n"
    ) in block


def test_the_snapshot_table_stops_at_200_lines_and_counts_the_rest(tmp_path: Path) -> None:
    """250 snapshots: 200 table lines, then how many more the report holds; no row to retry."""
    report = write(tmp_path / "big.jsonl", create_header(250), *(made(row) for row in range(1, 251)))
    result = invoke(["summary", str(report), "--format", "markdown"])
    assert result.exit_code == 0
    block = result.stdout
    assert "#### Snapshots made (250)" in block
    assert f"| 200 | {disk(200)} |" in block
    assert f"| 201 | {disk(201)} |" not in block
    assert "... and 50 more snapshots (see the report)" in block
    assert "#### Rows to retry (0)\n\nnone\n" in block
    assert "(no record)" not in block


def test_rows_without_a_record_are_counted(tmp_path: Path) -> None:
    """A run stopped early: the rows that never got a record are a line of the counts (exit 1), rows to
    retry with the plain summary's line, and the first follow-up is create --resume."""
    report = write(tmp_path / "cut.jsonl", create_header(5), made(1))
    result = invoke(["summary", str(report), "--format", "markdown"])
    assert result.exit_code == 1
    block = result.stdout
    assert "| accepted | 1 |\n| (no record) | 4 |\n" in block
    missing = "4 of 5 rows have no record (rows 2, 3, 4, 5): not reached, or in flight when the run stopped"
    assert f"#### Rows to retry (4)\n\n{missing}; run the same create command with --resume\n\n" in block
    assert missing in invoke(["summary", str(report)]).stdout
    assert "none" not in block
    where = report.resolve()
    assert (
        f"```sh\nevs-snapshot create night.csv --resume --report {where}  # and the run's other options\n"
        f"evs-snapshot wait {where}\n"
    ) in block


def test_rows_without_a_record_beside_rows_to_retry_and_a_stdin_manifest(tmp_path: Path) -> None:
    """Rows without a record and a failed row: both counted, the line then the table; a manifest read
    from standard input is resumed as MANIFEST (its rows come from the operator again)."""
    header = {**create_header(3), "manifest": "<stdin>"}
    report = write(tmp_path / "cut.jsonl", header, made(1, outcome="failed", snapshot_id=None))
    block = invoke(["summary", str(report), "--format", "markdown"]).stdout
    assert (
        "#### Rows to retry (3)\n\n2 of 3 rows have no record (rows 2, 3): not reached, or in flight when "
        "the run stopped; run the same create command with --resume\n\n| row | disk |"
    ) in block
    assert f"| 1 | {disk(1)} | failed |" in block
    assert f"```sh\nevs-snapshot create MANIFEST --resume --report {report.resolve()}  #" in block


def test_a_cut_short_dry_run_is_planned_again_not_resumed(tmp_path: Path) -> None:
    """A dry run's report missing rows: the block says to plan again, and offers no create --resume."""
    report = write(tmp_path / "plan.jsonl", create_header(2, dry_run=True), made(1, outcome="planned"))
    block = invoke(["summary", str(report), "--format", "markdown"]).stdout
    assert "#### Rows to retry (1)\n\n1 of 2 rows have no record (rows 2)" in block
    assert "a dry run is not resumed: run it again with another --report" in block
    assert "--resume" not in block


def test_json_is_a_format_and_an_alias(tmp_path: Path) -> None:
    """--json and --format json print the same document; --format text is the default."""
    report = write(tmp_path / "r.jsonl", create_header(1), made(1))
    as_format = invoke(["summary", str(report), "--format", "json"])
    alias = invoke(["summary", str(report), "--json"])
    assert (
        orjson.loads(as_format.stdout)["outcomes"]
        == orjson.loads(alias.stdout)["outcomes"]
        == {"accepted": 1}
    )
    assert (
        invoke(["summary", str(report), "--format", "text"]).stdout == invoke(["summary", str(report)]).stdout
    )
    assert invoke(["summary", str(report), "--format", "yaml"]).exit_code == 2


@pytest.mark.parametrize(
    ("command", "items", "code", "first_line"),
    [
        pytest.param(
            "cleanup",
            [
                action("cleanup", "s1", "deleted", snapshot_id="s1", volume_id=disk(1)),
                action("cleanup", "s2", "planned", snapshot_id="s2"),
                action(
                    "cleanup", "s2", "failed", snapshot_id="s2", error_code="EVS.5500", error_message="boom"
                ),
            ],
            1,
            "cleanup: 2 records: 1 deleted, 1 failed",
            id="cleanup",
        ),
        pytest.param(
            "rollback",
            [
                action("rollback", "row:1", "rolled_back", row=1),
                action("rollback", "row:2", "refused", row=2),
            ],
            1,
            "rollback: 2 records: 1 refused, 1 rolled_back",
            id="rollback-refused-is-not-restored",
        ),
        pytest.param(
            "prune",
            [action("prune", "s9", "deleted", snapshot_id="s9", rule="keep-last 1")],
            0,
            "prune: 1 records: 1 deleted",
            id="prune",
        ),
        pytest.param("prune", [], 0, "prune: 0 records: nothing to do", id="prune-nothing-to-do"),
    ],
)
def test_action_reports_are_summarized_as_their_run_counted(
    tmp_path: Path, command: str, items: list[dict[str, Any]], code: int, first_line: str
) -> None:
    """prune, cleanup and rollback reports: text and markdown, the last record per key, the run's exit."""
    report = write(tmp_path / f"{command}.jsonl", action_header(command, "/r/create.jsonl"), *items)
    text = invoke(["summary", str(report)])
    assert (text.exit_code, text.stdout.splitlines()[0]) == (code, first_line)
    block = invoke(["summary", str(report), "--format", "markdown"])
    assert block.exit_code == code
    assert block.stdout.startswith(f"### evs-snapshot {command}: run `{RUN}`\n")
    assert f"#### Acted on ({len({item['key'] for item in items})})" in block.stdout
    follow = f"evs-snapshot {command} /r/create.jsonl --apply --resume --report {report.resolve()}"
    assert follow in block.stdout


def test_a_failed_action_is_listed_to_look_at_again(tmp_path: Path) -> None:
    """A cleanup record that failed is in the table of records to look at again, with its error."""
    report = write(
        tmp_path / "c.jsonl",
        action_header("cleanup", "/r/create.jsonl"),
        action("cleanup", "s2", "failed", snapshot_id="s2", error_code="EVS.5500", error_message="a | b"),
    )
    block = invoke(["summary", str(report), "--format", "markdown"]).stdout
    assert "#### To look at again (1)" in block
    assert "| s2 | failed | EVS.5500 | a \\| b |" in block


@pytest.mark.no_cover
def test_the_follow_ups_carry_where_the_run_sent_its_requests(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path
) -> None:
    """A real run records its --endpoint (never a credential) in its header; the follow-ups repeat it,
    for the create report and for the report of a cleanup plan."""
    ids = volume_ids(1)
    emu = emulator_thread(volumes=seeds(ids), creating_seconds=3600)  # the cleanup plan finds it creating
    manifest = tmp_path / "m.csv"
    manifest.write_text("volume_id\n" + ids[0] + "\n", encoding="utf-8")
    report = tmp_path / "r.jsonl"
    assert invoke(create_args(emu.url, manifest, report, "--auth", "aksk")).exit_code == 0
    block = invoke(["summary", str(report), "--format", "markdown"]).stdout
    where = report.resolve()
    assert f"evs-snapshot wait {where} --endpoint {emu.url} --auth aksk\n" in block
    assert (
        f"evs-snapshot cleanup {where} --apply --endpoint {emu.url} --auth aksk --project-id {PROJECT}\n"
        in block
    )
    plan = tmp_path / "cleanup.jsonl"
    cleanup = ["cleanup", str(report), "--endpoint", emu.url, "--project-id", PROJECT, "--report", str(plan)]
    planned = invoke(cleanup)
    assert planned.exit_code == 1  # a snapshot still creating blocks the plan
    assert "cleanup: 1 records: 1 blocked" in planned.stderr
    follow = invoke(["summary", str(plan), "--format", "markdown"]).stdout
    assert (
        f"evs-snapshot cleanup {where} --apply --resume --report {plan.resolve()} --endpoint {emu.url}\n"
        in follow
    )
    for text in (report.read_text(encoding="utf-8"), plan.read_text(encoding="utf-8"), block, follow):
        assert DEFAULT_SK not in text
        assert DEFAULT_AK not in text


def test_a_dry_run_is_named_as_one(tmp_path: Path) -> None:
    """A dry run's block says that wait, rollback and cleanup refuse its report."""
    report = write(tmp_path / "plan.jsonl", create_header(1, dry_run=True), made(1, outcome="planned"))
    block = invoke(["summary", str(report), "--format", "markdown"]).stdout
    assert "- note: this report is the report of a --dry-run" in block
