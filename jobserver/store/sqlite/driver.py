"""The SQLite store's driver: its connections, group commit and hot paths (SQL: queries.sql).

One writer connection takes every write. Writes that arrive while a transaction is running
wait in a queue and go into the next transaction together (group commit): one fsync and one
hop to the database thread for many enqueues, claims and completions. Each write is a function
run on the database thread inside a savepoint, so one failed write does not undo the others.
Reads use a second connection; WAL lets them run beside the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from ... import codec, lifecycle
from ...errors import (
    JobServerError,
    SchemaError,
    StorageUnavailable,
    StoreError,
)
from ...lifecycle import Changes, NewRow, Program
from ...models import Job, JobState, NewJob, QueueInfo, Transition
from ..base import Enqueued, JobFilter, OnTransitions, node_name
from ..group_commit import (
    GatheredWrite,
    GroupCommitQueue,
    PendingWrite,
    open_gathered,
    transitions_of,
)
from ..jobstore import JOB_COLUMNS, JobStore
from .files import DatabaseFile, ProcessLock
from .statements import DIALECT, MIGRATIONS, row_to_job, run, sql_statements

log = logging.getLogger(__name__)
RUNNING, SUCCEEDED = JobState.RUNNING, JobState.SUCCEEDED
T = TypeVar("T")
Op = Callable[[sqlite3.Connection], Any]


_UNAVAILABLE_MARKERS = ("disk is full", "database is locked", "disk i/o error", "database is busy")


def _storage_error(exc: sqlite3.Error) -> StoreError:
    text = str(exc).lower()
    if any(marker in text for marker in _UNAVAILABLE_MARKERS):
        return StorageUnavailable(f"database cannot take writes now: {exc}")
    return StoreError(f"database error: {exc}")


def _apply_batch_to(
    conn: sqlite3.Connection, file: DatabaseFile, ops: list[Op]
) -> tuple[list[tuple[bool, Any]], list[int]]:
    file.check()
    return _apply_batch(conn, ops)


class _GroupCommitWriter(GroupCommitQueue[Op]):
    """Runs queued writes in shared transactions on the writer connection's thread."""

    def __init__(
        self, conn: aiosqlite.Connection, file: DatabaseFile, max_batch: int = 2_000
    ) -> None:
        super().__init__("jobserver-sqlite-writer", max_batch)
        self._conn = conn
        self._file = file
        self.batches = 0
        self.writes = 0

    async def _commit(self, batch: list[PendingWrite[Op]]) -> None:
        ops = [w.op for w in batch]
        began = time.perf_counter()
        try:
            outcomes, log_ids = await _on_db_thread(self._conn, _apply_batch_to, self._file, ops)
        except BaseException as exc:
            failure = _storage_error(exc) if isinstance(exc, sqlite3.Error) else exc
            self._fail(batch, failure)
            if not isinstance(exc, Exception):
                raise
            return
        self.batches += 1
        self.writes += len(batch)
        if self.observer is not None:
            self.observer(len(batch), time.perf_counter() - began)
        self._settle(batch, outcomes, log_ids)


class _CompletionBatch(GatheredWrite[tuple[int, str, bytes, float]]):
    """Jobs that succeeded (id, lease token, result, time), written by one statement."""

    CHUNK = 256  # rows a statement: 4 parameters each, far below SQLite's limit

    def __init__(self) -> None:
        super().__init__()
        self.changes = Changes()

    def __call__(self, conn: sqlite3.Connection) -> list[bool]:
        self.changes = changes = Changes()
        moved = changes.transitions
        done: set[int] = set()
        for start in range(0, len(self.items), self.CHUNK):
            chunk = self.items[start : start + self.CHUNK]
            rows = ", ".join(["(?, ?, ?, ?)"] * len(chunk))
            ended = conn.execute(
                f"""UPDATE jobs SET status = 'succeeded', result = v.column3,
                        completed_at = v.column4, progress = 1.0, progress_message = NULL,
                        error = NULL, lease_token = NULL, lease_expires_at = NULL
                    FROM (VALUES {rows}) AS v
                    WHERE jobs.id = v.column1 AND jobs.status = 'running'
                      AND jobs.lease_token = v.column2
                    RETURNING jobs.id, jobs.has_dependants, jobs.callback_url IS NOT NULL,
                        jobs.completed_at, jobs.task, jobs.queue, jobs.attempts, jobs.started_at""",
                [value for item in chunk for value in item],
            ).fetchall()
            # Most jobs have neither dependants nor a webhook: their completion is that
            # one statement.
            for job_id, has_dependants, has_callback, at, task, queue, attempt, began in ended:
                done.add(job_id)
                moved.append(
                    Transition(
                        job_id, task, queue, RUNNING, SUCCEEDED, "succeeded", attempt, at, began
                    )
                )
                if has_dependants:
                    run(conn, lifecycle.after_success(job_id, at, changes))
                if has_callback:
                    run(conn, lifecycle.queue_webhooks([job_id], at, changes))
        return [item[0] in done for item in self.items]


class _StepBatch(GatheredWrite[tuple[Any, ...]]):
    """Durable steps kept (durable.py): (job id, lease token, seq, name, kind, status, result,
    started_at, ended_at) each, written by one statement, as completions are; each answer
    says whether the lease still held. The jobs whose step went in are marked has_steps."""

    CHUNK = 100  # rows a statement: 9 parameters each, far below SQLite's limit

    def __call__(self, conn: sqlite3.Connection) -> list[bool]:
        saved: set[tuple[int, int]] = set()
        for start in range(0, len(self.items), self.CHUNK):
            chunk = self.items[start : start + self.CHUNK]
            rows = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(chunk))
            kept = conn.execute(
                f"""INSERT INTO job_steps
                        (job_id, seq, name, kind, status, result, attempt, started_at, ended_at)
                    SELECT v.column1, v.column3, v.column4, v.column5, v.column6, v.column7,
                        jobs.attempts, v.column8, v.column9
                    FROM (VALUES {rows}) AS v
                    JOIN jobs ON jobs.id = v.column1 AND jobs.status = 'running'
                        AND jobs.lease_token = v.column2
                    WHERE true  -- (SQLite needs a WHERE before an upsert's ON CONFLICT)
                    ON CONFLICT (job_id, seq) DO UPDATE SET status = excluded.status,
                        result = excluded.result, attempt = excluded.attempt,
                        ended_at = excluded.ended_at
                    RETURNING job_id, seq""",
                [value for item in chunk for value in item],
            ).fetchall()
            saved.update(kept)
        if saved:
            conn.execute(
                "UPDATE jobs SET has_steps = TRUE"
                " WHERE id IN (SELECT value FROM json_each(?)) AND NOT has_steps",
                [codec.dumps(sorted({job_id for job_id, _ in saved})).decode()],
            )
        return [(item[0], item[2]) in saved for item in self.items]


class _UnlimitedQueues:
    """Queues known to exist, committed, with no max depth: an enqueue into one of them skips
    registering and checking the queue. Changed on the event loop only: learned after the
    commit that found them, forgotten before a write that may give one a max depth. The epoch
    keeps a commit that read a queue's old settings from teaching them back afterwards."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.epoch = 0

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def learn(self, names: Collection[str], epoch: int) -> None:
        if epoch == self.epoch:
            self.names.update(names)

    def forget(self, name: str) -> None:
        self.names.discard(name)
        self.epoch += 1


class _PlainInsertBatch(GatheredWrite[NewRow]):
    """Single plain jobs (no keys, no dependencies) into queues known to have no max depth,
    inserted by one statement: one step out of Python for all of them, not one a job.
    Each item's answer is its Enqueued, or the error that refused it alone."""

    atomic = True  # refuses no item by raising: no savepoint around it (see _apply_batch)

    def __init__(self, unlimited: _UnlimitedQueues) -> None:
        super().__init__()
        self._unlimited = unlimited  # read on the database thread, when the insert runs
        self._epoch = unlimited.epoch
        self.found_unlimited: list[str] = []
        self.changes = Changes()

    def committed(self) -> None:
        # queues this write registered with no max depth are known so from now on
        self._unlimited.learn(self.found_unlimited, self._epoch)

    def __call__(self, conn: sqlite3.Connection) -> list[Enqueued | Exception]:
        rows = self.items
        self.changes = changes = Changes()
        if all(r.queue in self._unlimited for r in rows):
            try:
                return list(run(conn, lifecycle.insert_plain(rows, changes)))
            except (sqlite3.IntegrityError, ValueError, TypeError):
                pass  # one row refused undoes them all: find which, one by one
        # A queue's max depth was set since (or a row is refused): each job on its own.
        answers: list[Enqueued | Exception] = []
        for r in rows:
            conn.execute("SAVEPOINT item")
            try:
                self.found_unlimited.extend(run(conn, lifecycle.admit([r], self._unlimited)))
                answers.extend(run(conn, lifecycle.insert_plain([r], changes)))
            except (JobServerError, sqlite3.IntegrityError, ValueError, TypeError) as exc:
                conn.execute("ROLLBACK TO item")
                answers.append(exc)
            conn.execute("RELEASE item")
        return answers


def _apply_batch(
    conn: sqlite3.Connection, ops: list[Op]
) -> tuple[list[tuple[bool, Any]], list[int]]:
    """On the database thread: every op in one transaction, each in its own savepoint, then
    the event-log rows of what they moved; returns each op's outcome and the log rows' ids."""
    outcomes: list[tuple[bool, Any]] = []
    alone = len(ops) == 1  # a lone write needs no savepoint: its refusal rolls back everything
    conn.execute("BEGIN IMMEDIATE")
    try:
        for op in ops:
            # An atomic op's only write is one statement, which SQLite undoes alone if it fails.
            savepoint = not alone and not getattr(op, "atomic", False)
            if savepoint:
                conn.execute("SAVEPOINT op")
            try:
                value = op(conn)
            except (JobServerError, sqlite3.IntegrityError, ValueError, TypeError) as exc:
                # This write alone is refused, with whatever it had done; the rest go on.
                if savepoint:
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                outcomes.append((False, exc))
                continue
            if savepoint:
                conn.execute("RELEASE op")
            outcomes.append((True, value))
        log_ids: list[int] = []
        if alone and not outcomes[0][0]:
            conn.execute("ROLLBACK")
        else:
            moved = transitions_of(ops, outcomes)
            if moved:
                log_ids = run(conn, lifecycle.log_events(moved))
            conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return outcomes, log_ids


async def _on_db_thread(conn: aiosqlite.Connection, fn: Callable[..., T], *args: Any) -> T:
    """Run `fn(sqlite3_connection, *args)` on the connection's own thread: one await in all.

    aiosqlite's public calls cost a thread hop each; its `_execute` runs a whole function
    there, which is what group commit needs. pyproject pins the aiosqlite versions it is tested on.
    """
    raw = conn._conn
    result: T = await conn._execute(fn, raw, *args)  # type: ignore[no-untyped-call]
    return result


class SQLiteStore(JobStore):
    """The default store: one SQLite file in WAL mode, owned by one process at a time."""

    exclusive = True  # one process owns the file (its lock)
    dialect = DIALECT

    def __init__(
        self, path: str | os.PathLike[str], *, durability: str = "full", busy_timeout_ms: int = 5000
    ) -> None:
        self.busy_timeout_ms = int(busy_timeout_ms)  # how long to wait for another process's lock
        if durability not in ("full", "normal"):
            raise ValueError("durability must be 'full' or 'normal'")
        self.path = Path(path)
        self.durability = durability
        self.node = node_name()  # written on each job it claims: the history's `node`
        self._writer_conn: aiosqlite.Connection | None = None
        self._reader_conn: aiosqlite.Connection | None = None
        self._writer: _GroupCommitWriter | None = None
        self._lock = ProcessLock(f"{self.path}-lock")
        self._turn = itertools.count()  # which queue goes first in a claim: rotates for fairness
        self.commit_observer: Callable[[int, float], None] | None = None
        self._on_due: list[Callable[[], None]] = []
        self._on_transitions: list[OnTransitions] = []
        self._completions: _CompletionBatch | None = None
        self._steps: _StepBatch | None = None
        self._inserts: _PlainInsertBatch | None = None
        self._unlimited_queues = _UnlimitedQueues()

    # -- opening and closing ----------------------------------------------------------------------
    async def open(self) -> None:
        self._lock.take()
        try:
            self._writer_conn = await self._connect()
            await _on_db_thread(self._writer_conn, self._configure_writer)
            await _on_db_thread(self._writer_conn, _migrate)
            self._reader_conn = await self._connect()
            await _on_db_thread(self._reader_conn, _configure_reader)
        except BaseException:
            await self._close_connections()
            self._lock.drop()
            raise
        self._writer = _GroupCommitWriter(self._writer_conn, DatabaseFile.of(self.path))
        # looked up at each commit, so an observer set after open() is told too
        self._writer.observer = lambda writes, s: (
            self.commit_observer and self.commit_observer(writes, s)
        )
        self._writer.on_commit = self._committed
        self._writer.start()

    async def close(self) -> None:
        if self._writer is not None:
            await self._writer.close()
            self._writer = None
        if self._writer_conn is not None:
            # A failed checkpoint loses nothing: the WAL is replayed at the next open.
            with contextlib.suppress(sqlite3.Error):
                await _on_db_thread(self._writer_conn, _checkpoint)
        await self._close_connections()
        self._lock.drop()

    def subscribe(
        self,
        on_due: Callable[[], None],
        on_transitions: OnTransitions,
    ) -> None:
        """One process owns the file: it hears its own committed transitions, and when
        dependants or webhook deliveries became due."""
        self._on_due.append(on_due)
        self._on_transitions.append(on_transitions)

    def _committed(self, changed: list[Changes], log_ids: list[int]) -> None:
        """A batch committed: publish its transitions, in order; wake for what became due."""
        transitions = self._publish(changed, log_ids)
        ended = [t.job_id for t in transitions if t.reason == "dependency_failed"]
        if ended:
            log.info("ended because a job they depend on did not succeed: %s", ended)
        if any(changes.due for changes in changed):
            for on_due in self._on_due:
                on_due()

    @property
    def writer_stats(self) -> tuple[int, int]:
        """(transactions committed, writes in them): shows group commit at work."""
        if self._writer is None:
            return (0, 0)
        return (self._writer.batches, self._writer.writes)

    async def _connect(self) -> aiosqlite.Connection:
        try:
            conn = await aiosqlite.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise SchemaError(f"cannot open database {self.path}: {exc}") from exc
        return conn

    async def _close_connections(self) -> None:
        for conn in (self._reader_conn, self._writer_conn):
            if conn is not None:
                await conn.close()
        self._reader_conn = None
        self._writer_conn = None

    def _configure_writer(self, conn: sqlite3.Connection) -> None:
        try:
            if conn.execute("PRAGMA page_count").fetchone()[0] == 0:
                # A new file: let pruning hand pages back (PRAGMA incremental_vacuum).
                conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise SchemaError(f"{self.path} is not a usable SQLite database: {exc}") from exc
        if str(mode).lower() != "wal":
            raise SchemaError(f"{self.path}: could not switch to WAL mode (got {mode})")
        conn.execute(f"PRAGMA synchronous={'FULL' if self.durability == 'full' else 'NORMAL'}")
        conn.execute(f"PRAGMA busy_timeout={self.busy_timeout_ms}")
        conn.execute("PRAGMA temp_store=MEMORY")
        conn.execute("PRAGMA cache_size=-16000")

    def _reader(self) -> aiosqlite.Connection:
        if self._reader_conn is None:
            raise StorageUnavailable("the store is not open")
        return self._reader_conn

    async def _write(self, op: Op) -> Any:
        return await self._put(op)

    def _put(self, op: Op) -> asyncio.Future[Any]:
        """Queue a write now; the future holds its result once committed."""
        if self._writer is None:
            raise StorageUnavailable("the store is not open")
        return self._writer.put(op)

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await _on_db_thread(self._reader(), fn, *args)
        except sqlite3.Error as exc:
            raise _storage_error(exc) from exc

    # -- enqueue and read -------------------------------------------------------------------------
    async def enqueue(self, jobs: Sequence[NewJob], now: float) -> list[Enqueued]:
        rows = [lifecycle.new_row(j, now) for j in jobs]
        if len(rows) == 1 and self._gatherable(rows[0]):
            return [await self._join_inserts(rows[0])]
        changes = Changes()
        known = self._unlimited_queues
        epoch = known.epoch

        def op(conn: sqlite3.Connection) -> tuple[list[Enqueued], list[str]]:
            return run(conn, lifecycle.enqueue(rows, now, known, changes))

        if len(rows) == 1 and rows[0].plain:
            # One INSERT, and admit writes nothing before it could refuse: if the insert
            # fails, SQLite undoes that statement alone, so no savepoint is needed.
            op.atomic = True  # type: ignore[attr-defined]
        op.changes = changes  # type: ignore[attr-defined]
        enqueued, unlimited = await self._write(op)
        known.learn(unlimited, epoch)  # committed: known from now on
        result: list[Enqueued] = enqueued
        return result

    def enqueue_gathered(self, job: NewJob, now: float) -> asyncio.Future[Enqueued] | None:
        row = lifecycle.new_row(job, now)
        return self._join_inserts(row) if self._gatherable(row) else None

    def _gatherable(self, row: NewRow) -> bool:
        """A plain job into a queue known to have no max depth: it joins the gathered insert."""
        return row.plain and row.queue in self._unlimited_queues

    def _join_inserts(self, row: NewRow) -> asyncio.Future[Enqueued]:
        # Single enqueues that arrive before the writer takes them share one op, one INSERT:
        # under many concurrent clients a statement each cost more in thread hand-offs than
        # in SQLite itself (as completions do).
        batch = self._inserts = open_gathered(
            self._inserts, lambda: _PlainInsertBatch(self._unlimited_queues), self._put
        )
        return batch.join_soon(row)

    async def list_jobs(
        self, flt: JobFilter, limit: int, before_id: int | None = None
    ) -> list[Job]:
        clauses: list[str] = []
        params: list[Any] = []
        index = ""
        if flt.status is not None:
            clauses.append("status = ?")
            params.append(str(flt.status))
            # Running jobs are in jobs_lease, the others in jobs_status; SQLite uses a partial
            # index only for a query that states the index's condition.
            if flt.status == JobState.RUNNING:
                index = "INDEXED BY jobs_lease"
                clauses.append("status = 'running'")
            else:
                clauses.append("status <> 'running'")
        if flt.queue is not None:
            clauses.append("queue = ?")
            params.append(flt.queue)
        if flt.task is not None:
            clauses.append("task = ?")
            params.append(flt.task)
        pattern = flt.search_pattern()
        if pattern is not None:
            clauses.append("(lower(task) LIKE ? ESCAPE '\\' OR lower(queue) LIKE ? ESCAPE '\\')")
            params += [pattern, pattern]
        if before_id is not None:
            clauses.append("id < ?")
            params.append(before_id)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT {JOB_COLUMNS} FROM jobs {index} {where} ORDER BY id DESC LIMIT ?"
        params.append(limit)

        def fn(conn: sqlite3.Connection) -> list[Job]:
            return [row_to_job(r) for r in conn.execute(sql, params)]

        return await self._read(fn)

    async def count_by_status(self) -> dict[str, int]:
        def fn(conn: sqlite3.Connection) -> dict[str, int]:
            counts = {s.value: 0 for s in JobState}
            for status, n in conn.execute(  # jobs_status, which leaves out running jobs
                "SELECT status, count(*) FROM jobs WHERE status <> 'running' GROUP BY status"
            ):
                counts[status] = n
            (counts["running"],) = conn.execute(
                "SELECT count(*) FROM jobs INDEXED BY jobs_lease WHERE status = 'running'"
            ).fetchone()
            return counts

        return await self._read(fn)

    # -- the worker's side -----------------------------------------------------------------------
    async def complete(self, job_id: int, token: str, result: bytes, now: float) -> JobState | None:
        # Completions that arrive before the writer takes them share one op, one statement:
        # per-row statements cost more in thread hand-offs than in SQLite itself.
        batch = self._completions = open_gathered(self._completions, _CompletionBatch, self._put)
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
        """Run a lifecycle program as one write; its Changes are published once committed."""
        changes = Changes()

        def op(conn: sqlite3.Connection) -> T:
            return run(conn, program(changes))

        op.changes = changes  # type: ignore[attr-defined]  # published once committed
        if claims:
            op.claims = True  # type: ignore[attr-defined]
        result: T = await self._write(op)
        return result

    async def _look(self, program: Program[T]) -> T:
        return await self._read(run, program)

    async def configure_queue(self, name: str, changes: dict[str, Any], now: float) -> QueueInfo:
        self._unlimited_queues.forget(name)  # it may get a max depth: enqueues check it again
        return await super().configure_queue(name, changes, now)

    def _json(self, stored: Any) -> Any:
        return None if stored is None else codec.loads(stored)

    # -- retention ------------------------------------------------------------------------------
    async def prune(self, finished_before: float, failed_before: float, limit: int) -> int:
        """Delete up to `limit` old terminal jobs and dead letters; returns how many went."""

        def op(conn: sqlite3.Connection) -> int:
            deleted = 0
            for statuses, before in (
                (("succeeded", "cancelled"), finished_before),
                (("failed",), failed_before),
            ):
                # Oldest first by id, among the jobs created before `before` (no later one
                # can have ended before it): an index walk that stops there, not every
                # finished job.
                bound = _first_id_created_since(conn, before)
                gone: list[int] = []
                for status in statuses:
                    gone += [
                        r[0]
                        for r in conn.execute(
                            """DELETE FROM jobs WHERE id IN (
                                    SELECT id FROM jobs INDEXED BY jobs_status
                                    WHERE status = ? AND status <> 'running' AND id < ?
                                      AND completed_at < ?
                                    ORDER BY id LIMIT ?)
                                RETURNING id""",
                            (status, bound, before, limit - len(gone)),
                        ).fetchall()
                    ]
                run(conn, lifecycle.forget_jobs(gone))
                deleted += len(gone)
            deleted += conn.execute(
                "DELETE FROM dead_letters WHERE id IN"
                " (SELECT id FROM dead_letters WHERE failed_at < ? ORDER BY failed_at LIMIT ?)",
                (failed_before, limit),
            ).rowcount
            return deleted

        result: int = await self._write(op)
        return result

    async def reclaim_space(self, pages: int) -> None:
        """Give freed pages back to the file system, a few at a time (auto_vacuum=INCREMENTAL)."""

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(f"PRAGMA incremental_vacuum({int(pages)})").fetchall()

        await self._write(op)


# -- SQL run on the database thread -------------------------------------------------------------


def _configure_reader(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA busy_timeout=5000")
    conn.execute("PRAGMA query_only=ON")


def _checkpoint(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _migrate(conn: sqlite3.Connection) -> None:
    """Apply the numbered migrations this database has not seen, each in its own transaction."""
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version"
            " (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
        )
        current = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise SchemaError(f"not a usable jobserver database: {exc}") from exc
    latest = MIGRATIONS[-1][0]
    if current > latest:
        raise SchemaError(
            f"the database is at schema version {current}; this jobserver knows up to {latest}"
        )
    for version, sql in MIGRATIONS:
        if version <= current:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in sql_statements(sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (?, unixepoch())",
                (version,),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def _first_id_created_since(conn: sqlite3.Connection, since: float) -> int:
    """The lowest job id from which on every job was created at or after `since` (one past
    the highest id if none was), found by bisection: ids are given in creation order."""
    (lo,) = conn.execute("SELECT min(id) FROM jobs").fetchone()  # two seeks; min and max
    if lo is None:  # in one query would read the whole table
        return 0
    (hi,) = conn.execute("SELECT max(id) + 1 FROM jobs").fetchone()
    while lo < hi:
        mid = (lo + hi) // 2
        found, created_at = conn.execute(
            "SELECT id, created_at FROM jobs WHERE id >= ? ORDER BY id LIMIT 1", (mid,)
        ).fetchone()
        if created_at < since:
            lo = min(found + 1, hi)
        else:
            hi = mid
    return int(lo)
