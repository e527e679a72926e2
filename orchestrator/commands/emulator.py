"""``evs-snapshot emulator``: serve the local EVS emulator (tests, demos, runbook rehearsal)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import anyio
import click

from orchestrator.console import Console
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


def probability(_ctx: click.Context, _param: click.Parameter, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise click.BadParameter("must be between 0 and 1")
    return value


@click.command("emulator")
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
def command(volumes_file: Path | None, **options: object) -> NoReturn:
    """Serve the local EVS emulator until SIGINT/SIGTERM (tests, demos, runbook rehearsal)."""
    from orchestrator.emulator.server import serve_forever  # noqa: PLC0415 - keeps --help fast

    try:
        volumes = read_volumes(volumes_file) if volumes_file is not None else ()
    except EvsSnapshotError as exc:
        Console(sys.stderr).error(str(exc))
        sys.exit(exc.exit_code)
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
