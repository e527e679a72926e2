"""Reports on their edges: a standard output whose reader left, torn tails longer than one read, files
that are not reports, damaged lines, header-less reports on --resume, and action reports of the wrong
command or source."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import ReportUnwritable, UsageError
from orchestrator.models import Outcome, Record, RunHeader
from orchestrator.report import (
    ReportWriter,
    ResumeBook,
    check_report_path,
    final_records,
    read_header,
    read_records,
)
from tests.helpers import (
    FAST_RETRIES,
    RUN,
    create_args,
    create_report,
    csv_manifest,
    invoke,
    prune,
    records,
    rollback,
    snap,
    start,
    volume_ids,
    world,
)

HEADER = RunHeader(
    run_id=RUN,
    command="create",
    manifest="m.csv",
    rows=2,
    digest="sha256:00",
    shape={},
    started_at="2026-11-27T03:54:32.000Z",
)


def record(row: int, outcome: Outcome = Outcome.ACCEPTED) -> Record:
    return Record(
        run_id=RUN,
        row=row,
        volume_id=f"v{row}",
        project_id=None,
        region=None,
        name=f"n{row}",
        outcome=outcome,
        started_at="2026-11-27T03:54:32.100Z",
        finished_at="2026-11-27T03:54:32.200Z",
        elapsed_ms=1,
    )


def test_stdout_report_whose_reader_left_stops_with_the_run_marker() -> None:
    """--report - with the reader gone: ReportUnwritable says 'broken pipe' and names the run's marker."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    with open(write_end, "w") as stdout, contextlib.redirect_stdout(stdout):
        writer = ReportWriter("-")
        assert writer.empty
        with pytest.raises(ReportUnwritable) as caught:
            writer.write_header(HEADER)
        writer.sync()  # nothing to sync on a stream it does not own
        writer.close()
    message = str(caught.value)
    assert "cannot write standard output: the reader of standard output went away (broken pipe)" in message
    assert f"(metadata evs_snapshot_run={RUN})" in message
    assert "the run stopped after 0 records" in message


def test_torn_tail_longer_than_one_read_is_cut(tmp_path: Path) -> None:
    """A half-written last line longer than 64 KiB is cut back to the last whole line (or to nothing)."""
    report = tmp_path / "r.jsonl"
    whole = HEADER.to_json() + record(1).to_json()
    report.write_bytes(whole + b'{"run_id": "' + b"x" * 70000)
    with ReportWriter(str(report), resume=True) as writer:
        assert not writer.empty
        writer.write(record(2))
    assert report.read_bytes() == whole + record(2).to_json()
    torn_only = tmp_path / "t.jsonl"
    torn_only.write_bytes(b"y" * 70000)
    with ReportWriter(str(torn_only), resume=True) as writer:
        assert writer.empty
    assert torn_only.read_bytes() == b""


def test_paths_that_cannot_be_reports(tmp_path: Path) -> None:
    """A report under a regular file, or a device, is a usage error naming the path."""
    plain = tmp_path / "plain"
    plain.write_text("x", encoding="utf-8")
    with pytest.raises(UsageError, match="cannot use the report"):
        check_report_path(plain / "r.jsonl")
    with pytest.raises(UsageError, match="not a regular file"):
        check_report_path(Path(os.devnull))


def test_reader_skips_blank_and_torn_lines_and_refuses_damaged_ones(tmp_path: Path) -> None:
    """Blank lines and a torn last record are skipped; a damaged header or record mid-file names its line."""
    good = tmp_path / "good.jsonl"
    good.write_bytes(HEADER.to_json() + b"\n   \n" + record(1).to_json() + b'{"run_id": "r", "row": 2}')
    assert [r.row for r in read_records(good)] == [1]
    assert [r.row for r in final_records(good)] == [1]
    bad_header = tmp_path / "bad-header.jsonl"
    bad_header.write_bytes(b'{"type": "run", "command": "create"}\n' + record(1).to_json())
    with pytest.raises(UsageError, match=r"bad-header.jsonl:1: not a run header"):
        read_header(bad_header)
    bad_record = tmp_path / "bad-record.jsonl"
    bad_record.write_bytes(HEADER.to_json() + b'{"row": 1}\n' + record(2).to_json())
    with pytest.raises(UsageError, match=r"bad-record.jsonl:2: not a report record"):
        list(read_records(bad_record))


def test_resume_book_of_missing_empty_or_headerless_reports(tmp_path: Path) -> None:
    """No file, or an empty one: no resume book; records without a run header first: a usage error at line 1."""
    assert ResumeBook.load(tmp_path / "missing.jsonl") is None
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    assert ResumeBook.load(empty) is None
    headerless = tmp_path / "old.jsonl"
    headerless.write_bytes(
        record(2, Outcome.FAILED).to_json() + record(1, Outcome.DUPLICATE_DELETED).to_json()
    )
    with pytest.raises(UsageError, match=r"old.jsonl:1: a report starts with its run header"):
        ResumeBook.load(headerless)


def test_create_resume_refuses_a_report_without_header(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """create --resume on a report with records but no run header: exit 2, nothing sent."""
    emu = emulator_thread(any_volume=True)
    manifest = csv_manifest(write, volume_ids(2, seed=921))
    report = tmp_path / "old.jsonl"
    report.write_bytes(record(1).to_json())
    result = invoke(create_args(emu.url, manifest, report, *FAST_RETRIES, "--resume"))
    assert result.exit_code == 2, result.output
    assert "old.jsonl:1: a report starts with its run header" in result.output
    assert emu.state()["requests"] == {}


# --- action reports ------------------------------------------------------------------------------
def test_action_resume_refuses_damaged_or_foreign_reports(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """prune --resume: a damaged line mid-report exits 2; a torn last line and blank lines are skipped;
    another command's report or standard output cannot be resumed."""
    (disk,) = volume_ids(1, seed=922)
    emu = start(emulator_thread, [disk], [snap(disk, d) for d in (1, 2, 3)])
    manifest = csv_manifest(write, [disk])
    report = tmp_path / "r.jsonl"
    assert prune(emu, manifest, report, "--keep-last", "1").exit_code == 0
    planned = report.read_bytes()
    report.write_bytes(planned + b"\n\n" + b'{"outcome": "deleted", "key"')
    resumed = prune(emu, manifest, report, "--keep-last", "1", "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert [r["outcome"] for r in records(report)] == ["planned"] * 4
    report.write_bytes(
        planned + b'{"outcome": "no-such-outcome", "key": "x"}\n' + planned.splitlines(True)[1]
    )
    damaged = prune(emu, manifest, report, "--keep-last", "1", "--resume")
    assert damaged.exit_code == 2
    assert "r.jsonl:4: not a record of this report" in damaged.output
    source = create_report(tmp_path / "create.jsonl", [{}])
    other = invoke(["cleanup", str(source), "--endpoint", emu.url, "--report", str(tmp_path / "p.jsonl")])
    assert other.exit_code == 0, other.output
    shutil.copy(tmp_path / "p.jsonl", tmp_path / "q.jsonl")
    wrong = prune(emu, manifest, tmp_path / "q.jsonl", "--keep-last", "1", "--resume")
    assert wrong.exit_code == 2
    assert "is a cleanup report, not a prune report" in wrong.output
    stdout = prune(emu, manifest, Path("-"), "--keep-last", "1", "--resume")
    assert stdout.exit_code == 2
    assert "--resume needs a --report file to read, not standard output" in stdout.output


def test_rollback_resume_of_a_moved_create_report_is_refused(
    emulator_thread: Callable[..., Any], tmp_path: Path
) -> None:
    """rollback --resume naming the same run's create report at another path: exit 2, nothing done."""
    emu = emulator_thread(**world(1))
    source = create_report(tmp_path / "create.jsonl", [{}])
    report = tmp_path / "plan.jsonl"
    assert rollback(emu, source, report).exit_code == 0
    moved = tmp_path / "moved.jsonl"
    shutil.copy(source, moved)
    result = rollback(emu, moved, report, apply=True, resume=True)
    assert result.exit_code == 2
    assert "--resume: source_report is" in result.stderr
    assert "nothing was done" in result.stderr
    assert len(records(report)) == 1
    assert "POST /v2/{project_id}/cloudsnapshots/{snapshot_id}/rollback" not in emu.state()["requests"]
