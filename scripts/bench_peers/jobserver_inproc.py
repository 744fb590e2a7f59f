"""jobserver measured in its own process, printing one JSON line for scripts/bench.py.

    python -m bench_peers.jobserver_inproc e2e --db X.db --jobs 100000
    python -m bench_peers.jobserver_inproc enqueue-many --db X.db --jobs 100000 --batch 1000
    python -m bench_peers.jobserver_inproc prepare --db X.db --jobs 100000   (then e2e with
        --skip-enqueue: what the profiler watches)

e2e: enqueue N no-op jobs through `server.store.enqueue` (batches of 5,000), close, then time
from `server.start()` to the last completion, seen through `server.publisher.publish`
(every committed transition goes through it).
The database may already hold jobs (the growth figure).

enqueue-many: `server.enqueue_many` with batches of --batch jobs from --clients concurrent
callers, the jobs delayed by a day so the workers stay idle: the batch-enqueue figure without
HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import time
from typing import Any

import orjson
import uvloop

from jobserver import JobServer, JobState
from jobserver.models import NewJob, Transition
from jobserver.runtime import tune_gc

TASKS = ["bench_peers.jobserver_tasks"]


def _rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


async def prepare(server: JobServer, jobs: int, keys: int = 0) -> float:
    """Enqueue the jobs of an e2e run (`keys` > 0: job i has fairness key i % keys); returns
    the seconds it took."""
    began = time.perf_counter()
    await server.store.open()
    for start in range(0, jobs, 5_000):
        batch = [
            NewJob(task="bench_noop", fairness_key=f"k{i % keys}" if keys else None)
            for i in range(start, min(start + 5_000, jobs))
        ]
        await server.store.enqueue(batch, time.time())
    await server.store.close()
    return time.perf_counter() - began


async def e2e(
    db: str,
    jobs: int,
    concurrency: int,
    durability: str,
    enqueue: bool = True,
    tune: bool = True,
    keys: int = 0,
) -> dict[str, Any]:
    server = JobServer(db=db, tasks=TASKS, concurrency=concurrency, durability=durability)
    enqueue_s = await prepare(server, jobs, keys) if enqueue else 0.0

    finished = asyncio.Event()
    done = 0

    served = server.publisher.publish  # the server's own: metrics, events, waiters

    def publish(transitions: list[Transition], log_ids: list[int] | None) -> None:
        nonlocal done
        served(transitions, log_ids)
        for t in transitions:
            if t.after == JobState.SUCCEEDED:
                done += 1
        if done >= jobs:
            finished.set()

    server.publisher.publish = publish  # type: ignore[method-assign]  # before start()
    rss_samples = [_rss_mb()]

    async def sample_rss() -> None:  # the run phase only: the enqueue phase is the harness's
        while True:
            await asyncio.sleep(0.05)
            rss_samples.append(_rss_mb())

    if tune:
        tune_gc()  # as `jobserver serve` does
    sampler = asyncio.create_task(sample_rss())
    cpu_before = _cpu()
    began = time.perf_counter()
    await server.start()
    await finished.wait()
    elapsed = time.perf_counter() - began
    cpu_used = _cpu() - cpu_before
    sampler.cancel()
    rss_samples.append(_rss_mb())
    stats = getattr(server.store, "writer_stats", (0, 0))  # SQLite only
    await server.stop()
    return {
        "rate": jobs / elapsed,
        "elapsed_s": elapsed,
        "enqueue_s": enqueue_s,
        "cpu_s": cpu_used,
        "cpu_us_per_job": cpu_used / jobs * 1e6,
        "transactions": stats[0],
        "writes": stats[1],
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "run_rss_start_mb": rss_samples[0],
        "run_max_rss_mb": max(rss_samples),
    }


async def enqueue_many(
    db: str, jobs: int, batch: int, clients: int, durability: str
) -> dict[str, Any]:
    server = JobServer(db=db, tasks=TASKS, durability=durability)
    await server.start()
    remaining = jobs

    async def client() -> None:
        nonlocal remaining
        while remaining > 0:
            n = min(batch, remaining)
            remaining -= n
            run_at = time.time() + 86_400
            await server.enqueue_many([NewJob(task="bench_noop", run_at=run_at) for _ in range(n)])

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - began
    await server.stop()
    return {"rate": jobs / elapsed, "elapsed_s": elapsed}


async def _as_dict(seconds: Any) -> dict[str, Any]:
    return {"enqueue_s": await seconds}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["e2e", "prepare", "enqueue-many"])
    parser.add_argument("--db", required=True)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--durability", choices=["full", "normal"], default="full")
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument(
        "--skip-enqueue", action="store_true", help="e2e: the jobs are there already (prepare)"
    )
    parser.add_argument(
        "--default-gc", action="store_true", help="e2e: without `serve`'s GC tuning"
    )
    parser.add_argument(
        "--keys", type=int, default=0, help="e2e, prepare: job i has fairness key i %% keys"
    )
    args = parser.parse_args()
    if args.mode == "e2e":
        coro = e2e(
            args.db,
            args.jobs,
            args.concurrency,
            args.durability,
            not args.skip_enqueue,
            not args.default_gc,
            args.keys,
        )
    elif args.mode == "prepare":
        server = JobServer(db=args.db, tasks=TASKS, durability=args.durability)
        coro = _as_dict(prepare(server, args.jobs, args.keys))
    else:
        coro = enqueue_many(args.db, args.jobs, args.batch, args.clients, args.durability)
    result = uvloop.run(coro)
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
