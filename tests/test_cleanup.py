"""cleanup: one create run's snapshots go, each only after its marker and volume are checked."""

from __future__ import annotations

import re
import signal
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from orchestrator import deleter
from orchestrator.createrun import run_of
from orchestrator.emulator import EmulatorThread, ManualClock, SeedSnapshot, SeedVolume
from tests.helpers import (
    ACTION_RETRIES,
    CREATE_ROUTE,
    DELETE,
    FAST_RETRIES,
    LIST,
    MANY_RETRIES,
    MARKER,
    NO_CREDENTIALS,
    PROJECT,
    SNAPS,
    TOKEN,
    VOLUMES,
    answered,
    cleanup,
    cli_args,
    create_args,
    create_report,
    csv_manifest,
    header,
    in_flight,
    invoke,
    issued_token,
    kill_when,
    last_per_row,
    live,
    marker,
    once_seen,
    once_throttled,
    records,
    requests_of,
    run_process,
    snap,
    start,
    volume_ids,
    world,
)


def created(
    emulator_thread: Callable[..., Any],
    write: Callable[..., Path],
    tmp_path: Path,
    count: int,
    seed: int,
    *,
    unnamed: tuple[str, ...] = (),
    latency_ms: float = 0.0,
) -> tuple[Any, Path, list[Any]]:
    """An emulator where a create run made one snapshot per disk, beside older and foreign snapshots
    (``unnamed``: more disks the emulator knows, not in the manifest; ``latency_ms``: each answer's)."""
    disks = volume_ids(count, seed=seed)
    others = [snap(disk, 3) for disk in disks] + [snap(disks[0], 4, run=None, name="by-hand")]
    others.append(snap(disks[0], 5, name="autobk_snapshot_1", run=None))
    emu = start(
        emulator_thread,
        [*disks, *unnamed],
        others,
        creating_seconds=0.0,
        deleting_seconds=0.005,
        latency_ms=latency_ms,
    )
    report = tmp_path / "create.jsonl"
    # A short window (--settle + --timeout: WINDOW): once it passed, a report cut is planned with nothing
    # in doubt.
    short = ("--settle", "0.1s", "--timeout", "0.2")
    result = invoke(create_args(emu.url, csv_manifest(write, disks), report, *FAST_RETRIES, *short))
    assert result.exit_code == 0, result.output
    return emu, report, others


WINDOW = 0.3  # seconds: the window of the runs ``created`` makes


@pytest.fixture(autouse=True)
def quick_confirmations(monkeypatch: pytest.MonkeyPatch) -> None:
    """A deletion is first confirmed 20 ms after its DELETE was accepted (the tool waits 0.2 s): the
    emulator's deletions here take 5 ms (``created``) or 50 ms (``start``'s default), so a confirmation
    still finds each deletion ended, or under way, as it would."""
    monkeypatch.setattr(deleter, "FIRST_POLL", 0.02)


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
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


# --- a run's snapshots are found by its marker, not only by the report's records -------------------
def run_snapshots(emu: Any, report: Path) -> list[dict[str, Any]]:
    """The snapshots of the report's run the emulator still holds (``deleting`` ones included)."""
    run_id = header(report)["run_id"]
    return [s for s in emu.state()["snapshots"] if (s.get("metadata") or {}).get(MARKER) == run_id]


def cut(report: Path, keep: int, *, torn: bool = False) -> tuple[int, str]:
    """Cut the report after its ``keep``-th outcome record, as a SIGKILL leaves it (``torn``: and half the
    next line); the number of the first line cut, and the rows left without a record as the summary
    names them (``rows 2, 3``): rows end in any order, the order their answers came in."""
    lines = report.read_bytes().splitlines(keepends=True)
    end, recorded = 1, set()
    while len(recorded) < keep:
        record = orjson.loads(lines[end])
        if record["outcome"] != "sending":
            recorded.add(record["row"])
        end += 1
    tail = lines[end][: len(lines[end]) // 2] if torn else b""
    report.write_bytes(b"".join(lines[:end]) + tail)
    left = sorted(set(range(1, header(report)["rows"] + 1)) - recorded)
    return end + 1, "rows " + ", ".join(map(str, left))


def mark(emu: Any, volume_id: str, run_id: str) -> None:
    """A snapshot carrying ``run_id``'s marker, made through the API (as a late commit would make one)."""
    body = {"snapshot": {"volume_id": volume_id, "name": "stray", "metadata": {MARKER: run_id}}}
    request = urllib.request.Request(  # noqa: S310 - the emulator on loopback
        f"{emu.url}/v2/{PROJECT}/cloudsnapshots",
        data=orjson.dumps(body),
        headers={"X-Auth-Token": TOKEN, "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
        assert answer.status == 202


def test_cleanup_after_a_killed_create_deletes_every_snapshot_of_the_run(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path, clock: ManualClock
) -> None:
    """A create SIGKILLed with requests in flight, some committed late: more snapshots than records;
    --apply waits out the run's window (--settle + --timeout after the last unanswered send), deletes
    them all, exits 0, and no snapshot of the run appears afterwards."""
    disks = volume_ids(40, seed=154)
    late = {"fault_late_commit": 0.3, "late_commit_seconds": 2.0, "seed": 154}
    # The emulator's clock stands still: a late commit lands when the test moves it, after the kill
    # (no sleeping until it lands); a deletion ends at once (cleanup confirms each).
    emu = start(
        emulator_thread,
        disks,
        [],
        clock=clock,
        creating_seconds=0.0,
        deleting_seconds=0.0,
        latency_ms=50,
        **late,
    )
    report = tmp_path / "create.jsonl"
    stop = time.monotonic() + 30
    # 1.2 s: from the kill, time to drain its requests and start cleanup, which then waits out the rest
    window = ("--settle", "0.8s", "--timeout", "0.4")
    args = create_args(emu.url, csv_manifest(write, disks), report, *window, concurrency=8)

    def late_answers() -> int:
        return requests_of(emu.state(), CREATE_ROUTE)["504"]

    with run_process(args) as process:
        while (not report.exists() or len(records(report)) < 8) and time.monotonic() < stop:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            time.sleep(0.02)
        # Killed right after a new 504: that row's snapshot commits late for certain, and its record
        # cannot exist before the snapshot appears (when the test moves the clock), so the run leaves a
        # snapshot no record names.
        seen = late_answers()
        while late_answers() == seen and time.monotonic() < stop:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            time.sleep(0.02)
        process.kill()
        process.wait(timeout=10)
    while emu.state()["in_flight"] and time.monotonic() < stop:  # the killed client's requests land
        time.sleep(0.02)
    clock.advance(late["late_commit_seconds"])  # and every late commit, the last 504's too
    recorded = {r["row"] for r in records(report)}
    made = run_snapshots(emu, report)
    assert len(made) > len(recorded), (len(made), len(recorded))  # snapshots no record names
    out = tmp_path / "out.jsonl"
    result = cleanup(emu, report, out, "--apply")
    assert result.exit_code == 0, result.output
    assert "left without an answer for sure; their snapshots may appear until" in result.output
    assert run_snapshots(emu, report) == []
    outcomes = Counter(r["outcome"] for r in records(out))
    assert set(outcomes) == {"deleted"}
    assert outcomes["deleted"] >= len(made)  # and the late commits that landed while it waited
    assert f"{40 - len(recorded)} of 40 rows have no record" in result.output
    clock.advance(late["late_commit_seconds"])
    assert run_snapshots(emu, report) == []  # nothing of the run appeared after cleanup said 0


def test_a_cleanup_refused_for_its_report_after_a_killed_create_exits_2_without_waiting(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """A create killed with a request in flight leaves its window ahead; cleanup --apply with a --report
    that holds records, or a --resume of another create report's cleanup, exits 2 at once: no
    "waiting" line, nothing sent (it used to wait out the window first)."""
    disks = volume_ids(2, seed=159)
    emu = start(emulator_thread, disks, [], creating_seconds=0.0, latency_ms=200)
    report = tmp_path / "create.jsonl"
    window = ("--settle", "10s", "--timeout", "5")  # the refusals come well inside it
    args = create_args(emu.url, csv_manifest(write, disks), report, *window, concurrency=2)
    kill_when(report, run_process(args), lambda data: bool(in_flight(data)))
    stop = time.monotonic() + 30
    while emu.state()["in_flight"] and time.monotonic() < stop:  # the killed client's request lands
        time.sleep(0.02)
    copy = tmp_path / "copy.jsonl"  # the same run under another name: another create report
    copy.write_bytes(report.read_bytes())
    held = tmp_path / "held.jsonl"
    plan = cleanup(emu, copy, held)  # a plan does not wait: it says the window is ahead
    assert plan.exit_code == 1, plan.output
    assert "this plan may miss them" in plan.output
    sent = emu.state()["requests"]
    existing = cleanup(emu, report, held, "--apply")
    assert existing.exit_code == 2, existing.output
    assert "already holds records" in existing.output
    other = cleanup(emu, report, held, "--apply", "--resume")
    assert other.exit_code == 2, other.output
    assert "--resume: " in other.output
    for refused in (existing, other):
        assert "waiting" not in refused.output
    assert emu.state()["requests"] == sent
    quiet = run_of(report, lambda _: None).quiet_at()
    assert quiet is not None
    assert quiet > time.time()  # still ahead: the refusals did not wait it out


def test_cleanup_of_a_report_cut_mid_line_warns_and_deletes_that_rows_snapshot(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """A torn last line is named (file:line) and skipped; its row's snapshot is found by the marker."""
    emu, report, others = created(emulator_thread, write, tmp_path, 4, seed=155)
    time.sleep(WINDOW)  # the rows cut are planned with nothing in doubt
    torn, left = cut(report, 2, torn=True)
    plan = tmp_path / "plan.jsonl"
    result = cleanup(emu, report, plan)
    assert result.exit_code == 0, result.output
    assert f"{report}:{torn}:" in result.output
    assert f"2 of 4 rows have no record ({left})" in result.output
    assert Counter(r["outcome"] for r in records(plan)) == {"planned": 4}
    result = cleanup(emu, report, plan, "--apply", "--resume")
    assert result.exit_code == 0, result.output
    assert run_snapshots(emu, report) == []
    assert set(live(emu)) == {s.id for s in others}


def test_a_sigterm_mid_cleanup_reads_unfinished_and_its_command_finishes_the_job(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """SIGTERM while cleanup --apply deletes (one at a time, 100 ms an answer): exit 143; the run's note
    says the snapshots left were not reached (not "blocked, refused or failed"); summary says unfinished
    (exit 1) and names the command that finishes it, which run as written deletes the rest, each once
    (summary exit 0)."""
    emu, report, others = created(emulator_thread, write, tmp_path, 8, seed=159, latency_ms=100)
    made = {snapshot["id"] for snapshot in run_snapshots(emu, report)}
    assert len(made) == 8
    time.sleep(WINDOW)  # nothing of the run in doubt: cleanup starts at once
    out = tmp_path / "cleanup.jsonl"
    args = ["cleanup", str(report), "--endpoint", emu.url, "--report", str(out), "--apply"]
    two_sent = lambda state: sum(requests_of(state, DELETE).values()) >= 2  # noqa: E731
    with run_process([*args, "--concurrency", "1", *ACTION_RETRIES], {"TZ": "UTC"}) as process:
        with once_seen(emu, two_sent, lambda: process.send_signal(signal.SIGTERM)) as signalled:
            _, stderr = process.communicate(timeout=30)
        assert signalled
    assert process.returncode == 143, stderr.decode()
    deleted = [r for r in records(out) if r["outcome"] == "deleted"]
    assert 2 <= len(deleted) < 8
    left = f"{8 - len(deleted)} snapshots of run {header(report)['run_id']} are still there"
    assert f"{left} (not reached: the run was stopped; --resume finishes it)" in stderr.decode()
    stopped = invoke(["summary", str(out)])
    assert stopped.exit_code == 1, stopped.output
    assert "took" not in stopped.output  # no end line: no time is told, never a zero
    assert "elapsed" not in stopped.output
    assert orjson.loads(invoke(["summary", "--json", str(out)]).stdout)["elapsed_s"] is None
    said = stopped.stdout.split("finish it with `", 1)[1].split("`", 1)[0]
    assert (
        said
        == f"evs-snapshot cleanup {report} --apply --resume --report {out.resolve()} --endpoint {emu.url}"
    )
    finished = invoke([*said.split()[1:], *ACTION_RETRIES])
    assert finished.exit_code == 0, finished.output
    done = invoke(["summary", str(out)])
    assert done.exit_code == 0, done.output
    assert re.search(r"^the last run took [0-9]+\.[0-9]{2}s$", done.stdout, re.MULTILINE), done.stdout
    assert Counter(r["snapshot_id"] for r in records(out) if r["outcome"] == "deleted") == dict.fromkeys(
        made, 1
    )
    assert run_snapshots(emu, report) == []
    assert set(live(emu)) == {s.id for s in others}


def test_a_cleanup_killed_between_its_deletes_and_their_records_is_settled_by_resume(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """cleanup --apply whose report is cut after its sending lines, as a kill -9 between its DELETEs and
    their records leaves it (the snapshots are gone): summary names the deletions sent without a record
    (exit 1); --resume writes one deleted record for each, those found by the run's marker alone (rows
    without a record) too, and sends no DELETE again. A sending line naming a snapshot still there that
    the pass did not meet (here one of an older run) is judged as a listed one: refused, left alone."""
    emu, report, others = created(emulator_thread, write, tmp_path, 4, seed=1161)
    time.sleep(WINDOW)  # the rows cut are planned with nothing in doubt
    cut(report, 2)  # two rows' snapshots are found by the run's marker alone
    made = {snapshot["id"] for snapshot in run_snapshots(emu, report)}
    out = tmp_path / "cleanup.jsonl"
    assert cleanup(emu, report, out, "--apply").exit_code == 0
    assert run_snapshots(emu, report) == []
    kept = [line for line in out.read_bytes().splitlines(keepends=True) if b'"outcome":"deleted"' not in line]
    assert orjson.loads(kept[-1])["outcome"] == "ended"
    out.write_bytes(b"".join(kept[:-1]))  # the header and the sending lines; no record, no end line
    assert {orjson.loads(line)["snapshot_id"] for line in kept[1:-1]} == made
    killed = invoke(["summary", str(out)])
    assert killed.exit_code == 1, killed.output
    assert "4 deletions were sent and have no record (snapshots " in killed.stdout
    older = others[0]
    forged = orjson.loads(kept[1]) | {"key": older.id, "snapshot_id": older.id, "volume_id": older.volume_id}
    out.write_bytes(out.read_bytes() + orjson.dumps(forged) + b"\n")
    result = cleanup(emu, report, out, "--apply", "--resume")
    assert result.exit_code == 0, result.output
    final = records(out)
    deleted = [r for r in final if r["outcome"] == "deleted"]
    assert Counter(r["snapshot_id"] for r in deleted) == dict.fromkeys(made, 1)
    assert {(r["http_status"], r["error_message"]) for r in deleted} == {(404, deleter.EARLIER_DELETE)}
    assert [(r["snapshot_id"], r["outcome"]) for r in final if r not in deleted] == [(older.id, "refused")]
    assert requests_of(emu.state(), DELETE) == {"202": 4}
    assert older.id in live(emu)
    assert invoke(["summary", str(out)]).exit_code == 0


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_cleanup_refuses_two_runs_joined_in_one_file(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """`cat a.jsonl b.jsonl > both.jsonl`: exit 2 naming both run ids; nothing is deleted."""
    disks = volume_ids(10, seed=156)
    emu = start(emulator_thread, disks, [], creating_seconds=0.0)
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    for report, part, name in ((a, disks[:5], "a.csv"), (b, disks[5:], "b.csv")):
        result = invoke(create_args(emu.url, csv_manifest(write, part, name), report, *FAST_RETRIES))
        assert result.exit_code == 0, result.output
    both = tmp_path / "both.jsonl"
    both.write_bytes(a.read_bytes() + b.read_bytes())
    result = cleanup(emu, both, tmp_path / "out.jsonl", "--apply")
    assert result.exit_code == 2, result.output
    assert header(a)["run_id"] in result.output
    assert header(b)["run_id"] in result.output
    assert DELETE not in emu.state()["requests"]
    assert len(run_snapshots(emu, a)) == len(run_snapshots(emu, b)) == 5


def test_cleanup_keeps_to_the_manifests_disks_unless_the_manifest_changed(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """A marked snapshot on a disk the manifest does not name is refused (exit 1); with the manifest changed,
    every marked snapshot goes, and the warning says why."""
    stranger = volume_ids(1, seed=158)[0]
    emu, report, others = created(emulator_thread, write, tmp_path, 3, seed=157, unnamed=(stranger,))
    run_id = header(report)["run_id"]
    mark(emu, stranger, run_id)
    time.sleep(WINDOW)  # the rows cut are planned with nothing in doubt
    _, left = cut(report, 1)
    plan = tmp_path / "plan.jsonl"
    result = cleanup(emu, report, plan)
    assert result.exit_code == 1, result.output
    assert f"2 of 3 rows have no record ({left})" in result.output
    assert Counter((r["outcome"], r["error_code"]) for r in records(plan)) == {
        ("planned", None): 3,
        ("refused", "OTHER_VOLUME"): 1,
    }
    manifest = Path(header(report)["manifest"])
    text = manifest.read_text()
    manifest.unlink()
    result = cleanup(emu, report, tmp_path / "moved.jsonl")
    assert result.exit_code == 0, result.output
    assert "the run's manifest cannot be read" in result.output
    assert Counter(r["outcome"] for r in records(tmp_path / "moved.jsonl")) == {"planned": 4}
    manifest.write_text(text + volume_ids(1, seed=159)[0] + "\n")  # edited since the run
    out = tmp_path / "out.jsonl"
    result = cleanup(emu, report, out, "--apply")
    assert result.exit_code == 0, result.output
    assert "changed since the run" in result.output
    assert Counter(r["outcome"] for r in records(out)) == {"deleted": 4}
    assert run_snapshots(emu, report) == []
    assert set(live(emu)) == {s.id for s in others}


def test_cleanup_exits_1_while_a_snapshot_of_the_run_is_still_creating(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path, clock: ManualClock
) -> None:
    """A report holding only its header: the run's creating snapshots are blocked (exit 1), deleted later."""
    disks = volume_ids(3, seed=160)
    emu = start(emulator_thread, disks, [], creating_seconds=60.0, clock=clock)
    report = tmp_path / "create.jsonl"
    result = invoke(create_args(emu.url, csv_manifest(write, disks), report, *FAST_RETRIES))
    assert result.exit_code == 0, result.output
    assert cut(report, 0)[1] == "rows 1, 2, 3"
    out = tmp_path / "out.jsonl"
    result = cleanup(emu, report, out, "--apply")
    assert result.exit_code == 1, result.output
    assert Counter((r["outcome"], r["error_code"]) for r in records(out)) == {("blocked", "SNAPSHOT_BUSY"): 3}
    assert "3 of 3 rows have no record" in result.output
    clock.advance(61)
    result = cleanup(emu, report, out, "--apply", "--resume", "--no-wait")
    assert result.exit_code == 0, result.output
    clock.advance(1)
    assert run_snapshots(emu, report) == []


def test_cleanup_of_a_bare_header_searches_the_project_given(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """Header only, manifest gone, no project in the report: exit 2 asks for --project-id; with it, the
    run's snapshots are found by their marker and deleted."""
    run_id = "20261207T010000Z-0c1ea0"
    disks = volume_ids(2, seed=161)
    emu = start(emulator_thread, disks, [snap(disk, 0.1, run=run_id) for disk in disks], creating_seconds=0.0)
    report = write(
        "create.jsonl",
        orjson.dumps(
            {
                "type": "run",
                "run_id": run_id,
                "command": "create",
                "manifest": str(tmp_path / "gone.csv"),
                "rows": 2,
                "digest": "sha256:00",
                "shape": {"project_id": "", "region": ""},
                "started_at": "2026-12-07T01:00:00Z",
            }
        )
        + b"\n",
    )
    result = cleanup(emu, report, tmp_path / "out.jsonl", "--apply")
    assert result.exit_code == 2, result.output
    assert "give --project-id" in result.output
    assert DELETE not in emu.state()["requests"]
    result = cleanup(emu, report, tmp_path / "out.jsonl", "--apply", "--project-id", PROJECT)
    assert result.exit_code == 0, result.output
    assert "2 of 2 rows have no record (rows 1, 2)" in result.output
    assert run_snapshots(emu, report) == []


def test_cleanup_token_expiring_before_the_delete_stops_with_exit_3(
    emulator_thread: Callable[..., Any], clock: ManualClock, tmp_path: Path
) -> None:
    """cleanup --apply: the listing passes, the DELETE is throttled, and meanwhile the token expires:
    the DELETE is refused, the route closes, its refusal is printed and the run exits 3."""
    # Two tokens in the bucket (its clock stands still): the listing's and the last look's GET; the 429
    # names 20 a second, so the DELETE is sent again 50 ms on, when the token expired (the watcher looks
    # every 10 ms).
    emu = emulator_thread(clock=clock, rate_limit=20.0, burst=2, token_ttl=60.0, **world(1))
    source = create_report(tmp_path / "create.jsonl", [{}])
    report = tmp_path / "cleanup.jsonl"
    args = [*cli_args("cleanup", source, endpoint=emu.url, report=report, apply=True), *MANY_RETRIES]
    with once_throttled(emu, lambda: clock.advance(120), route=DELETE) as acted:
        result = invoke(args, base={**NO_CREDENTIALS, "OS_AUTH_TOKEN": issued_token(emu)})
    assert acted == [True]
    assert result.exit_code == 3, result.output
    assert "credentials refused" in result.stderr
    assert [(r["outcome"], r["error_code"]) for r in records(report)] == [("failed", "APIGW.0301")]
    assert requests_of(emu.state(), DELETE)["401"] == 1
    assert [s["status"] for s in emu.state()["snapshots"]] == ["available"]


def test_cleanup_refuses_backups_blocks_busy_and_takes_up_deleting(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path
) -> None:
    """cleanup --apply: a backup-named snapshot is refused, a busy one blocked, one already deleting is
    recorded deleted without a DELETE; exit 1 for the blocked row."""
    volumes = tuple(SeedVolume(volume_id=VOLUMES[i]) for i in range(3))
    snapshots = (
        SeedSnapshot(id=SNAPS[0], volume_id=VOLUMES[0], name="autobk_snapshot_vbs_1", metadata=marker()),
        SeedSnapshot(
            id=SNAPS[1], volume_id=VOLUMES[1], name="pre-maint-1", metadata=marker(), status="backing-up"
        ),
        SeedSnapshot(
            id=SNAPS[2], volume_id=VOLUMES[2], name="pre-maint-2", metadata=marker(), status="deleting"
        ),
    )
    emu = emulator_thread(volumes=volumes, snapshots=snapshots)
    source = create_report(tmp_path / "create.jsonl", [{}, {}, {}])
    report = tmp_path / "cleanup.jsonl"
    result = invoke(
        [
            *cli_args("cleanup", source, endpoint=emu.url, report=report, apply=True, no_wait=True),
            *("--max-attempts", "2", "--backoff-initial", "0.01"),
        ]
    )
    assert result.exit_code == 1, result.output
    outcomes = {r["snapshot_id"]: (r["outcome"], r["error_code"]) for r in records(report)}
    assert outcomes == {
        SNAPS[0]: ("refused", "BACKUP_SNAPSHOT"),
        SNAPS[1]: ("blocked", "SNAPSHOT_BUSY"),
        SNAPS[2]: ("deleted", None),
    }
    assert DELETE not in emu.state()["requests"]


def test_cleanup_needs_a_create_report_with_records(
    emulator_thread: Callable[..., EmulatorThread], tmp_path: Path
) -> None:
    """cleanup of a missing report, or of an empty one: exit 2, nothing sent."""
    emu = emulator_thread()
    missing = invoke(cli_args("cleanup", tmp_path / "missing.jsonl", endpoint=emu.url))
    assert missing.exit_code == 2
    assert "no such report" in missing.output
    blank = tmp_path / "empty.jsonl"
    blank.write_bytes(b"")
    empty = invoke(cli_args("cleanup", blank, endpoint=emu.url, report=tmp_path / "r.jsonl"))
    assert empty.exit_code == 2
    assert "the report holds no records; nothing to clean up" in empty.output
    assert emu.state()["requests"] == {}


@pytest.mark.no_cover
def test_a_cleanup_writes_its_requests_and_time_to_its_metrics(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """--metrics-file of a cleanup --apply writes its requests by kind (its DELETEs among them) and the
    run's duration, beside its snapshots by outcome."""
    emu, report, _ = created(emulator_thread, write, tmp_path, 2, seed=157)
    before = answered(emu)
    metrics = tmp_path / "metrics.prom"
    started = time.monotonic()
    result = cleanup(emu, report, tmp_path / "apply.jsonl", "--apply", "--metrics-file", str(metrics))
    wall = time.monotonic() - started
    assert result.exit_code == 0, result.output
    text = metrics.read_text()
    assert 'evs_snapshot_snapshots{command="cleanup",outcome="deleted"} 2\n' in text
    assert 'evs_snapshot_requests_by_kind{command="cleanup",kind="deletes"} 2\n' in text
    counted = re.findall(r'^evs_snapshot_requests_by_kind\{command="cleanup",kind="\w+"\} (\d+)$', text, re.M)
    assert sum(map(int, counted)) == answered(emu) - before
    (duration,) = re.findall(
        r'^evs_snapshot_run_duration_seconds\{command="cleanup"\} ([0-9.]+)$', text, re.M
    )
    assert 0 < float(duration) <= wall
    assert "# HELP evs_snapshot_run_duration_seconds Wall time of the last run, from start to exit.\n" in text
