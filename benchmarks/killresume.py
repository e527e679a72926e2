"""Scenario 8: a killed run and its resume under late commits, at full size (the tests run it smaller).

300 rows against an emulator that answers 30% of creates 504 and commits them 1.5 s later, drops 10%
of connections after the snapshot is recorded, and answers after 100 ms; ``--settle 2s``,
concurrency 16. The first run gets SIGTERM after 1.2 s, then ``create --resume`` finishes the job.
Target: no disk with two live snapshots of the run, 3 s after the resume ends (every late commit has
landed by then). Before the settle window was timed from the uncertain answer (it ran from before the
request waited for a slot), the same runs left 14-23 disks doubled.

``python -m benchmarks.killresume [--repeats N] [--tree PATH]`` prints the table.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import orjson

from benchmarks.common import AKSK_ENV, PROJECT, create, emulator, manifest, table, tree_options

ROWS = 300
FAULTS = (
    "--fault-late-commit", "0.3", "--late-commit-seconds", "1.5", "--fault-drop-after", "0.1",
    "--latency-ms", "100", "--seed", "5",
)  # fmt: skip
OPTIONS = ("--settle", "2s", "--concurrency", "16")


def once(tree: Path | None) -> tuple[int, int, int]:
    """One kill and resume: (disks doubled, creates sent, rows accepted)."""
    with emulator(*FAULTS) as emu, tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "r.jsonl"
        source = manifest(ROWS, 90_500_000)
        command = [
            sys.executable, "-m", "orchestrator", "create", str(source), "--endpoint", emu.url,
            "--project-id", PROJECT, "--report", str(report), *OPTIONS,
        ]  # fmt: skip
        options = tree_options(tree)
        first = subprocess.Popen(
            command,
            env={**options.get("env", os.environ), **AKSK_ENV},
            cwd=options.get("cwd"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1.2)
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=120)
        resumed = create(emu.url, source, report, *OPTIONS, "--resume", tree=tree)
        if resumed.returncode not in (0, 1):
            raise SystemExit(f"the resumed run exited {resumed.returncode}: {resumed.stderr.decode()[-400:]}")
        time.sleep(3.0)
        state = emu.state()
        run_id = orjson.loads(report.read_bytes().splitlines()[0])["run_id"]
    live = Counter(
        snapshot["volume_id"]
        for snapshot in state["snapshots"]
        if (snapshot.get("metadata") or {}).get("evs_snapshot_run") == run_id
        and snapshot["status"] != "deleting"
    )
    creates = sum(state["requests"].get("POST /v2/{project_id}/cloudsnapshots", {}).values())
    return sum(1 for count in live.values() if count > 1), creates, len(live)


def run(repeats: int = 3, tree: Path | None = None) -> str:
    results = [once(tree) for _ in range(repeats)]
    return (
        f"### 8. A killed run and its resume: {ROWS} rows, 30% late commits (1.5 s), 10% dropped answers, "
        "SIGTERM at 1.2 s (target: no disk doubled)\n\n"
        + table(
            ["run", "disks with two live snapshots", "create requests", "disks with a snapshot"],
            [
                [str(index + 1), str(doubled), str(creates), str(disks)]
                for index, (doubled, creates, disks) in enumerate(results)
            ],
        )
    )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.killresume")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tree", type=Path, default=None, help="run evs-snapshot from this checkout")
    args = parser.parse_args(argv)
    print(run(args.repeats, args.tree.resolve() if args.tree else None))


if __name__ == "__main__":
    main(sys.argv[1:])
