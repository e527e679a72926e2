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

import dataclasses
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

import click

from orchestrator import options
from orchestrator.entry import run

if TYPE_CHECKING:
    from orchestrator.api.routes import Route
    from orchestrator.api.views import Volume
    from orchestrator.config import Connection
    from orchestrator.console import Console
    from orchestrator.retry import RetryPolicy

COLUMNS = (
    "volume_id",
    "server_id",
    "device",
    "bootable",
    "volume_name",
    "size",
    "availability_zone",
    "status",
)
MAX_TAG_KEYS = 10  # evs-api.md 8.5
FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl"}


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Selector:
    """What a disk must match (every given selector, ANDed)."""

    servers: tuple[str, ...] = ()
    tags: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)
    availability_zone: str | None = None
    status: str | None = None
    name: str | None = None
    boot: bool | None = None  # True: only boot disks; False: no boot disks; None: both

    @property
    def empty(self) -> bool:
        return not (
            self.servers or self.tags or self.metadata or self.availability_zone or self.status or self.name
        ) and (self.boot is None)

    def query(self) -> list[tuple[str, str]]:
        """The list filters the service applies (every selector is also checked on each disk)."""
        import orjson  # noqa: PLC0415

        query = [
            (key, value)
            for key, value in (
                ("availability_zone", self.availability_zone),
                ("status", self.status),
                ("name", self.name),
            )
            if value is not None
        ]
        if self.metadata:
            query.append(("metadata", orjson.dumps(dict(self.metadata)).decode()))
        return query

    def matches(self, volume: Volume, *, tags: bool = True) -> bool:
        """True when the disk matches every selector (``tags=False``: every one but ``--tag``)."""
        if self.servers and not set(self.servers) & {server.lower() for server in volume.servers}:
            return False
        if tags and not self.tagged(volume):
            return False
        metadata = volume.metadata
        if any(key not in metadata or metadata[key] != value for key, value in self.metadata.items()):
            return False
        wanted = (
            (volume.availability_zone, self.availability_zone),
            (volume.status, self.status),
            (volume.name, self.name),
        )
        if any(value is not None and found != value for found, value in wanted):
            return False
        return self.boot is None or volume.bootable == self.boot

    def tagged(self, volume: Volume) -> bool:
        """The disk's tags (a map in the volume list's answer) match every ``--tag``."""
        tags = volume.tags
        return all(key in tags and (not values or tags[key] in values) for key, values in self.tags.items())


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
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


def manifest_row(
    volume: Volume, selector: Selector, *, force: bool, with_tags: bool = False
) -> dict[str, Any]:
    """One manifest row: ``volume_id`` and the informational columns (and ``force`` with ``--force``,
    ``tag:KEY`` for each of the disk's tags with ``--with-tags``).

    A disk attached to several servers is shown with a selected server's attachment when there is one.
    """
    attachments = volume.attachments
    chosen = next((a for a in attachments if a.server_id.lower() in selector.servers), None)
    chosen = chosen or (attachments[0] if attachments else None)
    row: dict[str, Any] = {
        "volume_id": volume.id,
        "server_id": None if chosen is None else chosen.server_id,
        "device": None if chosen is None else chosen.device,
        "bootable": "true" if volume.bootable else "false",
        "volume_name": volume.name or None,
        "size": volume.size,
        "availability_zone": volume.availability_zone,
        "status": volume.status,
    }
    if force:
        row["force"] = bool(attachments) or volume.status == "in-use"
    if with_tags:
        from orchestrator.manifest import TAG_PREFIX  # noqa: PLC0415

        row.update((TAG_PREFIX + key, value) for key, value in volume.tags.items())
    return row


def manifest_columns(rows: Iterable[Mapping[str, Any]], *, force: bool, with_tags: bool) -> tuple[str, ...]:
    """The manifest's columns: ``COLUMNS``, ``force`` with ``--force``, then with ``--with-tags`` one
    ``tag:KEY`` column per tag key any selected disk has, sorted by key."""
    from orchestrator.manifest import TAG_PREFIX  # noqa: PLC0415

    tags = {column for row in rows for column in row if column.startswith(TAG_PREFIX)} if with_tags else set()
    return (*COLUMNS, *(("force",) if force else ()), *sorted(tags))


async def find_volumes(route: Route, selector: Selector, policy: RetryPolicy) -> list[Volume]:
    """Every disk of the route's project that matches, each once, in listing order.

    The disks always come from the volume list (every enterprise project the caller may see), and
    ``--tag`` is matched on each disk's ``tags``. The tag search has no enterprise-project field
    (evs-api.md 10): it is asked too, and when the two disagree the run stops (exit 3) rather than
    write a manifest that may leave disks out.
    """
    from orchestrator.api.safe import list_all_volumes, volumes_by_tags  # noqa: PLC0415

    if selector.servers:
        candidates = []
        for server in selector.servers:
            candidates += await list_all_volumes(route, policy, [("server_id", server), *selector.query()])
    else:
        candidates = await list_all_volumes(route, policy, selector.query())
    found: dict[str, Volume] = {}
    for volume in candidates:
        if volume.id and volume.id not in found and selector.matches(volume):
            found[volume.id] = volume
    if selector.tags:
        listed = {volume.id: volume for volume in candidates if volume.id}
        searched = {
            volume.id
            for volume in await volumes_by_tags(route, selector.tags, policy)
            if volume.id and selector.matches(listed.get(volume.id, volume), tags=False)
        }
        _cross_check(found.keys(), searched)
    return list(found.values())


def _cross_check(listed: Iterable[str], searched: set[str]) -> None:
    """Stop (exit 3) when the volume list's tag matches and the tag search's differ."""
    from orchestrator.errors import RunAborted  # noqa: PLC0415

    listed = set(listed)
    if listed == searched:
        return
    only_listed, only_searched = sorted(listed - searched), sorted(searched - listed)
    told = []
    if only_listed:
        told.append(
            f"{len(only_listed)} disk(s) carry the tags in the volume list but the tag search left them out "
            f"({', '.join(only_listed[:5])}): the tag search may see only some enterprise projects"
        )
    if only_searched:
        told.append(
            f"{len(only_searched)} disk(s) found by the tag search do not carry the tags in the volume list "
            f"({', '.join(only_searched[:5])})"
        )
    raise RunAborted(
        "TAGS_DISAGREE: the volume list and the tag search disagree: "
        + "; ".join(told)
        + "; no manifest was written (select by --server, --metadata or --name, or check the tags)"
    )


def write_manifest(
    rows: Iterable[Mapping[str, Any]], stream: TextIO, fmt: str, columns: tuple[str, ...]
) -> None:
    """The rows as CSV, JSON or JSON Lines; a column a row lacks is an empty cell (``null`` in JSON)."""
    import csv  # noqa: PLC0415

    import orjson  # noqa: PLC0415

    if fmt == "csv":
        writer = csv.writer(stream, lineterminator="\n")
        # Python 3.11 leaves a CR unquoted when lines end in LF, which would split the row: quote that row.
        quoted = csv.writer(stream, lineterminator="\n", quoting=csv.QUOTE_ALL)
        writer.writerow(columns)
        for row in rows:
            cells = [_cell(row.get(column)) for column in columns]
            has_cr = any(isinstance(cell, str) and "\r" in cell for cell in cells)
            (quoted if has_cr else writer).writerow(cells)
        return
    lines = [orjson.dumps({column: row.get(column) for column in columns}).decode() for row in rows]
    if fmt == "jsonl":
        stream.write("".join(f"{line}\n" for line in lines))
    else:
        stream.write("[\n" + ",\n".join(lines) + "\n]\n")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _cell(value: object) -> object:
    """A CSV cell; text a spreadsheet would run as a formula gets a leading apostrophe."""
    from orchestrator.manifest import spreadsheet_text  # noqa: PLC0415

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return spreadsheet_text(value)
    return "" if value is None else value


async def select(settings: SelectSettings, *, console: Console, stdout: TextIO) -> int:
    """List, filter and write the manifest; 0 when written, 1 when no disk matched."""
    import contextlib  # noqa: PLC0415
    import time  # noqa: PLC0415

    from orchestrator.api.routes import connect  # noqa: PLC0415
    from orchestrator.errors import ProjectLookupFailed, RunAborted, UsageError  # noqa: PLC0415

    connection = settings.connection
    region = connection.endpoints.home_region
    if settings.project_id is None and region is None:
        raise UsageError("select needs --project-id, or --region to look the project up by")
    if settings.output != "-":
        _check_output(Path(settings.output), overwrite=settings.overwrite)
    started = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        router = await connect(stack, connection)
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
    from orchestrator.errors import UsageError  # noqa: PLC0415
    from orchestrator.frame import check_writable  # noqa: PLC0415

    check_writable(target, "-o")
    if target.exists() and not overwrite:
        raise UsageError(
            f"-o {target} already exists; pass --overwrite to replace it, or choose another path"
        )


def _output(rows: list[dict[str, Any]], settings: SelectSettings, stdout: TextIO) -> None:
    """Write to standard output, or atomically to a file (a temporary file beside it, then renamed)."""
    import os  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    from orchestrator.errors import UsageError  # noqa: PLC0415

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
    from orchestrator.duplicates import UUID_RE  # noqa: PLC0415

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
    from orchestrator import config  # noqa: PLC0415
    from orchestrator.console import Console  # noqa: PLC0415

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
