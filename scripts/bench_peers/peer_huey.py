"""huey with SqliteHuey (SQLite in WAL mode, SQLite's default synchronous=FULL for workers).

huey_consumer bench_peers.peer_huey.huey -w 2 -k process
"""

from __future__ import annotations

import os

from huey import SqliteHuey

from bench_peers.counter import bump

# The enqueue phase may skip fsync (BENCH_HUEY_FSYNC=0) to set up faster; the consumer's
# connections keep SQLite's default (synchronous=FULL).
_fsync = False if os.environ.get("BENCH_HUEY_FSYNC") == "0" else None
huey = SqliteHuey(filename=os.environ.get("BENCH_HUEY_DB", "bench-huey.db"), fsync=_fsync)


@huey.task()
def noop() -> None:
    bump()


def enqueue(n: int) -> None:
    for _ in range(n):
        noop()
