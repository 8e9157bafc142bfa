"""Several processes doing the same thing at the same instant, as the workers of one server do
when it starts."""

from __future__ import annotations

import subprocess
import sys
import time

from common.paths import PROJECT_ROOT

#: Runs before the code under test: wait for the instant in argv[1], shared by every process.
_AT_ONCE = "import sys, time\ntime.sleep(max(0.0, float(sys.argv[1]) - time.time()))\n"


def failures_at_once(code: str, *args: str, processes: int = 4) -> list[str]:
    """Run `code` (which reads its own arguments from sys.argv[2:]) in `processes` Python
    processes that start it at the same moment; the stderr of each one that failed."""
    start = str(time.time() + 3)  # every process imported and waiting, then all at once
    running = [
        subprocess.Popen(
            [sys.executable, "-c", _AT_ONCE + code, start, *args],
            cwd=PROJECT_ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    return [p.communicate(timeout=120)[1] for p in running if p.wait(timeout=120) != 0]
