"""The emulator's aiohttp.web application: EVS snapshot and volume routes, IAM, gateway behaviour.

One middleware plays the API gateway (request ids, counters, latency, authentication, throttling,
5xx faults); handlers play EVS and IAM. Errors are raised as ``ApiError`` and rendered once.
"""

from __future__ import annotations

import asyncio
import hmac
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiohttp import web

from orchestrator.api import signing
from orchestrator.emulator.settings import EmulatorSettings, SeedVolume
from orchestrator.emulator.state import UUID_RE, Clock, Snapshot, World

JSON_TYPE = "application/json;charset=UTF-8"
SKEW = timedelta(minutes=15)
NAME_MAX = 64
DESCRIPTION_MAX = 85
RESERVED_NAME_PREFIX = "autobk_snapshot_"
LIST_LIMIT_MAX = 1000
WORLD: web.AppKey[World] = web.AppKey("world", World)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """An error answer: status, body and extra headers."""

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None):
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


def evs_error(status: int, code: str, message: str) -> ApiError:
    return ApiError(status, {"error": {"code": code, "message": message}})


def gateway_error(status: int, code: str, message: str) -> ApiError:
    return ApiError(status, {"error_code": code, "error_msg": message})


def iam_error(status: int, code: str, message: str) -> ApiError:
    return ApiError(status, {"error_msg": message, "error_code": code})


def json_response(status: int, body: object, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        headers={"Content-Type": JSON_TYPE, **(headers or {})},
    )


def malformed() -> ApiError:
    return evs_error(400, "EVS.5400", "Malformed request body.")


class Emulator:
    """Handlers over one ``World``."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.settings = world.settings

    # --- the gateway ---------------------------------------------------------------------
    @web.middleware
    async def gateway(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        request_id = uuid.uuid4().hex
        route = self._route_key(request)
        internal = route.startswith("GET /_emulator")
        world = self.world
        if not internal:
            world.in_flight += 1
            world.max_in_flight = max(world.max_in_flight, world.in_flight)
        status = "dropped"
        try:
            if not internal:
                await self._delay()
            response = await self._answer(request, handler, request_id, route)
            status = str(response.status)
            response.headers["X-Request-Id"] = request_id
            return response
        finally:
            if not internal:
                world.in_flight -= 1
            if request.transport is not None and request.transport.is_closing():
                status = "dropped"
            world.requests[route][status] += 1

    async def _answer(
        self, request: web.Request, handler: Handler, request_id: str, route: str
    ) -> web.StreamResponse:
        try:
            evs = route.split(" ", 1)[1].startswith("/v2/")
            if evs or route == "GET /v3/projects":
                tenant = await self._authenticate(request)
                if evs:
                    self._throttle(tenant)
                    fault = self._fault_5xx()
                    if fault is not None:
                        if fault == 502:  # the backend acted; the gateway lost its answer
                            await handler(request)
                        return self._render(self._fault_error(fault), request_id)
            return await handler(request)
        except ApiError as exc:
            return self._render(exc, request_id)
        except web.HTTPException as exc:
            error = gateway_error(
                exc.status,
                "APIGW.0101",
                "The API does not exist or has not been published in the environment",
            )
            return self._render(error, request_id)

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
        limit = self.settings.rate_limit
        error = gateway_error(
            429,
            "APIGW.0308",
            "The throttling threshold has been reached: policy user over ratelimit,"
            f"limit:{limit:g},time:1 second",
        )
        if self.settings.retry_after:
            error.headers["Retry-After"] = str(max(1, round(wait + 0.4999)))
        raise error

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
                raise gateway_error(
                    401,
                    "APIGW.0301",
                    "Incorrect IAM authentication information: decrypt token fail",
                )
            if project is False:
                raise gateway_error(
                    401, "APIGW.0301", "Incorrect IAM authentication information: token expired"
                )
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
        raise gateway_error(
            401, "APIGW.0301", "Incorrect IAM authentication information: Authorization not found"
        )

    async def _verify_signature(self, request: web.Request) -> None:
        unauthorized = "Incorrect IAM authentication information: "
        parsed = signing.parse_authorization(request.headers["Authorization"])
        if parsed is None:
            raise gateway_error(401, "APIGW.0301", unauthorized + "verify aksk signature fail")
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
                401, "APIGW.0301", unauthorized + "Get secretKey failed,ak:******,err:ak not exist"
            )
        signed = parts.get("SignedHeaders", "").split(";")
        sdk_date = request.headers.get("X-Sdk-Date", "")
        try:
            moment = datetime.strptime(sdk_date, signing.DATE_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            raise gateway_error(401, "APIGW.0301", unauthorized + "verify aksk signature fail") from None
        if abs(datetime.now(UTC) - moment) > SKEW or "x-sdk-date" not in signed:
            raise gateway_error(
                401, "APIGW.0301", unauthorized + f"signature expired, signature time:{sdk_date}"
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
            raise gateway_error(401, "APIGW.0301", unauthorized + "verify aksk signature fail")

    # --- EVS snapshots -------------------------------------------------------------------
    async def create_snapshot(self, request: web.Request) -> web.StreamResponse:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            raise malformed() from None
        spec = body.get("snapshot") if isinstance(body, dict) else None
        if not isinstance(spec, dict):
            raise malformed()
        volume_id = spec.get("volume_id")
        if not isinstance(volume_id, str) or not UUID_RE.match(volume_id):
            raise evs_error(400, "EVS.1002", "invalid volume id!")
        force = spec.get("force", False)
        name = spec.get("name")
        description = spec.get("description")
        metadata = spec.get("metadata") or {}
        if not isinstance(force, bool):
            raise malformed()
        if name is not None and (not isinstance(name, str) or not 1 <= len(name) <= NAME_MAX):
            raise evs_error(400, "EVS.5400", f"Invalid input: name must be 1 to {NAME_MAX} characters.")
        if isinstance(name, str) and name.startswith(RESERVED_NAME_PREFIX):
            raise evs_error(400, "EVS.5400", f"Invalid input: name cannot start with {RESERVED_NAME_PREFIX}.")
        if description is not None and (
            not isinstance(description, str) or len(description) > DESCRIPTION_MAX
        ):
            raise evs_error(
                400, "EVS.5400", f"Invalid input: description exceeds {DESCRIPTION_MAX} characters."
            )
        if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
        ):
            raise evs_error(400, "EVS.5400", "Invalid input: metadata must map strings to strings.")
        if any(key.startswith("__system__") for key in metadata):
            raise evs_error(403, "EVS.5403", "metadata can not be operated.")
        volume = self.world.volume(volume_id)
        if volume is None:
            raise evs_error(404, "EVS.5404", "Resource(Volume, Snapshot, Backup .etc) cound not be found.")
        self._check_volume(volume, force=force)
        if self.world.chance(self.settings.fault_drop_before):
            return self._drop(request)
        snap = self.world.create_snapshot(
            volume=volume, name=name, description=description, metadata=metadata
        )
        if self.world.chance(self.settings.fault_drop_after):
            return self._drop(request)
        return json_response(202, {"snapshot": self._snapshot_json(snap, "creating")})

    def _check_volume(self, volume: SeedVolume, *, force: bool) -> None:
        if volume.status == "error":
            raise evs_error(500, "EVS.2024", "volume is error!")
        if volume.status == "in-use" and not force:
            raise evs_error(
                400,
                "EVS.5400",
                f"Invalid volume: Volume {volume.volume_id} status must be available, "
                "but current status is: in-use.",
            )
        if volume.status not in ("available", "in-use"):
            raise evs_error(
                400,
                "EVS.5400",
                f"Invalid volume: Volume {volume.volume_id} status must be available or in-use, "
                f"but current status is: {volume.status}.",
            )
        limit = self.settings.max_snapshots_per_volume
        if self.world.snapshot_count(volume.volume_id) >= limit:
            raise evs_error(400, "EVS.5400", f"Invalid volume: the volume already has {limit} snapshots.")

    @staticmethod
    def _drop(request: web.Request) -> web.Response:
        if request.transport is not None:
            request.transport.close()
        return web.Response(status=202)

    async def show_snapshot(self, request: web.Request) -> web.StreamResponse:
        found = self.world.find(request.match_info["snapshot_id"])
        if found is None:
            raise evs_error(404, "EVS.5404", "Resource(Volume, Snapshot, Backup .etc) cound not be found.")
        return json_response(200, {"snapshot": self._snapshot_json(*found)})

    async def delete_snapshot(self, request: web.Request) -> web.StreamResponse:
        found = self.world.find(request.match_info["snapshot_id"])
        if found is None:
            raise evs_error(404, "EVS.5404", "Resource(Volume, Snapshot, Backup .etc) cound not be found.")
        snap, status = found
        if status not in ("available", "error"):
            raise evs_error(
                400, "EVS.1047", "snapshot status must be available or error when delete snapshot!"
            )
        self.world.delete_snapshot(snap)
        return web.Response(status=202)

    async def list_snapshots(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        offset = self._int_param(query.get("offset", "0"), "offset")
        limit_text = query.get("limit")
        limit = LIST_LIMIT_MAX
        if limit_text is not None:
            limit = self._int_param(limit_text, "limit")
            if limit <= 0:
                raise evs_error(400, "EVS.5400", "limit param must be positive.")
            if limit > LIST_LIMIT_MAX:
                raise evs_error(400, "EVS.2142", "invalid filter limit, can not greater than 1000.")
        if offset < 0:
            raise evs_error(400, "EVS.5400", "offset param must be positive.")
        ids = set(query.getall("id", []))
        name = query.get("name")
        status_filter = query.get("status")
        volume_id = query.get("volume_id")
        matches = [
            (snap, status)
            for snap, status in self.world.live_snapshots()
            if (not ids or snap.id in ids)
            and (name is None or snap.name == name)
            and (status_filter is None or status == status_filter)
            and (volume_id is None or snap.volume_id == volume_id.lower())
        ]
        page = matches[offset : offset + limit]
        body: dict[str, object] = {
            "count": len(matches),
            "snapshots": [self._snapshot_json(snap, status, listed=True) for snap, status in page],
        }
        if limit_text is not None and page and offset + len(page) < len(matches):
            project = request.match_info["project_id"]
            href = (
                f"{request.url.origin()}/v2/{project}/snapshots/detail?limit={limit}&marker={page[-1][0].id}"
            )
            body["snapshots_links"] = [{"href": href, "rel": "next"}]
        return json_response(200, body)

    @staticmethod
    def _int_param(text: str, name: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise evs_error(400, "EVS.5400", f"{name} param must be an integer.") from None

    def _snapshot_json(self, snap: Snapshot, status: str, *, listed: bool = False) -> dict[str, object]:
        data: dict[str, object] = {
            "id": snap.id,
            "status": status,
            "name": snap.name,
            "description": snap.description,
            "created_at": snap.created_at,
            "updated_at": snap.updated_at,
            "metadata": snap.metadata,
            "volume_id": snap.volume_id,
            "size": snap.size,
            "os-extended-snapshot-attributes:project_id": snap.project_id,
            "os-extended-snapshot-attributes:progress": "100%" if status == "available" else "0%",
        }
        if listed:
            data.update(service_type="EVS", dedicated_storage_id=None, dedicated_storage_name=None)
        return data

    # --- EVS volumes ---------------------------------------------------------------------
    async def show_volume(self, request: web.Request) -> web.StreamResponse:
        volume = self.world.volume(request.match_info["volume_id"])
        if volume is None:
            raise evs_error(404, "EVS.5404", "Resource(Volume, Snapshot, Backup .etc) cound not be found.")
        attachments = []
        if volume.status == "in-use":
            attachments.append(
                {
                    "attachment_id": str(uuid.uuid5(uuid.NAMESPACE_OID, volume.volume_id)),
                    "volume_id": volume.volume_id,
                    "device": "/dev/vdb",
                }
            )
        return json_response(
            200,
            {
                "volume": {
                    "id": volume.volume_id,
                    "status": volume.status,
                    "size": volume.size,
                    "attachments": attachments,
                }
            },
        )

    # --- IAM -----------------------------------------------------------------------------
    async def issue_token(self, request: web.Request) -> web.StreamResponse:
        invalid = iam_error(400, "IAM.0011", "Request body is invalid.")
        try:
            auth = orjson.loads(await request.read())["auth"]
            identity, scope = auth["identity"], auth.get("scope") or {}
            user = identity["password"]["user"]
            name, password, domain = user["name"], user["password"], user["domain"]["name"]
            project = scope["project"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise invalid from None
        if "password" not in identity.get("methods", ()) or not isinstance(project, dict):
            raise invalid
        settings = self.settings
        if not (
            hmac.compare_digest(str(name), settings.user)
            and hmac.compare_digest(str(password), settings.password)
            and hmac.compare_digest(str(domain), settings.domain)
        ):
            raise iam_error(401, "IAM.0004", "The username or password is wrong.")
        if (
            project.get("id", settings.project_id) != settings.project_id
            or project.get("name", settings.region) != settings.region
        ):
            raise iam_error(400, "IAM.0011", "Request body is invalid.")
        token, expires = self.world.issue_token()
        now = datetime.now(UTC)
        iso = "%Y-%m-%dT%H:%M:%S.%fZ"
        body = {
            "token": {
                "expires_at": expires.strftime(iso),
                "issued_at": now.strftime(iso),
                "methods": ["password"],
                "project": {
                    "id": settings.project_id,
                    "name": settings.region,
                    "domain": {"name": settings.domain, "id": "d" * 32},
                },
                "user": {"name": settings.user, "domain": {"name": settings.domain}},
                "roles": [{"name": "te_admin", "id": "0"}],
            }
        }
        return json_response(201, body, {"X-Subject-Token": token})

    async def list_projects(self, request: web.Request) -> web.StreamResponse:
        name = request.query.get("name")
        settings = self.settings
        projects = []
        if name is None or name == settings.region:
            projects.append(
                {
                    "id": settings.project_id,
                    "name": settings.region,
                    "domain_id": "d" * 32,
                    "enabled": True,
                    "is_domain": False,
                    "parent_id": "d" * 32,
                    "description": "",
                    "links": {"self": f"{request.url.origin()}/v3/projects/{settings.project_id}"},
                }
            )
        links = {"self": str(request.url), "next": None, "previous": None}
        return json_response(200, {"projects": projects, "links": links})

    # --- test hooks ----------------------------------------------------------------------
    async def state(self, request: web.Request) -> web.StreamResponse:
        return json_response(200, self.world.state())


def build_app(settings: EmulatorSettings, clock: Clock | None = None) -> web.Application:
    """The emulator as an aiohttp application (tests and ``serve`` share it)."""
    world = World(settings, clock or time.monotonic)
    emulator = Emulator(world)
    app = web.Application(middlewares=[emulator.gateway], client_max_size=1024 * 1024)
    app[WORLD] = world
    base = "/v2/{project_id}"
    app.router.add_post("/v3/auth/tokens", emulator.issue_token)
    app.router.add_get("/v3/projects", emulator.list_projects)
    app.router.add_post(base + "/cloudsnapshots", emulator.create_snapshot)
    app.router.add_get(base + "/cloudsnapshots/detail", emulator.list_snapshots)
    app.router.add_get(base + "/cloudsnapshots/{snapshot_id}", emulator.show_snapshot)
    app.router.add_delete(base + "/cloudsnapshots/{snapshot_id}", emulator.delete_snapshot)
    app.router.add_get(base + "/cloudvolumes/{volume_id}", emulator.show_volume)
    app.router.add_get("/_emulator/state", emulator.state)
    return app
