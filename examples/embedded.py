"""jobserver embedded in a plain asyncio program: `async with JobServer(...)`.

    python examples/embedded.py

No HTTP at all: the program enqueues jobs and waits for them through the `JobServer` object.
One job succeeds, one fails its first attempt and succeeds on the retry, and one fails for
good and lands in the dead-letter table. The database is a file in a temporary directory.
Prints what happened, then "ok".
"""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
from pathlib import Path

from jobserver import Backoff, JobContext, JobServer, JobState, PermanentError, task


@task
async def greet(name: str) -> str:
    return f"hello, {name}"


@task(max_retries=2, retry_on=ConnectionError, backoff=Backoff(base_s=0.05))
async def flaky_fetch(url: str, ctx: JobContext) -> dict[str, object]:
    if ctx.attempt == 1:
        raise ConnectionError(f"{url}: connection reset")  # retried after a short backoff
    return {"url": url, "attempt": ctx.attempt}


@task
def charge(order_id: int) -> None:  # a sync task: it runs in the thread pool
    raise PermanentError(f"order {order_id} has no payment method")  # no retry


async def run(db: Path) -> None:
    async with JobServer(db=db, concurrency=4) as server:
        hello = await server.enqueue("greet", ["world"], priority=5)
        fetch = await server.enqueue("flaky_fetch", ["http://127.0.0.1/feed"])
        bad = await server.enqueue("charge", [42])

        done = await server.wait_for(hello.id, timeout_s=10)
        print(f"job {done.id} {done.task}: {done.status}, result {done.result!r}")
        assert done.status == JobState.SUCCEEDED and done.result == "hello, world"

        done = await server.wait_for(fetch.id, timeout_s=10)
        print(f"job {done.id} {done.task}: {done.status} after {done.attempts} attempts")
        assert done.status == JobState.SUCCEEDED and done.attempts == 2

        done = await server.wait_for(bad.id, timeout_s=10)
        assert done.error is not None
        print(f"job {done.id} {done.task}: {done.status}: {done.error['message']}")
        assert done.status == JobState.FAILED and done.attempts == 1

        [dead] = await server.list_dead_letters(limit=10, before_id=None)
        print(f"dead letter {dead.id}: job {dead.job_id} ({dead.task})")
        assert dead.job_id == bad.id
    # leaving the block drained the workers and closed the database


def main() -> int:
    # The program owns logging: jobserver logs through the standard `logging` module (a job that
    # fails for good is logged with its traceback, as a warning; transitions at info).
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="jobserver-example-") as tmp:
        asyncio.run(run(Path(tmp) / "jobs.db"))
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
