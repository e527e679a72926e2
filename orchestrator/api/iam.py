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

from orchestrator.api.credentials import Authenticator, OutgoingRequest
from orchestrator.api.session import IamClient
from orchestrator.errors import CredentialsRefused, ProjectLookupFailed, TransportError
from orchestrator.models import Answer

IAM_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"
MAX_RENEW_MARGIN = 600.0


@dataclasses.dataclass(slots=True)
class _Token:
    value: str
    project_id: str
    renew_at: float
    expires_at: float


def refusal(answer: Answer, what: str) -> CredentialsRefused:
    code, message = answer.error()
    return CredentialsRefused(code, f"{what} answered {answer.status}: {message or 'no message'}")


class PasswordAuth:
    """An IAM user's password turned into project-scoped tokens, one per project, renewed early.

    A token is renewed once a quarter of its lifetime (at most ten minutes) is left, measured on the
    local monotonic clock from the lifetime IAM states, so clock skew does not matter.
    """

    kind = "password"

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
        self._refused: CredentialsRefused | None = None
        self.issued = 0

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
        return self._refused is None

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
        if self._refused is not None:
            raise self._refused  # IAM said no once: workers waiting on the lock must not ask again
        started = self._clock()
        answer = await self._iam.password_token(
            user=self._user, password=self._password, domain=self._domain, scope=scope
        )
        if answer.status in (401, 403):
            self._refused = refusal(answer, "IAM (password token)")
            raise self._refused
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
        self.issued += 1
        return token


def _lifetime(body: dict[str, object]) -> float:
    try:
        expires = datetime.strptime(str(body["expires_at"]), IAM_TIME)
        issued = datetime.strptime(str(body["issued_at"]), IAM_TIME)
    except (KeyError, ValueError):
        return 3600.0
    return max(1.0, (expires - issued).total_seconds())


class ProjectResolver:
    """The project id of each region, looked up once per region and kept for the run."""

    def __init__(self, iam: IamClient, auth: Authenticator) -> None:
        self._iam = iam
        self._auth = auth
        self._found: dict[str, str | ProjectLookupFailed] = {}
        self._locks: dict[str, anyio.Lock] = {}

    async def project_for(self, region: str) -> str:
        """The project of ``region``; raises ``ProjectLookupFailed`` (kept) or refusal/transport errors."""
        async with self._locks.setdefault(region, anyio.Lock()):
            if region not in self._found:
                try:
                    self._found[region] = await self._lookup(region)
                except ProjectLookupFailed as exc:
                    self._found[region] = exc
        found = self._found[region]
        if isinstance(found, ProjectLookupFailed):
            raise found
        return found

    async def _lookup(self, region: str) -> str:
        if isinstance(self._auth, PasswordAuth):
            return await self._auth.project_for_region(region)
        answer = await self._iam.projects(region, self._auth)
        if answer.status in (401, 403):
            raise refusal(answer, "IAM (project lookup)")
        if answer.status != 200 or not isinstance(answer.body, dict):
            raise TransportError(f"IAM project lookup answered {answer.status}", code=f"IAM_{answer.status}")
        ids = [p.get("id") for p in answer.body.get("projects", []) if isinstance(p, dict) and p.get("id")]
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
