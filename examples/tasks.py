"""Example tasks: `jobserver serve --tasks examples.tasks`."""

from __future__ import annotations

import asyncio
import hashlib

from jobserver import JobContext, PermanentError, task


@task
async def add(a: float, b: float) -> float:
    return a + b


@task(timeout=60, max_retries=5)
async def resize_image(url: str, width: int, ctx: JobContext) -> dict[str, object]:
    """Pretends to fetch and resize an image, reporting progress on the way."""
    for step in range(1, 5):
        await asyncio.sleep(0.1)
        ctx.progress(step / 4, f"step {step} of 4")
    if width <= 0:
        raise PermanentError("width must be positive")  # no point retrying
    return {"url": url, "width": width}


@task
def checksum(text: str) -> str:
    """A sync task: it runs in a thread, so it never blocks the event loop."""
    return hashlib.sha256(text.encode()).hexdigest()
