"""TLS for the client: a verifying context, built only when a request goes to an https URL.

aiohttp builds two contexts when it is imported, each loading the system's CA certificates (about
30 ms of CPU apiece); a run against a plain-http loopback endpoint (the emulator) never uses them.
So aiohttp is imported here, the one place, with the loading of default CA paths left out, and
nothing relies on those two contexts: every https request is given ``context(ca_bundle)`` (built
once a process, on first use: the system CAs plus ``--ca-bundle``). Were one used after all (a
redirect to https), it would hold no CA and refuse the certificate: a failure, never an unverified
connection.
"""

from __future__ import annotations

import contextlib
import functools
import ssl
from collections.abc import Iterator
from pathlib import Path

from yarl import URL

from orchestrator.errors import UsageError


@contextlib.contextmanager
def _no_default_verify_paths() -> Iterator[None]:
    loading = ssl.SSLContext.set_default_verify_paths
    ssl.SSLContext.set_default_verify_paths = lambda self: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        ssl.SSLContext.set_default_verify_paths = loading  # type: ignore[method-assign]


with _no_default_verify_paths():
    import aiohttp as aiohttp  # noqa: PLC0414 - re-exported: every client module imports aiohttp from here


@functools.lru_cache(maxsize=4)
def context(ca_bundle: Path | None) -> ssl.SSLContext:
    """Verified TLS with the system CAs, plus ``--ca-bundle`` when given (built once a process)."""
    built = ssl.create_default_context()
    if ca_bundle is not None:
        try:
            built.load_verify_locations(cafile=str(ca_bundle))
        except (ssl.SSLError, OSError) as exc:
            raise UsageError(
                f"--ca-bundle {ca_bundle}: not a readable PEM file of CA certificates ({exc})"
            ) from None
    return built


def for_url(url: URL, ca_bundle: Path | None = None) -> ssl.SSLContext | bool:
    """What a request to ``url`` is given as ``ssl``: ``context(ca_bundle)`` for https; ``True``
    (nothing to build) for plain http."""
    return context(ca_bundle) if url.scheme == "https" else True
