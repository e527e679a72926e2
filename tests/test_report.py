"""Report records round-trip through JSON; the writer appends whole lines; the reader tolerates a torn tail."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.errors import ReportExistsError, UsageError
from orchestrator.models import Outcome, Record, RunHeader, utc_iso, utc_iso_now, utc_now
from orchestrator.report import ReportWriter, RowSlots, final_records, read_header, read_records
from orchestrator.tally import Tally
from tests.helpers import (
    RUN,
    TWO_ROWS_HEADER,
    cli_args,
    create_args,
    csv_manifest,
    invoke,
    report_record,
    volume_ids,
)

text = st.none() | st.text(max_size=40)
records = st.builds(
    Record,
    run_id=st.text(min_size=1, max_size=12),
    row=st.integers(min_value=1, max_value=10**7),
    volume_id=text,
    project_id=text,
    region=text,
    name=text,
    outcome=st.sampled_from(Outcome),
    http_status=st.none() | st.integers(min_value=100, max_value=599),
    snapshot_id=text,
    snapshot_status=text,
    error_code=text,
    error_message=text,
    request_id=text,
    attempts=st.integers(min_value=0, max_value=100),
    reconciled=st.booleans(),
    started_at=st.text(max_size=30),
    finished_at=st.text(max_size=30),
    elapsed_ms=st.integers(min_value=0, max_value=10**9),
    snapshot_group_id=text,
)


@given(records)
@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_record_json_round_trip(record: Record) -> None:
    """Any record written as a JSON line reads back equal, as exactly one line."""
    line = record.to_json()
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert Record.from_dict(orjson.loads(line)) == record


@given(records)
@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_record_json_is_the_dataclass_json(record: Record) -> None:
    """``to_json`` writes the bytes orjson gives the record itself: every field, in field order, but
    ``snapshot_group_id`` only when the row's snapshot is a group's member (records of snapshots made
    alone read as before the field existed)."""
    whole = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
    names = [field.name for field in dataclasses.fields(Record)]
    if record.snapshot_group_id is None:
        whole = whole.replace(b',"snapshot_group_id":null}', b"}")
        names.remove("snapshot_group_id")
    assert record.to_json() == whole
    assert list(orjson.loads(record.to_json())) == names


def run_header(rows: int = 10, run_id: str = RUN) -> RunHeader:
    """The header every report starts with (the readers refuse a file without one)."""
    return RunHeader(
        run_id=run_id, command="create", manifest="m.csv", rows=rows, digest="", shape={}, started_at="s"
    )


def sample(row: int, outcome: Outcome = Outcome.ACCEPTED, code: str | None = None) -> Record:
    return Record(
        run_id=RUN,
        row=row,
        volume_id="v",
        project_id="p",
        region="cn-north-4",
        name="n",
        outcome=outcome,
        error_code=code,
        attempts=1,
        started_at="s",
        finished_at="f",
        elapsed_ms=1,
    )


def test_writer_appends_and_reader_skips_torn_tail(tmp_path: Path) -> None:
    """Records are appended whole; a last line cut by a crash is ignored; a bad middle line is an error."""
    path = tmp_path / "sub" / "r.jsonl"
    with ReportWriter(str(path)) as writer:
        writer.write_header(run_header())
        writer.write(sample(1))
        writer.write(sample(2))
    with path.open("ab") as handle:
        handle.write(sample(3).to_json()[:25])
    assert [r.row for r in read_records(path)] == [1, 2]
    path.write_bytes(run_header().to_json() + sample(1).to_json() + b"garbage\n" + sample(2).to_json())
    with pytest.raises(UsageError, match=r"r.jsonl:3"):
        list(read_records(path))


def test_writer_refuses_existing_report_without_resume(tmp_path: Path) -> None:
    """An existing non-empty report needs --resume; an empty one may be reused."""
    path = tmp_path / "r.jsonl"
    path.write_bytes(b"")
    ReportWriter(str(path)).close()
    path.write_bytes(run_header().to_json() + sample(1).to_json())
    with pytest.raises(ReportExistsError):
        ReportWriter(str(path))
    with ReportWriter(str(path), resume=True) as writer:
        writer.write(sample(2))
    assert [r.row for r in read_records(path)] == [1, 2]


def test_tally_and_summary_exit_codes() -> None:
    """The tally counts outcomes and failing error codes; exit 0 only when every row succeeded."""
    tally = Tally()
    tally.add(sample(1))
    assert tally.exit_code == 0
    tally.add(sample(2, Outcome.REJECTED, "EVS.5400"))
    tally.add(sample(3, Outcome.REJECTED, "EVS.5400"))
    summary = tally  # one counter now: the tally is the summary
    assert summary.outcomes == {"accepted": 1, "rejected": 2}
    assert dict(summary.codes) == {"EVS.5400": 2}
    assert summary.exit_code == 1
    assert "EVS.5400 x2" in summary.render()
    planned = Tally()
    planned.add(sample(1, Outcome.PLANNED))
    assert planned.exit_code == 0


BAD_ROWS = [-5, "3", 2.5, 1e20, 999999999, True, 0]


@pytest.fixture
def made_report(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> tuple[Any, Path, Path]:
    """An emulator, a two-row manifest and the report of a real create run of it."""
    emu = emulator_thread(any_volume=True, creating_seconds=0.2)  # a wait of its snapshots ends soon
    manifest = csv_manifest(write, volume_ids(2, seed=1809))
    report = tmp_path / "r.jsonl"
    assert invoke(create_args(emu.url, manifest, report, "--settle", "0.5s")).exit_code == 0
    return emu, manifest, report


def reading_commands(url: str, manifest: Path, report: Path, tmp_path: Path) -> dict[str, list[str]]:
    return {
        "summary": ["summary", str(report)],
        "wait": cli_args("wait", report, endpoint=url, poll_interval=0.1),
        "cleanup": cli_args("cleanup", report, endpoint=url, report=tmp_path / "c.jsonl"),
        "rollback": cli_args("rollback", report, endpoint=url, report=tmp_path / "b.jsonl"),
        "create --resume": create_args(url, manifest, report, "--resume"),
    }


@pytest.mark.parametrize("row", BAD_ROWS, ids=repr)
def test_a_record_with_an_impossible_row_is_a_file_error_in_every_command(
    made_report: tuple[Any, Path, Path], tmp_path: Path, row: object
) -> None:
    """Case 9 of issue 18: a row that is not a whole number from 1 to the header's rows: exit 2 with
    file:line in summary, wait, cleanup, rollback and create --resume, never 70, nothing sent."""
    emu, manifest, report = made_report
    lines = report.read_bytes().splitlines(keepends=True)
    bad = orjson.loads(lines[-1])
    bad["row"] = row
    report.write_bytes(b"".join(lines) + orjson.dumps(bad) + b"\n")
    before = emu.state()["requests"]
    for name, args in reading_commands(emu.url, manifest, report, tmp_path).items():
        result = invoke(args)
        assert result.exit_code == 2, (name, result.output)
        assert f"r.jsonl:{len(lines) + 1}:" in result.output, (name, result.output)
        assert "Traceback" not in result.output
    assert emu.state()["requests"] == before


def test_report_structure_is_checked_header_first_once_and_one_run(
    made_report: tuple[Any, Path, Path], tmp_path: Path
) -> None:
    """No header first, two headers (reports joined), a record of another run, rows below 0: exit 2 naming the line."""
    emu, manifest, report = made_report
    lines = report.read_bytes().splitlines(keepends=True)
    head = orjson.loads(lines[0])
    other = orjson.dumps({**head, "run_id": "20261207T000000Z-0ther0"}) + b"\n"
    foreign = orjson.dumps({**orjson.loads(lines[-1]), "run_id": "20261207T000000Z-0ther0"}) + b"\n"
    cases = {
        "no header": (b"".join(lines[1:]), "r.jsonl:1: a report starts with its run header"),
        "two headers": (b"".join(lines) + other, f"r.jsonl:{len(lines) + 1}: a second run header"),
        "two runs": (
            b"".join(lines) + foreign,
            "a record of run 20261207T000000Z-0ther0 in the report of run",
        ),
        "negative rows": (orjson.dumps({**head, "rows": -1}) + b"\n", "r.jsonl:1: not a run header"),
        "rows missing": (
            orjson.dumps({k: v for k, v in head.items() if k != "rows"}) + b"\n",
            "not a run header",
        ),
    }
    for case, (content, message) in cases.items():
        report.write_bytes(content)
        for name, args in reading_commands(emu.url, manifest, report, tmp_path).items():
            result = invoke(args)
            assert result.exit_code == 2, (case, name, result.output)
            assert message in result.output, (case, name, result.output)


def test_memory_follows_the_records_read_not_the_rows_a_header_claims(
    made_report: tuple[Any, Path, Path], tmp_path: Path
) -> None:
    """A header claiming a trillion rows over a two-row report: no command sizes memory by it (exit 70
    with a MemoryError before); the rows without a record are counted, and a resume is refused."""
    emu, manifest, report = made_report
    lines = report.read_bytes().splitlines(keepends=True)
    head = orjson.loads(lines[0])
    report.write_bytes(orjson.dumps({**head, "rows": 10**12}) + b"\n" + b"".join(lines[1:]))
    summary = invoke(["summary", str(report)])
    assert summary.exit_code == 1, summary.output
    assert "2 of 1000000000000 rows have a record" in summary.output
    resumed = invoke(create_args(emu.url, manifest, report, "--resume"))
    assert resumed.exit_code == 2, resumed.output
    assert "the manifest has 2 rows; the report's had 1000000000000" in resumed.output
    for args in reading_commands(emu.url, manifest, report, tmp_path).values():
        assert invoke(args).exit_code != 70


def test_row_slots_stay_flat_while_dense_and_go_sparse_far_beyond_the_rows_read() -> None:
    """RowSlots: dense rows in an array; one row far beyond the rows read switches to a dict, same values."""
    slots: RowSlots[int] = RowSlots("q", -1)
    for row in range(1, 1001):
        slots[row] = row * 2
    slots[10**12] = 7
    assert (slots[1], slots[1000], slots[1001], slots[10**12], slots[5 * 10**11]) == (2, 2000, -1, 7, -1)


def test_instants_in_other_zones_are_written_in_utc() -> None:
    """A time in UTC+8 is written as the same instant in UTC, with milliseconds and a Z."""
    moment = datetime(2026, 11, 27, 11, 54, 32, 100500, tzinfo=timezone(timedelta(hours=8)))
    assert utc_iso(moment) == "2026-11-27T03:54:32.100Z"
    assert utc_iso(moment.astimezone(UTC)) == "2026-11-27T03:54:32.100Z"


@pytest.mark.parametrize(
    ("micros", "shown"), [(0, ".000Z"), (5_999, ".005Z"), (42_000, ".042Z"), (999_999, ".999Z")]
)
def test_milliseconds_are_three_digits_cut_not_rounded(micros: int, shown: str) -> None:
    """A time's milliseconds are written as three digits, zero-padded, the microseconds cut off."""
    assert utc_iso(datetime(2026, 11, 27, 3, 54, 32, micros, tzinfo=UTC)) == "2026-11-27T03:54:32" + shown


def test_now_is_rendered_as_utc_iso_renders_it() -> None:
    """The run's own clock reading (``utc_iso_now``, no datetime) has utc_iso's form and instant."""
    before = utc_iso(utc_now())
    now = utc_iso_now()
    after = utc_iso(utc_now())
    assert before <= now <= after  # the same form: ISO strings order as their instants
    assert len(now) == len(before) == 24
    assert now.endswith("Z")
    assert now[19] == "."


@pytest.mark.parametrize("line", [b"[1, 2]", b'"accepted"', b"7"])
def test_report_line_that_is_not_an_object_is_not_a_record(line: bytes) -> None:
    """A report line holding an array, a string or a number is refused with ValueError."""
    with pytest.raises(ValueError, match="a report line must be a JSON object"):
        Record.from_dict(orjson.loads(line))


def test_torn_tail_longer_than_one_read_is_cut(tmp_path: Path) -> None:
    """A half-written last line longer than 64 KiB is cut back to the last whole line (or to nothing)."""
    report = tmp_path / "r.jsonl"
    whole = TWO_ROWS_HEADER.to_json() + report_record(1).to_json()
    report.write_bytes(whole + b'{"run_id": "' + b"x" * 70000)
    with ReportWriter(str(report), resume=True) as writer:
        assert not writer.empty
        writer.write(report_record(2))
    assert report.read_bytes() == whole + report_record(2).to_json()
    torn_only = tmp_path / "t.jsonl"
    torn_only.write_bytes(b"y" * 70000)
    with ReportWriter(str(torn_only), resume=True) as writer:
        assert writer.empty
    assert torn_only.read_bytes() == b""


def test_reader_skips_blank_and_torn_lines_and_refuses_damaged_ones(tmp_path: Path) -> None:
    """Blank lines and a torn last record are skipped; a damaged header or record mid-file names its line."""
    good = tmp_path / "good.jsonl"
    good.write_bytes(
        TWO_ROWS_HEADER.to_json() + b"\n   \n" + report_record(1).to_json() + b'{"run_id": "r", "row": 2}'
    )
    assert [r.row for r in read_records(good)] == [1]
    assert [r.row for r in final_records(good)] == [1]
    bad_header = tmp_path / "bad-header.jsonl"
    bad_header.write_bytes(b'{"type": "run", "command": "create"}\n' + report_record(1).to_json())
    with pytest.raises(UsageError, match=r"bad-header.jsonl:1: not a run header"):
        read_header(bad_header)
    bad_record = tmp_path / "bad-record.jsonl"
    bad_record.write_bytes(TWO_ROWS_HEADER.to_json() + b'{"row": 1}\n' + report_record(2).to_json())
    with pytest.raises(UsageError, match=r"bad-record.jsonl:2: not a report record"):
        list(read_records(bad_record))


def test_a_report_line_of_a_newer_version_or_broken_is_read_or_named(tmp_path: Path) -> None:
    """A record's unknown field is skipped (a newer writer); an unknown outcome, or a header whose shape is
    not an object, is exit 2 naming ``file:line``."""
    header = orjson.loads(TWO_ROWS_HEADER.to_json())
    rows = [orjson.loads(report_record(row).to_json()) for row in (1, 2)]
    path = tmp_path / "r.jsonl"

    def summary(*lines: dict[str, Any]) -> Any:
        path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
        return invoke(["summary", str(path)])

    newer = summary(header, {**rows[0], "written_by_a_newer_version": [1]}, rows[1])
    assert newer.exit_code == 0, newer.output
    assert newer.stdout.startswith("2 rows: 2 accepted")
    bogus = summary(header, {**rows[0], "outcome": "bogus"}, rows[1])
    assert bogus.exit_code == 2, bogus.output
    assert f"{path}:2:" in bogus.stderr
    assert "bogus" in bogus.stderr
    shaped = summary({**header, "shape": [1]}, *rows)
    assert shaped.exit_code == 2, shaped.output
    assert f"{path}:1: not a run header" in shaped.stderr
    assert "Traceback" not in newer.output + bogus.output + shaped.output
