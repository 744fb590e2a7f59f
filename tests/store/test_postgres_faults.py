"""PostgreSQL faults a node must ride out: its sessions terminated under load, its LISTEN
connection lost, other nodes racing it for the same keys, the schema created by many nodes at
once, a database that cannot take writes. Each against the real server (JOBSERVER_TEST_PG)."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from jobserver.errors import StorageUnavailable
from jobserver.models import NewJob

from ..conftest import PG_DSN, PG_SKIP

pytestmark = pytest.mark.skipif(not PG_DSN, reason=PG_SKIP)

T0 = 1_800_000_000.0

if PG_DSN:
    import asyncpg

    from jobserver.store.postgres import PostgresStore


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    name = f"test_{secrets.token_hex(6)}"
    yield name
    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
async def nodes(schema: str) -> AsyncIterator[Callable[[], Awaitable[Any]]]:
    """Open PostgresStores ("nodes") on one schema; all closed at the end."""
    opened: list[Any] = []

    async def node() -> Any:
        store = PostgresStore(PG_DSN or "", schema=schema)
        await store.open()
        opened.append(store)
        return store

    yield node
    for store in opened:
        await store.close()


async def terminate(schema: str, where: str = "true") -> int:
    """pg_terminate_backend on the sessions of the nodes on `schema` that match `where`."""
    conn = await asyncpg.connect(PG_DSN)
    try:
        killed: int = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            f" WHERE application_name = $1 AND pid <> pg_backend_pid() AND ({where})",
            f"jobserver/{schema}",
        )
        return killed
    finally:
        await conn.close()


async def within(seconds: float, attempt: Callable[[], Awaitable[bool]]) -> None:
    deadline = time.monotonic() + seconds
    while not await attempt():
        assert time.monotonic() < deadline, f"not within {seconds} s"
        await asyncio.sleep(0.05)


async def test_a_node_writes_again_after_its_sessions_are_terminated_under_load(
    nodes: Callable[[], Awaitable[Any]], schema: str
) -> None:
    """Sessions killed mid-statement (pg_terminate_backend) left asyncpg in a state the
    writer did not catch (InternalClientError: cannot switch to state 15): its task ended
    silently and the node never wrote again. Writes in flight may be refused (503); every
    acknowledged job is stored, and the node writes again without a restart."""
    store = await nodes()
    acknowledged: list[int] = []
    refused: list[BaseException] = []
    stop = asyncio.Event()

    async def load(worker: int) -> None:  # enqueues (plain, keyed), claims and completions
        i = 0
        while not stop.is_set():
            i += 1
            try:
                if i % 3 == 0:
                    keyed = NewJob(task="t", idempotency_key=f"{worker}-{i}")
                    done = await store.enqueue([NewJob(task="t", args=[worker, i]), keyed], T0)
                else:
                    done = await store.enqueue([NewJob(task="t", args=[worker, i])], T0)
                    for job in await store.claim(5, T0, 30):
                        await store.complete(job.id, job.lease_token, b"1", T0)
                acknowledged.extend(e.job.id for e in done)
            except StorageUnavailable as exc:
                refused.append(exc)
                await asyncio.sleep(0.005)

    loaders = [asyncio.create_task(load(w)) for w in range(16)]
    try:
        await within(10, lambda: asyncio.sleep(0, len(acknowledged) > 100))
        for _ in range(40):  # terminated again and again, also while it reconnects
            await terminate(schema)
            await asyncio.sleep(0.03)
        before = len(acknowledged)
        await within(10, lambda: asyncio.sleep(0, len(acknowledged) > before + 100))
    finally:
        stop.set()
        _, stuck = await asyncio.wait(loaders, timeout=10)
        for task in stuck:
            task.cancel()
    assert not stuck, "writes still waiting: the writer is gone"
    [after] = await store.enqueue([NewJob(task="t", args=["after"])], T0)
    stored = {job.id for job in await _all_jobs(store)}
    assert set(acknowledged) | {after.job.id} <= stored
    assert refused and all(isinstance(e, StorageUnavailable) for e in refused)
    await store.check_writable()


async def _all_jobs(store: Any) -> list[Any]:
    from jobserver.store.base import JobFilter

    jobs: list[Any] = []
    before: int | None = None
    while True:
        page = await store.list_jobs(JobFilter(), 1000, before)
        if not page:
            return jobs
        jobs += page
        before = page[-1].id


async def test_listen_resumes_after_its_connection_is_lost(
    nodes: Callable[[], Awaitable[Any]], schema: str
) -> None:
    """Without LISTEN, another node's enqueue no longer wakes this one."""
    listener, other = await nodes(), await nodes()
    woken = asyncio.Event()
    listener.subscribe(woken.set, lambda transitions, log_ids: None)
    await other.enqueue([NewJob(task="t")], T0)
    await asyncio.wait_for(woken.wait(), 10)

    assert await terminate(schema, "query LIKE 'LISTEN%'") >= 2  # both nodes' listeners

    async def heard() -> bool:
        woken.clear()
        await other.enqueue([NewJob(task="t")], T0)
        try:
            await asyncio.wait_for(woken.wait(), 0.5)
        except TimeoutError:
            return False
        return True

    await within(15, heard)


@pytest.mark.parametrize("key", ["idempotency_key", "unique_key"])
async def test_the_same_key_sent_to_three_nodes_at_once_is_one_job(
    nodes: Callable[[], Awaitable[Any]], key: str
) -> None:
    """Each node looked the key up, found none and inserted: the unique index refused two of
    them (UniqueViolationError, a 500 over HTTP). Now every node answers with the one job."""
    three = [await nodes() for _ in range(3)]
    for round_ in range(30):
        job = NewJob(task="t", args=[round_], **{key: f"k{round_}"})
        answers = await asyncio.gather(*(n.enqueue([job], T0) for n in three))
        ids = {a[0].job.id for a in answers}
        assert len(ids) == 1, answers
        assert sum(a[0].created for a in answers) == 1


async def test_nodes_given_keys_in_opposite_order_neither_deadlock_nor_fail(
    nodes: Callable[[], Awaitable[Any]],
) -> None:
    """Two nodes inserting keys a, b and b, a wait for each other; PostgreSQL breaks the
    deadlock by rolling one transaction back. That write is run again, not refused."""
    first, second = await nodes(), await nodes()
    for round_ in range(4):  # each deadlock costs PostgreSQL's deadlock_timeout (1 s) to see
        keys = [f"r{round_}-{i}" for i in range(4)]
        forward = [NewJob(task="t", idempotency_key=k) for k in keys]
        backward = list(reversed(forward))
        a, b = await asyncio.gather(first.enqueue(forward, T0), second.enqueue(backward, T0))
        assert [e.job.id for e in a] == [e.job.id for e in reversed(b)]
        assert sum(e.created for e in a + b) == len(keys)


async def test_many_nodes_creating_the_schema_at_once_all_start(schema: str) -> None:
    stores = [PostgresStore(PG_DSN or "", schema=schema) for _ in range(12)]
    try:
        await asyncio.gather(*(s.open() for s in stores))
        [done] = await stores[0].enqueue([NewJob(task="t")], T0)
        assert await stores[-1].get_job(done.job.id) is not None
    finally:
        await asyncio.gather(*(s.close() for s in stores), return_exceptions=True)


async def test_readiness_is_a_write_a_read_only_database_refuses() -> None:
    """SELECT 1 succeeds in a read-only database (a standby after a failover, or
    default_transaction_read_only): /readyz must write to know. On a database of its own, so
    that the setting touches nothing else."""
    assert PG_DSN is not None
    database = f"jobserver_ro_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(PG_DSN)
    await admin.execute(f'CREATE DATABASE "{database}"')
    dsn = PG_DSN.rsplit("/", 1)[0] + f"/{database}"
    store = PostgresStore(dsn, schema="readonly")
    try:
        await store.open()
        await store.check_writable()
        await admin.execute(f'ALTER DATABASE "{database}" SET default_transaction_read_only = on')
        await _terminate_database(admin, database)  # new sessions take the setting
        # The first calls may fail on a killed session; once the pool has new ones, a probe
        # that only reads would pass: every one must fail while the database is read-only.
        for _ in range(20):
            with pytest.raises(StorageUnavailable):
                await store.check_writable()
        await admin.execute(f'ALTER DATABASE "{database}" RESET default_transaction_read_only')
        await _terminate_database(admin, database)

        async def writable() -> bool:
            try:
                await store.check_writable()
            except StorageUnavailable:
                return False
            return True

        await within(10, writable)
    finally:
        await store.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()


async def _terminate_database(admin: Any, database: str) -> None:
    await admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = $1 AND pid <> pg_backend_pid()",
        database,
    )


async def test_another_node_hears_each_end_with_what_an_event_needs(
    nodes: Callable[[], Awaitable[Any]],
) -> None:
    """A node publishes the ends of other nodes' jobs from their notices, without reading each
    job back (that read, once a job and a node, made nodes slow each other down). Notices are
    cut under PostgreSQL's 8,000-byte limit: 40 jobs with the longest names end in one
    transaction."""
    from jobserver.models import JobState, Transition

    worker, watcher = await nodes(), await nodes()
    heard: dict[int, Transition] = {}
    watcher.subscribe(lambda: None, lambda ts, _: heard.update((t.job_id, t) for t in ts))
    # the writing node publishes its own moves as it commits: it ignores its own notices
    own: list[Transition] = []
    worker.subscribe(lambda: None, lambda ts, _: own.extend(ts))
    task_name, queue_name = "t" * 200, "q" * 100
    jobs = [NewJob(task=task_name, queue=queue_name, args=[i]) for i in range(40)]
    await worker.enqueue(jobs, T0)
    claimed = await worker.claim(40, T0, 30)
    assert len(claimed) == 40
    written = await asyncio.gather(
        *(worker.complete(j.id, j.lease_token, b"1", T0 + 1) for j in claimed)
    )
    assert set(written) == {JobState.SUCCEEDED}
    await within(10, lambda: asyncio.sleep(0, len(heard) == 40))
    for job in claimed:
        assert heard[job.id] == Transition(
            job.id, task_name, queue_name, None, JobState.SUCCEEDED, "heard", 1, T0 + 1
        )
    assert [t.reason for t in own].count("succeeded") == 40
    assert "heard" not in {t.reason for t in own}


async def test_a_key_concurrency_limit_holds_across_nodes_claiming_at_once(
    nodes: Callable[[], Awaitable[Any]],
) -> None:
    """Three nodes claim a keyed queue at the same moment: the key's limit counts the others'
    claims (the queue's row is locked while a claim counts), and each job goes to one node."""
    three = [await nodes() for _ in range(3)]
    await three[0].configure_queue("q", {"key_concurrency_limit": 2}, T0)
    await three[0].enqueue(
        [NewJob(task="t", queue="q", fairness_key=k) for k in ("a", "b") for _ in range(20)], T0
    )
    for _ in range(3):
        claims = await asyncio.gather(*(n.claim(10, T0, 30.0) for n in three))
        taken = [j for claim in claims for j in claim]
        assert len({j.id for j in taken}) == len(taken)
        running = await three[0].get_key("q", "a", T0)
        assert running.running <= 2
        assert sum(j.fairness_key == "a" for j in taken) <= 2
        for node, claim in zip(three, claims, strict=True):
            for job in claim:
                assert await node.complete(job.id, job.lease_token or "", b"null", T0)
