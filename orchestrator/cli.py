"""The ``evs-snapshot`` command line: options -> settings -> one async entry point -> exit code."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import NoReturn

import anyio
import click

from orchestrator import __version__
from orchestrator.emulator.settings import (
    DEFAULT_AK,
    DEFAULT_DOMAIN,
    DEFAULT_PASSWORD,
    DEFAULT_PROJECT_ID,
    DEFAULT_SK,
    DEFAULT_USER,
    EmulatorSettings,
    read_volumes,
)
from orchestrator.errors import EvsSnapshotError


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


def run(entry: Callable[[], Awaitable[int]]) -> NoReturn:
    """Run one async entry point and exit with its code; the only place errors become exit codes."""
    try:
        code = anyio.run(entry)
    except KeyboardInterrupt:
        sys.exit(130)
    except BaseException as exc:
        error = first_error(exc)
        if error is None:
            raise
        click.echo(f"evs-snapshot: error: {error}", err=True)
        sys.exit(error.exit_code)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="evs-snapshot")
def main() -> None:
    """Create Huawei Cloud EVS snapshots in bulk: never twice, never silently skipped."""


def probability(_ctx: click.Context, _param: click.Parameter, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise click.BadParameter("must be between 0 and 1")
    return value


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=0,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="0 picks a free port.",
)
@click.option("--region", default="cn-north-4", show_default=True, help="The one region it serves.")
@click.option(
    "--project-id", default=DEFAULT_PROJECT_ID, show_default=True, help="The one project it serves."
)
@click.option(
    "--volumes",
    "volumes_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Known volumes: CSV or JSON with volume_id, status, size.",
)
@click.option("--any-volume", is_flag=True, help="Every well-formed UUID is an available disk.")
@click.option("--ak", default=DEFAULT_AK, show_default=True, help="Access key it accepts.")
@click.option("--sk", default=DEFAULT_SK, help="Secret key it accepts (a published demo value by default).")
@click.option("--user", default=DEFAULT_USER, show_default=True, help="IAM user it accepts.")
@click.option("--password", default=DEFAULT_PASSWORD, help="IAM password it accepts (demo value by default).")
@click.option("--domain", default=DEFAULT_DOMAIN, show_default=True, help="IAM domain (account) name.")
@click.option("--token", default=None, help="A fixed token it always accepts.")
@click.option(
    "--token-ttl",
    default=86400.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Lifetime of issued tokens, seconds.",
)
@click.option("--latency-ms", default=0.0, show_default=True, type=click.FloatRange(min=0))
@click.option("--jitter-ms", default=0.0, show_default=True, type=click.FloatRange(min=0))
@click.option(
    "--rate-limit",
    default=None,
    type=click.FloatRange(min=0.001),
    help="Requests per second per tenant; 429 APIGW.0308 beyond it.  [default: off]",
)
@click.option("--burst", default=None, type=click.IntRange(min=1), help="Bucket size.  [default: RPS]")
@click.option("--retry-after", is_flag=True, help="Add Retry-After to 429 answers.")
@click.option("--creating-seconds", default=2.0, show_default=True, type=click.FloatRange(min=0))
@click.option(
    "--fault-5xx",
    default=0.0,
    show_default=True,
    callback=probability,
    help="Share of EVS answers replaced by 500/502/503.",
)
@click.option(
    "--fault-drop-before",
    default=0.0,
    show_default=True,
    callback=probability,
    help="Share of creates dropped before the snapshot is recorded.",
)
@click.option(
    "--fault-drop-after",
    default=0.0,
    show_default=True,
    callback=probability,
    help="Share of creates dropped after the snapshot is recorded.",
)
@click.option(
    "--fault-snapshot-error",
    default=0.0,
    show_default=True,
    callback=probability,
    help="Share of snapshots that end in error.",
)
@click.option("--seed", default=0, show_default=True, help="Seed for every random choice.")
def emulator(volumes_file: Path | None, **options: object) -> NoReturn:
    """Serve the local EVS emulator until SIGINT/SIGTERM (tests, demos, runbook rehearsal)."""
    from orchestrator.emulator.server import serve_forever  # noqa: PLC0415 - keeps --help fast

    volumes = read_volumes(volumes_file) if volumes_file is not None else ()
    settings = EmulatorSettings(volumes=volumes, **options)  # type: ignore[arg-type]
    try:
        anyio.run(serve_forever, settings)
    except OSError as exc:
        click.echo(
            f"evs-snapshot: error: cannot listen on {settings.host}:{settings.port}: {exc.strerror}",
            err=True,
        )
        sys.exit(2)
    sys.exit(0)


def duration(_ctx: click.Context, _param: click.Parameter, value: str | None) -> float | None:
    """``90``, ``90s``, ``15m``, ``2h`` or ``1h30m`` as seconds."""
    if value is None:
        return None
    import re  # noqa: PLC0415

    match = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?", value.strip())
    if not value.strip() or match is None:
        raise click.BadParameter("use a duration such as 90, 90s, 15m, 2h or 1h30m")
    hours, minutes, seconds = (float(part) if part else 0.0 for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds


@main.command()
@click.argument("manifest")
@click.option(
    "--format",
    "manifest_format",
    type=click.Choice(["csv", "json", "jsonl"]),
    help="Manifest format (default: from the extension; required for -).",
)
@click.option(
    "--report",
    "report_path",
    default=None,
    help="Report path, or - for standard output.  [default: reports/evs-snapshot-{datetime}.jsonl]",
)
@click.option(
    "--concurrency",
    default=32,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="Requests in flight at most.",
)
@click.option(
    "--timeout",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds one request may take.",
)
@click.option(
    "--name-template",
    default="pre-maint-{date}-{volume_id}",
    show_default=True,
    help="Snapshot name when a row has none: {volume_id} {row} {run_id} {date} {datetime} {column}.",
)
@click.option("--description", default=None, help="Snapshot description when a row has none.")
@click.option(
    "--metadata",
    "metadata_items",
    multiple=True,
    metavar="KEY=VALUE",
    help="Metadata for every snapshot (repeatable); a row's metadata wins.",
)
@click.option(
    "--force/--no-force",
    default=False,
    show_default=True,
    help="Snapshot in-use disks when a row does not say.",
)
@click.option(
    "--project-id",
    default=None,
    envvar="HUAWEICLOUD_SDK_PROJECT_ID",
    help="Project of rows without project_id.  [env: HUAWEICLOUD_SDK_PROJECT_ID]",
)
@click.option(
    "--region",
    default=None,
    envvar="OS_REGION_NAME",
    help="Region of rows without region.  [env: OS_REGION_NAME]",
)
@click.option("--endpoint", default=None, help="EVS URL (default: https://evs.{region}.myhuaweicloud.com).")
@click.option(
    "--ca-bundle",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Extra CA certificates (PEM) to trust.",
)
@click.option(
    "--iam-endpoint",
    default=None,
    envvar="HUAWEICLOUD_SDK_IAM_ENDPOINT",
    help="IAM URL (default: the --region's IAM, else https://iam.myhuaweicloud.com).  "
    "[env: HUAWEICLOUD_SDK_IAM_ENDPOINT]",
)
@click.option(
    "--auth",
    "auth_kind",
    type=click.Choice(["token", "aksk", "password"]),
    help="Force one credential kind (default: the first complete one).",
)
@click.option(
    "--token-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Read the IAM token from this file instead of OS_AUTH_TOKEN.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the run in --report: skip finished rows, look up uncertain ones first.",
)
@click.option(
    "--lock-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Lock held for the whole run; a second run exits 75.  [default: the report path + .lock]",
)
@click.option(
    "--max-rps",
    type=click.FloatRange(min=0.01),
    default=None,
    help="Cap on requests per second per endpoint (adapts lower on throttling).  [default: none]",
)
@click.option(
    "--max-attempts",
    default=8,
    show_default=True,
    type=click.IntRange(1, 100),
    help="Create requests per row at most.",
)
@click.option(
    "--backoff-initial",
    default=0.5,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Ceiling of the first retry wait, seconds (full jitter, doubling each retry).",
)
@click.option(
    "--backoff-max",
    default=30.0,
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
    "--progress/--no-progress",
    default=None,
    help="Progress line.  [default: on when stderr is a terminal]",
)
@click.option(
    "--summary-json",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also write the summary as JSON to this path.",
)
@click.option(
    "--emulator",
    "use_emulator",
    is_flag=True,
    help="Start an in-process emulator seeded with the manifest's volumes and use it (demo mode).",
)
def create(
    manifest: str,
    manifest_format: str | None,
    report_path: str | None,
    concurrency: int,
    timeout: float,
    name_template: str,
    description: str | None,
    metadata_items: tuple[str, ...],
    force: bool,
    project_id: str | None,
    region: str | None,
    endpoint: str | None,
    iam_endpoint: str | None,
    ca_bundle: Path | None,
    auth_kind: str | None,
    token_file: Path | None,
    resume: bool,
    lock_file: Path | None,
    max_rps: float | None,
    max_attempts: int,
    backoff_initial: float,
    backoff_max: float,
    deadline: float | None,
    dry_run: bool,
    progress: bool | None,
    summary_json: Path | None,
    use_emulator: bool,
) -> NoReturn:
    """Create one snapshot per manifest row and write a JSON-lines report."""
    from orchestrator import config  # noqa: PLC0415 - keeps --help fast
    from orchestrator.auth import environment  # noqa: PLC0415
    from orchestrator.create import CreateSettings  # noqa: PLC0415
    from orchestrator.create import create as run_create  # noqa: PLC0415
    from orchestrator.manifest import ManifestSource  # noqa: PLC0415
    from orchestrator.models import utc_now  # noqa: PLC0415
    from orchestrator.retry import RetryPolicy  # noqa: PLC0415

    environ = environment()

    def settings() -> CreateSettings:
        return CreateSettings(
            source=ManifestSource.of(manifest, manifest_format),
            report=report_path or f"reports/evs-snapshot-{utc_now():%Y%m%dT%H%M%SZ}.jsonl",
            defaults=config.RowDefaults(
                name_template=name_template,
                description=description,
                metadata=config.parse_metadata_options(metadata_items),
                force=force,
                project_id=config.check_project_id(project_id, option="--project-id"),
                region=config.check_region(region, option="--region"),
            ),
            limits=config.Limits(concurrency=concurrency, timeout=timeout),
            endpoints=config.Endpoints(
                evs=config.parse_endpoint(endpoint, option="--endpoint") if endpoint else None,
                regions=config.region_overrides(environ),
                iam=config.parse_endpoint(iam_endpoint, option="--iam-endpoint") if iam_endpoint else None,
                home_region=region,
                ca_bundle=ca_bundle,
            ),
            auth_kind=auth_kind,  # type: ignore[arg-type]
            token_file=token_file,
            dry_run=dry_run,
            progress=sys.stderr.isatty() if progress is None else progress,
            summary_json=summary_json,
            emulator=use_emulator,
            environ=environ,
            resume=resume,
            lock_file=lock_file,
            policy=RetryPolicy(max_attempts=max_attempts, initial_wait=backoff_initial, max_wait=backoff_max),
            max_rps=max_rps,
            deadline=deadline,
        )

    async def entry() -> int:
        return await run_create(settings(), stderr=sys.stderr)

    run(entry)
