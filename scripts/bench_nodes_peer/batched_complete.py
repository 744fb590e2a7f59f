"""An experiment for scripts/bench_nodes.py --experiment batched, not jobserver code.

Loaded into each node as a task module (`--tasks bench_nodes_peer.batched_complete`), it
replaces `PostgresStore.complete` so that the completions waiting for the node's group-commit
writer are recorded together: one `UPDATE ... FROM unnest(...)` for all of them, one NOTIFY,
one statement for webhooks and one or two for dependants, and no savepoint per job; instead of six
statements (round trips) per job. It measures what that change to jobserver/store/postgres.py
would be worth; it leans on that module's private helpers, so it may need updating with it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from jobserver.store import postgres as pg

_PENDING = "_bench_pending"  # [(job_id, token, result, now, future)] not yet taken by a flush
_QUEUED = "_bench_flush_queued"


async def complete(
    self: pg.PostgresStore, job_id: int, token: str, result: bytes, now: float
) -> bool:
    fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    pending: list[Any] = self.__dict__.setdefault(_PENDING, [])
    pending.append((job_id, token, result, now, fut))
    if not self.__dict__.get(_QUEUED):
        setattr(self, _QUEUED, True)
        flush = asyncio.ensure_future(_flush(self))
        flush.add_done_callback(lambda t: t.cancelled() or t.exception())
    return await fut


async def _flush(store: pg.PostgresStore) -> None:
    taken: list[Any] = []

    async def op(conn: asyncpg.Connection) -> set[int]:
        # Everything pending when the writer gets here, late arrivals too.
        taken.extend(store.__dict__.get(_PENDING, []))
        setattr(store, _PENDING, [])
        setattr(store, _QUEUED, False)
        rows = await conn.fetch(
            """UPDATE jobs SET status = 'succeeded', result = c.result::jsonb,
                   completed_at = c.now, progress = 1.0, progress_message = NULL, error = NULL,
                   lease_token = NULL, lease_expires_at = NULL
               FROM unnest($1::bigint[], $2::text[], $3::text[], $4::float8[])
                   AS c(id, token, result, now)
               WHERE jobs.id = c.id AND jobs.status = 'running' AND jobs.lease_token = c.token
               RETURNING jobs.id""",
            [t[0] for t in taken],
            [t[1] for t in taken],
            [t[2].decode() if isinstance(t[2], bytes) else pg._encode_json(t[2]) for t in taken],
            [t[3] for t in taken],
        )
        done = [r[0] for r in rows]
        if not done:
            return set()
        await store._notify_done(conn, done)
        webhook = await pg._queue_webhooks(conn, done, max(t[3] for t in taken))
        waiting = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM job_dependencies WHERE depends_on = ANY($1::bigint[]))",
            done,
        )
        left = (
            []
            if not waiting
            else await conn.fetch(
                """UPDATE jobs SET blocked_by = blocked_by - d.n
               FROM (SELECT job_id, count(*) AS n FROM job_dependencies
                     WHERE depends_on = ANY($1::bigint[]) GROUP BY job_id) AS d
               WHERE jobs.id = d.job_id AND jobs.status = 'pending' AND jobs.blocked_by > 0
               RETURNING jobs.blocked_by""",
                done,
            )
        )
        if webhook or any(r[0] == 0 for r in left):
            await store._notify_due(conn)
        return set(done)

    try:
        done: set[int] = await store._write(op)
    except BaseException as exc:
        if not taken:  # the op never ran: fail what is pending now
            taken.extend(store.__dict__.get(_PENDING, []))
            setattr(store, _PENDING, [])
            setattr(store, _QUEUED, False)
        for t in taken:
            if not t[4].done():
                t[4].set_exception(exc)
        raise
    for t in taken:
        if not t[4].done():
            t[4].set_result(t[0] in done)


pg.PostgresStore.complete = complete  # type: ignore[method-assign]
