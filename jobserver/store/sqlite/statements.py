"""How the SQLite driver runs lifecycle programs: each named statement of queries.sql on a
sqlite3 connection (inside the writer's transaction, on its thread), and the statements whose
shape is SQLite's own (a multi-row VALUES for plain inserts; a claim that reads back only
what it did not set)."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from typing import Any, TypeVar

from ... import codec, lifecycle
from ...lifecycle import NewRow, Program, Sql
from ...models import Backoff, Job, JobState
from .. import queries
from ..jobstore import JOB_COLUMNS, job_from_row

T = TypeVar("T")

MIGRATIONS = queries.migrations("sqlite")
DIALECT = lifecycle.Dialect(walk_priority_levels=True, lock_limited_queues=False)


def row_to_job(r: Sequence[Any]) -> Job:
    return job_from_row(r, codec.loads)


# What a claim reads back: every column but those the claim itself sets, or that a running
# job's CHECKs fix (completed_at NULL, blocked_by 0). Seven columns and an enum lookup fewer a
# job, on the writer's thread: about 1 us of its 7 (measured on 64-job claims).
CLAIMED_COLUMNS = (
    "id, task, queue, args, kwargs, priority, attempts, max_retries, timeout_s, backoff,"
    " created_at, run_at, result, error, progress, progress_message, idempotency_key, deadline,"
    " unique_key, depends_on, pass_result, on_dependency_failure, callback_url, workflow_id,"
    " traceparent, fairness_key, has_steps"
)


def claimed_job(r: Sequence[Any], now: float, token: str, expires: float) -> Job:
    loads = codec.loads
    return Job(
        id=r[0],
        task=r[1],
        queue=r[2],
        args=loads(r[3]),
        kwargs=loads(r[4]),
        priority=r[5],
        status=JobState.RUNNING,
        attempts=r[6],
        max_retries=r[7],
        timeout_s=r[8],
        backoff=Backoff(**loads(r[9])) if r[9] is not None else None,
        created_at=r[10],
        run_at=r[11],
        started_at=now,
        completed_at=None,
        result=loads(r[12]) if r[12] is not None else None,
        error=loads(r[13]) if r[13] is not None else None,
        progress=r[14],
        progress_message=r[15],
        lease_token=token,
        lease_expires_at=expires,
        cancel_requested=False,
        idempotency_key=r[16],
        deadline=r[17],
        unique_key=r[18],
        depends_on=loads(r[19]) if r[19] is not None else [],
        blocked_by=0,
        pass_result=bool(r[20]),
        on_dependency_failure=r[21],
        callback_url=r[22],
        workflow_id=r[23],
        traceparent=r[24],
        fairness_key=r[25],
        has_steps=bool(r[26]),
    )


def sql_statements(script: str) -> list[str]:
    """A script's statements, its `--` comments left out (they may hold a `;`)."""
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    return [text for text in "\n".join(lines).split(";") if text.strip()]


def _statements(sql: str) -> list[tuple[str, int]]:
    """A named query's statements, with `$N` as SQLite's `?N` and how many parameters each
    takes (sqlite3 wants exactly that many)."""
    found = []
    for text in sql_statements(sql):
        if text:
            numbers = [int(n) for n in re.findall(r"\$(\d+)", text)]
            found.append((re.sub(r"\$(\d+)", r"?\1", text), max(numbers, default=0)))
    return found


QUERIES = {
    name: _statements(sql)
    for name, sql in queries.load(
        "sqlite", job_columns=JOB_COLUMNS, claimed_columns=CLAIMED_COLUMNS
    ).items()
}


def run(conn: sqlite3.Connection, program: Program[T]) -> T:
    """Run a lifecycle program on this connection (inside the caller's transaction)."""
    try:
        statement = next(program)
        while True:
            statement = program.send(_execute(conn, statement))
    except StopIteration as stop:
        result: T = stop.value
        return result


_PLAIN_HEAD, _PLAIN_VALUES = QUERIES["insert_plain"][0][0].split("VALUES")
_PLAIN_ROW = re.sub(r"\?\d+", "?", _PLAIN_VALUES).strip()  # a row's own `?`s, in order
PLAIN_CHUNK = 500  # rows a statement: 18 parameters each, far below SQLite's 32,766


def _insert_plain(conn: sqlite3.Connection, rows: Sequence[NewRow]) -> list[int]:
    """Plain jobs, all or none, by one multi-row INSERT per PLAIN_CHUNK rows: values bound in
    C, no step out of SQLite per row (a statement per row handed the interpreter lock back
    and forth each time; a JSON parameter took SQLite twice as long to take apart)."""
    chunks = [rows[i : i + PLAIN_CHUNK] for i in range(0, len(rows), PLAIN_CHUNK)]
    several = len(chunks) > 1
    if several:  # one statement undoes itself if it fails; several need a savepoint
        conn.execute("SAVEPOINT plain")
    try:
        for chunk in chunks:
            conn.execute(
                f"{_PLAIN_HEAD} VALUES {', '.join([_PLAIN_ROW] * len(chunk))}",
                [r.values[i] for r in chunk for i in lifecycle.PLAIN_INDEXES],
            )
    except BaseException:
        if several:
            conn.execute("ROLLBACK TO plain")
            conn.execute("RELEASE plain")
        raise
    if several:
        conn.execute("RELEASE plain")
    # This connection is the only writer and ids are AUTOINCREMENT: the rows got consecutive
    # ids ending at the last one.
    (last,) = conn.execute("SELECT last_insert_rowid()").fetchone()
    return list(range(last - len(rows) + 1, last + 1))


def _execute(conn: sqlite3.Connection, statement: Sql) -> Any:
    steps = QUERIES[statement.name]
    if statement.mode == "insert_plain":
        return _insert_plain(conn, statement.params)
    if statement.mode == "many":
        conn.executemany(steps[0][0], statement.params)
        return None
    params = [
        codec.dumps(p).decode() if isinstance(p, list) else p  # ids, read by json_each
        for p in statement.params
    ]
    for sql, n in steps[:-1]:
        conn.execute(sql, params[:n])
    sql, n = steps[-1]
    cursor = conn.execute(sql, params[:n])
    mode = statement.mode
    if mode == "count":
        return cursor.rowcount
    if mode == "rows":
        return cursor.fetchall()
    if mode == "jobs":
        return [row_to_job(r) for r in cursor.fetchall()]
    if mode == "claimed":  # now, token, expires: what the claim set (CLAIMED_COLUMNS)
        now, token, expires = statement.params[:3]
        return [claimed_job(r, now, token, expires) for r in cursor.fetchall()]
    first = cursor.fetchone()
    cursor.fetchall()  # a RETURNING statement finishes its changes once read to the end
    if mode == "row":
        return first
    if mode == "value":
        return None if first is None else first[0]
    return None if first is None else row_to_job(first)  # mode == "job"
