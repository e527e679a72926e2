"""``evs-snapshot create`` end to end against the emulator: outcomes, formats, bounds, bad input."""

from __future__ import annotations

import functools
import os
import re
import resource
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from orchestrator.emulator import SeedVolume
from orchestrator.emulator.settings import DEFAULT_AK, DEFAULT_SK
from tests import helpers
from tests.helpers import (
    AKSK,
    NO_CREDENTIALS,
    PROJECT,
    TOKEN,
    TOKEN_ENV,
    last_per_row,
    records,
    run_process,
    seeds,
    volume_ids,
)

IDS = volume_ids(8)
REPORT_FIELDS = {
    "run_id",
    "row",
    "volume_id",
    "project_id",
    "region",
    "name",
    "outcome",
    "http_status",
    "snapshot_id",
    "snapshot_status",
    "error_code",
    "error_message",
    "request_id",
    "attempts",
    "reconciled",
    "started_at",
    "finished_at",
    "elapsed_ms",
}


invoke = functools.partial(helpers.invoke, base=TOKEN_ENV)


def base_args(url: str, report: Path) -> list[str]:
    return [
        "--endpoint",
        url,
        "--project-id",
        PROJECT,
        "--region",
        "cn-north-4",
        "--report",
        str(report),
        "--settle",
        "0.3",
    ]


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_every_outcome(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """accepted, rejected (in-use without force, unknown disk) and invalid rows, one record each."""
    emu = emulator_thread(volumes=(*seeds(IDS[:3]), SeedVolume(volume_id=IDS[3], status="in-use")))
    manifest = write(
        "m.csv",
        "volume_id,force,team\n"
        f"{IDS[0]},,db\n{IDS[1]},no,db\n{IDS[2]},yes,web\n{IDS[3]},no,web\n{IDS[4]},,web\nnot-a-uuid,,x\n{IDS[0]},,dup\n",
    )
    report = tmp_path / "r.jsonl"
    result = invoke(["create", str(manifest), *base_args(emu.url, report), "--name-template", "{team}-{row}"])
    assert result.exit_code == 1, result.output
    got = records(report)
    assert sorted(r["row"] for r in got) == [1, 2, 3, 4, 5, 6, 7]
    assert all(set(r) == REPORT_FIELDS for r in got)
    by_row = {r["row"]: r for r in got}
    for row in (1, 2, 3):
        assert by_row[row]["outcome"] == "accepted"
        assert by_row[row]["http_status"] == 202
        assert by_row[row]["snapshot_status"] == "creating"
        assert by_row[row]["snapshot_id"]
        assert by_row[row]["request_id"]
        assert by_row[row]["attempts"] == 1
        assert by_row[row]["finished_at"].endswith("Z")
    assert by_row[1]["name"] == "db-1"
    assert (by_row[4]["outcome"], by_row[4]["http_status"], by_row[4]["error_code"]) == (
        "rejected",
        400,
        "EVS.5400",
    )
    assert "in-use" in by_row[4]["error_message"]
    assert (by_row[5]["outcome"], by_row[5]["error_code"]) == ("rejected", "EVS.5404")
    assert (by_row[6]["outcome"], by_row[6]["error_code"], by_row[6]["attempts"]) == (
        "invalid",
        "INVALID_VOLUME_ID",
        0,
    )
    assert (by_row[7]["outcome"], by_row[7]["error_code"]) == ("invalid", "DUPLICATE_VOLUME")
    assert len({r["run_id"] for r in got}) == 1
    state = emu.state()
    assert sorted(s["volume_id"] for s in state["snapshots"]) == sorted(IDS[:3])
    assert {s["id"] for s in state["snapshots"]} == {by_row[row]["snapshot_id"] for row in (1, 2, 3)}
    assert "7 rows: 3 accepted, 2 invalid, 2 rejected" in result.stderr
    assert "EVS.5400 x1" in result.stderr


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_formats_row_count_in_equals_records_out(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path, fmt: str
) -> None:
    """CSV, JSON and JSON Lines manifests each give exactly one record per row."""
    ids = volume_ids(40, seed=3)
    emu = emulator_thread(any_volume=True)
    if fmt == "csv":
        manifest = write("m.csv", "volume_id\n" + "".join(f"{i}\n" for i in ids))
    elif fmt == "json":
        manifest = write("m.json", orjson.dumps({"volumes": [{"volume_id": i} for i in ids]}))
    else:
        manifest = write("m.jsonl", b"".join(orjson.dumps({"volume_id": i}) + b"\n" for i in ids))
    report = tmp_path / "r.jsonl"
    result = invoke(["create", str(manifest), *base_args(emu.url, report)])
    assert result.exit_code == 0, result.output
    got = records(report)
    assert sorted(r["row"] for r in got) == list(range(1, 41))
    assert Counter(r["outcome"] for r in got) == {"accepted": 40}
    assert len(emu.state()["snapshots"]) == 40


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_concurrency_bound(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """Requests in flight never exceed --concurrency (the emulator counts the maximum it saw)."""
    ids = volume_ids(20, seed=4)
    emu = emulator_thread(any_volume=True, latency_ms=40)
    manifest = write("m.csv", "volume_id\n" + "".join(f"{i}\n" for i in ids))
    result = invoke(
        ["create", str(manifest), *base_args(emu.url, tmp_path / "r.jsonl"), "--concurrency", "5"]
    )
    assert result.exit_code == 0, result.output
    state = emu.state()
    assert 2 <= state["max_in_flight"] <= 5
    assert len(state["snapshots"]) == 20


def test_dry_run_sends_nothing(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """--dry-run writes planned records with rendered names and sends no request at all."""
    emu = emulator_thread(any_volume=True)
    manifest = write("m.csv", f"volume_id\n{IDS[0]}\n{IDS[1]}\nbad\n")
    report = tmp_path / "r.jsonl"
    result = invoke(
        ["create", str(manifest), *base_args(emu.url, report), "--dry-run"], env={"OS_AUTH_TOKEN": ""}
    )
    assert result.exit_code == 1  # the invalid row
    got = {r["row"]: r for r in records(report)}
    assert got[1]["outcome"] == "planned"
    assert got[1]["name"].endswith(IDS[0])
    assert got[1]["attempts"] == 0
    assert got[3]["outcome"] == "invalid"
    assert emu.state()["requests"] == {}


@pytest.mark.no_cover
def test_a_dry_run_without_a_loop_writes_what_one_with_a_loop_writes(
    write: Callable[..., Path], tmp_path: Path
) -> None:
    """A plain dry run (no event loop) and those the loop runs (hooks given, none run; a progress line)
    write the same header and records, row for row, and exit alike."""
    manifest = write("m.csv", f"volume_id,name\n{IDS[0]},a\n{IDS[1]},\nbad,c\n{IDS[0]},d\n")
    written = []
    for extra in ([], ["--pre-hook", "true"], ["--progress"]):
        report = tmp_path / f"r{len(written)}.jsonl"
        args = [*helpers.cli_args("create", manifest, dry_run=True, project_id=PROJECT, region="cn-north-4")]
        result = helpers.invoke([*args, "--report", str(report), *extra])
        assert result.exit_code == 1, result.output  # the invalid rows
        lines = [orjson.loads(line) for line in report.read_bytes().splitlines()]
        for line in lines:
            for varies in ("run_id", "started_at", "finished_at"):
                line.pop(varies, None)
        written.append(lines)
    assert written[0] == written[1] == written[2]
    assert [line.get("outcome") for line in written[0]] == [None, "planned", "planned", "invalid", "invalid"]


BAD_MANIFESTS = [
    ("empty.csv", b"", "empty.csv: the manifest is empty"),
    ("header.csv", b"volume_id\n", "header.csv: the manifest has no rows"),
    ("nocol.csv", b"id,name\nx,y\n", "nocol.csv:1: the header has no volume_id column"),
    (
        "utf.csv",
        b"volume_id\n" + IDS[0].encode() + b"\n\xc3\x28\n",
        "utf.csv:3: this line is not valid UTF-8",
    ),
    ("notlist.json", b'{"a": 1}', 'notlist.json:1: the JSON object has no "volumes" array'),
    (
        "syntax.json",
        b'[{"volume_id": "' + IDS[0].encode() + b'"},\n{"volume_id": }]',
        "syntax.json:2: JSON syntax error",
    ),
]


@pytest.mark.parametrize(("name", "content", "message"), BAD_MANIFESTS, ids=[b[0] for b in BAD_MANIFESTS])
def test_bad_manifest_exits_2_before_sending(
    emulator_thread: Callable[..., Any],
    write: Callable[..., Path],
    tmp_path: Path,
    name: str,
    content: bytes,
    message: str,
) -> None:
    """A file that cannot be read as a whole exits 2 with file:line, no traceback, nothing sent."""
    emu = emulator_thread(any_volume=True)
    manifest = write(name, content)
    report = tmp_path / "r.jsonl"
    result = invoke(["create", str(manifest), *base_args(emu.url, report)])
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert emu.state()["requests"] == {}
    assert not report.exists() or report.read_bytes() == b""


@pytest.mark.parametrize(
    ("rows", "code"),
    [
        ('{"volume_id": "%s", "metadata": {"a": {"b": 1}}}', "INVALID_METADATA"),
        ('{"volume_id": "%s", "name": "' + "n" * 70 + '"}', "NAME_TOO_LONG"),
        ('{"volume_id": "%s", "name": "autobk_snapshot_x"}', "RESERVED_NAME_PREFIX"),
        ('{"volume_id": "%s", "force": "sure"}', "INVALID_FORCE"),
        ('{"volume_id": "%s", "project_id": "XYZ"}', "INVALID_PROJECT_ID"),
    ],
)
def test_bad_rows_do_not_stop_the_others(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path, rows: str, code: str
) -> None:
    """A row that breaks a rule is invalid with its code; the good row beside it is still accepted."""
    emu = emulator_thread(any_volume=True)
    manifest = write("m.jsonl", (rows % IDS[0]) + "\n" + orjson.dumps({"volume_id": IDS[1]}).decode() + "\n")
    report = tmp_path / "r.jsonl"
    result = invoke(["create", str(manifest), *base_args(emu.url, report)])
    assert result.exit_code == 1
    got = {r["row"]: r for r in records(report)}
    assert (got[1]["outcome"], got[1]["error_code"]) == ("invalid", code)
    assert got[2]["outcome"] == "accepted"
    assert [s["volume_id"] for s in emu.state()["snapshots"]] == [IDS[1]]


def test_single_attempt_failures_are_failed_never_rejected(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """With --max-attempts 1, 5xx answers and lost connections end rows failed with their codes."""
    ids = volume_ids(30, seed=5)
    emu = emulator_thread(any_volume=True, fault_5xx=0.3, fault_drop_before=0.2, seed=3)
    manifest = write("m.csv", "volume_id\n" + "".join(f"{i}\n" for i in ids))
    report = tmp_path / "r.jsonl"
    # Quick backoff: the end-of-run sweep retries the injected 5xx (at least 8 tries whatever --max-attempts);
    # a short settle: the lookups after an uncertain attempt pause --settle (up to 0.5 s), then double.
    quick = ("--backoff-initial", "0.05", "--backoff-max", "0.2", "--settle", "0.1")
    result = invoke(["create", str(manifest), *base_args(emu.url, report), "--max-attempts", "1", *quick])
    assert result.exit_code == 1
    final = last_per_row(report)
    assert sorted(final) == list(range(1, 31))
    # A row's only second record: the end-of-run sweep found the snapshot of a row it had failed (its
    # lookup hit by a 5xx), ``accepted`` with ``reconciled: true`` (seen once at load 7).
    for record in records(report):
        if record != (last := final[record["row"]]):
            assert (record["outcome"], last["outcome"], last.get("reconciled")) == (
                "failed",
                "accepted",
                True,
            )
    got = list(final.values())
    failed = [r for r in got if r["outcome"] == "failed"]
    assert failed
    assert {r["outcome"] for r in got} <= {"accepted", "failed"}
    assert all(r["attempts"] == 1 for r in got)
    codes = {r["error_code"] for r in failed}
    # UNCONFIRMED: the lookup after an uncertain attempt was itself hit by an injected 5xx.
    assert codes <= {"EVS.5500", "EVS.5503", "APIGW.0202", "CONNECTION_ERROR", "UNCONFIRMED"}
    assert "CONNECTION_ERROR" in codes
    # Every accepted row has its snapshot; any other snapshot belongs to a row that says it may exist.
    snapshots = {s["volume_id"] for s in emu.state()["snapshots"]}
    accepted = {r["volume_id"] for r in got if r["outcome"] == "accepted"}
    unconfirmed = {r["volume_id"] for r in failed if r["error_code"] == "UNCONFIRMED"}
    assert accepted <= snapshots <= accepted | unconfirmed


def test_existing_report_is_not_overwritten(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """A report that already holds records is an error (exit 2) and is left as it was."""
    emu = emulator_thread(any_volume=True)
    manifest = write("m.csv", f"volume_id\n{IDS[0]}\n")
    report = write("r.jsonl", b'{"old": true}\n')
    result = invoke(["create", str(manifest), *base_args(emu.url, report)])
    assert result.exit_code == 2
    assert "--resume" in result.stderr
    assert report.read_bytes() == b'{"old": true}\n'
    assert emu.state()["requests"] == {}


def test_summary_json(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """--summary-json writes counts per outcome, error codes, requests and the exit code."""
    emu = emulator_thread(volumes=seeds(IDS[:1]))
    manifest = write("m.csv", f"volume_id\n{IDS[0]}\n{IDS[1]}\n")
    summary = tmp_path / "s" / "summary.json"
    result = invoke(
        ["create", str(manifest), *base_args(emu.url, tmp_path / "r.jsonl"), "--summary-json", str(summary)]
    )
    assert result.exit_code == 1
    data = orjson.loads(summary.read_bytes())
    assert data["rows"] == 2
    assert data["outcomes"] == {"accepted": 1, "rejected": 1}
    # One shape with `summary --json` (issue 12): error codes as a list with an example row each.
    assert [(e["code"], e["rows"]) for e in data["error_codes"]] == [("EVS.5404", 1)]
    assert data["requests_by_kind"]["creates"] == 2
    assert data["exit_code"] == 1


def test_credential_sources(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """A token file, AK/SK variables and the SDK credentials file each authorize a run."""
    emu = emulator_thread(any_volume=True)
    token_file = write("token", TOKEN + "\n")
    credentials = write("credentials", f"[basic]\nak = {DEFAULT_AK}\nsk = {DEFAULT_SK}\n")
    cases = [
        (["--token-file", str(token_file)], {"OS_AUTH_TOKEN": ""}),
        (["--auth", "aksk"], AKSK),
        ([], {"OS_AUTH_TOKEN": "", "HUAWEICLOUD_SDK_CREDENTIALS_FILE": str(credentials)}),
    ]
    for number, (extra, env) in enumerate(cases):
        manifest = write(f"m{number}.csv", f"volume_id\n{volume_ids(3, seed=10 + number)[0]}\n")
        report = tmp_path / f"r{number}.jsonl"
        result = invoke(["create", str(manifest), *base_args(emu.url, report), *extra], env=env)
        assert result.exit_code == 0, (extra, result.output)
        assert records(report)[0]["outcome"] == "accepted"


def test_no_credentials_is_a_usage_error(write: Callable[..., Path], tmp_path: Path) -> None:
    """With no complete credential source, exit 2 naming every place looked at."""
    manifest = write("m.csv", f"volume_id\n{IDS[0]}\n")
    env = {"OS_AUTH_TOKEN": "", "HUAWEICLOUD_SDK_CREDENTIALS_FILE": str(tmp_path / "none")}
    result = invoke(
        ["create", str(manifest), *base_args("http://127.0.0.1:9", tmp_path / "r.jsonl")], env=env
    )
    assert result.exit_code == 2
    assert "OS_AUTH_TOKEN" in result.stderr
    assert "HUAWEICLOUD_SDK_AK" in result.stderr


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("--endpoint", "http://10.1.2.3:8080", "plain http"),
        ("--endpoint", "ftp://x", "not an http(s) URL"),
        ("--project-id", "ABC", "32 lower-case hex"),
        ("--region", "mars", "region id"),
        ("--metadata", "novalue", "KEY=VALUE"),
        ("--name-template", "{row!r}", "plain name"),
    ],
)
def test_bad_options_are_usage_errors(
    write: Callable[..., Path], tmp_path: Path, option: str, value: str, words: str
) -> None:
    """Bad option values exit 2 with a message, before anything is read or sent."""
    manifest = write("m.csv", f"volume_id\n{IDS[0]}\n")
    result = invoke(["create", str(manifest), "--report", str(tmp_path / "r.jsonl"), option, value])
    assert result.exit_code == 2
    assert words in result.stderr


def test_connection_refused_fails_rows(write: Callable[..., Path], tmp_path: Path) -> None:
    """An endpoint that refuses connections is closed after 3 connect failures: rows fail ENDPOINT_UNREACHABLE, exit 3.

    (Issue 11 changed this from "every row retried, CONNECT_FAILED, exit 1": a dead endpoint must fail fast.)
    """
    manifest = write("m.csv", "volume_id\n" + "".join(f"{i}\n" for i in volume_ids(50, seed=77)))
    report = tmp_path / "r.jsonl"
    args = [*base_args("http://127.0.0.1:9", report), "--max-attempts", "3", "--backoff-max", "0.05"]
    result = invoke(["create", str(manifest), *args])
    assert result.exit_code == 3
    got = records(report)
    assert len(got) == 50
    assert {(r["outcome"], r["error_code"]) for r in got} == {("failed", "ENDPOINT_UNREACHABLE")}
    # Three connect attempts in all (the quota pre-flight's), then nothing more: no row was sent.
    assert sum(r["attempts"] for r in got) == 0
    assert "3 attempts in a row" in result.stderr
    assert "ENDPOINT_UNREACHABLE" in result.stderr


def run_cli(
    args: list[str], env: dict[str, str], stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    with run_process(args, {**TOKEN_ENV, **env}, stdin=subprocess.PIPE) as process:
        stdout, stderr = process.communicate(stdin, timeout=60)
    return subprocess.CompletedProcess(args, process.wait(), stdout, stderr)


def test_stdin_manifest_and_stdout_report(emulator_thread: Callable[..., Any]) -> None:
    """A real process reads the manifest from - and writes the report to standard output."""
    emu = emulator_thread(any_volume=True)
    manifest = b"".join(orjson.dumps({"volume_id": i}) + b"\n" for i in IDS)
    result = run_cli(
        ["create", "-", "--format", "jsonl", "--endpoint", emu.url, "--project-id", PROJECT, "--report", "-"],
        env={},
        stdin=manifest,
    )
    assert result.returncode == 0, result.stderr
    lines = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert lines[0]["type"] == "run"  # the run header comes first
    lines = lines[1:]
    assert sorted(r["row"] for r in lines) == list(range(1, 9))
    assert {r["outcome"] for r in lines} == {"accepted"}
    assert b"8 rows: 8 accepted" in result.stderr


def test_stdin_needs_format() -> None:
    """Reading standard input without --format is a usage error (exit 2)."""
    result = invoke(["create", "-", "--project-id", PROJECT], input=b"")
    assert result.exit_code == 2
    assert "--format" in result.stderr
    assert "Traceback" not in result.stderr


def execed(args: list[str], tmp_path: Path, before: Callable[[], None]) -> subprocess.CompletedProcess[str]:
    """``python -m orchestrator ARGS`` by exec, ``before`` run in the child first (what the launcher cannot
    give: standard input closed, a file size limit), with its TMPDIR an empty folder of its own."""
    spool = tmp_path / "tmpdir"
    spool.mkdir()
    env = {**os.environ, **TOKEN_ENV, "TMPDIR": str(spool), "EVS_SNAPSHOT_LOCK_DIR": str(tmp_path / "locks")}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
        preexec_fn=before,
        check=False,
    )


def stdin_commands(url: str) -> dict[str, list[str]]:
    """``create -``, ``validate -`` and ``prune -``: the commands that read a manifest from standard input."""
    sent = ["--endpoint", url, "--project-id", PROJECT, "--report", "r.jsonl"]
    return {
        "create": ["create", "-", "--format", "csv", "--no-progress", *sent],
        "validate": ["validate", "-", "--format", "csv"],
        "prune": ["prune", "-", "--format", "csv", "--keep-last", "1", "--apply", *sent],
    }


@pytest.mark.parametrize("name", ["create", "validate", "prune"])
def test_stdin_closed_is_one_line_and_exit_2(
    emulator_thread: Callable[..., Any], tmp_path: Path, name: str
) -> None:
    """``create -`` (validate, prune) started with standard input closed (``<&-``) exited 70 with a
    traceback; it is one line, exit 2, and nothing is sent and no report is written."""
    emu = emulator_thread(any_volume=True)
    result = execed(stdin_commands(emu.url)[name], tmp_path, lambda: os.close(0))
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "evs-snapshot: error: <stdin>: standard input is closed: pass the manifest as a file, or give it on standard input"
    ]
    assert emu.state()["requests"] == {}
    assert not (tmp_path / "r.jsonl").exists()


def test_stdin_larger_than_tmpdir_allows_is_one_line_and_exit_2(
    emulator_thread: Callable[..., Any], tmp_path: Path
) -> None:
    """Standard input that cannot be copied to TMPDIR (no room: ENOSPC; here a file size limit: EFBIG)
    exited 70 with a traceback; it is one line naming TMPDIR and what to do, exit 2 as an unreadable
    manifest, nothing sent, nothing left in TMPDIR."""
    emu = emulator_thread(any_volume=True)
    limit = 64 * 1024
    manifest = tmp_path / "big.csv"
    manifest.write_text("volume_id\n" + "".join(f"{i}\n" for i in volume_ids(4000)), encoding="utf-8")
    assert manifest.stat().st_size > limit

    def limited() -> None:
        os.dup2(os.open(manifest, os.O_RDONLY), 0)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = execed(stdin_commands(emu.url)["create"], tmp_path, limited)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(
        f"evs-snapshot: error: <stdin>: cannot copy standard input to a file in TMPDIR ({tmp_path / 'tmpdir'}): "
    )
    assert "set TMPDIR to a folder with room, or pass the manifest as a file" in line
    assert emu.state()["requests"] == {}
    assert list((tmp_path / "tmpdir").iterdir()) == []
    assert not (tmp_path / "r.jsonl").exists()


def _shown_summary(page: Path) -> str:
    """The demo's summary as ``page`` shows it: the text block that ends with the report's line."""
    text = page.read_text(encoding="utf-8")
    return next(
        block for block in re.findall(r"```text\n(.*?)```", text, flags=re.DOTALL) if "report: demo" in block
    )


def test_emulator_demo_mode(tmp_path: Path) -> None:
    """--emulator runs the sample against an in-process emulator and shows every outcome; its summary
    is the one the README and create.md show, where ``N`` stands for the digits of a time or a rate."""
    root = Path(__file__).parent.parent
    report = tmp_path / "demo.jsonl"
    result = invoke(
        ["create", str(root / "samples" / "volumes.csv"), "--emulator", "--report", str(report)],
        base=NO_CREDENTIALS,
    )
    assert result.exit_code == 1, result.stderr
    outcomes = Counter(r["outcome"] for r in records(report))
    assert outcomes == {"accepted": 3, "rejected": 2, "invalid": 2}
    assert "warning" not in result.stderr
    printed = result.stderr.replace(str(report), "demo-reports/demo.jsonl")
    for page in (root / "README.md", root / "docs" / "commands" / "create.md"):
        shown = re.sub(r"(?<![A-Z_])N+(?![A-Z_])", r"\\d+", re.escape(_shown_summary(page)))
        assert re.fullmatch(shown, printed), (page.name, printed)


def test_emulator_command_serves_until_sigterm(tmp_path: Path) -> None:
    """`evs-snapshot emulator` prints its address line first, serves, and exits 0 on SIGTERM."""
    import signal
    import urllib.request

    volumes = tmp_path / "v.csv"
    volumes.write_text(f"volume_id,status,size\n{IDS[0]},in-use,100\n", encoding="utf-8")
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "emulator",
            "--port",
            "0",
            "--volumes",
            str(volumes),
            "--token",
            TOKEN,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline().decode()
            assert line.startswith("EVS emulator listening on http://127.0.0.1:")
            url = line.split()[-1]
            with urllib.request.urlopen(f"{url}/_emulator/state", timeout=10) as answer:  # noqa: S310
                state = orjson.loads(answer.read())
            volume = state["volumes"][0]
            assert len(state["volumes"]) == 1
            assert {k: volume[k] for k in ("volume_id", "status", "size")} == {
                "volume_id": IDS[0],
                "status": "in-use",
                "size": 100,
            }
            assert len(volume["attachments"]) == 1  # state shows attachments (issue 14)
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0


def test_foreseeable_setup_errors_are_messages_not_tracebacks(
    write: Callable[..., Path], tmp_path: Path
) -> None:
    """A bad --ca-bundle and a bad emulator --volumes file exit 2 with a message; no traceback."""
    bad_pem = write("bad.pem", "not a certificate\n")
    manifest = write("m.csv", f"volume_id\n{IDS[0]}\n")
    env = {"OS_AUTH_TOKEN": "", **AKSK}
    result = invoke(
        [
            "create",
            str(manifest),
            *base_args("http://127.0.0.1:9", tmp_path / "r.jsonl"),
            "--ca-bundle",
            str(bad_pem),
        ],
        env=env,
    )
    assert result.exit_code == 2
    assert "--ca-bundle" in result.stderr
    volumes = write("v.csv", "volume_id,status\nx,sideways\n")
    result = invoke(["emulator", "--volumes", str(volumes)])
    assert result.exit_code == 2
    assert "needs a volume_id and a known status" in result.stderr
    assert "Traceback" not in result.output


def test_unwritable_metrics_file_is_refused_before_sending(
    write: Callable[..., Path], tmp_path: Path
) -> None:
    """A metrics file that cannot be written is a usage error before anything is read or sent (issue 12)."""
    manifest = write("m.csv", f"volume_id\n{IDS[0]}\n")
    blocker = write("file", "not a folder")
    result = invoke(
        [
            "create",
            str(manifest),
            "--dry-run",
            "--project-id",
            PROJECT,
            "--region",
            "cn-north-4",
            "--report",
            str(tmp_path / "r.jsonl"),
            "--metrics-file",
            str(blocker / "m.prom"),
        ]
    )
    assert result.exit_code == 2
    assert "--metrics-file" in result.stderr
    assert "cannot write there" in result.stderr
    assert not (tmp_path / "r.jsonl").exists()
