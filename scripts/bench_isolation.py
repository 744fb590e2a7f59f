"""Process-isolated no-op jobs against Celery's prefork pool, side by side (issue 19, item 1).

    pip install celery redis                 # the peer; Redis at 127.0.0.1:6379
    python scripts/bench_isolation.py        # N=10,000, 3 rounds, children = processes = 16
    python scripts/bench_isolation.py --jobs 20000 --rounds 5 --processes 4

Each round runs, one after the other on an otherwise idle machine:
- jobserver: an embedded JobServer on a fresh SQLite file (durability full), every task in
  child processes (`isolation="process"`, --processes children); 4 x --processes jobs warm the
  children up first (a child takes about 0.3 s to start); then N no-op jobs go in with one
  enqueue_many and the time runs to the last success;
- Celery: N no-op tasks are put on Redis first (db 13, flushed), then `celery worker -P prefork
  -c --processes` starts; the time runs from its first completion to the last (the peers'
  counter, bench_peers/counter.py), so its start-up is left out as jobserver's warm-up is.

Printed: each round's jobs/s, and the median of the per-round ratios jobserver / Celery.

With --cpu-bound, it measures instead (issue 19, item 5) how a CPU-bound task (a pure-Python
loop) beside the queue slows N inline no-op jobs: alone, with the loop in the server's process
(a sync task: a thread holding the GIL), and with the loop in a child process
(`isolation="process"`); each round runs the three one after the other.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench import child_env, spawn, stop_process, watch_counter  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/13"


async def jobserver_round(jobs: int, processes: int) -> float:
    from jobserver import JobServer

    with tempfile.TemporaryDirectory() as tmp:
        server = JobServer(
            db=os.path.join(tmp, "jobs.db"),
            tasks=["bench_peers.jobserver_tasks"],
            concurrency=processes,
        )
        await server.start()
        try:
            warm = await server.enqueue_many(
                [server.new_job("bench_isolated_noop") for _ in range(4 * processes)]
            )
            for w in warm:
                await server.wait_for(w.job.id, timeout_s=120)
            began = time.perf_counter()
            await server.enqueue_many([server.new_job("bench_isolated_noop") for _ in range(jobs)])
            total = jobs + 4 * processes
            while (await server.store.count_by_status()).get("succeeded", 0) < total:
                await asyncio.sleep(0.01)
            return jobs / (time.perf_counter() - began)
        finally:
            await server.stop()


def celery_round(jobs: int, processes: int, log_path: Path) -> float:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    env = child_env(BENCH_REDIS_URL=REDIS_URL)
    subprocess.run(
        [sys.executable, "-m", "bench_peers.enqueue", "celery", str(jobs)],
        cwd=HERE,
        env=env,
        check=True,
        timeout=600,
    )
    worker = [
        *[sys.executable, "-m", "celery", "-A", "bench_peers.peer_celery", "worker"],
        *["-P", "prefork", "-c", str(processes), "--without-gossip", "--without-mingle"],
        *["--without-heartbeat", "-l", "warning"],
    ]
    proc = spawn(worker, log_path, {**env, "PYTHONPATH": str(HERE)})
    try:
        first, now = watch_counter(client, jobs, [proc], log_path)
    finally:
        stop_process(proc, timeout=15)
    return (jobs - first[1]) / (now - first[0])


async def cpu_round(jobs: int, spinner: str | None) -> float:
    """Inline no-op jobs/s with `spinner` (a CPU-bound task) running beside them, or none."""
    from bench_peers import jobserver_tasks

    from jobserver import JobServer, JobState

    jobserver_tasks._spinning["on"] = True
    with tempfile.TemporaryDirectory() as tmp:
        server = JobServer(
            db=os.path.join(tmp, "jobs.db"),
            tasks=["bench_peers.jobserver_tasks"],
            concurrency=16,
            grace_period_s=0.5,
        )
        await server.start()
        try:
            if spinner is not None:
                spin = await server.enqueue(spinner, [120.0])
                while (await server.get_job(spin.id)).status != JobState.RUNNING:
                    await asyncio.sleep(0.01)
                await asyncio.sleep(1.0)  # the loop (or its child) is running by now
            began = time.perf_counter()
            await server.enqueue_many([server.new_job("bench_noop") for _ in range(jobs)])
            while (await server.store.count_by_status()).get("succeeded", 0) < jobs:
                await asyncio.sleep(0.01)
            return jobs / (time.perf_counter() - began)
        finally:
            jobserver_tasks._spinning["on"] = False  # the in-process loop ends; a child is killed
            await server.stop()


def cpu_bound(args: argparse.Namespace) -> None:
    rows: dict[str, list[float]] = {"alone": [], "inline": [], "isolated": []}
    spinners = {"alone": None, "inline": "bench_spin", "isolated": "bench_spin_isolated"}
    for r in range(1, args.rounds + 1):
        for name, spinner in spinners.items():
            rows[name].append(asyncio.run(cpu_round(args.jobs, spinner)))
        print(
            f"round {r}: no-op jobs/s alone {rows['alone'][-1]:,.0f}, beside a CPU-bound task"
            f" in the server {rows['inline'][-1]:,.0f}, in a child {rows['isolated'][-1]:,.0f}",
            flush=True,
        )
    for name in ("inline", "isolated"):
        ratios = [x / a for x, a in zip(rows[name], rows["alone"], strict=True)]
        print(f"median {name} / alone: {statistics.median(ratios):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--processes", type=int, default=16, help="children / prefork -c")
    parser.add_argument("--cpu-bound", action="store_true", help="the CPU-bound task figure")
    args = parser.parse_args()
    if args.cpu_bound:
        cpu_bound(args)
        return
    ours, theirs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(1, args.rounds + 1):
            a = asyncio.run(jobserver_round(args.jobs, args.processes))
            b = celery_round(args.jobs, args.processes, Path(tmp) / f"celery-{r}.log")
            ours.append(a)
            theirs.append(b)
            print(f"round {r}: jobserver isolated {a:,.0f} jobs/s, Celery prefork {b:,.0f}"
                  f" jobs/s, ratio {a / b:.2f}", flush=True)  # fmt: skip
    ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
    print(
        f"median: jobserver {statistics.median(ours):,.0f}, Celery {statistics.median(theirs):,.0f}"
        f" jobs/s; ratio {statistics.median(ratios):.2f} (N={args.jobs}, {args.processes}"
        " processes each, SQLite durability full, Redis broker)"
    )


if __name__ == "__main__":
    main()
