"""jobserver tasks for the benchmark: `jobserver serve --tasks bench_peers.jobserver_tasks`."""

from __future__ import annotations

import os
import time

from jobserver import task

_stamps = None


@task
async def bench_noop() -> None:
    return None


@task
async def bench_stamp(seq: int) -> None:
    """Record when this job started: `seq time.time()` a line, in $BENCH_STAMP_FILE."""
    started = time.time()
    global _stamps
    if _stamps is None:
        _stamps = open(os.environ["BENCH_STAMP_FILE"], "a", buffering=1)  # noqa: SIM115
    _stamps.write(f"{seq} {started!r}\n")
