"""The exception tree of evs-snapshot; each class knows the exit code it ends the process with.

::

    EvsSnapshotError                 root; never raised itself
    +-- UsageError (2)               bad options, configuration or input files; nothing was sent
    |   +-- ManifestError (2)        the manifest cannot be read as a whole; names file:line
    |   +-- CredentialsError (2)     no complete credential source, or one that cannot be read
    |   +-- ReportExistsError (2)    the report already holds records and --resume was not given
    |   +-- ResumeMismatch (2)       --resume with another manifest or other name-shaping options
    +-- RunAborted (3)               the run cannot go on where it was going
    |   +-- RouteClosed (3)          an endpoint/project takes no more requests: credentials refused,
    |   |   |                        wrong project, or endpoint unreachable (``code`` says which)
    |   |   +-- CredentialsRefused   IAM or the gateway refused the credentials themselves
    |   +-- ListingFailed (3)        a listing that a delete or a check depends on failed or was refused
    |   |   +-- ApiMissing (3)       the region lacks the API of an optional call (the gateway's 404)
    |   |   +-- ActionDenied (3)     the service refused the call itself with 403: an IAM action missing
    |   +-- Unwritable (3)           a file the run writes cannot be written (disk full, file too large)
    |       +-- ReportUnwritable     the report (or standard output: also a closed pipe)
    +-- ProjectLookupFailed (1)      IAM knows no project (or several) for a region; fails its rows
    +-- LockHeld (75)                another run holds the lock of this manifest, run or report
    +-- Interrupted (130 / 143)      SIGINT or SIGTERM stopped the run after a graceful drain
    +-- TransportError (1)           a request got no HTTP answer (connection refused, reset, timeout);
        +-- RequestTimeout (1)       the request ran past its --timeout

RouteClosed, ProjectLookupFailed and TransportError are caught by the workers and become rows'
``failed`` records; a closed route also makes the run exit 3. Every other class reaches the single
``except`` of ``cli.Main.main`` (every command's error boundary), which prints one line and exits
with the class's code. Anything else is a bug: exit 70. A state that is remembered (a closed route, as
a ``Closure``; a failed lookup) is kept as data and raised as a fresh exception each time, so tracebacks
never pile up on one instance.
"""

from __future__ import annotations

import dataclasses
import signal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.models import Answer

INTERNAL_ERROR = 70  # the exit code of anything but our errors: a bug
# A run's report holds its header from the start, and a new run refuses a report that is not empty
# (``report.refuse_existing``): so --resume as soon as the report file is not empty, whatever it holds.
STOPPED_ADVICE = (
    "any record written is whole: run the same command again, with --resume if its report file is not "
    "empty (a run writes its header first)"
)


class EvsSnapshotError(Exception):
    """Root of every error evs-snapshot raises on purpose."""

    exit_code = 1


class UsageError(EvsSnapshotError):
    """Options, environment or input files are wrong; raised before any request is sent."""

    exit_code = 2


class ManifestError(UsageError):
    """The manifest cannot be read as a whole (missing, not UTF-8, bad syntax, no volume_id column)."""

    def __init__(self, path: str, line: int | None, problem: str, hint: str = "") -> None:
        self.path = path
        self.line = line
        self.problem = problem
        self.hint = hint
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {problem}" + (f" ({hint})" if hint else ""))


class CredentialsError(UsageError):
    """No credential source is complete, or a credentials file cannot be read."""


class ReportExistsError(UsageError):
    """The report file already holds records and --resume was not given."""


class ResumeMismatch(UsageError):
    """``--resume`` was given a manifest (or name-shaping options) other than the report's."""


class RunAborted(EvsSnapshotError):
    """The run cannot go on where it was going; the report holds every finished row."""

    exit_code = 3


class RouteClosed(RunAborted):
    """An endpoint and project take no more requests (``code``: the service's, or ENDPOINT_UNREACHABLE).

    ``answer`` is the refusal itself when this request was the one refused (a record keeps its
    status), ``None`` when the route was closed before it and nothing was sent.
    """

    def __init__(self, code: str, message: str, *, answer: Answer | None = None) -> None:
        self.code = code
        self.message = message
        self.answer = answer
        super().__init__(f"{code}: {message}")


class CredentialsRefused(RouteClosed):
    """IAM or the API gateway refused the credentials themselves (not one row's request)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.args = (f"credentials refused: {code} {message}",)


@dataclasses.dataclass(frozen=True, slots=True, eq=False, repr=False)
class Closure:
    """Why a route or an endpoint takes no more requests (kept as data; raised fresh each time)."""

    code: str
    message: str

    def error(self, answer: Answer | None = None) -> RouteClosed:
        return RouteClosed(self.code, self.message, answer=answer)


class ListingFailed(RunAborted):
    """A listing failed or was refused; a command that deletes or checks from it must not go on."""


class ActionDenied(ListingFailed):
    """The service refused the call itself with 403 (a permission the user lacks: no retry grants it);
    ``method`` and ``path`` are the refused call's, so that a command can name the IAM action to grant."""

    def __init__(self, message: str, *, method: str, path: str) -> None:
        super().__init__(message)
        self.method = method
        self.path = path


class ApiMissing(ListingFailed):
    """An optional call (``evs.Call.optional``) met the gateway's 404: the region lacks that API. The
    caller decides what that means (prune and audit: no snapshot groups here)."""


class Unwritable(RunAborted):
    """A file the run writes cannot be written (disk full, file-size limit): nothing more is sent. Raised
    as itself for a lock file's holder line, which is written before anything is sent."""


class ReportUnwritable(Unwritable):
    """The report cannot be written: nothing more is sent, since no outcome could be recorded."""


class ProjectLookupFailed(EvsSnapshotError):
    """A region has no project, or several, for these credentials; the runner fails its rows."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class LockHeld(EvsSnapshotError):
    """Another evs-snapshot process holds the lock of this manifest, create run or report (or --lock-file)."""

    exit_code = 75


class Interrupted(EvsSnapshotError):
    """A signal stopped the run after in-flight rows were drained and recorded."""

    def __init__(self, signum: int, advice: str = "run again with --resume to finish the job") -> None:

        self.exit_code = 128 + signum
        self.signal_name = signal.Signals(signum).name
        super().__init__(f"stopped by {self.signal_name}; {advice}")


class TransportError(EvsSnapshotError):
    """A request got no HTTP answer.

    ``may_have_arrived`` is False only when no connection was made (refused, DNS, TLS handshake), so
    the service surely did not act; otherwise whether it acted is unknown.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str = "CONNECTION_ERROR",
        may_have_arrived: bool = True,
        from_iam: bool = False,
    ) -> None:
        self.code = code
        self.may_have_arrived = may_have_arrived
        self.from_iam = from_iam  # IAM (getting credentials) failed, not the endpoint the request was for
        super().__init__(message)


class RequestTimeout(TransportError):
    """A request ran past its timeout; whether the service acted on it is unknown."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="REQUEST_TIMEOUT")


def first_error(exc: BaseException) -> BaseException:
    """Our error inside (possibly nested) task-group exception groups, else the first leaf."""
    if isinstance(exc, BaseExceptionGroup):
        leaves = [first_error(inner) for inner in exc.exceptions]
        ours = [leaf for leaf in leaves if isinstance(leaf, EvsSnapshotError)]
        return ours[0] if ours else leaves[0]
    return exc
