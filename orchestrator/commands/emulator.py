"""``evs-snapshot emulator``: serve the local EVS emulator (tests, demos, runbook rehearsal)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import anyio
import click

from orchestrator.emulator.seedfiles import read_snapshots, read_volumes
from orchestrator.emulator.settings import (
    DEFAULT_AK,
    DEFAULT_DOMAIN,
    DEFAULT_PASSWORD,
    DEFAULT_PROJECT_ID,
    DEFAULT_SK,
    DEFAULT_USER,
    EmulatorSettings,
)
from orchestrator.errors import UsageError
from orchestrator.options import Finite

DEFAULTS = EmulatorSettings()
SECONDS = Finite(0)
SEED_FILE = click.Path(path_type=Path, dir_okay=False)


def probability(_ctx: click.Context, _param: click.Parameter, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise click.BadParameter("must be between 0 and 1")
    return value


@click.command("emulator")
@click.option("--host", default=DEFAULTS.host, show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=DEFAULTS.port,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on; 0 picks a free port.",
)
@click.option("--region", default=DEFAULTS.region, show_default=True, help="The one region it serves.")
@click.option(
    "--project-id", default=DEFAULT_PROJECT_ID, show_default=True, help="The one project it serves."
)
@click.option(
    "--volumes",
    "volumes_file",
    type=SEED_FILE,
    help="Known volumes: CSV or JSON with volume_id, status, size, name, server_id, device, bootable, "
    "availability_zone, metadata (JSON object), tags (k=v;k2=v2).",
)
@click.option(
    "--snapshots",
    "snapshots_file",
    type=SEED_FILE,
    help="Existing snapshots: CSV or JSON with id, volume_id, name, status, created_at, metadata "
    "(JSON object), project_id.",
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
    default=DEFAULTS.token_ttl,
    show_default=True,
    type=Finite(0.1),
    help="Lifetime of issued tokens, seconds.",
)
@click.option(
    "--expired-token-answer",
    type=click.Choice(["401", "400"]),
    default=str(DEFAULTS.expired_token_answer),
    show_default=True,
    help="How an expired token is refused: 401 APIGW.0301, or 400 Common.0013.",
)
@click.option(
    "--ak-lock-after",
    default=DEFAULTS.ak_lock_after,
    show_default=True,
    type=click.IntRange(min=0),
    help="Lock the AK after this many signature failures in a row (0: never).",
)
@click.option(
    "--ak-lock-seconds",
    default=DEFAULTS.ak_lock_seconds,
    show_default=True,
    type=SECONDS,
    help="How long a locked AK stays locked.",
)
@click.option(
    "--iam-deny-list-projects",
    is_flag=True,
    help="GET /v3/projects answers 403 (GET /v3/auth/projects still works).",
)
@click.option(
    "--latency-ms",
    default=DEFAULTS.latency_ms,
    show_default=True,
    type=SECONDS,
    help="Added to every answer.",
)
@click.option(
    "--jitter-ms",
    default=DEFAULTS.jitter_ms,
    show_default=True,
    type=SECONDS,
    help="Random +/- spread around --latency-ms.",
)
@click.option(
    "--rate-limit",
    default=None,
    type=Finite(0.001),
    help="Requests per second per tenant; 429 APIGW.0308 beyond it.  [default: off]",
)
@click.option("--burst", default=None, type=click.IntRange(min=1), help="Bucket size.  [default: RPS]")
@click.option("--retry-after", is_flag=True, help="Add Retry-After to 429 answers.")
@click.option(
    "--creating-seconds",
    default=DEFAULTS.creating_seconds,
    show_default=True,
    type=SECONDS,
    help="How long a new snapshot stays creating.",
)
@click.option(
    "--rollback-seconds",
    default=DEFAULTS.rollback_seconds,
    show_default=True,
    type=SECONDS,
    help="How long a rollback keeps disk and snapshot rollbacking.",
)
@click.option(
    "--late-commit-seconds",
    default=DEFAULTS.late_commit_seconds,
    show_default=True,
    type=SECONDS,
    help="How long after its 504 a late-committed snapshot appears.",
)
@click.option(
    "--snapshot-quota",
    default=None,
    type=click.IntRange(min=0),
    help="Project snapshot quota; creates beyond it get 413 EVS.5413.  [default: unlimited]",
)
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
@click.option(
    "--fault-late-commit",
    default=0.0,
    show_default=True,
    callback=probability,
    help="Share of creates answered 504 APIG.0203 at once whose snapshot appears later.",
)
@click.option(
    "--fault-list",
    default=0.0,
    show_default=True,
    callback=probability,
    help="Share of snapshot list answers replaced by 503 EVS.5503.",
)
@click.option(
    "--fault-rollback-error",
    default=0.0,
    show_default=True,
    callback=probability,
    help="Share of rollbacks whose disk ends error_rollbacking.",
)
@click.option(
    "--fault-rollback-drop-before",
    default=0.0,
    show_default=True,
    callback=probability,
    help="Share of rollbacks dropped before EVS acts (no rollback happens).",
)
@click.option(
    "--fault-rollback-drop-after",
    default=0.0,
    show_default=True,
    callback=probability,
    help="Share of rollbacks dropped after EVS starts them (the disk goes rollbacking).",
)
@click.option(
    "--fault-delete-drop-after",
    default=0.0,
    show_default=True,
    callback=probability,
    help="Share of snapshot deletions dropped after EVS starts them (the snapshot goes deleting).",
)
@click.option("--seed", default=DEFAULTS.seed, show_default=True, help="Seed for every random choice.")
def command(
    *,
    host: str,
    port: int,
    region: str,
    project_id: str,
    volumes_file: Path | None,
    snapshots_file: Path | None,
    any_volume: bool,
    ak: str,
    sk: str,
    user: str,
    password: str,
    domain: str,
    token: str | None,
    token_ttl: float,
    expired_token_answer: str,
    ak_lock_after: int,
    ak_lock_seconds: float,
    iam_deny_list_projects: bool,
    latency_ms: float,
    jitter_ms: float,
    rate_limit: float | None,
    burst: int | None,
    retry_after: bool,
    creating_seconds: float,
    rollback_seconds: float,
    late_commit_seconds: float,
    snapshot_quota: int | None,
    fault_5xx: float,
    fault_drop_before: float,
    fault_drop_after: float,
    fault_snapshot_error: float,
    fault_late_commit: float,
    fault_list: float,
    fault_rollback_error: float,
    fault_rollback_drop_before: float,
    fault_rollback_drop_after: float,
    fault_delete_drop_after: float,
    seed: int,
) -> NoReturn:
    """Serve the local EVS emulator until SIGINT/SIGTERM (tests, demos, runbook rehearsal)."""
    from orchestrator.emulator.server import serve_forever  # noqa: PLC0415 - keeps --help fast

    volumes = read_volumes(volumes_file) if volumes_file is not None else ()  # errors: cli's boundary
    snapshots = read_snapshots(snapshots_file) if snapshots_file is not None else ()
    settings = EmulatorSettings(
        host=host,
        port=port,
        region=region,
        project_id=project_id,
        volumes=volumes,
        snapshots=snapshots,
        any_volume=any_volume,
        ak=ak,
        sk=sk,
        user=user,
        password=password,
        domain=domain,
        token=token,
        token_ttl=token_ttl,
        expired_token_answer=int(expired_token_answer),
        ak_lock_after=ak_lock_after,
        ak_lock_seconds=ak_lock_seconds,
        iam_deny_list_projects=iam_deny_list_projects,
        latency_ms=latency_ms,
        jitter_ms=jitter_ms,
        rate_limit=rate_limit,
        burst=burst,
        retry_after=retry_after,
        creating_seconds=creating_seconds,
        rollback_seconds=rollback_seconds,
        late_commit_seconds=late_commit_seconds,
        snapshot_quota=snapshot_quota,
        fault_5xx=fault_5xx,
        fault_drop_before=fault_drop_before,
        fault_drop_after=fault_drop_after,
        fault_snapshot_error=fault_snapshot_error,
        fault_late_commit=fault_late_commit,
        fault_list=fault_list,
        fault_rollback_error=fault_rollback_error,
        fault_rollback_drop_before=fault_rollback_drop_before,
        fault_rollback_drop_after=fault_rollback_drop_after,
        fault_delete_drop_after=fault_delete_drop_after,
        seed=seed,
    )
    try:
        anyio.run(serve_forever, settings)
    except OSError as exc:
        raise UsageError(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}") from None
    sys.exit(0)
