"""Tasks for the workflow tests, including the subprocess ones (--tasks tests.workflow_tasks)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from jobserver import JobContext, PermanentError, task

LOG_ENV = "JOBSERVER_TEST_WORKFLOW_LOG"


@task
async def step(*args: Any) -> list[str]:
    """A chain step: (previous result, name) or just (name); returns the names so far."""
    *previous, name = args
    done = list(previous[0]) if previous else []
    return [*done, name]


@task
async def square(n: int) -> int:
    return n * n


@task
async def total(results: list[int], ctx: JobContext) -> int:
    """A chord callback: the members' results, in order; logs each run when asked to."""
    if LOG_ENV in os.environ:
        fd = os.open(os.environ[LOG_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"total {ctx.job_id} {ctx.attempt}\n".encode())
        finally:
            os.close(fd)
    return sum(results)


@task
async def slow_square(n: int, seconds: float) -> int:
    await asyncio.sleep(seconds)
    return n * n


@task
async def refuse() -> None:
    raise PermanentError("no")


@task
async def parents(ctx: JobContext) -> dict[str, Any]:
    return {str(k): v for k, v in ctx.parent_results.items()}
