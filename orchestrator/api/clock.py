"""The gateway's clock against ours: the one place the skew is computed (``doctor``, and the message a
401 ``APIGW.0303`` "signature expired" gets in every command).

An AK/SK signature whose ``X-Sdk-Date`` is more than ``SIGNATURE_WINDOW`` seconds from the gateway's
clock is refused (evs-api.md 3.4 and 10). The gateway's ``Date`` header (whole seconds) tells its clock.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

SIGNATURE_WINDOW = 15 * 60  # seconds either side of the gateway's clock
_EXPIRED = re.compile(r"signature time:\s*(\d{8}T\d{6}Z)\s*,\s*server time:\s*(\d{8}T\d{6}Z)")


def gateway_offset(
    *, date: str | None = None, message: str | None = None, sent: datetime, received: datetime | None = None
) -> float | None:
    """Seconds the gateway's clock is ahead of ours (negative: behind), or ``None`` when unknown.

    From an ``APIGW.0303`` ``message`` ("signature time:...,server time:..."), when given and readable
    (the signature time is ours, so the network's delay does not count); else from a ``Date`` header,
    against the middle of ``sent`` .. ``received`` (the local UTC times around the request; the header
    has whole seconds, so the result is good to about a second).
    """
    found = _EXPIRED.search(message or "")
    if found is not None:
        ours, theirs = (
            datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC) for stamp in found.groups()
        )
        return (theirs - ours).total_seconds()
    if not date:
        return None
    try:
        theirs = parsedate_to_datetime(date)
    except (TypeError, ValueError, IndexError):
        return None
    if theirs.tzinfo is None:
        theirs = theirs.replace(tzinfo=UTC)
    middle = sent + ((received or sent) - sent) / 2
    return (theirs - middle).total_seconds()
