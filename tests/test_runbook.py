"""validate (offline and --online), summary, Prometheus metrics and JSON logs: what runbooks and cron read."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from orchestrator import metrics
from orchestrator.emulator import SeedVolume
from orchestrator.tally import Tally
from tests.helpers import PROJECT, cli_args, csv_manifest, invoke, requests_of, seeds, volume_ids

IDS = volume_ids(8, seed=71)


def test_validate_offline_lists_problems_by_row(write: Callable[..., Path]) -> None:
    """Offline validate names every problem row with its code; exit 1; a clean manifest exits 0."""
    manifest = write(
        "m.csv",
        f"volume_id,name\n{IDS[0]},\nbad-id,\n{IDS[1]},autobk_snapshot_x\n{IDS[0]},\n",
    )
    result = invoke(["validate", str(manifest), "--project-id", PROJECT, "--region", "cn-north-4"])
    assert result.exit_code == 1
    out = result.stdout
    assert "INVALID_VOLUME_ID: row 2 (line 3)" in out
    assert "RESERVED_NAME_PREFIX: row 3 (line 4)" in out
    assert "DUPLICATE_VOLUME: row 4 (line 5)" in out
    assert "4 rows: 1 would be sent, 3 with problems" in out
    clean = write("c.csv", f"volume_id\n{IDS[0]}\n{IDS[1]}\n")
    result = invoke(["validate", str(clean), "--project-id", PROJECT, "--region", "cn-north-4"])
    assert result.exit_code == 0
    assert "2 rows: 2 would be sent, 0 with problems" in result.stdout
    broken = write("b.json", b"[{")
    assert invoke(["validate", str(broken), "--project-id", PROJECT, "--region", "cn-north-4"]).exit_code == 2


def test_validate_online_finds_every_problem_without_creating(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """--online finds unknown, in-use-without-force, unsnapshottable and full disks, and sends no POST."""
    full = IDS[4]
    emu = emulator_thread(
        volumes=(
            *seeds([IDS[0], full]),
            SeedVolume(volume_id=IDS[1], status="in-use"),
            SeedVolume(volume_id=IDS[2], status="in-use"),
            SeedVolume(volume_id=IDS[3], status="extending"),
        )
    )
    filler = write("f.csv", "volume_id,name\n" + "".join(f"{full},n{n}\n" for n in range(7)))
    fill = ["--endpoint", emu.url, "--project-id", PROJECT, "--report", str(tmp_path / "fill.jsonl")]
    assert invoke(["create", str(filler), *fill]).exit_code == 1  # the 7 rows are duplicates of one volume
    for n in range(6):  # bring the disk to 7 snapshots with separate runs
        one = write(f"one{n}.csv", f"volume_id,name\n{full},extra{n}\n")
        assert (
            invoke(
                [
                    "create",
                    str(one),
                    "--endpoint",
                    emu.url,
                    "--project-id",
                    PROJECT,
                    "--report",
                    str(tmp_path / f"one{n}.jsonl"),
                ]
            ).exit_code
            == 0
        )
    posts_before = emu.state()["requests"]["POST /v2/{project_id}/cloudsnapshots"]
    manifest = write(
        "m.csv",
        f"volume_id,force\n{IDS[0]},\n{IDS[1]},no\n{IDS[2]},yes\n{IDS[3]},\n{full},\n{IDS[5]},\nnope,\n",
    )
    result = invoke(["validate", str(manifest), "--online", "--endpoint", emu.url, "--project-id", PROJECT])
    assert result.exit_code == 1, result.output
    out = result.stdout
    assert f"VOLUME_IN_USE: row 2 (line 3): volume {IDS[1]}" in out
    assert f"VOLUME_NOT_SNAPSHOTTABLE: row 4 (line 5): volume {IDS[3]}" in out
    assert f"SNAPSHOT_LIMIT_REACHED: row 5 (line 6): volume {full}" in out
    assert f"VOLUME_NOT_FOUND: row 6 (line 7): volume {IDS[5]}" in out
    assert "INVALID_VOLUME_ID: row 7 (line 8)" in out
    assert "7 rows: 2 would be sent (checked online), 5 with problems" in out
    assert emu.state()["requests"]["POST /v2/{project_id}/cloudsnapshots"] == posts_before


def test_summary_command(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """summary reads the last record per row: counts, codes with an example, slowest rows, rows to retry."""
    emu = emulator_thread(volumes=(*seeds(IDS[:3]), SeedVolume(volume_id=IDS[3], status="in-use")))
    report = tmp_path / "r.jsonl"
    manifest = write("m.csv", f"volume_id\n{IDS[0]}\n{IDS[1]}\n{IDS[2]}\n{IDS[3]}\n{IDS[6]}\nbad\n")
    args = ["create", str(manifest), "--endpoint", emu.url, "--project-id", PROJECT, "--report", str(report)]
    assert invoke(args).exit_code == 1
    result = invoke(["summary", str(report)])
    assert result.exit_code == 1
    out = result.stdout
    assert out.startswith("6 rows: 3 accepted, 1 invalid, 2 rejected")
    assert "EVS.5400 x1 (e.g. row 4:" in out
    assert "EVS.5404 x1 (e.g. row 5:" in out
    assert "rows to retry (3): 4, 5, 6" in out
    assert "slowest: row" in out
    data = orjson.loads(invoke(["summary", str(report), "--json"]).stdout)
    assert data["outcomes"] == {"accepted": 3, "invalid": 1, "rejected": 2}
    assert data["rows_to_retry"] == [4, 5, 6]
    assert {e["code"] for e in data["error_codes"]} == {"EVS.5400", "EVS.5404", "INVALID_VOLUME_ID"}
    assert len(data["slowest"]) == 5
    assert data["exit_code"] == 1
    # the last record of a row wins: a later 'available' record replaces the 'accepted' one
    with report.open("ab") as handle:
        for line in report.read_bytes().splitlines():
            record = orjson.loads(line)
            if record.get("outcome") == "accepted":
                handle.write(orjson.dumps({**record, "outcome": "available"}) + b"\n")
    data = orjson.loads(invoke(["summary", str(report), "--json"]).stdout)
    assert data["outcomes"] == {"available": 3, "invalid": 1, "rejected": 2}
    assert invoke(["summary", str(tmp_path / "none.jsonl")]).exit_code == 2


def parse_prometheus(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A small parser for the text exposition format; raises on any malformed line."""
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    typed: set[str] = set()
    line_re = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (-?[0-9.eE+]+|NaN|\+Inf|-Inf)$")
    label_re = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            assert kind in {"gauge", "counter"}
            typed.add(name)
            continue
        match = line_re.match(line)
        assert match, line
        name, labels, value = match.groups()
        assert name in typed, f"{name} has no TYPE line"
        pairs = tuple(label_re.findall(labels or ""))
        assert ",".join(f'{k}="{v}"' for k, v in pairs) == (labels or "")
        samples[(name, pairs)] = float(value)
    return samples


def test_metrics_file(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path
) -> None:
    """--metrics-file writes parseable Prometheus text; a failed run keeps the last success time."""
    emu = emulator_thread(volumes=seeds(IDS[:2]))
    metrics = tmp_path / "textfile" / "evs.prom"
    good = write("g.csv", f"volume_id\n{IDS[0]}\n")
    args = ["--endpoint", emu.url, "--project-id", PROJECT, "--metrics-file", str(metrics)]
    assert invoke(["create", str(good), *args, "--report", str(tmp_path / "a.jsonl")]).exit_code == 0
    first = parse_prometheus(metrics.read_text())
    command = (("command", "create"),)
    assert first[("evs_snapshot_rows", (("command", "create"), ("outcome", "accepted")))] == 1
    assert first[("evs_snapshot_exit_code", command)] == 0
    assert first[("evs_snapshot_requests", command)] == 1
    success = first[("evs_snapshot_last_success_timestamp_seconds", command)]
    assert success > 1.7e9
    bad = write("b.csv", f"volume_id\n{IDS[1]}\n{IDS[7]}\n")
    assert invoke(["create", str(bad), *args, "--report", str(tmp_path / "b.jsonl")]).exit_code == 1
    second = parse_prometheus(metrics.read_text())
    assert second[("evs_snapshot_exit_code", command)] == 1
    assert second[("evs_snapshot_rows", (("command", "create"), ("outcome", "rejected")))] == 1
    assert second[("evs_snapshot_last_success_timestamp_seconds", command)] == success
    assert second[("evs_snapshot_last_run_timestamp_seconds", command)] >= success
    assert [p.name for p in metrics.parent.iterdir()] == ["evs.prom"]  # no temporary file left


@pytest.mark.parametrize("bad_manifest", [False, True])
def test_json_log_format(
    emulator_thread: Callable[..., Any], write: Callable[..., Path], tmp_path: Path, bad_manifest: bool
) -> None:
    """--log-format json: every stderr line is one JSON event with time, level, event and message."""
    emu = emulator_thread(volumes=seeds(IDS[:1]))
    manifest = write("m.csv", "volume_id,extra\n" + (f"{IDS[0]},x\n" if not bad_manifest else ""))
    result = invoke(
        [
            "create",
            str(manifest),
            "--endpoint",
            emu.url,
            "--project-id",
            PROJECT,
            "--report",
            str(tmp_path / "r.jsonl"),
            "--log-format",
            "json",
        ]
    )
    assert result.exit_code == (2 if bad_manifest else 0)
    events = [orjson.loads(line) for line in result.stderr.splitlines()]
    assert events
    assert all({"time", "level", "event", "message"} <= set(event) for event in events)
    names = [event["event"] for event in events]
    if bad_manifest:
        assert names[-1] == "error"
        assert events[-1]["exit_code"] == 2
    else:
        assert "warning" in names  # the unknown column
        summary = next(event for event in events if event["event"] == "summary")
        assert summary["outcomes"] == {"accepted": 1}


def test_metrics_keep_another_commands_families(tmp_path: Path) -> None:
    """create writes its duplicates (and no last success: it failed); wait's write keeps them whole."""
    path = tmp_path / "m.prom"
    created = Tally()
    created.duplicates["duplicate_deleted"] = 2
    families = metrics.tally_families(created, command="create", throttled=0, also=Counter())
    metrics.write_families(path, families, command="create", exit_code=1)  # as the frame writes them
    text = path.read_text()
    assert 'evs_snapshot_duplicates{command="create",outcome="duplicate_deleted"} 2' in text
    assert metrics.LAST_SUCCESS not in text
    families = metrics.tally_families(Tally(), command="wait", throttled=0, also=Counter())
    metrics.write_families(path, families, command="wait", exit_code=0)
    text = path.read_text()
    assert text.count("# TYPE evs_snapshot_duplicates gauge") == 1
    assert 'evs_snapshot_duplicates{command="create",outcome="duplicate_deleted"} 2' in text
    assert 'evs_snapshot_duplicates{command="wait"' not in text
    assert metrics.previous_success(text, "wait") is not None
    assert metrics.previous_success(text, "create") is None


def test_validate_online_checks_that_cannot_be_made(
    emulator_thread: Callable[..., Any], write: Callable[..., Path]
) -> None:
    """validate --online: failing snapshot listings (CHECK_FAILED) and an unknown region
    (PROJECT_NOT_FOUND) are problems of the rows, exit 1: not a crash and not a pass."""
    ids = volume_ids(2, seed=931)
    emu = emulator_thread(any_volume=True, fault_list=1.0)
    manifest = csv_manifest(write, ids)
    args = cli_args("validate", manifest, online=True, endpoint=emu.url, project_id=PROJECT)
    failing = invoke([*args, "--max-attempts", "1", "--backoff-initial", "0.01"])
    assert failing.exit_code == 1, failing.output
    assert "CHECK_FAILED" in failing.output
    region = cli_args("validate", manifest, online=True, endpoint=emu.url, iam_endpoint=emu.url)
    lookup = invoke([*region, "--region", "ap-southeast-9", "--max-attempts", "1"])
    assert lookup.exit_code == 1, lookup.output
    assert "IAM lists no project named ap-southeast-9" in lookup.output
    assert "2 with problems (PROJECT_NOT_FOUND x2)" in lookup.output


def test_validate_online_with_refused_credentials_stops_at_once(
    emulator_thread: Callable[..., Any], write: Callable[..., Path]
) -> None:
    """A wrong secret: at most 2 GETs reach the gateway, one error and the count line, exit 3."""
    ids = volume_ids(100, seed=121)
    emu = emulator_thread(any_volume=True, latency_ms=10)
    result = invoke(
        [
            "validate",
            str(csv_manifest(write, ids)),
            "--online",
            "--endpoint",
            emu.url,
            "--project-id",
            PROJECT,
        ],
        env={"HUAWEICLOUD_SDK_SK": "wrong"},
    )
    assert result.exit_code == 3
    gets = requests_of(emu.state(), "GET /v2/{project_id}/cloudvolumes/{volume_id}")
    assert sum(gets.values()) <= 2
    assert result.stdout.count("\n") <= 12  # no line per row
    assert "credentials refused" in result.stderr


def test_validate_online_against_a_dead_endpoint_stops(write: Callable[..., Path]) -> None:
    """Transport errors on every check: the endpoint is closed after 3 tries, exit 3, no line per row."""
    ids = volume_ids(50, seed=122)
    result = invoke(
        [
            "validate",
            str(csv_manifest(write, ids)),
            "--online",
            "--endpoint",
            "http://127.0.0.1:9",
            "--project-id",
            PROJECT,
            "--backoff-initial",
            "0.01",
            "--backoff-max",
            "0.05",
        ]
    )
    assert result.exit_code == 3
    assert "ENDPOINT_UNREACHABLE" in result.stderr
    assert result.stdout.count("\n") <= 12


def test_a_metrics_file_that_is_not_text_is_replaced(tmp_path: Path) -> None:
    """A --metrics-file holding bytes that are not UTF-8 (a corrupted file): written afresh, no crash."""
    path = tmp_path / "m.prom"
    path.write_bytes(b"\xff\xfe not metrics\n")
    families = metrics.tally_families(Tally(), command="wait", throttled=0, also=Counter())
    metrics.write_families(path, families, command="wait", exit_code=0)
    text = path.read_text(encoding="utf-8")
    assert "not metrics" not in text
    assert metrics.previous_success(text, "wait") is not None
