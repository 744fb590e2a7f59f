"""Celery with the Redis broker, no result backend.

celery -A bench_peers.peer_celery worker -c 2 -P prefork --without-gossip --without-mingle
    --without-heartbeat -l warning
"""

from __future__ import annotations

import os

from celery import Celery

from bench_peers.counter import bump

app = Celery("bench", broker=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(
    task_ignore_result=True,
    worker_prefetch_multiplier=int(os.environ.get("BENCH_CELERY_PREFETCH", "64")),
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@app.task(name="noop")
def noop() -> None:
    bump()


def enqueue(n: int) -> None:
    with app.producer_or_acquire() as producer:
        for _ in range(n):
            noop.apply_async(producer=producer)
