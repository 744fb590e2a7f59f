"""Shared fixtures: real SQLite files in tmp_path, a manual clock, started servers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from jobserver import JobServer, ManualClock
from jobserver.store.sqlite import SQLiteStore

from .procs import ServerProcess, Spawn

T = TypeVar("T")

# Every store backend runs the same conformance tests. PostgreSQL runs against JOBSERVER_TEST_PG,
# else the server scripts/test-services starts (127.0.0.1:5432, database `test`), when one
# answers. JOBSERVER_TEST_REQUIRE=postgres (as .ci/run sets it) turns "not reachable" from a skip
# into a failed run, so that a shipped store cannot break unseen.
STORE_BACKENDS = ["sqlite", "postgres"]
DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
REQUIRED = {n.strip() for n in os.environ.get("JOBSERVER_TEST_REQUIRE", "").split(",") if n}


def _reachable_pg(dsn: str) -> str | None:
    """Why PostgreSQL at `dsn` cannot be used, or None when it answers a query."""
    try:
        import asyncpg
    except ImportError:
        return "asyncpg is not installed (pip install -e '.[test]')"

    async def probe() -> None:
        conn = await asyncpg.connect(dsn, timeout=3)
        try:
            await conn.fetchval("SELECT 1")
        finally:
            await conn.close()

    try:
        asyncio.run(probe())
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


_PG_CANDIDATE = os.environ.get("JOBSERVER_TEST_PG") or DEFAULT_PG_DSN
_PG_PROBLEM = _reachable_pg(_PG_CANDIDATE)
PG_DSN: str | None = None if _PG_PROBLEM else _PG_CANDIDATE
PG_SKIP = (
    f"PostgreSQL tests skipped: no server at {_PG_CANDIDATE} ({_PG_PROBLEM}); "
    "`bash scripts/test-services` starts one, or set JOBSERVER_TEST_PG to a DSN"
)

CHROMIUM = (
    os.environ.get("JOBSERVER_TEST_CHROMIUM")
    or shutil.which("chromium")
    or shutil.which("chromium-browser")
)
CHROMIUM_SKIP = (
    "dashboard tests skipped: no Chromium binary; `bash scripts/test-services` installs it"
    " (or set JOBSERVER_TEST_CHROMIUM to one)"
)

SPEC_TOOLS = Path(__file__).parent / "ts" / "node_modules" / ".bin"
SPEC_TOOLS_SKIP = (
    "TypeScript spec checks skipped: no tests/ts/node_modules; `bash scripts/test-services`"
    " (or `npm ci --prefix tests/ts`) installs openapi-typescript, tsc and Redocly"
)


def pytest_report_header() -> str:
    return f"PostgreSQL store tests: against {PG_DSN}" if PG_DSN else PG_SKIP


def pytest_configure(config: pytest.Config) -> None:
    if "postgres" in REQUIRED and not PG_DSN:
        raise pytest.UsageError(f"JOBSERVER_TEST_REQUIRE=postgres, but {PG_SKIP}")
    if "chromium" in REQUIRED and not CHROMIUM:
        raise pytest.UsageError(f"JOBSERVER_TEST_REQUIRE=chromium, but {CHROMIUM_SKIP}")
    if "typescript" in REQUIRED and not (SPEC_TOOLS / "tsc").exists():
        raise pytest.UsageError(f"JOBSERVER_TEST_REQUIRE=typescript, but {SPEC_TOOLS_SKIP}")
    for tool in ("node", "go"):  # the reference workers in examples/workers
        if tool in REQUIRED and shutil.which(tool) is None:
            raise pytest.UsageError(f"JOBSERVER_TEST_REQUIRE={tool}, but {tool} is not installed")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/e2e is an end-to-end run, and so is any test marked e2e. They are
    left out of a plain `pytest` (and `pytest tests/http`), and run with `-m e2e`, or when their
    file or folder is named: `pytest tests/e2e/test_chaos.py` runs the chaos test."""
    e2e_dir = Path(__file__).parent / "e2e"
    for item in items:
        if e2e_dir in item.path.parents:
            item.add_marker(pytest.mark.e2e)
    if config.option.markexpr:
        return  # -m says what runs
    named = [Path(arg.split("::")[0]).resolve() for arg in config.args]

    def asked_for(item: pytest.Item) -> bool:
        return any(n == item.path or (n.is_dir() and e2e_dir in (n, *n.parents)) for n in named)

    kept = [i for i in items if i.get_closest_marker("e2e") is None or asked_for(i)]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Each reason for a skip once, with its count (not a line per test)."""
    reasons: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        reason = reason.removeprefix("Skipped: ")
        reasons[reason] = reasons.get(reason, 0) + 1
    for reason, count in sorted(reasons.items()):
        terminalreporter.write_line(f"SKIPPED {count} test(s): {reason}")


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


@pytest.fixture(params=STORE_BACKENDS)
async def make_server(
    request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock
) -> AsyncIterator[ServerFactory]:
    """Start JobServers (ManualClock by default) on each store: a file in tmp_path, or a fresh
    PostgreSQL schema; stopped (and the schema dropped) at teardown. A test that names its
    own `db` or `store` runs once, on the SQLite parameter."""
    started: list[JobServer] = []
    schema = f"test_{secrets.token_hex(6)}"

    async def factory(**kwargs: Any) -> JobServer:
        own = "db" in kwargs or "store" in kwargs
        if request.param == "postgres":
            if own:
                pytest.skip("this test names its own store: run on the SQLite parameter")
            if not PG_DSN:
                pytest.skip(PG_SKIP)
            from jobserver.store.postgres import PostgresStore

            kwargs["store"] = PostgresStore(PG_DSN, schema=schema)
        elif not own:
            kwargs["db"] = tmp_path / "jobs.db"
        kwargs.setdefault("clock", clock)
        kwargs.setdefault("grace_period_s", 1.0)
        server = JobServer(**kwargs)
        await server.start()
        started.append(server)
        return server

    yield factory
    for server in reversed(started):
        await server.stop(grace_period_s=0.5)
    if request.param == "postgres" and started and PG_DSN:
        import asyncpg

        conn = await asyncpg.connect(PG_DSN)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


async def read_outside(store: Any, sql_sqlite: str, sql_postgres: str, *args: Any) -> list[Any]:
    """Rows read through a connection of the test's own, not the store's: what was committed.
    SQLite gets `sql_sqlite` with ? parameters, PostgreSQL `sql_postgres` with $n ones, run in
    the store's schema."""
    if getattr(store, "path", None) is not None:
        import sqlite3

        with contextlib.closing(sqlite3.connect(store.path)) as conn:
            return [tuple(r) for r in conn.execute(sql_sqlite, args).fetchall()]
    import asyncpg

    conn = await asyncpg.connect(PG_DSN, server_settings={"search_path": f'"{store.schema}"'})
    try:
        return [tuple(r) for r in await conn.fetch(sql_postgres, *args)]
    finally:
        await conn.close()


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
