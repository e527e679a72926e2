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

The numbers in ``Check.proves`` are the assumptions of issue 20 ("Why", 1 to 9).
"""

from __future__ import annotations

import dataclasses
import enum
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio

from orchestrator.api import evs
from orchestrator.api.clock import SIGNATURE_WINDOW, gateway_offset
from orchestrator.errors import ListingFailed, RouteClosed, TransportError
from orchestrator.retry import RetryPolicy, TryAgain, Verdict, retrying

if TYPE_CHECKING:
    from yarl import URL

    from orchestrator.api.routes import Route, Router
    from orchestrator.config import Connection
    from orchestrator.models import Answer
    from orchestrator.selection import Target

CLOCK_WARN = 60.0  # seconds of skew that earn a warning
CLOCK_FAIL = 600.0  # and a failure: well inside the gateway's 15 minutes, with room for drift
NOT_FOUND_CODES = frozenset({"EVS.5404", "itemNotFound"})
NO_SUCH_API = frozenset({"APIGW.0101", "APIG.0101"})
SIGNATURE_EXPIRED = frozenset({"APIGW.0303", "APIG.0303"})
SHOWN = 5  # disks named in a quota finding
PAGES = 4  # the paging check splits the list into about this many pages
MAX_PAGES = 20  # and sends no more than this many
TAG_PROBE_KEY = "evs_snapshot_doctor"  # the tag search needs a key; any key proves the permission


class Result(enum.StrEnum):
    PASS = "pass"  # noqa: S105 - a result, not a password
    WARN = "warn"  # worth knowing; does not fail the doctor
    FAIL = "fail"
    INFO = "info"  # not probed (write actions), or nothing to compare
    STOP = "stop"  # the endpoint or the credentials stop the doctor here: exit 3


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Check:
    """One row of the doctor's table."""

    name: str
    result: Result
    meaning: str
    fix: str = ""
    sent: tuple[str, ...] = ()  # what it sent (method and path), for the reader and the docs
    proves: tuple[int, ...] = ()  # the issue-20 assumptions it proves

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.name,
            "result": str(self.result),
            "meaning": self.meaning,
            "fix": self.fix,
            "sent": list(self.sent),
            "proves": list(self.proves),
        }


class Stopped(Exception):
    """The endpoint or the credentials stop the doctor: the checks so far are shown, exit 3."""


@dataclasses.dataclass(frozen=True, slots=True)
class Probe:
    """A read API the commands use: its call, the IAM action it needs, and who needs it."""

    name: str
    action: str
    commands: str
    call: evs.Call


# Write actions cannot be probed without side effects: listed with the commands that need them.
WRITE_ACTIONS = (
    ("evs:snapshots:create", "create"),
    ("evs:snapshots:get", "wait, cleanup, prune, create's sweep, doctor --live"),
    ("evs:snapshots:delete", "create's and wait's sweep (a double), prune, cleanup"),
    ("evs:snapshots:rollback", "rollback"),
    ("evs:volumes:get", "validate --online, rollback"),
)


def shown(call: evs.Call) -> str:
    """``GET /v2/{project_id}/cloudsnapshots/detail``: a call as the docs name it."""
    path = call.path
    parts = path.split("/")
    if len(parts) > 2:
        project = parts[2]
        path = path.replace(project, "{project_id}")
    return f"{call.method} {path}"


def without_every_ep(call: evs.Call) -> evs.Call:
    """The same list without ``enterprise_project_id=all_granted_eps`` (what a list shows by default)."""
    return dataclasses.replace(call, query=tuple(q for q in call.query if q != evs.EVERY_ENTERPRISE_PROJECT))


def probes(project_id: str) -> list[Probe]:
    """The read APIs, the snapshot list first (it also proves the credentials)."""
    one = [("limit", "1")]
    return [
        Probe(
            "snapshot list",
            "evs:snapshots:list",
            "create, wait, prune, cleanup, audit, rollback",
            evs.list_snapshots(project_id, one, kind=evs.Kind.CHECK),
        ),
        Probe("volume list", "evs:volumes:list", "select", evs.list_volumes(project_id, one)),
        Probe("quota", "evs:quotas:get", "create (pre-flight), validate --online", evs.quota(project_id)),
        Probe(
            "tag search",
            "evs:volumeTags:list",
            "select --tag",
            evs.volumes_by_tags(project_id, {TAG_PROBE_KEY: []}, offset=0),
        ),
    ]


async def exchange(route: Route, call: evs.Call, policy: RetryPolicy) -> Answer:
    """One call's final answer (a success, a refusal or another final one); throttling, 5xx and
    transport errors are retried under ``policy``. Raises ``ListingFailed`` when retries are spent."""
    why = ""
    last: Answer | None = None
    async for attempt in retrying(policy, reraise=False):
        with attempt:
            try:
                reply = await route.send(call)
            except TransportError as exc:
                why = str(exc)
                raise TryAgain(why) from None
            except RouteClosed as exc:  # a refusal that carries its answer is this call's answer
                if exc.answer is None:
                    raise
                return exc.answer
            last = reply.answer
            if reply.verdict in (Verdict.RETRY, Verdict.UNCERTAIN):
                why = f"{last.status} {last.error()[0]}"
                raise TryAgain(why)
            return last
    if last is not None:
        return last
    raise ListingFailed(f"{shown(call)} got no answer ({why})")


def accepted(answer: Answer) -> str:
    """How an authenticated answer reads in the credentials check."""
    if answer.ok:
        return f"answered {answer.status}"
    code = answer.error()[0]
    return f"answered {answer.status} {code}: a refusal by policy, not of the credentials; see permissions"


def said(answer: Answer) -> str:
    code, message = answer.error()
    return f"{answer.status} {code}: {message or 'no message'}"


def count_of(answer: Answer) -> int | None:
    body = answer.body
    if not answer.ok or not isinstance(body, dict):
        return None
    for key in ("count", "total_count"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def credential_source(router: Router, connection: Connection) -> str:
    """Which source the credentials came from, in the words of the docs."""
    from orchestrator.api.credentials import AkSkAuth, TokenAuth  # noqa: PLC0415

    auth = router.auth
    environ = connection.environ
    if isinstance(auth, TokenAuth):
        where = f"--token-file {connection.token_file}" if connection.token_file else "OS_AUTH_TOKEN"
        return f"a fixed IAM token ({where})"
    if isinstance(auth, AkSkAuth):
        env = environ.get("HUAWEICLOUD_SDK_AK", "").strip() and environ.get("HUAWEICLOUD_SDK_SK", "").strip()
        where = "HUAWEICLOUD_SDK_AK/SK" if env else "the SDK credentials file, section [basic]"
        kind = "temporary AK/SK (with a security token)" if auth.security_token else "AK/SK"
        return f"{kind} from {where}"
    return "an IAM password (OS_USERNAME, OS_PASSWORD, OS_USER_DOMAIN_NAME)"


def lifetime_note(router: Router) -> str:
    """What the tool knows of how long the credentials last."""
    from orchestrator.api.credentials import AkSkAuth, TokenAuth  # noqa: PLC0415

    auth = router.auth
    if isinstance(auth, TokenAuth):
        return (
            "a fixed token cannot be renewed: IAM tokens last 24 h from issue, so get a fresh one "
            "before a long run"
        )
    if isinstance(auth, AkSkAuth):
        if auth.security_token:
            return (
                "temporary keys expire with their security token (15 min to 24 h from issue): get "
                "fresh ones before the window"
            )
        return "permanent keys do not expire"
    return "a token is asked of IAM per project and renewed before it expires"


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
        from orchestrator.api.routes import Route  # noqa: PLC0415
        from orchestrator.throttle import RateLimiter  # noqa: PLC0415

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
        from orchestrator.api.credentials import AkSkAuth, TokenAuth  # noqa: PLC0415

        return project_id is None or not isinstance(self.router.auth, AkSkAuth | TokenAuth)

    # --- 2-4. clock, credentials, project ----------------------------------------------------------
    async def identity(self, project_id: str | None) -> None:
        """The project (from the option, or IAM), then one signed GET: clock and credentials."""
        from orchestrator.errors import CredentialsRefused, ProjectLookupFailed  # noqa: PLC0415

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
                f"through authentication ({accepted(answer)}); {lifetime_note(self.router)}",
                sent=(shown(first.call),),
                proves=(8,),
            )
        )
        self.add(project_check)
        self._first = answer

    def _clock(
        self, date: str | None, message: str | None, sent: datetime, received: datetime | None = None
    ) -> None:
        if any(check.name == "clock" for check in self.checks):
            return
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
        from orchestrator.api.safe import list_all_volumes  # noqa: PLC0415

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
        keys = Counter(key for volume in volumes for key in tags_of(volume))
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
        route = self.fresh_route()
        call = evs.list_snapshots(self.project_id, [("limit", str(size))], kind=evs.Kind.CHECK)
        while offset < total and pages < MAX_PAGES:
            page_call = (
                call
                if not offset
                else dataclasses.replace(call, query=(("offset", str(offset)), *call.query))
            )
            answer = await exchange(route, page_call, self.policy)
            body = answer.body if answer.ok and isinstance(answer.body, dict) else {}
            ids = [str(item.get("id")) for item in body.get("snapshots") or [] if isinstance(item, dict)]
            if not ids:
                break
            seen.update(ids)
            items += len(ids)
            offset += len(ids)
            pages += 1
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
                    fix="the sweep must confirm each doubtful row by a volume_id lookup, never by the paged "
                    "listing alone; run doctor again when nothing else creates or deletes snapshots, to tell "
                    "churn from an unstable order",
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

    # --- 7. quota ------------------------------------------------------------------------------------
    async def quota(self, answers: Mapping[str, Answer], targets: Sequence[Target] | None) -> None:
        """What the project's quota leaves; with a manifest, each disk's room (``validate --online``)."""
        from orchestrator.api.safe import remaining_quota  # noqa: PLC0415

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
            await self._room(targets)

    async def _room(self, targets: Sequence[Target]) -> None:
        """Each disk's room under the per-disk limit, counted as ``validate --online`` counts it."""
        from orchestrator.api.safe import volume_snapshots  # noqa: PLC0415
        from orchestrator.defaults import SNAPSHOTS_PER_DISK  # noqa: PLC0415

        assert self.project_id is not None  # noqa: S101
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
                count = sum(1 for snapshot in listed if snapshot.counts_toward_limit)
                if count >= SNAPSHOTS_PER_DISK:
                    full.append((target.volume_id, count))

        async with anyio.create_task_group() as group:
            for _ in range(min(self.connection.limits.concurrency, len(ours))):
                group.start_soon(worker)
        elsewhere = len(targets) - len(ours)
        other = f"; {elsewhere} disks of other projects not checked" if elsewhere else ""
        sent = (shown(evs.list_snapshots(self.project_id, ())) + "?volume_id=...",)
        if full or failed:
            named = ", ".join(f"{volume} ({count})" for volume, count in sorted(full)[:SHOWN])
            more = ", ..." if len(full) > SHOWN else ""
            unread = f"; {len(failed)} could not be read: {', '.join(failed[:SHOWN])}" if failed else ""
            self.add(
                Check(
                    name="quota: per disk",
                    result=Result.FAIL,
                    meaning=f"{len(full)} of {len(ours)} disks already hold {SNAPSHOTS_PER_DISK} manually "
                    f"created snapshots: {named}{more}{unread}{other}",
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


def tags_of(volume: object) -> list[str]:
    tags = volume.get("tags") if isinstance(volume, dict) else getattr(volume, "tags", None)
    return [str(key) for key in tags] if isinstance(tags, Mapping) else []


def clock_check(offset: float | None) -> Check:
    """Warn above a minute, fail above ten, and name the gateway's fifteen."""
    limit = (
        f"the gateway refuses AK/SK signatures more than {SIGNATURE_WINDOW // 60} minutes off "
        "(401 APIGW.0303)"
    )
    if offset is None:
        return Check(
            name="clock",
            result=Result.WARN,
            meaning=f"the gateway sent no readable Date header: the skew is unknown; {limit}",
            proves=(8,),
        )
    way = "ahead of" if offset >= 0 else "behind"
    text = f"the gateway's clock is {abs(offset):.0f}s {way} this machine's; {limit}"
    fix = "set this machine's clock right (NTP: chronyc tracking / timedatectl status)"
    if abs(offset) > CLOCK_FAIL:
        return Check(name="clock", result=Result.FAIL, meaning=text, fix=fix, proves=(8,))
    if abs(offset) > CLOCK_WARN:
        return Check(name="clock", result=Result.WARN, meaning=text, fix=fix, proves=(8,))
    return Check(name="clock", result=Result.PASS, meaning=text, proves=(8,))


def permission_check(probe: Probe, answer: Answer) -> Check:
    """A probe's answer: a 403 names the action to grant and who needs it."""
    sent = (shown(probe.call),)
    name = f"permissions: {probe.name}"
    if answer.ok:
        return Check(
            name=name,
            result=Result.PASS,
            meaning=f"{probe.action} granted (needed by {probe.commands})",
            sent=sent,
            proves=(9,),
        )
    code = answer.error()[0]
    if answer.status == 403:
        return Check(
            name=name,
            result=Result.FAIL,
            meaning=f"refused ({said(answer)}): the IAM action {probe.action} is missing",
            fix=f"grant the IAM action {probe.action} to this user (needed by {probe.commands})",
            sent=sent,
            proves=(9,),
        )
    if answer.status == 404 and code in NO_SUCH_API:
        return Check(
            name=name,
            result=Result.FAIL,
            meaning=f"the gateway has no such API here ({said(answer)}): an API missing in the region, "
            "or a wrong endpoint; a 404 of the gateway is never 'gone'",
            fix="check --endpoint/--region; the region may not offer this API",
            sent=sent,
            proves=(4,),
        )
    return Check(
        name=name,
        result=Result.FAIL,
        meaning=f"answered {said(answer)}",
        fix="see the answer; run doctor again with --debug",
        sent=sent,
        proves=(9,),
    )


def ep_check(probe: Probe, everything: int, plain: int | None, answer: Answer) -> Check:
    """A list with ``all_granted_eps`` must show at least what it shows without."""
    name = f"enterprise projects: {probe.name}"
    sent = (shown(probe.call) + "?enterprise_project_id=all_granted_eps", shown(probe.call))
    if plain is None:
        return Check(
            name=name,
            result=Result.INFO,
            meaning=f"{everything} with all_granted_eps; without it: {said(answer)}",
            sent=sent,
            proves=(1,),
        )
    if everything >= plain:
        hidden = everything - plain
        note = (
            f": without it {hidden} would be hidden, and a lookup would read 'absent' and send a row "
            "again; the tool always sends all_granted_eps"
            if hidden
            else "; the tool always sends all_granted_eps"
        )
        return Check(
            name=name,
            result=Result.PASS,
            meaning=f"{everything} with all_granted_eps, {plain} without{note}",
            sent=sent,
            proves=(1,),
        )
    return Check(
        name=name,
        result=Result.FAIL,
        meaning=f"{everything} with all_granted_eps but {plain} without: the list the tool uses "
        "(all_granted_eps) hides some; a lookup could miss a snapshot and send its row again",
        fix="grant the user every enterprise project its disks are in (or use a user that has them)",
        sent=sent,
        proves=(1,),
    )


async def reach(url: URL, connection: Connection) -> Check:
    """DNS, TCP and TLS (with ``--ca-bundle``) to ``url``, each timed; no HTTP is sent."""
    import socket  # noqa: PLC0415

    from anyio.streams.tls import TLSStream  # noqa: PLC0415

    from orchestrator.api.session import proxy_for, ssl_context  # noqa: PLC0415

    host = url.host or ""
    port = url.port or (443 if url.scheme == "https" else 80)
    name = f"endpoint {host}:{port}"
    sent = (f"DNS, TCP{', TLS' if url.scheme == 'https' else ''} to {host}:{port} (no HTTP)",)
    proxy = proxy_for(url)
    if proxy is not None:
        return Check(
            name=name,
            result=Result.INFO,
            meaning=f"requests go through the proxy {proxy}: not reached directly",
            sent=(),
        )
    timeout = connection.limits.timeout
    steps: list[str] = []
    step = "DNS"
    try:
        with anyio.fail_after(timeout):
            started = time.monotonic()
            found = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            steps.append(f"DNS {1000 * (time.monotonic() - started):.0f} ms ({found[0][4][0]})")
            step = "TCP"
            started = time.monotonic()
            stream = await anyio.connect_tcp(str(found[0][4][0]), port)
            steps.append(f"TCP {1000 * (time.monotonic() - started):.0f} ms")
            async with stream:
                if url.scheme == "https":
                    step = "TLS"
                    started = time.monotonic()
                    tls = await TLSStream.wrap(
                        stream, hostname=host, ssl_context=ssl_context(connection.endpoints.ca_bundle)
                    )
                    steps.append(f"TLS {1000 * (time.monotonic() - started):.0f} ms")
                    await tls.aclose()
                else:
                    steps.append("plain http to a loopback address: no TLS")
    except TimeoutError:
        return Check(
            name=name,
            result=Result.FAIL,
            meaning=f"{step} did not finish within {timeout:g}s ({', '.join(steps) or 'nothing done'})",
            fix="check the network path, a firewall or proxy (HTTPS_PROXY), and --endpoint/--region",
            sent=sent,
        )
    except (OSError, anyio.BrokenResourceError, anyio.EndOfStream) as exc:  # gaierror, SSLError: OSErrors
        fix = {
            "DNS": "check --region/--endpoint (the host name) and this machine's DNS",
            "TCP": "check a firewall or proxy (HTTPS_PROXY) between here and the endpoint",
            "TLS": "pass --ca-bundle with the CA that signs the endpoint's certificate "
            "(a TLS-inspecting proxy?)",
        }[step]
        return Check(
            name=name,
            result=Result.FAIL,
            meaning=f"{step} failed: {exc or type(exc).__name__}"
            + (f" (after {', '.join(steps)})" if steps else ""),
            fix=fix,
            sent=sent,
        )
    return Check(name=name, result=Result.PASS, meaning=", ".join(steps), sent=sent)


def verdict(checks: Sequence[Check], where: str, *, live: bool) -> tuple[int, str]:
    """The exit code and the last line: 3 when stopped, 1 when a check fails, else 0."""
    stopped = [check for check in checks if check.result is Result.STOP]
    failed = [check.name for check in checks if check.result is Result.FAIL]
    if stopped:
        return 3, f"doctor stopped at {stopped[0].name} in {where}: {stopped[0].meaning}"
    if failed:
        what = "the assumptions evs-snapshot's exactly-once promise rests on" if live else "these checks"
        return 1, f"{what} do not hold in {where}: {', '.join(failed)}"
    if live:
        return 0, f"the assumptions evs-snapshot's exactly-once promise rests on hold in {where}"
    return (
        0,
        f"every read-only check passes in {where}; "
        "prove the rest with doctor --live VOLUME_ID on a scratch disk",
    )


def render(checks: Sequence[Check], last: str) -> str:
    """The table: check, result, what it means, how to fix (on its own line), then the last line."""
    width = max([len("CHECK"), *(len(check.name) for check in checks)])
    lines = [f"{'CHECK':<{width}}  RESULT  WHAT IT MEANS / HOW TO FIX"]
    for check in checks:
        lines.append(f"{check.name:<{width}}  {check.result.upper():<6}  {check.meaning}")
        if check.fix and check.result in (Result.FAIL, Result.STOP, Result.WARN):
            lines.append(f"{'':<{width}}  {'':<6}  fix: {check.fix}")
    lines.append(last)
    return "\n".join(lines) + "\n"
