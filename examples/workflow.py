"""Workflows with `jobserver.workflows`: a chain and a chord, like Celery's canvas.

    python examples/workflow.py

- `chain(a, b, c)`: b runs after a succeeds and gets a's result as its first argument; c
  likewise after b.
- `chord(group(a, b, c), callback)`: a, b and c run at once; the callback runs when all three
  have succeeded and gets the list of their results, in order, as its first argument.

A workflow is enqueued in one transaction, as jobs that depend on each other; over HTTP the same
spec is the body of `POST /workflows` (see the end of this file). If a step fails for good, the
steps after it end `failed` (or `cancelled`, with on_dependency_failure="cancel") without
running. The database is a file in a temporary directory. Prints what happened, then "ok".
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from jobserver import JobServer, task
from jobserver.workflows import chain, chord, group, job

PAGES = {
    "/a": "the quick brown fox",
    "/b": "jumps over",
    "/c": "the lazy dog",
}


@task
async def add(a: int, b: int) -> int:
    return a + b


@task
async def multiply(value: int, by: int) -> int:  # value: the previous step's result
    return value * by


@task
async def describe(value: int) -> str:
    return f"the answer is {value}"


@task
async def count_words(path: str) -> int:
    await asyncio.sleep(0.05)  # pretend to fetch the page
    return len(PAGES[path].split())


@task
async def total(counts: list[int]) -> dict[str, object]:  # counts: every member's result
    return {"pages": len(counts), "words": sum(counts)}


async def run(db: Path) -> None:
    async with JobServer(db=db, concurrency=8) as server:
        # (2 + 3) * 10 -> "the answer is 50"
        flow = chain(job("add", 2, 3), job("multiply", 10), job("describe"))
        workflow_id, jobs = await server.enqueue_workflow(flow)
        print(f"chain: workflow {workflow_id}, jobs {[j.id for j in jobs]}")
        last = await server.wait_for(jobs[-1].id, timeout_s=10)
        status, steps = await server.get_workflow(workflow_id)
        print(f"chain {status}: {[s.result for s in steps]}")
        assert status == "succeeded" and last.result == "the answer is 50"

        flow = chord(group(*(job("count_words", path) for path in PAGES)), job("total"))
        workflow_id, jobs = await server.enqueue_workflow(flow)
        print(f"chord: workflow {workflow_id}, jobs {[j.id for j in jobs]}")
        callback = await server.wait_for(jobs[-1].id, timeout_s=10)
        status, _ = await server.get_workflow(workflow_id)
        print(f"chord {status}: {callback.result}")
        assert status == "succeeded" and callback.result == {"pages": 3, "words": 9}


# The same chord over HTTP, with curl:
#
#   curl -s -X POST localhost:8000/workflows -H 'Content-Type: application/json' -d '{
#     "chord": {"group": [{"task": "count_words", "args": ["/a"]},
#                         {"task": "count_words", "args": ["/b"]}],
#               "callback": {"task": "total"}}}'
#   # {"id": 1, "jobs": [1, 2, 3], "poll_url": "/workflows/1"}


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="jobserver-example-") as tmp:
        asyncio.run(run(Path(tmp) / "jobs.db"))
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
