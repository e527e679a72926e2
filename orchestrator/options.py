"""Shared command-line options, grouped: each group turns its options into one typed settings value.

A command declares ``@CONNECTION`` and receives ``connection: Connection``; the group's builder is a
typed function whose parameter names are the option names, so an option renamed in one place and
not the other fails the first time the command runs (every command has a CLI test). Builders run
inside the command, under the one error boundary of ``cli.Main``.

Imports of the run machinery happen inside builders, so ``--help`` and cron start-up stay fast.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import inspect
import math
import re
from collections.abc import Callable, Container, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from orchestrator import config, defaults
from orchestrator.config import Notify, WaitPlan, check_project_id, environment, parse_notify_url
from orchestrator.errors import UsageError
from orchestrator.frame import Closing, record_early_stops
from orchestrator.hookplan import HookPlan
from orchestrator.manifest import ManifestSource
from orchestrator.retry import RetryPolicy
from orchestrator.rules import check_metadata_option_keys, check_metadata_templates, check_template

if TYPE_CHECKING:
    from orchestrator.config import Connection, Notify, RowDefaults, WaitPlan
    from orchestrator.frame import Closing
    from orchestrator.hookplan import HookPlan
    from orchestrator.manifest import ManifestSource
    from orchestrator.retry import RetryPolicy

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def apply(*decorators: Decorator) -> Decorator:
    """Stack click options in reading order."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return decorate


def group(name: str, build: Callable[..., Any], *decorators: Decorator) -> Decorator:
    """Options whose values ``build`` turns into one argument ``name`` of the command."""
    keys = list(inspect.signature(build).parameters)

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(command)
        def wrapper(**options: Any) -> Any:
            values = {key: options.pop(key) for key in keys}
            options[name] = build(**values)
            return command(**options)

        return apply(*decorators)(wrapper)

    return decorate


class Finite(click.ParamType):  # type: ignore[type-arg]
    """A finite number in a range: nan and inf are refused, whatever the bounds."""

    name = "number"

    def __init__(self, minimum: float | None = None, maximum: float | None = None, *, integer: bool = False):
        self.minimum = minimum
        self.maximum = maximum
        self.integer = integer

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        if self.minimum is not None and number < self.minimum:
            self.fail(f"{value} is below the minimum {self.minimum:g}", param, ctx)
        if self.maximum is not None and number > self.maximum:
            self.fail(f"{value} is above the maximum {self.maximum:g}", param, ctx)
        return number


# The longest duration any option takes: beyond it a value is a typo (and datetime arithmetic overflows).
CENTURY = 36525 * 86400.0


class Duration(click.ParamType):  # type: ignore[type-arg]
    """``90``, ``90s``, ``15m``, ``2h``, ``1h30m`` or ``7d`` as seconds, at most ``CENTURY`` (100 years);
    with ``positive``, 0 is refused too (``--deadline 0`` would end the run before it starts)."""

    name = "duration"

    def __init__(self, *, positive: bool = False) -> None:
        self.positive = positive

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            seconds = float(value) if isinstance(value, int | float) else parse_duration(str(value))
        except ValueError as exc:
            self.fail(f"{value!r}: {exc}", param, ctx)
        if self.positive and seconds <= 0:
            self.fail(f"{value!r}: must be longer than 0s", param, ctx)
        if not 0 <= seconds <= CENTURY:
            self.fail(f"{value!r}: must be from 0s to 100 years (36525d)", param, ctx)
        return seconds


def parse_duration(value: str) -> float:
    """Seconds of a duration such as ``90``, ``90s``, ``15m``, ``2h``, ``1h30m`` or ``7d``."""
    text = value.strip()
    match = re.fullmatch(
        r"(?:(\d+(?:\.\d+)?)d)?(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?",
        text,
        flags=re.ASCII,
    )
    if not text or match is None:
        raise ValueError("use a duration such as 90, 90s, 15m, 2h, 1h30m or 7d")
    days, hours, minutes, seconds = (float(part) if part else 0.0 for part in match.groups())
    return days * 86400 + hours * 3600 + minutes * 60 + seconds


class RowRanges:
    """A selection of report rows such as ``3,7-9``, kept as sorted, merged ranges (never expanded).

    Membership is a binary search over the ranges; ``last`` is the highest row chosen, which callers
    check against the report header's ``rows``.
    """

    __slots__ = ("_firsts", "_ranges")

    def __init__(self, ranges: Iterable[tuple[int, int]]) -> None:
        merged: list[tuple[int, int]] = []
        for first, last in sorted(ranges):  # checked by ``parse``, the one maker
            if merged and first <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], last))
            else:
                merged.append((first, last))
        self._ranges = tuple(merged)
        self._firsts = [first for first, _ in merged]

    @classmethod
    def parse(cls, text: str) -> RowRanges:
        """``3,7-9``: row numbers from 1 and ranges that go up; anything else raises ``ValueError``."""
        ranges = []
        for part in text.split(","):
            match = re.fullmatch(r"\s*([0-9]+)\s*(?:-\s*([0-9]+)\s*)?", part, flags=re.ASCII)
            shown = part.strip() if len(part.strip()) <= 40 else part.strip()[:40] + "..."
            if match is None:
                why = f"{shown!r} is not a row or a range" if shown else "an empty part"
                raise ValueError(f"{why}: use row numbers and ranges such as 3,7-9 (both ends given)")
            try:
                first = int(match[1])
                last = int(match[2]) if match[2] is not None else first
            except ValueError:  # more digits than int() reads
                digits = max(len(match[1]), len(match[2] or ""))
                raise ValueError(f"a row number of {digits} digits is not a row") from None
            if first < 1:
                raise ValueError(f"{shown!r}: rows are numbered from 1")
            if last < first:
                raise ValueError(f"{shown!r}: a range must go up (7-9, not 9-7)")
            ranges.append((first, last))
        return cls(ranges)

    @property
    def last(self) -> int:
        return self._ranges[-1][1]

    @property
    def count(self) -> int:
        """How many rows are chosen."""
        return sum(last - first + 1 for first, last in self._ranges)

    def __contains__(self, row: object) -> bool:
        if not isinstance(row, int):
            return False
        index = bisect.bisect_right(self._firsts, row) - 1
        return index >= 0 and row <= self._ranges[index][1]

    def within(self, other: RowRanges) -> bool:
        """Every row chosen here is chosen in ``other`` too (range by range: never expanded)."""
        for first, last in self._ranges:
            index = bisect.bisect_right(other._firsts, first) - 1
            if index < 0 or last > other._ranges[index][1]:
                return False
        return True

    def absent(self, present: Container[int], limit: int) -> list[int]:
        """The first ``limit`` chosen rows not in ``present``, in order; walks at most
        ``limit`` rows beyond those of ``present``, whatever the ranges' size."""
        found: list[int] = []
        for first, last in self._ranges:
            row = first
            while row <= last and len(found) < limit:
                if row not in present:
                    found.append(row)
                row += 1
        return found

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RowRanges) and self._ranges == other._ranges

    def __hash__(self) -> int:
        return hash(self._ranges)

    def __str__(self) -> str:
        return ",".join(str(first) if first == last else f"{first}-{last}" for first, last in self._ranges)

    def __repr__(self) -> str:
        return f"RowRanges({str(self)!r})"


def row_ranges(_ctx: click.Context, _param: click.Parameter, value: str | None) -> RowRanges | None:
    """The click callback of ``--rows``: a ``RowRanges``, or a usage error (exit 2)."""
    if value is None:
        return None
    try:
        return RowRanges.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


DEBUG = click.option(
    "--debug",
    is_flag=True,
    expose_value=False,
    help="Show the traceback of an internal error (also EVS_SNAPSHOT_DEBUG=1).",
)
LOG_FORMAT = click.option(
    "--log-format",
    type=click.Choice(["human", "json"]),
    default="human",
    show_default=True,
    help="stderr as human lines or one JSON event per line.",
)


def _manifest(manifest: str, manifest_format: str | None) -> ManifestSource:

    return ManifestSource.of(manifest, manifest_format)


MANIFEST_FORMAT = click.option(
    "--format",
    "manifest_format",
    type=click.Choice(["csv", "json", "jsonl"]),
    help="Manifest format (default: from the extension; required for -).",
)
MANIFEST = group("source", _manifest, click.argument("manifest"), MANIFEST_FORMAT)


def _optional_manifest(manifest: str | None, manifest_format: str | None) -> ManifestSource | None:
    return None if manifest is None else _manifest(manifest, manifest_format)


OPTIONAL_MANIFEST = group(
    "source", _optional_manifest, click.argument("manifest", required=False), MANIFEST_FORMAT
)


def _rows(
    name_template: str,
    description: str | None,
    metadata_items: tuple[str, ...],
    force: bool,
    project_id: str | None,
) -> RowDefaults:
    check_template(name_template)
    metadata = config.parse_metadata_options(metadata_items)
    check_metadata_option_keys(metadata)
    check_metadata_templates(metadata)
    return config.RowDefaults(
        name_template=name_template,
        description=description,
        metadata=metadata,
        force=force,
        project_id=config.check_project_id(project_id, option="--project-id"),
    )


# The project of manifest rows that do not name one (prune and audit; create's is in ROWS).
PROJECT_OF_ROWS = click.option(
    "--project-id",
    default=None,
    envvar="HUAWEICLOUD_SDK_PROJECT_ID",
    help="Project of rows without project_id.  [env: HUAWEICLOUD_SDK_PROJECT_ID]",
)


ROWS = group(
    "rows",
    _rows,
    click.option(
        "--name-template",
        default=defaults.NAME_TEMPLATE,
        show_default=True,
        help="Name of rows without one: {volume_id} {row} {run_id} {date} {datetime} {column}.",
    ),
    click.option("--description", default=None, help="Description of rows without one."),
    click.option(
        "--metadata",
        "metadata_items",
        multiple=True,
        metavar="KEY=VALUE",
        help="Metadata for every snapshot (repeatable); the value may name columns as --name-template does "
        "({tag:env}, {server_id}; an empty cell leaves the key out); a row's own metadata wins.",
    ),
    click.option(
        "--force/--no-force",
        default=False,
        show_default=True,
        help="Snapshot in-use disks when a row does not say.",
    ),
    click.option(
        "--project-id",
        default=None,
        envvar="HUAWEICLOUD_SDK_PROJECT_ID",
        help="Project of rows without project_id (default: looked up by region).  "
        "[env: HUAWEICLOUD_SDK_PROJECT_ID]",
    ),
)


def _connection(
    region: str | None,
    endpoint: str | None,
    iam_endpoint: str | None,
    ca_bundle: Path | None,
    auth_kind: str | None,
    token_file: Path | None,
    concurrency: int,
    timeout: float,
    max_rps: float | None,
) -> Connection:

    environ = environment()
    return config.Connection(
        endpoints=config.Endpoints(
            evs=config.parse_endpoint(endpoint, option="--endpoint") if endpoint else None,
            regions=config.region_overrides(environ),
            iam=config.parse_endpoint(iam_endpoint, option="--iam-endpoint") if iam_endpoint else None,
            home_region=config.check_region(region, option="--region"),
            ca_bundle=ca_bundle,
        ),
        limits=config.Limits(concurrency=concurrency, timeout=timeout),
        auth_kind=config.check_auth_kind(auth_kind),
        token_file=token_file,
        max_rps=max_rps,
        environ=environ,
    )


CONNECTION = group(
    "connection",
    _connection,
    click.option(
        "--region",
        default=None,
        envvar="OS_REGION_NAME",
        help="Region of rows without one; gives https://evs.{region}.myhuaweicloud.com.  "
        "[env: OS_REGION_NAME]",
    ),
    click.option("--endpoint", default=None, help="EVS URL for every row (plain http only to loopback)."),
    click.option(
        "--iam-endpoint",
        default=None,
        envvar="HUAWEICLOUD_SDK_IAM_ENDPOINT",
        help="IAM URL (default: the --region's IAM, else the global one).  "
        "[env: HUAWEICLOUD_SDK_IAM_ENDPOINT]",
    ),
    click.option(
        "--ca-bundle",
        type=click.Path(path_type=Path, dir_okay=False, exists=True),
        help="Extra CA certificates (PEM) to trust; TLS is always verified.",
    ),
    click.option(
        "--auth",
        "auth_kind",
        type=click.Choice(["token", "aksk", "password"]),
        help="Force one credential kind (default: the first complete one).",
    ),
    click.option(
        "--token-file",
        type=click.Path(path_type=Path, dir_okay=False),
        help="Read the IAM token from this file instead of OS_AUTH_TOKEN.",
    ),
    click.option(
        "--concurrency",
        default=defaults.CONCURRENCY,
        show_default=True,
        type=click.IntRange(1, 1000),
        help="Requests in flight at most.",
    ),
    click.option(
        "--timeout",
        default=defaults.TIMEOUT,
        show_default=True,
        type=Finite(0.1, 3600),
        help="Seconds one request may take.",
    ),
    click.option(
        "--max-rps",
        type=Finite(0.01, 100000),
        default=None,
        help="Cap on request starts per second per endpoint (adapts lower on throttling).",
    ),
)


def _policy(max_attempts: int, backoff_initial: float, backoff_max: float) -> RetryPolicy:

    if backoff_initial > backoff_max:
        source = click.get_current_context().get_parameter_source("backoff_initial")
        if source is click.core.ParameterSource.DEFAULT:  # only --backoff-max was given: it caps both
            return RetryPolicy(max_attempts=max_attempts, initial_wait=backoff_max, max_wait=backoff_max)
        raise UsageError(
            f"--backoff-initial {backoff_initial:g} is above --backoff-max {backoff_max:g}; "
            "the first wait cannot be longer than the longest"
        )
    return RetryPolicy(max_attempts=max_attempts, initial_wait=backoff_initial, max_wait=backoff_max)


RETRIES = group(
    "policy",
    _policy,
    click.option(
        "--max-attempts",
        default=defaults.MAX_ATTEMPTS,
        show_default=True,
        type=click.IntRange(1, 100),
        help="Requests per row at most.",
    ),
    click.option(
        "--backoff-initial",
        default=defaults.BACKOFF_INITIAL,
        show_default=True,
        type=Finite(0, 3600),
        help="Ceiling of the first retry wait, seconds (full jitter, doubling each retry).",
    ),
    click.option(
        "--backoff-max",
        default=defaults.BACKOFF_MAX,
        show_default=True,
        type=Finite(0, 3600),
        help="Largest retry wait, seconds.",
    ),
)


def _notify(ping_url: str | None, webhooks: tuple[str, ...]) -> Notify | None:

    notify = Notify(
        ping_url=None if not ping_url else parse_notify_url(ping_url, option="--ping-url"),
        webhooks=tuple(parse_notify_url(url, option="--webhook") for url in webhooks if url.strip()),
    )
    return notify if notify else None


PING_URL = click.option(
    "--ping-url",
    default=None,
    envvar="EVS_SNAPSHOT_PING_URL",
    metavar="URL",
    help="Ping URL/start when the run starts, URL on exit 0, URL/fail on any other exit (Healthchecks "
    "style; the body is the summary); best effort.  [env: EVS_SNAPSHOT_PING_URL]",
)
WEBHOOK = click.option(
    "--webhook",
    "webhooks",
    multiple=True,
    envvar="EVS_SNAPSHOT_WEBHOOK",
    metavar="URL",
    help="POST a JSON event (command, run id, exit code, summary, report) here at the end (repeatable; in "
    "the environment, URLs separated by spaces); "
    "best effort.  [env: EVS_SNAPSHOT_WEBHOOK]",
)


def _closing(
    summary_json: Path | None, metrics_file: Path | None, ping_url: str | None, webhooks: tuple[str, ...]
) -> Closing:

    closing = Closing(
        summary_json=summary_json, metrics_file=metrics_file, notify=_notify(ping_url, webhooks)
    )
    closing.check()
    ctx = click.get_current_context()  # the command's: a signal from now on writes its code to the side files
    ctx.call_on_close(record_early_stops(closing, str(ctx.info_name)))
    return closing


def _side_files(summary_json: Path | None, metrics_file: Path | None) -> Closing:
    return _closing(summary_json, metrics_file, None, ())


SUMMARY_JSON = click.option(
    "--summary-json",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also write the summary as JSON (atomically).",
)
METRICS_FILE = click.option(
    "--metrics-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write Prometheus text-format metrics at the end (atomically), for node_exporter; "
    "each command keeps its own series in a shared file.",
)
# The end of a command that runs through the run frame: its side files and its notifications.
CLOSING = group("closing", _closing, SUMMARY_JSON, METRICS_FILE, PING_URL, WEBHOOK)
# The side files only (audit: it writes no report and runs outside the frame).
SIDE_FILES = group("closing", _side_files, SUMMARY_JSON, METRICS_FILE)


def _wait_plan(wait_timeout: float, poll_interval: float) -> WaitPlan:

    return WaitPlan(timeout=wait_timeout, interval=poll_interval)


WAITING = group(
    "wait_plan",
    _wait_plan,
    click.option(
        "--wait-timeout",
        type=Duration(),
        default=f"{defaults.WAIT_TIMEOUT:g}s",
        show_default=True,
        help="How long to wait for snapshots to settle (90s, 15m, 2h; up to 100 years).",
    ),
    click.option(
        "--poll-interval",
        default=defaults.POLL_INTERVAL,
        show_default=True,
        type=Finite(0.05, 3600),
        help="First pause between poll rounds, seconds (grows by half up to 60).",
    ),
)


def _hook_plan(
    pre_hook: str | None, post_hook: str | None, hook_per_server: bool, hook_timeout: float
) -> HookPlan:

    plan = HookPlan(pre=pre_hook, post=post_hook, per_server=hook_per_server, timeout=hook_timeout)
    plan.check()
    return plan


HOOKS = group(
    "hook_plan",
    _hook_plan,
    click.option(
        "--pre-hook",
        default=None,
        metavar="CMD",
        help="Shell command run before the first create is sent (a freeze: `ssh HOST fsfreeze -f /data`); "
        "if it fails or times out, the rows are not sent (PRE_HOOK_FAILED).",
    ),
    click.option(
        "--post-hook",
        default=None,
        metavar="CMD",
        help="Shell command run as soon as the creates are answered (a thaw), whatever ended them: "
        "success, failure, a signal, --deadline; if it fails, the exit code is 1.",
    ),
    click.option(
        "--hook-per-server",
        is_flag=True,
        help="Run the hooks once per server (the server_id column select writes), {server_id} in CMD "
        "replaced by the server id; the server's rows wait for its own pre-hook only.",
    ),
    click.option(
        "--hook-timeout",
        type=Duration(positive=True),
        default=f"{defaults.HOOK_TIMEOUT:g}s",
        show_default=True,
        help="Longest run of one hook; then its process group is killed and it counts as failed.",
    ),
)

LOCK_FILE = click.option(
    "--lock-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="One more lock held for the whole run (a file other tools may flock too: one with content of "
    "its own, or that this user may only read, is never changed; an empty writable one names the holder "
    "while held); a second run exits 75. "
    "The manifest's and the run's own locks are always held too.  "
    "[default: none; the own locks are in $EVS_SNAPSHOT_LOCK_DIR, else ~/.cache/evs-snapshot/locks "
    "of the user's home]",
)

# The report of a command acting on snapshots (prune, cleanup, hold, release), its resume, its lock.
ACTION_REPORT = apply(
    click.option(
        "--report",
        "report_path",
        default=None,
        help="Report path, or - for standard output.  "
        "[default: reports/evs-snapshot-COMMAND-{datetime}.jsonl]",
    ),
    click.option(
        "--resume", is_flag=True, help="Continue the run in --report: finished snapshots are skipped."
    ),
    LOCK_FILE,
)

# prune and cleanup: delete for real or plan, wait for the deletions, their report and its resume.
DELETING = apply(
    click.option("--apply", is_flag=True, help="Delete for real; without it, write planned records only."),
    click.option(
        "--wait/--no-wait",
        "wait_for_gone",
        default=True,
        show_default=True,
        help="Wait until each deleted snapshot is gone (deleting, then 404); --no-wait ends at the 202.",
    ),
    click.option(
        "--wait-timeout",
        type=Duration(),
        default="10m",
        show_default=True,
        help="How long to wait for deletions to finish (90s, 15m, 2h).",
    ),
    ACTION_REPORT,
)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class Choice:
    """What ``hold`` and ``release`` were told to act on, and how (``HOLDING``)."""

    source: Path | None
    snapshot_ids: tuple[str, ...]
    rows: RowRanges | None
    volumes: frozenset[str] | None
    project_id: str | None
    apply: bool
    report_path: str | None
    resume: bool
    lock_file: Path | None

    @classmethod
    def of(
        cls,
        *,
        source: Path | None,
        snapshot_ids: tuple[str, ...],
        row_spec: RowRanges | None,
        volume_ids: tuple[str, ...],
        project_id: str | None,
        apply: bool,
        report_path: str | None,
        resume: bool,
        lock_file: Path | None,
    ) -> Choice:
        """The options of ``HOLDING``; a wrong mix is a usage error (exit 2)."""

        if (source is None) == (not snapshot_ids):
            raise UsageError("give a create REPORT or --snapshot ID (one of the two)")
        if source is None and (row_spec is not None or volume_ids):
            raise UsageError(
                "--rows and --volume choose rows of a REPORT; with --snapshot, name the snapshots"
            )
        return cls(
            source=None if source is None else source.resolve(),
            snapshot_ids=tuple(i.strip() for i in snapshot_ids),
            rows=row_spec,
            volumes=frozenset(v.strip().lower() for v in volume_ids) or None,
            project_id=check_project_id(project_id, option="--project-id"),
            apply=apply,
            report_path=report_path,
            resume=resume,
            lock_file=lock_file,
        )


# hold and release: which snapshots (a create report's rows, or --snapshot IDs), plan or apply, report.
HOLDING = group(
    "choice",
    Choice.of,
    click.argument(
        "source", metavar="[REPORT]", required=False, type=click.Path(path_type=Path, dir_okay=True)
    ),
    click.option(
        "--snapshot",
        "snapshot_ids",
        multiple=True,
        metavar="ID",
        help="A snapshot of the tool to act on, instead of a REPORT (repeatable; with --project-id or "
        "--region).",
    ),
    click.option(
        "--rows",
        "row_spec",
        callback=row_ranges,
        default=None,
        metavar="ROWS",
        help="Only the snapshots of these rows of REPORT: 3,7-9 (from 1, ranges with both ends).",
    ),
    click.option(
        "--volume",
        "volume_ids",
        multiple=True,
        metavar="ID",
        help="Only the snapshots of REPORT's rows of this disk (repeatable).",
    ),
    click.option(
        "--project-id",
        default=None,
        envvar="HUAWEICLOUD_SDK_PROJECT_ID",
        help="Project of the --snapshot IDs (default: looked up by region).  "
        "[env: HUAWEICLOUD_SDK_PROJECT_ID]",
    ),
    click.option(
        "--apply", is_flag=True, help="Change the snapshots; without it, write planned records only."
    ),
    ACTION_REPORT,
)
