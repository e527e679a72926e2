"""IAM password credentials (project-scoped tokens, renewed before they expire) and project lookup.

Many workers may need a token at the same moment; a lock per project makes exactly one of them ask
IAM while the others wait for its answer (no burst of token requests).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from datetime import datetime

import anyio
import orjson

from orchestrator.api import signing
from orchestrator.api.credentials import Authenticator, OutgoingRequest
from orchestrator.api.session import Caller
from orchestrator.errors import Closure, CredentialsRefused, ProjectLookupFailed, TransportError
from orchestrator.models import Answer

IAM_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"
MAX_RENEW_MARGIN = 600.0


class IamClient:
    """The IAM calls the tool makes: a password token, and the projects of a region."""

    def __init__(self, caller: Caller) -> None:
        self.caller = caller
        self.requests = 0

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
        self.requests += 1
        return await self.caller.call(
            "POST", "/v3/auth/tokens", auth=None, query=[("nocatalog", "true")], body=orjson.dumps(body)
        )

    async def projects(self, region: str, auth: Authenticator) -> Answer:
        """``GET /v3/projects?name=REGION`` (needs ``iam:projects:listProjects``)."""
        self.requests += 1
        return await self.caller.call("GET", "/v3/projects", auth=auth, query=[("name", region)])

    async def my_projects(self, auth: Authenticator) -> Answer:
        """``GET /v3/auth/projects``: the projects the caller may use (no special permission)."""
        self.requests += 1
        return await self.caller.call("GET", "/v3/auth/projects", auth=auth)


@dataclasses.dataclass(slots=True)
class _Token:
    value: str
    project_id: str
    renew_at: float
    expires_at: float


def refusal(answer: Answer, what: str) -> tuple[str, str]:
    """The code and message of an IAM refusal (kept as data; raised as a fresh exception each time)."""
    code, message = answer.error()
    said = f"{what} answered {answer.status}: {message or 'no message'}"
    clock = signing.clock_advice(code, answer.date)
    return code, f"{clock}: {said}" if clock else said


class PasswordAuth:
    """An IAM user's password turned into project-scoped tokens, one per project, renewed early.

    A token is renewed once a quarter of its lifetime (at most ten minutes) is left, measured on the
    local monotonic clock from the lifetime IAM states, so clock skew does not matter.
    """

    def __init__(
        self,
        *,
        user: str,
        password: str,
        domain: str,
        iam: IamClient,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._user = user
        self._password = password
        self._domain = domain
        self._iam = iam
        self._clock = clock
        self._tokens: dict[str, _Token] = {}
        self._locks: dict[str, anyio.Lock] = {}
        self.refused: tuple[str, str] | None = None

    def __repr__(self) -> str:
        return "PasswordAuth(user=***, password=***)"

    async def authorize(self, request: OutgoingRequest) -> None:
        if request.project_id is None:
            raise ValueError("a password token is scoped to a project; the request has none")
        request.headers["X-Auth-Token"] = await self.token_for(request.project_id)

    def forget(self, project_id: str, stale: str | None) -> bool:
        """After a 401: drop the token the request carried, unless a newer one already replaced it."""
        current = self._tokens.get(project_id)
        if current is not None and current.value == stale:
            del self._tokens[project_id]
        return self.refused is None

    async def token_for(self, project_id: str) -> str:
        token = self._fresh(project_id)
        if token is not None:
            return token.value
        async with self._locks.setdefault(f"id:{project_id}", anyio.Lock()):
            token = self._fresh(project_id)
            if token is not None:
                return token.value
            old = self._tokens.get(project_id)
            try:
                return (await self._fetch({"id": project_id})).value
            except TransportError:
                if old is not None and self._clock() < old.expires_at:
                    return old.value  # IAM is unreachable for now; the old token still works
                raise

    async def project_for_region(self, region: str) -> str:
        """The project of a region: ask IAM for a token scoped by the region's name."""
        async with self._locks.setdefault(f"name:{region}", anyio.Lock()):
            token = await self._fetch({"name": region})
            return token.project_id

    def _fresh(self, project_id: str) -> _Token | None:
        token = self._tokens.get(project_id)
        return token if token is not None and self._clock() < token.renew_at else None

    async def _fetch(self, scope: dict[str, str]) -> _Token:
        if self.refused is not None:  # IAM said no once: workers waiting on the lock must not ask again
            raise CredentialsRefused(*self.refused)
        started = self._clock()
        answer = await self._iam.password_token(
            user=self._user, password=self._password, domain=self._domain, scope=scope
        )
        if answer.status in (401, 403):
            self.refused = refusal(answer, "IAM (password token)")
            raise CredentialsRefused(*self.refused)
        if answer.status in (400, 404):
            code, message = answer.error()
            wanted = scope.get("name") or scope.get("id")
            raise ProjectLookupFailed(
                "PROJECT_NOT_FOUND", f"IAM gives no token for project {wanted}: {code} {message}"
            )
        if answer.status != 201 or not answer.subject_token:
            raise TransportError(f"IAM token request answered {answer.status}", code=f"IAM_{answer.status}")
        body = answer.body.get("token", {}) if isinstance(answer.body, dict) else {}
        project = body.get("project", {}).get("id") or scope.get("id", "")
        lifetime = _lifetime(body)
        margin = min(MAX_RENEW_MARGIN, lifetime / 4)
        token = _Token(
            value=answer.subject_token,
            project_id=project,
            renew_at=started + lifetime - margin,
            expires_at=started + lifetime,
        )
        self._tokens[project] = token
        return token


def _lifetime(body: dict[str, object]) -> float:
    try:
        expires = datetime.strptime(str(body["expires_at"]), IAM_TIME)
        issued = datetime.strptime(str(body["issued_at"]), IAM_TIME)
    except (KeyError, ValueError):
        return 3600.0
    return max(1.0, (expires - issued).total_seconds())


class ProjectResolver:
    """The project id of each region, looked up once per region and kept for the run.

    With AK/SK or a token, ``GET /v3/projects?name=REGION`` is asked first; a least-privilege user
    gets 403 there (it needs ``iam:projects:listProjects``), so ``GET /v3/auth/projects`` (no special
    permission) is asked next and filtered by name. A password user gets the project from a token
    scoped by the region's name. Outcomes are kept as data and raised fresh for every row.
    """

    def __init__(self, iam: IamClient, auth: Authenticator) -> None:
        self._iam = iam
        self._auth = auth
        self._found: dict[str, str | tuple[str, str, bool]] = {}
        self._locks: dict[str, anyio.Lock] = {}

    async def project_for(self, region: str) -> str:
        """The project of ``region``; raises ``ProjectLookupFailed``, ``CredentialsRefused`` or transport."""
        async with self._locks.setdefault(region, anyio.Lock()):
            if region not in self._found:
                try:
                    self._found[region] = await self._lookup(region)
                except CredentialsRefused as exc:
                    self._found[region] = (exc.code, exc.message, True)
                except ProjectLookupFailed as exc:
                    self._found[region] = (exc.code, exc.message, False)
        found = self._found[region]
        if isinstance(found, str):
            return found
        code, message, refused = found
        raise CredentialsRefused(code, message) if refused else ProjectLookupFailed(code, message)

    def closures(self) -> list[Closure]:
        """The regions where IAM refused the credentials (each stops the run: exit 3)."""
        found = [
            Closure(item[0], item[1]) for item in self._found.values() if isinstance(item, tuple) and item[2]
        ]
        if isinstance(self._auth, PasswordAuth) and self._auth.refused is not None:
            found.append(Closure(*self._auth.refused))
        return found

    async def _lookup(self, region: str) -> str:
        if isinstance(self._auth, PasswordAuth):
            return await self._auth.project_for_region(region)
        answer = await self._iam.projects(region, self._auth)
        if answer.status == 403:
            answer = await self._iam.my_projects(self._auth)
            if answer.status == 403:
                raise ProjectLookupFailed(
                    "PROJECT_LOOKUP_FORBIDDEN",
                    f"IAM refused both project lookups for {region} (GET /v3/projects needs "
                    "iam:projects:listProjects; GET /v3/auth/projects was refused too); "
                    "give project_id in the row or --project-id",
                )
        if answer.status in (401, 403):
            raise CredentialsRefused(*refusal(answer, "IAM (project lookup)"))
        if answer.status != 200 or not isinstance(answer.body, dict):
            raise TransportError(f"IAM project lookup answered {answer.status}", code=f"IAM_{answer.status}")
        ids = [
            p.get("id")
            for p in answer.body.get("projects", [])
            if isinstance(p, dict) and p.get("id") and p.get("name") == region
        ]
        if not ids:
            raise ProjectLookupFailed(
                "PROJECT_NOT_FOUND",
                f"IAM lists no project named {region}; give project_id in the row or --project-id",
            )
        if len(ids) > 1:
            raise ProjectLookupFailed(
                "PROJECT_AMBIGUOUS",
                f"IAM lists {len(ids)} projects named {region} ({', '.join(map(str, ids))}); "
                "give project_id in the row or --project-id",
            )
        return str(ids[0])
