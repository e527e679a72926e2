"""Scenario 10: resuming a large interrupted run (issue 18): time, requests and peak RSS of the resume.

N rows (20,000 and 60,000) against an emulator with ``--any-volume`` and 20 ms latency; concurrency 32,
``--settle 5s --timeout 5`` (so the settle window of a row in flight at the kill closes 10 s after its
last send). The first ``create`` gets SIGKILL (or SIGTERM) 1 s after its report's header is written,
then ``create --resume`` finishes the job. For the resume: wall time, creates sent, lookups and list
requests (its ``--summary-json``; the emulator's counts of the two GET routes when it was cut off),
peak RSS (``wait4``), and a fresh run, on a fresh emulator, of as many rows as the resume sent.

Targets: peak RSS under 120 MB at 60,000 rows; the resume within 1.5x the fresh run plus the settle
window of the rows that were in flight (10 s here); every disk ends with exactly one live snapshot of
the run (from the emulator's state).

``python -m benchmarks.resume [--rows N ...] [--signal kill|term ...] [--repeats N] [--tree PATH]
[--timeout SECONDS]`` prints the table; ``--tree`` runs another checkout's client (against this
checkout's emulator), and ``--timeout`` bounds each resume (a resume cut off is said so).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from benchmarks.common import (
    AKSK_ENV,
    PROJECT,
    Emulator,
    create,
    emulator,
    manifest,
    summary_of,
    table,
    tree_options,
)

LATENCY = ("--latency-ms", "20")
SETTLE, TIMEOUT = 5.0, 5.0
OPTIONS = ("--concurrency", "32", "--settle", f"{SETTLE:g}s", "--timeout", f"{TIMEOUT:g}")
WINDOW = SETTLE + TIMEOUT
KILL_AFTER = 1.0
SIGNALS = {"kill": signal.SIGKILL, "term": signal.SIGTERM}
CREATE_ROUTE = "POST /v2/{project_id}/cloudsnapshots"
LIST_ROUTE = "GET /v2/{project_id}/cloudsnapshots/detail"
GET_ROUTE = "GET /v2/{project_id}/cloudsnapshots/{snapshot_id}"


@dataclass(frozen=True)
class Result:
    rows: int
    signal: str
    recorded: int  # rows with a final record when the first run stopped
    in_flight: int  # rows with a ``sending`` record and no final one (0 for code without the journal)
    seconds: float
    cpu_seconds: float
    sweep_seconds: float | None  # the resume's end-of-run sweep (from its summary)
    finished: bool
    creates: int
    lookups: str
    lists: str
    peak_rss_mb: float
    fresh_seconds: float | None
    fresh_cpu_seconds: float | None
    doubled: int
    missing: int


def digest(emu: Emulator, run_id: str = "", rows: int = 0, offset: int = 0) -> dict[str, Any]:
    """The emulator's request counts by route, and the disks doubled and missing of ``run_id``.

    Read by a child process: the state of 60,000 snapshots would grow this one by 100-200 MB, and a
    child's ``ru_maxrss`` includes its parent's peak at the fork (Linux keeps the larger).
    """
    code = "import sys; from benchmarks.resume import digest_main; digest_main(sys.argv[1:])"
    answer = subprocess.run(
        [sys.executable, "-c", code, emu.url, run_id, str(rows), str(offset)],
        capture_output=True,
        check=True,
        cwd=Path(__file__).parent.parent,
    )
    data: dict[str, Any] = orjson.loads(answer.stdout)
    return data


def digest_main(argv: list[str]) -> None:
    """``digest``'s child: fetch the emulator's state, print the digest as JSON."""
    url, run_id, rows, offset = argv[0], argv[1], int(argv[2]), int(argv[3])
    with urllib.request.urlopen(f"{url}/_emulator/state", timeout=120) as answer:  # noqa: S310
        state = orjson.loads(answer.read())
    doubled, missing = exactness(state, run_id, rows, offset) if run_id else (0, 0)
    requests = {route: sum(codes.values()) for route, codes in state["requests"].items()}
    sys.stdout.buffer.write(orjson.dumps({"requests": requests, "doubled": doubled, "missing": missing}))


def first_run(emu: Emulator, source: Path, report: Path, sig: signal.Signals, tree: Path | None) -> None:
    """The interrupted ``create``: ``sig`` ``KILL_AFTER`` seconds after its report's header is written."""
    command = [
        sys.executable, "-m", "orchestrator", "create", str(source), "--endpoint", emu.url,
        "--project-id", PROJECT, "--report", str(report), *OPTIONS,
    ]  # fmt: skip
    options = tree_options(tree)
    process = subprocess.Popen(
        command,
        env={**options.get("env", os.environ), **AKSK_ENV},
        cwd=options.get("cwd"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while process.poll() is None and not first_line(report):
        time.sleep(0.02)
    time.sleep(KILL_AFTER)
    process.send_signal(sig)
    process.wait(timeout=120)


def first_line(report: Path) -> bytes:
    """The report's first line once it is whole (the run's header), else ``b""``; not the whole file."""
    if not report.exists():
        return b""
    with report.open("rb") as handle:
        line = handle.readline()
    return line if line.endswith(b"\n") else b""


def report_counts(report: Path) -> tuple[int, int]:
    """(rows with a final record, rows sent without one) in a report left by an interrupted run."""
    final: set[int] = set()
    sending: set[int] = set()
    for line in report.read_bytes().splitlines()[1:]:
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # a line cut by the kill
        (sending if record.get("outcome") == "sending" else final).add(record["row"])
    return len(final), len(sending - final)


def exactness(state: dict[str, Any], run_id: str, source_rows: int, offset: int) -> tuple[int, int]:
    """(disks with two or more live snapshots of the run, disks with none) in the emulator's state."""
    live = Counter(
        str(snapshot["volume_id"]).lower()
        for snapshot in state["snapshots"]
        if (snapshot.get("metadata") or {}).get("evs_snapshot_run") == run_id
        and snapshot["status"] not in ("deleting", "error_deleting")
    )
    volumes = {str(uuid.UUID(int=offset + index + 1, version=4)) for index in range(source_rows)}
    return sum(1 for count in live.values() if count > 1), len(volumes - set(live))


def fresh(rows: int, offset: int, tree: Path | None) -> tuple[float, float]:
    """Wall and CPU seconds of an uninterrupted ``create`` of ``rows`` rows on a fresh emulator, same options."""
    with emulator(*LATENCY) as emu, tempfile.TemporaryDirectory() as folder:
        measured = create(emu.url, manifest(rows, offset), Path(folder) / "r.jsonl", *OPTIONS, tree=tree)
    if measured.returncode != 0:
        raise SystemExit(f"the fresh run exited {measured.returncode}: {measured.stderr.decode()[-400:]}")
    return measured.seconds, measured.cpu_seconds


def once(rows: int, name: str, offset: int, tree: Path | None, timeout: float | None) -> Result:
    """One interrupted run, its resume, and a fresh run of as many rows as the resume sent."""
    source = manifest(rows, offset)
    with emulator(*LATENCY) as emu, tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "r.jsonl"
        first_run(emu, source, report, SIGNALS[name], tree)
        recorded, in_flight = report_counts(report)
        before = Counter(digest(emu)["requests"])
        resumed = create(emu.url, source, report, *OPTIONS, "--resume", tree=tree, timeout=timeout)
        finished = resumed.returncode in (0, 1)
        if not finished and not (timeout is not None and resumed.seconds >= timeout):
            raise SystemExit(f"the resume exited {resumed.returncode}: {resumed.stderr.decode()[-400:]}")
        run_id = orjson.loads(first_line(report))["run_id"]
        after = digest(emu, run_id, rows, offset)
        sent = Counter(after["requests"]) - before
        sweep = None
        if finished:
            summary = summary_of(report)
            sweep = (summary.get("phases") or {}).get("sweep", {}).get("seconds")
            kinds = summary.get("requests_by_kind", {})
            lookups, lists = str(kinds.get("lookups", 0)), str(kinds.get("lists", 0))
        else:  # no summary: the emulator's counts (a lookup and a list share the route)
            lookups = f"{sent[LIST_ROUTE] + sent[GET_ROUTE]} GETs"
            lists = "(in GETs)"
        doubled, missing = after["doubled"], after["missing"]
    creates = sent[CREATE_ROUTE]
    fresh_seconds, fresh_cpu = (
        fresh(creates, offset + 50_000_000, tree) if finished and creates else (None, None)
    )
    return Result(
        rows, name, recorded, in_flight, resumed.seconds, resumed.cpu_seconds, sweep, finished, creates, lookups,
        lists, resumed.peak_rss_mb, fresh_seconds, fresh_cpu, doubled, missing,
    )  # fmt: skip


def line(result: Result) -> list[str]:
    target = None if result.fresh_seconds is None else 1.5 * result.fresh_seconds + WINDOW
    return [
        f"{result.rows:,}",
        f"SIG{result.signal.upper()}",
        f"{result.recorded:,} / {result.in_flight:,}",
        f"{result.seconds:.1f} ({result.cpu_seconds:.1f})"
        if result.finished
        else f"did not finish in {result.seconds:.0f} s ({result.cpu_seconds:.1f})",
        "" if result.sweep_seconds is None else f"{result.sweep_seconds:.1f}",
        f"{result.creates:,}",
        result.lookups,
        result.lists,
        f"{result.peak_rss_mb:.1f}",
        ""
        if result.fresh_seconds is None
        else f"{result.fresh_seconds:.1f} ({result.fresh_cpu_seconds:.1f})",
        "" if result.fresh_seconds is None else f"{result.seconds / result.fresh_seconds:.2f}",
        "" if not result.fresh_cpu_seconds else f"{result.cpu_seconds / result.fresh_cpu_seconds:.2f}",
        "" if target is None else f"{target:.1f} ({'met' if result.seconds <= target else 'missed'})",
        f"{result.doubled} / {result.missing}",
    ]


def run(
    repeats: int = 1,
    sizes: tuple[int, ...] = (20_000, 60_000),
    signals: tuple[str, ...] = ("kill", "term"),
    tree: Path | None = None,
    timeout: float | None = None,
) -> str:
    results = []
    for size_index, rows in enumerate(sizes):
        for signal_index, name in enumerate(signals):
            for repeat in range(repeats):
                offset = (
                    80_000_000 + ((size_index * len(signals) + signal_index) * repeats + repeat) * 100_000
                )
                results.append(once(rows, name, offset, tree, timeout))
                print(" | ".join(line(results[-1])), file=sys.stderr, flush=True)
    return (
        f"### 9. Resuming a large interrupted run: 20 ms latency, concurrency 32, --settle {SETTLE:g}s "
        f"--timeout {TIMEOUT:g} (window {WINDOW:g} s), signal {KILL_AFTER:g} s after the report's header\n\n"
        "Targets: peak RSS under 120 MB at 60,000 rows; the resume within 1.5x a fresh run of the rows it "
        f"sends plus the {WINDOW:g} s window of the rows in flight; exactly one live snapshot of the run "
        "per disk.\n\n"
        + table(
            [
                "rows",
                "signal",
                "recorded / in flight at the stop",
                "resume s (CPU s)",
                "of which the sweep s",
                "creates sent",
                "lookups",
                "list requests",
                "peak RSS MB",
                "fresh run of the creates s (CPU s)",
                "resume / fresh: wall",
                "CPU",
                "target s",
                "disks doubled / missing",
            ],
            [line(result) for result in results],
        )
    )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.resume")
    parser.add_argument(
        "--rows", type=int, action="append", help="rows (repeatable; default 20000 and 60000)"
    )
    parser.add_argument("--signal", choices=list(SIGNALS), action="append", help="default: both")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--tree", type=Path, default=None, help="run evs-snapshot from this checkout")
    parser.add_argument("--timeout", type=float, default=None, help="kill a resume after this many seconds")
    args = parser.parse_args(argv)
    print(
        run(
            args.repeats,
            tuple(args.rows or (20_000, 60_000)),
            tuple(args.signal or SIGNALS),
            args.tree.resolve() if args.tree else None,
            args.timeout,
        )
    )


if __name__ == "__main__":
    main(sys.argv[1:])
