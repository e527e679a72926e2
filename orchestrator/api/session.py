"""EVS API calls over an injected aiohttp session; the only place aiohttp errors are caught.

Every call returns an ``Answer`` for any HTTP status; a request that got no HTTP answer raises
``TransportError`` (``RequestTimeout`` when it ran out of time).
"""

from __future__ import annotations

import asyncio
import platform
import ssl
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from yarl import URL

from orchestrator import __version__
from orchestrator.api import signing
from orchestrator.api.credentials import Authenticator, OutgoingRequest
from orchestrator.errors import RequestTimeout, TransportError, UsageError
from orchestrator.models import Answer, SnapshotRequest

USER_AGENT = f"evs-snapshot/{__version__} python/{platform.python_version()}"
JSON_CONTENT_TYPE = "application/json;charset=utf-8"


def proxy_for(url: URL) -> str | None:
    """The proxy the environment names for ``url`` (``HTTPS_PROXY``/``HTTP_PROXY``, minus ``NO_PROXY``)."""
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(url.scheme)
    if not proxy or urllib.request.proxy_bypass(url.host or ""):
        return None
    return proxy


def ssl_context(ca_bundle: Path | None) -> ssl.SSLContext:
    """Verified TLS with the system CAs, plus ``--ca-bundle`` when given."""
    context = ssl.create_default_context()
    if ca_bundle is not None:
        try:
            context.load_verify_locations(cafile=str(ca_bundle))
        except (ssl.SSLError, OSError) as exc:
            raise UsageError(
                f"--ca-bundle {ca_bundle}: not a readable PEM file of CA certificates ({exc})"
            ) from None
    return context


def new_session(*, connections: int, ca_bundle: Path | None = None) -> aiohttp.ClientSession:
    """One session for a run: each endpoint's connection pool is as large as the worker count."""
    # The workers bound what is in flight; each endpoint (host) gets its own pool of that size.
    connector = aiohttp.TCPConnector(
        limit=0, limit_per_host=connections, ssl=ssl_context(ca_bundle), ttl_dns_cache=300
    )
    # trust_env would look up netrc and proxies in a thread on every request; Caller does it once.
    return aiohttp.ClientSession(
        connector=connector,
        skip_auto_headers=("Content-Type",),
        raise_for_status=False,
    )


class Caller:
    """Sends one request to one base URL and returns its ``Answer`` (shared by EVS and IAM calls)."""

    def __init__(self, session: aiohttp.ClientSession, base_url: URL, *, timeout: float) -> None:
        self.session = session
        self.base_url = base_url
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.proxy = proxy_for(base_url)
        self._urls: dict[str, URL] = {}

    async def call(
        self,
        method: str,
        path: str,
        *,
        auth: Authenticator | None,
        project_id: str | None = None,
        query: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> Answer:
        """Send one request and return its answer; raise ``TransportError`` when none came."""
        query_string = signing.canonical_query(query)
        target = f"{path}?{query_string}" if query_string else path
        url = self._urls.get(target)
        if url is None:
            url = URL(f"{self.base_url}{target}", encoded=True)
            if not query_string:  # the create path repeats for every row; queries vary
                self._urls[target] = url
        outgoing = OutgoingRequest(
            method=method,
            url=url,
            headers={"Content-Type": JSON_CONTENT_TYPE, "User-Agent": USER_AGENT},
            body=body,
            project_id=project_id,
        )
        if auth is not None:
            try:
                await auth.authorize(outgoing)
            except TransportError as exc:  # IAM could not be reached: this request was never sent
                raise TransportError(
                    f"getting credentials: {exc}", code=exc.code, may_have_arrived=False
                ) from exc
        try:
            async with self.session.request(
                method,
                url,
                data=body or None,
                headers=outgoing.headers,
                timeout=self.timeout,
                proxy=self.proxy,
            ) as response:
                raw = await response.read()
                return Answer(
                    status=response.status,
                    body=_parse(raw),
                    request_id=response.headers.get("X-Request-Id"),
                    retry_after=response.headers.get("Retry-After"),
                    subject_token=response.headers.get("X-Subject-Token"),
                    sent_with=outgoing.headers.get("X-Auth-Token"),
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


class EvsClient:
    """Calls of the EVS v2 snapshot API on one endpoint, authorized by an injected authenticator."""

    def __init__(self, caller: Caller, auth: Authenticator) -> None:
        self.caller = caller
        self.auth = auth

    @property
    def base_url(self) -> URL:
        return self.caller.base_url

    async def create_snapshot(self, request: SnapshotRequest, project_id: str) -> Answer:
        body = orjson.dumps(request.body())
        return await self.caller.call(
            "POST", f"/v2/{project_id}/cloudsnapshots", auth=self.auth, project_id=project_id, body=body
        )

    async def list_snapshots(self, project_id: str, query: Sequence[tuple[str, str]]) -> Answer:
        return await self.caller.call(
            "GET",
            f"/v2/{project_id}/cloudsnapshots/detail",
            auth=self.auth,
            project_id=project_id,
            query=query,
        )

    async def show_snapshot(self, project_id: str, snapshot_id: str) -> Answer:
        return await self.caller.call(
            "GET", f"/v2/{project_id}/cloudsnapshots/{snapshot_id}", auth=self.auth, project_id=project_id
        )

    async def show_volume(self, project_id: str, volume_id: str) -> Answer:
        return await self.caller.call(
            "GET", f"/v2/{project_id}/cloudvolumes/{volume_id}", auth=self.auth, project_id=project_id
        )


class IamClient:
    """The two IAM calls the tool makes: a password token, and the project of a region."""

    def __init__(self, caller: Caller) -> None:
        self.caller = caller

    async def password_token(self, *, user: str, password: str, domain: str, scope: dict[str, str]) -> Answer:
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {"user": {"name": user, "password": password, "domain": {"name": domain}}},
                },
                "scope": {"project": scope},
            }
        }
        return await self.caller.call(
            "POST", "/v3/auth/tokens", auth=None, query=[("nocatalog", "true")], body=orjson.dumps(body)
        )

    async def projects(self, region: str, auth: Authenticator) -> Answer:
        return await self.caller.call("GET", "/v3/projects", auth=auth, query=[("name", region)])


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
