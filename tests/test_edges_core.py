"""Edges of the run machinery that the main tests leave out: manifests read from standard input or cut
short, oversized or odd answers, rows stopped mid-run, routes that close under a row, reports that
cannot be written, and the tally of very large or swept reports."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import resource
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from orchestrator.actions import Action
from orchestrator.api import evs
from orchestrator.api.views import Snapshot
from orchestrator.emulator import EmulatorThread, ManualClock, RunningEmulator, SeedSnapshot
from orchestrator.errors import ManifestError, ReportUnwritable, RouteClosed
from orchestrator.manifest import ManifestSource, RawRow, read_rows
from orchestrator.models import Answer, Outcome, Record, RunHeader, SnapshotRequest, utc_iso
from orchestrator.progress import Progress
from orchestrator.report import ReportWriter
from orchestrator.retention import newest_first
from orchestrator.retry import RetryPolicy, retry_after
from orchestrator.runner import Runner, RunPlan
from orchestrator.sweep import sweep
from orchestrator.tally import LISTED_ROWS_MAX, Tally
from orchestrator.waiter import Waiter, WaitPlan
from tests.helpers import (
    AKSK,
    CREATE_ROUTE,
    LIST_ROUTE,
    PROJECT,
    ROLLBACK,
    SERVER,
    SNAPS,
    VOLUMES,
    answers,
    cli_args,
    create_args,
    csv_manifest,
    header,
    invoke,
    records,
    requests_of,
    restore_plan,
    restoring,
    router_for,
    snapshot_request,
    until,
    volume_ids,
    world,
)

IDS = volume_ids(4, seed=0xED6E)
EDGE_RUN = "20261127T035432Z-edge01"
OFFLINE = {"project_id": PROJECT, "region": "cn-north-4"}


def record(row: int, outcome: Outcome = Outcome.ACCEPTED, **fields: Any) -> Record:
    values: dict[str, Any] = {
        "run_id": EDGE_RUN,
        "row": row,
        "volume_id": IDS[row % len(IDS)],
        "project_id": PROJECT,
        "region": None,
        "name": f"n{row}",
        "outcome": outcome,
        "started_at": "2026-11-27T03:54:32.100Z",
        "finished_at": "2026-11-27T03:54:32.200Z",
        "elapsed_ms": 100,
        **fields,
    }
    return Record(**values)


def run_header(rows: int) -> RunHeader:
    return RunHeader(
        run_id=EDGE_RUN,
        command="create",
        manifest="m.csv",
        rows=rows,
        digest="sha256:00",
        shape={},
        started_at="2026-11-27T03:54:32.000Z",
    )


def report_of(path: Path, items: list[Record], rows: int) -> Path:
    """A create report written by hand: the run header, then ``items`` in order."""
    path.write_bytes(run_header(rows).to_json() + b"".join(item.to_json() for item in items))
    return path


def rows_of(path: Path, fmt: str | None = None, warn: Callable[[str], None] | None = None) -> list[RawRow]:
    return list(read_rows(ManifestSource.of(str(path), fmt), warn=warn))


# --- manifests -------------------------------------------------------------------------------
def test_manifest_on_standard_input_is_read_with_the_given_format() -> None:
    """``-`` with --format csv: standard input is spooled and read as CSV (both rows checked)."""
    data = f"volume_id\n{IDS[0]}\n{IDS[1]}\n".encode()
    result = invoke(cli_args("validate", "-", format="csv", **OFFLINE), input=data)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "2 rows: 2 would be sent, 0 with problems"


def test_more_unknown_columns_than_are_tracked_are_counted_as_more_than(write: Callable[..., Path]) -> None:
    """Past 50,000 distinct unknown columns the count line says "more than": the rest are not tracked."""
    columns = 50_001
    manifest = write(
        "wide.csv",
        "volume_id," + ",".join(f"c{i}" for i in range(columns)) + f"\n{IDS[0]}" + "," * columns + "\n",
    )
    result = invoke(cli_args("validate", manifest, **OFFLINE))
    assert result.exit_code == 0, result.output
    warnings = result.stderr.splitlines()
    assert len(warnings) == 11, warnings[:15]
    assert "more than 49,990 more unknown columns are ignored" in warnings[10]


def test_csv_row_with_more_cells_than_the_header_is_malformed(
    write: Callable[..., Path], tmp_path: Path
) -> None:
    """A CSV row with a cell past the header's last column is invalid (MALFORMED_ROW); the others go on."""
    manifest = write("m.csv", f"volume_id,name\n{IDS[0]},a,stray\n{IDS[1]},b\n")
    report = tmp_path / "r.jsonl"
    result = invoke(cli_args("create", manifest, report=report, dry_run=True, **OFFLINE))
    assert result.exit_code == 1, result.output
    got = {r["row"]: (r["outcome"], r["error_code"]) for r in records(report)}
    assert got == {1: ("invalid", "MALFORMED_ROW"), 2: ("planned", None)}


def test_json_number_at_the_very_end_is_read_before_the_missing_bracket_is_named(
    write: Callable[..., Path],
) -> None:
    """A JSON array cut right after a number: the rows before it are read, and the error names the end."""
    manifest = write("cut.json", orjson.dumps([{"volume_id": IDS[0]}])[:-1] + b", 12345")
    rows: list[RawRow] = []
    with pytest.raises(ManifestError) as caught:
        rows.extend(rows_of(manifest))
    assert (caught.value.line, caught.value.problem) == (
        1,
        "JSON syntax error: expected ',' or ']', found the end of the file",
    )


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"{ }", 'the JSON object has no "volumes" array'),
        (b'{"volumes": [], 7 : []}', "JSON syntax error: object keys must be strings"),
        (b'{\n  ["volumes"]: []}', "JSON syntax error: object keys must be strings"),
    ],
)
def test_json_object_without_volumes_or_with_a_number_as_key(
    write: Callable[..., Path], content: bytes, problem: str
) -> None:
    """An empty JSON object has no volumes array; a key that is not a string is a syntax error."""
    manifest = write("obj.json", content)
    with pytest.raises(ManifestError) as caught:
        rows_of(manifest)
    assert caught.value.problem == problem


# --- names -----------------------------------------------------------------------------------
def test_template_with_text_after_its_last_placeholder_keeps_that_text(
    write: Callable[..., Path], tmp_path: Path
) -> None:
    """``x-{volume_id}-end``: the fixed text after the last placeholder is checked and kept in the name."""
    manifest = write("m.csv", f"volume_id\n{IDS[0]}\n")
    report = tmp_path / "r.jsonl"
    result = invoke(
        cli_args(
            "create", manifest, report=report, dry_run=True, name_template="x-{volume_id}-end", **OFFLINE
        )
    )
    assert result.exit_code == 0, result.output
    [planned] = records(report)
    assert planned["name"] == f"x-{IDS[0]}-end"


def test_json_force_is_a_json_boolean(write: Callable[..., Path], tmp_path: Path) -> None:
    """In JSON, ``"force": true`` is taken as is; the text ``"yes"`` (a boolean in CSV) is INVALID_FORCE."""
    rows = [{"volume_id": IDS[0], "force": True}, {"volume_id": IDS[1], "force": "yes"}]
    manifest = write("m.json", orjson.dumps(rows))
    report = tmp_path / "r.jsonl"
    result = invoke(cli_args("create", manifest, report=report, dry_run=True, **OFFLINE))
    assert result.exit_code == 1, result.output
    got = {r["row"]: (r["outcome"], r["error_code"]) for r in records(report)}
    assert got == {1: ("planned", None), 2: ("invalid", "INVALID_FORCE")}


# --- records and answers ---------------------------------------------------------------------
def test_instants_in_other_zones_are_written_in_utc() -> None:
    """A time in UTC+8 is written as the same instant in UTC, with milliseconds and a Z."""
    moment = datetime(2026, 11, 27, 11, 54, 32, 100500, tzinfo=timezone(timedelta(hours=8)))
    assert utc_iso(moment) == "2026-11-27T03:54:32.100Z"
    assert utc_iso(moment.astimezone(UTC)) == "2026-11-27T03:54:32.100Z"


def test_request_body_without_metadata_or_marker_has_no_metadata() -> None:
    """A row with no metadata, sent without a marker, has no metadata key at all (nor a description)."""
    request = snapshot_request(IDS[0])
    assert request.body() == {"snapshot": {"volume_id": IDS[0], "force": False, "name": "n"}}
    assert request.body({"evs_snapshot_run": EDGE_RUN})["snapshot"]["metadata"] == {
        "evs_snapshot_run": EDGE_RUN
    }


@pytest.mark.parametrize("line", [b"[1, 2]", b'"accepted"', b"7"])
def test_report_line_that_is_not_an_object_is_not_a_record(line: bytes) -> None:
    """A report line holding an array, a string or a number is refused with ValueError."""
    with pytest.raises(ValueError, match="a report line must be a JSON object"):
        Record.from_json(line)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("<html>Bad Gateway</html>", ("502", None)),
        (None, ("502", None)),
        ({"detail": {"reason": "busy"}, "retry": 3}, ("502", None)),
        (
            {"detail": {"reason": "busy"}, "error": {"code": "APIG.0202", "message": "gone"}},
            ("APIG.0202", "gone"),
        ),
        ({"outer": {"inner": {"errorCode": "X.1", "errorMsg": None}}}, ("X.1", None)),
    ],
)
def test_error_of_an_answer_searches_nested_bodies_and_falls_back_to_the_status(
    body: Any, expected: tuple[str, str | None]
) -> None:
    """The error code comes from the first error-shaped object, however deep; none at all: the status."""
    assert Answer(status=502, body=body, request_id=None).error() == expected


def test_retry_after_date_without_a_zone_is_read_as_utc() -> None:
    """An HTTP date with ``-0000`` (no zone) counts from UTC: 10 s after ``now``."""
    now = datetime(2026, 11, 27, 3, 54, 22, tzinfo=UTC)
    assert retry_after("Fri, 27 Nov 2026 03:54:32 -0000", now) == 10.0
    assert retry_after("Fri, 27 Nov 2026 03:54:32 GMT", now) == 10.0


def test_snapshot_without_a_readable_creation_time_counts_as_newest() -> None:
    """No ``created_at`` (missing, null or empty) is unreadable, so such a snapshot sorts first (kept)."""
    old = {"id": "a", "created_at": "2026-01-01T00:00:00.000000"}
    missing = {"id": "b"}
    empty = {"id": "c", "created_at": ""}
    assert Snapshot.parse(missing).created is None
    assert Snapshot.parse(empty).created is None
    assert Snapshot.parse({"created_at": None}).created is None
    assert [s.id for s in newest_first(map(Snapshot.parse, [old, missing, empty]))] == ["c", "b", "a"]


# --- the tally -------------------------------------------------------------------------------
def test_summary_lists_at_most_a_thousand_rows_to_retry_but_counts_them_all(tmp_path: Path) -> None:
    """1,001 failed rows: ``rows_to_retry`` holds the first 1,000, the count says 1,001."""
    total = LISTED_ROWS_MAX + 1
    report = report_of(
        tmp_path / "r.jsonl",
        [record(row, Outcome.FAILED, error_code="EVS.5500") for row in range(1, total + 1)],
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
            record(1, snapshot_id="s1"),
            record(2, snapshot_id="s2"),
            record(1, Outcome.DUPLICATE_DELETED, snapshot_id="s1-extra"),
            record(2, Outcome.DUPLICATE_FOUND, snapshot_id="s2-extra", error_code="DELETE_FAILED"),
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
    failed = [record(row, Outcome.FAILED, error_code="UNCONFIRMED") for row in (1, 2)]
    for item in failed:
        tally.add(item)
    tally.replace(failed[0], record(1, snapshot_id="s1", reconciled=True))
    assert dict(tally.outcomes) == {"failed": 1, "accepted": 1}
    assert (dict(tally.codes), tally.to_act) == ({"UNCONFIRMED": 1}, {"failed": [2]})
    tally.replace(failed[1], record(2, snapshot_id="s2", reconciled=True))
    assert dict(tally.outcomes) == {"accepted": 2}
    assert (dict(tally.codes), tally.to_act, dict(tally.to_act_count)) == ({}, {}, {})
    assert tally.exit_code == 0


# --- reports that cannot be written ----------------------------------------------------------
def test_report_on_a_full_standard_output_says_why_and_names_the_marker() -> None:
    """--report - onto a full device: ReportUnwritable gives the OS's reason (not a broken pipe)."""
    with open("/dev/full", "w") as full, contextlib.redirect_stdout(full):
        writer = ReportWriter("-")
        with pytest.raises(ReportUnwritable) as caught:
            writer.write_header(run_header(1))
        writer.close()
    message = str(caught.value)
    assert "cannot write standard output: No space left on device" in message
    assert f"(metadata evs_snapshot_run={EDGE_RUN})" in message
    assert "broken pipe" not in message


@contextlib.contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """``ulimit -f`` for this process, for the ``with`` body only (Python ignores SIGXFSZ: writes fail EFBIG)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_report_file_that_cannot_grow_keeps_only_whole_records(tmp_path: Path) -> None:
    """A report file at its size limit: the record is refused (File too large), no torn line stays,
    and the message says to --resume."""
    path = tmp_path / "r.jsonl"
    first = record(1).to_json()
    with ReportWriter(str(path)) as writer:
        writer.write(record(1))
        with file_size_limit(len(first) + 10), pytest.raises(ReportUnwritable) as caught:
            writer.write(record(2))
    message = str(caught.value)
    assert f"cannot write the report {path}: {os.strerror(errno.EFBIG)}" in message
    assert "the run stopped after 1 records" in message
    assert "--resume" in message
    assert path.read_bytes() == first


# --- the runner ------------------------------------------------------------------------------
WRONG_SK = {"HUAWEICLOUD_SDK_SK": "not-the-secret-key-000000000000000000000"}
VOLUMES_TO_SNAPSHOT = volume_ids(16, seed=0xED6F)


def row_request(row: int) -> SnapshotRequest:
    return snapshot_request(VOLUMES_TO_SNAPSHOT[row], row, name=f"n{row}")


class StopsTheRun(ReportWriter):
    """A report writer that stops its runner once the first record is written."""

    runner: Runner | None = None

    def write(self, record: Record) -> None:
        super().write(record)
        if self.runner is not None:
            self.runner.stop()


async def test_rows_still_queued_when_the_run_stops_get_no_record(
    emulator: Callable[..., Any], tmp_path: Path
) -> None:
    """Stopped after the first record: queued rows are dropped unsent and no more rows are read."""
    emu = await emulator(any_volume=True)
    path = tmp_path / "r.jsonl"
    tally = Tally()
    read: list[int] = []

    def rows() -> Iterator[SnapshotRequest]:
        for row in range(1, 11):
            read.append(row)
            yield row_request(row)

    async with router_for(emu.url, AKSK) as router:
        writer = StopsTheRun(str(path))
        with writer:
            runner = Runner(
                RunPlan(run_id=EDGE_RUN, concurrency=1), router=router, writer=writer, tally=tally
            )
            writer.runner = runner
            await runner.run(rows())
    assert [r["row"] for r in records(path)] == [1]
    assert answers(emu, CREATE_ROUTE) == Counter({"202": 1})
    assert dict(tally.outcomes) == {"accepted": 1}
    assert len(read) < 10  # reading the manifest stopped too (it runs only a small buffer ahead)


@contextlib.asynccontextmanager
async def throttled_runner(
    emulator: Callable[..., Any], clock: ManualClock, tmp_path: Path, plan: RunPlan
) -> AsyncIterator[tuple[RunningEmulator, Runner]]:
    """A runner whose every create is answered 429: the emulator's one token is spent, its clock stands."""
    emu = await emulator(clock=clock, any_volume=True, rate_limit=1.0, burst=1)
    async with router_for(emu.url, AKSK) as router:
        route = await router.route_for(PROJECT, None)
        assert (await route.send(evs.show_volume(PROJECT, IDS[0]))).answer.status == 200
        with ReportWriter(str(tmp_path / "r.jsonl")) as writer:
            yield emu, Runner(plan, router=router, writer=writer, tally=Tally())


async def test_a_throttled_row_is_not_sent_again_once_the_run_stops(
    emulator: Callable[..., Any], clock: ManualClock, tmp_path: Path
) -> None:
    """A row being retried after 429s when the run stops: no more sends, and no record (left for --resume)."""
    plan = RunPlan(
        run_id=EDGE_RUN, concurrency=1, policy=RetryPolicy(max_attempts=100, initial_wait=0.02, max_wait=0.02)
    )
    async with throttled_runner(emulator, clock, tmp_path, plan) as (emu, runner):
        async with anyio.create_task_group() as group:
            group.start_soon(runner.run, [row_request(1)])
            await until(lambda: answers(emu, CREATE_ROUTE)["429"] >= 1)
            runner.stop()
            at_stop = answers(emu, CREATE_ROUTE).total()
        sent = answers(emu, CREATE_ROUTE)
        assert runner.tally.rows == 0
    assert set(sent) == {"429"}
    assert sent.total() <= at_stop + 1  # at most the one already on its way
    assert records(tmp_path / "r.jsonl") == []
    assert emu.world.snapshots == {}


async def test_the_deadline_ends_a_throttled_row_that_would_wait_long(
    emulator: Callable[..., Any], clock: ManualClock, tmp_path: Path
) -> None:
    """Throttled, with backoffs of up to 30 s and a deadline 0.3 s away: the wait is cut at the deadline
    and the row (never accepted) ends DEADLINE_EXCEEDED."""
    plan = RunPlan(
        run_id=EDGE_RUN,
        concurrency=1,
        policy=RetryPolicy(max_attempts=100, initial_wait=30.0, max_wait=30.0),
        deadline=time.monotonic() + 0.3,
    )
    async with throttled_runner(emulator, clock, tmp_path, plan) as (emu, runner):
        with anyio.fail_after(5):
            await runner.run([row_request(1)])
    [row] = records(tmp_path / "r.jsonl")
    assert (row["outcome"], row["error_code"], row["http_status"]) == ("failed", "DEADLINE_EXCEEDED", 429)
    assert row["attempts"] >= 1
    assert set(answers(emu, CREATE_ROUTE)) == {"429"}


async def test_a_row_being_looked_up_stops_with_the_run_and_progress_shows_the_lookups(
    emulator: Callable[..., Any], clock: ManualClock, tmp_path: Path
) -> None:
    """A 504 (the snapshot comes later): the row is looked up; stopping leaves it without a record, and
    the progress line counts the lookups."""
    emu = await emulator(clock=clock, any_volume=True, fault_late_commit=1.0, latency_ms=30)
    path = tmp_path / "r.jsonl"
    async with router_for(emu.url, AKSK) as router:
        with ReportWriter(str(path)) as writer:
            runner = Runner(
                RunPlan(run_id=EDGE_RUN, concurrency=1, settle=30.0),
                router=router,
                writer=writer,
                tally=Tally(),
            )
            async with anyio.create_task_group() as group:
                group.start_soon(runner.run, [row_request(1)])
                await until(lambda: answers(emu, CREATE_ROUTE)["504"] == 1)
                runner.stop()
        line = Progress(runner.tally, 1, io.StringIO(), router=router, runner=runner).line()
    assert records(path) == []
    assert answers(emu, CREATE_ROUTE) == Counter({"504": 1})
    lookups = answers(emu, LIST_ROUTE)["200"]
    assert lookups >= 1
    assert line.startswith("0/1 rows")
    assert "sent 1" in line
    assert f"lookups {lookups}" in line


async def test_a_route_refused_while_a_row_settles_leaves_the_row_unconfirmed(
    emulator: Callable[..., Any], clock: ManualClock, tmp_path: Path
) -> None:
    """After a 504 the token expires: the lookups are refused, the route closes, and the row (maybe
    created) is UNCONFIRMED for --resume, not 'not sent'."""
    emu = await emulator(clock=clock, any_volume=True, fault_late_commit=1.0, latency_ms=30)
    token, _, _ = emu.world.issue_token()
    path = tmp_path / "r.jsonl"
    async with router_for(emu.url, {"OS_AUTH_TOKEN": token}) as router:
        with ReportWriter(str(path)) as writer:
            runner = Runner(
                RunPlan(run_id=EDGE_RUN, concurrency=1, settle=0.2),
                router=router,
                writer=writer,
                tally=Tally(),
            )
            async with anyio.create_task_group() as group:
                group.start_soon(runner.run, [row_request(1)])
                await until(lambda: answers(emu, CREATE_ROUTE)["504"] == 1)
                clock.advance(emu.world.settings.token_ttl + 1)
        closures = router.closures()
    [row] = records(path)
    assert (row["outcome"], row["error_code"]) == ("failed", "UNCONFIRMED")
    assert "stopped sending (APIGW.0301)" in row["error_message"]
    assert "--resume looks again" in row["error_message"]
    assert answers(emu, LIST_ROUTE) == Counter({"401": 1})
    assert [c.code for c in closures] == ["APIGW.0301"]
    assert "credentials refused" in closures[0].message


def test_a_create_refused_outright_fails_its_row_and_the_rest_are_not_sent(
    emulator_thread: Callable[..., EmulatorThread], write: Callable[..., Path], tmp_path: Path
) -> None:
    """Rows naming their project (no quota check first) and a wrong secret: the first create is refused
    (401), its row fails with that answer, the others are not sent; exit 3."""
    emu = emulator_thread(any_volume=True)
    manifest = write("m.csv", "volume_id,project_id\n" + "".join(f"{v},{PROJECT}\n" for v in IDS[:3]))
    report = tmp_path / "r.jsonl"
    result = invoke(
        cli_args("create", manifest, endpoint=emu.url, report=report, concurrency=1), env=WRONG_SK
    )
    assert result.exit_code == 3, result.output
    got = {r["row"]: r for r in records(report)}
    assert (got[1]["outcome"], got[1]["http_status"], got[1]["error_code"]) == ("failed", 401, "APIGW.0301")
    assert got[1]["attempts"] == 1
    assert all(got[row]["outcome"] == "failed" and got[row]["http_status"] is None for row in (2, 3))
    assert all(got[row]["error_message"].startswith("not sent: ") for row in (2, 3))
    assert sum(emu.state()["requests"][CREATE_ROUTE].values()) == 1
    assert WRONG_SK["HUAWEICLOUD_SDK_SK"] not in result.output


async def test_a_disk_deleted_during_its_rollback_fails_the_row(
    emulator: Callable[..., Any], clock: ManualClock
) -> None:
    """The disk disappears while it rolls back (the clock stands still): VOLUME_NOT_FOUND, failed."""
    emu = await emulator(clock=clock, **world(1))

    async def delete_the_disk() -> None:
        await until(lambda: answers(emu, ROLLBACK)["202"] == 1)
        del emu.world.volumes[VOLUMES[0]]

    async with router_for(emu.url, AKSK) as router:
        route = await router.route_for(PROJECT, None)
        finding = await restoring(route, restore_plan(), delete_the_disk)
    assert (finding.outcome, finding.code) == (Action.FAILED, "VOLUME_NOT_FOUND")
    assert finding.message == f"disk {VOLUMES[0]} disappeared during the rollback"


async def test_a_disk_available_right_after_the_rollback_counts_once_settle_has_passed(
    emulator: Callable[..., Any], clock: ManualClock
) -> None:
    """A rollback over before the first poll (never seen rollbacking): the disk is polled until settle
    has passed, then the row is rolled back."""
    emu = await emulator(clock=clock, rollback_seconds=0.0, **world(1))
    async with router_for(emu.url, AKSK) as router:
        route = await router.route_for(PROJECT, None)
        finding = await restoring(route, restore_plan(settle=0.1))
        polls = route.counts["polls"]
    assert (finding.outcome, finding.code, finding.http_status) == (Action.ROLLED_BACK, None, 202)
    assert polls >= 2
    assert [r["snapshot_id"] for r in emu.world.rollbacks] == [SNAPS[0]]


async def test_a_rollback_refused_once_the_disk_was_attached_is_rejected(
    emulator: Callable[..., Any], clock: ManualClock
) -> None:
    """Throttled (the clock stands, the bucket is empty) until the disk is attached: the rollback is
    answered 400 and the row rejected with the service's reason; nothing rolls back."""
    emu = await emulator(clock=clock, rate_limit=1.0, burst=2, **world(1))

    async def attach_the_disk() -> None:
        await until(lambda: answers(emu, ROLLBACK)["429"] >= 1)
        emu.world.attach(emu.world.volumes[VOLUMES[0]], SERVER, None)
        clock.advance(10)  # the bucket fills again

    async with router_for(emu.url, AKSK) as router:
        route = await router.route_for(PROJECT, None)
        finding = await restoring(route, restore_plan(), attach_the_disk)
    assert (finding.outcome, finding.code, finding.http_status) == (Action.REJECTED, "EVS.5400", 400)
    assert finding.message is not None
    assert "current status is: in-use" in finding.message
    assert finding.attempts >= 2
    assert answers(emu, ROLLBACK)["400"] == 1
    assert emu.world.rollbacks == []


async def test_a_rollback_refused_for_the_credentials_stops_the_run(
    emulator: Callable[..., Any], clock: ManualClock
) -> None:
    """The token expires while the rollback is throttled: the 401 closes the route (RouteClosed, exit 3)."""
    emu = await emulator(clock=clock, rate_limit=1.0, burst=2, **world(1))
    token, _, _ = emu.world.issue_token()

    async def expire_the_token() -> None:
        await until(lambda: answers(emu, ROLLBACK)["429"] >= 1)
        clock.advance(emu.world.settings.token_ttl + 1)

    async with router_for(emu.url, {"OS_AUTH_TOKEN": token}) as router:
        route = await router.route_for(PROJECT, None)
        with pytest.RaisesGroup(pytest.RaisesExc(RouteClosed, match="APIGW.0301: credentials refused: ")):
            await restoring(route, restore_plan(), expire_the_token)
    assert answers(emu, ROLLBACK)["401"] == 1
    assert emu.world.rollbacks == []


# --- the sweep -------------------------------------------------------------------------------
def test_the_sweep_leaves_alone_marked_snapshots_of_a_disk_no_row_names(
    emulator_thread: Callable[..., EmulatorThread], write: Callable[..., Path], tmp_path: Path
) -> None:
    """Two snapshots with the run's marker on a disk that is not in the report: the sweep of the
    resumed run deletes neither and writes no duplicate record about them."""
    manifest = csv_manifest(write, IDS[:2])
    report = tmp_path / "r.jsonl"
    # A first run whose every create is answered 5xx and ends failed after a send: a run in doubt.
    short = ("--max-attempts", "1", "--settle", "0.1s", "--timeout", "1", "--backoff-initial", "0.01")
    short += ("--backoff-max", "0.05")
    failing = emulator_thread(any_volume=True, fault_5xx=1.0)
    assert invoke(create_args(failing.url, manifest, report, *short)).exit_code == 1
    run_id = header(report)["run_id"]
    (foreign,) = volume_ids(1, seed=0xED70)
    strays = tuple(
        SeedSnapshot(id=snapshot_id, volume_id=foreign, name="stray", metadata={"evs_snapshot_run": run_id})
        for snapshot_id in volume_ids(2, seed=0xED71)
    )
    emu = emulator_thread(any_volume=True, snapshots=strays)
    result = invoke(create_args(emu.url, manifest, report, *short, resume=True))
    assert result.exit_code == 0, result.output
    final = {r["row"]: r["outcome"] for r in records(report) if r["outcome"] not in ("failed",)}
    assert final == {1: "accepted", 2: "accepted"}
    assert not any(r["volume_id"] == foreign for r in records(report))
    state = emu.state()
    assert sorted(s["id"] for s in state["snapshots"] if s["volume_id"] == foreign) == sorted(
        s.id for s in strays
    )
    assert "DELETE /v2/{project_id}/cloudsnapshots/{snapshot_id}" not in state["requests"]
    assert requests_of(state, LIST_ROUTE)["200"] >= 2  # the sweep's listing, and its look at that disk
    assert "duplicates" not in result.output


async def test_a_second_snapshot_gone_before_the_sweep_looks_closer_is_not_deleted(
    emulator: Callable[..., Any], clock: ManualClock, tmp_path: Path
) -> None:
    """The listing shows two snapshots of the run on one disk, but the second is deleted (by someone
    else) before the sweep looks at that disk: nothing is a duplicate, nothing is deleted or recorded."""
    kept, extra = volume_ids(2, seed=0xED74)
    twins = tuple(
        SeedSnapshot(id=snapshot_id, volume_id=IDS[1], name="twin", metadata={"evs_snapshot_run": EDGE_RUN})
        for snapshot_id in (kept, extra)
    )
    emu = await emulator(clock=clock, latency_ms=30, snapshots=twins)
    path = report_of(tmp_path / "r.jsonl", [record(1, snapshot_id=kept)], 1)

    async def delete_the_second() -> None:
        await until(lambda: answers(emu, LIST_ROUTE)["200"] == 1)
        emu.world.delete_snapshot(emu.world.snapshots[extra])
        clock.advance(emu.world.settings.deleting_seconds)

    tally = Tally()
    async with router_for(emu.url, AKSK) as router:
        route = await router.route_for(PROJECT, None)
        with ReportWriter(str(path), resume=True) as writer:
            async with anyio.create_task_group() as group:
                group.start_soon(delete_the_second)
                result = await sweep(
                    [route],
                    run_id=EDGE_RUN,
                    report=path,
                    writer=writer,
                    tally=tally,
                    policy=RetryPolicy(max_attempts=8, initial_wait=0.01, max_wait=0.02),
                    keep_duplicates=False,
                    patience=1.0,
                    all_succeeded=True,
                )
    assert (result.found, result.removed, result.reconciled) == (0, 0, 0)
    assert answers(emu, LIST_ROUTE) == Counter({"200": 2})  # the listing, then the look at that disk
    assert "DELETE /v2/{project_id}/cloudsnapshots/{snapshot_id}" not in emu.world.requests
    assert [r["outcome"] for r in records(path)] == ["accepted"]
    assert not tally.duplicates


# --- waiting ---------------------------------------------------------------------------------
# More than one page of snapshots (1,000 a page); listed newest first, so SEEDED[0] is on page 2.
SEEDED = tuple(
    SeedSnapshot(id=snapshot_id, volume_id=volume_id, name=f"s{index}")
    for index, (snapshot_id, volume_id) in enumerate(
        zip(volume_ids(1001, seed=0xED72), volume_ids(1001, seed=0xED73), strict=True)
    )
)
SHOW_ROUTE = "GET /v2/{project_id}/cloudsnapshots/{snapshot_id}"


async def wait_throttled(
    emulator: Callable[..., Any], clock: ManualClock, tmp_path: Path, pending: list[int]
) -> tuple[RunningEmulator, dict[str, str]]:
    """Wait for the SEEDED snapshots ``pending`` names when only the first request of all gets through
    (the emulator's one token, its clock standing still); returns the emulator and the outcomes."""
    emu = await emulator(clock=clock, rate_limit=1.0, burst=1, snapshots=SEEDED)
    tally = Tally()
    async with router_for(emu.url, AKSK) as router:
        with ReportWriter(str(tmp_path / "w.jsonl")) as writer:
            waiter = Waiter(WaitPlan(timeout=0.1, interval=0.05), router=router, writer=writer, tally=tally)
            waiter.load(
                [
                    record(row, snapshot_id=SEEDED[index].id, snapshot_status="creating")
                    for row, index in enumerate(pending, start=1)
                ]
            )
            with anyio.fail_after(5):
                await waiter.run()
    return emu, {r["snapshot_id"]: r["outcome"] for r in records(tmp_path / "w.jsonl")}


async def test_a_throttled_second_page_settles_the_rows_of_the_first(
    emulator: Callable[..., Any], clock: ManualClock, tmp_path: Path
) -> None:
    """101 rows in a project of 1,001 snapshots, read page by page: the second page is throttled, so the
    100 rows on the first settle and the one on the second ends wait_timeout."""
    emu, outcomes = await wait_throttled(emulator, clock, tmp_path, list(range(101)))
    assert outcomes == {
        SEEDED[0].id: "wait_timeout",
        **{SEEDED[index].id: "available" for index in range(1, 101)},
    }
    assert answers(emu, LIST_ROUTE)["200"] == 1
    assert answers(emu, LIST_ROUTE)["429"] >= 1


async def test_a_throttled_query_by_id_falls_back_to_a_look_at_the_snapshot(
    emulator: Callable[..., Any], clock: ManualClock, tmp_path: Path
) -> None:
    """One row in a project of 1,001 snapshots is asked for by id; that query is throttled, so the
    snapshot is looked at by GET (throttled too) and the row ends wait_timeout, its status unknown."""
    emu, outcomes = await wait_throttled(emulator, clock, tmp_path, [500])
    assert outcomes == {SEEDED[500].id: "wait_timeout"}
    assert answers(emu, LIST_ROUTE)["200"] == 1
    assert answers(emu, SHOW_ROUTE)["429"] >= 1
    assert "200" not in answers(emu, SHOW_ROUTE)


async def test_a_snapshot_deleted_between_pages_shifts_a_row_off_them_and_a_get_finds_it(
    emulator: Callable[..., Any], clock: ManualClock, tmp_path: Path
) -> None:
    """Someone deletes a listed snapshot between the two pages: the second page comes back empty, so the
    row that moved to the first page is looked at by GET, and found available."""
    emu = await emulator(clock=clock, latency_ms=30, snapshots=SEEDED)

    async def delete_one_already_listed() -> None:
        await until(lambda: answers(emu, LIST_ROUTE)["200"] == 1)
        emu.world.delete_snapshot(emu.world.snapshots[SEEDED[1000].id])
        clock.advance(emu.world.settings.deleting_seconds)

    tally = Tally()
    async with router_for(emu.url, AKSK) as router:
        with ReportWriter(str(tmp_path / "w.jsonl")) as writer:
            waiter = Waiter(WaitPlan(timeout=5.0, interval=0.05), router=router, writer=writer, tally=tally)
            waiter.load([record(row, snapshot_id=SEEDED[row - 1].id) for row in range(1, 102)])
            async with anyio.create_task_group() as group:
                group.start_soon(delete_one_already_listed)
                await waiter.run()
    assert dict(tally.outcomes) == {"available": 101}
    assert waiter.round_requests == [3]  # two pages and one GET: one round
    assert answers(emu, LIST_ROUTE) == Counter({"200": 2})
    assert answers(emu, SHOW_ROUTE) == Counter({"200": 1})


async def test_a_look_at_a_snapshot_refused_for_the_credentials_stops_the_wait(
    emulator: Callable[..., Any], clock: ManualClock, tmp_path: Path
) -> None:
    """The query by id is throttled and the token expires before the GET that stands in for it: the
    401 closes the route and the wait stops (RouteClosed, exit 3), the row left as it was."""
    emu = await emulator(clock=clock, latency_ms=30, rate_limit=1.0, burst=1, snapshots=SEEDED)
    token, _, _ = emu.world.issue_token()

    async def expire_the_token() -> None:
        await until(lambda: answers(emu, LIST_ROUTE)["429"] == 1)
        clock.advance(emu.world.settings.token_ttl + 1)

    path = tmp_path / "w.jsonl"
    async with router_for(emu.url, {"OS_AUTH_TOKEN": token}) as router:
        with ReportWriter(str(path)) as writer:
            waiter = Waiter(WaitPlan(timeout=5.0, interval=0.05), router=router, writer=writer, tally=Tally())
            waiter.load([record(1, snapshot_id=SEEDED[500].id)])
            with pytest.RaisesGroup(pytest.RaisesExc(RouteClosed, match="APIGW.0301: credentials refused: ")):
                async with anyio.create_task_group() as group:
                    group.start_soon(expire_the_token)
                    await waiter.run()
    assert records(path) == []
    assert answers(emu, SHOW_ROUTE) == Counter({"401": 1})
