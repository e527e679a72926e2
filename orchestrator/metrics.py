"""Prometheus text-format metrics of a run, written atomically for node_exporter's textfile collector."""

from __future__ import annotations

import os
import re
import secrets
import time
from pathlib import Path

from orchestrator.models import Summary

PREFIX = "evs_snapshot"
LAST_SUCCESS = f"{PREFIX}_last_success_timestamp_seconds"


def render(
    summary: Summary, *, command: str, exit_code: int, throttled: int, previous_success: float | None
) -> str:
    """The metrics text; ``previous_success`` carries the last good run's time across failed runs."""
    now = time.time()
    last_success = now if exit_code == 0 else previous_success
    lines = [
        f"# HELP {PREFIX}_rows Rows of the last run by current outcome.",
        f"# TYPE {PREFIX}_rows gauge",
    ]
    for outcome, count in sorted(summary.outcomes.items()):
        lines.append(f'{PREFIX}_rows{{command="{command}",outcome="{outcome}"}} {count}')
    lines += [
        f"# HELP {PREFIX}_requests Create requests the last run sent (attempts).",
        f"# TYPE {PREFIX}_requests gauge",
        f'{PREFIX}_requests{{command="{command}"}} {summary.requests}',
        f"# HELP {PREFIX}_throttled_requests Requests of the last run answered 429 / APIGW.0308.",
        f"# TYPE {PREFIX}_throttled_requests gauge",
        f'{PREFIX}_throttled_requests{{command="{command}"}} {throttled}',
        f"# HELP {PREFIX}_run_duration_seconds Wall time of the last run.",
        f"# TYPE {PREFIX}_run_duration_seconds gauge",
        f'{PREFIX}_run_duration_seconds{{command="{command}"}} {summary.elapsed_s:.3f}',
        f"# HELP {PREFIX}_exit_code Exit code of the last run (0 = every row succeeded).",
        f"# TYPE {PREFIX}_exit_code gauge",
        f'{PREFIX}_exit_code{{command="{command}"}} {exit_code}',
        f"# HELP {PREFIX}_last_run_timestamp_seconds When the last run ended (Unix time).",
        f"# TYPE {PREFIX}_last_run_timestamp_seconds gauge",
        f'{PREFIX}_last_run_timestamp_seconds{{command="{command}"}} {now:.3f}',
    ]
    if last_success is not None:
        lines += [
            f"# HELP {LAST_SUCCESS} When a run last ended with every row succeeded (Unix time).",
            f"# TYPE {LAST_SUCCESS} gauge",
            f'{LAST_SUCCESS}{{command="{command}"}} {last_success:.3f}',
        ]
    return "\n".join(lines) + "\n"


def previous_success(path: Path) -> float | None:
    """The last-success timestamp an earlier run wrote to this file, if any."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    match = re.search(rf"^{LAST_SUCCESS}{{[^}}]*}} ([0-9.eE+]+)$", text, flags=re.MULTILINE)
    return float(match.group(1)) if match else None


def write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path`` and rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def write(path: Path, summary: Summary, *, command: str, exit_code: int, throttled: int) -> None:
    text = render(
        summary,
        command=command,
        exit_code=exit_code,
        throttled=throttled,
        previous_success=previous_success(path),
    )
    write_atomically(path, text.encode())
