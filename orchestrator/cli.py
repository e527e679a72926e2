"""The ``evs-snapshot`` command line: options -> settings -> one async entry point -> exit code.

Imports of the jobs happen inside the commands, so ``--help`` and cron start-up stay fast.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn

import anyio
import click

from orchestrator import __version__, defaults
from orchestrator.console import Console
from orchestrator.errors import EvsSnapshotError

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def first_error(exc: BaseException) -> EvsSnapshotError | None:
    """Our error inside (possibly nested) task-group exception groups, if there is one."""
    if isinstance(exc, EvsSnapshotError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = first_error(inner)
            if found is not None:
                return found
    return None


def run(entry: Callable[[], Awaitable[int]], console: Console | None = None) -> NoReturn:
    """Run one async entry point and exit with its code; the only place errors become exit codes."""
    console = console or Console(sys.stderr)
    try:
        code = anyio.run(entry)
    except KeyboardInterrupt:
        sys.exit(130)
    except BaseException as exc:
        error = first_error(exc)
        if error is None:
            raise
        console.error(str(error), exit_code=error.exit_code)
        sys.exit(error.exit_code)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="evs-snapshot")
def main() -> None:
    """Create Huawei Cloud EVS snapshots in bulk: never twice, never silently skipped."""


def apply(*decorators: Decorator) -> Decorator:
    """Stack click options in reading order."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return decorate


def duration(_ctx: click.Context, _param: click.Parameter, value: str | None) -> float | None:
    """``90``, ``90s``, ``15m``, ``2h`` or ``1h30m`` as seconds."""
    if value is None:
        return None
    match = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?", value.strip())
    if not value.strip() or match is None:
        raise click.BadParameter("use a duration such as 90, 90s, 15m, 2h or 1h30m")
    hours, minutes, seconds = (float(part) if part else 0.0 for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def probability(_ctx: click.Context, _param: click.Parameter, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise click.BadParameter("must be between 0 and 1")
    return value


MANIFEST_OPTIONS = apply(
    click.argument("manifest"),
    click.option(
        "--format",
        "manifest_format",
        type=click.Choice(["csv", "json", "jsonl"]),
        help="Manifest format (default: from the extension; required for -).",
    ),
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
        help="Metadata for every snapshot (repeatable); a row's own metadata wins.",
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

CONNECTION_OPTIONS = apply(
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
        type=click.FloatRange(min=0.1),
        help="Seconds one request may take.",
    ),
    click.option(
        "--max-rps",
        type=click.FloatRange(min=0.01),
        default=None,
        help="Cap on request starts per second per endpoint (adapts lower on throttling).",
    ),
)

CLOSING_OPTIONS = apply(
    click.option(
        "--summary-json",
        type=click.Path(path_type=Path, dir_okay=False),
        help="Also write the summary as JSON (atomically).",
    ),
    click.option(
        "--metrics-file",
        type=click.Path(path_type=Path, dir_okay=False),
        help="Write Prometheus text-format metrics at the end (atomically), for node_exporter.",
    ),
    click.option(
        "--log-format",
        type=click.Choice(["human", "json"]),
        default="human",
        show_default=True,
        help="stderr as human lines or one JSON event per line.",
    ),
)

WAIT_OPTIONS = apply(
    click.option(
        "--wait-timeout",
        callback=duration,
        default=f"{defaults.WAIT_TIMEOUT:g}s",
        show_default=True,
        help="How long to wait for snapshots to settle (90s, 15m, 2h; no built-in cap).",
    ),
    click.option(
        "--poll-interval",
        default=defaults.POLL_INTERVAL,
        show_default=True,
        type=click.FloatRange(min=0.05),
        help="First pause between poll rounds, seconds (grows by half up to 60).",
    ),
)


def connection(options: dict[str, Any]) -> Any:
    """A ``config.Connection`` from the shared connection options and the environment."""
    from orchestrator import config  # noqa: PLC0415 - keeps --help fast
    from orchestrator.api.credentials import environment  # noqa: PLC0415

    environ = environment()
    endpoint, iam_endpoint = options["endpoint"], options["iam_endpoint"]
    return config.Connection(
        endpoints=config.Endpoints(
            evs=config.parse_endpoint(endpoint, option="--endpoint") if endpoint else None,
            regions=config.region_overrides(environ),
            iam=config.parse_endpoint(iam_endpoint, option="--iam-endpoint") if iam_endpoint else None,
            home_region=config.check_region(options["region"], option="--region"),
            ca_bundle=options["ca_bundle"],
        ),
        limits=config.Limits(concurrency=options["concurrency"], timeout=options["timeout"]),
        auth_kind=options["auth_kind"],
        token_file=options["token_file"],
        max_rps=options["max_rps"],
        environ=environ,
    )


def row_defaults(options: dict[str, Any]) -> Any:
    from orchestrator import config  # noqa: PLC0415 - keeps --help fast

    return config.RowDefaults(
        name_template=options["name_template"],
        description=options["description"],
        metadata=config.parse_metadata_options(options["metadata_items"]),
        force=options["force"],
        project_id=config.check_project_id(options["project_id"], option="--project-id"),
        region=config.check_region(options["region"], option="--region"),
    )


def closing(options: dict[str, Any]) -> Any:
    from orchestrator.finish import Closing  # noqa: PLC0415

    return Closing(summary_json=options["summary_json"], metrics_file=options["metrics_file"])


def wait_plan(options: dict[str, Any]) -> Any:
    from orchestrator.waiter import WaitPlan  # noqa: PLC0415

    return WaitPlan(timeout=options["wait_timeout"], interval=options["poll_interval"])


@main.command()
@MANIFEST_OPTIONS
@CONNECTION_OPTIONS
@click.option(
    "--report",
    "report_path",
    default=None,
    help="Report path, or - for standard output.  [default: reports/evs-snapshot-{datetime}.jsonl]",
)
@click.option(
    "--resume", is_flag=True, help="Continue the run in --report: skip finished rows, look up uncertain ones."
)
@click.option(
    "--lock-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Lock held for the whole run; a second run exits 75.  [default: the report path + .lock]",
)
@click.option(
    "--max-attempts",
    default=defaults.MAX_ATTEMPTS,
    show_default=True,
    type=click.IntRange(1, 100),
    help="Create requests per row at most.",
)
@click.option(
    "--backoff-initial",
    default=defaults.BACKOFF_INITIAL,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Ceiling of the first retry wait, seconds (full jitter, doubling each retry).",
)
@click.option(
    "--backoff-max",
    default=defaults.BACKOFF_MAX,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Largest retry wait, seconds.",
)
@click.option(
    "--deadline",
    callback=duration,
    default=None,
    help="Time for the whole run (90s, 15m, 2h); rows not sent by then end failed with DEADLINE_EXCEEDED.",
)
@click.option("--dry-run", is_flag=True, help="Validate and write planned records; send nothing.")
@click.option(
    "--wait",
    "wait_for_snapshots",
    is_flag=True,
    help="After creating, wait until every snapshot is available or error (see wait).",
)
@WAIT_OPTIONS
@click.option(
    "--progress/--no-progress", default=None, help="Progress line.  [default: on when stderr is a terminal]"
)
@CLOSING_OPTIONS
@click.option(
    "--emulator",
    "use_emulator",
    is_flag=True,
    help="Start an in-process emulator seeded with the manifest's volumes and use it (demo mode).",
)
def create(**options: Any) -> NoReturn:
    """Create one snapshot per manifest row and write a JSON-lines report."""
    from orchestrator.commands.create import CreateSettings  # noqa: PLC0415
    from orchestrator.commands.create import create as create_job  # noqa: PLC0415
    from orchestrator.manifest import ManifestSource  # noqa: PLC0415
    from orchestrator.models import utc_now  # noqa: PLC0415
    from orchestrator.retry import RetryPolicy  # noqa: PLC0415

    console = Console(sys.stderr, json=options["log_format"] == "json")

    async def entry() -> int:
        progress = options["progress"]
        settings = CreateSettings(
            source=ManifestSource.of(options["manifest"], options["manifest_format"]),
            report=options["report_path"] or f"reports/evs-snapshot-{utc_now():%Y%m%dT%H%M%SZ}.jsonl",
            defaults=row_defaults(options),
            connection=connection(options),
            closing=closing(options),
            dry_run=options["dry_run"],
            progress=sys.stderr.isatty() if progress is None else progress,
            emulator=options["use_emulator"],
            resume=options["resume"],
            lock_file=options["lock_file"],
            policy=RetryPolicy(
                max_attempts=options["max_attempts"],
                initial_wait=options["backoff_initial"],
                max_wait=options["backoff_max"],
            ),
            deadline=options["deadline"],
            wait=wait_plan(options) if options["wait_for_snapshots"] else None,
        )
        return await create_job(settings, console=console)

    run(entry, console)


@main.command()
@click.argument("report", type=click.Path(path_type=Path, dir_okay=False))
@CONNECTION_OPTIONS
@WAIT_OPTIONS
@click.option(
    "--lock-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Lock held while waiting.  [default: the report path + .lock]",
)
@CLOSING_OPTIONS
def wait(**options: Any) -> NoReturn:
    """Poll the snapshots a report accepted until each is available or error; append their final states."""
    from orchestrator.commands.wait import WaitSettings  # noqa: PLC0415
    from orchestrator.commands.wait import wait as wait_job  # noqa: PLC0415

    console = Console(sys.stderr, json=options["log_format"] == "json")

    async def entry() -> int:
        settings = WaitSettings(
            report=options["report"],
            connection=connection(options),
            plan=wait_plan(options),
            closing=closing(options),
            lock_file=options["lock_file"],
        )
        return await wait_job(settings, console=console)

    run(entry, console)


@main.command()
@MANIFEST_OPTIONS
@click.option(
    "--online", is_flag=True, help="Also check each volume against the API (GETs only; nothing is created)."
)
@CONNECTION_OPTIONS
@click.option(
    "--log-format",
    type=click.Choice(["human", "json"]),
    default="human",
    show_default=True,
    help="stderr as human lines or one JSON event per line.",
)
def validate(**options: Any) -> NoReturn:
    """Check a manifest (offline, or --online against the API) without creating anything."""
    from orchestrator.commands.validate import ValidateSettings  # noqa: PLC0415
    from orchestrator.commands.validate import validate as validate_job  # noqa: PLC0415
    from orchestrator.manifest import ManifestSource  # noqa: PLC0415

    console = Console(sys.stderr, json=options["log_format"] == "json")

    async def entry() -> int:
        settings = ValidateSettings(
            source=ManifestSource.of(options["manifest"], options["manifest_format"]),
            defaults=row_defaults(options),
            online=connection(options) if options["online"] else None,
        )
        return await validate_job(settings, console=console, stdout=sys.stdout)

    run(entry, console)


@main.command()
@click.argument("report", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def summary(report: Path, as_json: bool) -> NoReturn:
    """Summarize a report (last record per row): outcomes, error codes, slowest rows, rows to retry."""
    from orchestrator.commands.summary import summary as summary_job  # noqa: PLC0415

    async def entry() -> int:
        return summary_job(report, as_json=as_json, stdout=sys.stdout)

    run(entry)


def _register() -> None:
    from orchestrator.commands import emulator  # noqa: PLC0415 - commands register after the group exists

    main.add_command(emulator.command)


_register()
