"""Hostile input (issue 12): every bad option, path or file is one clean error, and nothing is sent.

Each case runs the CLI in-process against an emulator and checks the exit code, that the error is one
line naming the problem and what to do (never a traceback), and that the emulator saw no request.
Cases that need a real process (file-size limits, broken pipes, signals) are in ``test_hostile_run``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import orjson
import pytest
from click.testing import Result

from orchestrator.cli import main
from orchestrator.errors import UsageError
from orchestrator.report import check_report_path
from tests.helpers import (
    CLOSED_PORT,
    PROJECT,
    cli_args,
    create_args,
    create_report,
    csv_manifest,
    header,
    invoke,
    records,
    run_process,
    volume_ids,
)

IDS = volume_ids(6, seed=120)
PASSWORD = "s3cr3t-Pa55"  # a value the output must never show


def error_line(result: Result) -> str:
    """The one error line of a failed command (click's ``Error:`` or ours); no traceback anywhere."""
    assert "Traceback" not in result.output, result.output
    errors = [
        line
        for line in result.output.splitlines()
        if line.startswith(("Error:", "evs-snapshot: error:")) or '"level":"error"' in line
    ]
    assert len(errors) == 1, result.output
    return errors[0]


def refused(result: Result, *fragments: str) -> str:
    """Exit 2, one error line holding every fragment."""
    assert result.exit_code == 2, result.output
    line = error_line(result)
    for fragment in fragments:
        assert fragment in line, line
    return line


def nothing_sent(emu: Any) -> None:
    assert emu.state()["requests"] == {}


# --- options --------------------------------------------------------------------------------------

OPTION_CASES = [
    pytest.param(["--timeout", "inf"], ["--timeout", "'inf' is not a finite number"], id="timeout-inf"),
    pytest.param(["--timeout", "nan"], ["--timeout", "'nan' is not a finite number"], id="timeout-nan"),
    pytest.param(["--timeout", "-inf"], ["--timeout", "not a finite number"], id="timeout-minus-inf"),
    pytest.param(["--max-rps", "nan"], ["--max-rps", "not a finite number"], id="max-rps-nan"),
    pytest.param(["--max-rps", "inf"], ["--max-rps", "not a finite number"], id="max-rps-inf"),
    pytest.param(
        ["--backoff-initial", "nan"], ["--backoff-initial", "not a finite number"], id="backoff-nan"
    ),
    pytest.param(["--backoff-max", "inf"], ["--backoff-max", "not a finite number"], id="backoff-max-inf"),
    pytest.param(
        ["--backoff-initial", "100", "--backoff-max", "1"],
        ["--backoff-initial 100 is above --backoff-max 1"],
        id="backoff-initial-above-max",
    ),
    pytest.param(["--poll-interval", "nan"], ["--poll-interval", "not a finite number"], id="poll-nan"),
    pytest.param(["--poll-interval", "inf"], ["--poll-interval", "not a finite number"], id="poll-inf"),
    pytest.param(["--wait-timeout", "inf"], ["--wait-timeout", "duration"], id="wait-timeout-inf"),
    pytest.param(["--deadline", "nan"], ["--deadline", "duration"], id="deadline-nan"),
    pytest.param(["--settle", "inf"], ["--settle", "duration"], id="settle-inf"),
]


@pytest.mark.parametrize(("extra", "fragments"), OPTION_CASES)
def test_create_refuses_non_finite_and_inconsistent_numbers(
    extra: list[str],
    fragments: list[str],
    emulator_thread: Callable[..., Any],
    write: Callable[..., Path],
    tmp_path: Path,
) -> None:
    """nan, inf and an initial backoff above the maximum: exit 2, one line naming the option, nothing sent."""
    emu = emulator_thread(any_volume=True)
    result = invoke(create_args(emu.url, csv_manifest(write, IDS[:2]), tmp_path / "r.jsonl", *extra))
    refused(result, *fragments)
    nothing_sent(emu)


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param(["--poll-interval", "nan"], id="poll-nan"),
        pytest.param(["--timeout", "inf"], id="timeout-inf"),
        pytest.param(["--backoff-initial", "9", "--backoff-max", "1"], id="backoff-initial-above-max"),
    ],
)
@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_wait_refuses_non_finite_and_inconsistent_numbers(
    extra: list[str], emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """``wait`` takes the same numeric options and refuses the same values before polling."""
    emu = emulator_thread(any_volume=True)
    report = tmp_path / "r.jsonl"
    assert (
        invoke(create_args(emu.url, csv_manifest(write, IDS[:1]), report, "--settle", "0.5")).exit_code == 0
    )
    before = emu.state()["requests"]
    result = invoke([*cli_args("wait", report, endpoint=emu.url), *extra])
    assert result.exit_code == 2, result.output
    error_line(result)
    assert emu.state()["requests"] == before


ENDPOINT_CASES = [
    pytest.param(f"http://user:{PASSWORD}@127.0.0.1:9", "user name or password", id="userinfo-loopback"),
    pytest.param(f"https://user:{PASSWORD}@evs.example.com", "user name or password", id="userinfo-https"),
    pytest.param(f"http://user:{PASSWORD}@example.com", "user name or password", id="userinfo-plain-http"),
    pytest.param(f"ftp://user:{PASSWORD}@example.com", "not an http(s) URL", id="userinfo-ftp"),
    pytest.param(f"http://user:{PASSWORD}@[::1", "not a valid URL", id="userinfo-unparseable"),
    pytest.param("http://[::1", "not a valid URL", id="bad-ipv6"),
    pytest.param("http://127.0.0.1:99999", "not a valid URL", id="port-out-of-range"),
    pytest.param("http://127.0.0.1:abc", "not a valid URL", id="port-not-a-number"),
    pytest.param("http://exa mple.com", "invalid host name", id="space-in-host"),
    pytest.param("http://127.0.0.1:9#frag", "no path, query or fragment", id="fragment"),
    pytest.param("http://example.com", "plain http to a non-loopback host", id="plain-http"),
]


@pytest.mark.parametrize(("endpoint", "fragment"), ENDPOINT_CASES)
@pytest.mark.parametrize("option", ["--endpoint", "--iam-endpoint"])
def test_bad_endpoints_are_refused_without_echoing_a_password(
    option: str,
    endpoint: str,
    fragment: str,
    emulator_thread: Callable[..., Any],
    write: Callable[..., Path],
    tmp_path: Path,
) -> None:
    """Credentials in a URL, a bad port or host: exit 2 naming the option; the password never shown."""
    emu = emulator_thread(any_volume=True)
    args = create_args(emu.url, csv_manifest(write, IDS[:1]), tmp_path / "r.jsonl")
    if option == "--endpoint":
        args[args.index("--endpoint") + 1] = endpoint
    else:
        args += [option, endpoint]
    result = invoke(args)
    line = refused(result, option, fragment)
    assert PASSWORD not in result.output, line
    nothing_sent(emu)


def test_emulator_refuses_an_endpoint(write: Callable[..., Path], tmp_path: Path) -> None:
    """``--emulator`` with ``--endpoint`` is a contradiction, not a silent choice."""
    manifest = csv_manifest(write, IDS[:1])
    args = ["create", str(manifest), "--emulator", "--endpoint", "http://127.0.0.1:9"]
    result = invoke([*args, "--report", str(tmp_path / "r.jsonl")])
    refused(result, "--emulator", "--endpoint")
    assert not (tmp_path / "r.jsonl").exists()


# --- report and side files ------------------------------------------------------------------------


def _report_target(kind: str, tmp_path: Path) -> Path:
    if kind == "directory":
        (tmp_path / "adir").mkdir()
        return tmp_path / "adir"
    if kind == "symlink-to-dev-null":
        link = tmp_path / "null.jsonl"
        link.symlink_to(os.devnull)
        return link
    return Path({"dev-full": "/dev/full", "dev-null": os.devnull}[kind])


@pytest.mark.parametrize(
    ("kind", "fragment"),
    [
        ("directory", "is a directory; give a file path"),
        ("symlink-to-dev-null", "is not a regular file"),
        ("dev-full", "is not a regular file"),
        ("dev-null", "is not a regular file"),
    ],
)
def test_a_report_that_is_not_a_file_is_refused_up_front(
    kind: str,
    fragment: str,
    emulator_thread: Callable[..., Any],
    write: Callable[..., Path],
    tmp_path: Path,
) -> None:
    """A directory, a device, or a symlink to /dev/null as --report: exit 2 before any request."""
    emu = emulator_thread(any_volume=True)
    result = invoke(create_args(emu.url, csv_manifest(write, IDS[:2]), _report_target(kind, tmp_path)))
    line = refused(result, fragment)
    assert "already holds records" not in line
    nothing_sent(emu)


@pytest.mark.parametrize("command", ["summary", "wait"])
def test_reading_a_report_that_is_a_directory_is_refused(
    command: str, emulator_thread: Callable[..., Any], tmp_path: Path
) -> None:
    """``summary`` and ``wait`` of a directory: exit 2, one line."""
    emu = emulator_thread(any_volume=True)
    target = _report_target("directory", tmp_path)
    extra = [] if command == "summary" else ["--endpoint", emu.url]
    refused(invoke([command, str(target), *extra]), "is a directory")
    nothing_sent(emu)


SIDE_FILE_CASES = [
    pytest.param("directory", "is a directory", id="directory"),
    pytest.param("under-a-file", "cannot write there", id="under-a-file"),
    pytest.param("dev-full", "not a regular file", id="dev-full"),
    pytest.param("symlink-to-dev-null", "not a regular file", id="symlink-to-dev-null"),
    pytest.param("dash", "give a file path (- is not standard output here", id="dash"),
]


def _side_target(kind: str, tmp_path: Path) -> Path:
    if kind == "dash":  # it was a file named - in the working folder (found by hostile11b)
        return Path("-")
    if kind == "under-a-file":
        (tmp_path / "plain").write_text("x")
        return tmp_path / "plain" / "out"
    return _report_target(kind, tmp_path)


@pytest.mark.parametrize(("kind", "fragment"), SIDE_FILE_CASES)
@pytest.mark.parametrize("option", ["--metrics-file", "--summary-json"])
def test_unwritable_side_files_are_refused_before_anything_is_sent(
    option: str,
    kind: str,
    fragment: str,
    emulator_thread: Callable[..., Any],
    write: Callable[..., Path],
    tmp_path: Path,
) -> None:
    """--metrics-file / --summary-json that cannot be written (or is a device): exit 2, nothing sent."""
    emu = emulator_thread(any_volume=True)
    target = _side_target(kind, tmp_path)
    report = tmp_path / "r.jsonl"
    result = invoke(create_args(emu.url, csv_manifest(write, IDS[:2]), report, option, str(target)))
    refused(result, option, fragment)
    nothing_sent(emu)
    assert not report.exists()
    assert os.path.exists(os.devnull)
    assert Path("/dev/full").is_char_device()


@pytest.mark.parametrize("option", ["--metrics-file", "--summary-json"])
def test_side_files_never_name_the_report_or_what_the_run_reads(
    option: str, emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """A side file is replaced whole at the end: naming the report, the manifest (or a hard link of it),
    the other side file, or the create report a wait or cleanup reads, is exit 2 before
    anything is sent, and that file is left as it was (found by hostile11)."""
    emu = emulator_thread(any_volume=True)
    manifest = csv_manifest(write, IDS[:2])
    report = tmp_path / "r.jsonl"
    linked = tmp_path / "linked.csv"
    os.link(manifest, linked)
    other = "--summary-json" if option == "--metrics-file" else "--metrics-file"
    for target, extra, what in (
        (report, (), "is the report"),
        (manifest, (), "is what this run reads"),
        (linked, (), "is what this run reads"),
        (tmp_path / "both", (other, str(tmp_path / "both")), "is --"),
    ):
        result = invoke(create_args(emu.url, manifest, report, option, str(target), *extra))
        refused(result, str(target), what, "choose another path")
        assert not report.exists()
    assert manifest.read_text().startswith("volume_id")
    token = tmp_path / "token"  # a file the connection reads: it became the summary (hostile11c)
    token.write_text("a-token-file\n", encoding="utf-8")
    result = invoke(create_args(emu.url, manifest, report, "--token-file", str(token), option, str(token)))
    refused(result, str(token), "is what this run reads")
    assert token.read_text() == "a-token-file\n"
    nothing_sent(emu)
    made = invoke(create_args(emu.url, manifest, report, "--settle", "0.1s", "--timeout", "0.5"))
    assert made.exit_code == 0, made.output
    kept = report.read_bytes()
    for command in ("wait", "cleanup"):  # each reads the create report (wait appends to it)
        own = [] if command == "wait" else ["--report", str(tmp_path / f"{command}.jsonl")]
        result = invoke([command, str(report), "--endpoint", emu.url, *own, option, str(report)])
        refused(result, str(report), "choose another path")
    assert report.read_bytes() == kept
    audit = ["audit", str(manifest), "--max-age", "1h", "--endpoint", emu.url, "--project-id", PROJECT]
    refused(invoke([*audit, option, str(linked)]), str(linked), "is what this run reads")
    both = tmp_path / "audit-both"
    refused(invoke([*audit, option, str(both), other, str(both)]), "choose another path")
    assert manifest.read_text().startswith("volume_id")


@pytest.mark.parametrize("command", ["wait", "cleanup", "rollback", "hold", "release"])
def test_side_files_never_name_the_manifest_of_the_create_report_read(
    command: str,
    emulator_thread: Callable[..., Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A command reading a create report reads its manifest too (a later create --resume needs it): a
    side file naming that manifest, a symlink or a hard link of it, is exit 2 before anything is sent,
    and the manifest is left as it was (found by hostile13)."""
    emu = emulator_thread(any_volume=True)
    monkeypatch.chdir(tmp_path)  # the header names the manifest as create was given it: m.csv
    source = create_report(tmp_path / "r.jsonl", [{}])
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"volume_id\n{IDS[0]}\n", encoding="utf-8")
    (tmp_path / "symlinked.csv").symlink_to(manifest)
    os.link(manifest, tmp_path / "linked.csv")
    own = [] if command == "wait" else ["--report", str(tmp_path / f"{command}.jsonl")]
    own += ["--reason", "audit"] if command == "hold" else []
    for option in ("--metrics-file", "--summary-json"):
        for target in ("m.csv", str(manifest), "symlinked.csv", "linked.csv"):
            result = invoke([command, str(source), "--endpoint", emu.url, *own, option, target])
            refused(result, target, "is what this run reads", "choose another path")
    assert manifest.read_text() == f"volume_id\n{IDS[0]}\n"
    nothing_sent(emu)


def test_a_create_report_names_its_manifest_for_commands_run_elsewhere(
    emulator_thread: Callable[..., Any],
    write: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """create's header names its manifest by an absolute path: a wait run from another folder still
    refuses a side file naming that manifest (exit 2), and the manifest stays a manifest."""
    emu = emulator_thread(any_volume=True)
    monkeypatch.chdir(tmp_path)
    write("m.csv", f"volume_id\n{IDS[0]}\n")
    made = invoke(create_args(emu.url, Path("m.csv"), Path("r.jsonl"), "--settle", "0.1s"))
    assert made.exit_code == 0, made.output
    assert header(tmp_path / "r.jsonl")["manifest"] == str((tmp_path / "m.csv").resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = invoke(["wait", "../r.jsonl", "--endpoint", emu.url, "--metrics-file", "../m.csv"])
    refused(result, "../m.csv", "is what this run reads")
    assert (tmp_path / "m.csv").read_text() == f"volume_id\n{IDS[0]}\n"


@pytest.mark.parametrize(
    ("command", "said"),
    [
        ("hold", "hold writes its own report: give a --report other than the create report"),
        ("cleanup", "cleanup writes its own report: give a --report other than the create report"),
        ("rollback", "--report must not be the create report: rollback writes a report of its own"),
    ],
)
def test_an_action_report_never_names_the_create_report_it_reads(
    command: str, said: str, tmp_path: Path
) -> None:
    """hold, cleanup and rollback write their own report: the create report they read, by its path, a
    symlink, a hard link (it passed: paths were compared, not files) or `--report -` with standard output
    sent to it, is exit 2 with the command's
    message, with --resume too, and the create report is left as it was."""
    source = create_report(tmp_path / "c.jsonl", [{}, {}])
    kept = source.read_bytes()
    symlink, hard = tmp_path / "symlink.jsonl", tmp_path / "hard.jsonl"
    symlink.symlink_to(source)
    os.link(source, hard)
    extra = {"hold": ["--reason", "x"], "rollback": ["--rows", "1"]}.get(command, [])
    for given in (source, symlink, hard):
        for resume in ([], ["--resume"]):
            args = [command, str(source), *extra, "--endpoint", CLOSED_PORT, *resume, "--report", str(given)]
            refused(invoke(args, {"OS_REGION_NAME": ""}), said)
    # --report - with standard output sent to the create report (``>> c.jsonl``), in a real process
    with source.open("ab") as appended:
        args = [command, str(source), *extra, "--endpoint", CLOSED_PORT, "--report", "-"]
        process = run_process(args, {"OS_REGION_NAME": ""}, stdout=appended.fileno())
        _, stderr = process.communicate(timeout=60)
    assert (process.returncode, said in stderr.decode()) == (2, True), stderr
    assert source.read_bytes() == kept


# --- manifests ------------------------------------------------------------------------------------

DEEP = 1000


@pytest.mark.parametrize(
    ("name", "content"),
    [
        pytest.param("deep.json", "[" * DEEP + "]" * DEEP, id="array"),
        pytest.param("deep-volumes.json", '{"volumes": ' + "[" * DEEP + "]" * DEEP + "}", id="volumes-array"),
        pytest.param("deep-object.json", '[{"a": ' * DEEP + "1" + "}]" * DEEP, id="objects"),
        pytest.param(
            "deep-metadata.json",
            f'[{{"volume_id": "{IDS[0]}", "metadata": ' + '{"k": ' * DEEP + '"v"' + "}" * DEEP + "}]",
            id="in-metadata",
        ),
        pytest.param("deep.jsonl", "[" * DEEP + "]" * DEEP + "\n", id="jsonl"),
    ],
)
@pytest.mark.parametrize("command", ["create", "validate"])
def test_deeply_nested_json_is_a_file_error(
    command: str,
    name: str,
    content: str,
    emulator_thread: Callable[..., Any],
    write: Callable[..., Path],
    tmp_path: Path,
) -> None:
    """JSON nested 1,000 deep: exit 2 with file:line, no RecursionError, nothing sent."""
    emu = emulator_thread(any_volume=True)
    manifest = write(name, content)
    if command == "create":
        args = create_args(emu.url, manifest, tmp_path / "r.jsonl")
    else:
        args = cli_args("validate", manifest, online=True, endpoint=emu.url, project_id=PROJECT)
    line = refused(invoke(args), f"{manifest}:1:", "nesting deeper than")
    assert "Recursion" not in line
    nothing_sent(emu)


@pytest.mark.parametrize(
    ("header_line", "column"),
    [
        ("volume_id,volume_id", "'volume_id' twice"),
        ("volume_id, Volume_ID ", "'volume_id' twice"),
        ("volume_id,name,NAME", "'name' twice"),
        ("volume_id,team,team", "'team' twice"),
    ],
)
@pytest.mark.parametrize("command", ["create", "validate"])
@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_duplicate_csv_columns_are_a_file_error_naming_the_column(
    command: str,
    header_line: str,
    column: str,
    emulator_thread: Callable[..., Any],
    write: Callable[..., Path],
    tmp_path: Path,
) -> None:
    """Two header cells with one name: exit 2 naming it (no silent last-one-wins), nothing sent."""
    emu = emulator_thread(any_volume=True)
    cells = len(header_line.split(","))
    manifest = write("dup.csv", f"{header_line}\n" + ",".join([IDS[0], IDS[1], "x"][:cells]) + "\n")
    if command == "create":
        args = create_args(emu.url, manifest, tmp_path / "r.jsonl")
    else:
        args = cli_args("validate", manifest, online=True, endpoint=emu.url, project_id=PROJECT)
    refused(invoke(args), f"{manifest}:1:", column, "rename or remove")
    nothing_sent(emu)


HOSTILE_NAMES = {
    "nul": "db\x00primary",
    "esc": "db\x1b[31mred",
    "bel": "db\x07",
    "newline": "db\nprimary",
    "carriage-return": "db\rprimary",
    "tab": "db\tprimary",
    "rlo": "db\u202eyramirp",
    "only-spaces": "   ",
    "only-ideographic-space": "\u3000",
    "del": "db\x7f",
    "c1": "db\x85",
}


def test_names_with_control_characters_or_only_spaces_are_invalid(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """NUL, ESC, BEL, newline, U+202E, only spaces...: INVALID_NAME records naming the row; none sent."""
    emu = emulator_thread(any_volume=True)
    ids = volume_ids(len(HOSTILE_NAMES), seed=121)
    rows = [{"volume_id": vid, "name": name} for vid, name in zip(ids, HOSTILE_NAMES.values(), strict=True)]
    manifest = write("names.json", orjson.dumps(rows))
    report = tmp_path / "r.jsonl"
    result = invoke(create_args(emu.url, manifest, report))
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    got = {r["row"]: r for r in records(report)}
    assert sorted(got) == list(range(1, len(rows) + 1))
    for row, (case, _) in enumerate(HOSTILE_NAMES.items(), start=1):
        record = got[row]
        assert (record["outcome"], record["error_code"]) == ("invalid", "INVALID_NAME"), (case, record)
        assert record["error_message"].startswith(f"row {row} "), record
        assert "name" in record["error_message"]
        assert not any(ch in record["error_message"] for ch in "\x00\x1b\x07\n\r\u202e"), record
        assert record["attempts"] == 0
    creates = emu.state()["requests"].get("POST /v2/{project_id}/cloudsnapshots", {})
    assert creates == {}
    assert emu.state()["snapshots"] == []


def test_validate_lists_hostile_names_on_one_line_each(write: Callable[..., Path]) -> None:
    """Offline validate shows each hostile name escaped: one line per row, no raw control character."""
    ids = volume_ids(len(HOSTILE_NAMES), seed=122)
    rows = [{"volume_id": vid, "name": name} for vid, name in zip(ids, HOSTILE_NAMES.values(), strict=True)]
    result = invoke(
        cli_args("validate", write("names.json", orjson.dumps(rows)), project_id=PROJECT, region="cn-north-4")
    )
    assert result.exit_code == 1, result.output
    problems = [line for line in result.stdout.splitlines() if line.startswith("INVALID_NAME: row ")]
    assert len(problems) == 10  # the first 10 of a code in full, then a count
    assert f"... and {len(rows) - 10} more" in result.stdout
    assert not any(ch in result.stdout for ch in "\x00\x1b\x07\r\u202e")
    assert result.stdout.splitlines()[-1].startswith(f"{len(rows)} rows: 0 would be sent")


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_header_names_ignore_case_and_spaces(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """`` Volume_ID `` and `` NAME`` are the volume_id and name columns."""
    emu = emulator_thread(any_volume=True)
    manifest = write("m.csv", f" Volume_ID , NAME\n{IDS[0]},db-1\n{IDS[1]},db-2\n")
    report = tmp_path / "r.jsonl"
    result = invoke(create_args(emu.url, manifest, report))
    assert result.exit_code == 0, result.output
    assert "unknown column" not in result.output
    got = sorted((r["volume_id"], r["name"], r["outcome"]) for r in records(report))
    assert got == sorted([(IDS[0], "db-1", "accepted"), (IDS[1], "db-2", "accepted")])


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_twenty_thousand_unknown_columns_print_eleven_warnings(write: Callable[..., Path]) -> None:
    """The first 10 unknown columns by name, then one count line: not 20,000 lines."""
    columns = 20_000
    manifest = write(
        "wide.csv",
        "volume_id," + ",".join(f"c{i}" for i in range(columns)) + f"\n{IDS[0]}" + "," * columns + "\n",
    )
    result = invoke(cli_args("validate", manifest, project_id=PROJECT, region="cn-north-4"))
    assert result.exit_code == 0, result.output
    warnings = result.stderr.splitlines()
    assert len(warnings) == 11, warnings[:15]
    assert all("unknown column 'c" in line for line in warnings[:10])
    assert "19,990 more unknown columns" in warnings[10]


def test_offline_validate_without_project_or_region_says_once_what_to_pass(
    write: Callable[..., Path],
) -> None:
    """50 rows without a project: at most 10 MISSING_PROJECT_ID lines, a count, and one hint."""
    result = invoke(cli_args("validate", csv_manifest(write, volume_ids(50, seed=123))))
    assert result.exit_code == 1, result.output
    out = result.stdout.splitlines()
    rows = [line for line in out if line.startswith("MISSING_PROJECT_ID: row ")]
    hints = [line for line in out if "--project-id" in line and "--region" in line]
    assert len(rows) == 10, out
    assert len(hints) == 1, out
    assert "... and 40 more" in result.stdout
    assert len(out) <= 13, out
    assert out[-1].startswith("50 rows: 0 would be sent, 50 with problems")


# --- reports that tell less than the whole story --------------------------------------------------


def _cut_report(emu: Any, write: Callable[..., Path], tmp_path: Path, keep: int, total: int = 6) -> Path:
    """A create report of ``total`` rows cut to its header and first ``keep`` records (as SIGKILL leaves it)."""
    report = tmp_path / "r.jsonl"
    ids = volume_ids(total, seed=124)
    assert invoke(create_args(emu.url, csv_manifest(write, ids), report, "--settle", "0.5")).exit_code == 0
    lines = report.read_bytes().splitlines(keepends=True)
    finals = [n for n, line in enumerate(lines) if n and b'"outcome":"sending"' not in line]
    report.write_bytes(b"".join(lines[: finals[keep]]))  # up to the keep-th row record, journal included
    return report


@pytest.mark.no_cover
def test_summary_of_a_report_cut_short_is_not_a_success(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """3 of 6 rows recorded: 'N of M rows have a record', the rows without one named, --resume, exit 1."""
    emu = emulator_thread(any_volume=True)
    report = _cut_report(emu, write, tmp_path, keep=3)
    before = emu.state()["requests"]
    result = invoke(["summary", str(report)])
    assert result.exit_code == 1, result.output
    assert "3 rows: 3 accepted (3 of 6 rows have a record)" in result.stdout
    assert "3 of 6 rows have no record (rows 4, 5, 6)" in result.stdout
    assert "run the same create command with --resume" in result.stdout
    data = orjson.loads(invoke(["summary", str(report), "--json"]).stdout)
    assert (data["rows"], data["manifest_rows"], data["missing_rows"], data["exit_code"]) == (3, 6, 3, 1)
    assert emu.state()["requests"] == before


@pytest.mark.parametrize("content", ["empty", "header-only"])
def test_wait_on_an_empty_report_is_not_a_success(
    content: str, emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """An empty report (0 bytes, or a header and no record) never exits 0, and nothing is sent."""
    emu = emulator_thread(any_volume=True)
    report = _cut_report(emu, write, tmp_path, keep=0)
    if content == "empty":
        report.write_bytes(b"")
    before = emu.state()["requests"]
    result = invoke(cli_args("wait", report, endpoint=emu.url, poll_interval=0.1))
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    if content == "empty":
        refused(result, "holds no records")
    else:
        assert result.exit_code == 1
        assert "0 of 6 rows have a record" in result.output
        assert "6 of 6 rows have no record" in result.output
    assert emu.state()["requests"] == before


def test_summary_of_an_empty_report_is_a_usage_error(write: Callable[..., Path]) -> None:
    """``summary`` of a 0-byte file: exit 2 'holds no records', not '0 rows: none' and exit 0."""
    refused(invoke(["summary", str(write("empty.jsonl", b""))]), "holds no records")


@pytest.mark.no_cover
def test_error_codes_have_one_shape_in_summary_json_and_summary_dash_json(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """``error_codes`` is the same list of {code, rows, example} in --summary-json and summary --json."""
    emu = emulator_thread(any_volume=True)
    manifest = write("m.csv", f"volume_id\n{IDS[0]}\nnot-a-uuid\n{IDS[0]}\n")
    report, side = tmp_path / "r.jsonl", tmp_path / "s.json"
    result = invoke(create_args(emu.url, manifest, report, "--settle", "0.5", "--summary-json", str(side)))
    assert result.exit_code == 1, result.output
    written = orjson.loads(side.read_bytes())["error_codes"]
    printed = orjson.loads(invoke(["summary", str(report), "--json"]).stdout)["error_codes"]
    assert isinstance(written, list)
    assert written == printed
    assert sorted(entry["code"] for entry in written) == ["DUPLICATE_VOLUME", "INVALID_VOLUME_ID"]
    assert all(set(entry) == {"code", "rows", "example"} for entry in written)
    ok, ok_side = tmp_path / "ok.jsonl", tmp_path / "ok.json"
    args = create_args(emu.url, csv_manifest(write, IDS[1:2], "ok.csv"), ok, "--summary-json", str(ok_side))
    assert invoke(args).exit_code == 0
    assert orjson.loads(ok_side.read_bytes())["error_codes"] == []
    assert orjson.loads(invoke(["summary", str(ok), "--json"]).stdout)["error_codes"] == []


# --- usage errors under --log-format json, and the emulator's own options --------------------------

JSON_USAGE_CASES = [
    pytest.param(["--concurrency", "0"], "--concurrency", id="click-range"),
    pytest.param(["--timeout", "nan"], "--timeout", id="nan"),
    pytest.param(["--bogus"], "--bogus", id="unknown-option"),
    pytest.param(["--backoff-initial", "100", "--backoff-max", "1"], "--backoff-initial", id="ours"),
    pytest.param(["--endpoint", f"http://u:{PASSWORD}@127.0.0.1:9"], "--endpoint", id="endpoint"),
]


@pytest.mark.parametrize(("extra", "fragment"), JSON_USAGE_CASES)
@pytest.mark.parametrize("style", ["--log-format json", "--log-format=json"])
def test_usage_errors_follow_log_format_json(
    style: str,
    extra: list[str],
    fragment: str,
    emulator_thread: Callable[..., Any],
    write: Callable[..., Path],
    tmp_path: Path,
) -> None:
    """Under --log-format json every stderr line of a usage error is one JSON object with exit_code 2."""
    emu = emulator_thread(any_volume=True)
    args = [*create_args(emu.url, csv_manifest(write, IDS[:1]), tmp_path / "r.jsonl", *extra), *style.split()]
    result = invoke(args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    event = orjson.loads(lines[0])
    assert (event["level"], event["event"], event["exit_code"]) == ("error", "error", 2)
    assert fragment in event["message"]
    assert PASSWORD not in result.output
    nothing_sent(emu)


def test_missing_manifest_under_log_format_json(tmp_path: Path) -> None:
    """A manifest that does not exist: one JSON error line, exit 2."""
    result = invoke(["create", str(tmp_path / "none.csv"), "--log-format", "json", "--dry-run"])
    assert result.exit_code == 2, result.output
    [line] = result.stderr.splitlines()
    assert orjson.loads(line)["level"] == "error"


def test_every_emulator_option_has_help_text() -> None:
    """``evs-snapshot emulator --help`` explains every option."""
    emulator = main.get_command(click.Context(main), "emulator")
    assert emulator is not None
    missing = [
        param.name
        for param in emulator.params
        if isinstance(param, click.Option) and not (param.help or "").strip()
    ]
    assert missing == []


@pytest.mark.timeout(20)
@pytest.mark.parametrize("option", ["--volumes", "--snapshots"])
@pytest.mark.parametrize(
    "content",
    [
        pytest.param(bytes(range(256)) * 8, id="bytes"),
        pytest.param(b"\x00\x01\x02volume_id\n" + uuid.UUID(int=1).bytes, id="nul-csv"),
        pytest.param(b"\xff\xfe" + "volume_id\n".encode("utf-16-le"), id="utf-16"),
    ],
)
def test_emulator_refuses_a_binary_seed_file(option: str, content: bytes, write: Callable[..., Path]) -> None:
    """A binary --volumes / --snapshots file: exit 2, one line, the emulator never starts."""
    path = write("seed.csv", content)
    result = invoke(["emulator", option, str(path)])
    line = refused(result, str(path))
    assert "listening" not in result.output, line


def test_report_header_knows_the_manifest(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """The report's header records the manifest's row count (what 'N of M rows' is measured against)."""
    emu = emulator_thread(any_volume=True)
    report = tmp_path / "r.jsonl"
    assert invoke(create_args(emu.url, csv_manifest(write, IDS[:4]), report, "--dry-run")).exit_code == 0
    assert header(report)["rows"] == 4


def test_paths_that_cannot_be_reports(tmp_path: Path) -> None:
    """A report under a regular file, or a device, is a usage error naming the path."""
    plain = tmp_path / "plain"
    plain.write_text("x", encoding="utf-8")
    with pytest.raises(UsageError, match="cannot use the report"):
        check_report_path(plain / "r.jsonl")
    with pytest.raises(UsageError, match="not a regular file"):
        check_report_path(Path(os.devnull))


def test_a_report_path_that_cannot_be_looked_at_is_refused(
    write: Callable[..., Path], tmp_path: Path
) -> None:
    """--report a symlink that points at itself: exit 2, one line naming the report and why."""
    loop = tmp_path / "loop.jsonl"
    loop.symlink_to(loop)
    result = invoke(create_args(CLOSED_PORT, csv_manifest(write, IDS[:1]), loop, "--dry-run"))
    refused(result, f"cannot use the report {loop}", "symbolic links")
