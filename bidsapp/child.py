"""Run a bidsapp step in a fresh Python process, with its wall time and peak memory measured.

Heavy steps (torch, ITK) run in their own process: workers of a process pool are forked from a
parent that may hold thread pools, and a fresh process gives each step its own peak RSS.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

THREAD_VARIABLES = ("OMP_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "MKL_NUM_THREADS",
                    "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True)
class ChildResult:
    returncode: int
    wall_time_s: float
    peak_rss_mb: float
    cpu_time_s: float


def run_child(args: list[str], *, log: Path, cwd: Path, threads: int = 1,
              timeout: float | None = None, module: bool = True) -> ChildResult:
    """Run ``python -m <args>`` (``python <args>`` when not ``module``); output goes to ``log``;
    usage comes from ``os.wait4``.

    The peak RSS is that of the largest process among the child and the tools it ran and
    waited for (the kernel's ``ru_maxrss``), not their sum.
    """
    env = dict(os.environ)
    env.update({var: str(threads) for var in THREAD_VARIABLES})
    env.setdefault("KERAS_BACKEND", "torch")
    env["NIPYPE_NO_ET"] = "1"
    start = time.perf_counter()
    with open(log, "wb") as handle:
        proc = subprocess.Popen([sys.executable, *(["-m"] if module else []), *args],
                                stdout=handle,
                                stderr=subprocess.STDOUT, cwd=cwd, env=env)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if timeout is not None and time.perf_counter() - start > timeout:
                proc.kill()
            time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return ChildResult(proc.returncode, round(time.perf_counter() - start, 3),
                       round(usage.ru_maxrss / 1024.0, 1),  # Linux: KiB
                       round(usage.ru_utime + usage.ru_stime, 3))
