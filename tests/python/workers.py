"""Worker processes started together, for the tests and benchmarks that run several trainers
on one table set: each prints "ready" once set up, then waits for a line on stdin, so that
every worker starts stepping at the same moment."""

import os
import subprocess
import sys
import time
from typing import Dict, List, Optional, Tuple


def spawn(args: List[str], cwd: Optional[str] = None,
          env: Optional[Dict[str, str]] = None) -> subprocess.Popen:
    """`python args…` (this interpreter, Keras 3: TF_USE_LEGACY_KERAS unset) with text pipes."""
    full = dict(os.environ, **(env or {}))
    full.pop("TF_USE_LEGACY_KERAS", None)
    return subprocess.Popen([sys.executable, *args], cwd=cwd, env=full, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def release_together(procs: List[subprocess.Popen],
                     timeout: float = 600) -> Tuple[List[str], float]:
    """Waits for every worker's "ready", starts them all, and waits for them to end; returns
    each one's last stdout line and the wall time from the start to the last end. A worker
    that fails is reported with its stderr; every worker is killed if any fails."""
    try:
        for p in procs:
            line = p.stdout.readline()
            if line.strip() != "ready":
                p.kill()
                raise AssertionError(f"worker not ready: {line!r} {p.communicate()[1][-3000:]}")
        t0 = time.perf_counter()
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        last = []
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            assert p.returncode == 0, err[-3000:]
            last.append(out.strip().splitlines()[-1])
        return last, time.perf_counter() - t0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
