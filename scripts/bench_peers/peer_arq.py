"""arq (asyncio, Redis).

arq bench_peers.peer_arq.WorkerSettings      (one per worker process)
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from arq import create_pool
from arq.connections import RedisSettings

from bench_peers.counter import bump

REDIS = RedisSettings.from_dsn(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))


async def noop(ctx: dict[str, Any]) -> None:
    bump()


class WorkerSettings:
    functions = [noop]
    redis_settings = REDIS
    max_jobs = int(os.environ.get("BENCH_CONCURRENCY", "64"))
    poll_delay = float(os.environ.get("BENCH_ARQ_POLL_DELAY", "0.01"))
    keep_result = 0
    handle_signals = True


async def enqueue(n: int) -> None:
    pool = await create_pool(REDIS)
    chunk = 500
    for start in range(0, n, chunk):
        await asyncio.gather(*(pool.enqueue_job("noop") for _ in range(min(chunk, n - start))))
    await pool.aclose()
