"""``python -m orchestrator`` and the ``evs-snapshot`` script: the CLI, stopped quietly by a signal while
it starts.

Importing the CLI (click, orjson, ...) takes a moment; a SIGINT or SIGTERM then would end the process
with a traceback (or, inside a C extension's import, worse). Until the command installs its own
receiver (``signals.guarded``), such a signal ends the process at once with 130/143 and one line:
nothing has been sent yet; once the options are read, ``--summary-json`` and ``--metrics-file`` say
130/143 too (``frame.record_early_stops``), so they never keep the previous run's code. A signal
inherited as ignored (a background job's SIGINT) stays ignored.

The cyclic garbage collector costs a process about a tenth of its start-up (``benchmarks startup``,
counted with callgrind: 65 M of a 3-row ``create``'s 1,066 M instructions, 30 M of a dry run's 420 M).
Importing makes hundreds of classes and functions that live as long as the process, and each full
collection walks them all again; the collection at exit walks everything once more. So the CLI is
imported with the collector off, what it made is frozen (never walked again) and the collector turned
back on for the command; at exit, whatever lives is frozen too, so the interpreter's last collection
walks nothing, and a garbage cycle left then is never finalized. Nothing is lost by that: stdout and
stderr are flushed before that collection, the report and the locks are written through raw file
descriptors (``os.write``), and every other file is closed by a ``with``. A CLI run
in-process (the tests' ``invoke``) leaves the collector as it is.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
from types import FrameType


def _stop(signum: int, _frame: FrameType | None) -> None:
    name = signal.Signals(signum).name
    os.write(2, f"evs-snapshot: stopped by {name} while starting; nothing was sent\n".encode())
    # Once the options are read, the command's --summary-json and --metrics-file say 128+N (not the
    # last run's code); the module that knows them is loaded by then (``signals.stopped_early``).
    signals = sys.modules.get("orchestrator.signals")
    stopped_early = getattr(signals, "stopped_early", None)
    try:
        if stopped_early is not None:
            stopped_early(128 + signum)
    finally:  # best effort: the process ends with 128+N all the same
        os._exit(128 + signum)


def main() -> None:
    gc.disable()
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _stop)
    from orchestrator.cli import main as cli  # noqa: PLC0415 - imported after the quiet receiver is set

    gc.freeze()
    gc.enable()
    try:
        cli()
    finally:
        gc.freeze()


if __name__ == "__main__":
    main()
