"""``evs-snapshot validate MANIFEST``: every problem a manifest would meet, by row; creates nothing."""

from __future__ import annotations

import contextlib
import dataclasses
from collections import Counter
from typing import TextIO

import anyio

from orchestrator.api.routes import Router, connect
from orchestrator.config import Connection, RowDefaults, RunIdentity
from orchestrator.console import Console
from orchestrator.duplicates import duplicate_candidates
from orchestrator.errors import (
    CredentialsRefused,
    ProjectLookupFailed,
    TransportError,
)
from orchestrator.manifest import ManifestSource, read_rows, spooled
from orchestrator.models import Record, SnapshotRequest, utc_now
from orchestrator.rules import RowValidator, check_template

MAX_SNAPSHOTS_PER_VOLUME = 7


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ValidateSettings:
    source: ManifestSource
    defaults: RowDefaults
    online: Connection | None = None


async def validate(settings: ValidateSettings, *, console: Console, stdout: TextIO) -> int:
    """``evs-snapshot validate``: every problem the manifest would meet, by row, without creating anything."""
    check_template(settings.defaults.name_template)
    display = "<stdin>" if settings.source.path == "-" else settings.source.path
    problems: Counter[str] = Counter()
    good = 0
    with spooled(settings.source) as source:
        total, candidates = duplicate_candidates(
            read_rows(source, display=display, warn=console.warn), settings.defaults
        )
        validator = RowValidator(
            defaults=settings.defaults,
            identity=RunIdentity.new(utc_now()),
            candidates=candidates,
            region_required=settings.online is None or settings.online.endpoints.evs is None,
        )
        requests: list[SnapshotRequest] = []
        for item in validator.validate_all(read_rows(source, display=display)):
            if isinstance(item, Record):
                problems[item.error_code or "INVALID"] += 1
                stdout.write(f"{item.error_code}: {item.error_message}\n")
            elif settings.online is None:
                good += 1
            else:
                requests.append(item)
        if settings.online is not None:
            good += await _check_online(requests, settings.online, problems, stdout)
    bad = sum(problems.values())
    codes = ", ".join(f"{code} x{count}" for code, count in problems.most_common())
    checked = " (checked online)" if settings.online else ""
    stdout.write(f"{total} rows: {good} would be sent{checked}, {bad} with problems")
    stdout.write(f" ({codes})\n" if codes else "\n")
    return 0 if bad == 0 else 1


async def _check_online(
    requests: list[SnapshotRequest], connection: Connection, problems: Counter[str], stdout: TextIO
) -> int:
    """Look each volume up (status, force, snapshots so far) with bounded concurrency; GETs only."""
    good = 0
    limiter = anyio.CapacityLimiter(connection.limits.concurrency)
    async with contextlib.AsyncExitStack() as stack:
        router = await connect(stack, connection)

        async def check(request: SnapshotRequest) -> None:
            nonlocal good
            async with limiter:
                problem = await _volume_problem(router, request)
            where = f"row {request.row} (line {request.line}): volume {request.volume_id}"
            if problem is None:
                good += 1
            else:
                problems[problem[0]] += 1
                stdout.write(f"{problem[0]}: {where}: {problem[1]}\n")

        async with anyio.create_task_group() as group:
            for request in requests:
                group.start_soon(check, request)
    refused = router.closed()
    if refused:
        raise refused[0]
    return good


async def _volume_problem(router: Router, request: SnapshotRequest) -> tuple[str, str] | None:
    try:
        route = await router.route_for(request)
        await route.limiter.acquire()
        volume = await route.client.show_volume(route.project_id, request.volume_id)
        route.observe(volume)
        if volume.status == 404:
            return "VOLUME_NOT_FOUND", "the disk does not exist in this project"
        if volume.status != 200 or not isinstance(volume.body, dict):
            return "CHECK_FAILED", f"volume lookup answered {volume.status} {volume.error()[0]}"
        status = str(volume.body.get("volume", {}).get("status"))
        if status == "in-use" and not request.force:
            return "VOLUME_IN_USE", "the disk is in-use: set force (row or --force) to snapshot it attached"
        if status not in ("available", "in-use"):
            return "VOLUME_NOT_SNAPSHOTTABLE", f"the disk is {status}; it must be available or in-use"
        await route.limiter.acquire()
        listed = await route.client.list_snapshots(
            route.project_id, [("limit", "1"), ("volume_id", request.volume_id)]
        )
        route.observe(listed)
        count = (
            int(listed.body.get("count") or 0)
            if listed.status == 200 and isinstance(listed.body, dict)
            else 0
        )
        if count >= MAX_SNAPSHOTS_PER_VOLUME:
            return (
                "SNAPSHOT_LIMIT_REACHED",
                f"the disk already has {count} snapshots (at most {MAX_SNAPSHOTS_PER_VOLUME})",
            )
    except TransportError as exc:
        return "CHECK_FAILED", str(exc)
    except (ProjectLookupFailed, CredentialsRefused) as exc:
        return exc.code, exc.message
    return None
