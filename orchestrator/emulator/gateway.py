"""The API gateway in front of EVS and IAM: request ids, counters, latency, authentication, throttling,
IAM policy, 5xx faults. One aiohttp middleware; handlers behind it raise ``ApiError`` and it renders them.

Authentication follows the real gateway (evs-api.md 3.4, 5, 7, 9): issued or fixed ``X-Auth-Token``s
(expired ones answered 401, or 400 ``Common.0013`` under ``--expired-token-answer 400``), AK/SK
signatures checked exactly against the gateway's clock (``--clock-offset`` moves it; the ``Date``
header tells it), and the AK lock after ``--ak-lock-after`` signature failures in a row. Paths
containing a ``--gateway-404`` text, and every ``/v5/`` path under ``--no-snapshot-groups``, are an API
the region lacks (404 ``APIGW.0101``); the first ``--iam-5xx-first`` IAM requests answer 502
``APIGW.0202``; a call whose IAM
action is in ``--deny`` is refused 403 after authentication. What a request carries that the official
SDK does not send is counted by route (``unlike_sdk`` in the state document).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from aiohttp import web

from orchestrator.api import signing
from orchestrator.emulator.answers import ApiError, evs_error, gateway_error, json_response
from orchestrator.emulator.settings import SIGNATURE_WINDOW
from orchestrator.emulator.state import World

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SKEW = timedelta(seconds=SIGNATURE_WINDOW)
NO_SUCH_API = "The API does not exist or has not been published in the environment"
UNAUTHORIZED = "Incorrect IAM authentication information: "
AK_LOCKED = UNAUTHORIZED + "AK access failed to reach the limit,forbidden"
EVS_PREFIXES = ("/v2/", "/v5/", "/v1/")  # the EVS APIs: v2 snapshots and disks, v5 groups, v1 jobs
AUTHENTICATED_IAM_ROUTES = frozenset({"GET /v3/projects", "GET /v3/auth/projects"})


class Gateway:
    """The middleware over one ``World``; ``actions`` maps a route (``METHOD /path``) to its IAM action."""

    def __init__(self, world: World, actions: Mapping[str, str] | None = None) -> None:
        self.world = world
        self.settings = world.settings
        self.actions = actions or {}

    def server_time(self) -> datetime:
        """The gateway's clock: real time moved by ``--clock-offset`` (signatures are checked against it)."""
        return datetime.now(UTC) + timedelta(seconds=self.settings.clock_offset)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = self._route_key(request)
        if route.split(" ", 1)[1].startswith("/_emulator"):
            try:  # test hooks: no authentication, latency or counting
                return await handler(request)
            except ApiError as exc:
                return self._render(exc, "")
        request_id = os.urandom(16).hex()  # 32 hex digits, as the gateway's ids (uuid4 costs 3x more)
        world = self.world
        self.sdk_check(request, route)
        world.in_flight += 1
        world.max_in_flight = max(world.max_in_flight, world.in_flight)
        status = "dropped"
        try:
            response = await self._answer(request, handler, request_id, route)
            status = str(response.status)
            response.headers["X-Request-Id"] = request_id
            response.headers["Date"] = http_date(int(time.time() + self.settings.clock_offset))
            return response
        finally:
            world.in_flight -= 1
            if request.transport is None or request.transport.is_closing():
                status = "dropped"
            world.requests[route][status] += 1

    def sdk_check(self, request: web.Request, route: str) -> None:
        """Record what the official SDK would not send (evs-api.md 10): a ``Content-Type`` on a GET or
        DELETE without a body, and ``offset=0`` (documented as "greater than 0"; left out of a first page)."""
        unlike = self.world.unlike_sdk
        if request.method in ("GET", "DELETE") and "Content-Type" in request.headers:
            unlike[route]["content-type"] += 1
        if request.query.get("offset") == "0":
            unlike[route]["offset=0"] += 1

    async def _answer(
        self, request: web.Request, handler: Handler, request_id: str, route: str
    ) -> web.StreamResponse:
        try:
            # Read the body before the latency: a client that gives up meanwhile closes the
            # connection, and aiohttp then fails unread bodies; the request must still be carried out.
            if request.can_read_body:
                await request.read()
            await self._delay()
            if any(text in request.path for text in self.settings.gateway_404):
                raise gateway_error(404, "APIGW.0101", NO_SUCH_API)
            path = route.split(" ", 1)[1]
            if self.settings.no_snapshot_groups and path.startswith("/v5/"):
                raise gateway_error(404, "APIGW.0101", NO_SUCH_API)  # a region without snapshot groups
            if path.startswith("/v3/") and self.world.iam_failed < self.settings.iam_5xx_first:
                self.world.iam_failed += 1
                raise gateway_error(502, "APIGW.0202", "Backend unavailable.")  # IAM's backend is away
            evs = path.startswith(EVS_PREFIXES)
            if evs or route in AUTHENTICATED_IAM_ROUTES:
                tenant = await self._authenticate(request)
                if evs:
                    self._throttle(tenant)
                    self._check_policy(route)
                    fault = self._fault_5xx()
                    if fault is not None:
                        if fault == 502:  # the backend acted (or refused); the gateway lost its answer
                            with contextlib.suppress(ApiError):
                                await handler(request)
                        return self._render(self._fault_error(fault), request_id)
            return await handler(request)
        except ApiError as exc:
            return self._render(exc, request_id)
        except web.HTTPException as exc:
            return self._render(gateway_error(exc.status, "APIGW.0101", NO_SUCH_API), request_id)

    @staticmethod
    def _route_key(request: web.Request) -> str:
        info = request.match_info
        if info.http_exception is not None or info.route.resource is None:
            return f"{request.method} <unknown>"
        return f"{request.method} {info.route.resource.canonical}"

    @staticmethod
    def _render(exc: ApiError, request_id: str) -> web.Response:
        body = dict(exc.body)
        if "error_code" in body and "error_msg" in body and "IAM" not in str(body["error_code"]):
            body["request_id"] = request_id
        return json_response(exc.status, body, exc.headers)

    async def _delay(self) -> None:
        settings = self.settings
        if settings.latency_ms <= 0 and settings.jitter_ms <= 0:
            return
        jitter = self.world.random.uniform(-settings.jitter_ms, settings.jitter_ms)
        await asyncio.sleep(max(0.0, settings.latency_ms + jitter) / 1000)

    def _throttle(self, tenant: str) -> None:
        wait = self.world.throttle(tenant)
        if wait is None:
            return
        told = self.settings.rate_limit if self.settings.told_limit is None else self.settings.told_limit
        named = f",limit:{told:g},time:1 second" if told else ""
        error = gateway_error(
            429, "APIGW.0308", f"The throttling threshold has been reached: policy user over ratelimit{named}"
        )
        if self.settings.retry_after:
            error.headers["Retry-After"] = str(max(1, round(wait + 0.4999)))
        raise error

    def _check_policy(self, route: str) -> None:
        """403 when the route's IAM action is denied (``--deny``), in EVS's shape, naming the action."""
        action = self.actions.get(route)
        if action is not None and action in self.settings.deny:
            raise evs_error(403, "EVS.5403", f"Policy doesn't allow {action} to be performed.")

    def _fault_5xx(self) -> int | None:
        if not self.world.chance(self.settings.fault_5xx):
            return None
        return self.world.random.choice((500, 502, 503))

    @staticmethod
    def _fault_error(status: int) -> ApiError:
        if status == 500:
            return evs_error(500, "EVS.5500", "Internal server error.")
        if status == 503:
            return evs_error(503, "EVS.5503", "Service unavailable.")
        return gateway_error(502, "APIGW.0202", "Backend unavailable.")

    async def _authenticate(self, request: web.Request) -> str:
        """Check the token or signature; return the tenant key (for throttling)."""
        token = request.headers.get("X-Auth-Token")
        url_project = request.match_info.get("project_id")
        if token is not None:
            project = self.world.token_project(token)
            if project is None:
                raise gateway_error(401, "APIGW.0301", UNAUTHORIZED + "decrypt token fail")
            if project is False:
                if self.settings.expired_token_answer == 400:
                    raise gateway_error(400, "Common.0013", "The token is expired or invalid.")
                raise gateway_error(401, "APIGW.0301", UNAUTHORIZED + "token expired")
            if url_project is not None and url_project != project:
                raise evs_error(400, "Common.0018", "Invalid token in the header")
            return f"project:{project}"
        if "Authorization" in request.headers:
            await self._verify_signature(request)
            project = request.headers.get("X-Project-Id", url_project)
            if url_project is not None and (
                url_project != self.settings.project_id or project != url_project
            ):
                raise evs_error(400, "EVS.0001", "invalid tenant id!")
            return f"ak:{self.settings.ak}"
        raise gateway_error(401, "APIGW.0301", UNAUTHORIZED + "Authorization not found")

    async def _verify_signature(self, request: web.Request) -> None:
        """Accept the emulator's AK with a correct signature; count failures toward the AK lock."""
        parsed = signing.parse_authorization(request.headers["Authorization"])
        if parsed is None:
            raise gateway_error(401, "APIGW.0301", UNAUTHORIZED + "verify aksk signature fail")
        algorithm, parts = parsed
        derived: tuple[str, str] | None = None
        if algorithm == signing.ALGORITHM:
            ak = parts.get("Access", "")
        else:
            ak, _, info = parts.get("Credential", "").partition("/")
            _, _, service = info.partition("/")[2].partition("/")
            derived = (self.settings.region, service)
        if not hmac.compare_digest(ak, self.settings.ak):
            raise gateway_error(
                401, "APIGW.0301", UNAUTHORIZED + "Get secretKey failed,ak:******,err:ak not exist"
            )
        if self.world.ak_locked():
            raise gateway_error(401, "APIGW.0301", AK_LOCKED)
        try:
            await self._check_signature(request, ak, parts, derived)
        except ApiError:
            self.world.ak_failed()
            raise
        self.world.ak_succeeded()

    async def _check_signature(
        self, request: web.Request, ak: str, parts: dict[str, str], derived: tuple[str, str] | None
    ) -> None:
        signed = parts.get("SignedHeaders", "").split(";")
        sdk_date = request.headers.get("X-Sdk-Date", "")
        try:
            moment = sdk_time(sdk_date)
        except ValueError:
            raise gateway_error(401, "APIGW.0301", UNAUTHORIZED + "verify aksk signature fail") from None
        if "x-sdk-date" not in signed:
            raise gateway_error(401, "APIGW.0301", UNAUTHORIZED + "verify aksk signature fail")
        # The skew is checked against the gateway's clock (real time, moved by --clock-offset).
        server = self.server_time()
        if abs(server - moment) > SKEW:
            raise gateway_error(
                401,
                "APIGW.0303",
                UNAUTHORIZED + f"signature expired, signature time:{sdk_date},"
                f"server time:{server.strftime(signing.DATE_FORMAT)}",
            )
        headers = {name: request.headers.get(name, "") for name in signed if name}
        expected = signing.authorization(
            ak=ak,
            sk=self.settings.sk,
            method=request.method,
            path=request.raw_path.partition("?")[0],
            query=signing.parse_query(request.rel_url.raw_query_string),
            headers=headers,
            body=await request.read(),
            derived=derived,
        )
        if not hmac.compare_digest(expected, request.headers["Authorization"].strip()):
            raise gateway_error(401, "APIGW.0301", UNAUTHORIZED + "verify aksk signature fail")


@functools.lru_cache(maxsize=4)
def http_date(second: int) -> str:
    """The ``Date`` header of an epoch second (written once a second, not for every answer)."""
    return format_datetime(datetime.fromtimestamp(second, UTC), usegmt=True)


def sdk_time(text: str) -> datetime:
    """An ``X-Sdk-Date`` (``YYYYMMDDTHHMMSSZ``) as a UTC time; ``ValueError`` when it is not one.

    What ``strptime(text, signing.DATE_FORMAT)`` accepts, at a quarter of its cost: sixteen ASCII
    characters of that shape are read by slices (strptime could read them no other way), anything
    else by ``strptime`` itself.
    """
    if len(text) == 16 and text[8] == "T" and text[15] == "Z" and text.isascii():
        date, clock = text[:8], text[9:15]
        if date.isdigit() and clock.isdigit():
            return datetime(
                int(date[:4]),
                int(date[4:6]),
                int(date[6:]),
                int(clock[:2]),
                int(clock[2:4]),
                int(clock[4:]),
                tzinfo=UTC,
            )
    return datetime.strptime(text, signing.DATE_FORMAT).replace(tzinfo=UTC)
