"""Where each row goes: its endpoint and project, and whether that route still accepts our credentials.

A route is one (EVS endpoint, project) pair. When the service refuses the credentials themselves on a
route (any 401, or a 403 before anything on it succeeded), the route is closed: rows not yet sent to
it end ``failed`` with that error, without a request, and the run exits 3.
"""

from __future__ import annotations

import contextlib
import dataclasses

import aiohttp
from yarl import URL

from orchestrator.api.credentials import Authenticator, PasswordCredentials, discover
from orchestrator.api.iam import PasswordAuth, ProjectResolver
from orchestrator.api.session import Caller, EvsClient, IamClient, new_session
from orchestrator.config import Connection, Endpoints
from orchestrator.errors import CredentialsRefused
from orchestrator.models import Answer, SnapshotRequest
from orchestrator.throttle import RateLimiter


@dataclasses.dataclass(slots=True)
class Route:
    """One endpoint and project; ``refused`` holds the error that closed it."""

    client: EvsClient
    project_id: str
    limiter: RateLimiter
    refused: CredentialsRefused | None = None
    succeeded: bool = False

    def observe(self, answer: Answer) -> None:
        """Close the route when an answer refuses the credentials; note successes."""
        if answer.ok:
            self.succeeded = True
            return
        if answer.status == 401 or (answer.status == 403 and not self.succeeded):
            code, message = answer.error()
            self.refused = CredentialsRefused(
                code, f"{self.client.base_url} answered {answer.status}: {message}"
            )

    @property
    def name(self) -> str:
        return f"{self.client.base_url} project {self.project_id}"


class Router:
    """Builds and keeps the routes of a run, resolving missing project ids through IAM."""

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        auth: Authenticator,
        endpoints: Endpoints,
        timeout: float,
        resolver: ProjectResolver | None,
        max_rps: float | None = None,
    ) -> None:
        self.session = session
        self.auth = auth
        self.endpoints = endpoints
        self.timeout = timeout
        self.resolver = resolver
        self.max_rps = max_rps
        self.routes: dict[tuple[URL, str], Route] = {}
        self.clients: dict[URL, EvsClient] = {}
        self.refused: CredentialsRefused | None = None

    async def route_for(self, request: SnapshotRequest) -> Route:
        """The route of a row.

        Raises ``ProjectLookupFailed``, ``CredentialsRefused`` or ``TransportError``.
        """
        if self.refused is not None:
            raise self.refused
        project = request.project_id
        if project is None:
            if self.resolver is None or request.region is None:
                raise ValueError("a row without project_id needs a region and an IAM endpoint")
            try:
                project = await self.resolver.project_for(request.region)
            except CredentialsRefused as exc:
                self.refused = exc  # IAM refused the credentials: nothing can be sent anywhere
                raise
        return self.route_at(request.region, project)

    def route_at(self, region: str | None, project_id: str) -> Route:
        """The route of a known endpoint region and project (for records that already went out)."""
        base = self.endpoints.evs_for(region)
        route = self.routes.get((base, project_id))
        if route is None:
            client = self.clients.get(base)
            if client is None:
                client = self.clients[base] = EvsClient(
                    Caller(self.session, base, timeout=self.timeout), self.auth
                )
            route = self.routes[(base, project_id)] = Route(client, project_id, RateLimiter(self.max_rps))
        return route

    def closed(self) -> list[CredentialsRefused]:
        """Every refusal that closed a route (or the whole run), for the closing message."""
        found = [route.refused for route in self.routes.values() if route.refused is not None]
        if self.refused is not None:
            found.insert(0, self.refused)
        return found

    @property
    def throttled(self) -> int:
        return sum(route.limiter.throttled for route in self.routes.values())


async def connect(stack: contextlib.AsyncExitStack, connection: Connection) -> Router:
    """Find the credentials, open the run's one HTTP session (closed with ``stack``), build the router."""
    found = discover(
        environ=connection.environ,
        forced=connection.auth_kind,  # type: ignore[arg-type]
        token_file=connection.token_file,
    )
    limits = connection.limits
    session = await stack.enter_async_context(
        new_session(connections=limits.concurrency, ca_bundle=connection.endpoints.ca_bundle)
    )
    iam = IamClient(Caller(session, connection.endpoints.iam_url(), timeout=limits.timeout))
    auth: Authenticator
    if isinstance(found, PasswordCredentials):
        auth = PasswordAuth(user=found.user, password=found.password, domain=found.domain, iam=iam)
    else:
        auth = found
    return Router(
        session=session,
        auth=auth,
        endpoints=connection.endpoints,
        timeout=limits.timeout,
        resolver=ProjectResolver(iam, auth),
        max_rps=connection.max_rps,
    )
