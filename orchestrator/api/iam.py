"""IAM password credentials (project-scoped tokens, renewed before they expire) and project lookup.

Many workers may need a token at the same moment; a lock per project makes exactly one of them ask
IAM while the others wait for its answer (no burst of token requests).

IAM is found unreachable as an EVS endpoint is (``session.Endpoint``): ``UNREACHABLE_AFTER`` connect,
DNS or TLS failures in a row before it ever answered. One IAM call tries that often at once, so the
first token or project lookup finds it out; from then on every call (every row's token, every
region's lookup) raises ``RouteClosed`` (``ENDPOINT_UNREACHABLE``) without a request, and the run
exits 3 (``ProjectResolver.closures``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from datetime import datetime

import anyio
import orjson

from orchestrator.api import signing
from orchestrator.api.credentials import Authenticator, OutgoingRequest
from orchestrator.api.session import UNREACHABLE_AFTER, Caller, Endpoint
from orchestrator.errors import Closure, CredentialsRefused, ProjectLookupFailed, TransportError
from orchestrator.models import Answer
from orchestrator.retry import RetryPolicy, TryAgain, retrying

IAM_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"
MAX_RENEW_MARGIN = 600.0
# A call to IAM that never got through (connect, DNS, TLS) before IAM ever answered is tried again at
# once, until IAM answers or is found unreachable (``UNREACHABLE_AFTER`` such failures in a row).
AT_ONCE = RetryPolicy(max_attempts=UNREACHABLE_AFTER, initial_wait=0.0, max_wait=0.0)
IAM_ADVICE = "check --iam-endpoint (or HUAWEICLOUD_SDK_IAM_ENDPOINT) and the network"


class IamClient:
    """The IAM calls the tool makes: a password token, and the projects of a region."""

    def __init__(self, caller: Caller) -> None:
        self.endpoint = Endpoint(caller, label="IAM at ", advice=IAM_ADVICE)
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
        return await self._call(
            "POST", "/v3/auth/tokens", auth=None, query=[("nocatalog", "true")], body=orjson.dumps(body)
        )

    async def projects(self, region: str, auth: Authenticator) -> Answer:
        """``GET /v3/projects?name=REGION`` (needs ``iam:projects:listProjects``)."""
        return await self._call("GET", "/v3/projects", auth=auth, query=[("name", region)])

    async def my_projects(self, auth: Authenticator) -> Answer:
        """``GET /v3/auth/projects``: the projects the caller may use (no special permission)."""
        return await self._call("GET", "/v3/auth/projects", auth=auth)

    async def _call(
        self,
        method: str,
        path: str,
        *,
        auth: Authenticator | None,
        query: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> Answer:
        """One IAM call's answer; raises ``TransportError`` (no answer), or ``RouteClosed`` when IAM is
        found unreachable (by this call, or before it: then nothing is sent)."""
        endpoint = self.endpoint
        async for attempt in retrying(AT_ONCE, reraise=False):
            with attempt:
                endpoint.check_open()
                self.requests += 1
                try:
                    answer = await endpoint.caller.call(method, path, auth=auth, query=query, body=body)
                except TransportError as exc:
                    endpoint.on_transport_error(exc)
                    if exc.may_have_arrived or endpoint.answered:
                        raise  # IAM may have got it, or answers otherwise: the caller's to decide
                    raise TryAgain(str(exc)) from None
                endpoint.on_answer()
                return answer
        # Every try failed to connect before IAM ever answered: each was counted, so it is closed now.
        closure = endpoint.closure
        assert closure is not None  # noqa: S101 - UNREACHABLE_AFTER connect failures in a row close it
        raise closure.error()


@dataclasses.dataclass(slots=True, eq=False, repr=False)
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

    def seconds_left(self, project_id: str) -> float | None:
        """How long the project's current token lasts (from IAM's stated lifetime), if one was issued."""
        token = self._tokens.get(project_id)
        return None if token is None else max(0.0, token.expires_at - self._clock())

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
    scoped by the region's name. A lookup IAM gives no usable answer (a 5xx, a timeout) is tried again
    under the run's retry policy (``policy``), the region's other rows waiting for it. Outcomes, that
    last failure too, are kept as data and raised fresh for every row: one lookup a region, not one a row.
    """

    def __init__(self, iam: IamClient, auth: Authenticator, policy: RetryPolicy | None = None) -> None:
        self._iam = iam
        self._auth = auth
        self._policy = policy or RetryPolicy(max_attempts=1)  # no policy given: tried once
        # region -> its project id, or a failure: (code, message, refused: True / lookup: False / None)
        self._found: dict[str, str | tuple[str, str, bool | None]] = {}
        self._locks: dict[str, anyio.Lock] = {}
        self.via: dict[str, str] = {}  # region -> the IAM request that resolved its project

    async def project_for(self, region: str) -> str:
        """The project of ``region``; raises ``ProjectLookupFailed``, ``CredentialsRefused`` or transport."""
        async with self._locks.setdefault(region, anyio.Lock()):
            if region not in self._found:
                try:
                    self._found[region] = await self._retried(region)
                except CredentialsRefused as exc:
                    self._found[region] = (exc.code, exc.message, True)
                except ProjectLookupFailed as exc:
                    self._found[region] = (exc.code, exc.message, False)
                except TransportError as exc:  # every try the policy allows: the rows fail as it did
                    self._found[region] = (exc.code, str(exc), None)
        found = self._found[region]
        if isinstance(found, str):
            return found
        code, message, refused = found
        if refused is None:
            raise TransportError(message, code=code, may_have_arrived=False)
        raise CredentialsRefused(code, message) if refused else ProjectLookupFailed(code, message)

    def closures(self) -> list[Closure]:
        """The regions where IAM refused the credentials, and IAM found unreachable (each stops the
        run: exit 3)."""
        found = [
            Closure(item[0], item[1]) for item in self._found.values() if isinstance(item, tuple) and item[2]
        ]
        if isinstance(self._auth, PasswordAuth) and self._auth.refused is not None:
            found.append(Closure(*self._auth.refused))
        if self._iam.endpoint.closure is not None:
            found.append(self._iam.endpoint.closure)
        return found

    async def _retried(self, region: str) -> str:
        """``_lookup`` under the policy, tried again while IAM gives no usable answer (``TransportError``)."""
        tries = retrying(self._policy, on=(TransportError,), reraise=False)
        async for attempt in tries:
            with attempt:
                return await self._lookup(region)
        last = tries.last
        assert isinstance(last, TransportError)  # noqa: S101 - the loop ends without a return only so
        raise TransportError(
            f"the project lookup of {region} failed {tries.number} times, the last: {last}; give project_id "
            "in the row or --project-id, or run again later",
            code=last.code,
            may_have_arrived=False,
        )

    async def _lookup(self, region: str) -> str:
        if isinstance(self._auth, PasswordAuth):
            self.via[region] = "POST /v3/auth/tokens (a token scoped by the region's name)"
            return await self._auth.project_for_region(region)
        self.via[region] = "GET /v3/projects"
        answer = await self._iam.projects(region, self._auth)
        if answer.status == 403:
            self.via[region] = "GET /v3/auth/projects (GET /v3/projects was refused: 403)"
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
