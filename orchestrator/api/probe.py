"""One call's final answer, and how calls and answers read in a report of checks (``doctor``).

``exchange`` sends through ``Route.send`` like every other request (limiter, retries, identity), and
returns the answer even when it is a refusal: ``doctor`` reports each refusal instead of stopping.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.api import evs
from orchestrator.errors import ListingFailed, RouteClosed, TransportError
from orchestrator.retry import RetryPolicy, TryAgain, Verdict, retrying

if TYPE_CHECKING:
    from orchestrator.api.routes import Route
    from orchestrator.models import Answer


async def exchange(route: Route, call: evs.Call, policy: RetryPolicy) -> Answer:
    """One call's final answer (a success, a refusal or another final one); throttling, 5xx and
    transport errors are retried under ``policy``. Raises ``ListingFailed`` when retries are spent."""
    why = ""
    last: Answer | None = None
    async for attempt in retrying(policy, reraise=False):
        with attempt:
            try:
                reply = await route.send(call)
            except TransportError as exc:
                why = str(exc)
                raise TryAgain(why) from None
            except RouteClosed as exc:  # a refusal that carries its answer is this call's answer
                if exc.answer is None:
                    raise
                return exc.answer
            last = reply.answer
            if reply.verdict in (Verdict.RETRY, Verdict.UNCERTAIN):
                why = f"{last.status} {last.error()[0]}"
                raise TryAgain(why)
            return last
    if last is not None:
        return last
    raise ListingFailed(f"{shown(call)} got no answer ({why})")


def shown(call: evs.Call) -> str:
    """``GET /v2/{project_id}/cloudsnapshots/detail``: a call as the docs name it."""
    path = call.path
    parts = path.split("/")
    if len(parts) > 2:
        project = parts[2]
        path = path.replace(project, "{project_id}")
    return f"{call.method} {path}"


def without_every_ep(call: evs.Call) -> evs.Call:
    """The same list without ``enterprise_project_id=all_granted_eps`` (what a list shows by default)."""
    return call._replace(query=tuple(q for q in call.query if q != evs.EVERY_ENTERPRISE_PROJECT))


def said(answer: Answer) -> str:
    code, message = answer.error()
    return f"{answer.status} {code}: {message or 'no message'}"


def count_of(answer: Answer) -> int | None:
    body = answer.body
    if not answer.ok or not isinstance(body, dict):
        return None
    for key in ("count", "total_count"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None
