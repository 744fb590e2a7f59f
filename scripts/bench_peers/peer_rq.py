"""RQ (Redis), SimpleWorker: runs each job in the worker process, no fork per job.

rq worker -w rq.worker.SimpleWorker -u $BENCH_REDIS_URL bench    (one per worker process)
"""

from __future__ import annotations

import os

from redis import Redis
from rq import Queue

from bench_peers.counter import bump


def noop() -> None:
    bump()


def enqueue(n: int) -> None:
    conn = Redis.from_url(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    queue = Queue("bench", connection=conn)
    chunk = 1_000
    for start in range(0, n, chunk):
        jobs = [Queue.prepare_data(noop, result_ttl=0) for _ in range(min(chunk, n - start))]
        queue.enqueue_many(jobs)
