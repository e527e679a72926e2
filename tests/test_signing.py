"""Our SDK-HMAC-SHA256 / V11 signer against the reference vectors and the official SDK's signer."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from yarl import URL

from orchestrator.api import signing
from orchestrator.api.credentials import host_header
from tests.helpers import PROJECT

AK = "HPUAEXAMPLEAK0000001"
SK = "ExampleSecretKey0000000000000000000000001"
HOST = "evs.cn-north-4.myhuaweicloud.com"
DATE = "20240115T083000Z"
V1_BODY = (
    b'{"snapshot": {"volume_id": "6d1a4e3c-2b7f-4c39-9f5e-0a1b2c3d4e5f", "force": true, '
    b'"name": "bulk-snap-001", "description": "nightly", "metadata": {"owner": "ops"}}}'
)
V1_HEADERS = {
    "Content-Type": "application/json;charset=UTF-8",
    "X-Project-Id": PROJECT,
    "X-Sdk-Date": DATE,
    "User-Agent": "huaweicloud-usdk-python/3.0",
    "Host": HOST,
}


def test_v0_official_doc_vector() -> None:
    """The Huawei signing guide's own example signs to its published signature."""
    headers = {
        "Content-Type": "application/json",
        "Host": "service.region.example.com",
        "X-Sdk-Date": "20191115T033655Z",
    }
    query = [("limit", "2"), ("marker", "13551d6b-755d-4757-b956-536f674975c0")]
    path = "/v1/77b6a44cba5143ab91d13ab9a8ff44fd/vpcs"
    signed = signing.signed_header_names(headers)
    canonical = signing.canonical_request(
        method="GET", path=path, query=query, headers=headers, signed=signed, body=b""
    )
    assert signing.string_to_sign(canonical, "20191115T033655Z").endswith(
        "b25362e603ee30f4f25e7858e8a7160fd36e803bb2dfe206278659d71a9bcd7a"
    )
    assert signing.authorization(
        ak="QTWAOYTTINDUT2QVKYUC",
        sk="MFyfvK41ba2giqM7Uio6PznpdUKGpownRZlmVmHc",
        method="GET",
        path=path,
        query=query,
        headers=headers,
        body=b"",
    ) == (
        "SDK-HMAC-SHA256 Access=QTWAOYTTINDUT2QVKYUC, SignedHeaders=content-type;host;x-sdk-date, "
        "Signature=7be6668032f70418fcc22abc52071e57aff61b84a1d2381bb430d6870f4f6ebe"
    )


def test_v1_create_snapshot() -> None:
    """The create request of vector V1: canonical request, string to sign and header all match."""
    path = f"/v2/{PROJECT}/cloudsnapshots"
    signed = signing.signed_header_names(V1_HEADERS)
    canonical = signing.canonical_request(
        method="POST", path=path, query=[], headers=V1_HEADERS, signed=signed, body=V1_BODY
    )
    assert canonical == (
        f"POST\n/v2/{PROJECT}/cloudsnapshots/\n\n"
        "content-type:application/json;charset=UTF-8\n"
        f"host:{HOST}\nuser-agent:huaweicloud-usdk-python/3.0\n"
        f"x-project-id:{PROJECT}\nx-sdk-date:{DATE}\n\n"
        "content-type;host;user-agent;x-project-id;x-sdk-date\n"
        "bf874501453557fa9938eb70ca4bd4f2867af9264605bc7f34d352953009667d"
    )
    assert signing.string_to_sign(canonical, DATE) == (
        f"SDK-HMAC-SHA256\n{DATE}\n932260eeebab04cac150e4645727bb2d2033230a33d97ac1979330d17a8c16e5"
    )
    assert signing.authorization(
        ak=AK, sk=SK, method="POST", path=path, query=[], headers=V1_HEADERS, body=V1_BODY
    ) == (
        "SDK-HMAC-SHA256 Access=HPUAEXAMPLEAK0000001, "
        "SignedHeaders=content-type;host;user-agent;x-project-id;x-sdk-date, "
        "Signature=188c9872bf7b88867505b365962d1f37ce4cc9c8e7e54b1a91353ef2d27bf2da"
    )


def test_v2_query_encoding() -> None:
    """Unsorted, repeated and special-character query parameters canonicalize as in vector V2."""
    query = [
        ("status", "available"),
        ("limit", "50"),
        ("offset", "0"),
        ("name", "snap a/b*~"),
        ("id", "id-2"),
        ("id", "id-1"),
    ]
    assert (
        signing.canonical_query(query)
        == "id=id-1&id=id-2&limit=50&name=snap%20a%2Fb%2A~&offset=0&status=available"
    )
    headers = {"Content-Type": "application/json", "X-Project-Id": PROJECT, "X-Sdk-Date": DATE, "Host": HOST}
    assert signing.authorization(
        ak=AK,
        sk=SK,
        method="GET",
        path=f"/v2/{PROJECT}/cloudsnapshots/detail",
        query=query,
        headers=headers,
        body=b"",
    ).endswith("Signature=9f35e7669bb7d47b1b11db03003c908dd8a2f181c456aa79c0ac06b4dc4adb46")


def test_v3_security_token_is_signed() -> None:
    """A temporary key's X-Security-Token is a signed header (vector V3)."""
    headers = {
        "Content-Type": "application/json",
        "X-Sdk-Date": DATE,
        "X-Project-Id": PROJECT,
        "X-Security-Token": "EXAMPLE-SECURITY-TOKEN",
        "Host": HOST,
    }
    assert signing.authorization(
        ak=AK,
        sk=SK,
        method="GET",
        path=f"/v2/{PROJECT}/cloudsnapshots/a1b2c3d4-0000-1111-2222-333344445555",
        query=[],
        headers=headers,
        body=b"",
    ) == (
        "SDK-HMAC-SHA256 Access=HPUAEXAMPLEAK0000001, "
        "SignedHeaders=content-type;host;x-project-id;x-sdk-date;x-security-token, "
        "Signature=efd7d1d8410978f2837770af8ff292d5f0ac226bffb991290035b323f4a211f0"
    )


def test_v4_derived_signing() -> None:
    """V11-HMAC-SHA256: the derived key and the header of vector V4."""
    assert signing.derived_key(AK, SK, "20240115/cn-north-4/evs") == (
        "26daeb317fda065bf8bbe7a124a68a9eeb6c3a666ff365c341e76d9406ec557f"
    )
    assert signing.authorization(
        ak=AK,
        sk=SK,
        method="POST",
        path=f"/v2/{PROJECT}/cloudsnapshots",
        query=[],
        headers=V1_HEADERS,
        body=V1_BODY,
        derived=("cn-north-4", "evs"),
    ) == (
        "V11-HMAC-SHA256 Credential=HPUAEXAMPLEAK0000001/20240115/cn-north-4/evs, "
        "SignedHeaders=content-type;host;user-agent;x-project-id;x-sdk-date, "
        "Signature=f7f4ab1ac7783841003356311bdc6a7640214e4cf04dba157ccfd29fa0d5cb37"
    )


def test_v5_path_escape_and_underscore_header() -> None:
    """An escaped path segment keeps its escape, and a header with '_' is sent but not signed (V5)."""
    headers = {"X-Sdk-Date": DATE, "X_Custom_Underscore": "skipme", "Host": HOST}
    path = f"/v2/{PROJECT}/cloudsnapshots/snap%20x"
    assert signing.canonical_uri(path) == f"/v2/{PROJECT}/cloudsnapshots/snap%20x/"
    assert signing.authorization(
        ak=AK, sk=SK, method="DELETE", path=path, query=[], headers=headers, body=b""
    ) == (
        "SDK-HMAC-SHA256 Access=HPUAEXAMPLEAK0000001, SignedHeaders=host;x-sdk-date, "
        "Signature=2fc6e46f45858381d066eac7218801a4aa6067e9eea3af2bba8a5db6b8b49b8b"
    )


def test_parse_authorization_round_trip() -> None:
    """The emulator's parser reads back what the signer wrote."""
    value = signing.authorization(
        ak=AK, sk=SK, method="POST", path="/x", query=[], headers=V1_HEADERS, body=V1_BODY
    )
    parsed = signing.parse_authorization(value)
    assert parsed is not None
    assert parsed[0] == signing.ALGORITHM
    assert parsed[1]["Access"] == AK
    assert parsed[1]["SignedHeaders"] == "content-type;host;user-agent;x-project-id;x-sdk-date"
    assert signing.parse_authorization("Basic abc") is None


# --- against the official SDK ----------------------------------------------------------------

segment = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="/?#%", exclude_categories=("Cs",)),
    min_size=1,
    max_size=12,
)
query_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=10)
header_value = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)


def sdk_authorization(
    *,
    method: str,
    path: str,
    query: list[tuple[str, str]],
    headers: dict[str, str],
    body: bytes,
    security_token: str | None,
) -> str:
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkcore.sdk_request import SdkRequest
    from huaweicloudsdkcore.signer.signer import Signer

    request = SdkRequest(
        method=method,
        schema="https",
        host=HOST,
        resource_path=path,
        query_params=list(query),
        header_params=dict(headers),
        body=body,
    )
    credentials = BasicCredentials(AK, SK, PROJECT)
    if security_token is not None:
        credentials = credentials.with_security_token(security_token)
        request.header_params["X-Security-Token"] = security_token
    signed: Any = Signer(credentials).sign(request)
    return str(signed.header_params["Authorization"])


@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
    segments=st.lists(segment, min_size=1, max_size=4),
    query=st.lists(st.tuples(query_text.filter(bool), query_text), max_size=5),
    # Header names are case-insensitive (RFC 9110): "X-A" and "x-a" are one header, never two, on the
    # wire and in our client; the SDK would list such a pair twice in SignedHeaders.
    extra=st.dictionaries(
        st.from_regex(r"X-[A-Za-z][A-Za-z0-9_-]{0,10}", fullmatch=True), header_value, max_size=3
    ).filter(lambda headers: len({name.lower() for name in headers}) == len(headers)),
    body=st.binary(max_size=64),
    security_token=st.none() | st.text(alphabet="ABCDEFabcdef0123456789", min_size=8, max_size=16),
)
@pytest.mark.no_cover  # other tests cover every branch it runs: untraced, it costs half (development.md)
def test_matches_official_sdk(
    method: str,
    segments: list[str],
    query: list[tuple[str, str]],
    extra: dict[str, str],
    body: bytes,
    security_token: str | None,
) -> None:
    """Random requests get the same Authorization from our signer and from huaweicloudsdkcore's."""
    from urllib.parse import quote

    path = "/" + "/".join(quote(part, safe="") for part in segments)
    headers = {"Content-Type": "application/json", "X-Sdk-Date": DATE, "X-Project-Id": PROJECT, **extra}
    headers = {
        k: v for k, v in headers.items() if k.lower() not in ("host", "x-security-token", "authorization")
    }
    expected = sdk_authorization(
        method=method, path=path, query=query, headers=headers, body=body, security_token=security_token
    )
    ours = dict(headers, Host=HOST)
    if security_token is not None:
        ours["X-Security-Token"] = security_token
    assert (
        signing.authorization(ak=AK, sk=SK, method=method, path=path, query=query, headers=ours, body=body)
        == expected
    )
    raw_query = signing.canonical_query(query)  # the query string the client sends
    for _ in range(2):  # the prepared head (a cache entry), then the same request again from it
        assert (
            signing.sdk_authorization(
                ak=AK, sk=SK, method=method, path=path, raw_query=raw_query, headers=ours, body=body
            )
            == expected
        )


@pytest.mark.parametrize("content_type", ["text/plain", "application/octet-stream"])
def test_unsigned_payload_for_non_json(content_type: str) -> None:
    """A non-JSON body is hashed as the literal UNSIGNED-PAYLOAD, as the SDK marks it."""
    headers = {"Content-Type": content_type, "X-Sdk-Date": DATE}
    expected = sdk_authorization(
        method="POST", path="/v1/x", query=[], headers=headers, body=b"abc", security_token=None
    )
    ours = {**headers, "Host": HOST, signing.CONTENT_HASH_HEADER: signing.UNSIGNED_PAYLOAD}
    assert (
        signing.authorization(ak=AK, sk=SK, method="POST", path="/v1/x", query=[], headers=ours, body=b"abc")
        == expected
    )
    fast = signing.sdk_authorization(
        ak=AK, sk=SK, method="POST", path="/v1/x", raw_query="", headers=ours, body=b"abc"
    )
    assert fast == expected


def test_host_header_brackets_ipv6_and_drops_default_ports() -> None:
    """Host: IPv6 literals in brackets, the port only when it is not the scheme's default."""
    assert host_header(URL("http://[::1]:8080/v2")) == "[::1]:8080"
    assert (
        host_header(URL("https://evs.cn-north-4.myhuaweicloud.com:443/v2"))
        == "evs.cn-north-4.myhuaweicloud.com"
    )
    assert host_header(URL("http://127.0.0.1:80/")) == "127.0.0.1"


@pytest.mark.parametrize("length", [0, 1, 40, 64, 65, 200])
def test_keyed_hash_is_hmac_sha256_for_any_key_length(length: int) -> None:
    """The signatures' HMAC (its key's pads hashed once) is HMAC-SHA256, a key longer than a block too."""
    key = bytes(range(256))[:length]
    for message in (b"", b"SDK-HMAC-SHA256\n" * 9):
        assert signing._keyed(key, message) == hmac.new(key, message, hashlib.sha256).hexdigest()
