"""The end of a run: the summary on stderr, the summary JSON, metrics, and the exit code."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator import metrics
from orchestrator.console import Console
from orchestrator.errors import RunAborted, UsageError
from orchestrator.tally import Tally

if TYPE_CHECKING:
    from orchestrator.api.routes import Router


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Closing:
    """Where a run's summary and metrics go besides stderr."""

    summary_json: Path | None = None
    metrics_file: Path | None = None

    def check(self) -> None:
        """Refuse side files that could not be written, before anything is sent (exit 2)."""
        for option, path in (("--summary-json", self.summary_json), ("--metrics-file", self.metrics_file)):
            if path is not None:
                check_writable(path, option)


def check_writable(path: Path, option: str) -> None:
    """Prove that ``path`` can be written atomically (a temporary file beside it, then removed)."""
    from orchestrator.config import file_in_the_way  # noqa: PLC0415

    blocker = file_in_the_way(path)
    if blocker is not None:
        raise UsageError(
            f"{option} {path}: cannot write there ({blocker} is a file, not a directory); choose another path"
        )
    if path.is_dir():
        raise UsageError(f"{option} {path} is a directory; give a file path")
    if path.exists() and not path.is_file():
        # Renaming over a device (/dev/null) would replace it, and reading one (/dev/zero) never ends.
        raise UsageError(f"{option} {path} is not a regular file (a device or a pipe); give a file path")
    probe = path.with_name(f".{path.name}.{secrets.token_hex(4)}.probe")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UsageError(
            f"{option} {path}: cannot write there ({exc.strerror}); choose another path"
        ) from None


def finish(
    tally: Tally,
    closing: Closing,
    *,
    router: Router | None,
    console: Console,
    report: str,
    command: str,
) -> int:
    """Print and write the summary and metrics; exit 3 when a route was closed anywhere."""
    where = "standard output" if report == "-" else report
    data = tally.to_dict()
    console.event("summary", f"{tally.render()}\nreport: {where}", report=where, **data)
    summary_json = closing.summary_json
    if summary_json is not None:
        _write(console, "--summary-json", lambda: metrics.write_atomically(summary_json, tally.to_json()))
    closures = [] if router is None else router.closures()
    for closure in closures:
        console.error(closure.message, code=closure.code)
    code = tally.exit_code
    if closures:
        console.error("stopped sending where noted above; fix the cause and run again with --resume")
        code = RunAborted.exit_code
    if closing.metrics_file is not None:
        throttled = 0 if router is None else router.throttled
        path = closing.metrics_file
        _write(
            console,
            "--metrics-file",
            lambda: metrics.write(path, tally, command=command, exit_code=code, throttled=throttled),
        )
    return code


def _write(console: Console, option: str, write: Callable[[], None]) -> None:
    """Write a side file; failing to is reported but does not change what the run did or its exit code."""
    try:
        write()
    except OSError as exc:
        console.error(f"{option}: cannot write {exc.filename or ''}: {exc.strerror}")
