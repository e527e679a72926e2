"""What ``doctor`` finds: the checks' rows (``Check``), the read APIs it probes, how each answer is
judged (a 403 names the IAM action, a gateway 404 an API missing in the region, the clock's skew, an
enterprise-project difference), the endpoint's reach (DNS, TCP, TLS), the table and the exit code.

The numbers in ``Check.proves`` are the assumptions of issue 20 ("Why", 1 to 9): (1) enterprise-project
scoping of the snapshot list, (2) the tag search's scope, (3) offset paging over a changing list, (4) a
404 is "gone" only with the resource's code, (5) backup-made snapshots, (6) rollback from
``error_rollbacking``, (7) requests as the SDK sends them, (8) clock skew, (9) permissions.
"""

from __future__ import annotations

import dataclasses
import enum
import socket
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import anyio
from anyio.streams.tls import TLSStream

from orchestrator.api import evs
from orchestrator.api.clock import SIGNATURE_WINDOW
from orchestrator.api.credentials import AkSkAuth, TokenAuth
from orchestrator.api.probe import said, shown
from orchestrator.errors import RunAborted
from orchestrator.models import NO_SUCH_API

if TYPE_CHECKING:
    from yarl import URL

    from orchestrator.api.routes import Router
    from orchestrator.config import Connection
    from orchestrator.models import Answer

CLOCK_WARN = 60.0  # seconds of skew that earn a warning
CLOCK_FAIL = 600.0  # and a failure: well inside the gateway's 15 minutes, with room for drift
SIGNATURE_EXPIRED = frozenset({"APIGW.0303", "APIG.0303"})
TAG_PROBE_KEY = "evs_snapshot_doctor"  # the tag search needs a key; any key proves the permission


class Result(enum.StrEnum):
    PASS = "pass"  # noqa: S105 - a result, not a password
    WARN = "warn"  # worth knowing; does not fail the doctor
    FAIL = "fail"
    INFO = "info"  # not probed (write actions), or nothing to compare
    STOP = "stop"  # the endpoint or the credentials stop the doctor here: exit 3


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
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


@dataclasses.dataclass(frozen=True, slots=True, eq=False, repr=False)
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


def denied_action(method: str, path: str) -> str:
    """What a 403 to one of the commands' read calls means: the IAM action to grant, when it is a call
    doctor probes (matched by method and path), else that a permission is missing."""
    parts = path.split("/")
    project = parts[2] if len(parts) > 2 else ""
    for probe in probes(project):
        if (probe.call.method, probe.call.path) == (method, path):
            return f"the IAM action {probe.action} is missing (grant it; needed by {probe.commands})"
    return "a permission is missing (`evs-snapshot doctor` names the IAM actions the commands need)"


def accepted(answer: Answer) -> str:
    """How an authenticated answer reads in the credentials check."""
    if answer.ok:
        return f"answered {answer.status}"
    code = answer.error()[0]
    return f"answered {answer.status} {code}: a refusal by policy, not of the credentials; see permissions"


def credential_source(router: Router, connection: Connection) -> str:
    """Which source the credentials came from, in the words of the docs."""

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


def lifetime_note(router: Router, project_id: str) -> str:
    """What the tool knows of how long the credentials last."""
    from orchestrator.api.iam import PasswordAuth  # noqa: PLC0415 - aiohttp: 65 ms of doctor --help (results.md)

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
    left = auth.seconds_left(project_id) if isinstance(auth, PasswordAuth) else None
    now = "" if left is None else f" (this one: {left / 3600:.1f} h left)"
    return f"a token is asked of IAM per project{now} and renewed before it expires"


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
    """A list with ``all_granted_eps`` must show at least what it shows without; when both show
    nothing, nothing was compared (INFO, not a PASS)."""
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
    if everything == plain == 0:
        return Check(
            name=name,
            result=Result.INFO,
            meaning=f"not checked: no {probe.name.split()[0]} is listed, with all_granted_eps or without: "
            "nothing to compare",
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

    from orchestrator.api.session import proxy_for  # noqa: PLC0415 - as above
    from orchestrator.api.tls import context  # noqa: PLC0415 - as above

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
                        stream, hostname=host, ssl_context=context(connection.endpoints.ca_bundle)
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
    """The exit code and the last line: a stopped run's (3) when stopped, 1 when a check fails, else 0."""
    stopped = [check for check in checks if check.result is Result.STOP]
    failed = [check.name for check in checks if check.result is Result.FAIL]
    if stopped:
        return RunAborted.exit_code, f"doctor stopped at {stopped[0].name} in {where}: {stopped[0].meaning}"
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


def groups_check(answer: Answer, sent: tuple[str, ...]) -> Check:
    """Whether the region answers the v5 snapshot-group list (``create --consistency server``)."""
    name = "snapshot groups"
    if answer.ok:
        return Check(
            name=name,
            result=Result.PASS,
            meaning="the v5 snapshot-group list answers: create --consistency server can make one "
            "crash-consistent group per server here",
            sent=sent,
        )
    if answer.status == 404 and answer.error()[0] in NO_SUCH_API:
        return Check(
            name=name,
            result=Result.INFO,
            meaning=f"no snapshot groups here ({said(answer)}): create --consistency server exits 2",
            fix="use --consistency disk (the default), with --pre-hook/--post-hook to freeze file systems",
            sent=sent,
        )
    if answer.status == 403:
        return Check(
            name=name,
            result=Result.WARN,
            meaning=f"the v5 snapshot-group list was refused ({said(answer)})",
            fix="grant evs:snapshots:list for the v5 API, or use --consistency disk",
            sent=sent,
        )
    return Check(
        name=name,
        result=Result.WARN,
        meaning=f"the v5 snapshot-group list did not answer ({said(answer)}): not known here",
        fix="run doctor again; a server error is the service's, not a missing grant",
        sent=sent,
    )
