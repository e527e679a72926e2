"""The exception tree of evs-snapshot; each class knows the exit code it ends the process with.

::

    EvsSnapshotError                 root; never raised itself
    +-- UsageError (2)               bad options or configuration; nothing was sent
    |   +-- ManifestError (2)        the manifest cannot be read as a whole; names file:line
    |   +-- CredentialsError (2)     no complete credential source, or one that cannot be read
    |   +-- ReportExistsError (2)    the report already holds records and --resume was not given
    +-- RunAborted (3)               the service refused our credentials or answered a fatal condition
    |   +-- CredentialsRefused (3)   IAM or the gateway refused the credentials themselves
    +-- ProjectLookupFailed (1)      IAM knows no project (or several) for a region; fails its rows
    +-- LockHeld (75)                another run holds the lock of this report
    +-- Interrupted (130 / 143)      SIGINT or SIGTERM stopped the run after a graceful drain
    +-- TransportError (1)           a request got no HTTP answer (connection refused, reset, timeout);
        +-- RequestTimeout (1)       the request ran past its --timeout

TransportError, ProjectLookupFailed and CredentialsRefused are caught by the runner and become rows'
``failed`` records (CredentialsRefused also stops the run from sending to that endpoint and makes it
exit 3). Every other class reaches the single ``except`` of the CLI.
"""

from __future__ import annotations


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


class RunAborted(EvsSnapshotError):
    """The service refused our credentials or answered a condition that makes every row fail."""

    exit_code = 3


class CredentialsRefused(RunAborted):
    """IAM or the API gateway refused the credentials themselves (not one row's request)."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"credentials refused: {code} {message}")


class ProjectLookupFailed(EvsSnapshotError):
    """A region has no project, or several, for these credentials; the runner fails its rows."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class LockHeld(EvsSnapshotError):
    """Another evs-snapshot process holds the lock file of this report."""

    exit_code = 75


class Interrupted(EvsSnapshotError):
    """A signal stopped the run after in-flight rows were drained and recorded."""

    def __init__(self, signal_name: str, exit_code: int) -> None:
        self.exit_code = exit_code
        super().__init__(f"interrupted by {signal_name}; run again with --resume to finish the job")


class TransportError(EvsSnapshotError):
    """A request got no HTTP answer.

    ``may_have_arrived`` is False only when no connection was made (refused, DNS, TLS handshake), so
    the service surely did not act; otherwise whether it acted is unknown.
    """

    def __init__(
        self, message: str, *, code: str = "CONNECTION_ERROR", may_have_arrived: bool = True
    ) -> None:
        self.code = code
        self.may_have_arrived = may_have_arrived
        super().__init__(message)


class RequestTimeout(TransportError):
    """A request ran past its timeout; whether the service acted on it is unknown."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="REQUEST_TIMEOUT")
