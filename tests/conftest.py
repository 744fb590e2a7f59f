"""Shared fixtures: real SQLite files in tmp_path, a manual clock, started servers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from jobserver import JobServer, ManualClock
from jobserver.store.sqlite import SQLiteStore

T = TypeVar("T")

# Every store backend runs the same conformance tests; PostgreSQL joins this list later.
STORE_BACKENDS = ["sqlite"]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(params=STORE_BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "store.db")
    await s.open()
    try:
        yield s
    finally:
        await s.close()


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
