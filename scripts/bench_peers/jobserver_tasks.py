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


@task(isolation="process")
def bench_isolated_noop() -> None:
    """The no-op, in a child process (scripts/bench_isolation.py)."""
    return None


_spinning = {"on": True}  # cleared by scripts/bench_isolation.py when its measurement ends


def _spin(seconds: float) -> int:
    """Pure-Python CPU work for `seconds` (or until told to stop, in this process)."""
    end = time.monotonic() + seconds
    loops = 0
    while _spinning["on"] and time.monotonic() < end:
        for _ in range(10_000):
            loops += 1
    return loops


@task
def bench_spin(seconds: float) -> int:
    """A CPU-bound sync task in the server's process (a thread holding the GIL)."""
    return _spin(seconds)


@task(isolation="process")
def bench_spin_isolated(seconds: float) -> int:
    """The same CPU-bound task in a child process."""
    return _spin(seconds)


@task
async def bench_sleep(seconds: float, kind: str = "") -> None:
    """A job that holds its worker slot for `seconds` (scripts/bench_fairness.py): `kind`
    names who enqueued it."""
    import asyncio

    await asyncio.sleep(seconds)
