"""The client side on its less travelled paths: safe calls that are refused, fail or wait out a state,
and credential discovery from files that are empty, malformed or incomplete."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from yarl import URL

from orchestrator.api import evs
from orchestrator.api.credentials import (
    AkSkAuth,
    PasswordCredentials,
    TokenAuth,
    discover,
    host_header,
)
from orchestrator.api.safe import fetch_json, remaining_quota
from orchestrator.deleter import delete_snapshot
from orchestrator.emulator import SeedSnapshot
from orchestrator.errors import CredentialsError, ListingFailed, RouteClosed
from orchestrator.retry import RetryPolicy
from tests.helpers import CLOSED_PORT, PROJECT, QUICK, SHOW, WRONG, hits, routed, volume_ids

DELETE = "DELETE /v2/{project_id}/cloudsnapshots/{snapshot_id}"
DISK = volume_ids(1, seed=911)[0]


def seeded(status: str) -> SeedSnapshot:
    return SeedSnapshot(
        id=str(uuid.uuid5(uuid.NAMESPACE_OID, f"api/{status}")), volume_id=DISK, status=status
    )


# --- safe calls ------------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_a_final_answer_is_not_retried(emulator: Callable[..., Any]) -> None:
    """A GET answered 404 (final) without missing_ok raises ListingFailed after one request, naming it."""
    emu = await emulator()
    missing = str(uuid.uuid4())
    async with routed(emu.url) as route:
        with pytest.raises(ListingFailed, match=r"failed \(404 "):
            await fetch_json(route, evs.show_snapshot(PROJECT, missing), QUICK)
    assert hits(emu, SHOW) == {"404": 1}


@pytest.mark.anyio
async def test_safe_delete_outcomes(emulator: Callable[..., Any]) -> None:
    """delete_snapshot: 404 is done; error_deleting fails at once (final); creating is retried for patience."""
    broken, young = seeded("error_deleting"), seeded("creating")
    emu = await emulator(snapshots=(broken, young))
    async with routed(emu.url) as route:
        assert await delete_snapshot(route, str(uuid.uuid4()), QUICK, patience=0) == (True, None)
        done, why = await delete_snapshot(route, broken.id, QUICK, patience=5)
        assert not done
        assert why is not None
        assert why.startswith("500 EVS.2019")
        done, why = await delete_snapshot(route, young.id, QUICK, patience=0.3)
        assert not done
        assert why is not None
        assert why.startswith("400 EVS.1047")
    assert hits(emu, DELETE)["500"] == 1
    assert hits(emu, DELETE)["400"] >= 2  # tried again while the patience lasted


@pytest.mark.anyio
async def test_safe_delete_spends_its_attempts_on_retryable_answers(emulator: Callable[..., Any]) -> None:
    """Every DELETE answered 5xx: (False, why) after exactly max_attempts requests."""
    target = seeded("available")
    emu = await emulator(snapshots=(target,), fault_5xx=1.0)
    async with routed(emu.url) as route:
        done, why = await delete_snapshot(route, target.id, QUICK, patience=0)
    assert not done
    assert why is not None
    assert why[:3] in {"500", "502", "503", "504"}
    assert sum(hits(emu, DELETE).values()) == QUICK.max_attempts


@pytest.mark.anyio
async def test_safe_delete_without_a_connection_fails() -> None:
    """No connection at all: (False, the transport error), not an exception."""
    async with routed(CLOSED_PORT) as route:
        done, why = await delete_snapshot(route, str(uuid.uuid4()), QUICK, patience=0)
    assert not done
    assert why


@pytest.mark.anyio
async def test_safe_delete_with_refused_credentials_closes_the_route(emulator: Callable[..., Any]) -> None:
    """A 401 on the DELETE raises RouteClosed (credentials refused) after one request."""
    emu = await emulator(snapshots=(seeded("available"),))
    async with routed(emu.url, WRONG) as route:
        with pytest.raises(RouteClosed, match="credentials refused"):
            await delete_snapshot(route, seeded("available").id, QUICK, patience=0)
        assert route.closed is not None
    assert hits(emu, DELETE) == {"401": 1}


@pytest.mark.anyio
async def test_remaining_quota(emulator: Callable[..., Any]) -> None:
    """The project's snapshot quota left: limit minus in use; None when unlimited."""
    limited = await emulator(snapshots=(seeded("available"), seeded("error")), snapshot_quota=5)
    unlimited = await emulator()
    async with routed(limited.url) as route:
        assert await remaining_quota(route, RetryPolicy(max_attempts=1)) == 3
    async with routed(unlimited.url) as route:
        assert await remaining_quota(route, RetryPolicy(max_attempts=1)) is None


# --- credentials -----------------------------------------------------------------------------------
def test_host_header_brackets_ipv6_and_drops_default_ports() -> None:
    """Host: IPv6 literals in brackets, the port only when it is not the scheme's default."""
    assert host_header(URL("http://[::1]:8080/v2")) == "[::1]:8080"
    assert (
        host_header(URL("https://evs.cn-north-4.myhuaweicloud.com:443/v2"))
        == "evs.cn-north-4.myhuaweicloud.com"
    )
    assert host_header(URL("http://127.0.0.1:80/")) == "127.0.0.1"


def test_credential_objects_never_show_their_secrets() -> None:
    """repr() of every credential kind hides the secret values."""
    shown = " ".join(
        repr(item)
        for item in (
            TokenAuth("tok-SECRET"),
            AkSkAuth("AK-SECRET", "SK-SECRET", "ST-SECRET"),
            PasswordCredentials("user-SECRET", "pw-SECRET", "dom-SECRET"),
        )
    )
    assert "SECRET" not in shown
    assert TokenAuth("x").forget(PROJECT, "x") is False
    assert AkSkAuth("a", "b").forget(PROJECT, None) is False


def test_token_file_problems_are_credential_errors(tmp_path: Path) -> None:
    """--token-file that is missing or empty raises CredentialsError naming the file; a good one is used."""
    missing = tmp_path / "missing.token"
    with pytest.raises(CredentialsError, match="cannot read the token file"):
        discover(environ={}, token_file=missing)
    empty = tmp_path / "empty.token"
    empty.write_text("  \n", encoding="utf-8")
    with pytest.raises(CredentialsError, match="is empty"):
        discover(environ={}, token_file=empty)
    good = tmp_path / "good.token"
    good.write_text("abc\n", encoding="utf-8")
    assert discover(environ={"OS_AUTH_TOKEN": "other"}, token_file=good) == TokenAuth("abc")


def test_credentials_file_variants(tmp_path: Path) -> None:
    """The [basic] credentials file: malformed is an error; no section or no keys fall through to the next kind."""
    path = tmp_path / "credentials"
    environ = {"HUAWEICLOUD_SDK_CREDENTIALS_FILE": str(path)}
    password = {"OS_USERNAME": "u", "OS_PASSWORD": "p", "OS_USER_DOMAIN_NAME": "d"}
    path.write_text("ak = no section header\n", encoding="utf-8")
    with pytest.raises(CredentialsError, match="cannot read the credentials file"):
        discover(environ=environ)
    path.write_text("[other]\nak = A\nsk = S\n", encoding="utf-8")
    assert discover(environ={**environ, **password}) == PasswordCredentials("u", "p", "d")
    path.write_text("[basic]\nak = A\n", encoding="utf-8")
    with pytest.raises(CredentialsError, match=r"no complete credentials found .*\[basic\] ak/sk in"):
        discover(environ=environ)
    path.write_text("[basic]\nak = A\nsk = S\nsecurity_token = T\n", encoding="utf-8")
    assert discover(environ=environ, forced="aksk") == AkSkAuth("A", "S", "T")
