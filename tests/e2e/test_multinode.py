"""Several jobserver nodes on one PostgreSQL database."""

from __future__ import annotations

import asyncio
import secrets
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from jobserver import JobServer, JobState, ManualClock
from jobserver.store.postgres import PostgresStore, split_schema
from jobserver.tasks import Registry, task

from ..conftest import PG_DSN, PG_SKIP, eventually
from ..procs import EXEC_LOG_ENV, Spawn

pytestmark = pytest.mark.skipif(not PG_DSN, reason=PG_SKIP)

reg = Registry()
gates: dict[str, asyncio.Event] = {}


@task(registry=reg)
async def gated(name: str) -> str:
    await gates.setdefault(name, asyncio.Event()).wait()
    return name


@task(registry=reg)
async def where() -> int:
    return 1


def test_schema_rides_on_the_url() -> None:
    assert split_schema("postgresql://u@h:5432/db?schema=s1&sslmode=disable") == (
        "postgresql://u@h:5432/db?sslmode=disable",
        "s1",
    )
    assert split_schema("postgresql://u@h/db") == ("postgresql://u@h/db", None)


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    name = f"test_{secrets.token_hex(6)}"
    yield name
    assert PG_DSN
    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await conn.close()


async def test_an_idle_node_is_woken_by_another_nodes_enqueue(schema: str) -> None:
    assert PG_DSN
    clock = ManualClock()  # never moves: only a notification can wake node B
    nodes = [
        JobServer(store=PostgresStore(PG_DSN, schema=schema), tasks=list(reg), concurrency=1,
                  clock=clock)
        for _ in range(2)
    ]  # fmt: skip
    a, b = nodes
    for node in nodes:
        await node.start()
    try:
        busy = await a.enqueue("gated", ["hold-a"])
        await eventually(lambda: a.get_job(busy.id), lambda j: j.status == JobState.RUNNING)
        # a's only slot is taken: the next job can only run on b, which sleeps on no timer
        holder = a if busy.id in a.worker.running_ids else b
        other = b if holder is a else a
        job = await holder.enqueue("where")
        done = await holder.wait_for(job.id, timeout_s=10)  # woken by b's NOTIFY of the end
        assert done.status == JobState.SUCCEEDED
        assert holder.worker.running_ids == [busy.id]  # so it ran on the other node
        await eventually(lambda: _running(other), lambda ids: ids == [])
        gates["hold-a"].set()
        assert (await b.wait_for(busy.id, timeout_s=10)).status == JobState.SUCCEEDED
    finally:
        for node in nodes:
            await node.stop(grace_period_s=0.5)


async def test_a_dead_nodes_jobs_are_rescued_by_the_others_within_the_lease(
    schema: str, spawn: Spawn, tmp_path: Any
) -> None:
    """Three `jobserver serve` processes under load on one database; one is killed -9."""
    assert PG_DSN
    db = f"{PG_DSN}?schema={schema}"
    exec_log = tmp_path / "executions.log"
    env = {EXEC_LOG_ENV: str(exec_log)}
    lease_ttl = 2.0
    flags = ["--concurrency", "4", "--lease-ttl", str(lease_ttl), "--log-level", "warning"]
    nodes = [spawn(db, flags, env) for _ in range(3)]
    acked: set[int] = set()
    timeout = aiohttp.ClientTimeout(total=15)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for node in nodes:
            await node.wait_ready(session)

        async def enqueue(node_index: int, count: int) -> None:
            node = nodes[node_index]
            for _ in range(count):
                body = {"task": "record_execution", "args": [0.05]}
                async with session.post(f"{node.url}/jobs", json=body) as resp:
                    assert resp.status == 202, await resp.text()
                    acked.add((await resp.json())["id"])

        await asyncio.gather(*[enqueue(i % 3, 40) for i in range(6)])
        victim = nodes[0]
        await victim.wait_running(session)
        victim.proc.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        assert await victim.wait_exit() == -signal.SIGKILL

        # Every acknowledged job ends, the victim's included, once its leases run out.
        survivor = nodes[1]

        async def states() -> dict[int, str]:
            rows = await _rows(PG_DSN, schema, "SELECT id, status FROM jobs")
            return {r["id"]: r["status"] for r in rows}

        final = await eventually(
            states, lambda s: all(v == "succeeded" for v in s.values()), timeout_s=60
        )
        rescued_within = time.monotonic() - killed_at
        assert acked <= final.keys()
        assert rescued_within < lease_ttl + 5 + 10  # TTL + the rescuer's interval + slack
        async with session.get(f"{survivor.url}/healthz") as resp:
            assert resp.status == 200

    runs: dict[int, int] = {}
    for line in exec_log.read_text().splitlines():
        job_id = int(line.split()[0])
        runs[job_id] = runs.get(job_id, 0) + 1
    assert acked <= runs.keys()
    duplicates = sum(n - 1 for n in runs.values())
    assert duplicates <= 4  # at most the victim's slots were in flight at the kill


async def _rows(dsn: str, schema: str, sql: str) -> list[Any]:
    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


async def _running(node: JobServer) -> list[int]:
    return node.worker.running_ids
