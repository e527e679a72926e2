"""``evs-snapshot select``: write a manifest of the disks that match, for ``create`` to read.

Selectors are ANDed: ``--server`` (repeatable; a disk attached to any of them), ``--tag KEY=VALUE``
(repeatable; keys ANDed, values of one key ORed, as the tags API does), ``--metadata KEY=VALUE``
(repeatable, ANDed), ``--availability-zone``, ``--status``, ``--name`` (exact) and
``--only-boot``/``--exclude-boot``. The disks come from ``GET .../cloudvolumes/detail`` (once per
``--server``, with ``enterprise_project_id=all_granted_eps``), with the other selectors as query
filters; ``--tag`` is matched on each disk's ``tags``, and cross-checked with the tag search
(``POST .../cloudvolumes/resource_instances/action``, which has no enterprise-project field): when
the two disagree the run stops with exit 3 and writes nothing. Both list 1000 a page, through the
same send path as ``create``; every selector is checked again on each disk, so a filter the service
applies loosely (or ignores) cannot widen the selection.

``--with-tags`` adds one ``tag:KEY`` column per tag key found on the selected disks (empty where a
disk lacks the key), for ``create --metadata KEY={tag:KEY}`` to copy onto each snapshot.

Nothing is written until the listing is complete: a listing that fails exits 3 and leaves no file;
no match exits 1 ("no disk matched") rather than writing an empty manifest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

import click

from orchestrator import config, options
from orchestrator.console import Console
from orchestrator.disks import (
    MAX_TAG_KEYS,
    Selector,
    find_volumes,
    manifest_columns,
    manifest_row,
    write_manifest,
)
from orchestrator.duplicates import UUID_RE
from orchestrator.entry import run
from orchestrator.errors import ProjectLookupFailed, RunAborted, UsageError
from orchestrator.frame import check_writable

if TYPE_CHECKING:
    from orchestrator.config import Connection
    from orchestrator.console import Console
    from orchestrator.retry import RetryPolicy

FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl"}


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class SelectSettings:
    selector: Selector
    connection: Connection
    policy: RetryPolicy
    project_id: str | None
    output: str  # a path, or "-" for standard output
    format: str
    force: bool
    overwrite: bool = False  # -o may replace an existing file
    with_tags: bool = False  # a tag:KEY column per tag key of the selected disks


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


async def select(settings: SelectSettings, *, console: Console, stdout: TextIO) -> int:
    """List, filter and write the manifest; 0 when written, 1 when no disk matched."""

    from orchestrator.api.routes import connect  # noqa: PLC0415 - aiohttp loads only when sending

    connection = settings.connection
    region = connection.endpoints.home_region
    if settings.project_id is None and region is None:
        raise UsageError("select needs --project-id, or --region to look the project up by")
    if settings.output != "-":
        _check_output(Path(settings.output), overwrite=settings.overwrite)
    started = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        router = await connect(stack, connection, settings.policy)
        try:
            route = await router.route_for(settings.project_id, region)
        except ProjectLookupFailed as exc:
            raise RunAborted(f"{exc.code}: {exc.message}") from None  # no project: nothing to select from
        volumes = await find_volumes(route, settings.selector, settings.policy)
        counts = router.counts()
    requests = sum(counts.values())
    spent = f"{_count(requests, 'request')} in {time.monotonic() - started:.2f}s"
    if not volumes:
        console.error(f"no disk matched in project {route.project_id} ({spent}); nothing was written")
        return 1
    rows = sorted(
        (
            manifest_row(volume, settings.selector, force=settings.force, with_tags=settings.with_tags)
            for volume in volumes
        ),
        key=lambda row: (
            row["server_id"] is None,
            row["server_id"] or "",
            row["device"] or "",
            row["volume_id"],
        ),
    )
    _output(rows, settings, stdout)
    where = "standard output" if settings.output == "-" else settings.output
    console.event(
        "selected",
        f"select: {_count(len(rows), 'disk')} matched ({spent}); manifest: {where}",
        disks=len(rows),
        requests=dict(counts),
        manifest=where,
    )
    return 0


def _check_output(target: Path, *, overwrite: bool) -> None:
    """Before anything is listed: ``-o`` can be written, and replaces a file only with ``--overwrite``."""

    check_writable(target, "-o")
    if target.exists() and not overwrite:
        raise UsageError(
            f"-o {target} already exists; pass --overwrite to replace it, or choose another path"
        )


def _output(rows: list[dict[str, Any]], settings: SelectSettings, stdout: TextIO) -> None:
    """Write to standard output, or atomically to a file (a temporary file beside it, then renamed)."""

    columns = manifest_columns(rows, force=settings.force, with_tags=settings.with_tags)
    if settings.output == "-":
        write_manifest(rows, stdout, settings.format, columns)
        stdout.flush()
        return
    target = Path(settings.output)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            write_manifest(rows, handle, settings.format, columns)
        if target.exists() and not settings.overwrite:
            os.unlink(temporary)
            raise UsageError(
                f"-o {target} appeared while the disks were listed; nothing was written "
                "(--overwrite replaces it)"
            )
        os.replace(temporary, target)
    except OSError as exc:
        raise UsageError(f"cannot write {target}: {exc.strerror}") from None


def _pairs(items: tuple[str, ...], option: str) -> list[tuple[str, str]]:
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(
                f"{item!r} must look like KEY=VALUE (a key before the =)", param_hint=option
            )
        pairs.append((key.strip(), value))
    return pairs


def _servers(servers: tuple[str, ...]) -> tuple[str, ...]:
    """Server ids as given (UUIDs, lower-cased, each once); an empty or malformed one is a usage error."""

    chosen: dict[str, None] = {}
    for server in servers:
        server_id = server.strip().lower()
        if not UUID_RE.fullmatch(server_id):
            what = "an empty value" if not server_id else f"{server!r} is not a server id"
            raise click.BadParameter(f"{what}: give a server's UUID (8-4-4-4-12 hex)", param_hint="--server")
        chosen[server_id] = None
    return tuple(chosen)


def _given(value: str | None, option: str) -> str | None:
    """An option's value, or ``None`` when it was not given; an empty value is a usage error, not "any"."""
    if value is not None and not value.strip():
        raise click.BadParameter("an empty value: give one, or leave the option out", param_hint=option)
    return value


def _selector(
    servers: tuple[str, ...],
    tag_items: tuple[str, ...],
    metadata_items: tuple[str, ...],
    availability_zone: str | None,
    status: str | None,
    name: str | None,
    only_boot: bool,
    exclude_boot: bool,
) -> Selector:
    if only_boot and exclude_boot:
        raise click.UsageError("--only-boot and --exclude-boot exclude each other")
    tags: dict[str, tuple[str, ...]] = {}
    for key, value in _pairs(tag_items, "--tag"):
        tags[key] = (*tags.get(key, ()), value)
    if len(tags) > MAX_TAG_KEYS:
        raise click.BadParameter(f"at most {MAX_TAG_KEYS} tag keys (the API's limit)", param_hint="--tag")
    selector = Selector(
        servers=_servers(servers),
        tags=tags,
        metadata=dict(_pairs(metadata_items, "--metadata")),
        availability_zone=_given(availability_zone, "--availability-zone"),
        status=_given(status, "--status"),
        name=_given(name, "--name"),
        boot=True if only_boot else (False if exclude_boot else None),
    )
    if selector.empty:
        raise click.UsageError(
            "give at least one selector: --server, --tag, --metadata, --availability-zone, --status, "
            "--name, --only-boot or --exclude-boot"
        )
    return selector


SELECTORS = options.group(
    "selector",
    _selector,
    click.option(
        "--server", "servers", multiple=True, metavar="ID", help="Disks attached to this server (repeatable)."
    ),
    click.option(
        "--tag",
        "tag_items",
        multiple=True,
        metavar="KEY=VALUE",
        help="Disks with this tag (repeatable: keys ANDed, values of one key ORed); matched on the volume "
        "list, cross-checked with the tags API (exit 3 when they disagree).",
    ),
    click.option(
        "--metadata",
        "metadata_items",
        multiple=True,
        metavar="KEY=VALUE",
        help="Disks with this metadata (repeatable, ANDed).",
    ),
    click.option("--availability-zone", default=None, help="Disks in this availability zone."),
    click.option("--status", default=None, help="Disks in this status (available, in-use, ...)."),
    click.option("--name", default=None, help="Disks with exactly this name."),
    click.option("--only-boot", is_flag=True, help="Only boot disks (bootable)."),
    click.option("--exclude-boot", is_flag=True, help="Leave boot disks out."),
)


@click.command("select")
@SELECTORS
@click.option(
    "--project-id",
    default=None,
    envvar="HUAWEICLOUD_SDK_PROJECT_ID",
    help="Project to list (default: looked up by --region).  [env: HUAWEICLOUD_SDK_PROJECT_ID]",
)
@options.CONNECTION
@options.RETRIES
@click.option(
    "--force",
    is_flag=True,
    help="Add a force column: true for attached (in-use) disks, so create snapshots them.",
)
@click.option(
    "-o", "--output", default="-", show_default=True, help="Manifest path, or - for standard output."
)
@click.option("--overwrite", is_flag=True, help="Let -o replace an existing file.")
@click.option(
    "--with-tags",
    is_flag=True,
    help="Add a tag:KEY column per tag key of the selected disks (for create's --metadata KEY={tag:KEY}).",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["csv", "json", "jsonl"]),
    default=None,
    help="Manifest format.  [default: from the -o extension, else csv]",
)
@options.LOG_FORMAT
@options.DEBUG
def command(
    *,
    selector: Selector,
    project_id: str | None,
    connection: Connection,
    policy: RetryPolicy,
    force: bool,
    output: str,
    output_format: str | None,
    overwrite: bool,
    with_tags: bool,
    log_format: str,
) -> NoReturn:
    """Write a manifest (CSV, JSON or JSON Lines) of the disks that match every selector."""

    console = Console(sys.stderr, json=log_format == "json")
    settings = SelectSettings(
        selector=selector,
        connection=connection,
        policy=policy,
        project_id=config.check_project_id(project_id, option="--project-id"),
        output=output,
        format=output_format or FORMATS.get(Path(output).suffix.lower(), "csv"),
        force=force,
        overwrite=overwrite,
        with_tags=with_tags,
    )
    raise SystemExit(run(lambda: select(settings, console=console, stdout=sys.stdout), console=console))
