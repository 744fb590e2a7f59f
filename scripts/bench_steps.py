"""Durable steps' cost (issue 22, item 6): steps a second, 3-step jobs a second, and a 3-step
job's enqueue-to-done time at low load, beside no-op jobs in the same run.

    python scripts/bench_steps.py                # 3 rounds, medians
    python scripts/bench_steps.py --jobs 2000 --rounds 1

One in-process server (SQLite, synchronous=FULL, --concurrency workers) on a fresh database
for each figure. Throughput: --jobs jobs enqueued first, timed from worker start to the last
success; `noop` jobs do nothing, `steps3` jobs run three no-op ctx.step calls (each kept in a
group commit under the job's lease); `steps20` jobs (a fifth as many) run twenty, the figure
for steps a second, where a job's own claim and completion weigh less. Latency: --latency-jobs
3-step jobs one after another, each enqueued and awaited before the next, timed from the
enqueue call to its success being published (committed); as many no-op jobs the same way:
the floor a job's steps add to.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from typing import Any

import uvloop

from jobserver import JobContext, JobServer, JobState, task
from jobserver.models import NewJob, Transition


def nothing(i: int) -> int:
    return i


@task
async def bench_noop_job() -> None:
    return None


@task
async def bench_three_steps(ctx: JobContext) -> int:
    total = 0
    for i in range(3):
        total += await ctx.step(f"s{i}", _async_nothing, i)
    return total


@task
async def bench_twenty_steps(ctx: JobContext) -> int:
    total = 0
    for i in range(20):
        total += await ctx.step(f"s{i}", _async_nothing, i)
    return total


async def _async_nothing(i: int) -> int:
    return i


async def throughput(db: str, name: str, jobs: int, concurrency: int) -> float:
    tasks = [bench_noop_job, bench_three_steps, bench_twenty_steps]
    server = JobServer(db=db, tasks=tasks, concurrency=concurrency)
    await server.store.open()
    for start in range(0, jobs, 5_000):
        batch = [NewJob(task=name) for _ in range(min(5_000, jobs - start))]
        await server.store.enqueue(batch, time.time())
    await server.store.close()
    finished = asyncio.Event()
    done = 0
    served = server.publisher.publish

    def publish(transitions: list[Transition], log_ids: list[int] | None) -> None:
        nonlocal done
        served(transitions, log_ids)
        done += sum(1 for t in transitions if t.after == JobState.SUCCEEDED)
        if done >= jobs:
            finished.set()

    server.publisher.publish = publish  # type: ignore[method-assign]
    began = time.perf_counter()
    await server.start()
    await finished.wait()
    elapsed = time.perf_counter() - began
    await server.stop()
    return jobs / elapsed


async def latency(db: str, name: str, jobs: int) -> list[float]:
    """Each job's time from the enqueue call to its success being published (its completion
    committed); a wait_for afterwards checks it (its reads are not in the time)."""
    times = []
    server = JobServer(db=db, tasks=[bench_noop_job, bench_three_steps])
    ended: dict[int, float] = {}
    served = server.publisher.publish

    def publish(transitions: list[Transition], log_ids: list[int] | None) -> None:
        for t in transitions:
            if t.after == JobState.SUCCEEDED:
                ended[t.job_id] = time.perf_counter()
        served(transitions, log_ids)

    server.publisher.publish = publish  # type: ignore[method-assign]  # before it subscribes
    async with server:
        for _ in range(jobs):
            began = time.perf_counter()
            job = await server.enqueue(name)
            done = await server.wait_for(job.id, timeout_s=10)
            assert done.status == JobState.SUCCEEDED
            times.append((ended[job.id] - began) * 1000)
    return sorted(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--latency-jobs", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    keys = ("noop", "steps3", "steps", "p50", "p99", "noop_p50")
    results: dict[str, list[Any]] = {k: [] for k in keys}
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            noop = uvloop.run(
                throughput(f"{tmp}/a.db", "bench_noop_job", args.jobs, args.concurrency)
            )
            steps3 = uvloop.run(
                throughput(f"{tmp}/b.db", "bench_three_steps", args.jobs, args.concurrency)
            )
            steps = 20 * uvloop.run(
                throughput(f"{tmp}/d.db", "bench_twenty_steps", args.jobs // 5, args.concurrency)
            )
            lat = uvloop.run(latency(f"{tmp}/c.db", "bench_three_steps", args.latency_jobs))
            floor = uvloop.run(latency(f"{tmp}/e.db", "bench_noop_job", args.latency_jobs))
        p50, p99 = lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        noop_p50 = floor[len(floor) // 2]
        for key, value in zip(keys, (noop, steps3, steps, p50, p99, noop_p50), strict=True):
            results[key].append(value)
        print(
            f"round {r + 1}: no-op {noop:,.0f} jobs/s; 3-step {steps3:,.0f} jobs/s"
            f" ({steps3 / noop:.2f} of no-op); {steps:,.0f} steps/s (20-step jobs);"
            f" 3-step job enqueue to done p50 {p50:.2f} ms, p99 {p99:.2f} ms"
            f" (no-op job p50 {noop_p50:.2f} ms)"
        )
    m = {k: statistics.median(v) for k, v in results.items()}
    print(
        f"median: no-op {m['noop']:,.0f} jobs/s; 3-step {m['steps3']:,.0f} jobs/s;"
        f" {m['steps']:,.0f} steps/s; latency p50 {m['p50']:.2f} ms, p99 {m['p99']:.2f} ms"
        f" (no-op job p50 {m['noop_p50']:.2f} ms)"
    )


if __name__ == "__main__":
    main()
