"""The run's one aiohttp session; ``Caller``, which sends one request to one base URL; ``Endpoint``,
which finds a base URL (EVS or IAM) that cannot be reached.

The only place aiohttp errors are caught: every call returns an ``Answer`` for any HTTP status; a
request that got no HTTP answer raises ``TransportError`` (``RequestTimeout`` when it ran out of time).
"""

from __future__ import annotations

import asyncio
import platform
import ssl
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from yarl import URL

from orchestrator import __version__
from orchestrator.api import signing, tls
from orchestrator.api.credentials import AkSkAuth, Authenticator, OutgoingRequest
from orchestrator.api.tls import aiohttp
from orchestrator.errors import Closure, RequestTimeout, TransportError
from orchestrator.models import Answer

USER_AGENT = f"evs-snapshot/{__version__} python/{platform.python_version()}"
JSON_CONTENT_TYPE = "application/json;charset=utf-8"
URL_CACHE_SIZE = 64
UNREACHABLE_AFTER = 3  # connect, DNS or TLS failures in a row, and no answer yet: the endpoint is closed
# aiohttp gives a POST, PUT or PATCH without a Content-Type one (``application/octet-stream``), which
# the SDK never sends without a body: a request without a body skips it. One with a body has its own
# (``Caller.call``), and asks no skip: a skip builds two header dicts a request in aiohttp.
NO_CONTENT_TYPE = ("Content-Type",)


def proxy_for(url: URL) -> str | None:
    """The proxy the environment names for ``url`` (``HTTPS_PROXY``/``HTTP_PROXY``, minus ``NO_PROXY``)."""
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(url.scheme)
    if not proxy or urllib.request.proxy_bypass(url.host or ""):
        return None
    return proxy


def new_session(*, connections: int, ca_bundle: Path | None = None) -> aiohttp.ClientSession:
    """One session for a run: each endpoint's connection pool is as large as the worker count.

    TLS contexts are given per request (``Caller``), built only when a request goes to https; a
    ``--ca-bundle`` is read here, so that an unreadable one is a usage error before anything is sent."""
    if ca_bundle is not None:
        tls.context(ca_bundle)
    # The workers bound what is in flight; each endpoint (host) gets its own pool of that size.
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=connections, ttl_dns_cache=300)
    # trust_env would look up netrc and proxies in a thread on every request; Caller does it once.
    return aiohttp.ClientSession(connector=connector, raise_for_status=False)


class Caller:
    """Sends one request to one base URL and returns its ``Answer`` (shared by EVS and IAM calls)."""

    def __init__(
        self, session: aiohttp.ClientSession, base_url: URL, *, timeout: float, ca_bundle: Path | None = None
    ) -> None:
        self.session = session
        self.base_url = base_url
        self.ca_bundle = ca_bundle
        self.tls: ssl.SSLContext | bool | None = None  # ``tls.for_url``, on the first request
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.proxy = proxy_for(base_url)
        self._urls: dict[str, URL] = {}  # paths without ids only (the create path), so it stays small

    async def call(
        self,
        method: str,
        path: str,
        *,
        auth: Authenticator | None,
        project_id: str | None = None,
        query: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        before: Callable[[], None] | None = None,
    ) -> Answer:
        """Send one request and return its answer; raise ``TransportError`` when none came.

        ``before`` runs once the request has its credentials, just before it leaves (the journal's
        ``sending`` line): a request that could not get them (IAM) never left, and runs nothing."""
        query_string = signing.canonical_query(query) if query else ""
        target = f"{path}?{query_string}" if query_string else path
        url = self._urls.get(target)
        if url is None:
            url = URL(f"{self.base_url}{target}", encoded=True)
            if not query_string and len(self._urls) < URL_CACHE_SIZE:
                self._urls[target] = url
        # The SDK sends a Content-Type only with a body (evs-api.md 10): it is a signed header.
        headers = (
            {"Content-Type": JSON_CONTENT_TYPE, "User-Agent": USER_AGENT}
            if body
            else {"User-Agent": USER_AGENT}
        )
        # Made in C (one a request: no __new__ frame), its fields in order: method, url, headers, body,
        # project_id.
        outgoing = tuple.__new__(OutgoingRequest, (method, url, headers, body, project_id))
        if type(auth) is AkSkAuth:  # a signature: no coroutine to make and await a request
            auth.sign(outgoing)
        elif auth is not None:
            try:
                await auth.authorize(outgoing)
            except TransportError as exc:  # IAM could not be reached: this request was never sent
                raise TransportError(
                    f"getting credentials: {exc}",
                    code=exc.code,
                    may_have_arrived=False,
                    from_iam=True,
                ) from exc
        if before is not None:
            before()
        context = self.tls
        if context is None:
            context = self.tls = tls.for_url(self.base_url, self.ca_bundle)
        try:
            async with self.session.request(
                method,
                url,
                data=body or None,
                headers=outgoing.headers,
                skip_auto_headers=None if body else NO_CONTENT_TYPE,
                timeout=self.timeout,
                proxy=self.proxy,
                ssl=context,
            ) as response:
                raw = await response.read()
                got = response.headers.get
                # Made in C (one a request: no __new__ frame), its fields in order: status, body,
                # request_id, retry_after, subject_token, sent_with, date.
                return tuple.__new__(
                    Answer,
                    (
                        response.status,
                        _parse(raw),
                        got("X-Request-Id"),
                        got("Retry-After"),
                        got("X-Subject-Token"),
                        outgoing.headers.get("X-Auth-Token"),
                        got("Date"),
                    ),
                )
        except TimeoutError as exc:
            raise RequestTimeout(f"no answer from {self.base_url} within {self.timeout.total:g}s") from exc
        except aiohttp.ClientSSLError as exc:
            raise TransportError(
                f"TLS with {self.base_url} failed: {exc}", code="TLS_ERROR", may_have_arrived=False
            ) from exc
        except aiohttp.ClientConnectorError as exc:
            raise TransportError(_describe(exc), code="CONNECT_FAILED", may_have_arrived=False) from exc
        except aiohttp.ClientError as exc:
            raise TransportError(_describe(exc)) from exc
        except (OSError, asyncio.IncompleteReadError) as exc:
            raise TransportError(f"connection to {self.base_url} failed: {exc.__class__.__name__}") from exc


class Endpoint:
    """One base URL (an EVS endpoint, or IAM): its caller, and whether it has been found unreachable
    (``UNREACHABLE_AFTER`` connect, DNS or TLS failures in a row before it ever answered). ``label``
    names it in the closure's message, ``advice`` says what to check."""

    def __init__(
        self, caller: Caller, *, label: str = "", advice: str = "check --endpoint/--region and the network"
    ) -> None:
        self.caller = caller
        self.label = label
        self.advice = advice
        self.answered = False
        self.connect_failures = 0
        self.closure: Closure | None = None

    @property
    def url(self) -> URL:
        return self.caller.base_url

    def check_open(self) -> None:
        """Raise a fresh ``RouteClosed`` when the endpoint was found unreachable."""
        if self.closure is not None:
            raise self.closure.error()

    def on_transport_error(self, exc: TransportError) -> None:
        if self.answered or exc.may_have_arrived or exc.from_iam:
            return
        self.connect_failures += 1
        if self.connect_failures >= UNREACHABLE_AFTER:
            self.closure = Closure(
                "ENDPOINT_UNREACHABLE",
                f"{self.label}{self.url} cannot be reached ({self.connect_failures} attempts in a row: "
                f"{exc}); {self.advice}",
            )

    def on_answer(self) -> None:
        self.answered = True
        self.connect_failures = 0


def _parse(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {"message": raw[:200].decode("utf-8", errors="replace")}


def _describe(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection before answering"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port}: {exc.strerror or exc.__class__.__name__}"
    return f"{exc.__class__.__name__}: {exc}"
