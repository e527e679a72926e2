"""Scenario 5: waiting. 10,000 snapshots pending in one project; list requests per poll round (target <= 11)."""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

import orjson

from benchmarks.common import create, emulator, manifest, table

ROWS = 10_000


def run() -> str:
    with emulator("--creating-seconds", "20") as emu, tempfile.TemporaryDirectory() as folder:
        measured = create(
            emu.url,
            manifest(ROWS, 80_000_000),
            Path(folder) / "r.jsonl",
            "--wait",
            "--poll-interval",
            "2",
            "--log-format",
            "json",
        )
        state = emu.state()
    if measured.returncode != 0:
        raise SystemExit(f"the waiting run exited {measured.returncode}: {measured.stderr.decode()[-400:]}")
    rounds = [orjson.loads(line) for line in measured.stderr.splitlines() if b'"wait_round"' in line]
    requests = [event["requests"] for event in rounds]
    lists = sum(state["requests"].get("GET /v2/{project_id}/cloudsnapshots/detail", {}).values())
    gets = sum(state["requests"].get("GET /v2/{project_id}/cloudsnapshots/{snapshot_id}", {}).values())
    return (
        f"### 5. Waiting: {ROWS:,} snapshots pending in one project (target: at most 11 requests per poll round)\n\n"
        + table(
            [
                "poll rounds",
                "requests per round: max",
                "median",
                "pending at the first round",
                "list requests in all",
                "single GETs in all",
            ],
            [
                [
                    str(len(rounds)),
                    str(max(requests)),
                    f"{statistics.median(requests):.0f}",
                    str(rounds[0]["pending"]),
                    str(lists),
                    str(gets),
                ]
            ],
        )
    )
