"""The run's one aiohttp session and ``Caller``, which sends one request to one base URL.

The only place aiohttp errors are caught: every call returns an ``Answer`` for any HTTP status; a
request that got no HTTP answer raises ``TransportError`` (``RequestTimeout`` when it ran out of time).
"""

from __future__ import annotations

import asyncio
import platform
import ssl
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from yarl import URL

from orchestrator import __version__
from orchestrator.api import signing, tls
from orchestrator.api.credentials import AkSkAuth, Authenticator, OutgoingRequest
from orchestrator.api.tls import aiohttp
from orchestrator.errors import RequestTimeout, TransportError
from orchestrator.models import Answer

USER_AGENT = f"evs-snapshot/{__version__} python/{platform.python_version()}"
JSON_CONTENT_TYPE = "application/json;charset=utf-8"
URL_CACHE_SIZE = 64
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
    ) -> Answer:
        """Send one request and return its answer; raise ``TransportError`` when none came."""
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
