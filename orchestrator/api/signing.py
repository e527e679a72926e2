"""The ``SDK-HMAC-SHA256`` and ``V11-HMAC-SHA256`` request signatures, exactly as the official SDK does them.

Pure functions on strings and bytes (standard library only), used by the client to sign and by the
emulator to verify. The algorithm and its test vectors are in ``shared/reference/evs-api.md`` sections
5.2 and 6; ``tests/test_signing.py`` checks every vector and compares with the SDK's own signer.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from urllib.parse import quote, unquote

from orchestrator.api.clock import SIGNATURE_WINDOW, gateway_offset

ALGORITHM = "SDK-HMAC-SHA256"
DERIVED_ALGORITHM = "V11-HMAC-SHA256"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
EMPTY_HASH = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
CONTENT_HASH_HEADER = "X-Sdk-Content-Sha256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
# The code of a signature dated more than SIGNATURE_WINDOW from the gateway's clock.
SIGNATURE_EXPIRED = "APIGW.0303"

QueryParams = Sequence[tuple[str, str]]


def _encode(text: str) -> str:
    return quote(text, safe="~")


def sdk_date(epoch: float | None = None) -> str:
    """The ``X-Sdk-Date`` value (UTC, whole seconds) of ``epoch``, or of now."""
    return _sdk_date(int(time.time() if epoch is None else epoch))


@functools.lru_cache(maxsize=4)
def _sdk_date(second: int) -> str:
    return time.strftime(DATE_FORMAT, time.gmtime(second))  # formatted once a second, not per request


def clock_advice(code: str, date: str | None, now: float | None = None) -> str:
    """What a refused signature says of the local clock: ``""`` unless ``code`` is ``APIGW.0303``.

    ``date`` is the answer's ``Date`` header (the gateway's clock); the offset is the local clock
    minus it, in whole seconds (``clock.gateway_offset``, the one computation, which ``doctor`` uses).
    """
    if code != SIGNATURE_EXPIRED:
        return ""
    limit = f"the gateway refuses AK/SK signatures more than {SIGNATURE_WINDOW // 60} minutes from its clock"
    fix = "set this machine's clock right (NTP) and run again"
    sent = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    gateway_ahead = gateway_offset(date=date, sent=sent)
    if gateway_ahead is None:
        return f"the local clock is off (signature expired): {limit}; {fix}"
    offset = round(-gateway_ahead)
    side = "ahead of" if offset > 0 else "behind"
    return (
        f"the local clock is off: it is {abs(offset)} s ({abs(offset) / 60:.1f} min) {side} the gateway's "
        f"(its Date header: {date}); {limit}; {fix}"
    )


@functools.lru_cache(maxsize=1024)
def canonical_uri(path: str) -> str:
    """Percent-encode each path segment (RFC 3986 unreserved kept) and end with ``/``."""
    encoded = "/".join(_encode(segment) for segment in unquote(path).split("/"))
    return encoded if encoded.endswith("/") else encoded + "/"


def canonical_query(params: Iterable[tuple[str, str]]) -> str:
    """Sort ``(key, value)`` pairs and encode both sides; also the exact query string to send."""
    return "&".join(f"{_encode(key)}={_encode(value)}" for key, value in sorted(params))


def parse_query(raw_query: str) -> list[tuple[str, str]]:
    """Decode a wire query string into pairs (``+`` stays ``+``: the SDK never sends it for a space)."""
    pairs: list[tuple[str, str]] = []
    for part in raw_query.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        pairs.append((unquote(key), unquote(value)))
    return pairs


def payload_hash(body: bytes, headers: Mapping[str, str]) -> str:
    """Hash of the body, or the literal ``X-Sdk-Content-Sha256`` value when one is set."""
    if not body:
        return EMPTY_HASH
    for name, value in headers.items():
        if value and name.lower() == _CONTENT_HASH_LOWER:
            return value
    return hashlib.sha256(body).hexdigest()


_CONTENT_HASH_LOWER = CONTENT_HASH_HEADER.lower()


def signed_header_names(headers: Iterable[str]) -> list[str]:
    """Lower-cased, sorted names of every header without an underscore."""
    return sorted({name.lower() for name in headers if "_" not in name})


def canonical_request(
    *,
    method: str,
    path: str,
    query: Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    signed: Sequence[str],
    body: bytes,
) -> str:
    """The canonical request of section 5.2: method, URI, query, headers, blank line, names, hash."""
    values = {name.lower(): str(value).strip() for name, value in headers.items()}
    return _canonical(method, path, query, values, signed, payload_hash(body, headers))


def _canonical(
    method: str,
    path: str,
    query: Iterable[tuple[str, str]],
    values: Mapping[str, str],
    signed: Sequence[str],
    hashed: str,
) -> str:
    header_block = "".join([f"{name}:{values.get(name, '')}\n" for name in signed])
    return (
        f"{method.upper()}\n{canonical_uri(path)}\n{canonical_query(query) if query else ''}\n"
        f"{header_block}\n{';'.join(signed)}\n{hashed}"
    )


def string_to_sign(canonical: str, sdk_date: str, info: str | None = None) -> str:
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    if info is None:
        return f"{ALGORITHM}\n{sdk_date}\n{digest}"
    return f"{DERIVED_ALGORITHM}\n{sdk_date}\n{info}\n{digest}"


def derived_key(ak: str, sk: str, info: str) -> str:
    """HKDF-SHA256 (one block) of the SK salted with the AK, as 64 hex characters."""
    prk = hmac.digest(ak.encode(), sk.encode(), "sha256")
    return _keyed(prk, info.encode() + b"\x01")


def signature(key: str, to_sign: str) -> str:
    return _keyed(key.encode(), to_sign.encode())


def _keyed(key: bytes, message: bytes) -> str:
    """HMAC-SHA256 of ``message`` under ``key``, as hex (RFC 2104, what ``hmac`` computes): the key's
    padded blocks are hashed once (``_pads``), and a request copies the two hashes, in C (``hmac.HMAC``'s
    copy, update and digest are Python methods)."""
    inner, outer = _pads(key)
    inner = inner.copy()
    inner.update(message)
    outer = outer.copy()
    outer.update(inner.digest())
    return outer.hexdigest()


@functools.lru_cache(maxsize=16)
def _pads(key: bytes) -> tuple[hashlib._Hash, hashlib._Hash]:
    """HMAC-SHA256's inner and outer hashes, each after its padded key block."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    return (
        hashlib.sha256(bytes(byte ^ 0x36 for byte in key)),
        hashlib.sha256(bytes(byte ^ 0x5C for byte in key)),
    )


_BLOCK = 64  # SHA-256's block, in bytes


def authorization(
    *,
    ak: str,
    sk: str,
    method: str,
    path: str,
    query: QueryParams,
    headers: Mapping[str, str],
    body: bytes,
    derived: tuple[str, str] | None = None,
) -> str:
    """The ``Authorization`` value for a request whose headers already hold X-Sdk-Date and Host.

    ``derived`` is ``(region, service)`` for ``V11-HMAC-SHA256``; ``None`` signs ``SDK-HMAC-SHA256``.
    """
    sdk_date = next(value for name, value in headers.items() if name.lower() == "x-sdk-date")
    # One pass over the headers serves the signed names, the header block and the payload hash.
    values = {name.lower(): str(value).strip() for name, value in headers.items()}
    signed = sorted([name for name in values if "_" not in name])
    hashed = payload_hash(body, headers) if body else EMPTY_HASH
    canonical = _canonical(method, path, query, values, signed, hashed)
    names = ";".join(signed)
    if derived is None:
        sig = signature(sk, string_to_sign(canonical, sdk_date))
        return f"{ALGORITHM} Access={ak}, SignedHeaders={names}, Signature={sig}"
    region, service = derived
    moment = datetime.strptime(sdk_date, DATE_FORMAT)
    info = f"{moment:%Y%m%d}/{region}/{service}"
    sig = signature(derived_key(ak, sk, info), string_to_sign(canonical, sdk_date, info))
    return f"{DERIVED_ALGORITHM} Credential={ak}/{info}, SignedHeaders={names}, Signature={sig}"


def sdk_authorization(
    *, ak: str, sk: str, method: str, path: str, raw_query: str, headers: Mapping[str, str], body: bytes
) -> str:
    """``authorization`` for ``SDK-HMAC-SHA256``, the same value, with the canonical request's head
    prepared (and hashed) once per route, header values and second (``_canonical_head``): a request then
    costs the body's hash, the canonical request's last blocks (the head's are hashed already), and the
    HMAC. ``raw_query`` is the query string as sent."""
    head, names, content_hash, sdk_date = _canonical_head(method, path, raw_query, tuple(headers.items()))
    if content_hash is not None and body:
        hashed = content_hash
    else:
        hashed = hashlib.sha256(body).hexdigest() if body else EMPTY_HASH
    canonical = head.copy()  # the canonical request's hash, its head hashed already
    canonical.update(hashed.encode())
    sig = _keyed(sk.encode(), f"{ALGORITHM}\n{sdk_date}\n{canonical.hexdigest()}".encode())
    return f"{ALGORITHM} Access={ak}, SignedHeaders={names}, Signature={sig}"


@functools.lru_cache(maxsize=64)
def _canonical_head(
    method: str, path: str, raw_query: str, headers: tuple[tuple[str, str], ...]
) -> tuple[hashlib._Hash, str, str | None, str]:
    """The SHA-256 of the canonical request up to the payload hash (to be copied: a request hashes
    only its payload hash after it), the signed header names, the literal ``X-Sdk-Content-Sha256``
    value (or ``None``) and the ``X-Sdk-Date``. The headers hold the date: an entry lasts a second."""
    values = {name.lower(): str(value).strip() for name, value in headers}
    signed = sorted([name for name in values if "_" not in name])
    query = parse_query(raw_query) if raw_query else ()
    return (
        hashlib.sha256(_canonical(method, path, query, values, signed, "").encode()),
        ";".join(signed),
        next((value for name, value in headers if value and name.lower() == _CONTENT_HASH_LOWER), None),
        values.get("x-sdk-date", ""),
    )


def parse_authorization(value: str) -> tuple[str, dict[str, str]] | None:
    """Split an ``Authorization`` value into its algorithm and ``Access``/``SignedHeaders``/... parts."""
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm not in (ALGORITHM, DERIVED_ALGORITHM) or not rest:
        return None
    parts: dict[str, str] = {}
    for item in rest.split(","):
        name, sep, val = item.strip().partition("=")
        if not sep:
            return None
        parts[name] = val
    return algorithm, parts
