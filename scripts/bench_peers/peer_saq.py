"""SAQ (asyncio, Redis).

saq bench_peers.peer_saq.settings --workers 2
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from saq import Queue

from bench_peers.counter import bump

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
queue = Queue.from_url(URL)


async def noop(ctx: dict[str, Any]) -> None:
    bump()


settings = {
    "queue": queue,
    "functions": [noop],
    "concurrency": int(os.environ.get("BENCH_CONCURRENCY", "64")),
}


async def enqueue(n: int) -> None:
    q = Queue.from_url(URL)
    await q.connect()
    chunk = 500
    for start in range(0, n, chunk):
        await asyncio.gather(*(q.enqueue("noop") for _ in range(min(chunk, n - start))))
    await q.disconnect()
