"""Command edges the other tests leave out: standard input and output, lock files, resumed action reports
with odd lines, refusals in the middle of a run, selectors checked again on each disk, quota and usage
checks, and SIGINT while a command waits on a throttled API."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import orjson
import pytest

from orchestrator.cli import main
from orchestrator.emulator import EmulatorThread, ManualClock, SeedSnapshot
from orchestrator.emulator.settings import DEFAULT_DOMAIN, DEFAULT_PASSWORD, DEFAULT_USER
from orchestrator.lock import RunLock, manifest_lock
from tests.helpers import (
    AKSK_ENV,
    DISKS,
    FAST,
    FAST_RETRIES,
    FAST_WAIT,
    IDS,
    NO_CREDENTIALS,
    OTHER_RUN,
    PROJECT,
    SNAPS,
    TOKEN_ENV,
    VOLUMES,
    call,
    cli_args,
    create_args,
    create_report,
    csv_manifest,
    invoke,
    lines,
    marker,
    records,
    requests_of,
    snap,
    start,
    volume_ids,
    world,
)

QUOTA = "GET /v2/{project_id}/os-quota-sets/{target_project_id}"
DELETE = "DELETE /v2/{project_id}/cloudsnapshots/{snapshot_id}"
SNAPSHOT_LIST = "GET /v2/{project_id}/cloudsnapshots/detail"
WRONG_SK = {"HUAWEICLOUD_SDK_SK": "not-the-emulator-secret-key-0000000000000000"}
FEW_RETRIES = ("--max-attempts", "2", "--backoff-initial", "0.01")
MANY_RETRIES = ("--max-attempts", "100", "--backoff-initial", "0.05", "--backoff-max", "0.1")


def lock_files(runtime: Path) -> list[str]:
    """The lock files a run left in the per-user lock directory (``$XDG_RUNTIME_DIR/evs-snapshot``)."""
    folder = runtime / "evs-snapshot"
    return sorted(path.name for path in folder.iterdir()) if folder.is_dir() else []


# --- create -----------------------------------------------------------------------------------------
def run_main(
    args: list[str], monkeypatch: pytest.MonkeyPatch, env: dict[str, str] = AKSK_ENV
) -> int | str | None:
    """The CLI in-process on the test's real standard output (a report to ``-`` writes to its descriptor,
    which click's runner does not have); returns the exit code."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as stopped:
        main.main(args, prog_name="evs-snapshot")
    return stopped.value.code


def test_create_stdin_manifest_leaves_no_lock_file(
    emulator_thread: Callable[..., Any], tmp_path: Path
) -> None:
    """create - (rows from standard input): the run works, and the lock files it took (the manifest's,
    by digest; the report's; the run's) are gone when it ends."""
    ids = volume_ids(3, seed=701)
    emu = emulator_thread(any_volume=True)
    manifest = b"".join(orjson.dumps({"volume_id": i}) + b"\n" for i in ids)
    report = tmp_path / "r.jsonl"
    args = create_args(emu.url, Path("-"), report, *FAST_RETRIES, format="jsonl")
    result = invoke(args, env={"XDG_RUNTIME_DIR": str(tmp_path)}, input=manifest)
    assert result.exit_code == 0, result.stderr
    assert lines(report)[0]["manifest"] == "<stdin>"
    assert sorted((r["row"], r["volume_id"], r["outcome"]) for r in records(report)) == [
        (n, i, "accepted") for n, i in enumerate(ids, start=1)
    ]
    assert lock_files(tmp_path) == []


def test_create_report_to_stdout_takes_no_report_lock(
    emulator_thread: Callable[..., Any],
    write: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """create --report -: the header and records go to standard output; no lock file is left behind."""
    ids = volume_ids(2, seed=705)
    emu = emulator_thread(any_volume=True)
    manifest = csv_manifest(write, ids)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    code = run_main(create_args(emu.url, manifest, Path("-"), *FAST_RETRIES), monkeypatch)
    out, err = capfd.readouterr()
    assert code == 0, err
    shown = [orjson.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert shown[0]["type"] == "run"
    assert sorted((r["volume_id"], r["outcome"]) for r in shown[1:]) == sorted((i, "accepted") for i in ids)
    assert lock_files(tmp_path) == []


def test_create_wait_needs_a_report_file(
    emulator_thread: Callable[..., Any], write: Callable[..., Path]
) -> None:
    """create --wait --report -: exit 2 before anything is sent (--wait reads the report back)."""
    emu = emulator_thread(any_volume=True)
    manifest = csv_manifest(write, volume_ids(1, seed=702))
    result = invoke(create_args(emu.url, manifest, Path("-"), wait=True))
    assert result.exit_code == 2
    assert "--wait reads the report back, so it needs a --report file" in result.stderr
    assert emu.state()["requests"] == {}


def test_create_lock_file_replaces_the_manifest_lock(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """--lock-file: held by another run, exit 75 with nothing sent; free, it is taken instead of the
    manifest's own lock (held meanwhile by another), and it is not removed at the end."""
    emu = emulator_thread(any_volume=True)
    manifest = csv_manifest(write, volume_ids(2, seed=703))
    lock, runtime = tmp_path / "maintenance.lock", tmp_path / "runtime"
    runtime.mkdir()
    env = {"XDG_RUNTIME_DIR": str(runtime)}
    with RunLock(lock):
        held = invoke(create_args(emu.url, manifest, tmp_path / "held.jsonl", lock_file=lock), env=env)
    assert held.exit_code == 75
    assert f"another evs-snapshot run holds {lock}" in held.stderr
    assert emu.state()["requests"] == {}
    report = tmp_path / "r.jsonl"
    with RunLock(manifest_lock(str(manifest), env)):
        free = invoke(create_args(emu.url, manifest, report, *FAST_RETRIES, lock_file=lock), env=env)
    assert free.exit_code == 0, free.stderr
    assert {r["outcome"] for r in records(report)} == {"accepted"}
    assert lock.exists()
    assert lock_files(runtime) == []


def test_create_quota_check_cut_short_by_the_deadline(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """A quota check slower than --deadline is given up with a warning; the rows then end
    DEADLINE_EXCEEDED and no snapshot is created."""
    emu = emulator_thread(any_volume=True, latency_ms=400)
    manifest = csv_manifest(write, volume_ids(2, seed=704))
    report = tmp_path / "r.jsonl"
    result = invoke(create_args(emu.url, manifest, report, *FAST_RETRIES, deadline="0.1s"))
    assert result.exit_code == 1, result.stderr
    assert "the project's snapshot quota did not answer within" in result.stderr
    assert {(r["outcome"], r["error_code"]) for r in records(report)} == {("failed", "DEADLINE_EXCEEDED")}
    assert emu.state()["snapshots"] == []


# --- rollback, and the action-report frame it shares with prune and cleanup ---------------------------
def rollback(emu: EmulatorThread, source: Path, report: Path | str, *extra: str, **flags: object) -> Any:
    return invoke(
        [*cli_args("rollback", source, endpoint=emu.url, report=report, **flags), *FAST, *FAST_WAIT, *extra]
    )


def test_rollback_plan_to_stdout(
    emulator_thread: Callable[..., Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """rollback --report -: the plan's header and records go to standard output; the summary says so."""
    emu = emulator_thread(**world(2))
    source = create_report(tmp_path / "create.jsonl", [{}, {}])
    args = [*cli_args("rollback", source, endpoint=emu.url, report="-"), *FAST, *FAST_WAIT]
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    code = run_main(args, monkeypatch)
    out, err = capfd.readouterr()
    assert code == 0, err
    shown = [orjson.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert (shown[0]["type"], shown[0]["command"]) == ("run", "rollback")
    assert [(r["key"], r["outcome"], r["error_code"]) for r in shown[1:]] == [
        ("row:1", "planned", None),
        ("row:2", "planned", None),
    ]
    assert "report: standard output" in err
    assert lock_files(tmp_path) == []


def test_rollback_resume_of_a_report_not_yet_written(
    emulator_thread: Callable[..., Any], tmp_path: Path
) -> None:
    """--resume naming a report that does not exist yet starts it: header, one record per row, exit 0."""
    emu = emulator_thread(**world(2))
    source = create_report(tmp_path / "create.jsonl", [{}, {}])
    report = tmp_path / "later.jsonl"
    result = rollback(emu, source, report, resume=True)
    assert result.exit_code == 0, result.output
    assert lines(report)[0]["command"] == "rollback"
    assert [(r["key"], r["outcome"]) for r in records(report)] == [("row:1", "planned"), ("row:2", "planned")]


def refused_report(emu_factory: Callable[..., Any], tmp_path: Path) -> tuple[EmulatorThread, Path, Path]:
    """A rollback --apply whose one row was refused (its snapshot is another run's): final, nothing sent."""
    other = SeedSnapshot(id=SNAPS[0], volume_id=VOLUMES[0], name="older-run", metadata=marker(OTHER_RUN))
    emu = emu_factory(volumes=world(1)["volumes"], snapshots=(other,))
    source = create_report(tmp_path / "create.jsonl", [{}])
    report = tmp_path / "rollback.jsonl"
    first = rollback(emu, source, report, apply=True)
    assert first.exit_code == 1, first.output
    assert [(r["outcome"], r["error_code"]) for r in records(report)] == [("refused", "NOT_THIS_RUN")]
    return emu, source, report


def test_rollback_resume_skips_a_torn_last_line(emulator_thread: Callable[..., Any], tmp_path: Path) -> None:
    """--resume over a report whose last line was cut short (no newline) and is not a record: the line
    is ignored (and cut), the refused row stays finished and nothing is sent."""
    emu, source, report = refused_report(emulator_thread, tmp_path)
    before = emu.state()["requests"]
    with report.open("ab") as handle:
        handle.write(b'{"run_id": "cut short"}')
    result = rollback(emu, source, report, apply=True, resume=True)
    assert result.exit_code == 1, result.output
    assert "1 rows were finished by an earlier run of this report (skipped)" in result.output
    assert [(r["outcome"], r["error_code"]) for r in records(report)] == [("refused", "NOT_THIS_RUN")]
    assert not report.read_bytes().endswith(b'cut short"}')
    assert emu.state()["requests"] == before


def test_rollback_resume_refuses_a_line_that_is_not_an_object(
    emulator_thread: Callable[..., Any], tmp_path: Path
) -> None:
    """--resume over a report holding a whole line that is JSON but not an object: exit 2, naming the
    line, before anything is sent."""
    emu, source, report = refused_report(emulator_thread, tmp_path)
    before = emu.state()["requests"]
    with report.open("ab") as handle:
        handle.write(b"[1, 2]\n")
    result = rollback(emu, source, report, apply=True, resume=True)
    assert result.exit_code == 2
    assert f"{report}:3: not a record of this report (a report line must be a JSON object)" in result.output
    assert emu.state()["requests"] == before


def test_rollback_stops_sending_rows_once_credentials_are_refused(
    emulator_thread: Callable[..., Any], tmp_path: Path
) -> None:
    """A refused signature closes the route on the first row: the rows after it get no record and no
    request (--resume takes them up), the refusal is printed once, exit 3."""
    emu = emulator_thread(**world(4))
    source = create_report(tmp_path / "create.jsonl", [{}, {}, {}, {}])
    report = tmp_path / "rollback.jsonl"
    args = [*cli_args("rollback", source, endpoint=emu.url, report=report, concurrency=1), *FAST, *FAST_WAIT]
    result = invoke(args, env=WRONG_SK)
    assert result.exit_code == 3
    assert result.stderr.count("credentials refused") == 1
    assert [(r["key"], r["outcome"], r["error_code"]) for r in records(report)] == [
        ("row:1", "failed", "APIGW.0301")
    ]
    assert sum(sum(counts.values()) for counts in emu.state()["requests"].values()) == 1


def test_rollback_plan_of_rows_without_snapshots_sends_nothing(
    emulator_thread: Callable[..., Any], tmp_path: Path
) -> None:
    """Planning rows the create run never made a snapshot for sends no request, and the summary has no
    request line; each row names NO_USABLE_SNAPSHOT, exit 1."""
    emu = emulator_thread(**world(2))
    failed = {"outcome": "failed", "snapshot_id": None, "error_code": "EVS.5500", "http_status": 500}
    source = create_report(tmp_path / "create.jsonl", [dict(failed), dict(failed)])
    report = tmp_path / "rollback.jsonl"
    result = rollback(emu, source, report)
    assert result.exit_code == 1
    assert {(r["outcome"], r["error_code"]) for r in records(report)} == {("planned", "NO_USABLE_SNAPSHOT")}
    assert "plan only, nothing was sent: 0 of 2 rows can be rolled back, 2 have a blocker" in result.output
    assert "requests:" not in result.output
    assert emu.state()["requests"] == {}


# --- select -----------------------------------------------------------------------------------------
def select(emu: EmulatorThread, *selectors: str) -> Any:
    return invoke([*cli_args("select", endpoint=emu.url, project_id=PROJECT), *selectors])


@pytest.mark.parametrize(
    ("selectors", "expected"),
    [
        (["--tag", "env=prod", "--server", DISKS[0].server_id], {0, 1}),
        (["--tag", "env=prod", "--metadata", "tier=web"], {0, 1}),
    ],
)
def test_select_checks_other_selectors_on_tagged_disks(
    emulator_thread: Callable[..., Any], selectors: list[str], expected: set[int]
) -> None:
    """With --tag the disks come from the volume list (per --server), cross-checked with the tags API,
    which knows nothing of --server or --metadata: each tagged disk is checked against them, so a
    tagged disk on another server, or without the metadata, is left out."""
    emu = emulator_thread(volumes=DISKS)
    result = select(emu, *selectors)
    assert result.exit_code == 0, result.stderr
    chosen = {line.split(",", 1)[0] for line in result.stdout.splitlines()[1:]}
    assert chosen == {IDS[i] for i in expected}
    assert set(emu.state()["requests"]) == {
        "GET /v2/{project_id}/cloudvolumes/detail",
        "POST /v2/{project_id}/cloudvolumes/resource_instances/action",
    }


def test_select_needs_a_project_or_a_region(emulator_thread: Callable[..., Any]) -> None:
    """select with neither --project-id nor --region (nor their environment variables): exit 2, nothing
    sent."""
    emu = emulator_thread(volumes=DISKS)
    result = invoke(cli_args("select", "--status", "available", endpoint=emu.url))
    assert result.exit_code == 2
    assert "select needs --project-id, or --region to look the project up by" in result.stderr
    assert emu.state()["requests"] == {}


def test_select_allows_at_most_ten_tag_keys(emulator_thread: Callable[..., Any]) -> None:
    """Eleven --tag keys are more than the tags API takes: exit 2 before anything is sent; ten pass."""
    emu = emulator_thread(volumes=DISKS)
    ten = [item for n in range(10) for item in ("--tag", f"k{n}=v")]
    over = invoke([*cli_args("select", endpoint=emu.url, project_id=PROJECT), *ten, "--tag", "k10=v"])
    assert over.exit_code == 2
    assert "at most 10 tag keys (the API's limit)" in over.stderr
    assert emu.state()["requests"] == {}
    fits = select(emu, *ten)
    assert fits.exit_code == 1  # sent, and no disk carries those tags
    assert "no disk matched" in fits.stderr


# --- validate ---------------------------------------------------------------------------------------
def test_validate_online_names_rows_beyond_the_project_quota(
    emulator_thread: Callable[..., Any], write: Callable[..., Path]
) -> None:
    """--online: three good rows and one snapshot left in the project's quota: QUOTA_EXCEEDED, exit 1."""
    ids = volume_ids(3, seed=711)
    emu = emulator_thread(any_volume=True, snapshot_quota=1)
    manifest = csv_manifest(write, ids)
    args = [*cli_args("validate", manifest, online=True, endpoint=emu.url, project_id=PROJECT), *FEW_RETRIES]
    result = invoke(args)
    assert result.exit_code == 1, result.output
    assert (
        f"QUOTA_EXCEEDED: project {PROJECT}: 3 rows would be sent but only 1 snapshots are left in the "
        "project's quota; 2 would be refused"
    ) in result.stdout
    assert sum(requests_of(emu.state(), QUOTA).values()) == 1


def test_validate_online_rows_beyond_the_quota_are_not_counted_as_sendable(
    emulator_thread: Callable[..., Any], write: Callable[..., Path]
) -> None:
    """--online: of three good rows, only the one the quota holds would be sent."""
    emu = emulator_thread(any_volume=True, snapshot_quota=1)
    manifest = csv_manifest(write, volume_ids(3, seed=714))
    result = invoke(cli_args("validate", manifest, online=True, endpoint=emu.url, project_id=PROJECT))
    assert result.exit_code == 1, result.output
    assert "3 rows: 1 would be sent (checked online)" in result.stdout


def test_validate_online_checks_the_quota_of_a_project_looked_up_by_region(
    emulator_thread: Callable[..., Any], write: Callable[..., Path]
) -> None:
    """--online --region: the looked-up project's quota is checked like a --project-id one's."""
    emu = emulator_thread(any_volume=True, snapshot_quota=1)
    manifest = csv_manifest(write, volume_ids(3, seed=715))
    args = cli_args(
        "validate", manifest, online=True, endpoint=emu.url, iam_endpoint=emu.url, region="cn-north-4"
    )
    result = invoke(args)
    assert result.exit_code == 1, result.output
    assert "QUOTA_EXCEEDED" in result.stdout


def test_validate_online_asks_no_quota_once_a_project_is_refused(
    emulator_thread: Callable[..., Any], write: Callable[..., Path]
) -> None:
    """--online: the quota of a project whose rows were all good is asked; when another row's project is
    refused (wrong project for these credentials), validate stops with exit 3 and asks no quota."""
    emu = emulator_thread(any_volume=True)
    good = [f"{volume},{PROJECT}" for volume in volume_ids(2, seed=712)]
    fine = write("fine.csv", "volume_id,project_id\n" + "".join(f"{row}\n" for row in good))
    args = cli_args("validate", online=True, endpoint=emu.url, project_id=PROJECT)
    first = invoke([args[0], str(fine), *args[1:]])
    assert first.exit_code == 0, first.output
    assert "2 rows: 2 would be sent (checked online), 0 with problems" in first.stdout
    assert sum(requests_of(emu.state(), QUOTA).values()) == 1
    stranger = f"{volume_ids(1, seed=713)[0]},{'f' * 32}"
    mixed = write("mixed.csv", "volume_id,project_id\n" + "".join(f"{row}\n" for row in [*good, stranger]))
    second = invoke([args[0], str(mixed), *args[1:]])
    assert second.exit_code == 3
    assert "wrong project" in second.stderr
    assert "validate stopped (fix the cause and run it again)" in second.stderr
    assert sum(requests_of(emu.state(), QUOTA).values()) == 1


# --- wait, emulator ---------------------------------------------------------------------------------
def test_wait_for_a_missing_report_is_a_usage_error(
    emulator_thread: Callable[..., Any], tmp_path: Path
) -> None:
    """wait on a report that does not exist: exit 2 naming it, nothing sent."""
    emu = emulator_thread()
    missing = tmp_path / "missing.jsonl"
    result = invoke(cli_args("wait", missing, endpoint=emu.url))
    assert result.exit_code == 2
    assert f"{missing}: no such report" in result.stderr
    assert emu.state()["requests"] == {}


@pytest.mark.parametrize("value", ["1.5", "-0.1"])
def test_emulator_fault_probabilities_are_between_0_and_1(value: str) -> None:
    """emulator --fault-5xx outside [0, 1] is refused (exit 2) before anything starts."""
    result = invoke(["emulator", "--port", "0", "--fault-5xx", value])
    assert result.exit_code == 2
    assert "must be between 0 and 1" in result.stderr


# --- refusals and signals while a command waits on a throttled API -----------------------------------
# The emulator's token bucket refills only as its clock moves: under a ManualClock that the test holds
# still, a drained bucket answers 429 until the test acts, so the test can act while a command is
# provably in the middle of its work (retrying the throttled request).
@contextlib.contextmanager
def once_throttled(
    emu: EmulatorThread, act: Callable[[], None], route: str | None = None
) -> Iterator[list[bool]]:
    """On a helper thread, run ``act`` as soon as the emulator has answered 429 (to ``route``, or to any
    route), looking every 10 ms for at most 20 s; yields a list that holds True once it acted."""
    acted: list[bool] = []
    done = threading.Event()

    def watch() -> None:
        limit = time.monotonic() + 20
        while not done.wait(0.01) and time.monotonic() < limit:
            requests = emu.state()["requests"]
            if any(counts.get("429") for name, counts in requests.items() if route in (None, name)):
                if not done.is_set():
                    act()
                    acted.append(True)
                return

    watcher = threading.Thread(target=watch, name="once-throttled", daemon=True)
    watcher.start()
    try:
        yield acted
    finally:
        done.set()
        watcher.join()


def one_request(emu: EmulatorThread, method: str, path: str, **options: Any) -> tuple[int, dict[str, str]]:
    """One request to the emulator (the fixed token's by default): its status and headers."""

    async def send() -> tuple[int, dict[str, str]]:
        async with aiohttp.ClientSession() as http:
            status, _, headers = await call(http, emu, method, path, **options)
            return status, headers

    return anyio.run(send)


def issued_token(emu: EmulatorThread) -> str:
    """A password token from the emulator's IAM (unlike the fixed token, it expires with the clock)."""
    user = {"name": DEFAULT_USER, "password": DEFAULT_PASSWORD, "domain": {"name": DEFAULT_DOMAIN}}
    identity = {"methods": ["password"], "password": {"user": user}}
    body = {"auth": {"identity": identity, "scope": {"project": {"id": PROJECT}}}}
    status, headers = one_request(emu, "POST", "/v3/auth/tokens", body=body, auth=False)
    assert status == 201
    return headers["X-Subject-Token"]


def drain_bucket(emu: EmulatorThread) -> None:
    """Spend the one request the fixed token's tenant may make until the emulator's clock moves."""
    status, _ = one_request(emu, "GET", f"/v2/{PROJECT}/cloudsnapshots/detail")
    assert status == 200


def test_cleanup_token_expiring_before_the_delete_stops_with_exit_3(
    emulator_thread: Callable[..., Any], clock: ManualClock, tmp_path: Path
) -> None:
    """cleanup --apply: the listing passes, the DELETE is throttled, and meanwhile the token expires:
    the DELETE is refused, the route closes, its refusal is printed and the run exits 3."""
    emu = emulator_thread(clock=clock, rate_limit=1.0, burst=1, token_ttl=60.0, **world(1))
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


def test_prune_token_expiring_before_the_delete_stops_with_exit_3(
    emulator_thread: Callable[..., Any], clock: ManualClock, write: Callable[..., Path], tmp_path: Path
) -> None:
    """prune --apply: as cleanup, a token that expires while the DELETE is throttled closes the route:
    exit 3 with the refusal printed, and the condemned snapshot is still there."""
    volume = volume_ids(1, seed=721)[0]
    seeds = [snap(volume, 2), snap(volume, 1)]
    emu = start(emulator_thread, [volume], seeds, clock=clock, rate_limit=1.0, burst=1, token_ttl=60.0)
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


def interrupt() -> None:
    os.kill(os.getpid(), signal.SIGINT)


def test_audit_sigint_while_throttled_exits_130(
    emulator_thread: Callable[..., Any], clock: ManualClock, write: Callable[..., Path]
) -> None:
    """audit: SIGINT while the listing is throttled stops it at once: exit 130, no verdict printed."""
    volume = volume_ids(1, seed=722)[0]
    emu = start(emulator_thread, [volume], [snap(volume, 1)], clock=clock, rate_limit=1.0, burst=1)
    manifest = csv_manifest(write, [volume])
    drain_bucket(emu)
    args = [
        "audit",
        str(manifest),
        "--endpoint",
        emu.url,
        "--project-id",
        PROJECT,
        "--max-age",
        "1d",
        *MANY_RETRIES,
    ]
    with once_throttled(emu, interrupt) as acted:
        result = invoke(args, base=TOKEN_ENV)
    assert acted == [True]
    assert result.exit_code == 130, result.output
    assert "stopped by SIGINT; run audit again" in result.stderr
    assert "volumes:" not in result.stdout
    assert requests_of(emu.state(), SNAPSHOT_LIST)["200"] == 1  # the test's own request only


def test_wait_sigint_while_throttled_exits_130(
    emulator_thread: Callable[..., Any], clock: ManualClock, tmp_path: Path
) -> None:
    """wait: SIGINT while polling is throttled stops the wait: exit 130, nothing appended to the report."""
    emu = emulator_thread(clock=clock, rate_limit=1.0, burst=1, **world(2))
    report = create_report(tmp_path / "create.jsonl", [{}, {}])
    before = report.read_bytes()
    drain_bucket(emu)
    args = [*cli_args("wait", report, endpoint=emu.url, poll_interval="0.05"), *MANY_RETRIES]
    with once_throttled(emu, interrupt) as acted:
        result = invoke(args, base=TOKEN_ENV)
    assert acted == [True]
    assert result.exit_code == 130, result.output
    assert "stopped by SIGINT; run wait again to go on" in result.stderr
    assert report.read_bytes() == before


def test_validate_online_counts_one_quota_for_rows_with_and_without_a_region(
    emulator_thread: Callable[..., Any], write: Callable[..., Path]
) -> None:
    """--online --endpoint: rows naming the region and rows that do not go to the same endpoint and
    project, so they count against one quota: 6 rows, 4 left, 2 beyond it."""
    emu = emulator_thread(any_volume=True, snapshot_quota=4)
    rows = [
        f"{volume},{'cn-north-4' if index % 2 else ''}"
        for index, volume in enumerate(volume_ids(6, seed=716))
    ]
    manifest = write("mixed.csv", "volume_id,region\n" + "".join(f"{row}\n" for row in rows))
    result = invoke(cli_args("validate", manifest, online=True, endpoint=emu.url, project_id=PROJECT))
    assert result.exit_code == 1, result.output
    assert "6 rows: 4 would be sent (checked online), 2 with problems (QUOTA_EXCEEDED x2)" in result.stdout
    assert sum(requests_of(emu.state(), QUOTA).values()) == 1
