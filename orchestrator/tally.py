"""Counting outcomes: the running tally of a run, and the digest of a whole report."""

from __future__ import annotations

import dataclasses
import heapq
import time
from collections import Counter
from pathlib import Path

import orjson

from orchestrator.models import SUCCESSFUL, Outcome, Record, Summary
from orchestrator.report import final_records

SLOWEST = 5
RETRY_LIST_MAX = 1000


class Tally:
    """Counts outcomes and error codes as records are written, without keeping the records."""

    def __init__(self) -> None:
        self.outcomes: Counter[str] = Counter()
        self.codes: Counter[str] = Counter()
        self.requests = 0
        self.started = time.monotonic()

    def add_previous(self, outcome: Outcome) -> None:
        """Count a row a previous run of this report finished (``--resume``)."""
        self.outcomes[outcome.value] += 1

    def add(self, record: Record) -> None:
        self.outcomes[record.outcome.value] += 1
        self.requests += record.attempts
        if record.error_code is not None and not record.succeeded:
            self.codes[record.error_code] += 1

    @property
    def done(self) -> int:
        return sum(self.outcomes.values())

    def summary(self) -> Summary:
        return Summary(
            rows=self.done,
            outcomes=dict(self.outcomes),
            error_codes=dict(self.codes.most_common()),
            requests=self.requests,
            elapsed_s=time.monotonic() - self.started,
        )


@dataclasses.dataclass(slots=True)
class Digest:
    """Counts per outcome, error codes with one example row each, the slowest rows, and rows to retry."""

    outcomes: Counter[str] = dataclasses.field(default_factory=Counter)
    codes: Counter[str] = dataclasses.field(default_factory=Counter)
    examples: dict[str, str] = dataclasses.field(default_factory=dict)
    slowest: list[tuple[int, int, str]] = dataclasses.field(default_factory=list)
    retry_rows: list[int] = dataclasses.field(default_factory=list)
    retry_count: int = 0
    requests: int = 0

    @classmethod
    def of(cls, path: Path) -> Digest:
        digest = cls()
        for record in final_records(path):
            digest.add(record)
        digest.slowest.sort(reverse=True)
        return digest

    def add(self, record: Record) -> None:
        self.outcomes[record.outcome.value] += 1
        self.requests += record.attempts
        if record.error_code is not None and record.outcome not in SUCCESSFUL:
            self.codes[record.error_code] += 1
            message = record.error_message or ""
            example = message if message.startswith(f"row {record.row} ") else f"row {record.row}: {message}"
            self.examples.setdefault(record.error_code, example)
        entry = (record.elapsed_ms, record.row, record.volume_id or "")
        if len(self.slowest) < SLOWEST:
            heapq.heappush(self.slowest, entry)
        else:
            heapq.heappushpop(self.slowest, entry)
        if record.outcome not in SUCCESSFUL and record.outcome is not Outcome.PLANNED:
            self.retry_count += 1
            if len(self.retry_rows) < RETRY_LIST_MAX:
                self.retry_rows.append(record.row)

    @property
    def rows(self) -> int:
        return sum(self.outcomes.values())

    @property
    def exit_code(self) -> int:
        ok = {outcome.value for outcome in SUCCESSFUL | {Outcome.PLANNED}}
        return 0 if self.rows and all(outcome in ok for outcome in self.outcomes) else 1

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "rows": self.rows,
                "outcomes": dict(sorted(self.outcomes.items())),
                "error_codes": [
                    {"code": code, "rows": count, "example": self.examples[code]}
                    for code, count in self.codes.most_common()
                ],
                "slowest": [
                    {"row": row, "volume_id": volume, "elapsed_ms": ms} for ms, row, volume in self.slowest
                ],
                "rows_to_retry": sorted(self.retry_rows),
                "rows_to_retry_count": self.retry_count,
                "requests": self.requests,
                "exit_code": self.exit_code,
            },
            option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE,
        )

    def render(self) -> str:
        parts = ", ".join(f"{count} {outcome}" for outcome, count in sorted(self.outcomes.items()))
        lines = [f"{self.rows} rows: {parts or 'none'}"]
        if self.codes:
            lines.append("errors:")
            lines += [
                f"  {code} x{count} (e.g. {self.examples[code]})"
                for code, count in self.codes.most_common(10)
            ]
        if self.slowest:
            slow = ", ".join(f"row {row} {ms} ms" for ms, row, _ in self.slowest)
            lines.append(f"slowest: {slow}")
        if self.retry_count:
            shown = ", ".join(str(row) for row in sorted(self.retry_rows)[:50])
            more = "" if self.retry_count <= 50 else f" ... ({self.retry_count} in all)"
            lines.append(f"rows to retry ({self.retry_count}): {shown}{more}")
            lines.append("  run the same create command with --resume to retry them")
        return "\n".join(lines)
