"""``evs-snapshot summary REPORT``: impossible headers refused, rows without a record named, honest
times, and the next step for rejected rows by error code. Reports here are written by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from orchestrator.models import Outcome
from orchestrator.tally import LISTED_ROWS_MAX, Tally
from tests.helpers import PROJECT, RUN, cli_args, edge_record, invoke, report_of, volume_ids

OTHER_RUN = "20261128T010101Z-def456"


def run_line(rows: object = 3, run_id: str = RUN, **fields: Any) -> dict[str, Any]:
    return {
        "type": "run",
        "run_id": run_id,
        "command": "create",
        "manifest": "m.csv",
        "rows": rows,
        "digest": "sha256:00",
        "shape": {},
        "started_at": "2026-11-27T03:54:32.000Z",
        **fields,
    }


def row_line(row: int, outcome: str = "accepted", **fields: Any) -> dict[str, Any]:
    return {
        "run_id": RUN,
        "row": row,
        "volume_id": f"00000000-0000-4000-8000-{row:012d}",
        "project_id": PROJECT,
        "region": None,
        "name": f"n{row}",
        "outcome": outcome,
        "http_status": 202 if outcome == "accepted" else 400,
        "snapshot_id": f"10000000-0000-4000-8000-{row:012d}" if outcome == "accepted" else None,
        "attempts": 1,
        "started_at": "2026-11-27T03:54:32.100Z",
        "finished_at": "2026-11-27T03:54:32.200Z",
        "elapsed_ms": 100,
        **fields,
    }


def report(path: Path, *items: dict[str, Any]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(item) + b"\n" for item in items))
    return path


@pytest.mark.parametrize(
    ("lines", "fragment"),
    [
        pytest.param(
            [run_line(rows=-5), row_line(1)],
            ":1: not a run header: rows must be a whole number of 0 or more, not -5",
            id="rows-below-0",
        ),
        pytest.param(
            [run_line(rows="3"), row_line(1)],
            ":1: not a run header: rows must be a whole number of 0 or more, not '3'",
            id="rows-a-string",
        ),
        pytest.param(
            [run_line(rows=2.5), row_line(1)],
            ":1: not a run header: rows must be a whole number of 0 or more, not 2.5",
            id="rows-a-fraction",
        ),
        pytest.param(
            [run_line(rows=True), row_line(1)],
            ":1: not a run header: rows must be a whole number of 0 or more, not True",
            id="rows-true",
        ),
        pytest.param([row_line(1), row_line(2)], ":1: a report starts with its run header", id="none"),
        pytest.param(
            [run_line(rows=1), row_line(1), run_line(rows=1, run_id=OTHER_RUN), row_line(1)],
            f":3: a second run header (run {OTHER_RUN}) after run {RUN}'s",
            id="two",
        ),
    ],
)
def test_summary_refuses_impossible_headers(
    tmp_path: Path, lines: list[dict[str, Any]], fragment: str
) -> None:
    """A header with rows below 0 or not a whole number, no header, or two headers: exit 2, file:line."""
    path = report(tmp_path / "r.jsonl", *lines)
    result = invoke(["summary", str(path)])
    assert result.exit_code == 2, result.output
    assert f"{path}{fragment}" in result.stderr
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_summary_never_prints_none_ms(tmp_path: Path) -> None:
    """A record without a time (``elapsed_ms`` null) is a file error naming its line, never 'None ms'."""
    path = report(
        tmp_path / "r.jsonl",
        run_line(rows=3),
        row_line(1, elapsed_ms=None),
        row_line(2, elapsed_ms=250),
    )
    result = invoke(["summary", str(path)])
    assert result.exit_code == 2, result.output
    assert "r.jsonl:2: not a report record (elapsed_ms must be int, not None)" in result.output
    assert "None ms" not in result.output
    fine = report(
        tmp_path / "f.jsonl", run_line(rows=2), row_line(1, elapsed_ms=90), row_line(2, elapsed_ms=250)
    )
    shown = invoke(["summary", str(fine)])
    assert shown.exit_code == 0, shown.output
    assert "None" not in shown.output


def test_summary_names_the_rows_without_a_record(tmp_path: Path) -> None:
    """Two of five rows recorded: '3 of 5 rows have no record (rows 2, 4, 5)', --resume, exit 1."""
    path = report(tmp_path / "r.jsonl", run_line(rows=5), row_line(1), row_line(3))
    result = invoke(["summary", str(path)])
    assert result.exit_code == 1, result.output
    assert "2 rows: 2 accepted (2 of 5 rows have a record)" in result.stdout
    assert "3 of 5 rows have no record (rows 2, 4, 5)" in result.stdout
    assert "run the same create command with --resume" in result.stdout
    data = orjson.loads(invoke(["summary", str(path), "--json"]).stdout)
    assert (data["missing_rows"], data["rows_without_record"], data["exit_code"]) == (3, [2, 4, 5], 1)


def test_a_cut_short_dry_run_report_says_to_plan_again_not_to_resume(tmp_path: Path) -> None:
    """A dry run's report missing its last rows (the run was stopped): the summary says to run the dry
    run again with another --report, never --resume (which --dry-run refuses)."""
    manifest = tmp_path / "m.csv"
    manifest.write_text("volume_id\n" + "".join(f"{i}\n" for i in volume_ids(4, seed=77)), encoding="utf-8")
    path = tmp_path / "plan.jsonl"
    planned = invoke(
        cli_args("create", manifest, dry_run=True, project_id=PROJECT, region="cn-north-4", report=path)
    )
    assert planned.exit_code == 0, planned.output
    kept = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(kept[:-2]))  # rows 3 and 4 never written
    result = invoke(["summary", str(path)])
    assert result.exit_code == 1, result.output
    assert "2 of 4 rows have no record (rows 3, 4)" in result.stdout
    assert "a dry run is not resumed: run it again with another --report" in result.stdout
    assert "--resume" not in result.stdout


IN_USE = "Invalid volume: Volume v status must be available, but current status is: in-use."
LIMIT = "Insufficient volume quota. (the project's snapshot quota: run prune to delete old snapshots)"


def test_rejected_advice_names_the_next_step_per_error_code(tmp_path: Path) -> None:
    """--force is advised only for the in-use disk; prune for SNAPSHOT_LIMIT_REACHED; a missing disk is
    fixed in the manifest."""
    path = report(
        tmp_path / "r.jsonl",
        run_line(rows=4),
        row_line(1, "rejected", error_code="EVS.5400", error_message=IN_USE),
        row_line(2, "rejected", error_code="SNAPSHOT_LIMIT_REACHED", error_message=LIMIT),
        row_line(3, "rejected", error_code="SNAPSHOT_LIMIT_REACHED", error_message=LIMIT),
        row_line(4, "rejected", error_code="EVS.5404", error_message="Resource could not be found."),
    )
    result = invoke(["summary", str(path)])
    assert result.exit_code == 1, result.output
    advice = {
        line.split(":", 1)[0].strip(): line.split(":", 1)[1]
        for line in result.stdout.splitlines()
        if line.startswith("    ")
    }
    assert set(advice) == {"SNAPSHOT_LIMIT_REACHED x2", "EVS.5400 x1", "EVS.5404 x1"}
    assert "run prune" in advice["SNAPSHOT_LIMIT_REACHED x2"]
    assert "--force" in advice["EVS.5400 x1"]
    assert "new manifest" in advice["EVS.5404 x1"]
    assert [code for code, step in advice.items() if "--force" in step] == ["EVS.5400 x1"]
    data = orjson.loads(invoke(["summary", str(path), "--json"]).stdout)
    (rejected,) = data["next_steps"]
    assert {(item["code"], item["count"]) for item in rejected["by_error_code"]} == {
        ("SNAPSHOT_LIMIT_REACHED", 2),
        ("EVS.5400", 1),
        ("EVS.5404", 1),
    }


def test_summary_lists_at_most_a_thousand_rows_to_retry_but_counts_them_all(tmp_path: Path) -> None:
    """1,001 failed rows: ``rows_to_retry`` holds the first 1,000, the count says 1,001."""
    total = LISTED_ROWS_MAX + 1
    report = report_of(
        tmp_path / "r.jsonl",
        [edge_record(row, Outcome.FAILED, error_code="EVS.5500") for row in range(1, total + 1)],
        total,
    )
    result = invoke(["summary", str(report), "--json"])
    assert result.exit_code == 1, result.output
    summary = orjson.loads(result.stdout)
    assert summary["rows_to_retry_count"] == total
    assert summary["rows_to_retry"] == list(range(1, LISTED_ROWS_MAX + 1))
    assert summary["next_steps"][0]["count"] == total
    assert len(summary["next_steps"][0]["rows"]) == LISTED_ROWS_MAX


def test_summary_counts_the_sweep_records_of_a_report(tmp_path: Path) -> None:
    """A report with a duplicate deleted and one only found: both counted, the rows' states unchanged."""
    report = report_of(
        tmp_path / "r.jsonl",
        [
            edge_record(1, snapshot_id="s1"),
            edge_record(2, snapshot_id="s2"),
            edge_record(1, Outcome.DUPLICATE_DELETED, snapshot_id="s1-extra"),
            edge_record(2, Outcome.DUPLICATE_FOUND, snapshot_id="s2-extra", error_code="DELETE_FAILED"),
        ],
        2,
    )
    result = invoke(["summary", str(report)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("2 rows: 2 accepted (2 of 2 rows have a record)")
    assert "duplicates: 2 found, 1 removed" in result.stdout


def test_replacing_one_of_several_rows_keeps_the_others_counted() -> None:
    """Two failed rows, one found created after all: one failed and one accepted remain."""
    tally = Tally(manifest_rows=2)
    failed = [edge_record(row, Outcome.FAILED, error_code="UNCONFIRMED") for row in (1, 2)]
    for item in failed:
        tally.add(item)
    tally.replace(failed[0], edge_record(1, snapshot_id="s1", reconciled=True))
    assert dict(tally.outcomes) == {"failed": 1, "accepted": 1}
    assert (dict(tally.codes), tally.to_act) == ({"UNCONFIRMED": 1}, {"failed": [2]})
    tally.replace(failed[1], edge_record(2, snapshot_id="s2", reconciled=True))
    assert dict(tally.outcomes) == {"accepted": 2}
    assert (dict(tally.codes), tally.to_act, dict(tally.to_act_count)) == ({}, {}, {})
    assert tally.exit_code == 0


def test_rejected_advice_for_a_disk_in_another_state_and_a_refused_permission(tmp_path: Path) -> None:
    """A disk neither available nor in-use is waited for or repaired (never --force); a 403 names the
    permissions to grant."""
    error_state = "Invalid volume: Volume status must be available or in-use, but current status is: error"
    path = report(
        tmp_path / "r.jsonl",
        run_line(rows=2),
        row_line(1, "rejected", error_code="EVS.5400", error_message=error_state),
        row_line(2, "rejected", error_code="EVS.5403", error_message="Policy doesn't allow it."),
    )
    result = invoke(["summary", str(path)])
    assert result.exit_code == 1, result.output
    advice = {
        line.split(":", 1)[0].strip(): line.split(":", 1)[1]
        for line in result.stdout.splitlines()
        if line.startswith("    ")
    }
    assert "neither available nor in-use: wait for it or repair it" in advice["EVS.5400 x1"]
    assert "--force" not in advice["EVS.5400 x1"]
    assert "grant the EVS snapshot permissions" in advice["EVS.5403 x1"]
