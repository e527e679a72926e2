"""Credentials: where they come from, and how each kind authorizes one outgoing request.

Secrets are read from the environment or files only, and no object here shows them in its ``repr``.
"""

from __future__ import annotations

import configparser
import dataclasses
import functools
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple, Protocol

from yarl import URL

from orchestrator.api import signing
from orchestrator.config import AUTH_KINDS, AuthKind
from orchestrator.errors import CredentialsError


class OutgoingRequest(NamedTuple):
    """A request about to be sent; an authenticator adds its headers in place (a named tuple: one is
    made a request; build it by keyword)."""

    method: str
    url: URL
    headers: dict[str, str]
    body: bytes
    project_id: str | None


class Authenticator(Protocol):
    """Adds credentials to a request (the seam between the client and the credential kinds)."""

    async def authorize(self, request: OutgoingRequest) -> None: ...

    def forget(self, project_id: str, stale: str | None) -> bool:
        """After a 401: drop credentials that may have expired; True when sending again may succeed."""
        ...


@functools.lru_cache(maxsize=64)
def host_header(url: URL) -> str:
    """``host[:port]`` as sent in ``Host`` (the port only when it is not the scheme's default)."""
    host = url.raw_host or ""
    if ":" in host:
        host = f"[{host}]"
    if url.explicit_port is not None and not url.is_default_port():
        return f"{host}:{url.port}"
    return host


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class TokenAuth:
    """An IAM token sent as ``X-Auth-Token``."""

    token: str

    def __repr__(self) -> str:
        return "TokenAuth(token=***)"

    async def authorize(self, request: OutgoingRequest) -> None:
        request.headers["X-Auth-Token"] = self.token

    def forget(self, project_id: str, stale: str | None) -> bool:
        return False  # a fixed token cannot be renewed


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class AkSkAuth:
    """``SDK-HMAC-SHA256`` signatures with an access key pair (and a security token when temporary)."""

    ak: str
    sk: str
    security_token: str | None = None

    def __repr__(self) -> str:
        return "AkSkAuth(ak=***, sk=***)"

    def forget(self, project_id: str, stale: str | None) -> bool:
        return False  # a signature does not expire; a 401 means the keys are wrong

    async def authorize(self, request: OutgoingRequest) -> None:
        self.sign(request)

    def sign(self, request: OutgoingRequest) -> None:
        """``authorize``'s work, all of it synchronous (``Caller.call`` signs without a coroutine)."""
        headers = request.headers
        if request.project_id is not None:
            headers["X-Project-Id"] = request.project_id
        if self.security_token is not None:
            headers["X-Security-Token"] = self.security_token
        headers["X-Sdk-Date"] = signing.sdk_date()
        url = request.url
        headers["Host"] = host_header(url)
        headers["Authorization"] = signing.sdk_authorization(
            ak=self.ak,
            sk=self.sk,
            method=request.method,
            path=url.raw_path,
            raw_query=url.raw_query_string,
            headers=headers,
            body=request.body,
        )


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class PasswordCredentials:
    """An IAM user and password; ``iam.PasswordAuth`` turns them into tokens once a session exists."""

    user: str
    password: str
    domain: str

    def __repr__(self) -> str:
        return "PasswordCredentials(user=***, password=***)"


def discover(
    *,
    environ: Mapping[str, str],
    forced: AuthKind | None = None,
    token_file: Path | None = None,
) -> Authenticator | PasswordCredentials:
    """The first complete credential source, in the documented order (or the one ``--auth`` forces)."""
    order = [forced] if forced is not None else list(AUTH_KINDS)
    for kind in order:
        found: Authenticator | PasswordCredentials | None
        if kind == "token":
            found = _token(environ, token_file)
        elif kind == "aksk":
            found = _aksk(environ)
        else:
            found = _password(environ)
        if found is not None:
            return found
    looked = {
        "token": "OS_AUTH_TOKEN or --token-file",
        "aksk": "HUAWEICLOUD_SDK_AK + HUAWEICLOUD_SDK_SK, or [basic] ak/sk in "
        + str(_credentials_file(environ)),
        "password": "OS_USERNAME + OS_PASSWORD + OS_USER_DOMAIN_NAME",
    }
    wanted = "; ".join(f"{kind}: {looked[kind]}" for kind in order)
    raise CredentialsError(f"no complete credentials found (looked for {wanted})")


def _token(environ: Mapping[str, str], token_file: Path | None) -> TokenAuth | None:
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise CredentialsError(f"cannot read the token file {token_file}: {exc}") from None
        if not token:
            raise CredentialsError(f"the token file {token_file} is empty")
        return TokenAuth(token)
    token = environ.get("OS_AUTH_TOKEN", "").strip()
    return TokenAuth(token) if token else None


def _credentials_file(environ: Mapping[str, str]) -> Path:
    default = Path.home() / ".huaweicloud" / "credentials"
    return Path(environ.get("HUAWEICLOUD_SDK_CREDENTIALS_FILE") or default)


def _aksk(environ: Mapping[str, str]) -> AkSkAuth | None:
    ak = environ.get("HUAWEICLOUD_SDK_AK", "").strip()
    sk = environ.get("HUAWEICLOUD_SDK_SK", "").strip()
    security_token = environ.get("HUAWEICLOUD_SDK_SECURITY_TOKEN", "").strip() or None
    if ak and sk:
        return AkSkAuth(ak, sk, security_token)
    path = _credentials_file(environ)
    if not path.is_file():
        return None
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError, OSError) as exc:
        raise CredentialsError(f"cannot read the credentials file {path}: {type(exc).__name__}") from None
    if not parser.has_section("basic"):
        return None
    section = parser["basic"]
    ak, sk = section.get("ak", "").strip(), section.get("sk", "").strip()
    if not (ak and sk):
        return None
    return AkSkAuth(ak, sk, section.get("security_token", "").strip() or None)


def _password(environ: Mapping[str, str]) -> PasswordCredentials | None:
    user = environ.get("OS_USERNAME", "").strip()
    password = environ.get("OS_PASSWORD", "")
    domain = environ.get("OS_USER_DOMAIN_NAME", "").strip()
    return PasswordCredentials(user, password, domain) if user and password and domain else None
