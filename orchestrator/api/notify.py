"""Notifications: a run says it started and how it ended (``--ping-url``, ``--webhook``), best effort.

The ping follows the Healthchecks convention: ``URL/start`` when the run starts, ``URL`` on exit 0,
``URL/fail`` on any other exit; its body is the summary as text, at most ``NOTIFY_BODY_MAX`` bytes.
Each ``--webhook`` gets one JSON POST at the end: the event, the command, the run id, the exit code,
the summary JSON and the report's path.

Best effort means: each request takes at most ``Notify.timeout`` seconds and is tried
``Notify.attempts`` times (``retry.retrying``) on no answer, a 5xx or a 429; all the attempts of one URL
take at most ``Notify.budget`` seconds; a failure is logged as a warning (with the URL masked by
``config.redact_url``) and changes nothing else: not the exit code, not the report. A redirect (3xx) is
not followed (it would take the body past the check made on the URL given): not delivered.

The requests go through a small session of their own: the run's session may be closed by then.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import anyio
import orjson
from yarl import URL

from orchestrator.api import tls
from orchestrator.api.session import USER_AGENT, proxy_for
from orchestrator.api.tls import aiohttp
from orchestrator.config import Notify, redact_url
from orchestrator.console import Console
from orchestrator.defaults import NOTIFY_BODY_MAX
from orchestrator.retry import RetryPolicy, TryAgain, retrying

TEXT = "text/plain; charset=utf-8"
JSON = "application/json"
TRUNCATED = "\n... (cut at 10 kB: the report holds everything)"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class Message:
    """One notification: where it goes, what it says, and what the log calls it."""

    what: str
    url: str
    body: bytes
    content_type: str


class Refused(Exception):
    """The receiver answered with a status that another attempt cannot change (a 4xx other than 429)."""


def ping_url(url: str, suffix: str) -> str:
    """``url`` with ``/suffix`` added to its path (``start``, ``fail``), its query string kept."""
    if not suffix:
        return url
    base, mark, query = url.partition("?")
    return f"{base.rstrip('/')}/{suffix}{mark}{query}"


def text_body(text: str, limit: int = NOTIFY_BODY_MAX) -> bytes:
    """``text`` as UTF-8, cut to ``limit`` bytes (on a character boundary, saying so)."""
    data = text.encode()
    if len(data) <= limit:
        return data
    kept = data[: limit - len(TRUNCATED.encode())].decode(errors="ignore")
    return (kept + TRUNCATED).encode()


class Notifier:
    """Sends a run's notifications (``start``, then ``end``) as ``notify`` says."""

    def __init__(self, notify: Notify, console: Console) -> None:
        self.notify = notify
        self.console = console
        self.policy = RetryPolicy(
            max_attempts=notify.attempts, initial_wait=notify.pause, max_wait=notify.pause * 4
        )

    def start_messages(self, command: str) -> list[Message]:
        if self.notify.ping_url is None:
            return []
        body = f"evs-snapshot {command}: started".encode()
        return [
            Message(what="ping", url=ping_url(self.notify.ping_url, "start"), body=body, content_type=TEXT)
        ]

    def end_messages(
        self, *, command: str, run_id: str, exit_code: int, text: str, summary: Mapping[str, Any], report: str
    ) -> list[Message]:
        messages = []
        if self.notify.ping_url is not None:
            url = ping_url(self.notify.ping_url, "" if exit_code == 0 else "fail")
            messages.append(Message(what="ping", url=url, body=text_body(text), content_type=TEXT))
        event = {
            "event": "succeeded" if exit_code == 0 else "failed",
            "command": command,
            "run_id": run_id or None,
            "exit_code": exit_code,
            "summary": summary,
            "report": report,
        }
        body = orjson.dumps(event, option=orjson.OPT_NON_STR_KEYS)
        messages += [
            Message(what="webhook", url=url, body=body, content_type=JSON) for url in self.notify.webhooks
        ]
        return messages

    async def send(self, messages: list[Message]) -> None:
        """Send ``messages`` side by side; returns when each was delivered or given up (never raises)."""
        async with (
            aiohttp.ClientSession(raise_for_status=False) as session,
            anyio.create_task_group() as group,
        ):
            for message in messages:
                group.start_soon(self._deliver, session, message)

    async def _deliver(self, session: aiohttp.ClientSession, message: Message) -> None:
        """Try ``message`` within the budget; log a warning when it was not delivered."""
        shown = redact_url(message.url)
        loop = retrying(self.policy, reraise=False)
        delivered, why = False, ""
        with anyio.move_on_after(self.notify.budget) as budget:
            try:
                async for attempt in loop:
                    with attempt:
                        await self._post(session, message)
                        delivered = True
            except Refused as exc:
                why = str(exc)
            except Exception as exc:  # best effort: a notification never ends a run
                why = f"{type(exc).__name__} (a bug: please report it)"
        if delivered:
            return
        attempts = f"{loop.number} attempt{'s' if loop.number != 1 else ''}"
        if budget.cancelled_caught:
            why = f"gave up after {self.notify.budget:g}s ({attempts})"
        elif not why:
            why = f"{loop.last} ({attempts})"
        self.console.warn(f"{message.what} {shown} not delivered: {why}", notify=message.what, url=shown)

    async def _post(self, session: aiohttp.ClientSession, message: Message) -> None:
        url = URL(message.url, encoded=True)
        try:
            async with session.post(
                url,
                data=message.body,
                headers={"Content-Type": message.content_type, "User-Agent": USER_AGENT},
                timeout=aiohttp.ClientTimeout(total=self.notify.timeout),
                allow_redirects=False,  # a 3xx elsewhere would skip the URL's https-or-loopback check
                proxy=proxy_for(url),
                ssl=tls.for_url(url),
            ) as response:
                await response.read()
                status = response.status
        except TimeoutError:
            raise TryAgain(f"no answer within {self.notify.timeout:g}s") from None
        except aiohttp.ClientConnectorError as exc:
            raise TryAgain(f"cannot connect: {exc.strerror or type(exc).__name__}") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise TryAgain(f"no answer ({type(exc).__name__})") from None
        if status == 429 or status >= 500:
            raise TryAgain(f"HTTP {status}")
        if status >= 400:
            raise Refused(f"HTTP {status}")
        if status >= 300:
            raise Refused(f"HTTP {status} (a redirect: not followed)")
