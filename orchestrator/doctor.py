"""``doctor``'s checks: each assumption the tool's promises rest on, proven in the user's own account.

Read-only, in order: the endpoint (DNS, TCP, TLS), the clock (the gateway's ``Date``), the
credentials (a signed GET accepted), the project (and which IAM request found it), the permissions
of each read API the commands use (a 403 names the IAM action), the enterprise projects (lists with
and without ``all_granted_eps``; the tag search against the volume list) and the quota (with a
manifest: each disk's room as ``validate --online`` counts it). ``live`` adds the round trip.

Every request is a normal send through ``Route.send`` (limiter, retries, identity). Each permission
probe goes on a route of its own: on a route that has not yet succeeded a 403 reads as refused
credentials and closes it, and one denied action must not hide the others. The first probe proves the
credentials, alone: a 401 stops the doctor there (the gateway locks an AK after five failures).
How each answer is judged, and the table: ``findings``.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import anyio

from orchestrator.api import evs
from orchestrator.api.clock import gateway_offset
from orchestrator.api.credentials import AkSkAuth, TokenAuth
from orchestrator.api.probe import count_of, exchange, said, shown, without_every_ep
from orchestrator.api.safe import list_all_volumes, remaining_quota, snapshot_pages, volume_snapshots
from orchestrator.defaults import SNAPSHOTS_PER_DISK
from orchestrator.errors import (
    CredentialsRefused,
    ListingFailed,
    ProjectLookupFailed,
    RouteClosed,
    TransportError,
)
from orchestrator.findings import (
    SIGNATURE_EXPIRED,
    WRITE_ACTIONS,
    Check,
    Result,
    Stopped,
    accepted,
    clock_check,
    credential_source,
    ep_check,
    groups_check,
    lifetime_note,
    permission_check,
    probes,
    reach,
)
from orchestrator.models import NO_SUCH_API
from orchestrator.preflight import counted, limit_problem
from orchestrator.throttle import RateLimiter

if TYPE_CHECKING:
    from yarl import URL

    from orchestrator.api.routes import Route, Router
    from orchestrator.config import Connection
    from orchestrator.models import Answer
    from orchestrator.retry import RetryPolicy
    from orchestrator.selection import Target

SHOWN = 5  # disks named in a quota finding
PAGES = 4  # the paging check splits the list into about this many pages
MAX_PAGES = 20  # and sends no more than this many


class Doctor:
    """Runs the checks on one router; ``checks`` holds the table so far."""

    def __init__(self, router: Router, connection: Connection, policy: RetryPolicy) -> None:
        self.router = router
        self.connection = connection
        self.policy = policy
        self.checks: list[Check] = []
        self.region = connection.endpoints.home_region
        self.project_id: str | None = None

    def add(self, check: Check) -> Check:
        self.checks.append(check)
        return check

    def stop(self, check: Check) -> Stopped:
        self.add(dataclasses.replace(check, result=Result.STOP))
        return Stopped(check.meaning)

    @property
    def where(self) -> str:
        return f"{self.region or self.evs_url}/{self.project_id or '?'}"

    @property
    def evs_url(self) -> URL:
        return self.connection.endpoints.evs_for(self.region)

    def fresh_route(self) -> Route:
        """A route of its own on the doctor's endpoint and project (see the module docstring)."""
        from orchestrator.api.routes import Route  # noqa: PLC0415 - aiohttp: 65 ms of doctor --help (results.md)

        assert self.project_id is not None  # noqa: S101 - after the project check
        shared = self.router.route_at(self.region, self.project_id)
        return Route(
            shared.endpoint,
            self.project_id,
            auth=self.router.auth,
            limiter=RateLimiter(self.router.max_rps),
            in_flight=self.router.in_flight,
        )

    # --- 1. endpoint ------------------------------------------------------------------------------
    async def endpoint(self, project_id: str | None) -> None:
        """DNS, TCP and TLS to the EVS endpoint (and IAM's, when a project or token is asked of it)."""
        urls = [self.evs_url]
        if self._needs_iam(project_id):
            iam = self.connection.endpoints.iam_url()
            if (iam.host, iam.port) != (urls[0].host, urls[0].port):
                urls.append(iam)
        for url in urls:
            check = await reach(url, self.connection)
            if check.result is Result.FAIL:
                raise self.stop(check)
            self.add(check)

    def _needs_iam(self, project_id: str | None) -> bool:

        return project_id is None or not isinstance(self.router.auth, AkSkAuth | TokenAuth)

    # --- 2-4. clock, credentials, project ----------------------------------------------------------
    async def identity(self, project_id: str | None) -> None:
        """The project (from the option, or IAM), then one signed GET: clock and credentials."""

        project_check: Check
        if project_id is not None:
            self.project_id = project_id
            project_check = Check(
                name="project",
                result=Result.PASS,
                meaning=f"{project_id}, as given (--project-id or HUAWEICLOUD_SDK_PROJECT_ID)",
                proves=(),
            )
        else:
            if self.region is None:
                raise self.stop(
                    Check(
                        name="project",
                        result=Result.FAIL,
                        meaning="no --project-id and no --region to look one up by",
                        fix="pass --region (or OS_REGION_NAME), or --project-id",
                    )
                )
            resolver = self.router.resolver
            sent = datetime.now(UTC)
            try:
                self.project_id = await resolver.project_for(self.region)
            except CredentialsRefused as exc:
                if gateway_offset(message=exc.message, sent=sent) is not None:
                    self._clock(None, exc.message, sent)
                else:
                    self.add(
                        Check(
                            name="clock",
                            result=Result.INFO,
                            meaning="not measured: IAM refused the credentials before EVS answered",
                            proves=(8,),
                        )
                    )
                raise self.stop(self._refused(exc.message, "IAM's project lookup")) from None
            except ProjectLookupFailed as exc:
                raise self.stop(
                    Check(
                        name="project",
                        result=Result.FAIL,
                        meaning=exc.message,
                        fix="pass --project-id (the id of the region's project, from the console)",
                        sent=("GET /v3/projects", "GET /v3/auth/projects"),
                    )
                ) from None
            except TransportError as exc:
                raise self.stop(
                    Check(name="project", result=Result.FAIL, meaning=f"IAM did not answer: {exc}")
                ) from None
            via = resolver.via.get(self.region, "IAM")
            project_check = Check(
                name="project",
                result=Result.PASS,
                meaning=f"{self.project_id}, the project named {self.region}, resolved by {via}",
                sent=(via.split(" (")[0],),
            )
        first = probes(self.project_id)[0]
        sent = datetime.now(UTC)
        try:
            answer = await exchange(self.fresh_route(), first.call, self.policy)
        except RouteClosed as exc:  # IAM refused the password (no request reached EVS)
            raise self.stop(self._refused(exc.message, "IAM (password token)")) from None
        except ListingFailed as exc:
            raise self.stop(
                Check(
                    name="credentials",
                    result=Result.FAIL,
                    meaning=f"no answer to a signed GET: {exc}",
                    fix="check the network, --endpoint and --timeout",
                    sent=(shown(first.call),),
                )
            ) from None
        received = datetime.now(UTC)
        code, message = answer.error() if not answer.ok else ("", None)
        self._clock(answer.date, message if code in SIGNATURE_EXPIRED else None, sent, received)
        if answer.status == 401 or (answer.status == 400 and code == "Common.0013"):
            raise self.stop(self._refused(said(answer), f"{shown(first.call)}"))
        if answer.status == 404 and code in NO_SUCH_API:
            raise self.stop(
                Check(
                    name="credentials",
                    result=Result.FAIL,
                    meaning=f"not proven: the gateway has no {shown(first.call)} here ({said(answer)})",
                    fix="check --endpoint/--region: this is not an EVS endpoint of the region",
                    sent=(shown(first.call),),
                    proves=(4,),
                )
            )
        self.add(
            Check(
                name="credentials",
                result=Result.PASS,
                meaning=f"{credential_source(self.router, self.connection)}: {shown(first.call)} got "
                f"through authentication ({accepted(answer)}); {lifetime_note(self.router, self.project_id)}",
                sent=(shown(first.call),),
                proves=(8,),
            )
        )
        self.add(project_check)
        self._first = answer

    def _clock(
        self, date: str | None, message: str | None, sent: datetime, received: datetime | None = None
    ) -> None:
        offset = gateway_offset(date=date, message=message, sent=sent, received=received)
        self.add(clock_check(offset))

    def _refused(self, why: str, what: str) -> Check:
        expired = any(code in why for code in SIGNATURE_EXPIRED)
        fix = (
            "set this machine's clock right (NTP: chronyc tracking / timedatectl); the signature's time "
            "is this clock's"
            if expired
            else "check the credentials' source (see the meaning), the project, and that the user is enabled"
        )
        return Check(
            name="credentials",
            result=Result.FAIL,
            meaning=f"{credential_source(self.router, self.connection)} refused by {what}: {why}",
            fix=fix,
            sent=(what,),
            proves=(8,),
        )

    # --- 5. permissions ------------------------------------------------------------------------------
    async def permissions(self) -> dict[str, Answer]:
        """Each read API once (the snapshot list's answer is the credentials'); returns the answers."""
        assert self.project_id is not None  # noqa: S101
        answers: dict[str, Answer] = {}
        for index, probe in enumerate(probes(self.project_id)):
            answer = (
                self._first if index == 0 else await exchange(self.fresh_route(), probe.call, self.policy)
            )
            answers[probe.name] = answer
            if answer.status == 401:
                raise self.stop(self._refused(said(answer), shown(probe.call)))
            self.add(permission_check(probe, answer))
        actions = "; ".join(f"{action} ({commands})" for action, commands in WRITE_ACTIONS)
        self.add(
            Check(
                name="permissions: writes",
                result=Result.INFO,
                meaning=f"not probed (each has side effects): {actions}",
                fix="grant them to the user the runs use; doctor --live proves create, get and delete",
                proves=(9,),
            )
        )
        return answers

    # --- 6. enterprise projects ------------------------------------------------------------------------
    async def enterprise_projects(self, answers: Mapping[str, Answer]) -> None:
        """Counts with and without ``all_granted_eps``; the tag search against the volume list."""
        assert self.project_id is not None  # noqa: S101
        for probe in probes(self.project_id)[:2]:
            everything = count_of(answers[probe.name])
            if everything is None:
                self.add(
                    Check(
                        name=f"enterprise projects: {probe.name}",
                        result=Result.INFO,
                        meaning=f"not compared: the {probe.name} was refused",
                        proves=(1,),
                    )
                )
                continue
            plain = await exchange(self.fresh_route(), without_every_ep(probe.call), self.policy)
            self.add(ep_check(probe, everything, count_of(plain), plain))
        await self._tags(answers)

    async def _tags(self, answers: Mapping[str, Answer]) -> None:

        assert self.project_id is not None  # noqa: S101
        name = "enterprise projects: tag search"
        if not (answers["volume list"].ok and answers["tag search"].ok):
            self.add(
                Check(
                    name=name,
                    result=Result.INFO,
                    meaning="not compared: the volume list or the tag search was refused",
                    proves=(2,),
                )
            )
            return
        volumes = await list_all_volumes(self.fresh_route(), self.policy)
        keys = Counter(key for volume in volumes for key in volume.tags)
        sent_list = shown(evs.list_volumes(self.project_id, ()))
        if not keys:
            self.add(
                Check(
                    name=name,
                    result=Result.INFO,
                    meaning=f"no disk of the {len(volumes)} listed carries a tag: nothing to compare",
                    sent=(sent_list,),
                    proves=(2,),
                )
            )
            return
        key, listed = keys.most_common(1)[0]
        call = evs.volumes_by_tags(self.project_id, {key: []}, offset=0)
        answer = await exchange(self.fresh_route(), call, self.policy)
        found = count_of(answer)
        sent = (sent_list, shown(call))
        if found == listed:
            self.add(
                Check(
                    name=name,
                    result=Result.PASS,
                    meaning=f"the tag search finds all {listed} disks tagged {key!r} that the volume list "
                    "(all enterprise projects) shows: it is not scoped",
                    sent=sent,
                    proves=(2,),
                )
            )
            return
        self.add(
            Check(
                name=name,
                result=Result.FAIL,
                meaning=f"the tag search finds {found if found is not None else said(answer)} disks tagged "
                f"{key!r}, the volume list with all_granted_eps {listed}: the tag search is scoped "
                "(it has no enterprise-project field), so a manifest built from it leaves disks out",
                fix="do not build manifests from the raw tag search here: `select --tag` checks tags on "
                "the volume list (all_granted_eps)",
                sent=sent,
                proves=(2,),
            )
        )

    async def paging(self, answers: Mapping[str, Answer]) -> None:
        """The snapshot list paged by offset in small pages: does each item come exactly once?"""
        assert self.project_id is not None  # noqa: S101
        name = "paging: snapshot list"
        total = count_of(answers["snapshot list"])
        if total is None or total < 2:
            why = "the snapshot list was refused" if total is None else f"{total} snapshots: nothing to page"
            self.add(Check(name=name, result=Result.INFO, meaning=f"not checked: {why}", proves=(3,)))
            return
        size = max(1, min(evs.PAGE, -(-total // PAGES)))
        seen: set[str] = set()
        items = offset = pages = 0
        listing = snapshot_pages(self.fresh_route(), self.policy, kind=evs.Kind.CHECK, size=size)
        try:
            async for page in listing:
                if not page:
                    break
                seen.update(snapshot.id for snapshot in page)
                items += len(page)
                offset += len(page)
                pages += 1
                if offset >= total or pages >= MAX_PAGES:
                    break
        except (ListingFailed, RouteClosed) as exc:  # a refused page ends the paging, as an empty one does
            if isinstance(exc, RouteClosed) and exc.answer is None:
                raise
            if not pages:  # nothing was paged: nothing was compared
                why = f"the first page was refused ({exc})"
                self.add(Check(name=name, result=Result.INFO, meaning=f"not checked: {why}", proves=(3,)))
                return
        finally:
            await listing.aclose()
        call = evs.list_snapshots(self.project_id, (), kind=evs.Kind.CHECK)
        repeated = items - len(seen)
        missed = total - len(seen) if offset >= total else 0
        sent = (shown(call) + "?limit=...&offset=...",)
        how = f"{pages} pages of {size} by offset"
        if repeated or missed > 0:
            self.add(
                Check(
                    name=name,
                    result=Result.FAIL,
                    meaning=f"{how} gave {len(seen)} distinct snapshots of the {total} the list counts "
                    f"({repeated} came twice): the order changed between pages, so one offset-paged listing "
                    "can skip a snapshot (a double left in place by a sweep that trusts it)",
                    fix="nothing to set in the tool (its sweep confirms each doubtful row by a volume_id "
                    "lookup, never by the paged listing); run doctor again when nothing else creates or "
                    "deletes snapshots, to tell churn from an unstable order",
                    sent=sent,
                    proves=(3,),
                )
            )
            return
        part = "" if offset >= total else f" (the first {offset})"
        self.add(
            Check(
                name=name,
                result=Result.PASS,
                meaning=f"{how} gave each of the {total} snapshots{part} exactly once (the list held still "
                "while it was paged)",
                sent=sent,
                proves=(3,),
            )
        )

    async def snapshot_groups(self) -> None:
        """Whether the region answers the v5 group list (on a route of its own: a 404 closes one)."""
        assert self.project_id is not None  # noqa: S101
        call = evs.list_snapshot_groups(self.project_id, [("limit", "1")], kind=evs.Kind.CHECK)
        self.add(groups_check(await exchange(self.fresh_route(), call, self.policy), (shown(call),)))

    # --- 7. quota ------------------------------------------------------------------------------------
    async def quota(self, answers: Mapping[str, Answer], targets: Sequence[Target] | None) -> None:
        """What the project's quota leaves; with a manifest, each disk's room (``validate --online``)."""

        assert self.project_id is not None  # noqa: S101
        if not answers["quota"].ok:
            self.add(Check(name="quota", result=Result.INFO, meaning="not read (see permissions: quota)"))
            return
        left = await remaining_quota(self.fresh_route(), self.policy)
        sent = (shown(evs.quota(self.project_id)),)
        wanted = None if targets is None else len(targets)
        text = "unlimited (or not stated)" if left is None else f"{left} snapshots left in the project"
        if left is not None and (left == 0 or (wanted is not None and wanted > left)):
            need = f"; the manifest names {wanted} disks" if wanted is not None else ""
            self.add(
                Check(
                    name="quota",
                    result=Result.FAIL,
                    meaning=f"{text}{need}",
                    fix="prune old snapshots, or ask for a larger snapshot quota",
                    sent=sent,
                )
            )
        else:
            need = f", enough for the manifest's {wanted} disks" if wanted is not None else ""
            self.add(Check(name="quota", result=Result.PASS, meaning=f"{text}{need}", sent=sent))
        if targets is not None:
            await self._room(targets, answers["snapshot list"])

    async def _room(self, targets: Sequence[Target], listing: Answer) -> None:
        """Each disk's room under the per-disk limit, counted as ``validate --online`` counts it; not
        checked when the snapshot list was denied (``listing``, the permission probe's answer, a 403)."""

        assert self.project_id is not None  # noqa: S101
        if listing.status == 403:  # the same IAM action: each disk's list is refused too
            action = probes(self.project_id)[0].action
            self.add(
                Check(
                    name="quota: per disk",
                    result=Result.INFO,
                    meaning=f"not checked: the snapshot list was refused (the IAM action {action} is "
                    "missing; see permissions: snapshot list)",
                )
            )
            return
        full: list[tuple[str, int]] = []
        failed: list[str] = []
        route = self.fresh_route()
        ours = [t for t in targets if t.project_id in (None, self.project_id)]
        pending = iter(ours)

        async def worker() -> None:
            for target in pending:  # one iterator shared by the workers: each disk is taken once
                try:
                    listed = await volume_snapshots(route, target.volume_id, self.policy, kind=evs.Kind.CHECK)
                except (ListingFailed, RouteClosed) as exc:
                    failed.append(f"{target.volume_id} ({exc})")
                    continue
                if limit_problem(listed) is not None:  # as validate --online judges it
                    full.append((target.volume_id, counted(listed)))

        async with anyio.create_task_group() as group:
            for _ in range(min(self.connection.limits.concurrency, len(ours))):
                group.start_soon(worker)
        elsewhere = len(targets) - len(ours)
        other = f"; {elsewhere} disks of other projects not checked" if elsewhere else ""
        sent = (shown(evs.list_snapshots(self.project_id, ())) + "?volume_id=...",)
        if full or failed:
            named = ", ".join(f"{volume} ({count})" for volume, count in sorted(full)[:SHOWN])
            unread = ", ".join(sorted(failed)[:SHOWN])
            parts = [
                f"{len(full)} of {len(ours)} disks already hold {SNAPSHOTS_PER_DISK} manually created "
                f"snapshots: {named}{', ...' if len(full) > SHOWN else ''}"
                if full
                else "",
                f"{len(failed)} of {len(ours)} could not be read: {unread}"
                f"{', ...' if len(failed) > SHOWN else ''}"
                if failed
                else "",
            ]
            self.add(
                Check(
                    name="quota: per disk",
                    result=Result.FAIL,
                    meaning="; ".join(part for part in parts if part) + other,
                    fix="prune old snapshots of those disks (evs-snapshot prune), or leave them out",
                    sent=sent,
                )
            )
            return
        self.add(
            Check(
                name="quota: per disk",
                result=Result.PASS,
                meaning=f"each of the manifest's {len(ours)} disks has room for a snapshot "
                f"(at most {SNAPSHOTS_PER_DISK} manually created per disk){other}",
                sent=sent,
            )
        )
