"""Prometheus text-format metrics of a run, written atomically for node_exporter's textfile collector.

The one writer of ``--metrics-file`` for every command: each metric has one name and one help text here.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.tally import Tally

PREFIX = "evs_snapshot"
LAST_SUCCESS = f"{PREFIX}_last_success_timestamp_seconds"


Family = tuple[str, str, list[str]]  # name, help text, samples


def tally_families(tally: Tally, *, command: str, throttled: int, also: Counter[str]) -> list[Family]:
    """The series a run's tally gives: a create run's rows, requests and phases, or an action run's
    snapshots (or rows) by outcome, plus ``also`` (outcomes counted without a record: prune's kept);
    both, the requests by kind and the run's duration."""
    label = f'command="{command}"'
    by_kind: Family = (
        f"{PREFIX}_requests_by_kind",
        "Requests the last run sent, by kind (creates, lookups, polls, checks, lists, deletes, ...).",
        [f'{PREFIX}_requests_by_kind{{{label},kind="{k}"}} {n}' for k, n in sorted(tally.requests.items())],
    )
    duration: Family = (
        f"{PREFIX}_run_duration_seconds",
        "Wall time of the last run, from start to exit.",
        [f"{PREFIX}_run_duration_seconds{{{label}}} {tally.elapsed:.3f}"],
    )
    if not tally.counting.rows:
        outcomes = tally.outcomes + also
        return [
            (
                f"{PREFIX}_snapshots",
                "Snapshots the last run acted on (or kept; rollback: its rows), by outcome.",
                [f'{PREFIX}_snapshots{{{label},outcome="{o}"}} {n}' for o, n in sorted(outcomes.items())],
            ),
            by_kind,
            duration,
        ]
    families: list[Family] = [
        (
            f"{PREFIX}_rows",
            "Rows of the last run by current outcome.",
            [f'{PREFIX}_rows{{{label},outcome="{o}"}} {n}' for o, n in sorted(tally.outcomes.items())],
        ),
        (
            f"{PREFIX}_requests",
            "Create requests the last run sent (attempts).",
            [f"{PREFIX}_requests{{{label}}} {tally.requests.get('creates', tally.attempts)}"],
        ),
        by_kind,
        (
            f"{PREFIX}_phase_duration_seconds",
            "Wall time of each phase of the last run.",
            [
                f'{PREFIX}_phase_duration_seconds{{{label},phase="{p}"}} {s:.3f}'
                for p, s in tally.phases.items()
            ],
        ),
        (
            f"{PREFIX}_throttled_requests",
            "Requests of the last run answered 429 / APIGW.0308.",
            [f"{PREFIX}_throttled_requests{{{label}}} {throttled}"],
        ),
        duration,
    ]
    if tally.duplicates:
        families.append(
            (
                f"{PREFIX}_duplicates",
                "Extra snapshots of the last run found by the sweep, by what was done.",
                [
                    f'{PREFIX}_duplicates{{{label},outcome="{o}"}} {n}'
                    for o, n in sorted(tally.duplicates.items())
                ],
            )
        )
    return families


def audit_families(*, volumes: int, missing: int, groups_incomplete: int) -> list[Family]:
    """The series of an audit: the disks it checked, those without a recent snapshot of the tool, and
    the incomplete snapshot groups."""
    label = 'command="audit"'
    return [
        (
            f"{PREFIX}_audit_volumes",
            "Disks the last audit checked.",
            [f"{PREFIX}_audit_volumes{{{label}}} {volumes}"],
        ),
        (
            f"{PREFIX}_audit_volumes_missing",
            "Disks without an available snapshot of the tool younger than --max-age (last audit).",
            [f"{PREFIX}_audit_volumes_missing{{{label}}} {missing}"],
        ),
        (
            f"{PREFIX}_audit_groups_incomplete",
            "Newest snapshot groups of a server without a member of one of its disks (last audit).",
            [f"{PREFIX}_audit_groups_incomplete{{{label}}} {groups_incomplete}"],
        ),
    ]


def render(families: list[Family], *, command: str, exit_code: int, previous_success: float | None) -> str:
    """The metrics text of one command: its ``families``, then the exit code, when the run ended and
    (``previous_success`` carries the last good run's time) when a run last ended with exit code 0."""
    now = time.time()
    last_success = now if exit_code == 0 else previous_success
    label = f'command="{command}"'
    every = [
        *families,
        (
            f"{PREFIX}_exit_code",
            "Exit code of the last run (0 = every row succeeded).",
            [f"{PREFIX}_exit_code{{{label}}} {exit_code}"],
        ),
        (
            f"{PREFIX}_last_run_timestamp_seconds",
            "When the last run ended (Unix time).",
            [f"{PREFIX}_last_run_timestamp_seconds{{{label}}} {now:.3f}"],
        ),
    ]
    if last_success is not None:
        every.append(
            (
                LAST_SUCCESS,
                "When a run last ended with exit code 0 (Unix time).",
                [f"{LAST_SUCCESS}{{{label}}} {last_success:.3f}"],
            )
        )
    return render_families(every)


def render_families(families: list[Family]) -> str:
    lines = []
    for name, help_text, samples in families:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", *samples]
    return "\n".join(lines) + "\n"


def merge(existing: str, new: str, command: str) -> str:
    """``new`` plus the samples of other commands already in the file (one file serves create and wait)."""
    label = f'command="{command}"'
    kept: dict[str, list[str]] = {}
    helps: dict[str, list[str]] = {}
    for line in existing.splitlines():
        if line.startswith("# "):
            name = line.split()[2] if len(line.split()) > 2 else ""
            helps.setdefault(name, []).append(line)
        elif line and label not in line:
            name = line.split("{", 1)[0].split(" ", 1)[0]
            kept.setdefault(name, []).append(line)
    out: list[str] = []
    for line in new.splitlines():
        out.append(line)
        if line.startswith("# TYPE "):
            out += kept.pop(line.split()[2], [])
    for name, samples in kept.items():
        out += helps.get(name, []) + samples
    return "\n".join(out) + "\n"


def previous_success(text: str, command: str) -> float | None:
    """The last-success timestamp an earlier run of ``command`` wrote to this file, if any."""
    match = re.search(rf'^{LAST_SUCCESS}{{command="{command}"}} ([0-9.eE+]+)$', text, flags=re.MULTILINE)
    return float(match.group(1)) if match else None


def write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path`` and rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.urandom(4).hex()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def write_families(path: Path, families: list[Family], *, command: str, exit_code: int) -> None:
    """Write ``command``'s series into the file, keeping other commands' series already there."""
    try:
        existing = path.read_text(encoding="utf-8") if path.is_file() else ""
    except (OSError, UnicodeDecodeError):
        existing = ""
    text = render(
        families, command=command, exit_code=exit_code, previous_success=previous_success(existing, command)
    )
    write_atomically(path, merge(existing, text, command).encode())
