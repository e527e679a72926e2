"""What the tool tells the operator on stderr: human lines, or JSON lines (--log-format json)."""

from __future__ import annotations

import dataclasses
from typing import Any, TextIO

import orjson

from orchestrator.models import utc_iso, utc_now


@dataclasses.dataclass(frozen=True, slots=True, eq=False, repr=False)
class Console:
    """Writes events to ``stream``: ``evs-snapshot: LEVEL: message`` or a JSON line with the fields."""

    stream: TextIO
    json: bool = False

    def event(self, event: str, message: str, *, level: str = "info", **fields: Any) -> None:
        if self.json:
            line = {"time": utc_iso(utc_now()), "level": level, "event": event, "message": message, **fields}
            self.stream.write(orjson.dumps(line, option=orjson.OPT_NON_STR_KEYS).decode() + "\n")
        elif level == "info":
            self.stream.write(message + "\n")
        else:
            self.stream.write(f"evs-snapshot: {level}: {message}\n")
        self.stream.flush()

    def warn(self, message: str, **fields: Any) -> None:
        self.event("warning", message, level="warning", **fields)

    def error(self, message: str, **fields: Any) -> None:
        self.event("error", message, level="error", **fields)

    def wait_round(self, requests: int, pending: int) -> None:
        """One poll round of a wait: the requests it used and the snapshots still pending."""
        noun = "request" if requests == 1 else "requests"
        self.event(
            "wait_round",
            f"poll round: {requests} {noun}, {pending} pending",
            requests=requests,
            pending=pending,
        )
