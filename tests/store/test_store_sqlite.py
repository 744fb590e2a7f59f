"""What only the SQLite store has: its schema's CHECKs, migrations, the file lock, group commit."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from jobserver import lifecycle
from jobserver.errors import DatabaseInUse, QueueFull, SchemaError
from jobserver.models import JobState, NewJob
from jobserver.store.base import JobFilter
from jobserver.store.sqlite import SQLiteStore
from jobserver.store.sqlite.driver import _on_db_thread, sql_statements
from jobserver.store.sqlite.statements import DIALECT, MIGRATIONS, run

T0 = 1_800_000_000.0


@pytest.fixture
async def db(tmp_path: Path) -> Path:
    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    await store.open()
    await store.close()
    return path


BASE = (
    "INSERT INTO jobs (task, queue, args, kwargs, priority, status, attempts, max_retries,"
    " created_at, run_at, started_at, completed_at, lease_token, lease_expires_at)"
    " VALUES ('t', 'q', X'5B5D', X'7B7D', 0, ?, ?, 3, 0, 0, ?, ?, ?, ?)"
)


@pytest.mark.parametrize(
    "row",
    [
        ("bogus", 0, None, None, None, None),  # unknown state
        ("running", 1, 0.0, None, None, None),  # running without a lease
        ("pending", 0, None, None, "tok", 5.0),  # a lease on a job that is not running
        ("running", 0, 0.0, None, "tok", 5.0),  # running without a counted attempt
        ("succeeded", 1, 0.0, None, None, None),  # terminal without completed_at
        ("pending", 0, None, 3.0, None, None),  # completed_at on a live job
        ("pending", 5, None, None, None, None),  # more attempts than max_retries + 1
        ("succeeded", 0, None, 1.0, None, None),  # succeeded without ever running
    ],
)
async def test_schema_refuses_impossible_rows(db: Path, row: tuple[object, ...]) -> None:
    conn = sqlite3.connect(db)
    try:
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute(BASE, row)
        # and a possible row goes in, so the statement itself is sound
        conn.execute(BASE, ("pending", 0, None, None, None, None))
    finally:
        conn.close()


async def test_migrations_record_the_schema_version_once(db: Path) -> None:
    store = SQLiteStore(db)
    await store.open()  # a second open applies nothing again
    await store.close()
    conn = sqlite3.connect(db)
    try:
        versions = [v for (v,) in conn.execute("SELECT version FROM schema_version")]
        assert versions == [v for v, _ in MIGRATIONS]
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


async def test_steps_kept_before_the_child_steps_migration_survive_it(tmp_path: Path) -> None:
    # 0009 rebuilds job_steps to widen its CHECKs (SQLite cannot alter one): what a database
    # at version 8 kept must come through, and the new kinds and statuses go in.
    db = tmp_path / "v8.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at REAL)")
    for version, sql in MIGRATIONS:
        if version > 8:
            break
        for statement in sql_statements(sql):
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version VALUES (?, 0)", (version,))
    kept = (7, 0, "charge", "run", "done", b'"ok"', 1, 1.0, 2.0)
    conn.execute("INSERT INTO job_steps VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", kept)
    conn.close()
    store = SQLiteStore(db)
    await store.open()
    await store.close()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT * FROM job_steps").fetchall() == [kept]
        child = (7, 1, "child:x", "child", "failed", b"{}", 1, 3.0, 4.0)
        conn.execute("INSERT INTO job_steps VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", child)
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("INSERT INTO job_steps VALUES (7, 2, 'x', 'nap', 'done', NULL, 1, 0, 0)")
    finally:
        conn.close()


async def test_a_database_from_a_newer_jobserver_is_refused(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO schema_version VALUES (999, 0)")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaError, match="999"):
        await SQLiteStore(db).open()


async def test_a_file_that_is_not_a_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    junk = b"this is not sqlite" * 100
    path.write_bytes(junk)
    with pytest.raises(SchemaError):
        await SQLiteStore(path).open()
    assert path.read_bytes() == junk


async def test_a_second_store_on_the_same_file_is_refused(db: Path) -> None:
    first = SQLiteStore(db)
    await first.open()
    try:
        with pytest.raises(DatabaseInUse):
            await SQLiteStore(db).open()
    finally:
        await first.close()
    second = SQLiteStore(db)  # free again once the first has closed
    await second.open()
    await second.close()


async def test_writes_that_arrive_together_share_a_transaction(db: Path) -> None:
    store = SQLiteStore(db)
    await store.open()
    try:
        await asyncio.gather(*[store.enqueue([NewJob(task="t")], T0) for _ in range(300)])
        batches, writes = store.writer_stats
        assert writes == 300
        assert batches < 100  # group commit: many enqueues per fsync
        assert (await store.count_by_status())["pending"] == 300
    finally:
        await store.close()


async def test_durability_setting_reaches_sqlite(tmp_path: Path) -> None:
    for durability, expected in (("full", 2), ("normal", 1)):
        store = SQLiteStore(tmp_path / f"{durability}.db", durability=durability)
        await store.open()
        try:
            level = await store._read(lambda c: c.execute("PRAGMA synchronous").fetchone()[0])
            # PRAGMA synchronous is per connection; the writer's is what matters
            assert store._writer_conn is not None
            writer_level = await store._writer_conn.execute("PRAGMA synchronous")
            row = await writer_level.fetchone()
            assert row is not None and row[0] == expected
            assert level in (1, 2)
        finally:
            await store.close()
    with pytest.raises(ValueError):
        SQLiteStore(tmp_path / "x.db", durability="sometimes")


async def test_a_claim_among_many_delayed_jobs_reads_only_the_due_ones(db: Path) -> None:
    """With most of a queue delayed, finding its few due jobs must not walk the rest: SQLite
    virtual-machine steps are counted, so the check holds on any machine."""
    store = SQLiteStore(db)
    await store.open()
    try:
        delayed = [NewJob(task="t", priority=i % 3, run_at=T0 + 3600) for i in range(20_000)]
        await store.enqueue(delayed, T0)
        due = await store.enqueue([NewJob(task="t", priority=-1) for _ in range(5)], T0)
    finally:
        await store.close()
    conn = sqlite3.connect(db)
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    conn.set_progress_handler(count, 100)
    ids = run(conn, lifecycle.due_ids("default", T0, 64, DIALECT))
    conn.set_progress_handler(None, 0)
    assert ids == [r.job.id for r in due]
    assert steps < 50  # under 5,000 steps; walking the 20,000 delayed jobs takes over 100,000
    conn.close()


async def test_a_claim_among_many_keys_reads_only_what_it_takes(db: Path) -> None:
    """Issue 21: claiming does not scan the keys. 20,000 keys with a due job each, key limits
    on (so running counts, buckets and overrides are read), one key with its own weight: a
    claim of 64 costs a few thousand virtual-machine steps, not a walk of 20,000 keys (an
    overrides read by primary key did that, and end-to-end fell to 0.37x)."""
    store = SQLiteStore(db)
    await store.open()
    try:
        await store.configure_queue("q", {"key_concurrency_limit": 2, "key_rate_limit": 5.0}, T0)
        await store.configure_key("q", "k7", {"weight": 3.0}, T0)
        jobs = [NewJob(task="t", queue="q", fairness_key=f"k{i}") for i in range(20_000)]
        await store.enqueue(jobs, T0)
        await store.claim(64, T0, 30)  # some keys running, some buckets drawn
    finally:
        await store.close()
    conn = sqlite3.connect(db, isolation_level=None)
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    conn.set_progress_handler(count, 100)
    conn.execute("BEGIN")
    program = lifecycle.claim(64, T0, "tok", T0 + 30, 0, "n", DIALECT, lifecycle.Changes())
    claimed = run(conn, program)
    conn.execute("ROLLBACK")
    conn.set_progress_handler(None, 0)
    assert len(claimed) == 64 and len({j.fairness_key for j in claimed}) == 64
    assert steps < 1000  # about 31,000 steps; reading 20,000 key rows took 290,000
    conn.close()


async def test_a_version_1_database_is_migrated_with_its_jobs(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(
        "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
    )
    for statement in MIGRATIONS[0][1].split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("INSERT INTO schema_version VALUES (1, 0)")
    conn.execute(BASE, ("pending", 0, None, None, None, None))
    conn.execute(BASE, ("running", 1, 0.0, None, "tok", 5.0))
    conn.execute(BASE, ("succeeded", 1, 0.0, 1.0, None, None))
    conn.close()
    store = SQLiteStore(path)
    await store.open()
    try:
        counts = await store.count_by_status()
        assert (counts["pending"], counts["running"], counts["succeeded"]) == (1, 1, 1)
        for state in (JobState.PENDING, JobState.RUNNING, JobState.SUCCEEDED):
            [job] = await store.list_jobs(JobFilter(status=state), 10)
            assert job.status == state
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    try:
        indexes = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
        assert "jobs_status" in indexes
        assert not {"jobs_finished", "jobs_next_due"} & indexes
    finally:
        conn.close()


async def test_statements_that_filter_by_status_read_an_index(db: Path) -> None:
    """A partial index serves only a query that states its condition: a query that forgot it
    reads every job. Every statement on jobs that filters by status, run by the listings,
    counts, claims, retention and queue limits, is checked against its plan."""
    store = SQLiteStore(db)
    await store.open()
    seen: list[str] = []
    try:
        for conn in (store._writer_conn, store._reader_conn):
            assert conn is not None
            await _on_db_thread(conn, lambda c: c.set_trace_callback(seen.append))
        await store.configure_queue("capped", {"max_depth": 100}, T0)
        await store.enqueue([NewJob(task="t"), NewJob(task="t", queue="capped")], T0)
        await store.enqueue([NewJob(task="t", run_at=T0 + 60, deadline=T0 + 99)], T0)
        [job, *_] = await store.claim(2, T0, 30)
        assert job.lease_token is not None
        await store.complete(job.id, job.lease_token, b"1", T0)
        await store.next_wake_at(T0)
        for state in JobState:
            await store.list_jobs(JobFilter(status=state), 10)
            await store.list_jobs(JobFilter(status=state, queue="capped"), 10, before_id=99)
        await store.count_by_status()
        await store.list_queues(T0)
        await store.prune(T0 + 10, T0 + 10, 100)
        await store.rescue_expired(T0 + 3600)
        statements = {s for s in seen if " jobs" in s and "status" in s.partition("WHERE")[2]}
        assert len(statements) > 10
        plans = {}
        for sql in statements:
            explain = f"EXPLAIN QUERY PLAN {sql}"
            rows = await store._read(lambda c, q=explain: c.execute(q).fetchall())
            plans[sql] = [r[3] for r in rows]
        whole_table = {sql: plan for sql, plan in plans.items() if "SCAN jobs" in plan}
        assert whole_table == {}
    finally:
        await store.close()


async def test_a_max_depth_set_while_an_enqueue_is_in_flight_holds(db: Path) -> None:
    """The enqueue read the queue as having no max depth; its commit must not teach that
    back after the max depth was set (the next enqueue would skip the check)."""
    store = SQLiteStore(db)
    await store.open()
    try:
        first = asyncio.ensure_future(store.enqueue([NewJob(task="t", queue="q")], T0))
        await asyncio.sleep(0)  # its write is queued (and may be running)
        configured = asyncio.ensure_future(store.configure_queue("q", {"max_depth": 1}, T0))
        await first
        await configured
        with pytest.raises(QueueFull):
            await store.enqueue([NewJob(task="t", queue="q")], T0)
        assert (await store.count_by_status())["pending"] == 1
    finally:
        await store.close()
