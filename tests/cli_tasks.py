"""Tasks for tests/e2e/test_cli_commands.py and tests/http/test_client.py: the server
subprocess imports this module with `--tasks tests.cli_tasks` (run from the repository root)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from jobserver import JobContext, PermanentError, task

PROGRESS_STEPS = (0.25, 0.5, 0.75)
GATE_WAIT_S = 60.0  # a test that never opens a gate still ends: the job returns "stuck"


@task(name="cli_progress")
async def cli_progress(gate_dir: str, ctx: JobContext) -> str:
    """Reports 25 %, 50 % and 75 %; after step N it holds until the test creates the file
    `gate_dir/step-N` (which the test does once the CLI has drawn step N), then returns "done".
    The gates make the run as long as the test needs, whatever the machine's speed."""
    loop = asyncio.get_running_loop()
    for number, fraction in enumerate(PROGRESS_STEPS, 1):
        ctx.progress(fraction, f"step {number}")
        gate = Path(gate_dir) / f"step-{number}"
        deadline = loop.time() + GATE_WAIT_S
        while not gate.exists():
            if loop.time() > deadline:
                return "stuck"
            await asyncio.sleep(0.01)
    return "done"


@task(name="cli_refuse")
async def cli_refuse(reason: str) -> None:
    """Fails for good at once (no retry): lands in the dead letters."""
    raise PermanentError(reason)


@task(name="cli_sum")
async def cli_sum(results: list[float]) -> float:
    """A chord callback: the sum of its members' results."""
    return sum(results)
