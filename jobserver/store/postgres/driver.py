"""The PostgreSQL store, for several jobserver nodes on one database: all its SQL lives here.

Same contract as the SQLite store, with what many nodes need:
- claims take due jobs with `FOR UPDATE SKIP LOCKED` in one statement, so nodes never
  block on or double-claim each other's rows;
- writes are group-committed on one connection per node, like SQLite's writer;
- `NOTIFY` tells every node when jobs become due (so idle nodes wake at once) and when a job
  ends (so a long-poll on one node sees a job finished by another);
- a node that dies leaves its jobs `running` with a lease that expires; any other node's
  rescuer takes them back. Nothing is recovered "at once" at start: other nodes may be alive.

Everything lives in one PostgreSQL schema, created on first start: `jobserver`, or the one a
`?schema=name` parameter on the URL names (several independent jobservers on one database).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from ... import codec, lifecycle
from ...errors import (
    JobServerError,
    SchemaError,
    StorageUnavailable,
)
from ...lifecycle import Changes, NewRow, Program, Sql
from ...models import TERMINAL_STATES, Job, JobState, NewJob, Transition
from .. import queries
from ..base import Enqueued, JobFilter, OnTransitions, node_name
from ..group_commit import (
    GatheredWrite,
    GroupCommitQueue,
    PendingWrite,
    open_gathered,
    transitions_of,
)
from ..jobstore import JOB_COLUMNS, JobStore, job_from_row

log = logging.getLogger(__name__)
RUNNING, SUCCEEDED = JobState.RUNNING, JobState.SUCCEEDED
T = TypeVar("T")
Op = Callable[[asyncpg.Connection], Awaitable[Any]]

DUE_CHANNEL = "jobserver_due"
# Ended jobs as {"o": the writing store, "e": [[id, status, attempts, queue, task,
# completed_at], ...]}, 16 a notice:
# at most 16 * (200 + 100 + 80) bytes with the longest task and queue names, under 8,000.
NOTIFY_DONE = """SELECT pg_notify($1, chunk) FROM (
        SELECT json_build_object('o', $3::text, 'e',
                json_agg(json_build_array(id, status, attempts, queue, task, completed_at)))::text
            AS chunk
        FROM (SELECT id, status, attempts, queue, task, completed_at,
                  (row_number() OVER (ORDER BY id) - 1) / 16 AS part
              FROM jobs WHERE id = ANY($2::bigint[])) ended
        GROUP BY part) notices"""
DONE_CHANNEL = "jobserver_done"
MIGRATION_LOCK = 7_362_001  # pg_advisory_lock key: one node migrates at a time
RELISTEN_FIRST_DELAY_S, RELISTEN_MAX_DELAY_S = 0.1, 5.0  # reconnecting a lost LISTEN
TRANSACTION_TRIES = 5  # a transaction rolled back by a deadlock with another node runs again

MIGRATIONS = queries.migrations("postgres")


QUERIES = queries.load("postgres", job_columns=JOB_COLUMNS)

DIALECT = lifecycle.Dialect(walk_priority_levels=False, lock_limited_queues=True)


async def _run(conn: asyncpg.Connection, program: Program[T]) -> T:
    """Run a lifecycle program on this connection (inside the caller's transaction)."""
    try:
        statement = next(program)
        while True:
            statement = program.send(await _execute(conn, statement))
    except StopIteration as stop:
        result: T = stop.value
        return result


async def _insert_plain(conn: asyncpg.Connection, sql: str, rows: Sequence[NewRow]) -> list[int]:
    """Plain jobs by one statement, the values as one array a column: one round trip, not
    one a job. JSON values travel as text."""
    columns = [
        [None if (v := r.values[i]) is None else v.decode() for r in rows]
        if name in lifecycle.JSON_COLUMNS
        else [r.values[i] for r in rows]
        for name, i in zip(lifecycle.PLAIN_COLUMNS, lifecycle.PLAIN_INDEXES, strict=True)
    ]
    # Ids come from the sequence in the SELECT's order (ORDER BY n): ascending ids are the
    # rows in the order given, whatever order RETURNING lists them in.
    return sorted(r[0] for r in await conn.fetch(sql, *columns))


async def _execute(conn: asyncpg.Connection, statement: Sql) -> Any:
    sql, params, mode = QUERIES[statement.name], statement.params, statement.mode
    if mode == "count":
        status: str = await conn.execute(sql, *params)
        return int(status.split()[-1])
    if mode == "rows":
        return await conn.fetch(sql, *params)
    if mode in ("jobs", "claimed"):
        return [_record_to_job(r) for r in await conn.fetch(sql, *params)]
    if mode == "insert_plain":
        return await _insert_plain(conn, sql, params)
    if mode == "many":
        await conn.executemany(sql, params)
        return None
    if mode == "value":
        return await conn.fetchval(sql, *params)
    first = await conn.fetchrow(sql, *params)
    if mode == "row":
        return first
    return None if first is None else _record_to_job(first)  # mode == "job"


def split_schema(dsn: str) -> tuple[str, str | None]:
    """`postgresql://host/db?schema=name` -> (the DSN without it, name): our own parameter."""
    parts = urlsplit(dsn)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in query if k == "schema"), None)
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    return urlunsplit(parts._replace(query=rest)), schema


def _record_to_job(r: Sequence[Any]) -> Job:
    return job_from_row(r, _as_read)  # jsonb is decoded by the connection's codec


def _as_read(value: Any) -> Any:
    return value


def _encode_json(value: Any) -> str:
    # bytes arrive already encoded (a task's result); anything else is encoded here.
    if isinstance(value, bytes):
        return value.decode()
    return codec.dumps(value).decode()


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb", encoder=_encode_json, decoder=codec.loads, schema="pg_catalog"
    )


class _NoResetConnection(asyncpg.Connection):  # type: ignore[misc]
    """Pooled connections keep no session state here (LISTEN is on its own connection), so
    the reset asyncpg runs on every release (UNLISTEN *, RESET ALL...) is pure cost."""

    def get_reset_query(self) -> str:
        return ""


def _unavailable(exc: BaseException) -> StorageUnavailable:
    return StorageUnavailable(f"PostgreSQL cannot take writes now: {exc}")


_OP_ERRORS = (JobServerError, asyncpg.IntegrityConstraintViolationError, ValueError, TypeError)


class _CompletionBatch(GatheredWrite[tuple[int, str, bytes, float]]):
    """Jobs that succeeded (id, lease token, result, time), written by one statement."""

    def __init__(self, store: PostgresStore) -> None:
        super().__init__()
        self.store = store
        self.changes = Changes()

    async def __call__(self, conn: asyncpg.Connection) -> list[bool]:
        ids, tokens, results, times = zip(*self.items, strict=True)
        ended = await conn.fetch(
            """UPDATE jobs SET status = 'succeeded', result = v.result, completed_at = v.at,
                   progress = 1.0, progress_message = NULL, error = NULL,
                   lease_token = NULL, lease_expires_at = NULL
               FROM unnest($1::bigint[], $2::text[], $3::jsonb[], $4::float8[])
                   AS v(id, token, result, at)
               WHERE jobs.id = v.id AND jobs.status = 'running' AND jobs.lease_token = v.token
               RETURNING jobs.id, jobs.has_dependants,
                   jobs.callback_url IS NOT NULL AS has_callback, v.at, jobs.task, jobs.queue,
                   jobs.attempts, jobs.started_at""",
            ids,
            tokens,
            results,
            times,
        )
        done = {r["id"] for r in ended}
        await self.store._notify_done(conn, [i for i in ids if i in done])
        # Most jobs have neither: their completion is that one statement.
        self.changes = changes = Changes()  # per run: a deadlock's rollback runs it again
        changes.transitions = [
            Transition(r[0], r[4], r[5], RUNNING, SUCCEEDED, "succeeded", r[6], r[3], r[7])
            for r in ended
        ]
        for r in ended:
            if r["has_dependants"]:
                await _run(conn, lifecycle.after_success(r["id"], r["at"], changes))
            if r["has_callback"]:
                await _run(conn, lifecycle.queue_webhooks([r["id"]], r["at"], changes))
        if changes.due:
            await self.store._notify_due(conn)
        return [i in done for i in ids]


class _StepBatch(GatheredWrite[tuple[Any, ...]]):
    """Durable steps kept (durable.py): (job id, lease token, seq, name, kind, status, result,
    started_at, ended_at) each, written by one statement, as completions are; each answer
    says whether the lease still held. The jobs whose step went in are marked has_steps."""

    async def __call__(self, conn: asyncpg.Connection) -> list[bool]:
        columns = list(zip(*self.items, strict=True))
        kept = await conn.fetch(
            """INSERT INTO job_steps
                   (job_id, seq, name, kind, status, result, attempt, started_at, ended_at)
               SELECT v.job_id, v.seq, v.name, v.kind, v.status, v.result, jobs.attempts,
                   v.started_at, v.ended_at
               FROM unnest($1::bigint[], $2::text[], $3::int[], $4::text[], $5::text[],
                   $6::text[], $7::jsonb[], $8::float8[], $9::float8[])
                   AS v(job_id, token, seq, name, kind, status, result, started_at, ended_at)
               JOIN jobs ON jobs.id = v.job_id AND jobs.status = 'running'
                   AND jobs.lease_token = v.token
               ON CONFLICT (job_id, seq) DO UPDATE SET status = excluded.status,
                   result = excluded.result, attempt = excluded.attempt,
                   ended_at = excluded.ended_at
               RETURNING job_id, seq""",
            *columns,
        )
        saved = {(r[0], r[1]) for r in kept}
        if saved:
            await conn.execute(
                "UPDATE jobs SET has_steps = TRUE WHERE id = ANY($1::bigint[]) AND NOT has_steps",
                sorted({job_id for job_id, _ in saved}),
            )
        return [(item[0], item[2]) in saved for item in self.items]


class _PlainInsertBatch(GatheredWrite[NewRow]):
    """Single plain enqueues that meet before the writer takes them: one admission check
    and one INSERT for all of them. Each item's answer is its Enqueued, or the error that
    refused it alone."""

    def __init__(self, store: PostgresStore) -> None:
        super().__init__()
        self.store = store
        self.changes = Changes()

    async def __call__(self, conn: asyncpg.Connection) -> list[Enqueued | Exception]:
        rows = self.items
        self.changes = changes = Changes()  # per run: a deadlock's rollback runs it again
        answers: list[Enqueued | Exception] = []
        try:
            async with conn.transaction():  # a savepoint: a refusal undoes only this try
                answers.extend(await _run(conn, _admit_and_insert(rows, changes)))
        except _OP_ERRORS:
            # A queue full, or a row refused: each job on its own, so each is judged alone.
            answers.clear()
            for row in rows:
                try:
                    async with conn.transaction():
                        answers.extend(await _run(conn, _admit_and_insert([row], changes)))
                except _OP_ERRORS as exc:
                    answers.append(exc)
        if any(isinstance(a, Enqueued) for a in answers):
            await self.store._notify_due(conn)
        return answers


def _admit_and_insert(rows: Sequence[NewRow], changes: Changes) -> Program[list[Enqueued]]:
    yield from lifecycle.admit(rows)
    enqueued: list[Enqueued] = yield from lifecycle.insert_plain(rows, changes)
    return enqueued


class _GroupCommitWriter(GroupCommitQueue[Op]):
    """Runs queued writes in shared transactions on one connection, each in a savepoint."""

    def __init__(self, pool: asyncpg.Pool, max_batch: int = 500) -> None:
        super().__init__("jobserver-postgres-writer", max_batch)
        self._pool = pool

    async def _commit(self, batch: list[PendingWrite[Op]]) -> None:
        began = time.perf_counter()
        for attempt in range(1, TRANSACTION_TRIES + 1):
            try:
                outcomes, log_ids = await self._run_batch(batch)
            except asyncpg.TransactionRollbackError as exc:
                # A deadlock or serialization failure with another node: PostgreSQL rolled the
                # whole transaction back, so running the batch again is safe (ops keep no
                # state between runs). Lock order cannot prevent it: a transaction holds
                # whatever writes met in it, in their arrival order.
                if attempt == TRANSACTION_TRIES:
                    self._fail(batch, _unavailable(exc))
                    return
                log.info("transaction rolled back (%s); running it again", exc)
                continue
            except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
                self._fail(batch, _unavailable(exc))
                return
            except Exception as exc:  # e.g. asyncpg's InternalClientError on a killed session
                log.warning("the database connection failed in a way not foreseen", exc_info=True)
                self._fail(batch, _unavailable(exc))
                return
            break
        if self.observer is not None:
            self.observer(len(batch), time.perf_counter() - began)
        self._settle(batch, outcomes, log_ids)

    async def _run_batch(
        self, batch: list[PendingWrite[Op]]
    ) -> tuple[list[tuple[bool, Any]], list[int]]:
        """Every write of the batch in one transaction, each in a savepoint (a lone one in
        none: its refusal rolls the transaction back), then the event-log rows of what they
        moved, last, so that a row's id is drawn as close to COMMIT as can be."""
        outcomes: list[tuple[bool, Any]] = []
        log_ids: list[int] = []
        alone = len(batch) == 1
        async with self._pool.acquire() as conn:
            try:
                async with conn.transaction():
                    for w in batch:
                        try:
                            if alone:
                                value = await w.op(conn)
                            else:
                                async with conn.transaction():  # a savepoint
                                    value = await w.op(conn)
                        except _OP_ERRORS as exc:
                            if alone:
                                raise
                            outcomes.append((False, exc))
                        else:
                            outcomes.append((True, value))
                    moved = transitions_of([w.op for w in batch], outcomes)
                    if moved:
                        log_ids = await _run(conn, lifecycle.log_events(moved))
            except _OP_ERRORS as exc:  # the lone write was refused; its transaction rolled back
                return [(False, exc)], []
            except asyncpg.PostgresError:  # the server answered (a rollback included): sound
                raise
            except Exception:
                # The session's state is unknown (terminated mid-statement, say): close it,
                # so that the pool opens a new one instead of handing it out again.
                conn.terminate()
                raise
        return outcomes, log_ids


class PostgresStore(JobStore):
    """A store on PostgreSQL: several jobserver processes may share one database."""

    exclusive = False  # many nodes share the database
    dialect = DIALECT

    def __init__(self, dsn: str, *, schema: str | None = None, pool_size: int = 8) -> None:
        dsn, schema_in_dsn = split_schema(dsn)
        schema = schema or schema_in_dsn or "jobserver"
        if not schema.replace("_", "").isalnum():
            raise ValueError("schema must be letters, digits and underscores")
        self.dsn = dsn
        self.schema = schema
        self.pool_size = pool_size
        self.node = node_name()  # written on each job it claims: the history's `node`
        self._pool: asyncpg.Pool | None = None
        self._writer: _GroupCommitWriter | None = None
        self._listener: asyncpg.Connection | None = None
        self._relisten: asyncio.Task[None] | None = None
        self._closing = False
        self._on_due: list[Callable[[], None]] = []
        self._on_transitions: list[OnTransitions] = []
        # names this store's own notices, which it hears too and has published already
        self._origin = secrets.token_hex(6)
        self._turn = itertools.count()  # which queue goes first in a claim: rotates for fairness
        self._completions: _CompletionBatch | None = None
        self._steps: _StepBatch | None = None
        self._inserts: _PlainInsertBatch | None = None
        self.commit_observer: Callable[[int, float], None] | None = None

    # -- opening and closing -----------------------------------------------------------------
    async def open(self) -> None:
        try:
            admin = await asyncpg.connect(self.dsn)
        except (OSError, asyncpg.PostgresError) as exc:
            raise SchemaError(f"cannot connect to PostgreSQL: {exc}") from exc
        try:
            await _migrate(admin, self.schema)
        finally:
            await admin.close()
        settings = self._session_settings()
        self._pool = await asyncpg.create_pool(
            self.dsn,
            min_size=2,
            max_size=self.pool_size,
            init=_init_connection,
            server_settings=settings,
            connection_class=_NoResetConnection,
        )
        self._closing = False
        await self._listen()
        self._writer = _GroupCommitWriter(self._pool)
        # looked up at each commit, so an observer set after open() is told too
        self._writer.observer = lambda writes, s: (
            self.commit_observer and self.commit_observer(writes, s)
        )
        self._writer.on_commit = self._committed
        self._writer.start()

    def _session_settings(self) -> dict[str, str]:
        # application_name: an operator (or a test) finds a node's sessions in pg_stat_activity
        return {"search_path": f'"{self.schema}"', "application_name": f"jobserver/{self.schema}"}

    async def _listen(self) -> None:
        """LISTEN for other nodes' due and done notices, on a connection of its own."""
        conn = await asyncpg.connect(self.dsn, server_settings=self._session_settings())
        await conn.add_listener(self._channel(DUE_CHANNEL), self._heard_due)
        await conn.add_listener(self._channel(DONE_CHANNEL), self._heard_done)
        conn.add_termination_listener(self._listener_lost)
        self._listener = conn

    def _listener_lost(self, conn: asyncpg.Connection) -> None:
        conn.terminate()  # its socket is gone: mark it closed, or it is reported unclosed
        if not self._closing and self._relisten is None:
            self._relisten = asyncio.get_running_loop().create_task(self._listen_again())

    async def _listen_again(self) -> None:
        """The LISTEN connection was lost (a restart, pg_terminate_backend): without it, other
        nodes' enqueues no longer wake this one. Reconnect with backoff, then wake once for
        whatever was announced meanwhile (waiters for jobs ended meanwhile re-check on their
        own timers)."""
        delay_s = RELISTEN_FIRST_DELAY_S
        try:
            while not self._closing:
                try:
                    await self._listen()
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    log.warning("LISTEN connection lost; again in %.1f s: %s", delay_s, exc)
                    await asyncio.sleep(delay_s)
                    delay_s = min(delay_s * 2, RELISTEN_MAX_DELAY_S)
                    continue
                log.info("LISTEN connection re-established")
                self._heard_due()
                return
        finally:
            self._relisten = None

    async def close(self) -> None:
        self._closing = True
        if self._relisten is not None:
            self._relisten.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._relisten
        if self._writer is not None:
            await self._writer.close()
            self._writer = None
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
            self._listener = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    def subscribe(
        self,
        on_due: Callable[[], None],
        on_transitions: OnTransitions,
    ) -> None:
        """Hear this node's committed transitions, other nodes' job ends (their notices), and
        when jobs became due on any node."""
        self._on_due.append(on_due)
        self._on_transitions.append(on_transitions)

    def _channel(self, name: str) -> str:
        return f"{name}_{self.schema}"

    def _committed(self, changed: list[Changes], log_ids: list[int]) -> None:
        """A batch committed: publish its transitions; wake this node for what became due
        (its own due notices are not heeded: see _heard_due)."""
        self._publish(changed, log_ids)
        if any(changes.due for changes in changed):
            self._heard_due()

    def _heard_due(self, *args: Any) -> None:
        """Jobs became due on some node. A notice this store sent itself is passed over: the
        commit woke this node already (`_committed`, and the server's wake for its own
        enqueues), and the echo arriving later set off a claim that found nothing, or one that
        split an enqueue from the claim meant to share its transaction."""
        if len(args) == 4 and args[3] == self._origin:
            return
        for callback in self._on_due:
            callback()

    def _heard_done(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        try:
            notice = codec.loads(payload)
            origin, entries = notice["o"], notice["e"]
        except (ValueError, TypeError, KeyError):
            log.warning("a done notice not in the expected form was ignored: %.100r", payload)
            return
        if origin == self._origin:
            return  # this store's own: published when it committed
        heard = [
            Transition(job_id, task, queue, None, JobState(status), "heard", attempts, at)
            for job_id, status, attempts, queue, task, at in entries
        ]
        for on_transitions in self._on_transitions:
            on_transitions(heard, None)

    async def _write(self, op: Op) -> Any:
        return await self._put(op)

    def _put(self, op: Op) -> asyncio.Future[Any]:
        """Queue a write now; the future holds its result once committed."""
        if self._writer is None:
            raise StorageUnavailable("the store is not open")
        return self._writer.put(op)

    async def _read(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        if self._pool is None:
            raise StorageUnavailable("the store is not open")
        try:
            async with self._pool.acquire() as conn:
                return await fn(conn)
        except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
            raise _unavailable(exc) from exc

    async def _notify_due(self, conn: asyncpg.Connection) -> None:
        await conn.execute("SELECT pg_notify($1, $2)", self._channel(DUE_CHANNEL), self._origin)

    async def _notify_done(self, conn: asyncpg.Connection, job_ids: Sequence[int]) -> None:
        """Tell every node these jobs ended, with what an event needs: one
        statement, the payloads built by PostgreSQL from the rows, in chunks under NOTIFY's
        8,000-byte limit."""
        if job_ids:
            await conn.execute(
                NOTIFY_DONE, self._channel(DONE_CHANNEL), list(job_ids), self._origin
            )

    # -- enqueue and read ----------------------------------------------------------------------
    async def enqueue(self, jobs: Sequence[NewJob], now: float) -> list[Enqueued]:
        rows = [lifecycle.new_row(j, now) for j in jobs]
        if len(rows) == 1 and rows[0].plain:
            return [await self._join_inserts(rows[0])]
        enqueued, _ = await self._move(lambda ch: lifecycle.enqueue(rows, now, (), ch))
        result: list[Enqueued] = enqueued
        return result

    def enqueue_gathered(self, job: NewJob, now: float) -> asyncio.Future[Enqueued] | None:
        row = lifecycle.new_row(job, now)
        return self._join_inserts(row) if row.plain else None

    def _join_inserts(self, row: NewRow) -> asyncio.Future[Enqueued]:
        # Single enqueues that arrive before the writer takes them share one op: a few round
        # trips for all of them instead of a savepoint, a check, an insert and a notify each.
        batch = self._inserts = open_gathered(
            self._inserts, lambda: _PlainInsertBatch(self), self._put
        )
        return batch.join_soon(row)

    async def list_jobs(
        self, flt: JobFilter, limit: int, before_id: int | None = None
    ) -> list[Job]:
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("status", None if flt.status is None else str(flt.status)),
            ("queue", flt.queue),
            ("task", flt.task),
        ):
            if value is not None:
                params.append(value)
                clauses.append(f"{column} = ${len(params)}")
        pattern = flt.search_pattern()
        if pattern is not None:
            params.append(pattern)
            n = len(params)
            clauses.append(
                f"(lower(task) LIKE ${n} ESCAPE '\\' OR lower(queue) LIKE ${n} ESCAPE '\\')"
            )
        if before_id is not None:
            params.append(before_id)
            clauses.append(f"id < ${len(params)}")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        params.append(limit)
        sql = f"SELECT {JOB_COLUMNS} FROM jobs {where} ORDER BY id DESC LIMIT ${len(params)}"

        async def fn(conn: asyncpg.Connection) -> list[Job]:
            return [_record_to_job(r) for r in await conn.fetch(sql, *params)]

        return await self._read(fn)

    async def count_by_status(self) -> dict[str, int]:
        async def fn(conn: asyncpg.Connection) -> dict[str, int]:
            counts = {s.value: 0 for s in JobState}
            for r in await conn.fetch("SELECT status, count(*) AS n FROM jobs GROUP BY status"):
                counts[r["status"]] = r["n"]
            return counts

        return await self._read(fn)

    # -- the worker's side -------------------------------------------------------------------
    async def complete(self, job_id: int, token: str, result: bytes, now: float) -> JobState | None:
        # Completions that arrive before the writer takes them share one op, one statement:
        # a statement a job cost several round trips (savepoint, update, notify) a job.
        batch = self._completions = open_gathered(
            self._completions, lambda: _CompletionBatch(self), self._put
        )
        done: bool = await batch.join((job_id, token, result, now))
        return JobState.SUCCEEDED if done else None

    async def save_step(self, job_id: int, token: str, step: Sequence[Any]) -> bool:
        # Steps kept before the writer takes them share one op, one statement (as completions)
        batch = self._steps = open_gathered(self._steps, _StepBatch, self._put)
        kept: bool = await batch.join((job_id, token, *step))
        return kept

    async def _move(
        self,
        program: Callable[[Changes], Program[T]],
        *,
        claims: bool = False,
    ) -> T:
        """Run a lifecycle program as one write, and tell every node what it did (the jobs it
        ended, and whether jobs became due): the notices go out when the transaction commits.
        This node publishes its Changes once committed."""

        async def op(conn: asyncpg.Connection) -> T:
            changes = Changes()  # per run: a transaction rolled back by a deadlock runs again
            op.changes = changes  # type: ignore[attr-defined]
            result = await _run(conn, program(changes))
            done = [t.job_id for t in changes.transitions if t.after in TERMINAL_STATES]
            await self._notify_done(conn, done)
            if changes.due or changes.new_pending:
                await self._notify_due(conn)
            return result

        if claims:
            op.claims = True  # type: ignore[attr-defined]
        result: T = await self._write(op)
        return result

    async def _look(self, program: Program[T]) -> T:
        return await self._read(lambda conn: _run(conn, program))

    def _json(self, stored: Any) -> Any:
        return stored  # jsonb is decoded by the connection's codec

    # -- the client's side -----------------------------------------------------------------------
    # -- retention -----------------------------------------------------------------------------
    async def prune(self, finished_before: float, failed_before: float, limit: int) -> int:
        async def op(conn: asyncpg.Connection) -> int:
            deleted = 0
            for statuses, before in (
                (["succeeded", "cancelled"], finished_before),
                (["failed"], failed_before),
            ):
                gone = await conn.fetch(
                    """DELETE FROM jobs WHERE id IN (
                           SELECT id FROM jobs WHERE status = ANY($1::text[]) AND completed_at < $2
                           ORDER BY completed_at LIMIT $3 FOR UPDATE SKIP LOCKED)
                       RETURNING id""",
                    statuses,
                    before,
                    limit,
                )
                await _run(conn, lifecycle.forget_jobs([r["id"] for r in gone]))
                deleted += len(gone)
            status: str = await conn.execute(
                """DELETE FROM dead_letters WHERE id IN (
                       SELECT id FROM dead_letters WHERE failed_at < $1
                       ORDER BY failed_at LIMIT $2 FOR UPDATE SKIP LOCKED)""",
                failed_before,
                limit,
            )
            return deleted + int(status.split()[-1])

        result: int = await self._write(op)
        return result

    async def reclaim_space(self, pages: int) -> None:
        """PostgreSQL's autovacuum reuses the space of deleted rows: nothing to do here."""


# -- SQL ----------------------------------------------------------------------------------------


async def _migrate(conn: asyncpg.Connection, schema: str) -> None:
    """Create the schema and apply missing migrations; an advisory lock keeps nodes starting
    together in line (CREATE SCHEMA IF NOT EXISTS itself races: two sessions both see none)."""
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await conn.execute(f'SET search_path TO "{schema}"')
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version"
            " (version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
        )
        current = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version")
        latest = MIGRATIONS[-1][0]
        if current > latest:
            raise SchemaError(
                f"the database is at schema version {current}; this jobserver knows up to {latest}"
            )
        for version, sql in MIGRATIONS:
            if version <= current:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_version VALUES ($1, extract(epoch from now()))", version
                )
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
