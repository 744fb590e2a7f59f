"""End-to-end no-op throughput: enqueue N jobs, then time from worker start to the last one done.

    python scripts/bench_e2e.py --jobs 100000 --concurrency 64 --runs 3

Prints one line per run and the median. synchronous=FULL unless --durability normal.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

from jobserver import JobServer, JobState
from jobserver.models import NewJob
from jobserver.tasks import Registry, task

registry = Registry()


@task(registry=registry)
async def noop() -> None:
    return None


async def one_run(jobs: int, concurrency: int, durability: str, db: Path) -> float:
    server = JobServer(db=db, tasks=list(registry), concurrency=concurrency, durability=durability)
    await server.store.open()
    for start in range(0, jobs, 5_000):
        batch = [NewJob(task="noop") for _ in range(min(5_000, jobs - start))]
        await server.store.enqueue(batch, time.time())
    await server.store.close()

    finished = asyncio.Event()
    done = 0

    def on_transition(job: Any, state: JobState, detail: dict[str, Any]) -> None:
        nonlocal done
        if state == JobState.SUCCEEDED:
            done += 1
            if done == jobs:
                finished.set()

    server.worker.on_transition = on_transition
    began = time.perf_counter()
    await server.start()
    await finished.wait()
    elapsed = time.perf_counter() - began
    await server.stop()
    return jobs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--durability", choices=["full", "normal"], default="full")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    rates = []
    for run in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            rate = uvloop.run(
                one_run(args.jobs, args.concurrency, args.durability, Path(tmp) / "bench.db")
            )
        rates.append(rate)
        print(f"run {run + 1}: {rate:,.0f} jobs/s")
    print(f"median: {statistics.median(rates):,.0f} jobs/s ({args.jobs:,} no-op jobs)")


if __name__ == "__main__":
    main()
