"""``evs-snapshot validate MANIFEST``: every problem a manifest would meet, by row; creates nothing.

Offline it applies the row rules. ``--online`` also looks each disk up through the same send path as
``create`` (throttling and 5xx retried under the adaptive limiter) and applies ``preflight``'s checks:
unknown, in use without force, not snapshottable, at the per-disk limit, or beyond the project's
snapshot quota. Rows stream through a fixed pool of workers, so memory does not grow with the rows.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import sys
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

import anyio
import click

from orchestrator import options
from orchestrator.config import RunIdentity
from orchestrator.console import Console
from orchestrator.entry import run
from orchestrator.errors import ActionDenied, ListingFailed, ProjectLookupFailed, RouteClosed, TransportError
from orchestrator.manifest import read_rows, spooled
from orchestrator.models import Record, utc_now
from orchestrator.preflight import Problem, disk_problem, quota_short
from orchestrator.rules import RowValidator, first_pass
from orchestrator.signals import in_thread

if TYPE_CHECKING:
    from orchestrator.api.routes import Route, Router
    from orchestrator.config import Connection, RowDefaults
    from orchestrator.console import Console
    from orchestrator.manifest import ManifestSource
    from orchestrator.models import SnapshotRequest
    from orchestrator.retry import RetryPolicy

SHOWN_PER_CODE = 10
DENIED = "PERMISSION_DENIED"  # a check the service refused with 403: retries spent would not grant it
HINTS = {
    "MISSING_PROJECT_ID": "pass --project-id or --region (or give project_id/region columns)",
    "MISSING_REGION": "pass --region or --endpoint (or give a region column)",
}


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class ValidateSettings:
    source: ManifestSource
    defaults: RowDefaults
    policy: RetryPolicy
    connection: Connection  # where rows go: offline too, since --endpoint makes a row's region optional
    online: bool = False


class _Problems:
    """Problem lines by code: the first few of each code in full, then a count and a hint."""

    def __init__(self, stdout: TextIO) -> None:
        self.stdout = stdout
        self.counts: Counter[str] = Counter()
        self.shown: Counter[str] = Counter()
        self.projects: Counter[str] = Counter()  # a project's checks that failed: no row's problem

    def add(self, code: str, message: str, rows: int = 1, *, always: bool = False) -> None:
        """``rows`` rows have this problem (one message says it for all of them); ``always``: a project's
        line, shown even past the first few of its code (there is one per project)."""
        self.counts[code] += rows
        if always or self.shown[code] < SHOWN_PER_CODE:
            self.shown[code] += rows
            self.stdout.write(f"{code}: {message}\n")

    def project(self, code: str, message: str) -> None:
        """A project's check that could not be made (its quota): always shown, counted apart from rows."""
        self.projects[code] += 1
        self.stdout.write(f"{code}: {message}\n")

    def close(self) -> None:
        for code, count in self.counts.most_common():
            if count > self.shown[code]:
                self.stdout.write(f"{code}: ... and {count - self.shown[code]} more rows like these\n")
            if code in HINTS:
                self.stdout.write(f"{code}: {HINTS[code]}\n")


async def validate(settings: ValidateSettings, *, console: Console, stdout: TextIO) -> int:
    """Check every row; exit 0 when none has a problem, 1 otherwise (3 when the API refused us)."""

    display = settings.source.shown
    problems = _Problems(stdout)
    good = 0
    with spooled(settings.source) as source:
        total, candidates = await in_thread(  # a signal stops a long manifest pass promptly
            lambda: first_pass(source, settings.defaults, display=display, warn=console.warn)
        )
        validator = RowValidator(
            defaults=settings.defaults,
            identity=RunIdentity.new(utc_now()),
            candidates=candidates,
            region_required=settings.connection.endpoints.region_required,
        )

        def requests() -> Iterator[SnapshotRequest]:
            nonlocal good
            for item in validator.validate_all(read_rows(source, display=display)):
                if isinstance(item, Record):
                    problems.add(item.error_code or "INVALID", item.error_message or "")
                elif not settings.online:
                    good += 1
                else:
                    yield item

        stopped = None
        if not settings.online:
            await in_thread(lambda: collections.deque(requests(), maxlen=0))
        else:
            try:
                good += await _check_online(requests(), settings, problems, console)
            except RouteClosed as exc:
                stopped = exc
    problems.close()
    bad = sum(problems.counts.values())
    codes = ", ".join(f"{code} x{count}" for code, count in problems.counts.most_common())
    checked = " (checked online)" if settings.online else ""
    stdout.write(f"{total} rows: {good} would be sent{checked}, {bad} with problems")
    stdout.write(f" ({codes})" if codes else "")
    projects = sum(problems.projects.values())
    if projects:
        named = ", ".join(f"{code} x{count}" for code, count in problems.projects.most_common())
        stdout.write(f"; {projects} project check{'s' if projects > 1 else ''} failed ({named})")
    stdout.write("\n")
    if stopped is not None:
        raise stopped  # after the count: the one error line, exit 3
    return 0 if bad == 0 and projects == 0 else 1


async def _check_online(
    requests: Iterator[SnapshotRequest], settings: ValidateSettings, problems: _Problems, console: Console
) -> int:
    """Look each disk up with a fixed pool of workers; GETs only. Returns the rows without a problem."""

    from orchestrator.api.routes import connect  # noqa: PLC0415 - aiohttp loads only when sending

    connection = settings.connection
    good = 0
    per_route: Counter[Route] = Counter()  # rows with and without a region can share one endpoint
    async with contextlib.AsyncExitStack() as stack:
        router = await connect(stack, connection, settings.policy)
        send, receive = anyio.create_memory_object_stream["SnapshotRequest"](
            2 * connection.limits.concurrency
        )

        async def worker(stream: Any) -> None:
            nonlocal good
            async with stream:
                async for request in stream:
                    try:
                        found = await _volume_problem(router, request, settings.policy)
                    except RouteClosed:
                        continue  # refused: not this row's problem; the run stops with one message
                    if isinstance(found, Problem):
                        where = f"row {request.row} (line {request.line}): volume {request.volume_id}"
                        problems.add(found.code, f"{where}: {found.message}")
                    else:
                        good += 1
                        per_route[found] += 1  # the looked-up project too

        async with anyio.create_task_group() as group:
            async with receive:
                for _ in range(connection.limits.concurrency):
                    group.start_soon(worker, receive.clone())
            async with send:
                for request in requests:
                    if router.closures():
                        break  # refused: stop checking (one message at the end, exit 3)
                    await send.send(request)
        for route, wanted in per_route.items():
            if not router.closures():
                good -= await _quota_problem(route, wanted, settings.policy, problems)
        closures = router.closures()
    if closures:
        reasons = "; ".join(closure.message for closure in closures)
        raise RouteClosed(closures[0].code, f"{reasons}; validate stopped (fix the cause and run it again)")
    return good


def denied(exc: ActionDenied) -> str:
    """The IAM action a refused check needs (doctor's probes name them)."""
    from orchestrator.findings import denied_action  # noqa: PLC0415 - doctor's module: only on a refusal

    return denied_action(exc.method, exc.path)


async def _volume_problem(router: Router, request: SnapshotRequest, policy: RetryPolicy) -> Problem | Route:
    """The row's problem, or the route (endpoint and project) the disk was found on."""

    try:
        route = await router.route_for(request.project_id, request.region)
        found = await disk_problem(route, request, policy)
    except ActionDenied as exc:
        return Problem(DENIED, f"{denied(exc)} ({exc})")
    except (ListingFailed, TransportError) as exc:
        return Problem("CHECK_FAILED", str(exc))
    except ProjectLookupFailed as exc:
        return Problem(exc.code, exc.message)
    return route if found is None else found


async def _quota_problem(route: Route, wanted: int, policy: RetryPolicy, problems: _Problems) -> int:
    """Rows beyond the project's remaining snapshot quota (reported once, for all of them)."""

    what = f"project {route.project_id}: the snapshot quota could not be read"
    try:
        short = await quota_short(route, wanted, policy)
    except ActionDenied as exc:
        problems.project(DENIED, f"{what}: {denied(exc)} ({exc})")
        return 0
    except ListingFailed as exc:
        problems.project("CHECK_FAILED", f"{what} ({exc})")
        return 0
    if short is None:
        return 0
    problem = short.problem()
    problems.add(problem.code, problem.message, rows=short.over, always=True)
    return short.over


@click.command("validate")
@options.MANIFEST
@options.ROWS
@click.option(
    "--online", is_flag=True, help="Also check each volume against the API (GETs only; nothing is created)."
)
@options.CONNECTION
@options.RETRIES
@options.LOG_FORMAT
@options.DEBUG
def command(
    *,
    source: ManifestSource,
    rows: RowDefaults,
    online: bool,
    connection: Connection,
    policy: RetryPolicy,
    log_format: str,
) -> NoReturn:
    """Check a manifest (offline, or --online against the API) without creating anything."""

    console = Console(sys.stderr, json=log_format == "json")
    settings = ValidateSettings(
        source=source,
        defaults=dataclasses.replace(rows, region=connection.endpoints.home_region),
        policy=policy,
        connection=connection,
        online=online,
    )
    raise SystemExit(run(lambda: validate(settings, console=console, stdout=sys.stdout), console=console))
