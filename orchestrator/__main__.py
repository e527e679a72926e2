"""``python -m orchestrator`` and the ``evs-snapshot`` script: the CLI, stopped quietly by a signal while
it starts.

Importing the CLI (click, orjson, ...) takes a moment; a SIGINT or SIGTERM then would end the process
with a traceback (or, inside a C extension's import, worse). Until the command installs its own
receiver (``signals.guarded``), such a signal ends the process at once with 130/143 and one line:
nothing has been read or sent yet. A signal inherited as ignored (a background job's SIGINT) stays
ignored.
"""

from __future__ import annotations

import os
import signal
from types import FrameType


def _stop(signum: int, _frame: FrameType | None) -> None:
    name = signal.Signals(signum).name
    os.write(2, f"evs-snapshot: stopped by {name} while starting; nothing was sent\n".encode())
    os._exit(128 + signum)


def main() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _stop)
    from orchestrator.cli import main as cli  # noqa: PLC0415 - imported after the quiet receiver is set

    cli()


if __name__ == "__main__":
    main()
