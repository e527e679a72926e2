"""Bounded arguments: durations, paths under a file, the demo's disk states, and ``--rows`` ranges."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator import __version__
from orchestrator.emulator import EmulatorThread
from orchestrator.options import RowRanges
from tests.helpers import (
    API_IDS,
    CLOSED_PORT,
    PROJECT,
    create_args,
    csv_manifest,
    invoke,
    records,
    seeds,
    volume_ids,
)

IDS = volume_ids(3)


def manifest(write: Callable[..., Path], name: str = "m.csv") -> Path:
    return write(name, "volume_id\n" + "".join(f"{volume}\n" for volume in IDS))


def command_args(command: str, emu: EmulatorThread, source: Path, tmp_path: Path) -> list[str]:
    """The arguments of a command that would send requests to ``emu`` if its options were accepted."""
    head = [command, str(source), "--endpoint", emu.url, "--project-id", PROJECT]
    if command in ("create", "prune"):
        head += ["--report", str(tmp_path / f"{command}.jsonl")]
    if command == "prune":
        head += ["--keep-last", "1"]
    return head


@pytest.mark.parametrize(
    ("command", "extra", "fragment"),
    [
        ("create", ["--deadline", "0"], "--deadline"),
        ("create", ["--deadline", "0s"], "--deadline"),
        ("create", ["--deadline", "0d0h0m0.0s"], "--deadline"),
        ("create", ["--settle", "36526d"], "100 years"),
        ("create", ["--wait", "--wait-timeout", "99999999d"], "100 years"),
        ("audit", ["--max-age", "36526d"], "100 years"),
        ("audit", ["--max-age", "9999999d"], "100 years"),
        ("audit", ["--max-age", "0"], "--max-age"),
        ("prune", ["--keep-within", "40000d"], "100 years"),
        ("prune", ["--keep-within", "9" * 400 + "d"], "100 years"),
    ],
)
def test_durations_out_of_bounds_are_usage_errors(
    emulator_thread: Callable[..., EmulatorThread],
    write: Callable[..., Path],
    tmp_path: Path,
    command: str,
    extra: list[str],
    fragment: str,
) -> None:
    """--deadline 0 and durations beyond 100 years exit 2, naming the bound, before anything is sent."""
    emu = emulator_thread(volumes=seeds(IDS))
    result = invoke([*command_args(command, emu, manifest(write), tmp_path), *extra])
    assert result.exit_code == 2, result.stderr
    assert fragment in result.stderr
    assert emu.state()["requests"] == {}


def test_durations_at_the_bounds_are_accepted(
    emulator_thread: Callable[..., EmulatorThread], write: Callable[..., Path], tmp_path: Path
) -> None:
    """A 100-year --deadline and --max-age, and a zero --settle, are still accepted."""
    emu = emulator_thread(volumes=seeds(IDS))
    source = manifest(write)
    args = [*command_args("create", emu, source, tmp_path), "--dry-run", "--deadline", "36525d"]
    result = invoke([*args, "--settle", "0"])
    assert result.exit_code == 0, result.stderr
    result = invoke([*command_args("audit", emu, source, tmp_path), "--max-age", "36525d"])
    assert result.exit_code == 1, result.stderr  # runs: no disk has a snapshot of the tool yet


@pytest.mark.parametrize(
    ("option", "leaf"),
    [
        ("--report", "run.jsonl"),
        ("--report", "deeper/run.jsonl"),
        ("--summary-json", "summary.json"),
        ("--metrics-file", "deeper/metrics.prom"),
    ],
)
@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_a_path_under_a_file_names_that_file(
    emulator_thread: Callable[..., EmulatorThread],
    write: Callable[..., Path],
    tmp_path: Path,
    option: str,
    leaf: str,
) -> None:
    """somefile/run.jsonl: exit 2 saying that somefile is a file, not a directory; nothing is sent."""
    emu = emulator_thread(volumes=seeds(IDS))
    blocker = write("somefile", "")
    result = invoke([*command_args("create", emu, manifest(write), tmp_path), option, str(blocker / leaf)])
    assert result.exit_code == 2, result.stderr
    assert f"{blocker} is a file, not a directory" in result.stderr
    assert emu.state()["requests"] == {}
    assert blocker.read_bytes() == b""


def test_action_report_under_a_file_names_that_file(
    emulator_thread: Callable[..., EmulatorThread], write: Callable[..., Path], tmp_path: Path
) -> None:
    """prune --report somefile/prune.jsonl: exit 2 saying that somefile is a file, not a directory."""
    emu = emulator_thread(volumes=seeds(IDS))
    blocker = write("somefile", "")
    args = [*command_args("prune", emu, manifest(write), tmp_path), "--report", str(blocker / "p.jsonl")]
    result = invoke(args)
    assert result.exit_code == 2, result.stderr
    assert f"{blocker} is a file, not a directory" in result.stderr
    assert emu.state()["requests"] == {}


@pytest.mark.parametrize("status", ["bogus", "Available", "snapshotting"])
def test_emulator_refuses_a_status_that_is_not_a_disk_state(
    write: Callable[..., Path], tmp_path: Path, status: str
) -> None:
    """--emulator with emulator_status that no disk has: exit 2 naming file:line and the known states."""
    source = write(
        "demo.csv",
        f"volume_id,emulator_status\n{IDS[0]},in-use\n{IDS[1]},{status}\n{IDS[2]},missing\n",
    )
    report = tmp_path / "demo.jsonl"
    result = invoke(["create", str(source), "--emulator", "--report", str(report)])
    assert result.exit_code == 2, result.stderr
    assert f"{source}:3: emulator_status {status!r} is not a disk state" in result.stderr
    assert "available, awaiting-transfer" in result.stderr
    assert result.stderr.rstrip().endswith("missing)")
    assert not report.exists()


def test_emulator_takes_every_known_state(write: Callable[..., Path], tmp_path: Path) -> None:
    """--emulator with in-use, error and missing disks runs, each row getting its state's outcome."""
    source = write(
        "demo.json",
        f'[{{"volume_id": "{IDS[0]}", "emulator_status": "in-use"}},'
        f' {{"volume_id": "{IDS[1]}", "emulator_status": "error"}},'
        f' {{"volume_id": "{IDS[2]}", "emulator_status": null}}]',
    )
    report = tmp_path / "demo.jsonl"
    result = invoke(["create", str(source), "--emulator", "--report", str(report), "--settle", "0.3"])
    assert result.exit_code == 1, result.stderr
    assert [record["outcome"] for record in records(report)] == ["rejected", "rejected", "accepted"]


@given(st.lists(st.tuples(st.integers(1, 60), st.integers(0, 20)), min_size=1, max_size=8))
def test_row_ranges_behave_as_the_set_they_name(spans: list[tuple[int, int]]) -> None:
    """RowRanges: membership, count, last and text agree with the expanded set, for any ranges."""
    text = ",".join(f"{first}-{first + length}" if length else str(first) for first, length in spans)
    chosen = RowRanges.parse(text)
    expanded = {row for first, length in spans for row in range(first, first + length + 1)}
    assert {row for row in range(90) if row in chosen} == expanded
    assert (chosen.count, chosen.last) == (len(expanded), max(expanded))
    assert RowRanges.parse(str(chosen)) == chosen
    assert hash(RowRanges.parse(str(chosen))) == hash(chosen)
    assert repr(chosen) == f"RowRanges({str(chosen)!r})"
    assert str(max(expanded)) not in chosen  # a row is a number, never its text
    present = set(range(1, 90, 2))
    assert chosen.absent(present, limit=5) == sorted(expanded - present)[:5]


SPANS = st.lists(st.tuples(st.integers(1, 40), st.integers(0, 12)), min_size=1, max_size=5)


@given(SPANS, SPANS)
@pytest.mark.no_cover
def test_row_ranges_within_is_the_subset_of_the_sets_they_name(
    mine: list[tuple[int, int]], theirs: list[tuple[int, int]]
) -> None:
    """``a.within(b)`` (a rollback's --resume choosing fewer rows) holds exactly when a's rows are b's."""
    texts = [",".join(f"{first}-{first + length}" for first, length in spans) for spans in (mine, theirs)]
    a, b = (RowRanges.parse(text) for text in texts)
    rows = [{row for row in range(60) if row in chosen} for chosen in (a, b)]
    assert a.within(b) == (rows[0] <= rows[1])
    assert a.within(a)


def test_row_ranges_never_expand() -> None:
    """A range of 10**14 rows is two numbers: its count, membership and absent rows cost no memory."""
    chosen = RowRanges.parse("1-99999999999999")
    assert chosen.count == 99999999999999
    assert 99999999999999 in chosen
    assert 10**14 not in chosen
    assert chosen.absent(set(range(1, 1001)), limit=3) == [1001, 1002, 1003]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("9" * 5000, "a row number of 5000 digits is not a row"),
        ("3,", "an empty part"),
        ("0-2", "rows are numbered from 1"),
        ("9-7", "a range must go up"),
    ],
)
def test_rows_that_are_not_rows_are_usage_errors(text: str, message: str) -> None:
    """--rows: an empty part, row 0, a range going down, or a number too long to read: exit 2, named."""
    result = invoke(["release", "--snapshot", "a", "--project-id", "p", "--rows", text])
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        pytest.param(["--timeout", "abc"], "'abc' is not a number", id="not-a-number"),
        pytest.param(["--timeout", "0.01"], "0.01 is below the minimum 0.1", id="below"),
        pytest.param(["--max-rps", "1e6"], "1e6 is above the maximum 100000", id="above"),
    ],
)
def test_numbers_outside_their_range_are_usage_errors(
    extra: list[str], message: str, write: Callable[..., Path], tmp_path: Path
) -> None:
    """A number outside its option's range is a usage error (exit 2) naming it; no report is written."""
    report = tmp_path / "r.jsonl"
    result = invoke(create_args(CLOSED_PORT, csv_manifest(write, API_IDS[:1]), report, *extra, "--dry-run"))
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert not report.exists()


def test_localhost_counts_as_loopback_for_plain_http(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """--endpoint http://localhost:PORT is allowed (plain http to loopback) and reaches the emulator."""
    emu = emulator_thread(any_volume=True)
    url = emu.url.replace("127.0.0.1", "localhost")
    report = tmp_path / "r.jsonl"
    result = invoke(create_args(url, csv_manifest(write, API_IDS[:1]), report, "--settle", "0.5"))
    assert result.exit_code == 0, result.output
    assert [record["outcome"] for record in records(report)] == ["accepted"]
    assert len(emu.state()["snapshots"]) == 1


def test_version_option_prints_and_exits_0() -> None:
    """--version prints the program name and version and exits 0."""
    result = invoke(["--version"])
    assert result.exit_code == 0
    assert f"evs-snapshot, version {__version__}" in result.output
