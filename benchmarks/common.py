"""Helpers shared by the benchmark scenarios: manifests, the emulator as a process, measured children, tables."""

from __future__ import annotations

import compileall
import contextlib
import functools
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

WORK = Path(__file__).parent / ".work"
PROJECT = "0123456789abcdef0123456789abcdef"
AKSK_ENV = {
    "HUAWEICLOUD_SDK_AK": "EMULATORAK0000000000",
    "HUAWEICLOUD_SDK_SK": "emulator-secret-key-0000000000000000000000",
    "OS_AUTH_TOKEN": "",
}


def manifest(rows: int, offset: int = 0) -> Path:
    """A CSV manifest of ``rows`` distinct volumes starting at ``offset`` (cached under benchmarks/.work)."""
    WORK.mkdir(exist_ok=True)
    path = WORK / f"manifest-{rows}-{offset}.csv"
    if not path.exists():
        with path.open("w", encoding="utf-8") as handle:
            handle.write("volume_id,description\n")
            for index in range(rows):
                handle.write(f"{uuid.UUID(int=offset + index + 1, version=4)},bench row {index}\n")
    return path


@dataclass(frozen=True)
class Measured:
    seconds: float
    peak_rss_mb: float
    cpu_seconds: float
    returncode: int
    stdout: bytes
    stderr: bytes


def run_measured(
    args: Sequence[str],
    env: dict[str, str] | None = None,
    *,
    cwd: Path | None = None,
    timeout: float | None = None,
) -> Measured:
    """Run one child process; its wall time, peak RSS and CPU time (from wait4), and its output.

    ``cwd`` is the checkout whose code runs (``None``: this one); its bytecode is written first.
    A child still running after ``timeout`` seconds is killed (SIGKILL: its return code is -9).
    The peak RSS is never below this process's own peak so far (Linux carries the larger of the two
    across the child's exec): a scenario that measures memory keeps its own process small.
    """
    precompile(cwd)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(
            list(args), stdout=out, stderr=err, env={**os.environ, **(env or {})}, cwd=cwd
        )
        timer = None if timeout is None else threading.Timer(timeout, process.kill)
        if timer is not None:
            timer.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            if timer is not None:
                timer.cancel()
        elapsed = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Measured(
            elapsed,
            usage.ru_maxrss / 1024,
            usage.ru_utime + usage.ru_stime,
            process.returncode,
            out.read(),
            err.read(),
        )


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator", *args]


@functools.cache
def precompile(tree: Path | None = None) -> None:
    """Write the bytecode of ``orchestrator`` (of ``tree``, or this checkout) once, as an install would.

    pip compiles a package it installs, and the contenders' libraries were; an editable checkout run
    with ``PYTHONDONTWRITEBYTECODE=1`` would otherwise compile every module from source in every
    process (about 50 ms of CPU each). A module edited after this call is compiled from source again.
    """
    root = (tree or Path(__file__).parent.parent) / "orchestrator"
    compileall.compile_dir(root, quiet=1, force=False)


def tree_options(tree: Path | None) -> dict[str, Any]:
    """``Popen`` keywords that run ``python -m orchestrator`` from another checkout (``None``: this one)."""
    if tree is None:
        return {}
    return {"cwd": tree, "env": {**os.environ, "PYTHONPATH": str(tree)}}


def dry_run(path: Path, folder: str) -> list[str]:
    """The command line of ``create --dry-run`` on ``path``, its report in ``folder``."""
    return cli(
        "create",
        str(path),
        "--dry-run",
        "--project-id",
        PROJECT,
        "--region",
        "cn-north-4",
        "--report",
        str(Path(folder) / "r.jsonl"),
    )


def process_cpu(pid: int) -> float:
    """CPU seconds a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Emulator:
    """The emulator as its own process (so its CPU is not the client's)."""

    def __init__(self, process: subprocess.Popen[bytes], url: str) -> None:
        self.process = process
        self.url = url

    def cpu(self) -> float:
        return process_cpu(self.process.pid)

    def state(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/_emulator/state", timeout=60) as answer:  # noqa: S310
            state: dict[str, Any] = orjson.loads(answer.read())
        return state


@contextlib.contextmanager
def emulator(*options: str) -> Iterator[Emulator]:
    """This checkout's emulator (``--any-volume``) as a process."""
    precompile()
    with _server(cli("emulator", "--any-volume", *options)) as server:
        yield server


@contextlib.contextmanager
def null_server(*options: str) -> Iterator[Emulator]:
    """A server that answers every create 202 at once (``benchmarks.nullserver``) as a process."""
    with _server([sys.executable, "-m", "benchmarks.nullserver", *options]) as server:
        yield server


@contextlib.contextmanager
def _server(command: list[str]) -> Iterator[Emulator]:
    """A server process that prints its URL as the last word of its first line; SIGTERM at the end."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().decode().split()[-1]
        yield Emulator(process, url)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()


def create(
    url: str,
    path: Path,
    report: Path,
    *extra: str,
    env: dict[str, str] | None = None,
    prefix: Sequence[str] = (),
    tree: Path | None = None,
    timeout: float | None = None,
) -> Measured:
    """``evs-snapshot create`` as a process, AK/SK signing, report and summary JSON written.

    ``prefix`` goes between the interpreter and ``-m orchestrator`` (``-m cProfile -o FILE``, say);
    ``timeout``: see ``run_measured``.
    """
    options = tree_options(tree)
    return run_measured(
        [
            sys.executable,
            *prefix,
            "-m",
            "orchestrator",
            "create",
            str(path),
            "--endpoint",
            url,
            "--project-id",
            PROJECT,
            "--report",
            str(report),
            "--summary-json",
            str(report.with_suffix(".summary.json")),
            *extra,
        ],
        env={**options.get("env", {}), **AKSK_ENV, **(env or {})},
        cwd=options.get("cwd"),
        timeout=timeout,
    )


def summary_of(report: Path) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(report.with_suffix(".summary.json").read_bytes())
    return data


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float], digits: int = 1) -> str:
    """``median (min-max)`` of repeated runs."""
    return f"{median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
