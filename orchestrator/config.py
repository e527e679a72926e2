"""Frozen settings of a run (endpoints, limits, row defaults) and the functions that build them.

The credential kinds and the variables credentials come from are named here; ``api.credentials`` reads
them. yarl loads on the first URL made (``_url``): a dry run makes none (``benchmarks startup``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from orchestrator import defaults
from orchestrator.errors import UsageError
from orchestrator.models import RUN_STAMP, is_run_id

if TYPE_CHECKING:
    from yarl import URL

AuthKind = Literal["token", "aksk", "password"]
AUTH_KINDS: tuple[AuthKind, ...] = ("token", "aksk", "password")

# Every variable ``api.credentials`` takes credentials from (a path to them included): what a child
# process the tool starts (create's hooks) must not inherit.
CREDENTIAL_VARIABLES = (
    "OS_AUTH_TOKEN",
    "HUAWEICLOUD_SDK_AK",
    "HUAWEICLOUD_SDK_SK",
    "HUAWEICLOUD_SDK_SECURITY_TOKEN",
    "HUAWEICLOUD_SDK_CREDENTIALS_FILE",
    "OS_USERNAME",
    "OS_PASSWORD",
    "OS_USER_DOMAIN_NAME",
)

# ASCII digits only (``\d`` takes any script's: a fullwidth four (U+FF14) named a region, and a marker), and
# ``\Z``, not ``$`` (which lets a trailing newline through ``match``).
REGION_RE = re.compile(r"[a-z]{2,}(-[a-z]+)+-[0-9]{1,3}\Z")
PROJECT_RE = re.compile(r"[0-9a-f]{32}\Z")
HOST_RE = re.compile(r"[A-Za-z0-9._:%-]+")  # a name, IPv4 or IPv6 (punycode for IDN)
SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:/+")  # "https://", and typed "https:/" too
QUERY_RE = re.compile(r"\?[^#]*")
FRAGMENT_RE = re.compile(r"#.*", flags=re.DOTALL)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class RunIdentity:
    """What names a run: its id and start time (kept across --resume so names stay the same)."""

    run_id: str
    started: datetime
    day: str = dataclasses.field(init=False)  # {date}: run start, UTC YYYYMMDD
    stamp: str = dataclasses.field(init=False)  # {datetime}: run start, UTC YYYYMMDDTHHMMSSZ

    def __post_init__(self) -> None:
        object.__setattr__(self, "day", self.started.strftime("%Y%m%d"))
        object.__setattr__(self, "stamp", self.started.strftime(RUN_STAMP))

    @staticmethod
    def well_formed(run_id: str) -> bool:
        """``run_id`` has the form ``new`` gives (start time, ``-``, six hex digits): a run of the tool."""
        return is_run_id(run_id)

    @classmethod
    def new(cls, started: datetime) -> RunIdentity:
        """A fresh identity; the id starts with the start time so that a resumed run can recover it."""
        return cls(run_id=f"{started.strftime(RUN_STAMP)}-{os.urandom(3).hex()}", started=started)

    @classmethod
    def resumed(cls, run_id: str) -> RunIdentity:
        """The identity of the run a report belongs to (names render exactly as they did)."""
        try:
            stamp = run_id.split("-", maxsplit=1)[0]
            started = datetime.strptime(stamp, RUN_STAMP).replace(tzinfo=UTC)
        except ValueError:
            raise UsageError(
                f"the report's run_id {run_id!r} was not written by this tool's create"
            ) from None
        return cls(run_id=run_id, started=started)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class RowDefaults:
    """Values a manifest row falls back to when it does not give its own."""

    name_template: str = defaults.NAME_TEMPLATE
    description: str | None = None
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)
    force: bool = False
    project_id: str | None = None
    region: str | None = None
    hold: str | None = None  # create --hold REASON: the evs_snapshot_hold key on every snapshot


# Regions with an IAM endpoint of their own in the official SDK's table; others use the global one.
IAM_REGIONS = frozenset(
    {
        *("cn-north-1", "cn-north-2", "cn-north-4", "cn-north-9", "cn-north-12", "cn-east-2", "cn-east-3"),
        *("cn-east-4", "cn-east-5", "cn-south-1", "cn-south-2", "cn-southwest-2", "ap-southeast-1"),
        *("ap-southeast-2", "ap-southeast-3", "ap-southeast-4", "af-south-1", "sa-brazil-1", "la-south-2"),
        *("la-north-2", "na-mexico-1", "eu-west-0", "my-kualalumpur-1", "ru-moscow-1", "me-east-1"),
        *("ae-ad-1", "tr-west-1"),
    }
)
GLOBAL_IAM = "https://iam.myhuaweicloud.com"


def environment() -> Mapping[str, str]:
    """The process environment (a function, so callers pass it explicitly and tests pass their own)."""
    return os.environ


def _url(text: str, *, encoded: bool = False) -> URL:
    """``yarl.URL(text)``, yarl imported on first use: 26 M instructions a dry run, which makes no URL,
    does not pay (``benchmarks startup``)."""
    from yarl import URL  # noqa: PLC0415 - see the docstring

    return URL(text, encoded=encoded)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class Endpoints:
    """Where requests go.

    EVS: ``evs`` for every row when set (``--endpoint``), else a per-region override (the SDK's
    ``HUAWEICLOUD_SDK_REGION_EVS_{REGION}`` variables), else ``https://evs.{region}.myhuaweicloud.com``.
    IAM: ``iam`` when set, else the IAM of ``home_region`` when it has one, else the global IAM.
    """

    evs: URL | None = None
    regions: Mapping[str, URL] = dataclasses.field(default_factory=dict)
    iam: URL | None = None
    home_region: str | None = None
    ca_bundle: Path | None = None

    @property
    def region_required(self) -> bool:
        """A row needs a region (its own or ``--region``) to be sent: no ``--endpoint`` takes every row."""
        return self.evs is None

    def evs_for(self, region: str | None) -> URL:
        if self.evs is not None:
            return self.evs
        if region is None:
            raise UsageError(
                "a row has no region and no --endpoint was given: pass the --endpoint (or --region) "
                "the run used"
            )
        return self.regions.get(region) or _url(f"https://evs.{region}.myhuaweicloud.com")

    def iam_url(self) -> URL:
        if self.iam is not None:
            return self.iam
        if self.home_region in IAM_REGIONS:
            return _url(f"https://iam.{self.home_region}.myhuaweicloud.com")
        return _url(GLOBAL_IAM)


def region_overrides(environ: Mapping[str, str]) -> dict[str, URL]:
    """``HUAWEICLOUD_SDK_REGION_EVS_CN_NORTH_4=url[,url]`` variables as ``{"cn-north-4": URL}``."""
    prefix = "HUAWEICLOUD_SDK_REGION_EVS_"
    found = {}
    for name, value in environ.items():
        if name.startswith(prefix) and value.strip():
            region = name.removeprefix(prefix).lower().replace("_", "-")
            found[region] = parse_endpoint(value.split(",")[0].strip(), option=name)
    return found


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class Limits:
    """How hard a run may push: requests in flight and the time one request may take."""

    concurrency: int = defaults.CONCURRENCY
    timeout: float = defaults.TIMEOUT


def parse_endpoint(value: str, *, option: str) -> URL:
    """An endpoint URL: https, or plain http to a loopback address only.

    Errors show the value with any ``user:password@`` part masked: a secret typed into a URL must not
    reach the terminal or a log.
    """
    shown = redact_url(value)
    try:
        url = _url(value.strip().rstrip("/"))
        host = url.raw_host
    except ValueError as exc:
        raise UsageError(f"{option} {shown!r} is not a valid URL ({exc}); use https://host[:port]") from None
    if url.scheme not in ("http", "https") or not host:
        raise UsageError(f"{option} {shown!r} is not an http(s) URL; use https://host[:port]")
    if url.raw_user is not None or url.raw_password is not None:
        raise UsageError(
            f"{option} {shown!r} carries a user name or password; remove it: credentials come from "
            "the environment or files (OS_AUTH_TOKEN, HUAWEICLOUD_SDK_AK/SK, OS_USERNAME/OS_PASSWORD), "
            "never from a URL"
        )
    if not HOST_RE.fullmatch(host):
        raise UsageError(f"{option} {shown!r} has an invalid host name; use https://host[:port]")
    if url.scheme == "http" and not is_loopback(host):
        raise UsageError(
            f"{option} {shown!r} uses plain http to a non-loopback host; use https "
            "(plain http is allowed only to 127.0.0.0/8, ::1 or localhost)"
        )
    if url.path not in ("", "/") or url.query_string or url.raw_fragment:
        raise UsageError(f"{option} {shown!r} must be scheme://host[:port] with no path, query or fragment")
    return url.with_path("")


def redact_url(value: str) -> str:
    """``value`` as it may be shown (parseable or not): a query string becomes ``?***``, a fragment
    ``#***``, and all before the last ``@`` ahead of them ``***@`` (after the scheme and its slashes, if
    any): a ``user:password@`` part, even with no scheme, one slash, or a ``/`` in the password (an
    ``@`` in a path masks the host too). The one masking function of URLs in messages and logs."""
    cut = len(value) if (end := re.search(r"[?#]", value)) is None else end.start()
    head, tail = value[:cut], value[cut:]
    at = head.rfind("@")
    if at >= 0:
        scheme = SCHEME_RE.match(head)
        start = 0 if scheme is None else scheme.end()
        head = head[:start] + "***" + head[at:] if start <= at else head
    return head + FRAGMENT_RE.sub("#***", QUERY_RE.sub("?***", tail, count=1), count=1)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_metadata_options(items: tuple[str, ...]) -> dict[str, str]:
    """``--metadata KEY=VALUE`` options into a mapping (later ones win)."""
    metadata = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--metadata {item!r} must look like KEY=VALUE")
        metadata[key] = value
    return metadata


def check_project_id(value: str | None, *, option: str) -> str | None:
    if value is not None and not PROJECT_RE.match(value):
        raise UsageError(f"{option} {value!r} must be 32 lower-case hex characters")
    return value


def check_region(value: str | None, *, option: str) -> str | None:
    if value is not None and not REGION_RE.match(value):
        raise UsageError(f"{option} {value!r} is not a region id like cn-north-4")
    return value


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class Connection:
    """How to reach and authenticate to the service (shared by create, wait and validate --online)."""

    endpoints: Endpoints
    limits: Limits = dataclasses.field(default_factory=Limits)
    auth_kind: AuthKind | None = None
    token_file: Path | None = None
    max_rps: float | None = None
    environ: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def files(self) -> tuple[str, ...]:
        """The files the connection reads (``--token-file``, ``--ca-bundle``): no side file may name one."""
        return tuple(str(path) for path in (self.token_file, self.endpoints.ca_bundle) if path is not None)

    def recorded(self) -> dict[str, str]:
        """The connection options given (``endpoint``, ``iam_endpoint``, ``ca_bundle``, ``auth``), for a
        report's header: where the requests went, never a credential (a URL here has no user or query)."""
        endpoints = self.endpoints
        given = {
            "endpoint": endpoints.evs,
            "iam_endpoint": endpoints.iam,
            "ca_bundle": None if endpoints.ca_bundle is None else endpoints.ca_bundle.resolve(),
            "auth": self.auth_kind,
        }
        return {key: str(value) for key, value in given.items() if value is not None}


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class WaitPlan:
    """How long to wait in all, and how often to look (the interval grows by half up to its maximum)."""

    timeout: float = defaults.WAIT_TIMEOUT
    interval: float = defaults.POLL_INTERVAL
    max_interval: float = 60.0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class Notify:
    """Where a run says it started and ended (``--ping-url``, ``--webhook``), and how patiently.

    Best effort: each request may take ``timeout`` seconds and is tried ``attempts`` times (pauses of
    up to ``pause`` seconds, doubling); all attempts of one URL together take at most ``budget``.
    """

    ping_url: str | None = None
    webhooks: tuple[str, ...] = ()
    timeout: float = defaults.NOTIFY_TIMEOUT
    attempts: int = defaults.NOTIFY_ATTEMPTS
    pause: float = defaults.NOTIFY_PAUSE

    @property
    def budget(self) -> float:
        """Seconds one URL may cost a run at most, pauses included (30 s by default)."""
        return self.timeout * self.attempts

    def __bool__(self) -> bool:
        return self.ping_url is not None or bool(self.webhooks)


def parse_notify_url(value: str, *, option: str) -> str:
    """A notification URL: http(s) with a host, plain http to a loopback address only; it may carry a
    path, a query and ``user:password@`` (all kept, none shown: errors use ``redact_url``)."""
    shown = redact_url(value.strip())
    try:
        url = _url(value.strip(), encoded=True)
        host = url.raw_host
    except ValueError as exc:
        raise UsageError(f"{option} {shown!r} is not a valid URL ({exc})") from None
    if url.scheme not in ("http", "https") or not host:
        raise UsageError(f"{option} {shown!r} is not an http(s) URL")
    if url.scheme == "http" and not is_loopback(host):
        raise UsageError(
            f"{option} {shown!r} uses plain http to a non-loopback host; use https "
            "(plain http is allowed only to 127.0.0.0/8, ::1 or localhost)"
        )
    if url.raw_fragment:
        raise UsageError(f"{option} {shown!r} has a fragment (#...); remove it")
    return value.strip()


def check_auth_kind(value: str | None) -> AuthKind | None:
    for kind in AUTH_KINDS:
        if value == kind:
            return kind
    if value is not None:
        raise UsageError(f"--auth {value!r} must be one of {', '.join(AUTH_KINDS)}")
    return None


def file_in_the_way(path: Path) -> Path | None:
    """The ancestor of ``path`` that is a file, not a directory (so ``path`` cannot be made), or ``None``."""
    for parent in path.parents:
        try:
            is_dir = parent.is_dir()
            exists = is_dir or parent.exists()
        except OSError:  # a parent further up is a file (ENOTDIR), or not readable: keep looking
            continue
        if exists:
            return None if is_dir else parent
    return None
