"""prune: each retention rule against seeded snapshots; only the tool's own, selected, deletable ones go."""

from __future__ import annotations

import contextlib
import shutil
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from yarl import URL

from orchestrator.actions import Action, ActionRecord
from orchestrator.api.routes import connect
from orchestrator.api.views import Snapshot
from orchestrator.config import Connection, Endpoints
from orchestrator.deleter import EARLIER_DELETE, EARLIER_UNDER_WAY, Job
from orchestrator.emulator import ManualClock, SeedSnapshot
from orchestrator.lock import RunLock
from orchestrator.retention import newest_first
from orchestrator.retry import RetryPolicy
from tests.helpers import (
    ACTION_RETRIES,
    AKSK,
    CLOSED_PORT,
    DELETE,
    LIST,
    MANY_RETRIES,
    NO_CREDENTIALS,
    PROJECT,
    SHOW,
    WRONG,
    cli_args,
    create_report,
    csv_manifest,
    hits,
    invoke,
    issued_token,
    kill_when,
    lines,
    live,
    once_seen,
    once_throttled,
    prune,
    quick_deleter,
    records,
    requests_of,
    run_id_of,
    run_process,
    snap,
    start,
    volume_ids,
)

pytestmark = pytest.mark.usefixtures("quick_deletion_polls")


def test_keep_last_deletes_only_the_oldest_owned(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """--keep-last 3 --apply: the 6 oldest owned go; backup-made, unmarked and other disks' snapshots stay."""
    disk, other = volume_ids(2, seed=131)
    owned = [snap(disk, d) for d in range(1, 10)]
    foreign = [
        snap(disk, 30, run=None, name="made-by-hand"),
        snap(disk, 31, name="autobk_snapshot_vbs_1"),  # backup-made, even if it carried a marker
        snap(disk, 32, run=None, name="manualbk_snapshot_csbs_1"),
        *[snap(other, d) for d in range(1, 10)],  # owned, but its disk is not selected
    ]
    emu = start(emulator_thread, [disk, other], owned + foreign)
    report = tmp_path / "prune.jsonl"
    metrics = tmp_path / "metrics.prom"
    args = ["--keep-last", "3", "--apply", "--metrics-file", str(metrics)]
    result = prune(emu, csv_manifest(write, [disk]), report, *args)
    assert result.exit_code == 0, result.output
    assert 'evs_snapshot_snapshots{command="prune",outcome="deleted"} 6' in metrics.read_text()
    assert 'evs_snapshot_snapshots{command="prune",outcome="kept"} 3' in metrics.read_text()
    deleted = {r["snapshot_id"]: r for r in records(report)}
    assert set(deleted) == {s.id for s in owned[3:]}
    for record in deleted.values():
        assert record["outcome"] == "deleted"
        assert record["rule"] == "keep-last 3"
        assert record["volume_id"] == disk
        assert record["source_run"] == run_id_of("run-old")
        assert record["snapshot_name"].startswith("pre-maint-")
        assert record["created_at"]
    assert set(live(emu)) == {s.id for s in owned[:3] + foreign}
    assert emu.state()["snapshots"] == [s for s in emu.state()["snapshots"] if s["status"] != "deleting"]
    assert f"volume {disk}: 6 deleted, 3 kept" in result.output


def test_dry_run_plans_and_sends_no_delete(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """Without --apply: planned records, no DELETE request, nothing changes."""
    (disk,) = volume_ids(1, seed=132)
    owned = [snap(disk, d) for d in range(1, 6)]
    emu = start(emulator_thread, [disk], owned)
    report = tmp_path / "plan.jsonl"
    result = prune(emu, csv_manifest(write, [disk]), report, "--keep-last", "2")
    assert result.exit_code == 0, result.output
    assert Counter(r["outcome"] for r in records(report)) == {"planned": 3}
    verbose = tmp_path / "verbose.jsonl"
    assert prune(emu, csv_manifest(write, [disk]), verbose, "--keep-last", "2", "--verbose").exit_code == 0
    assert Counter(r["outcome"] for r in records(verbose)) == {"planned": 3, "kept": 2}
    assert DELETE not in emu.state()["requests"]
    assert set(live(emu)) == {s.id for s in owned}


@pytest.mark.no_cover
def test_keep_within_and_either_rule_keeps(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """--keep-within keeps the young; with --keep-last too, a snapshot kept by either rule stays."""
    one, two = volume_ids(2, seed=133)
    first = [snap(one, d) for d in (1, 2, 3, 4, 5)]
    second = [snap(two, d) for d in (1, 2, 3, 4, 5)]
    emu = start(emulator_thread, [one, two], first + second)
    manifest = csv_manifest(write, [one])
    result = prune(emu, manifest, tmp_path / "a.jsonl", "--keep-within", "2d12h", "--apply")
    assert result.exit_code == 0, result.output
    assert {r["snapshot_id"] for r in records(tmp_path / "a.jsonl")} == {s.id for s in first[2:]}
    assert {r["rule"] for r in records(tmp_path / "a.jsonl")} == {"keep-within 2d12h"}
    manifest = csv_manifest(write, [two], name="two.csv")
    args = ["--keep-last", "1", "--keep-within", "3d12h", "--apply"]
    result = prune(emu, manifest, tmp_path / "b.jsonl", *args)
    assert result.exit_code == 0, result.output
    assert {r["snapshot_id"] for r in records(tmp_path / "b.jsonl")} == {s.id for s in second[3:]}
    assert {r["rule"] for r in records(tmp_path / "b.jsonl")} == {"keep-last 1 and keep-within 3d12h"}


def test_newest_available_kept_unless_allow_none(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """The newest available owned snapshot survives every rule, unless --allow-none."""
    (disk,) = volume_ids(1, seed=134)
    errored = snap(disk, 1, status="error")
    old = [snap(disk, 10), snap(disk, 11)]
    emu = start(emulator_thread, [disk], [errored, *old])
    manifest = csv_manifest(write, [disk])
    result = prune(emu, manifest, tmp_path / "a.jsonl", "--keep-within", "2d", "--apply")
    assert result.exit_code == 0, result.output
    assert {r["snapshot_id"] for r in records(tmp_path / "a.jsonl")} == {old[1].id}
    result = prune(emu, manifest, tmp_path / "b.jsonl", "--keep-last", "0", "--allow-none", "--apply")
    assert result.exit_code == 0, result.output
    assert {r["snapshot_id"] for r in records(tmp_path / "b.jsonl")} == {errored.id, old[0].id}
    assert live(emu) == {}


def test_name_prefix_owns_unmarked_snapshots_only_when_given(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """Unmarked snapshots are never the tool's, except with an explicit --name-prefix."""
    (disk,) = volume_ids(1, seed=135)
    legacy = [snap(disk, d, run=None, name=f"nightly-{d}") for d in (1, 2, 3)]
    other = snap(disk, 4, run=None, name="someone-else")
    emu = start(emulator_thread, [disk], [*legacy, other])
    manifest = csv_manifest(write, [disk])
    result = prune(emu, manifest, tmp_path / "a.jsonl", "--keep-last", "1", "--apply")
    assert result.exit_code == 0, result.output
    assert records(tmp_path / "a.jsonl") == []
    result = prune(
        emu, manifest, tmp_path / "b.jsonl", "--keep-last", "1", "--name-prefix", "nightly-", "--apply"
    )
    assert result.exit_code == 0, result.output
    assert {r["snapshot_id"] for r in records(tmp_path / "b.jsonl")} == {legacy[1].id, legacy[2].id}
    assert set(live(emu)) == {legacy[0].id, other.id}
    for bad in ("", " ", "autobk_snapshot_vbs_", "manualbk_snapshot_x"):
        assert (
            prune(emu, manifest, tmp_path / "c.jsonl", "--keep-last", "1", "--name-prefix", bad).exit_code
            == 2
        )


def test_only_available_or_error_are_deleted(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """Condemned snapshots in other states are blocked (exit 1) and get no DELETE; error ones are deleted."""
    (disk,) = volume_ids(1, seed=136)
    newest = snap(disk, 1)
    busy = [snap(disk, 2, status="error_deleting"), snap(disk, 3, status="backing-up")]
    errored = snap(disk, 4, status="error")
    emu = start(emulator_thread, [disk], [newest, *busy, errored])
    result = prune(emu, csv_manifest(write, [disk]), tmp_path / "r.jsonl", "--keep-last", "1", "--apply")
    assert result.exit_code == 1, result.output
    outcomes = {r["snapshot_id"]: (r["outcome"], r["error_code"]) for r in records(tmp_path / "r.jsonl")}
    assert outcomes == {
        busy[0].id: ("blocked", "SNAPSHOT_BUSY"),
        busy[1].id: ("blocked", "SNAPSHOT_BUSY"),
        errored.id: ("deleted", None),
    }
    assert requests_of(emu.state(), DELETE) == {"202": 1}


def test_listing_pages_per_project_not_per_volume(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """2,500 snapshots, 50 selected disks: 3 list requests plan the whole prune; confirming 100 deletions
    adds listings of the project (3 pages each) or GETs, never more than one GET per deletion."""
    disks = volume_ids(50, seed=137)
    seeds = [snap(disk, d) for disk in disks for d in (1, 2, 3, 4)]
    seeds += [snap(disk, d) for disk in volume_ids(230, seed=138) for d in range(1, 11)]  # not selected
    assert len(seeds) == 2500
    # Gone at once: a GET of a deletion still 'deleting' (accepted just before a round) is followed by
    # another, which made 102 GETs at load 0.6 and 6 with a 50 ms deletion.
    emu = start(emulator_thread, disks, seeds, deleting_seconds=0)
    manifest = csv_manifest(write, disks)
    result = prune(emu, manifest, tmp_path / "plan.jsonl", "--keep-last", "2")
    assert result.exit_code == 0, result.output
    assert sum(requests_of(emu.state(), LIST).values()) == 3  # 2500 / 1000 + 1
    assert len(records(tmp_path / "plan.jsonl")) == 100
    result = prune(emu, manifest, tmp_path / "apply.jsonl", "--keep-last", "2", "--apply")
    assert result.exit_code == 0, result.output
    assert Counter(r["outcome"] for r in records(tmp_path / "apply.jsonl")) == {"deleted": 100}
    lists = sum(requests_of(emu.state(), LIST).values()) - 3
    gets = sum(requests_of(emu.state(), SHOW).values()) - 100  # each deletion's last look: one GET (lastlook)
    assert lists >= 3  # the listing; confirming lists the project (3 pages) while many are pending
    assert gets <= 100, gets  # and sends GETs only while few are (one each; tests/test_confirming.py)
    assert requests_of(emu.state(), DELETE) == {"202": 100}


def test_refused_or_failed_listing_stops_with_nothing_deleted(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """Wrong credentials (401) or a listing that keeps failing: exit 3, a clear error, no DELETE."""
    (disk,) = volume_ids(1, seed=139)
    emu = start(emulator_thread, [disk], [snap(disk, d) for d in range(1, 6)])
    manifest = csv_manifest(write, [disk])
    wrong = {"HUAWEICLOUD_SDK_SK": "not-the-secret-key-0000000000000000000000"}
    result = prune(emu, manifest, tmp_path / "a.jsonl", "--keep-last", "1", "--apply", env=wrong)
    assert result.exit_code == 3, result.output
    assert "nothing was deleted" in result.output
    assert "credentials refused" in result.output
    failing = start(emulator_thread, [disk], [snap(disk, d) for d in range(1, 6)], fault_list=1.0)
    result = prune(failing, manifest, tmp_path / "b.jsonl", "--keep-last", "1", "--apply")
    assert result.exit_code == 3, result.output
    assert "cannot list the snapshots" in result.output
    assert "nothing was deleted" in result.output
    for server in (emu, failing):
        assert DELETE not in server.state()["requests"]
        assert len(live(server)) == 5


def test_all_volumes_and_no_wait(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """--all-volumes selects every disk of the project (not snapshots of unknown disks); --no-wait ends at 202."""
    one, two, gone = volume_ids(3, seed=140)
    seeds = [snap(v, d) for v in (one, two, gone) for d in (1, 2, 3)]
    emu = start(emulator_thread, [one, two], seeds, deleting_seconds=60)
    report = tmp_path / "r.jsonl"
    result = prune(emu, None, report, "--all-volumes", "--keep-last", "1", "--apply", "--no-wait")
    assert result.exit_code == 0, result.output
    assert {(r["volume_id"], r["outcome"]) for r in records(report)} == {(one, "deleted"), (two, "deleted")}
    assert len(records(report)) == 4
    statuses = Counter((s["volume_id"], s["status"]) for s in emu.state()["snapshots"])
    assert statuses == {
        (one, "available"): 1,
        (one, "deleting"): 2,
        (two, "available"): 1,
        (two, "deleting"): 2,
        (gone, "available"): 3,
    }
    # one GET each, the last look before its DELETE (lastlook); none after the 202
    assert emu.state()["requests"]["GET /v2/{project_id}/cloudsnapshots/{snapshot_id}"] == {"200": 4}
    assert invoke(["prune", "--keep-last", "1"]).exit_code == 2  # neither a manifest nor --all-volumes
    assert invoke(["prune", str(csv_manifest(write, [one]))]).exit_code == 2  # no rule


def applying(emu: Any, manifest: Path, report: Path, *extra: str) -> list[str]:
    """The words of a real process's ``prune --keep-last 1 --apply`` of ``manifest`` into ``report``."""
    args = ["prune", str(manifest), "--endpoint", emu.url, "--project-id", PROJECT, "--report", str(report)]
    return [*args, "--keep-last", "1", "--apply", *extra, *ACTION_RETRIES]


def stopped_when(emu: Any, args: list[str], seen: Callable[[Any], bool], sig: int) -> tuple[int, bytes]:
    """Run ``args`` as a process and send it ``sig`` once the emulator's state is ``seen``: its exit code
    and its standard error."""
    with run_process(args) as process:
        with once_seen(emu, seen, lambda: process.send_signal(sig)) as signalled:
            _, stderr = process.communicate(timeout=30)
        assert signalled
    return process.returncode, stderr


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_resume_after_sigterm_finishes_the_job(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """SIGTERM mid-prune: exit 143 with whole records, and summary says the run is unfinished (exit 1);
    --resume deletes the rest, each snapshot once, and the summary is exit 0."""
    (disk,) = volume_ids(1, seed=141)
    owned = [snap(disk, d) for d in range(1, 14)]
    emu = start(emulator_thread, [disk], owned, latency_ms=60)
    report = tmp_path / "r.jsonl"
    manifest = csv_manifest(write, [disk])
    args = applying(emu, manifest, report, "--concurrency", "1")
    three_sent = lambda state: sum(requests_of(state, DELETE).values()) >= 3  # noqa: E731
    returncode, stderr = stopped_when(emu, args, three_sent, signal.SIGTERM)
    assert returncode == 143, stderr.decode()
    first = records(report)
    assert 3 <= len(first) < 12
    stopped = invoke(["summary", str(report)])  # 5 deleted of 12 must not read as done
    assert stopped.exit_code == 1, stopped.output
    written = len(lines(report)) - 1  # below the header: each deletion's sending line and its record
    assert written == 2 * len(first)
    assert f"unfinished: the last prune run of this report stopped after {written} lines" in stopped.stdout
    assert (
        f"--keep-last 1 --apply --resume --report {report.resolve()} --endpoint {emu.url}`" in stopped.stdout
    )
    result = prune(emu, manifest, report, "--keep-last", "1", "--apply", "--resume")
    assert result.exit_code == 0, result.output
    assert invoke(["summary", str(report)]).exit_code == 0
    final = records(report)
    assert {r["run_id"] for r in final} == {first[0]["run_id"]}
    assert Counter(r["snapshot_id"] for r in final if r["outcome"] == "deleted") == {
        s.id: 1 for s in owned[1:]
    }
    assert set(live(emu)) == {owned[0].id}
    changed = prune(emu, manifest, report, "--keep-last", "2", "--apply", "--resume")
    assert changed.exit_code == 2  # a resume must keep the same rules
    assert "keep_last" in changed.output


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_sigterm_before_any_record_advises_resume_as_create_would(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """SIGTERM as soon as the report holds its header: no record. The advice said "run the same command again", which exits 2 (the report holds
    records; pass --resume), as create does with a header-only report; the advice says --resume, and
    --resume finishes the job."""
    (disk,) = volume_ids(1, seed=144)
    owned = [snap(disk, d) for d in range(1, 4)]
    emu = start(emulator_thread, [disk], owned, latency_ms=300)
    report = tmp_path / "r.jsonl"
    manifest = csv_manifest(write, [disk])
    args = applying(emu, manifest, report, "--concurrency", "1")
    headed = lambda _: report.exists() and report.stat().st_size > 0  # noqa: E731
    returncode, stderr = stopped_when(emu, args, headed, signal.SIGTERM)
    assert returncode == 143, stderr.decode()
    assert len(records(report)) <= 1  # none unless the first DELETE (300 ms) was answered before the signal
    [line] = [line for line in stderr.decode().splitlines() if "stopped by SIGTERM" in line]
    assert "--resume if its report file is not empty" in line
    again = prune(emu, manifest, report, "--keep-last", "1", "--apply")
    assert again.exit_code == 2, again.output
    assert "pass --resume" in again.stderr
    result = prune(emu, manifest, report, "--keep-last", "1", "--apply", "--resume")
    assert result.exit_code == 0, result.output
    assert set(live(emu)) == {owned[0].id}


PROJECT_ENV = {
    "HUAWEICLOUD_SDK_PROJECT_ID": PROJECT
}  # what the report does not record: the command as printed


def finishing(report: Path) -> list[str]:
    """The command ``summary`` of ``report`` says finishes its last run, as the words of ``invoke``."""
    said = invoke(["summary", str(report)]).stdout
    return said.split("finish it with `", 1)[1].split("`", 1)[0].split()[1:]


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_an_apply_killed_before_its_first_record_is_finished_by_the_command_summary_prints(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """prune --apply killed (-9) with only its header written: summary's finishing command applies (the
    header records --apply); a plan --resume of the report sends nothing and writes no end line (the
    report stays unfinished), and the command as printed deletes: summary exits 0 only then. Before, the
    command planned ("with --apply if the run was applying"), and its plan read the report as finished,
    snapshots still there (hostile12b)."""
    (disk,) = volume_ids(1, seed=145)
    owned = [snap(disk, d) for d in range(1, 4)]
    emu = start(emulator_thread, [disk], owned, latency_ms=200)
    report = tmp_path / "r.jsonl"
    manifest = csv_manifest(write, [disk])
    args = applying(emu, manifest, report)
    kill_when(report, run_process(args), lambda data: data.endswith(b"}\n"))  # the header, then a listing
    assert [line.get("type") for line in lines(report)] == ["run"]  # killed before its first record
    stopped = invoke(["summary", str(report)])
    assert stopped.exit_code == 1, stopped.output
    assert "stopped before acting" in stopped.stdout
    assert "if the run was applying" not in stopped.stdout
    words = finishing(report)
    assert "--apply" in words
    plan = invoke([word for word in words if word != "--apply"], env=PROJECT_ENV)  # the mistake
    assert plan.exit_code == 0, plan.output
    assert "a run applied to this report: this plan does not finish it; prune --apply --resume" in plan.stderr
    assert [r["outcome"] for r in records(report)] == ["planned", "planned"]
    assert requests_of(emu.state(), DELETE) == {}
    planned = invoke(["summary", str(report)])
    assert planned.exit_code == 1, planned.output
    assert "or it applied, and a plan since does not finish it" in planned.stdout
    assert finishing(report) == words
    finished = invoke(words, env=PROJECT_ENV)
    assert finished.exit_code == 0, finished.output
    assert set(live(emu)) == {owned[0].id}
    assert invoke(["summary", str(report)]).exit_code == 0


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_an_apply_resuming_a_plan_and_killed_before_its_first_record_reads_unfinished(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """Plan, review, then --apply --resume on the same report (the runbook's flow), killed (-9) before its
    first record: its ``applying`` line says the run applied, so summary exits 1 and its finishing command
    applies; a plan --resume does not finish the report from then on, and the command as printed deletes.
    Before, the report read as the plan's, finished (exit 0), snapshots still there."""
    (disk,) = volume_ids(1, seed=146)
    owned = [snap(disk, d) for d in range(1, 4)]
    emu = start(emulator_thread, [disk], owned, latency_ms=200)
    report = tmp_path / "r.jsonl"
    manifest = csv_manifest(write, [disk])
    planned = prune(emu, manifest, report, "--keep-last", "1")
    assert planned.exit_code == 0, planned.output
    args = applying(emu, manifest, report, "--resume")
    listed = lambda state: sum(requests_of(state, LIST).values()) >= 2  # noqa: E731 - the plan's, and this one's
    returncode, _ = stopped_when(emu, args, listed, signal.SIGKILL)
    assert returncode == -signal.SIGKILL
    assert requests_of(emu.state(), DELETE) == {}  # killed before its first deletion
    stopped = invoke(["summary", str(report)])
    assert stopped.exit_code == 1, stopped.output
    assert "stopped before acting" in stopped.stdout
    assert [line.get("outcome") for line in lines(report)[-2:]] == ["ended", "applying"]
    words = finishing(report)
    assert "--apply" in words
    plan = invoke([word for word in words if word != "--apply"], env=PROJECT_ENV)
    assert plan.exit_code == 0, plan.output
    assert invoke(["summary", str(report)]).exit_code == 1
    assert finishing(report) == words
    finished = invoke(words, env=PROJECT_ENV)
    assert finished.exit_code == 0, finished.output
    assert set(live(emu)) == {owned[0].id}
    assert invoke(["summary", str(report)]).exit_code == 0


@pytest.mark.no_cover
def test_a_kill_between_deletes_and_their_records_is_settled_by_resume(
    emulator_thread: Callable[..., Any], clock: ManualClock, write: Callable[..., Path], tmp_path: Path
) -> None:
    """kill -9 after the DELETEs went out, before any was confirmed (the emulator's clock stands, so its
    snapshots stay deleting): each DELETE left a sending line first, summary names them (exit 1); once
    they are gone, --resume writes one deleted record for each (an earlier run's DELETE, 404), counted
    in its summary and metrics, and sends no DELETE again."""
    (disk,) = volume_ids(1, seed=143)
    owned = [snap(disk, d) for d in range(1, 8)]
    emu = start(emulator_thread, [disk], owned, clock=clock, deleting_seconds=5.0)
    report = tmp_path / "r.jsonl"
    manifest = csv_manifest(write, [disk])
    args = applying(emu, manifest, report)
    stop = time.monotonic() + 30
    with run_process(args) as process:
        while requests_of(emu.state(), DELETE)["202"] < 6 and time.monotonic() < stop:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            time.sleep(0.01)
        process.kill()
        process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL
    assert records(report) == []  # not one deletion was confirmed: none has its record
    sending = [line["snapshot_id"] for line in lines(report) if line.get("outcome") == "sending"]
    assert sorted(sending) == sorted(s.id for s in owned[1:])
    killed = invoke(["summary", str(report)])
    assert killed.exit_code == 1, killed.output
    assert "unfinished: the last prune run of this report stopped after 6 lines" in killed.stdout
    assert "6 deletions were sent and have no record (snapshots " in killed.stdout
    clock.advance(10)  # the deletions end: the snapshots are gone, and a listing no longer shows them
    metrics = tmp_path / "p.prom"
    result = prune(
        emu, manifest, report, "--keep-last", "1", "--apply", "--resume", "--metrics-file", str(metrics)
    )
    assert result.exit_code == 0, result.output
    final = records(report)
    assert Counter(r["snapshot_id"] for r in final if r["outcome"] == "deleted") == {
        s.id: 1 for s in owned[1:]
    }
    assert {(r["http_status"], r["error_message"], r["rule"]) for r in final} == {
        (404, EARLIER_DELETE, "keep-last 1")
    }
    assert "prune: 6 records: 6 deleted" in result.output
    assert 'evs_snapshot_snapshots{command="prune",outcome="deleted"} 6' in metrics.read_text()
    assert requests_of(emu.state(), DELETE) == {"202": 6}  # nothing was sent twice
    assert set(live(emu)) == {owned[0].id}
    settled = invoke(["summary", str(report)])
    assert settled.exit_code == 0, settled.output
    assert "no record" not in settled.stdout


def test_resume_settles_each_delete_sent_by_what_became_of_its_snapshot(
    emulator_thread: Callable[..., Any], clock: ManualClock, write: Callable[..., Path], tmp_path: Path
) -> None:
    """A report whose run sent five DELETEs and recorded none (its sending lines, as a kill leaves them):
    --resume records the two snapshots gone as deleted by the earlier run (404), waits for the one still
    deleting (no DELETE), and judges and deletes the two still available (the DELETE never arrived),
    each once."""
    (disk,) = volume_ids(1, seed=144)
    owned = [snap(disk, d) for d in range(1, 7)]  # newest first: --keep-last 1 condemns owned[1:]
    emu = start(emulator_thread, [disk], owned, clock=clock, deleting_seconds=5.0)
    manifest = csv_manifest(write, [disk])
    plan = tmp_path / "plan.jsonl"
    assert prune(emu, manifest, plan, "--keep-last", "1").exit_code == 0
    for keep, report in ((4, "a.jsonl"), (3, "b.jsonl")):  # owned[4:] go, then owned[3] starts going
        applied = prune(emu, manifest, tmp_path / report, "--keep-last", str(keep), "--apply", "--no-wait")
        assert applied.exit_code == 0, applied.output
        clock.advance(10 if keep == 4 else 0)
    report = tmp_path / "r.jsonl"
    head, *planned_lines = plan.read_bytes().splitlines(keepends=True)
    sent = [line.replace(b'"outcome":"planned"', b'"outcome":"sending"') for line in planned_lines[:-1]]
    report.write_bytes(head + b"".join(sent))  # the plan's end line dropped: the run was killed
    assert len(sent) == 5
    result = prune(emu, manifest, report, "--keep-last", "1", "--apply", "--no-wait", "--resume")
    assert result.exit_code == 0, result.output
    ended = {r["snapshot_id"]: (r["outcome"], r["http_status"], r["error_message"]) for r in records(report)}
    assert ended == {
        owned[1].id: ("deleted", 202, None),
        owned[2].id: ("deleted", 202, None),
        owned[3].id: ("deleted", None, EARLIER_UNDER_WAY),
        owned[4].id: ("deleted", 404, EARLIER_DELETE),
        owned[5].id: ("deleted", 404, EARLIER_DELETE),
    }
    assert len(records(report)) == 5
    assert requests_of(emu.state(), DELETE) == {"202": 5}  # 3 before, 2 by the resume
    assert invoke(["summary", str(report)]).exit_code == 0


@pytest.mark.no_cover
def test_a_delete_sent_whose_snapshot_is_held_since_gets_its_kept_record(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """A DELETE an earlier run sent (its sending line, no record) whose snapshot is still there and held
    since: --resume keeps it and records it kept, without --verbose (it left no line, and summary kept
    saying the deletion was sent and has no record, exit 1)."""
    (disk,) = volume_ids(1, seed=145)
    owned = [snap(disk, d) for d in (1, 2)]  # --keep-last 1 condemns owned[1]
    emu = start(emulator_thread, [disk], owned)
    manifest = csv_manifest(write, [disk])
    plan = tmp_path / "plan.jsonl"
    assert prune(emu, manifest, plan, "--keep-last", "1").exit_code == 0
    head, planned, _ = plan.read_bytes().splitlines(keepends=True)  # its one record, then its end line
    report = tmp_path / "r.jsonl"
    report.write_bytes(head + planned.replace(b'"outcome":"planned"', b'"outcome":"sending"'))
    hold = ["hold", "--snapshot", owned[1].id, "--reason", "audit", "--project-id", PROJECT, "--apply"]
    held = invoke([*hold, "--endpoint", emu.url, "--report", str(tmp_path / "h.jsonl"), *ACTION_RETRIES])
    assert held.exit_code == 0, held.output
    result = prune(emu, manifest, report, "--keep-last", "1", "--apply", "--resume")
    assert result.exit_code == 0, result.output
    assert [(r["snapshot_id"], r["outcome"], r["rule"]) for r in records(report)] == [
        (owned[1].id, "kept", "hold: audit")
    ]
    assert requests_of(emu.state(), DELETE) == {}
    summary = invoke(["summary", str(report)])
    assert summary.exit_code == 0, summary.output
    assert "no record" not in summary.stdout


@pytest.mark.anyio
async def test_delete_answered_404_is_success(emulator: Callable[..., Any]) -> None:
    """A snapshot already gone (its last look's GET answers 404) ends deleted, without a DELETE or a wait."""
    running = await emulator()
    environ = {**AKSK}
    connection = Connection(endpoints=Endpoints(evs=URL(running.url)), environ=environ)
    written: list[ActionRecord] = []
    async with contextlib.AsyncExitStack() as stack:
        router = await connect(stack, connection)
        route = await router.route_for(PROJECT, None)
        record = ActionRecord(
            run_id="r",
            command="prune",
            key="x",
            outcome=Action.PLANNED,
            snapshot_id=str(uuid.uuid4()),
            started_at="t",
            finished_at="t",
        )
        deleter = quick_deleter(written.append, policy=RetryPolicy(max_attempts=2), wait_timeout=5)
        await deleter.run([Job(route, record)])
    assert [(r.outcome, r.http_status, r.attempts) for r in written] == [(Action.DELETED, 404, 0)]
    assert hits(running, DELETE) == {}


def test_a_second_run_is_refused_by_the_lock(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """While another run holds the lock, prune exits 75 and sends nothing."""
    (disk,) = volume_ids(1, seed=142)
    emu = start(emulator_thread, [disk], [snap(disk, d) for d in range(1, 4)])
    lock = tmp_path / "held.lock"
    with RunLock(lock):
        args = ["--keep-last", "1", "--apply", "--lock-file", str(lock)]
        result = prune(emu, csv_manifest(write, [disk]), tmp_path / "r.jsonl", *args)
    assert result.exit_code == 75, result.output
    assert emu.state()["requests"] == {}


def test_prune_token_expiring_before_the_delete_stops_with_exit_3(
    emulator_thread: Callable[..., Any], clock: ManualClock, write: Callable[..., Path], tmp_path: Path
) -> None:
    """prune --apply: as cleanup, a token that expires while the DELETE is throttled closes the route:
    exit 3 with the refusal printed, and the condemned snapshot is still there."""
    volume = volume_ids(1, seed=721)[0]
    seeds = [snap(volume, 2), snap(volume, 1)]
    # burst 3: the two listings (snapshots, then snapshot groups) and the last look's GET pass; the DELETE
    # is the one throttled (the clock stands: any rate throttles it; the 429 names the rate, and the
    # client paces at it)
    emu = start(emulator_thread, [volume], seeds, clock=clock, rate_limit=20.0, burst=3, token_ttl=60.0)
    manifest = csv_manifest(write, [volume])
    report = tmp_path / "prune.jsonl"
    args = cli_args(
        "prune", manifest, endpoint=emu.url, project_id=PROJECT, report=report, keep_last=1, apply=True
    )
    with once_throttled(emu, lambda: clock.advance(120), route=DELETE) as acted:
        result = invoke([*args, *MANY_RETRIES], base={**NO_CREDENTIALS, "OS_AUTH_TOKEN": issued_token(emu)})
    assert acted == [True]
    assert result.exit_code == 3, result.output
    assert "credentials refused" in result.stderr
    outcomes = sorted((r["outcome"], r["error_code"]) for r in records(report))
    assert ("failed", "APIGW.0301") in outcomes
    assert {s["id"] for s in emu.state()["snapshots"]} == {seed.id for seed in seeds}


def test_snapshot_without_a_readable_creation_time_counts_as_newest() -> None:
    """No ``created_at`` (missing, null or empty) is unreadable, so such a snapshot sorts first (kept)."""
    old = {"id": "a", "created_at": "2026-01-01T00:00:00.000000"}
    missing = {"id": "b"}
    empty = {"id": "c", "created_at": ""}
    assert Snapshot.parse(missing).created is None
    assert Snapshot.parse(empty).created is None
    assert Snapshot.parse({"created_at": None}).created is None
    assert [s.id for s in newest_first(map(Snapshot.parse, [old, missing, empty]))] == ["c", "b", "a"]


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
    assert f"r.jsonl:{len(planned.splitlines()) + 1}: not a record of this report" in damaged.output
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


def test_unusable_manifest_rows_are_warned_and_skipped(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """Rows naming no usable disk are each warned and skipped (exit 1); a repeated disk is selected once."""
    disk, other = volume_ids(2, seed=902)
    owned = [snap(disk, d) for d in (1, 2, 3)]
    emu = start(emulator_thread, [disk, other], [*owned, snap(other, 1), snap(other, 2)])
    rows = [
        {"volume_id": disk, "project_id": PROJECT},
        {"volume_id": disk.upper(), "project_id": PROJECT},  # the same disk again
        {"volume_id": "not-a-uuid", "project_id": PROJECT},
        {"volume_id": other, "project_id": "XYZ"},
        {"volume_id": other, "project_id": PROJECT, "region": "Not A Region"},
        {"volume_id": other},
    ]
    manifest = write("m.jsonl", "".join(orjson.dumps(row).decode() + "\n" for row in rows) + "[1, 2]\n")
    report = tmp_path / "r.jsonl"
    result = invoke(
        [
            "prune",
            str(manifest),
            "--endpoint",
            emu.url,
            "--report",
            str(report),
            "--keep-last",
            "1",
            "--apply",
        ]
    )
    assert result.exit_code == 1, result.output
    assert "volume_id 'not-a-uuid' is not a UUID" in result.output
    assert "project_id 'XYZ' is not 32 lower-case hex characters" in result.output
    assert "region 'Not A Region' is not a region id" in result.output
    assert "no project_id (row or --project-id) and no region" in result.output
    assert "row 7" in result.output  # the line that is not a row object
    assert "5 manifest rows skipped" in result.output
    assert Counter(r["outcome"] for r in records(report)) == {"deleted": 2}
    assert {r["volume_id"] for r in records(report)} == {disk}
    assert requests_of(emu.state(), DELETE) == {"202": 2}


def test_project_lookup_failures_stop_before_listing(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """Rows without a project: an unknown region or an unreachable IAM exits 3, nothing listed or deleted."""
    (disk,) = volume_ids(1, seed=903)
    emu = start(emulator_thread, [disk], [snap(disk, d) for d in (1, 2)])
    manifest = csv_manifest(write, [disk])
    base = ["prune", str(manifest), "--endpoint", emu.url, "--keep-last", "1", "--apply"]
    unknown = invoke(
        [
            *base,
            "--iam-endpoint",
            emu.url,
            "--region",
            "ap-southeast-9",
            "--report",
            str(tmp_path / "a.jsonl"),
        ]
    )
    assert unknown.exit_code == 3, unknown.output
    assert "cannot find the project of region ap-southeast-9" in unknown.output
    assert "nothing was deleted" in unknown.output
    away = invoke(
        [
            *base,
            "--iam-endpoint",
            CLOSED_PORT,
            "--region",
            "cn-north-4",
            "--report",
            str(tmp_path / "b.jsonl"),
        ]
    )
    assert away.exit_code == 3, away.output
    assert "cannot find the project of region cn-north-4: ENDPOINT_UNREACHABLE: IAM at" in away.output
    assert LIST not in emu.state()["requests"]
    assert DELETE not in emu.state()["requests"]


def test_all_volumes_refused_listing_of_disks_exits_3(
    emulator_thread: Callable[..., Any], tmp_path: Path
) -> None:
    """--all-volumes with refused credentials: 'cannot list the disks', exit 3, no snapshot listed."""
    (disk,) = volume_ids(1, seed=904)
    emu = start(emulator_thread, [disk], [snap(disk, d) for d in (1, 2)])
    result = prune(emu, None, tmp_path / "r.jsonl", "--all-volumes", "--keep-last", "1", "--apply", env=WRONG)
    assert result.exit_code == 3, result.output
    assert "cannot list the disks of" in result.output
    assert LIST not in emu.state()["requests"]
    no_project = invoke(["prune", "--all-volumes", "--keep-last", "1", "--endpoint", emu.url])
    assert no_project.exit_code == 2
    assert "--all-volumes without a MANIFEST needs --project-id or --region" in no_project.output


def test_unreadable_creation_time_is_kept_as_newest(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """A snapshot whose created_at cannot be read counts as newest: keep-last and keep-within both keep it."""
    (disk,) = volume_ids(1, seed=905)
    odd = SeedSnapshot(
        id=str(uuid.uuid4()),
        volume_id=disk,
        name="odd",
        created_at="yesterday",
        metadata={"evs_snapshot_run": "20261101T000000Z-0a0b0c"},
    )
    dated = [snap(disk, d) for d in (1, 2, 3)]
    emu = start(emulator_thread, [disk], [odd, *dated])
    manifest = csv_manifest(write, [disk])
    result = prune(emu, manifest, tmp_path / "a.jsonl", "--keep-last", "1", "--allow-none")
    assert result.exit_code == 0, result.output
    assert {r["snapshot_id"] for r in records(tmp_path / "a.jsonl")} == {s.id for s in dated}
    result = prune(emu, manifest, tmp_path / "b.jsonl", "--keep-within", "1h", "--allow-none")
    assert result.exit_code == 0, result.output
    assert {r["snapshot_id"] for r in records(tmp_path / "b.jsonl")} == {s.id for s in dated}


def test_resume_takes_up_deletions_already_under_way(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """--apply --resume: an owned snapshot already deleting is recorded deleted without a second DELETE,
    and a later --resume skips what the report already deleted."""
    (disk,) = volume_ids(1, seed=906)
    newest, old = snap(disk, 1), snap(disk, 5)
    going = snap(disk, 3, status="deleting")
    emu = start(emulator_thread, [disk], [newest, old, going])
    manifest = csv_manifest(write, [disk])
    report = tmp_path / "r.jsonl"
    plan = prune(emu, manifest, report, "--keep-last", "1")
    assert plan.exit_code == 0, plan.output
    assert [(r["snapshot_id"], r["outcome"]) for r in records(report)] == [(old.id, "planned")]
    applied = prune(emu, manifest, report, "--keep-last", "1", "--apply", "--resume", "--no-wait")
    assert applied.exit_code == 0, applied.output
    done = {r["snapshot_id"]: r["outcome"] for r in records(report)[1:]}
    assert done == {old.id: "deleted", going.id: "deleted"}
    assert requests_of(emu.state(), DELETE) == {"202": 1}  # only the old one: the other was going already
    again = prune(emu, manifest, report, "--keep-last", "1", "--apply", "--resume", "--no-wait")
    assert again.exit_code == 0, again.output
    assert len(records(report)) == 3
    assert requests_of(emu.state(), DELETE) == {"202": 1}


def test_side_files_that_cannot_be_written_are_refused_first(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """--metrics-file that is a folder, or under a file: exit 2 before any request is sent."""
    (disk,) = volume_ids(1, seed=907)
    emu = start(emulator_thread, [disk], [snap(disk, d) for d in (1, 2)])
    manifest = csv_manifest(write, [disk])
    folder = prune(emu, manifest, tmp_path / "a.jsonl", "--keep-last", "1", "--metrics-file", str(tmp_path))
    assert folder.exit_code == 2, folder.output
    assert "is a directory" in folder.output
    under_a_file = write("not-a-dir", "x") / "metrics.prom"
    blocked = prune(
        emu, manifest, tmp_path / "b.jsonl", "--keep-last", "1", "--summary-json", str(under_a_file)
    )
    assert blocked.exit_code == 2, blocked.output
    assert f"--summary-json {under_a_file}: cannot write there" in blocked.output
    assert emu.state()["requests"] == {}
