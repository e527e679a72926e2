"""The emulator's gateway and IAM: tokens and AK/SK signatures checked as the service does, the AK lock,
token expiry (401 or 400 Common.0013), throttling, the IAM calls, and the injected clock (the manual
clock itself, wall timestamps that age with it)."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import pytest
from yarl import URL

from orchestrator.api import signing
from orchestrator.api.credentials import AkSkAuth, OutgoingRequest, TokenAuth, host_header
from orchestrator.emulator import ManualClock, RunningEmulator
from orchestrator.emulator.gateway import sdk_time
from orchestrator.emulator.settings import (
    DEFAULT_AK,
    DEFAULT_DOMAIN,
    DEFAULT_PASSWORD,
    DEFAULT_SK,
    DEFAULT_USER,
)
from tests.helpers import PROJECT, REGION, call, create_body, hits, seeds, token_request, volume_ids

Start = Callable[..., Awaitable[RunningEmulator]]
SNAPSHOTS = f"/v2/{PROJECT}/cloudsnapshots"
VOLUME = volume_ids(1)[0]
EVS_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"
IAM_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
AK_LOCKED = {
    "error_code": "APIGW.0301",
    "error_msg": "Incorrect IAM authentication information: AK access failed to reach the limit,forbidden",
}


async def password_token(
    http: aiohttp.ClientSession, emu: RunningEmulator, **changes: str
) -> tuple[int, Any, str]:
    body = token_request({"project": {"name": REGION}}, **changes)
    async with http.post(f"{emu.url}/v3/auth/tokens", data=orjson.dumps(body)) as response:
        return (
            response.status,
            orjson.loads(await response.read()),
            response.headers.get("X-Subject-Token", ""),
        )


class DerivedSigner:
    """``V11-HMAC-SHA256`` (derived key) signatures, which the official SDK can send; the tool never does."""

    def __init__(self, region: str) -> None:
        self.region = region

    async def authorize(self, request: OutgoingRequest) -> None:
        headers = request.headers
        headers["X-Sdk-Date"] = signing.sdk_date()
        headers["Host"] = host_header(request.url)
        headers["Authorization"] = signing.authorization(
            ak=DEFAULT_AK,
            sk=DEFAULT_SK,
            method=request.method,
            path=request.url.raw_path,
            query=signing.parse_query(request.url.raw_query_string),
            headers=headers,
            body=request.body,
            derived=(self.region, "evs"),
        )

    def forget(self, project_id: str, stale: str | None) -> bool:
        return False


class MalformedSigner(DerivedSigner):
    async def authorize(self, request: OutgoingRequest) -> None:
        request.headers["Authorization"] = f"{signing.ALGORITHM} Access{DEFAULT_AK}"


def test_manual_clock_moves_only_forward_and_is_thread_safe() -> None:
    """advance() adds up across threads; reading does not move it; it never goes back."""
    clock = ManualClock(start=5.0)
    assert clock() == clock() == 5.0

    def advance_many() -> None:
        for _ in range(1000):
            clock.advance(0.5)

    threads = [threading.Thread(target=advance_many) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert clock() == 2005.0
    with pytest.raises(ValueError, match="forward"):
        clock.advance(-1)


async def test_wall_timestamps_follow_the_clock(
    clocked: Start, clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    """created_at, issued_at and expires_at are the start wall time plus the clock's advance."""
    emu = await clocked(volumes=seeds([VOLUME]), creating_seconds=0, token_ttl=7200)
    _, first, _ = await call(http, emu, "POST", SNAPSHOTS, body={"snapshot": {"volume_id": VOLUME}})
    _, token_body, _ = await password_token(http, emu)
    clock.advance(3600)
    _, second, _ = await call(http, emu, "POST", SNAPSHOTS, body={"snapshot": {"volume_id": VOLUME}})
    _, later_token, _ = await password_token(http, emu)
    created = [datetime.strptime(s["snapshot"]["created_at"], EVS_FORMAT) for s in (first, second)]
    assert (created[1] - created[0]).total_seconds() == 3600
    issued = [datetime.strptime(t["token"]["issued_at"], IAM_FORMAT) for t in (token_body, later_token)]
    assert (issued[1] - issued[0]).total_seconds() == 3600
    expires = datetime.strptime(token_body["token"]["expires_at"], IAM_FORMAT)
    assert (expires - issued[0]).total_seconds() == 7200


@pytest.mark.parametrize(
    ("answer", "status", "body"),
    [
        (
            401,
            401,
            {
                "error_code": "APIGW.0301",
                "error_msg": "Incorrect IAM authentication information: token expired",
            },
        ),
        (400, 400, {"error_code": "Common.0013", "error_msg": "The token is expired or invalid."}),
    ],
)
async def test_expired_token_answer(
    clocked: Start,
    clock: ManualClock,
    http: aiohttp.ClientSession,
    answer: int,
    status: int,
    body: dict[str, str],
) -> None:
    """An issued token works until its TTL on the clock, then is refused as --expired-token-answer says."""
    emu = await clocked(token_ttl=60, expired_token_answer=answer)
    _, _, token = await password_token(http, emu)
    got, _, _ = await call(http, emu, "GET", f"{SNAPSHOTS}/detail", auth=TokenAuth(token))
    assert got == 200
    clock.advance(59.9)
    got, _, _ = await call(http, emu, "GET", f"{SNAPSHOTS}/detail", auth=TokenAuth(token))
    assert got == 200
    clock.advance(0.1)
    got, refused, _ = await call(http, emu, "GET", f"{SNAPSHOTS}/detail", auth=TokenAuth(token))
    assert (got, {k: v for k, v in refused.items() if k != "request_id"}) == (status, body)
    assert refused["request_id"]
    got, _, _ = await call(http, emu, "GET", "/v3/auth/projects", auth=TokenAuth(token))
    assert got == status


async def test_ak_lock(clocked: Start, clock: ManualClock, http: aiohttp.ClientSession) -> None:
    """N signature failures in a row lock the AK for S seconds (even good signatures are refused); a
    success resets the count; unknown AKs and tokens are unaffected."""
    emu = await clocked(ak_lock_after=3, ak_lock_seconds=300)
    good, bad = AkSkAuth(DEFAULT_AK, DEFAULT_SK), AkSkAuth(DEFAULT_AK, "wrong-secret")
    path = f"{SNAPSHOTS}/detail"
    for auth in (bad, bad, good, bad, bad):  # the success in the middle resets the count
        status, _, _ = await call(http, emu, "GET", path, auth=auth)
        assert status == (200 if auth is good else 401)
    status, body, _ = await call(http, emu, "GET", path, auth=bad)
    assert (status, body["error_msg"]) == (
        401,
        "Incorrect IAM authentication information: verify aksk signature fail",
    )
    for auth in (good, bad):
        status, body, _ = await call(http, emu, "GET", path, auth=auth)
        assert (status, {k: v for k, v in body.items() if k != "request_id"}) == (401, AK_LOCKED)
    status, body, _ = await call(http, emu, "GET", "/v3/auth/projects", auth=good)
    assert (status, body["error_msg"]) == (401, AK_LOCKED["error_msg"])
    status, body, _ = await call(http, emu, "GET", path, auth=AkSkAuth("UNKNOWNAK00000000000", DEFAULT_SK))
    assert (status, body["error_msg"]) == (
        401,
        "Incorrect IAM authentication information: Get secretKey failed,ak:******,err:ak not exist",
    )
    status, _, _ = await call(http, emu, "GET", path)
    assert status == 200  # tokens are not locked
    clock.advance(299)
    status, _, _ = await call(http, emu, "GET", path, auth=good)
    assert status == 401
    clock.advance(1)
    status, _, _ = await call(http, emu, "GET", path, auth=good)
    assert status == 200


async def test_ak_lock_is_off_by_default(emulator: Callable[..., Any], http: aiohttp.ClientSession) -> None:
    """Without --ak-lock-after, failures never lock the AK."""
    emu = await emulator()
    for _ in range(8):
        status, _, _ = await call(http, emu, "GET", f"{SNAPSHOTS}/detail", auth=AkSkAuth(DEFAULT_AK, "nope"))
        assert status == 401
    status, _, _ = await call(http, emu, "GET", f"{SNAPSHOTS}/detail", auth=AkSkAuth(DEFAULT_AK, DEFAULT_SK))
    assert status == 200


async def test_rate_limit_refills_with_the_clock(
    clocked: Start, clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    """The throttling bucket refills as the injected clock advances, not with real time."""
    emu = await clocked(rate_limit=1, burst=1)
    statuses = [(await call(http, emu, "GET", f"{SNAPSHOTS}/detail"))[0] for _ in range(3)]
    assert statuses == [200, 429, 429]
    clock.advance(1)
    statuses = [(await call(http, emu, "GET", f"{SNAPSHOTS}/detail"))[0] for _ in range(2)]
    assert statuses == [200, 429]


async def test_list_projects_denied_but_auth_projects_served(
    emulator: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    """--iam-deny-list-projects: GET /v3/projects is 403; GET /v3/auth/projects lists the project
    for a token or a signature, and needs one of them."""
    emu = await emulator(iam_deny_list_projects=True)
    status, body, _ = await call(http, emu, "GET", "/v3/projects", query=[("name", "cn-north-4")])
    assert (status, body) == (
        403,
        {
            "error_msg": "Policy doesn't allow iam:projects:listProjects to be performed.",
            "error_code": "IAM.0003",
        },
    )
    for auth in (None, AkSkAuth(DEFAULT_AK, DEFAULT_SK)):
        status, body, _ = await call(http, emu, "GET", "/v3/auth/projects", auth=auth)
        assert status == 200
        [project] = body["projects"]
        assert (project["id"], project["name"], project["enabled"]) == (PROJECT, "cn-north-4", True)
        assert project["domain_id"]
        assert set(body["links"]) >= {"self"}
    status, body, _ = await call(http, emu, "GET", "/v3/auth/projects", auth=False)
    assert (status, body["error_code"]) == (401, "APIGW.0301")
    allowed = await emulator()
    status, body, _ = await call(http, allowed, "GET", "/v3/projects", query=[("name", "cn-north-4")])
    assert (status, [p["id"] for p in body["projects"]]) == (200, [PROJECT])


async def test_aksk_signature_accepted_and_tampering_refused(
    emulator: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    """A correct signature passes; a wrong secret, unknown AK or altered body is 401 APIGW.0301."""
    emu = await emulator(volumes=seeds([VOLUME]), port=0)
    status, _, _ = await call(
        http, emu, "POST", SNAPSHOTS, body=create_body(), auth=AkSkAuth(DEFAULT_AK, DEFAULT_SK)
    )
    assert status == 202
    for auth in (AkSkAuth(DEFAULT_AK, "wrong-secret"), AkSkAuth("UNKNOWNAK00000000000", DEFAULT_SK)):
        status, body, _ = await call(http, emu, "POST", SNAPSHOTS, body=create_body(), auth=auth)
        assert (status, body["error_code"]) == (401, "APIGW.0301")
        assert body["request_id"]
    outgoing = OutgoingRequest(
        method="POST",
        url=URL(f"{emu.url}{SNAPSHOTS}"),
        headers={"Content-Type": "application/json"},
        body=orjson.dumps(create_body()),
        project_id=PROJECT,
    )
    await AkSkAuth(DEFAULT_AK, DEFAULT_SK, "TEMP-TOKEN").authorize(outgoing)
    tampered = orjson.dumps(create_body(name="other"))
    async with http.post(outgoing.url, data=tampered, headers=outgoing.headers) as response:
        assert response.status == 401
    async with http.post(outgoing.url, data=outgoing.body, headers=outgoing.headers) as response:
        assert response.status == 202  # the security token is signed and accepted


async def test_signature_must_cover_host_port(
    emulator: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    """The Host header (with its port) is part of the signature: signing another port fails."""
    emu = await emulator(volumes=seeds([VOLUME]))
    url = URL(f"{emu.url}{SNAPSHOTS}")
    headers = {
        "Content-Type": "application/json",
        "X-Sdk-Date": datetime.now(UTC).strftime(signing.DATE_FORMAT),
        "Host": f"127.0.0.1:{url.port + 1 if url.port else 1}",
    }
    body = orjson.dumps(create_body())
    headers["Authorization"] = signing.authorization(
        ak=DEFAULT_AK, sk=DEFAULT_SK, method="POST", path=url.path, query=[], headers=headers, body=body
    )
    headers["Host"] = f"127.0.0.1:{url.port}"
    async with http.post(url, data=body, headers=headers) as response:
        assert response.status == 401


async def test_clock_skew_window(emulator: Callable[..., Any], http: aiohttp.ClientSession) -> None:
    """A signature dated 16 minutes away is refused; 10 minutes away is accepted."""
    emu = await emulator(volumes=seeds([VOLUME]))
    url = URL(f"{emu.url}{SNAPSHOTS}")
    body = orjson.dumps(create_body())
    results = []
    for minutes in (16, -16, 10):
        headers = {
            "Content-Type": "application/json",
            "X-Sdk-Date": (datetime.now(UTC) + timedelta(minutes=minutes)).strftime(signing.DATE_FORMAT),
            "Host": f"127.0.0.1:{url.port}",
        }
        headers["Authorization"] = signing.authorization(
            ak=DEFAULT_AK, sk=DEFAULT_SK, method="POST", path=url.path, query=[], headers=headers, body=body
        )
        async with http.post(url, data=body, headers=headers) as response:
            results.append(response.status)
    assert results == [401, 401, 202]


@pytest.mark.parametrize(
    "text",
    [
        "20261207T083000Z",
        "20240229T235959Z",
        "20230229T120000Z",  # no 29 February that year
        "20261307T000000Z",  # month 13
        "20261207T240000Z",
        "20261207T235960Z",  # a leap second: strptime reads it, datetime refuses it
        "00001207T000000Z",
        "2026127T0830000Z",  # the T out of place
        "20261207T083000z",
        "2026120\uff17T083000Z",  # a fullwidth digit seven
        "+2026120T083000Z",
        "20261207T08300Z",
        "",
    ],
)
def test_sdk_date_read_as_strptime_reads_it(text: str) -> None:
    """The gateway's fast reading of X-Sdk-Date accepts and refuses exactly what strptime does."""
    try:
        expected: datetime | None = datetime.strptime(text, signing.DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        expected = None
    try:
        got: datetime | None = sdk_time(text)
    except ValueError:
        got = None
    assert got == expected


async def test_signed_query_string(emulator: Callable[..., Any], http: aiohttp.ClientSession) -> None:
    """Query parameters with special characters are signed and verified in canonical form."""
    emu = await emulator()
    status, body, _ = await call(
        http,
        emu,
        "GET",
        f"{SNAPSHOTS}/detail",
        query=[("name", "snap a/b*~"), ("limit", "5"), ("id", "b"), ("id", "a")],
        auth=AkSkAuth(DEFAULT_AK, DEFAULT_SK),
    )
    assert (status, body["count"]) == (200, 0)


async def test_missing_and_unknown_token(emulator: Callable[..., Any], http: aiohttp.ClientSession) -> None:
    """No credentials, or a token the emulator never issued, is 401 in the gateway shape."""
    emu = await emulator()
    for auth in (False, TokenAuth("forged")):
        status, body, _ = await call(http, emu, "GET", f"{SNAPSHOTS}/detail", auth=auth)
        assert (status, body["error_code"]) == (401, "APIGW.0301")


async def test_iam_password_token_and_expiry(
    clocked: Start, clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    """IAM issues a project token (201, X-Subject-Token, expires_at) that works until it expires."""
    emu = await clocked(volumes=seeds([VOLUME]), token_ttl=600)
    status, body, token = await password_token(http, emu)
    assert status == 201
    assert token
    assert body["token"]["project"]["id"] == PROJECT
    expires = datetime.strptime(body["token"]["expires_at"], "%Y-%m-%dT%H:%M:%S.%fZ")
    assert expires > datetime.now(UTC).replace(tzinfo=None)
    status, _, _ = await call(http, emu, "POST", SNAPSHOTS, body=create_body(), auth=TokenAuth(token))
    assert status == 202
    clock.advance(600)
    status, error, _ = await call(http, emu, "GET", f"{SNAPSHOTS}/detail", auth=TokenAuth(token))
    assert (status, error["error_code"]) == (401, "APIGW.0301")
    status, error, _ = await password_token(http, emu, password="wrong")
    assert (status, error) == (
        401,
        {"error_msg": "The request you have made requires authentication.", "error_code": "IAM.0001"},
    )


async def test_project_mismatch(emulator: Callable[..., Any], http: aiohttp.ClientSession) -> None:
    """A token used on another project's URL is 400 Common.0018; a signature on it is EVS.0001."""
    emu = await emulator(volumes=seeds([VOLUME]))
    other = "f" * 32
    status, body, _ = await call(http, emu, "GET", f"/v2/{other}/cloudsnapshots/detail")
    assert (status, body["error"]["code"]) == (400, "Common.0018")
    status, body, _ = await call(
        http, emu, "GET", f"/v2/{other}/cloudsnapshots/detail", auth=AkSkAuth(DEFAULT_AK, DEFAULT_SK)
    )
    assert (status, body["error"]["code"]) == (400, "EVS.0001")


async def test_project_lookup(emulator: Callable[..., Any], http: aiohttp.ClientSession) -> None:
    """GET /v3/projects?name=REGION finds the served project, and nothing for another region."""
    emu = await emulator()
    status, body, _ = await call(http, emu, "GET", "/v3/projects", query=[("name", "cn-north-4")])
    assert (status, [p["id"] for p in body["projects"]]) == (200, [PROJECT])
    _, body, _ = await call(
        http,
        emu,
        "GET",
        "/v3/projects",
        query=[("name", "ap-southeast-1")],
        auth=AkSkAuth(DEFAULT_AK, DEFAULT_SK),
    )
    assert body["projects"] == []


async def test_throttling(emulator: Callable[..., Any], http: aiohttp.ClientSession) -> None:
    """Past the bucket, answers are 429 APIGW.0308 with Retry-After when asked."""
    emu = await emulator(rate_limit=2, burst=3, retry_after=True)
    statuses = []
    for _ in range(5):
        status, body, headers = await call(http, emu, "GET", f"{SNAPSHOTS}/detail")
        statuses.append(status)
    assert statuses == [200, 200, 200, 429, 429]
    assert body["error_code"] == "APIGW.0308"
    assert "limit:2" in body["error_msg"]
    assert int(headers["Retry-After"]) >= 1


@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_official_sdk_with_wrong_key_is_refused(emulator_thread: Callable[..., Any]) -> None:
    """The SDK sees the gateway's 401 APIGW.0301 when its secret key is wrong."""
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
    from huaweicloudsdkevs.v2 import EvsClient, ListSnapshotsRequest

    emu = emulator_thread()
    client = (
        EvsClient.new_builder()
        .with_credentials(BasicCredentials(DEFAULT_AK, "not-the-secret", PROJECT))
        .with_endpoints([emu.url])
        .build()
    )
    with pytest.raises(ClientRequestException) as refused:
        client.list_snapshots(ListSnapshotsRequest())
    assert (refused.value.status_code, refused.value.error_code) == (401, "APIGW.0301")


async def test_gateway_signatures(emulator: Callable[..., Any], http: aiohttp.ClientSession) -> None:
    """Derived-key signatures are verified (for the served region only); a malformed header is a 401."""
    emu = await emulator()
    path = f"/v2/{PROJECT}/cloudsnapshots/detail"
    status, body, _ = await call(http, emu, "GET", path, auth=DerivedSigner(REGION))
    assert (status, body["count"]) == (200, 0)
    status, body, _ = await call(http, emu, "GET", path, auth=DerivedSigner("cn-south-1"))
    assert (status, body["error_msg"]) == (
        401,
        "Incorrect IAM authentication information: verify aksk signature fail",
    )
    status, body, _ = await call(http, emu, "GET", path, auth=MalformedSigner(REGION))
    assert (status, body["error_msg"]) == (
        401,
        "Incorrect IAM authentication information: verify aksk signature fail",
    )
    assert signing.parse_authorization(f"{signing.ALGORITHM} Access=a, SignedHeaders") is None
    assert hits(emu, "GET /v2/{project_id}/cloudsnapshots/detail") == {"200": 1, "401": 2}


async def test_iam_refuses_a_token_request_without_the_password_method(
    emulator: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    """The emulator's IAM refuses a token request without the password method, or with a malformed scope."""
    emu = await emulator()
    identity = {
        "methods": ["token"],
        "password": {
            "user": {"name": DEFAULT_USER, "password": DEFAULT_PASSWORD, "domain": {"name": DEFAULT_DOMAIN}}
        },
    }
    for auth in (
        {"identity": identity, "scope": {"project": {"id": PROJECT}}},
        {"identity": {**identity, "methods": ["password"]}, "scope": {"project": PROJECT}},
    ):
        status, body, headers = await call(
            http, emu, "POST", "/v3/auth/tokens", body={"auth": auth}, auth=False
        )
        assert (status, body["error_code"]) == (400, "IAM.0011"), body
        assert "X-Subject-Token" not in headers
    assert emu.world.tokens == {}
