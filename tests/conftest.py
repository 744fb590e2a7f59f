"""Shared fixtures: real SQLite files in tmp_path, a manual clock, started servers."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from jobserver import JobServer, ManualClock
from jobserver.store.sqlite import SQLiteStore

from .procs import ServerProcess, Spawn

T = TypeVar("T")

# Every store backend runs the same conformance tests. PostgreSQL runs where
# JOBSERVER_TEST_PG names a server (a DSN); .ci/run makes sure one does.
STORE_BACKENDS = ["sqlite", "postgres"]
PG_DSN = os.environ.get("JOBSERVER_TEST_PG")
PG_SKIP = "PostgreSQL tests skipped: set JOBSERVER_TEST_PG to a server's DSN to run them"


def pytest_report_header() -> str:
    return f"PostgreSQL store tests: against {PG_DSN}" if PG_DSN else PG_SKIP


async def open_store(kind: str, tmp_path: Path) -> Any:
    """A fresh, empty store of that kind: a new file, or a new PostgreSQL schema."""
    if kind == "sqlite":
        store: Any = SQLiteStore(tmp_path / "store.db")
    else:
        if not PG_DSN:
            pytest.skip(PG_SKIP)
        from jobserver.store.postgres import PostgresStore

        store = PostgresStore(PG_DSN, schema=f"test_{secrets.token_hex(6)}")
    await store.open()
    return store


async def drop_store(store: Any) -> None:
    await store.close()
    if getattr(store, "schema", None) and PG_DSN:
        import asyncpg

        conn = await asyncpg.connect(PG_DSN)
        try:
            await conn.execute(f'DROP SCHEMA "{store.schema}" CASCADE')
        finally:
            await conn.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(params=STORE_BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    s = await open_store(request.param, tmp_path)
    try:
        yield s
    finally:
        await drop_store(s)


ServerFactory = Callable[..., Awaitable[JobServer]]


@pytest.fixture
async def make_server(tmp_path: Path, clock: ManualClock) -> AsyncIterator[ServerFactory]:
    """Start JobServers on a file in tmp_path (ManualClock by default); stopped at teardown."""
    started: list[JobServer] = []

    async def factory(**kwargs: Any) -> JobServer:
        kwargs.setdefault("db", tmp_path / "jobs.db")
        kwargs.setdefault("clock", clock)
        kwargs.setdefault("grace_period_s", 1.0)
        server = JobServer(**kwargs)
        await server.start()
        started.append(server)
        return server

    yield factory
    for server in reversed(started):
        await server.stop(grace_period_s=0.5)


async def eventually(
    probe: Callable[[], Awaitable[T]],
    accept: Callable[[T], bool],
    timeout_s: float = 10.0,
) -> T:
    """Poll `probe` until `accept` holds (a deadline, not a fixed sleep)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await probe()
        if accept(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s; last value: {value!r}")
        await asyncio.sleep(0.005)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """Start servers; every one still running at the end of the test is killed and reaped."""
    servers: list[ServerProcess] = []

    def start(
        db: Path | str, flags: Sequence[str] = (), env: Mapping[str, str] | None = None
    ) -> ServerProcess:
        server = ServerProcess(db, flags, env, tmp_path / f"server-{len(servers)}.log")
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.close()
