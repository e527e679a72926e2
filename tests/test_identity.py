"""Exactly once on the real cloud: the run marker, late commits, the sweep, honest resume, no overlap."""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from orchestrator.emulator import EmulatorThread, ManualClock, SeedSnapshot, SeedVolume
from orchestrator.report import ReportWriter
from orchestrator.retry import RetryPolicy
from orchestrator.sweep import sweep
from orchestrator.tally import Tally
from tests.helpers import (
    AKSK,
    CORE_IDS,
    CREATE_ROUTE,
    DELETE,
    EDGE_RUN,
    LIST_ROUTE,
    MARKER,
    PROJECT,
    QUOTA_ROUTE,
    SNAPS,
    VOLUMES,
    LeapingClock,
    at_rest,
    create_args,
    create_report,
    csv_manifest,
    edge_record,
    header,
    hits,
    invoke,
    last_per_row,
    marker,
    records,
    report_of,
    requests_of,
    router_for,
    run_process,
    server_errors,
    snapshot_request,
    snapshots_per_volume,
    until,
    volume_ids,
    wait_for_records,
)

# FAST_RETRIES with a settle window of 0.1 s and backoff capped at 0.1 s: for runs with no late commit,
# where the window only decides how long a row in doubt waits (lookups pause min(0.5 s, --settle) first).
BRISK = ("--max-attempts", "12", "--backoff-initial", "0.02", "--backoff-max", "0.1", "--settle", "0.1")
BRISK += ("--timeout", "3")


def report_run_id(report: Path) -> str:
    """The run id the report's header names (``helpers.run_id_of`` makes one up from a name)."""
    return str(header(report)["run_id"])


@pytest.mark.no_cover
def test_every_snapshot_carries_the_run_marker_beside_user_metadata(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """Each created snapshot has evs_snapshot_run = the run id, and the row's own metadata too."""
    ids = volume_ids(5, seed=100)
    emu = emulator_thread(any_volume=True)
    report = tmp_path / "r.jsonl"
    result = invoke(create_args(emu.url, csv_manifest(write, ids), report, metadata="team=db"))
    assert result.exit_code == 0, result.output
    run_id = report_run_id(report)
    for snapshot in emu.state()["snapshots"]:
        assert snapshot["metadata"] == {"team": "db", MARKER: run_id}


def test_the_marker_key_cannot_be_set_by_the_user(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """--metadata evs_snapshot_run=... exits 2; a row that sets it is invalid RESERVED_METADATA_KEY."""
    emu = emulator_thread(any_volume=True)
    ids = volume_ids(2, seed=101)
    manifest = csv_manifest(write, ids)
    result = invoke(create_args(emu.url, manifest, tmp_path / "a.jsonl", metadata=f"{MARKER}=x"))
    assert result.exit_code == 2
    assert MARKER in result.stderr
    rows = write("m.jsonl", orjson.dumps({"volume_id": ids[0], "metadata": {MARKER: "x"}}).decode() + "\n")
    report = tmp_path / "b.jsonl"
    assert invoke(create_args(emu.url, rows, report)).exit_code == 1
    assert records(report)[0]["error_code"] == "RESERVED_METADATA_KEY"
    assert requests_of(emu.state(), CREATE_ROUTE) == Counter()


def test_a_second_same_day_run_never_takes_the_first_runs_snapshots(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """Same manifest, same default names, 5xx on the second run: its lookups find only its own snapshots."""
    ids = volume_ids(30, seed=102)
    emu = emulator_thread(any_volume=True, seed=102)
    manifest = csv_manifest(write, ids)
    first = tmp_path / "first.jsonl"
    assert invoke(create_args(emu.url, manifest, first)).exit_code == 0
    morning = {s["id"] for s in emu.state()["snapshots"]}
    marker = {MARKER: report_run_id(first)}
    # The afternoon's cloud: the morning's snapshots (same names, the first run's marker), and 5xx faults.
    seeded = emulator_thread(
        any_volume=True,
        seed=104,
        fault_5xx=0.3,
        fault_drop_after=0.1,
        snapshots=tuple(
            SeedSnapshot(id=r["snapshot_id"], volume_id=r["volume_id"], name=r["name"], metadata=marker)
            for r in records(first)
        ),
    )
    second = tmp_path / "second.jsonl"
    result = invoke(create_args(seeded.url, manifest, second, *BRISK))
    assert result.exit_code == 0, result.output
    final = last_per_row(second)
    assert {r["outcome"] for r in final.values()} == {"accepted"}
    assert any(r["reconciled"] for r in final.values()), "the faults must have made some lookups"
    assert not {r["snapshot_id"] for r in final.values()} & morning
    run_id = report_run_id(second)
    assert snapshots_per_volume(seeded.state(), run_id) == dict.fromkeys(ids, 1)


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_late_commits_within_the_settle_window_make_no_doubles(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """504 answered at once, the snapshot appearing 0.3 s later: rows are looked up, not resent; one each."""
    ids = volume_ids(20, seed=105)
    emu = emulator_thread(any_volume=True, seed=105, fault_late_commit=0.5, late_commit_seconds=0.3)
    report = tmp_path / "r.jsonl"
    # Lookups pause 0.5 s first: the second finds the snapshot, 1.7 s before the window closes.
    result = invoke(create_args(emu.url, csv_manifest(write, ids), report, settle="2s"))
    assert result.exit_code == 0, result.output
    final = last_per_row(report)
    assert {r["outcome"] for r in final.values()} == {"accepted"}
    assert sum(r["reconciled"] for r in final.values()) >= 5
    assert requests_of(emu.state(), CREATE_ROUTE)["504"] >= 5
    assert snapshots_per_volume(emu.state(), report_run_id(report)) == dict.fromkeys(ids, 1)
    assert not [r for r in records(report) if r["outcome"].startswith("duplicate")]


@pytest.mark.no_cover
def test_commits_later_than_the_settle_window_are_swept(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """A backend slower than --settle makes a second snapshot; the end-of-run sweep deletes it and says so."""
    ids = volume_ids(20, seed=106)
    clock = LeapingClock()
    emu = emulator_thread(
        clock=clock,
        any_volume=True,
        seed=106,
        fault_late_commit=0.3,
        late_commit_seconds=0.4,
        creating_seconds=0.2,
        deleting_seconds=0.1,
        rate_limit=1000,
    )
    report = tmp_path / "r.jsonl"
    result = invoke(
        create_args(emu.url, csv_manifest(write, ids), report, settle="0.1", max_rps=40, concurrency=2)
    )
    assert result.exit_code == 0, result.output
    side = [r for r in records(report) if r["outcome"] == "duplicate_deleted"]
    assert side, "with a settle window shorter than the backend lag, doubles must appear and be swept"
    assert "duplicates:" in result.stderr
    # A commit later than both the settle window and the create's sweep is caught by `wait`'s sweep.
    clock.leap(0.4)  # every commit still due has landed
    waited = invoke(["wait", str(report), "--endpoint", emu.url, "--poll-interval", "0.1"])
    assert waited.exit_code == 0, waited.output
    clock.leap(0.1)  # the emulator's deleting state (0.1 s) ends
    assert snapshots_per_volume(emu.state(), report_run_id(report)) == dict.fromkeys(ids, 1)
    kept = {r["volume_id"]: r["snapshot_id"] for r in last_per_row(report).values()}
    assert {s["volume_id"]: s["id"] for s in emu.state()["snapshots"]} == kept


@pytest.mark.parametrize("then", ["wait", "resume"])
def test_a_commit_after_the_run_ended_is_swept_by_the_next_wait_or_resume(
    then: str, emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """create --wait ends with every row available; a create it resent commits later (a second
    snapshot). The next `wait`, with nothing left to wait for, or `create --resume`, with nothing left
    to send, still sweeps (the journal shows the row sent twice), and deletes that second snapshot.
    Before, both ended at once: a resume that sent nothing had no project to list (found by hostile11)."""
    ids = volume_ids(10, seed=107)
    clock = LeapingClock()
    emu = emulator_thread(
        clock=clock,
        any_volume=True,
        seed=107,
        fault_late_commit=0.3,
        late_commit_seconds=30,
        creating_seconds=0,
        deleting_seconds=0.1,
    )
    report = tmp_path / "r.jsonl"
    args = create_args(
        emu.url, csv_manifest(write, ids), report, settle="0.1", concurrency=4, backoff_initial="0.01"
    )
    made = invoke([*args, "--wait", "--poll-interval", "0.05"])
    assert made.exit_code == 0, made.output
    assert {r["outcome"] for r in last_per_row(report).values()} == {"available"}
    run_id = report_run_id(report)
    assert snapshots_per_volume(emu.state(), run_id) == dict.fromkeys(ids, 1)
    clock.leap(30)  # the late commits land, after the run's own sweep
    extra = sum(n - 1 for n in snapshots_per_volume(emu.state(), run_id).values())
    assert extra, "a create answered 504 and sent again must commit a second snapshot late"
    creates = requests_of(emu.state(), CREATE_ROUTE)
    if then == "wait":
        result = invoke(["wait", str(report), "--endpoint", emu.url, "--poll-interval", "0.05"])
    else:
        result = invoke([*args, "--resume"])
    assert result.exit_code == 0, result.output
    assert requests_of(emu.state(), CREATE_ROUTE) == creates  # nothing sent again
    assert f"sweep: {extra} extra snapshots of this run found, {extra} deleted" in result.stderr
    clock.leap(0.1)  # the emulator's deleting state (0.1 s) ends
    kept = {r["volume_id"]: r["snapshot_id"] for r in last_per_row(report).values()}
    assert {s["volume_id"]: s["id"] for s in emu.state()["snapshots"]} == kept


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_the_sweep_lists_only_when_some_create_was_in_doubt(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """Every row sent once and answered for sure: no listing. A 5xx, or a resume after a process that
    was in doubt (a row sent twice): the sweep lists. A resume whose rows in flight are all found, after
    a process that was not in doubt, does not."""

    def sweep_requests(report: Path) -> dict[str, int]:
        summary = orjson.loads(report.with_suffix(".summary.json").read_bytes())
        return dict(summary["phases"]["sweep"]["requests"])

    ids = volume_ids(20, seed=130)
    manifest = csv_manifest(write, ids)
    sure = emulator_thread(any_volume=True)
    clean = tmp_path / "clean.jsonl"
    flags = {"summary_json": clean.with_suffix(".summary.json")}
    assert invoke(create_args(sure.url, manifest, clean, **flags)).exit_code == 0
    assert sweep_requests(clean) == {}
    assert requests_of(sure.state(), LIST_ROUTE) == Counter()

    # A process killed after 12 records, the others in flight (journalled as sent once, no answer
    # recorded): the resume finds them in its listing of the run, sends nothing, and nothing can be
    # doubled, so the sweep lists nothing.
    lines = clean.read_bytes().splitlines(keepends=True)
    finals = [n for n, line in enumerate(lines) if n and b'"outcome":"sending"' not in line]
    cut = b"".join(line for n, line in enumerate(lines) if n not in finals[12:])
    clean.write_bytes(cut)
    flags = {"summary_json": clean.with_suffix(".summary.json"), "resume": True}
    assert invoke(create_args(sure.url, manifest, clean, **flags)).exit_code == 0
    assert sweep_requests(clean) == {}
    assert snapshots_per_volume(sure.state(), report_run_id(clean)) == dict.fromkeys(ids, 1)

    # The same, but the earlier process had sent one of those rows twice (two journal lines): two
    # snapshots are possible, so the resume's sweep lists (and finds one snapshot each), and looks that
    # row's disk up by volume_id (the listing alone is no proof: issue 20).
    twice = next(line for line in cut.splitlines(keepends=True)[1:] if b'"outcome":"sending"' in line)
    clean.write_bytes(cut + twice)
    assert invoke(create_args(sure.url, manifest, clean, **flags)).exit_code == 0
    assert sweep_requests(clean) == {"lists": 1, "lookups": 1}
    assert snapshots_per_volume(sure.state(), report_run_id(clean)) == dict.fromkeys(ids, 1)

    # Answers of 500/503 (EVS may have acted): rows are looked up or resent, and the sweep lists.
    faulty = emulator_thread(any_volume=True, seed=130, fault_5xx=0.3)
    doubted = tmp_path / "doubted.jsonl"
    flags = {"summary_json": doubted.with_suffix(".summary.json")}
    result = invoke(create_args(faulty.url, manifest, doubted, *BRISK, **flags))
    assert result.exit_code == 0, result.output
    assert server_errors(requests_of(faulty.state(), CREATE_ROUTE))
    assert sweep_requests(doubted)["lists"] >= 1  # one page, sent again after a 5xx of its own
    assert snapshots_per_volume(faulty.state(), report_run_id(doubted)) == dict.fromkeys(ids, 1)


def test_keep_duplicates_reports_without_deleting(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """--keep-duplicates: duplicate_found records, nothing deleted."""
    ids = volume_ids(14, seed=107)
    emu = emulator_thread(any_volume=True, seed=107, fault_late_commit=0.4, late_commit_seconds=0.4)
    report = tmp_path / "r.jsonl"
    # Paced at 40 requests/s, the run (about 40 requests) lasts long enough for late commits to land.
    args = create_args(emu.url, csv_manifest(write, ids), report, settle="0.1", max_rps=40, concurrency=2)
    result = invoke([*args, "--keep-duplicates"])
    assert result.exit_code == 0, result.output
    found = [r for r in records(report) if r["outcome"] == "duplicate_found"]
    assert found
    assert "DELETE /v2/{project_id}/cloudsnapshots/{snapshot_id}" not in emu.state()["requests"]
    live = {s["id"] for s in emu.state()["snapshots"]}
    assert {r["snapshot_id"] for r in found} <= live  # every duplicate it reported is still there
    per_volume = snapshots_per_volume(emu.state(), report_run_id(report))
    assert sum(per_volume.values()) >= len(ids) + len(found)  # (a commit after the sweep adds one more)


def test_resume_refuses_another_manifest(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """--resume with more rows, a changed row or another template exits 2 naming it; nothing is sent."""
    ids = volume_ids(50, seed=108)
    emu = emulator_thread(any_volume=True)
    report = tmp_path / "r.jsonl"
    assert invoke(create_args(emu.url, csv_manifest(write, ids), report)).exit_code == 0
    sent = requests_of(emu.state(), CREATE_ROUTE)
    bigger = csv_manifest(write, volume_ids(200, seed=108), name="m.csv")
    result = invoke([*create_args(emu.url, bigger, report), "--resume"])
    assert result.exit_code == 2
    assert "200 rows" in result.stderr
    assert "50" in result.stderr
    edited = csv_manifest(write, [*ids[:10], ids[11], *ids[11:]], name="m.csv")
    result = invoke([*create_args(emu.url, edited, report), "--resume"])
    assert result.exit_code == 2
    assert "content differs" in result.stderr
    same = csv_manifest(write, ids, name="m.csv")
    result = invoke([*create_args(emu.url, same, report, name_template="other-{volume_id}"), "--resume"])
    assert result.exit_code == 2
    assert "name_template" in result.stderr
    assert requests_of(emu.state(), CREATE_ROUTE) == sent


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_wait_timeout_rows_are_waited_for_not_resent(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path, clock: ManualClock
) -> None:
    """create --wait that times out, then --resume --wait: no create is sent again; rows become available."""
    ids = volume_ids(10, seed=109)
    emu = emulator_thread(clock=clock, any_volume=True, creating_seconds=1.5)
    report = tmp_path / "r.jsonl"
    args = create_args(
        emu.url, csv_manifest(write, ids), report, wait=True, wait_timeout="0.2s", poll_interval=0.05
    )
    assert invoke(args).exit_code == 1  # the emulator's clock stands still: every snapshot stays creating
    assert {r["outcome"] for r in last_per_row(report).values()} == {"wait_timeout"}
    summary = invoke(["summary", str(report)])
    assert "evs-snapshot wait" in summary.stdout
    clock.advance(1.5)  # creating ends
    result = invoke(
        [*create_args(emu.url, csv_manifest(write, ids), report, wait=True, poll_interval=0.05), "--resume"]
    )
    assert result.exit_code == 0, result.output
    assert requests_of(emu.state(), CREATE_ROUTE) == Counter({"202": 10})
    assert {r["outcome"] for r in last_per_row(report).values()} == {"available"}


def test_two_runs_of_one_manifest_never_overlap(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """A second run of the same manifest exits 75 naming the holder's pid, whatever report it writes."""
    ids = volume_ids(80, seed=110)
    emu = emulator_thread(any_volume=True, latency_ms=50)
    manifest = csv_manifest(write, ids)
    with run_process(create_args(emu.url, manifest, tmp_path / "one.jsonl", concurrency=2)) as first:
        wait_for_records(tmp_path / "one.jsonl", 2, first)
        second = invoke(create_args(emu.url, manifest, tmp_path / "two.jsonl"))
        assert second.exit_code == 75
        assert f"process {first.pid}" in second.stderr
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=30)
    assert not (tmp_path / "two.jsonl").exists()
    assert not list(tmp_path.glob("*.lock"))  # no lock files beside reports


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_refused_keys_cost_at_most_two_requests_and_do_not_lock_the_ak(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """A wrong secret with --concurrency 64: at most 2 requests reach the gateway; the rerun is not locked."""
    ids = volume_ids(200, seed=111)
    emu = emulator_thread(any_volume=True, ak_lock_after=5, latency_ms=20)
    manifest = csv_manifest(write, ids)
    bad = invoke(
        create_args(emu.url, manifest, tmp_path / "bad.jsonl", concurrency=64),
        env={"HUAWEICLOUD_SDK_SK": "wrong"},
    )
    assert bad.exit_code == 3
    assert sum(requests_of(emu.state(), CREATE_ROUTE).values()) <= 2
    final = last_per_row(tmp_path / "bad.jsonl")
    assert len(final) == 200
    assert sum(r["attempts"] for r in final.values()) <= 2
    good = invoke(create_args(emu.url, manifest, tmp_path / "good.jsonl", concurrency=64))
    assert good.exit_code == 0, good.output


@pytest.mark.no_cover
def test_least_privilege_user_finds_the_project_through_auth_projects(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """GET /v3/projects answers 403: the lookup falls back to /v3/auth/projects and the run succeeds."""
    ids = volume_ids(5, seed=112)
    emu = emulator_thread(any_volume=True, iam_deny_list_projects=True)
    report = tmp_path / "r.jsonl"
    args = [
        "create",
        str(csv_manifest(write, ids)),
        "--endpoint",
        emu.url,
        "--iam-endpoint",
        emu.url,
        "--region",
        "cn-north-4",
        "--report",
        str(report),
    ]
    result = invoke(args)
    assert result.exit_code == 0, result.output
    assert requests_of(emu.state(), "GET /v3/projects") == Counter({"403": 1})
    assert requests_of(emu.state(), "GET /v3/auth/projects") == Counter({"200": 1})


@pytest.mark.no_cover
def test_a_wrong_project_closes_its_route(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """AK/SK with another project: the first answer (400 EVS.0001) closes it; rows fail with attempts 0; exit 3."""
    ids = volume_ids(40, seed=113)
    emu = emulator_thread(any_volume=True)
    report = tmp_path / "r.jsonl"
    args = [
        "create",
        str(csv_manifest(write, ids)),
        "--endpoint",
        emu.url,
        "--project-id",
        "f" * 32,
        "--report",
        str(report),
        "--concurrency",
        "16",
    ]
    result = invoke(args)
    assert result.exit_code == 3
    assert "wrong project" in result.stderr
    final = last_per_row(report)
    assert {r["error_code"] for r in final.values()} == {"EVS.0001"}
    # One request reached the service (the quota pre-flight, refused with EVS.0001); no create was sent.
    assert sum(sum(statuses.values()) for statuses in emu.state()["requests"].values()) == 1
    assert sum(r["attempts"] for r in final.values()) == 0


@pytest.mark.no_cover
def test_validate_online_retries_throttling_and_5xx(
    emulator_thread: Callable[..., Any], write: Callable[..., Path]
) -> None:
    """Under a 100/s limit (a bucket of 2, under the 16 requests its slow start lets out at once) and 20%
    5xx, validate --online retries: every row checks clean, exit 0."""
    ids = volume_ids(30, seed=114)
    emu = emulator_thread(any_volume=True, rate_limit=100, burst=2, fault_5xx=0.2, seed=114)
    result = invoke(
        [
            "validate",
            str(csv_manifest(write, ids)),
            "--online",
            "--endpoint",
            emu.url,
            "--project-id",
            "0123456789abcdef0123456789abcdef",
            "--backoff-initial",
            "0.05",
            "--backoff-max",
            "0.5",
            "--max-attempts",
            "12",
        ]
    )
    assert result.exit_code == 0, result.output
    assert "30 rows: 30 would be sent (checked online), 0 with problems" in result.stdout
    volume_gets = requests_of(emu.state(), "GET /v2/{project_id}/cloudvolumes/{volume_id}")
    assert volume_gets["200"] == 30
    assert volume_gets["429"] > 0
    assert volume_gets["500"] + volume_gets["502"] + volume_gets["503"] > 0


def test_validate_counts_only_what_the_service_counts(
    emulator_thread: Callable[..., Any], write: Callable[..., Path]
) -> None:
    """Backup-made and deleting snapshots do not count toward the 7 per disk; 7 manual ones do."""
    free, full = volume_ids(2, seed=115)
    snaps = [
        *(
            SeedSnapshot(
                id=f"00000000-0000-4000-8000-0000000001{i:02d}", volume_id=free, name=f"autobk_snapshot_{i}"
            )
            for i in range(6)
        ),
        *(
            SeedSnapshot(
                id=f"00000000-0000-4000-8000-0000000002{i:02d}",
                volume_id=free,
                name=f"m{i}",
                status="deleting",
            )
            for i in range(3)
        ),
        *(
            SeedSnapshot(id=f"00000000-0000-4000-8000-0000000003{i:02d}", volume_id=full, name=f"m{i}")
            for i in range(7)
        ),
    ]
    emu = emulator_thread(any_volume=True, snapshots=tuple(snaps))
    result = invoke(
        [
            "validate",
            str(csv_manifest(write, [free, full])),
            "--online",
            "--endpoint",
            emu.url,
            "--project-id",
            "0123456789abcdef0123456789abcdef",
        ]
    )
    assert result.exit_code == 1
    assert "1 with problems (SNAPSHOT_LIMIT_REACHED x1)" in result.stdout
    assert full in result.stdout
    assert free not in result.stdout


def test_deadline_holds_and_cancels_requests_in_flight(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """--deadline 1s, 0.6 s per answer: the first create is cut in flight (UNCONFIRMED), the rest DEADLINE_EXCEEDED."""
    ids = volume_ids(20, seed=116)
    emu = emulator_thread(any_volume=True, latency_ms=600)
    report = tmp_path / "r.jsonl"
    # The quota pre-flight takes the first 0.6 s; the first create goes out then (0.4 s before the
    # deadline, for the run's own set-up) and is cut at 1 s, as its answer is due at 1.2 s at the earliest.
    result = invoke(create_args(emu.url, csv_manifest(write, ids), report, deadline="1s", concurrency=4))
    assert result.exit_code == 1
    codes = Counter(r["error_code"] for r in last_per_row(report).values())
    assert sum(codes.values()) == 20, codes
    assert codes["UNCONFIRMED"] >= 1  # the one request in flight (credentials not yet proven)
    assert codes["UNCONFIRMED"] + codes["DEADLINE_EXCEEDED"] == 20
    # The deadline holds, counted: the emulator saw the quota check and at most one create a slot, each
    # cancelled in flight (dropped, not awaited), and nothing after (no second attempt, lookup or listing).
    state = at_rest(emu)
    assert set(state["requests"]) == {QUOTA_ROUTE, CREATE_ROUTE}, state["requests"]
    assert set(requests_of(state, CREATE_ROUTE)) == {"dropped"}
    assert sum(requests_of(state, CREATE_ROUTE).values()) <= codes["UNCONFIRMED"] <= 4  # --concurrency
    assert {r["attempts"] for r in last_per_row(report).values()} <= {0, 1}


@pytest.mark.no_cover
def test_settle_lookups_that_keep_failing_end_unconfirmed(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """Every create answered 504 and every lookup failing: rows end UNCONFIRMED; --resume looks them up."""
    ids = volume_ids(4, seed=117)
    emu = emulator_thread(any_volume=True, fault_late_commit=1.0, late_commit_seconds=0.1, fault_list=1.0)
    report = tmp_path / "r.jsonl"
    args = create_args(emu.url, csv_manifest(write, ids), report, *BRISK)
    result = invoke([*args, "--max-attempts", "3"])
    assert result.exit_code == 1
    final = last_per_row(report)
    assert {r["error_code"] for r in final.values()} == {"UNCONFIRMED"}
    assert all(
        "the last lookup's: GET " in r["error_message"] for r in final.values()
    )  # not only the create's
    assert requests_of(emu.state(), LIST_ROUTE)["503"] >= 4 * 3  # 3 lookups a row at least
    assert "--resume" in invoke(["summary", str(report)]).stdout


def test_request_body_without_metadata_or_marker_has_no_metadata() -> None:
    """A row with no metadata, sent without a marker, has no metadata key at all (nor a description)."""
    request = snapshot_request(CORE_IDS[0])
    assert request.body() == {"snapshot": {"volume_id": CORE_IDS[0], "force": False, "name": "n"}}
    assert request.body({"evs_snapshot_run": EDGE_RUN})["snapshot"]["metadata"] == {
        "evs_snapshot_run": EDGE_RUN
    }


def test_the_sweep_leaves_alone_marked_snapshots_of_a_disk_no_row_names(
    emulator_thread: Callable[..., EmulatorThread], write: Callable[..., Path], tmp_path: Path
) -> None:
    """Two snapshots with the run's marker on a disk that is not in the report: the sweep of the
    resumed run deletes neither and writes no duplicate record about them."""
    manifest = csv_manifest(write, CORE_IDS[:2])
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
        SeedSnapshot(
            id=snapshot_id, volume_id=CORE_IDS[1], name="twin", metadata={"evs_snapshot_run": EDGE_RUN}
        )
        for snapshot_id in (kept, extra)
    )
    emu = await emulator(clock=clock, latency_ms=30, snapshots=twins)
    path = report_of(tmp_path / "r.jsonl", [edge_record(1, snapshot_id=kept)], 1)

    async def delete_the_second() -> None:
        await until(lambda: hits(emu, LIST_ROUTE)["200"] == 1)
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
    assert hits(emu, LIST_ROUTE) == Counter({"200": 2})  # the listing, then the look at that disk
    assert "DELETE /v2/{project_id}/cloudsnapshots/{snapshot_id}" not in emu.world.requests
    assert [r["outcome"] for r in records(path)] == ["accepted"]
    assert not tally.duplicates


def test_sweep_reconciles_a_row_and_reports_a_duplicate_it_cannot_delete(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path
) -> None:
    """wait's sweep: a failed row whose snapshot exists gets an accepted record (reconciled); a duplicate
    still creating cannot be deleted and is reported DELETE_FAILED; a marked snapshot of a disk not in
    the report is left alone."""
    volumes = tuple(SeedVolume(volume_id=VOLUMES[i]) for i in range(3))
    snapshots = (
        SeedSnapshot(id=SNAPS[0], volume_id=VOLUMES[0], name="pre-maint-0", metadata=marker()),
        SeedSnapshot(
            id=SNAPS[3], volume_id=VOLUMES[0], name="pre-maint-0", metadata=marker(), status="creating"
        ),
        SeedSnapshot(id=SNAPS[1], volume_id=VOLUMES[1], name="pre-maint-1", metadata=marker()),
        SeedSnapshot(id=SNAPS[2], volume_id=VOLUMES[2], name="other", metadata=marker()),
    )
    emu = emulator_thread(volumes=volumes, snapshots=snapshots)
    failed = {"outcome": "failed", "snapshot_id": None, "http_status": None, "error_code": "UNCONFIRMED"}
    report = create_report(tmp_path / "create.jsonl", [{}, failed])
    result = invoke(
        ["wait", str(report), "--endpoint", emu.url, "--poll-interval", "0.05", "--wait-timeout", "5s"]
    )
    written = records(report)[2:]
    by_outcome = Counter(r["outcome"] for r in written)
    assert by_outcome == {"accepted": 1, "duplicate_found": 1, "available": 1}, written
    reconciled = next(r for r in written if r["outcome"] == "accepted")
    assert (reconciled["row"], reconciled["snapshot_id"], reconciled["reconciled"]) == (2, SNAPS[1], True)
    duplicate = next(r for r in written if r["outcome"] == "duplicate_found")
    assert (duplicate["row"], duplicate["snapshot_id"], duplicate["error_code"]) == (
        1,
        SNAPS[3],
        "DELETE_FAILED",
    )
    assert "delete failed: 400 EVS.1047" in duplicate["error_message"]
    assert "sweep: 1 extra snapshots of this run found, 0 deleted" in result.output
    assert result.exit_code == 0, result.output
    state = {s["id"]: s["status"] for s in emu.state()["snapshots"]}
    assert state[SNAPS[2]] == "available"
    assert DELETE in emu.state()["requests"]
