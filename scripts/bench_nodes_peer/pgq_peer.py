"""The pgqueuer peer of scripts/bench_nodes.py: the same no-op job on the same PostgreSQL database.

Each process reads its settings from the environment that bench_nodes.py sets:
PGDSN (the database), PGQUEUER_SCHEMA (a fresh schema per run), PGQUEUER_CHANNEL (a NOTIFY
channel of that run's own), BENCH_STAMP_DIR (where each worker writes when its first job
started) and BENCH_PGQ_POOL (the size of a worker's asyncpg pool; 0 = one connection).

    python -m bench_nodes_peer.pgq_peer prepare 20000    # install the schema, enqueue N
    python -m bench_nodes_peer.pgq_peer work 32 64       # a worker: batch size, max concurrent

`work` is what `pgq run bench_nodes_peer.pgq_peer:create_pgqueuer --batch-size 32
--max-concurrent-tasks 64` does (`pgqueuer.run`, on uvloop), without the CLI: `pgq run` of
pgqueuer 1.6.0 stops at once with typer 0.29 ("'str' object has no attribute 'name'" from
its log set-up).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pgqueuer
import uvloop
from pgqueuer import PgQueuer, Queries
from pgqueuer.models import Job

ENTRYPOINT = "noop"
ENQUEUE_CHUNK = 10_000


def _dsn() -> str:
    return os.environ["PGDSN"]


@asynccontextmanager
async def create_pgqueuer() -> AsyncIterator[PgQueuer]:
    """The factory `pgq run` calls: one worker process with the no-op entrypoint."""
    stamp_dir = Path(os.environ["BENCH_STAMP_DIR"])
    pool_size = int(os.environ.get("BENCH_PGQ_POOL", "0"))
    started = False

    if pool_size > 0:
        pool = await asyncpg.create_pool(_dsn(), min_size=min(2, pool_size), max_size=pool_size)
        pgq = PgQueuer.from_asyncpg_pool(pool)
    else:
        pool = None
        conn = await asyncpg.connect(_dsn())
        pgq = PgQueuer.from_asyncpg_connection(conn)

    @pgq.entrypoint(ENTRYPOINT)
    async def noop(job: Job) -> None:
        nonlocal started
        if not started:  # when this worker's first job started, for the timer
            started = True
            (stamp_dir / str(os.getpid())).write_text(repr(time.time()))

    try:
        yield pgq
    finally:
        if pool is not None:
            await pool.close()


async def prepare(jobs: int) -> None:
    """Install pgqueuer's tables in PGQUEUER_SCHEMA and enqueue `jobs` no-op jobs."""
    conn = await asyncpg.connect(_dsn())
    try:
        queries = Queries.from_asyncpg_connection(conn)
        await queries.install()
        for start in range(0, jobs, ENQUEUE_CHUNK):
            n = min(ENQUEUE_CHUNK, jobs - start)
            await queries.enqueue([ENTRYPOINT] * n, [None] * n, [0] * n)
    finally:
        await conn.close()


async def work(batch_size: int, max_concurrent_tasks: int) -> None:
    """One worker until SIGTERM, as `pgq run` runs it."""
    await pgqueuer.run(
        create_pgqueuer,
        batch_size=batch_size,
        max_concurrent_tasks=max_concurrent_tasks or None,
    )


def main(argv: list[str]) -> int:
    if argv[:1] == ["prepare"] and len(argv) == 2 and argv[1].isdigit():
        asyncio.run(prepare(int(argv[1])))
        return 0
    if argv[:1] == ["work"] and len(argv) == 3 and argv[1].isdigit() and argv[2].isdigit():
        logging.basicConfig(level=logging.WARNING)
        uvloop.run(work(int(argv[1]), int(argv[2])))
        return 0
    print(
        "usage: python -m bench_nodes_peer.pgq_peer prepare N | work BATCH_SIZE MAX_CONCURRENT",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
