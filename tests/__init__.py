"""The test suite, a package so that its modules import ``tests.helpers``.

In an xdist worker, the coverage pytest-cov starts before this package is imported is stopped here:
pytest-cov starts its controller's coverage in every process given ``-n``, and in a worker what it
measures is never saved (the worker's own coverage starts at session start; the controller's process
records what importing ``conftest`` runs). Untraced, a worker imports ``conftest`` with about 0.2 s
less CPU.
"""

import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    import coverage

    while (running := coverage.Coverage.current()) is not None:
        running.stop()
