"""Routes and their one ``send``: every API request of every command goes through ``Route.send``.

A route is one (EVS endpoint, project) pair. ``send`` takes a rate slot and an in-flight slot, adds
credentials, sends, checks the answer for a refusal of the credentials or the project, tells the
limiter what happened, classifies the answer and counts the request by kind.

Credentials are proven before fanning out: until one request on a route has got through the gateway,
requests on it go one at a time, so refused credentials cost at most two requests (one, plus one
resend after renewing a password token) however many workers there are. The gateway locks an AK
after more than five failures in a row.

A route closes, and takes no more requests, when:
- the credentials are refused (any 401 (``APIGW.0303``: the signature's time is off the gateway's
  clock, which the message tells), or 400 ``Common.0013`` for an expired token, after one
  renewal where the credentials can be renewed; or a 403 before anything succeeded);
- the gateway says the API does not exist (a 404 without an EVS code, such as ``APIGW.0101``: an
  API missing in the region); nothing is taken as "gone" from it (only ``Answer.gone`` is); a call
  marked ``optional`` (an API some regions lack) is answered so instead, and the route stays open;
- the project is wrong (400 ``EVS.0001`` or ``Common.0018`` before anything succeeded);
- its endpoint cannot be reached (``session.UNREACHABLE_AFTER`` connect failures in a row and no
  answer yet), or IAM cannot be reached for its token (``IamClient``: the same rule, the same code).
The request that is refused raises ``RouteClosed`` with the refusal attached (``answer``); a closed
route raises a fresh ``RouteClosed`` for every later request; the run exits 3.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import TYPE_CHECKING, NamedTuple

import anyio

from orchestrator.api import signing
from orchestrator.api.credentials import PasswordCredentials, discover
from orchestrator.api.evs import Call
from orchestrator.api.iam import IamClient, PasswordAuth, ProjectResolver
from orchestrator.api.session import Caller, Endpoint, new_session
from orchestrator.errors import Closure, ProjectLookupFailed, RouteClosed, TransportError, UsageError
from orchestrator.models import Answer
from orchestrator.retry import RetryPolicy, Verdict, classify
from orchestrator.throttle import RateLimiter, told_limit

if TYPE_CHECKING:
    import aiohttp
    from yarl import URL

    from orchestrator.api.credentials import Authenticator
    from orchestrator.api.iam import IamClient, ProjectResolver
    from orchestrator.config import Connection, Endpoints, Limits

EXPIRED_TOKEN = "Common.0013"  # noqa: S105 - an error code, not a secret
WRONG_PROJECT = frozenset({"EVS.0001", "Common.0018"})
THROTTLED = frozenset({"APIGW.0308", "APIG.0308"})
EVS_CODE = "EVS."  # a 404 with an EVS code is the service's own answer about the request, not a missing API


class Reply(NamedTuple):
    """An answer and what it means: SUCCESS, RETRY (throttled), UNCERTAIN (5xx) or FINAL (a named
    tuple: one is made for every request)."""

    answer: Answer
    verdict: Verdict


class Route:
    """One endpoint and project: the only place requests are sent from."""

    def __init__(
        self,
        endpoint: Endpoint,
        project_id: str,
        *,
        auth: Authenticator,
        limiter: RateLimiter,
        in_flight: anyio.Semaphore,
    ) -> None:
        self.endpoint = endpoint
        self.project_id = project_id
        self.auth = auth
        self.limiter = limiter
        self.in_flight = in_flight
        self.counts: Counter[str] = Counter()
        self.proven = False
        self.closure: Closure | None = None
        self._gate = anyio.Lock()

    @property
    def name(self) -> str:
        return f"{self.endpoint.url} project {self.project_id}"

    @property
    def closed(self) -> Closure | None:
        return self.closure or self.endpoint.closure

    def check_open(self) -> None:
        """Raise a fresh ``RouteClosed`` when nothing more may be sent on this route."""
        closure = self.closure or self.endpoint.closure  # ``closed``, without a property call
        if closure is not None:
            raise closure.error()

    async def send(self, call: Call) -> Reply:
        """Send one call; raises ``TransportError`` (no answer) or ``RouteClosed``: nothing was sent
        (the route was closed), or this call was refused (``answer`` holds the refusal).

        One coroutine frame a request: the proof's gate, the send window, the rate slot and the
        in-flight slot are taken here, in the order they are listed."""
        gate = None
        if not self.proven:
            self.check_open()  # before waiting for the gate (checked again below: the usual check)
            gate = self._gate
            await gate.acquire()
            if self.proven:  # proven while this one waited: the rows queued fan out
                gate.release()
                gate = None
        try:
            self.check_open()
            limiter = self.limiter
            window = limiter.window
            entered = None
            if window is not None and not window.opened:
                entered = await window.enter()  # before the rate slot: a request let out later is paced
            try:
                wait = limiter.slot()
                ticket = limiter.started
                if wait > 0:
                    await limiter.wait(wait)
                in_flight = self.in_flight
                try:
                    in_flight.acquire_nowait()  # no checkpoint when a slot is free (the usual case)
                except anyio.WouldBlock:
                    await in_flight.acquire()
                try:
                    answer = await self._call(call)
                    refusal = self._refusal(answer, call)
                    if refusal is not None and _expired(answer) and self._renewable(answer):
                        answer = await self._call(call)  # the gateway refused the first: no double
                        refusal = self._refusal(answer, call)
                finally:
                    in_flight.release()
            finally:
                if entered is not None and window is not None:
                    window.leave(entered)
            return self._judge(answer, refusal, ticket)  # under the gate, when held: it may prove the route
        finally:
            if gate is not None:
                gate.release()

    def _judge(self, answer: Answer, refusal: Closure | None, ticket: int) -> Reply:
        """Close the route on a refusal (and raise it), tell the limiter, classify the answer."""
        if refusal is not None:
            if self.closure is None:
                self.closure = refusal
            raise self.closure.error(answer)  # the route's first closure names it, as for later calls
        status = answer.status
        verdict = classify(status, None if status < 400 else answer.error()[0])
        if verdict is Verdict.RETRY:
            self.limiter.on_throttled(told_limit(answer.error()[1]), ticket)
        elif status < 500:
            self.proven = True
            self.limiter.on_success()
        return tuple.__new__(Reply, (answer, verdict))  # made in C: no __new__ frame a request

    async def _call(self, call: Call) -> Answer:
        self.counts[call.kind._value_] += 1  # the plain attribute: ``.value`` is a Python-level property
        try:
            answer = await self.endpoint.caller.call(
                call.method,
                call.path,
                auth=self.auth,
                project_id=self.project_id,
                query=call.query,
                body=call.body,
                before=call.before,  # the journal's line, once the request has its credentials
            )
        except TransportError as exc:
            if exc.from_iam:  # no credentials (IAM did not answer): the request never left
                self.counts[call.kind._value_] -= 1
            self.endpoint.on_transport_error(exc)
            raise
        except (RouteClosed, ProjectLookupFailed):  # raised getting credentials (IAM): it never left
            self.counts[call.kind._value_] -= 1
            raise
        self.endpoint.on_answer()
        return answer

    def _renewable(self, answer: Answer) -> bool:
        return self.auth.forget(self.project_id, answer.sent_with)

    def _refusal(self, answer: Answer, call: Call) -> Closure | None:
        status = answer.status
        if status < 400 or status >= 500 or status == 429:
            return None
        code, message = answer.error()
        said = f"{self.name} answered {status} {code}: {message or 'no message'}"
        if _expired(answer):
            clock = signing.clock_advice(code, answer.date)
            if clock:
                return Closure(code, f"{clock}: {said}")
            return Closure(code, f"credentials refused: {said}")
        if status == 404 and not answer.gone and not code.startswith(EVS_CODE) and not call.optional:
            return Closure(
                code,
                f"no such API here: {said} (a 404 not from the resource itself: nothing is taken as "
                "gone); check --endpoint/--region, or whether this region offers the API",
            )
        if self.proven or code in THROTTLED:
            return None
        if status == 403:
            return Closure(code, f"credentials refused: {said}")
        if status == 400 and code in WRONG_PROJECT:
            return Closure(
                code,
                f"wrong project: {said}; check project_id, --project-id and the credentials' project",
            )
        return None


def _expired(answer: Answer) -> bool:
    """A 401, or the 400 ``Common.0013`` some services give an expired token: renew, or stop."""
    return answer.status == 401 or (answer.status == 400 and answer.error()[0] == EXPIRED_TOKEN)


class Router:
    """Builds and keeps the routes of a run, resolving missing project ids through IAM."""

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        auth: Authenticator,
        endpoints: Endpoints,
        limits: Limits,
        resolver: ProjectResolver,
        iam: IamClient,
        max_rps: float | None = None,
    ) -> None:
        self.session = session
        self.auth = auth
        self.endpoints = endpoints
        self.limits = limits
        self.resolver = resolver
        self.iam = iam
        self.max_rps = max_rps
        # A semaphore, not a CapacityLimiter: the run's requests are counted, not owned by tasks (a
        # CapacityLimiter looks the task up on every acquire and release).
        self.in_flight = anyio.Semaphore(limits.concurrency)
        self.routes: dict[tuple[URL, str], Route] = {}
        self._endpoints: dict[URL, Endpoint] = {}
        self._known: dict[tuple[str | None, str], Route] = {}  # (region, project): found once a row

    async def route_for(self, project_id: str | None, region: str | None) -> Route:
        """The route of a row; raises ``ProjectLookupFailed``, ``RouteClosed`` or ``TransportError``."""
        if project_id is None:
            if region is None:
                raise UsageError("a row without project_id needs a region to look its project up by")
            project_id = await self.resolver.project_for(region)
        return self.route_at(region, project_id)

    def known(self, project_id: str | None, region: str | None) -> Route | None:
        """The route ``route_for`` gave a row of this project and region before (``None``: not yet)."""
        return None if project_id is None else self._known.get((region, project_id))

    def route_at(self, region: str | None, project_id: str) -> Route:
        """The route of a known region and project (for records that already went out)."""
        known = self._known.get((region, project_id))
        if known is not None:
            return known
        base = self.endpoints.evs_for(region)
        route = self.routes.get((base, project_id))
        if route is None:
            endpoint = self._endpoints.get(base)
            if endpoint is None:
                caller = Caller(
                    self.session, base, timeout=self.limits.timeout, ca_bundle=self.endpoints.ca_bundle
                )
                endpoint = self._endpoints[base] = Endpoint(caller)
            route = self.routes[(base, project_id)] = Route(
                endpoint,
                project_id,
                auth=self.auth,
                limiter=RateLimiter(self.max_rps, concurrency=self.limits.concurrency),
                in_flight=self.in_flight,
            )
        self._known[(region, project_id)] = route
        return route

    def closures(self) -> list[Closure]:
        """Every reason a route, an endpoint or IAM stopped the run from sending, each once."""
        found: dict[str, Closure] = {}
        for closure in [*self.resolver.closures(), *(route.closed for route in self.routes.values())]:
            if closure is not None:
                found.setdefault(closure.message, closure)
        return list(found.values())

    def counts(self) -> Counter[str]:
        """Requests sent, by kind, over every route (IAM requests as ``iam``)."""
        total: Counter[str] = Counter()
        for route in self.routes.values():
            total.update(route.counts)
        total = +total  # a kind none of whose requests left (IAM gave no credentials) is not shown
        if self.iam.requests:
            total["iam"] = self.iam.requests
        return total

    @property
    def throttled(self) -> int:
        return sum(route.limiter.throttled for route in self.routes.values())


async def connect(
    stack: contextlib.AsyncExitStack, connection: Connection, policy: RetryPolicy | None = None
) -> Router:
    """Find the credentials, open the run's one HTTP session (closed with ``stack``), build the router
    (``policy``: how a project lookup IAM gives no usable answer to is tried again; default: once)."""

    found = discover(
        environ=connection.environ, forced=connection.auth_kind, token_file=connection.token_file
    )
    limits = connection.limits
    session = await stack.enter_async_context(
        new_session(connections=limits.concurrency, ca_bundle=connection.endpoints.ca_bundle)
    )
    iam = IamClient(
        Caller(
            session,
            connection.endpoints.iam_url(),
            timeout=limits.timeout,
            ca_bundle=connection.endpoints.ca_bundle,
        )
    )
    auth: Authenticator
    if isinstance(found, PasswordCredentials):
        auth = PasswordAuth(user=found.user, password=found.password, domain=found.domain, iam=iam)
    else:
        auth = found
    return Router(
        session=session,
        auth=auth,
        endpoints=connection.endpoints,
        limits=limits,
        resolver=ProjectResolver(iam, auth, policy),
        iam=iam,
        max_rps=connection.max_rps,
    )
