"""create's freeze hooks: the post-hook runs whenever its pre-hook ran (success, failure, a signal,
--deadline), a failed pre-hook keeps its rows from being sent, a failed post-hook makes exit 1, hooks run
once per run or once per server, their environment holds the run and no secret, their output goes to
stderr. Real shell commands write files under the test's folder."""

from __future__ import annotations

import functools
import io
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from orchestrator.console import Console
from orchestrator.errors import UsageError
from orchestrator.hookplan import HookPlan
from orchestrator.hooks import HookContext, HookResult, Hooks, hook_environment, run_hook
from orchestrator.manifest import RawRow
from orchestrator.servers import ServerRows, rows_by_server
from tests.helpers import (
    AKSK,
    CREATE_ROUTE,
    TOKEN,
    TOKEN_ENV,
    create_args,
    csv_manifest,
    edge_record,
    last_per_row,
    lines,
    requests_of,
    run_main,
    run_process,
    snapshots_per_volume,
    until,
    volume_ids,
)
from tests.helpers import invoke as invoke_with

invoke = functools.partial(invoke_with, base=TOKEN_ENV)
SERVERS = ("aaaaaaaa-0000-4000-8000-000000000001", "bbbbbbbb-0000-4000-8000-000000000002")
LOG = 'echo "$EVS_SNAPSHOT_HOOK $EVS_SNAPSHOT_OUTCOME $EVS_SNAPSHOT_EXIT_CODE" >> {log}'


def logged(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def hook_args(url: str, manifest: Path, report: Path, *extra: str, **hooks: str) -> list[str]:
    """A create command with hooks (``pre_hook=...``, ``post_hook=...``)."""
    return create_args(url, manifest, report, "--settle", "0.3", *extra, **hooks)


def test_sigterm_in_the_middle_still_runs_the_post_hook(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """The issue's "done when": a pre-hook, a SIGTERM in the middle of the run (a real process), a
    post-hook that writes a file: the file is there, it was told the run was interrupted, exit 143."""
    emu = emulator_thread(any_volume=True, latency_ms=50)
    report, thawed = tmp_path / "r.jsonl", tmp_path / "thawed"
    args = hook_args(
        emu.url,
        csv_manifest(write, volume_ids(30, seed=2301)),
        report,
        "--concurrency",
        "2",
        pre_hook=f"echo frozen > {tmp_path / 'frozen'}",
        post_hook=f'echo "$EVS_SNAPSHOT_OUTCOME $EVS_SNAPSHOT_EXIT_CODE" > {thawed}',
    )
    with run_process(args, TOKEN_ENV, stdout=subprocess.DEVNULL) as process:
        stop = time.monotonic() + 30
        while not (report.exists() and b'"outcome":"accepted"' in report.read_bytes()):
            assert process.poll() is None
            assert time.monotonic() < stop, "the run never got going"
            time.sleep(0.01)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr.decode()
    assert (tmp_path / "frozen").read_text() == "frozen\n"
    assert thawed.read_text() == "interrupted 143\n"
    assert "the post-hook exited 0" in stderr.decode()
    assert len(last_per_row(report)) < 30  # stopped in the middle


def test_a_signal_while_the_pre_hook_runs_kills_it_and_thaws(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """SIGTERM while the pre-hook runs (the hook sends it): the pre-hook is killed, no create is sent,
    no row gets a record (--resume sends them), the post-hook runs, exit 143."""
    emu = emulator_thread(any_volume=True)
    report, log = tmp_path / "r.jsonl", tmp_path / "log"
    result = invoke(
        hook_args(
            emu.url,
            csv_manifest(write, volume_ids(12, seed=2302)),
            report,
            "--concurrency",
            "2",
            pre_hook="kill -TERM $PPID; sleep 30",
            post_hook=LOG.format(log=log),
        )
    )
    assert result.exit_code == 143, result.output
    assert logged(log) == ["post interrupted 143"]
    assert not requests_of(emu.state(), CREATE_ROUTE)
    assert not last_per_row(report)
    assert "the pre-hook was stopped" in result.output


def test_a_failed_pre_hook_sends_nothing_and_resume_sends_it_all(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """A pre-hook that fails: every row ends failed PRE_HOOK_FAILED, never sent; the post-hook still runs
    (told "failed"); --resume runs the pre-hook again and sends every row once."""
    ids = volume_ids(6, seed=2303)
    emu = emulator_thread(any_volume=True)
    manifest, report, log = csv_manifest(write, ids), tmp_path / "r.jsonl", tmp_path / "log"
    result = invoke(hook_args(emu.url, manifest, report, pre_hook="exit 3", post_hook=LOG.format(log=log)))
    assert result.exit_code == 1, result.output
    final = last_per_row(report)
    assert {r["error_code"] for r in final.values()} == {"PRE_HOOK_FAILED"}
    assert {(r["outcome"], r["attempts"]) for r in final.values()} == {("failed", 0)}
    assert final[1]["error_message"] == "not sent: the pre-hook failed with exit 3"
    assert not requests_of(emu.state(), CREATE_ROUTE)
    assert logged(log) == ["post failed 1"]
    assert "pre-hook failed with exit 3 (its rows were not sent): exit 3" in result.output
    again = invoke(
        [*hook_args(emu.url, manifest, report, pre_hook="true", post_hook=LOG.format(log=log)), "--resume"]
    )
    assert again.exit_code == 0, again.output
    assert {r["outcome"] for r in last_per_row(report).values()} == {"accepted"}
    assert set(snapshots_per_volume(emu.state()).values()) == {1}
    assert logged(log) == ["post failed 1", "post ok 0"]
    done = invoke(
        [*hook_args(emu.url, manifest, report, pre_hook="true", post_hook=LOG.format(log=log)), "--resume"]
    )
    assert done.exit_code == 0, done.output
    assert logged(log) == ["post failed 1", "post ok 0"]  # nothing left to send: nothing frozen


def test_a_signal_while_the_post_hook_runs_does_not_stop_it(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """SIGTERM while the post-hook runs (the hook sends it): the post-hook goes on to its end; exit 143."""
    emu = emulator_thread(any_volume=True)
    thawed = tmp_path / "thawed"
    result = invoke(
        hook_args(
            emu.url,
            csv_manifest(write, volume_ids(2, seed=2314)),
            tmp_path / "r.jsonl",
            post_hook=f"kill -TERM $PPID; sleep 0.2; echo thawed > {thawed}",
        )
    )
    assert result.exit_code == 143, result.output
    assert thawed.read_text() == "thawed\n"


def test_hooks_past_the_timeout_are_killed_with_their_process_group(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """A pre-hook past --hook-timeout: its process group is killed (a child too), its rows are
    PRE_HOOK_FAILED and never sent; the post-hook runs, and timing out as well makes exit 1."""
    emu = emulator_thread(any_volume=True)
    report, child, thawed = tmp_path / "r.jsonl", tmp_path / "child", tmp_path / "thawed"
    result = invoke(
        hook_args(
            emu.url,
            csv_manifest(write, volume_ids(3, seed=2304)),
            report,
            "--hook-timeout",
            "0.3s",
            pre_hook=f"sleep 30 & echo $! > {child}; wait",
            post_hook=f"echo thawed > {thawed}; sleep 30",
        )
    )
    assert result.exit_code == 1, result.output
    final = last_per_row(report)
    assert {r["error_code"] for r in final.values()} == {"PRE_HOOK_FAILED"}
    assert "timed out after 0.3s" in final[1]["error_message"]
    assert not requests_of(emu.state(), CREATE_ROUTE)
    assert thawed.read_text() == "thawed\n"
    assert "post-hook timed out after 0.3s (its process group was killed) (exit code 1)" in result.output
    status = Path(f"/proc/{child.read_text().strip()}/status")
    assert not status.exists() or "zombie" in status.read_text()  # killed (reaped, or waiting to be)


def test_a_failed_post_hook_makes_exit_1_and_is_named(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """Every row accepted, but the post-hook fails: exit 1, named in the summary and --summary-json; its
    output is on stderr behind its name, never in the report."""
    emu = emulator_thread(any_volume=True)
    report, summary = tmp_path / "r.jsonl", tmp_path / "s.json"
    result = invoke(
        hook_args(
            emu.url,
            csv_manifest(write, volume_ids(4, seed=2305)),
            report,
            "--summary-json",
            str(summary),
            pre_hook="echo freezing",
            post_hook="echo thaw went wrong >&2; exit 4",
        )
    )
    assert result.exit_code == 1, result.output
    assert {r["outcome"] for r in last_per_row(report).values()} == {"accepted"}
    assert "pre-hook: freezing\n" in result.output
    assert "post-hook: thaw went wrong\n" in result.output
    assert "post-hook failed with exit 4 (exit code 1): echo thaw went wrong >&2; exit 4" in result.output
    assert b"freezing" not in report.read_bytes()
    assert b"went wrong" not in report.read_bytes()
    data = orjson.loads(summary.read_bytes())
    assert data["exit_code"] == 1
    assert data["hooks"]["pre_hooks"] == data["hooks"]["post_hooks"] == 1
    [failed] = data["hooks"]["failed"]
    assert (failed["hook"], failed["status"], failed["exit_code"]) == ("post", "failed", 4)


def test_the_post_hook_runs_when_the_deadline_passes(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """--deadline passes with rows not sent: the post-hook runs all the same, told "deadline"."""
    emu = emulator_thread(any_volume=True, latency_ms=150)
    report, log = tmp_path / "r.jsonl", tmp_path / "log"
    result = invoke(
        hook_args(
            emu.url,
            csv_manifest(write, volume_ids(4, seed=2306)),
            report,
            "--concurrency",
            "1",
            "--deadline",
            "0.25s",  # 4 creates one after the other take 0.6 s at the least
            post_hook=LOG.format(log=log),
        )
    )
    assert result.exit_code == 1, result.output
    assert "DEADLINE_EXCEEDED" in {r["error_code"] for r in last_per_row(report).values()}
    assert logged(log) == ["post deadline 1"]


def test_the_post_hook_runs_before_the_wait(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """The freeze lasts only until the creates are answered: with --wait, the post-hook runs (told "ok")
    before the waiting starts."""
    emu = emulator_thread(any_volume=True, creating_seconds=0.2)
    report, log = tmp_path / "r.jsonl", tmp_path / "log"
    args = hook_args(
        emu.url,
        csv_manifest(write, volume_ids(3, seed=2307)),
        report,
        "--wait",
        "--poll-interval",
        "0.05",
        post_hook=f"{LOG.format(log=log)}; echo thawed",
    )
    result = invoke(args)
    assert result.exit_code == 0, result.output
    assert result.output.index("post-hook: thawed") < result.output.index("create done; waiting")
    assert logged(log) == ["post ok 0"]
    assert {r["outcome"] for r in last_per_row(report).values()} == {"available"}


def test_hooks_once_per_server(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """--hook-per-server: each server's hooks run once, {server_id} shell-quoted in the command and
    EVS_SNAPSHOT_SERVER_ID in the environment; the output (JSON log lines) names the server."""
    ids = volume_ids(5, seed=2308)
    servers = [SERVERS[0], SERVERS[1], SERVERS[0], SERVERS[1], SERVERS[0]]
    manifest = write(
        "m.csv", "volume_id,server_id\n" + "".join(f"{v},{s}\n" for v, s in zip(ids, servers, strict=True))
    )
    emu = emulator_thread(any_volume=True)
    report, log = tmp_path / "r.jsonl", tmp_path / "log"
    each = 'echo "$EVS_SNAPSHOT_HOOK {server_id} $EVS_SNAPSHOT_SERVER_ID $EVS_SNAPSHOT_OUTCOME" >> ' + str(
        log
    )
    result = invoke(
        hook_args(
            emu.url,
            manifest,
            report,
            "--hook-per-server",
            "--log-format",
            "json",
            pre_hook=f"{each}; echo ready",
            post_hook=each,
        )
    )
    assert result.exit_code == 0, result.output
    assert sorted(logged(log)) == sorted(
        [f"pre {server} {server} " for server in SERVERS]
        + [f"post {server} {server} ok" for server in SERVERS]
    )
    events = [orjson.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    said = [e for e in events if e["event"] == "hook_output"]
    assert {(e["hook"], e["server_id"], e["line"]) for e in said} == {("pre", s, "ready") for s in SERVERS}


def test_per_server_hooks_need_a_server_for_every_row(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """--hook-per-server and a row without server_id: exit 2 naming the row, nothing sent, no hook run."""
    ids = volume_ids(3, seed=2309)
    manifest = write(
        "m.csv", f"volume_id,server_id\n{ids[0]},{SERVERS[0]}\n{ids[1]},\n{ids[2]},{SERVERS[1]}\n"
    )
    emu = emulator_thread(any_volume=True)
    log = tmp_path / "log"
    result = invoke(
        hook_args(emu.url, manifest, tmp_path / "r.jsonl", "--hook-per-server", pre_hook=f"echo x >> {log}")
    )
    assert result.exit_code == 2, result.output
    assert "rows 2 have no server_id" in result.output
    assert not emu.state()["requests"]
    assert not log.exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--pre-hook", " "], "--pre-hook is empty"),
        (["--post-hook", "ssh {server_id} fsfreeze -u /data"], "--post-hook names {server_id}: add"),
        (["--hook-per-server"], "--hook-per-server needs --pre-hook or --post-hook"),
    ],
)
def test_hook_options_that_cannot_work(write: Callable[..., Path], options: list[str], message: str) -> None:
    """Hook options that cannot work together are a usage error (exit 2) before anything is sent."""
    manifest = csv_manifest(write, volume_ids(1, seed=2310))
    result = invoke(["create", str(manifest), "--endpoint", "http://127.0.0.1:1", *options])
    assert result.exit_code == 2
    assert message in result.output


def test_no_hook_runs_in_a_dry_run(write: Callable[..., Path], tmp_path: Path) -> None:
    """A dry run sends nothing, so it freezes nothing: no hook runs."""
    log = tmp_path / "log"
    result = invoke(
        [
            "create",
            str(csv_manifest(write, volume_ids(2, seed=2311))),
            "--dry-run",
            "--region",
            "cn-north-4",
            "--project-id",
            "0123456789abcdef0123456789abcdef",
            "--report",
            str(tmp_path / "r.jsonl"),
            "--pre-hook",
            f"echo x >> {log}",
            "--post-hook",
            f"echo x >> {log}",
        ]
    )
    assert result.exit_code == 0, result.output
    assert not log.exists()


@pytest.mark.no_cover
def test_the_environment_names_the_run_and_holds_no_secret(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """A hook's environment: the run id, the manifest and report paths, which hook; none of the
    credential variables the tool reads, whatever their value."""
    secrets = {
        **AKSK,
        "OS_AUTH_TOKEN": TOKEN,
        "HUAWEICLOUD_SDK_SECURITY_TOKEN": "security-token-value-0001",
        "OS_USERNAME": "operator-name",
        "OS_PASSWORD": "password-value-0001",
        "OS_USER_DOMAIN_NAME": "domain-name-0001",
        "HUAWEICLOUD_SDK_CREDENTIALS_FILE": str(tmp_path / "credentials"),
        "UNRELATED_SETTING": "kept",
    }
    emu = emulator_thread(any_volume=True)
    manifest, report, dump = (
        csv_manifest(write, volume_ids(2, seed=2312)),
        tmp_path / "r.jsonl",
        tmp_path / "env",
    )
    result = invoke(hook_args(emu.url, manifest, report, pre_hook=f"env > {dump}"), env=secrets)
    assert result.exit_code == 0, result.output
    text = dump.read_text(encoding="utf-8")
    seen = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    assert seen["EVS_SNAPSHOT_HOOK"] == "pre"
    assert seen["EVS_SNAPSHOT_RUN_ID"] == lines(report)[0]["run_id"]
    assert seen["EVS_SNAPSHOT_MANIFEST"] == str(manifest.resolve())
    assert seen["EVS_SNAPSHOT_REPORT"] == str(report.resolve())
    assert seen["UNRELATED_SETTING"] == "kept"
    for name, value in secrets.items():
        if name != "UNRELATED_SETTING":
            assert name not in seen
            assert value not in text, name


def test_private_urls_are_left_out_too() -> None:
    """The notification URLs (which may carry a token) are not passed to a hook either."""
    env = hook_environment(
        {
            "EVS_SNAPSHOT_PING_URL": "https://hc/secret",
            "EVS_SNAPSHOT_WEBHOOK": "https://hook/secret",
            "A": "1",
        },
        {"EVS_SNAPSHOT_HOOK": "pre"},
    )
    assert env == {"A": "1", "EVS_SNAPSHOT_HOOK": "pre"}


def test_hook_output_never_reaches_a_report_on_standard_output(
    emulator_thread: Callable[..., Any],
    write: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """--report -: what a hook prints goes to stderr; standard output holds only the report's lines."""
    emu = emulator_thread(any_volume=True)
    args = create_args(emu.url, csv_manifest(write, volume_ids(2, seed=2313)), Path("-"))
    code = run_main([*args, "--pre-hook", "echo from-the-hook"], monkeypatch, env=TOKEN_ENV)
    assert code == 0
    out, err = capfd.readouterr()
    assert "from-the-hook" not in out
    assert all(orjson.loads(line) for line in out.splitlines())
    assert "pre-hook: from-the-hook" in err


# --- the gate, driven directly ------------------------------------------------------------------
def gate(plan: HookPlan, servers: ServerRows | None = None, **options: Any) -> tuple[Hooks, io.StringIO]:
    said = io.StringIO()
    context = HookContext.of("20261207T000000Z-abc123", manifest="-", report="-")
    return Hooks(plan, context=context, console=Console(said), signals=[], servers=servers, **options), said


def two_servers() -> ServerRows:
    """Server ``SERVERS[0]`` (rows 1 and 3, as upper and lower case), server ``SERVERS[1]`` (row 2), and a
    row that is not an object."""
    rows = [
        RawRow(1, 2, {"server_id": SERVERS[0].upper()}, True),
        RawRow(2, 3, {"server_id": SERVERS[1]}, True),
    ]
    return rows_by_server(
        [*rows, RawRow(3, 4, {"server_id": f"{SERVERS[0]} "}, True), RawRow(4, 5, None, True)]
    )


async def test_a_server_thaws_as_soon_as_its_rows_are_answered(tmp_path: Path) -> None:
    """Per server: a server's post-hook runs once its rows are answered and the runner has passed its
    last row, while another server's rows are still to come; {server_id} is shell-quoted."""
    log = tmp_path / "log"
    each = "printf '%s %s\\n' {hook} {{server_id}} >> " + str(log)
    hooks, _ = gate(
        HookPlan(pre=each.format(hook="pre"), post=each.format(hook="post"), per_server=True), two_servers()
    )
    async with hooks.frozen():
        hooks.passed(1, queued=True)
        hooks.passed(2, queued=True)
        assert await hooks.enter(1) is None
        assert await hooks.enter(2) is None
        hooks.done(1, edge_record(1))
        hooks.done(2, edge_record(2))  # server SERVERS[1]'s only row: it thaws now
        await until(lambda: f"post {SERVERS[1]}" in logged(log))
        assert f"post {SERVERS[0]}" not in logged(log)  # row 3 is its too, and not passed yet
        hooks.passed(3, queued=False)  # (an invalid row: never queued)
        await until(lambda: f"post {SERVERS[0]}" in logged(log))
        hooks.closed()
    assert sorted(logged(log)) == sorted(f"{hook} {server}" for hook in ("pre", "post") for server in SERVERS)


async def test_a_stop_kills_the_pre_hook_and_starts_no_other(tmp_path: Path) -> None:
    """A signal's drain (``stop``) kills a pre-hook still running and starts no new one; the frozen
    server's post-hook still runs, also when the acting ends with an error."""
    log = tmp_path / "log"
    plan = HookPlan(
        pre=f"echo pre >> {log}; sleep 30", post=f"echo post {{server_id}} >> {log}", per_server=True
    )
    hooks, _ = gate(plan, two_servers())
    answers: list[str | None] = []

    async def enter(row: int) -> None:
        answers.append(await hooks.enter(row))

    async def act() -> None:
        async with hooks.frozen():
            hooks.passed(1, queued=True)
            hooks.passed(2, queued=True)
            async with anyio.create_task_group() as group:
                group.start_soon(enter, 2)
                await until(lambda: "pre" in logged(log))
                hooks.stop()
            assert (
                await hooks.enter(1) == "the run is stopping"
            )  # server SERVERS[0]: not frozen after the stop
            raise RuntimeError("the acting failed")

    with pytest.raises(ExceptionGroup) as raised:
        await act()
    assert raised.group_contains(RuntimeError, match="the acting failed")
    assert "the pre-hook was stopped" in str(answers[0])
    assert logged(log) == ["pre", f"post {SERVERS[1]}"]
    assert [result.status for result in hooks.results] == ["stopped", "ok"]


async def test_a_pre_hook_left_running_is_killed_when_the_rows_are_done(tmp_path: Path) -> None:
    """When every row has gone (its wait for the pre-hook cancelled by --deadline), the pre-hook still
    running is killed and the post-hook runs, told the rows ended past the deadline."""
    log = tmp_path / "log"
    hooks, _ = gate(HookPlan(pre="sleep 30", post=LOG.format(log=log)), deadline=0.0)
    async with hooks.frozen():
        hooks.passed(1, queued=True)
        with anyio.move_on_after(0.1):
            await hooks.enter(1)
        hooks.done(1, None)
        hooks.closed()
    assert logged(log) == ["post deadline 1"]
    assert hooks.results[0].describe(60).startswith("was stopped")


async def test_a_pre_hook_stopped_before_it_starts_never_starts(tmp_path: Path) -> None:
    """A stop that comes between a row's asking and the pre-hook's start: the pre-hook never starts,
    the post-hook runs."""
    log = tmp_path / "log"
    hooks, _ = gate(HookPlan(pre=f"echo pre >> {log}", post=LOG.format(log=log)))
    async with hooks.frozen():
        hooks.passed(1, queued=True)
        async with anyio.create_task_group() as group:
            group.start_soon(hooks.enter, 1)
            await anyio.lowlevel.checkpoint()  # the row has asked; the pre-hook's task has not run yet
            hooks.stop()
        hooks.done(1, None)
        hooks.closed()
    assert logged(log) == ["post failed 1"]
    assert [result.status for result in hooks.results] == ["stopped", "ok"]


async def shell(command: str, env: dict[str, str] | None = None) -> tuple[HookResult, str]:
    """``command`` run as a post-hook of the run: its result, and what the console said."""
    said = io.StringIO()
    environ = dict(os.environ) if env is None else env
    result = await run_hook(command, hook="post", server=None, env=environ, limit=10, console=Console(said))
    return result, said.getvalue()


async def test_what_a_hook_prints_is_relayed_line_by_line() -> None:
    """Output lines go to the console behind the hook's name: CRLF and a last line without a newline
    are whole lines, a very long line is cut into pieces."""
    result, said = await shell("printf 'one\\r\\ntwo\\n'; head -c 5000 /dev/zero | tr '\\0' x")
    assert result.ok
    assert result.describe(1) == "exited 0"
    shown = said.splitlines()
    assert shown[:2] == ["post-hook: one", "post-hook: two"]
    assert [len(line) for line in shown[2:]] == [len("post-hook: ") + 4096, len("post-hook: ") + 904]


async def test_a_hook_leads_its_own_session_and_reads_nothing() -> None:
    """A hook runs in a session (and process group) of its own, so a terminal's Ctrl-C does not reach
    it and its group can be killed whole; its standard input is empty."""
    result, said = await shell("cat; echo $$ $(cut -d' ' -f5,6 /proc/$$/stat)")
    assert result.ok
    shell_id, group, session = said.removeprefix("post-hook: ").split()
    assert shell_id == group == session
    assert int(session) != os.getsid(0)


@pytest.mark.parametrize(
    ("command", "status", "described"),
    [
        ("kill -KILL $$", "failed", "was killed by SIGKILL"),
        ("true\0", "unstarted", "could not start: "),
    ],
)
async def test_a_hook_that_dies_or_cannot_start(command: str, status: str, described: str) -> None:
    """A hook killed by a signal, or one that cannot start, counts as failed and says why."""
    result, _ = await shell(command, env={})
    assert result.status == status
    assert not result.ok
    assert result.describe(60).startswith(described)


def test_the_summary_names_ten_failures_and_counts_the_rest() -> None:
    """The summary names the first ten failed hooks and counts the others."""
    hooks, _ = gate(HookPlan(post="false", per_server=True))
    hooks.results += [
        HookResult(hook="post", server_id=f"s{n}", command="false", status="failed", exit_code=1)
        for n in range(12)
    ]
    notes = hooks.notes()
    assert notes[0] == "hooks: 0 pre-hook and 12 post-hook runs, 12 failed"
    assert notes[1] == "  post-hook of server s0 failed with exit 1 (exit code 1): false"
    assert notes[-1] == "  ... 2 more (see --summary-json)"
    assert hooks.exit_code == 1


def test_rows_without_a_server_are_counted_and_the_first_named() -> None:
    """rows_by_server: server ids compared in lower case; rows naming none counted, the first 20 named."""
    rows = [
        RawRow(n, n + 1, {"server_id": None if n > 1 else f" {SERVERS[0].upper()} "}, True)
        for n in range(1, 27)
    ]
    servers = rows_by_server(rows)
    assert servers.rows == {SERVERS[0]: [1]}
    assert servers.without == 25
    with pytest.raises(UsageError, match=r"rows 2, 3, .*, 21, \.\.\. \(25 in all\) have no server_id"):
        servers.require("--hook-per-server")


def test_a_server_id_that_is_not_a_uuid_is_refused_before_any_hook_runs(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """A server_id cell reaches the hook's shell command: one that is not a UUID (here a command
    substitution, inside the double quotes an operator may write around {server_id}) is exit 2 naming
    the row, nothing sent, no hook run."""
    emu = emulator_thread(any_volume=True)
    pwned = tmp_path / "pwned"
    ids = volume_ids(2, seed=77)
    source = write("m.csv", f"volume_id,server_id\n{ids[0]},{SERVERS[0]}\n{ids[1]},$(touch {pwned})\n")
    log = tmp_path / "log"
    args = create_args(emu.url, source, tmp_path / "r.jsonl", "--hook-per-server")
    result = invoke([*args, "--pre-hook", f'echo "pre {{server_id}}" >> {log}', "--post-hook", "true"])
    assert result.exit_code == 2, result.output
    assert "rows 2 have a server_id that is not a server's id" in result.output
    assert not pwned.exists()
    assert not log.exists()
    assert emu.state()["requests"] == {}
