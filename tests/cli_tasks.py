"""Tasks for tests/test_cli_commands.py and tests/test_client.py: the server subprocess imports
this module with `--tasks tests.cli_tasks` (run from the repository root)."""

from __future__ import annotations

import asyncio

from jobserver import JobContext, PermanentError, task

# The worker saves progress at most twice a second; steps further apart than that all show.
PROGRESS_STEPS = (0.25, 0.5, 0.75)
PROGRESS_STEP_S = 0.8


@task(name="cli_progress")
async def cli_progress(ctx: JobContext) -> str:
    """Reports 25 %, 50 % and 75 %, a step every 0.8 s, then returns "done"."""
    for fraction in PROGRESS_STEPS:
        ctx.progress(fraction, f"step {PROGRESS_STEPS.index(fraction) + 1}")
        await asyncio.sleep(PROGRESS_STEP_S)
    return "done"


@task(name="cli_refuse")
async def cli_refuse(reason: str) -> None:
    """Fails for good at once (no retry): lands in the dead letters."""
    raise PermanentError(reason)


@task(name="cli_sum")
async def cli_sum(results: list[float]) -> float:
    """A chord callback: the sum of its members' results."""
    return sum(results)
