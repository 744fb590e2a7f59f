"""Tasks for tests/e2e/test_process.py: the server subprocess imports this module with
`--tasks tests.process_tasks` (run from the repository root)."""

from __future__ import annotations

import asyncio
import os

from jobserver import JobContext, task

# The executions log: one "job_id attempt" line per run that reached its end.
EXEC_LOG_ENV = "JOBSERVER_TEST_EXEC_LOG"


@task(name="record_execution")
async def record_execution(delay_s: float, ctx: JobContext) -> int:
    """Sleeps `delay_s`, then appends "job_id attempt" to the executions log."""
    await asyncio.sleep(delay_s)
    line = f"{ctx.job_id} {ctx.attempt}\n".encode()
    # One write(2) on an O_APPEND descriptor: lines from concurrent runs never interleave,
    # and the bytes are in the kernel (so they survive SIGKILL) once it returns.
    fd = os.open(os.environ[EXEC_LOG_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return ctx.job_id


@task(name="crash_process")
async def crash_process() -> None:
    """Kills the whole server process, as a segfaulting extension or an OOM kill would."""
    os._exit(3)
