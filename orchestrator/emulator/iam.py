"""IAM routes: password tokens (``POST /v3/auth/tokens``) and the two project lookups.

``GET /v3/projects`` needs ``iam:projects:listProjects``; ``--iam-deny-list-projects`` plays a
least-privilege user and answers it 403, while ``GET /v3/auth/projects`` (the projects the caller may
use, no special permission) still works (evs-api.md 9). Both need a token or an AK/SK signature.
"""

from __future__ import annotations

import hmac

import orjson
from aiohttp import web

from orchestrator.emulator.answers import iam_error, json_response
from orchestrator.emulator.state import World

ISO = "%Y-%m-%dT%H:%M:%S.%fZ"
DOMAIN_ID = "d" * 32


class IamRoutes:
    """Handlers over one ``World``."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.settings = world.settings

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
            raise iam_error(401, "IAM.0001", "The request you have made requires authentication.")
        if (
            project.get("id", settings.project_id) != settings.project_id
            or project.get("name", settings.region) != settings.region
        ):
            raise invalid
        token, issued, expires = self.world.issue_token()
        body = {
            "token": {
                "expires_at": expires.strftime(ISO),
                "issued_at": issued.strftime(ISO),
                "methods": ["password"],
                "project": {
                    "id": settings.project_id,
                    "name": settings.region,
                    "domain": {"name": settings.domain, "id": DOMAIN_ID},
                },
                "user": {"name": settings.user, "domain": {"name": settings.domain}},
                "roles": [{"name": "te_admin", "id": "0"}],
            }
        }
        return json_response(201, body, {"X-Subject-Token": token})

    async def list_projects(self, request: web.Request) -> web.StreamResponse:
        """``GET /v3/projects[?name=REGION]``; 403 under ``--iam-deny-list-projects``."""
        if self.settings.iam_deny_list_projects:
            raise iam_error(
                403, "IAM.0003", "Policy doesn't allow iam:projects:listProjects to be performed."
            )
        name = request.query.get("name")
        projects = [self._project(request)] if name is None or name == self.settings.region else []
        return self._projects(request, projects)

    async def auth_projects(self, request: web.Request) -> web.StreamResponse:
        """``GET /v3/auth/projects``: every project the caller may use (clients filter by name)."""
        return self._projects(request, [self._project(request)])

    def _project(self, request: web.Request) -> dict[str, object]:
        settings = self.settings
        return {
            "id": settings.project_id,
            "name": settings.region,
            "domain_id": DOMAIN_ID,
            "enabled": True,
            "is_domain": False,
            "parent_id": DOMAIN_ID,
            "description": "",
            "links": {"self": f"{request.url.origin()}/v3/projects/{settings.project_id}"},
        }

    @staticmethod
    def _projects(request: web.Request, projects: list[dict[str, object]]) -> web.Response:
        links = {"self": str(request.url), "next": None, "previous": None}
        return json_response(200, {"projects": projects, "links": links})
