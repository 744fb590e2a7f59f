"""The completion counter the peers' no-op tasks bump.

A task calls `bump()`: one increment of an in-process integer under a lock. A daemon thread,
started lazily in each worker process (so forked children get their own), adds the increments
to the Redis key `bench:done` every 10 ms. So a peer's task does no network round trip per job,
and the orchestrator sees completions at most ~10 ms late.
"""

from __future__ import annotations

import os
import threading
import time

KEY = "bench:done"
FLUSH_INTERVAL_S = 0.01

_lock = threading.Lock()
_start_lock = threading.Lock()
_count = 0
_pid = 0


def bump() -> None:
    global _count
    if _pid != os.getpid():
        _start_flusher()
    with _lock:
        _count += 1


def _start_flusher() -> None:
    global _pid, _count
    with _start_lock:
        if _pid == os.getpid():
            return
        with _lock:
            _count = 0
        _pid = os.getpid()
        threading.Thread(target=_flush_loop, name="bench-counter", daemon=True).start()


def _flush_loop() -> None:
    import redis

    client = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    sent = 0
    while True:
        time.sleep(FLUSH_INTERVAL_S)
        current = _count
        if current != sent:
            client.incrby(KEY, current - sent)
            sent = current
