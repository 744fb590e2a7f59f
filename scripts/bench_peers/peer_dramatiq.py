"""dramatiq with the Redis broker, no result backend.

dramatiq bench_peers.peer_dramatiq --processes 2 --threads 8
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench_peers.counter import bump

broker = RedisBroker(url=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
dramatiq.set_broker(broker)


@dramatiq.actor
def noop() -> None:
    bump()


def enqueue(n: int) -> None:
    for _ in range(n):
        noop.send()
