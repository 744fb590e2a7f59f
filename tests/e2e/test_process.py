"""The real `jobserver serve` process: crashes, shutdown, start-up refusals.

Every test runs `python -m jobserver serve` as a subprocess from the repository root, with
the task module tests/process_tasks.py, and talks to it over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ..procs import (
    EXEC_LOG_ENV,
    ServerProcess,
    Spawn,
    free_port,
    run_cli,
)


def query_db(db: Path, sql: str, *, read_only: bool = False) -> list[tuple[Any, ...]]:
    uri = f"file:{db}?mode=ro" if read_only else f"file:{db}"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
        return conn.execute(sql).fetchall()


async def post_job(
    session: aiohttp.ClientSession, server: ServerProcess, body: dict[str, Any]
) -> int:
    async with session.post(f"{server.url}/jobs", json=body) as resp:
        data = await resp.json()
        assert resp.status == 202, data
        job_id: int = data["id"]
        return job_id


async def get_job(session: aiohttp.ClientSession, server: ServerProcess, job_id: int) -> Any:
    async with session.get(f"{server.url}/jobs/{job_id}") as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def list_jobs(
    session: aiohttp.ClientSession, server: ServerProcess, status: str | None = None
) -> list[dict[str, Any]]:
    """Every job (with `status`), following the cursor."""
    jobs: list[dict[str, Any]] = []
    params = {"limit": "1000"}
    if status is not None:
        params["status"] = status
    while True:
        async with session.get(f"{server.url}/jobs", params=params) as resp:
            assert resp.status == 200, await resp.text()
            page = await resp.json()
        jobs.extend(page["items"])
        if page["next_cursor"] is None:
            return jobs
        params["cursor"] = page["next_cursor"]


async def wait_until_idle(
    session: aiohttp.ClientSession, server: ServerProcess, timeout_s: float
) -> None:
    """Until no job is pending or running."""
    deadline = time.monotonic() + timeout_s
    while True:
        busy = 0
        for status in ("pending", "running"):
            async with session.get(
                f"{server.url}/jobs", params={"status": status, "limit": "1"}
            ) as resp:
                assert resp.status == 200, await resp.text()
                busy += len((await resp.json())["items"])
        if not busy:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"jobs still pending or running after {timeout_s} s")
        await asyncio.sleep(0.1)


async def stop_server(server: ServerProcess) -> None:
    """SIGTERM, then the clean-drain exit code."""
    server.proc.send_signal(signal.SIGTERM)
    code = await server.wait_exit()
    assert code == 0, server.output()


# -- 1. kill -9 under load ------------------------------------------------------------------------
ACKED_BEFORE_KILL = 300
ENQUEUERS = 8


async def test_sigkill_under_load_loses_no_acknowledged_job(tmp_path: Path, spawn: Spawn) -> None:
    db = tmp_path / "j.db"
    exec_log = tmp_path / "executions.log"
    env = {EXEC_LOG_ENV: str(exec_log)}
    # Few slots and 100 ms jobs: enqueueing outruns the workers, so at the kill there is a
    # backlog and jobs mid-run. A long lease: only start-up recovery can requeue the jobs
    # that were running in time, not lease expiry.
    flags = ["--concurrency", "8", "--lease-ttl", "120", "--log-level", "warning"]
    body = {"task": "record_execution", "args": [0.1]}

    acked: set[int] = set()
    errors_before_kill: list[BaseException] = []
    indeterminate = 0
    enough = asyncio.Event()
    killed = False

    server = spawn(db, flags, env)
    timeout = aiohttp.ClientTimeout(total=15)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await server.wait_ready(session)

        async def enqueuer() -> None:
            nonlocal indeterminate
            while not killed:
                try:
                    async with session.post(f"{server.url}/jobs", json=body) as resp:
                        data = await resp.json()
                        assert resp.status == 202, data
                except (aiohttp.ClientError, TimeoutError) as exc:
                    # No answer: the job may or may not exist; not acknowledged.
                    if killed:
                        indeterminate += 1
                    else:
                        errors_before_kill.append(exc)
                    continue
                # A 202 that arrives after the kill was sent before it: acknowledged all the same.
                acked.add(data["id"])
                if len(acked) >= ACKED_BEFORE_KILL:
                    enough.set()

        enqueuers = [asyncio.create_task(enqueuer()) for _ in range(ENQUEUERS)]
        try:
            await asyncio.wait_for(enough.wait(), 30)
            await server.wait_running(session)  # slots busy, so the kill catches jobs mid-run
            server.proc.kill()  # SIGKILL while the enqueuers keep posting
            killed = True
            assert await server.wait_exit() == -signal.SIGKILL
        finally:
            killed = True
            await asyncio.gather(*enqueuers)
        assert not errors_before_kill, errors_before_kill

    # The database as the killed process left it (read-only: leave the WAL for the restart).
    at_kill = dict(query_db(db, "SELECT id, status FROM jobs", read_only=True))
    assert acked <= at_kill.keys(), f"acknowledged but not stored: {sorted(acked - at_kill.keys())}"
    running_at_kill = {i for i, status in at_kill.items() if status == "running"}
    assert running_at_kill, "the kill should have caught jobs mid-run"
    assert any(status == "pending" for status in at_kill.values()), "no backlog at the kill"

    restarted = spawn(db, flags, env)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await restarted.wait_ready(session)
        await wait_until_idle(session, restarted, timeout_s=30)
        jobs = {j["id"]: j for j in await list_jobs(session, restarted)}
    await stop_server(restarted)

    assert jobs.keys() == at_kill.keys()  # the indeterminate ones that got in, and no others
    not_succeeded = {i: j["status"] for i, j in jobs.items() if j["status"] != "succeeded"}
    assert not not_succeeded, not_succeeded
    for job_id in acked:
        assert jobs[job_id]["result"] == job_id

    runs: dict[int, list[int]] = {}
    for line in exec_log.read_text().splitlines():
        job_id, attempt = map(int, line.split())
        runs.setdefault(job_id, []).append(attempt)
    never_ran = acked - runs.keys()
    assert not never_ran, f"acknowledged jobs never executed: {sorted(never_ran)}"
    for job_id, job in jobs.items():
        # The run that succeeded is the attempt the server recorded.
        assert job["attempts"] in runs[job_id], (job_id, job["attempts"], runs[job_id])
    ran_twice = {i for i, attempts in runs.items() if len(attempts) > 1}
    assert ran_twice <= running_at_kill, "only jobs caught mid-run by the kill may run again"
    for job_id in running_at_kill:
        # the interrupted attempt counts: the re-run is attempt 2
        assert jobs[job_id]["attempts"] >= 2, jobs[job_id]

    # After the clean shutdown, the file itself.
    assert query_db(db, "PRAGMA integrity_check") == [("ok",)]
    assert query_db(db, "SELECT count(*) FROM jobs WHERE status = 'running'") == [(0,)]
    assert query_db(db, "SELECT count(*) FROM jobs WHERE status <> 'succeeded'") == [(0,)]
    print(
        f"acknowledged {len(acked)}, indeterminate {indeterminate},"
        f" stored {len(at_kill)}, running at the kill {len(running_at_kill)}"
    )


# -- 2. SIGTERM drains ----------------------------------------------------------------------------
async def test_sigterm_drains_then_gives_back_unfinished_jobs(tmp_path: Path, spawn: Spawn) -> None:
    db = tmp_path / "j.db"
    grace_s = 1.0
    server = spawn(db, ["--concurrency", "8", "--grace-period", str(grace_s)])
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        await server.wait_ready(session)
        long_ids = [
            await post_job(session, server, {"task": "sleep", "args": [30]}) for _ in range(3)
        ]
        # Short jobs that are still running at SIGTERM and end well inside the grace period.
        short_ids = [
            await post_job(session, server, {"task": "sleep", "args": [0.5]}) for _ in range(3)
        ]
        deadline = time.monotonic() + 10
        while True:
            running = {j["id"] for j in await list_jobs(session, server, "running")}
            if set(long_ids) <= running and set(short_ids) & running:
                break
            assert time.monotonic() < deadline, f"jobs not running: {running}"
            await asyncio.sleep(0.02)

        # The session (and its keep-alive connection) stays open through the shutdown.
        signalled = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        code = await server.wait_exit()
        took = time.monotonic() - signalled
    output = server.output()
    assert code == 0, output
    assert took < 10, f"shutdown took {took:.1f} s with a grace period of {grace_s} s"
    assert "Traceback" not in output, output

    rows = {r[0]: r[1:] for r in query_db(db, "SELECT id, status, attempts, lease_token FROM jobs")}
    assert query_db(db, "SELECT count(*) FROM jobs WHERE status = 'running'") == [(0,)]
    for job_id in long_ids:
        # cut off at the end of the grace period: back to pending, the attempt given back
        assert rows[job_id] == ("pending", 0, None), (job_id, rows[job_id])
    for job_id in short_ids:
        # running at SIGTERM, done within the grace period: recorded, not released
        assert rows[job_id] == ("succeeded", 1, None), (job_id, rows[job_id])
    assert query_db(db, "PRAGMA integrity_check") == [("ok",)]


async def test_sigterm_under_enqueue_load_loses_nothing_and_exits_0(
    tmp_path: Path, spawn: Spawn
) -> None:
    """Enqueuers keep posting through the SIGTERM: every 202 is a stored job, the server stops
    taking requests, running jobs end or are given back, no row is left running, exit 0."""
    db = tmp_path / "j.db"
    server = spawn(db, ["--concurrency", "4", "--grace-period", "1", "--log-level", "warning"])
    acked: set[int] = set()
    refused_after = 0
    signalled = False
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        await server.wait_ready(session)

        async def enqueuer() -> None:
            nonlocal refused_after
            while server.proc.poll() is None:
                body = {"task": "sleep", "args": [0.05]}
                try:
                    async with session.post(f"{server.url}/jobs", json=body) as resp:
                        if resp.status == 202:
                            acked.add((await resp.json())["id"])
                        elif signalled:
                            refused_after += 1
                except (aiohttp.ClientError, TimeoutError):
                    if signalled:
                        refused_after += 1
                    await asyncio.sleep(0.01)

        enqueuers = [asyncio.create_task(enqueuer()) for _ in range(6)]
        await eventually_true(lambda: len(acked) >= 100)
        signalled = True
        server.proc.send_signal(signal.SIGTERM)
        code = await server.wait_exit()
        await asyncio.gather(*enqueuers)
    assert code == 0, server.output()
    assert refused_after > 0  # requests after the signal were not taken
    stored = dict(query_db(db, "SELECT id, status FROM jobs"))
    assert acked <= stored.keys(), sorted(acked - stored.keys())
    assert query_db(db, "SELECT count(*) FROM jobs WHERE status = 'running'") == [(0,)]
    assert set(stored.values()) <= {"pending", "succeeded"}
    assert query_db(db, "PRAGMA integrity_check") == [("ok",)]


async def eventually_true(check: Any, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# -- 3. one process per database ------------------------------------------------------------------
async def test_second_server_on_same_db_refuses_to_start(tmp_path: Path, spawn: Spawn) -> None:
    db = tmp_path / "j.db"
    first = spawn(db)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        await first.wait_ready(session)
        before = await post_job(session, first, {"task": "echo", "args": ["before"]})

        second = await asyncio.to_thread(
            run_cli, ["serve", "--db", str(db), "--port", str(free_port())]
        )
        assert second.returncode == 1, second.stderr
        assert "in use" in second.stderr, second.stderr
        assert str(db) in second.stderr, second.stderr

        # The first server is unharmed: it still takes and runs jobs.
        assert first.proc.poll() is None, first.output()
        after = await post_job(session, first, {"task": "echo", "args": ["after"]})
        await wait_until_idle(session, first, timeout_s=10)
        assert (await get_job(session, first, before))["result"] == "before"
        job = await get_job(session, first, after)
        assert (job["status"], job["result"]) == ("succeeded", "after")
    await stop_server(first)


# -- 4. bad settings ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("flags", "env", "named"),
    [
        (["--port", "notaport"], {}, "--port"),
        ([], {"JOBSERVER_CONCURRENCY": "0"}, "JOBSERVER_CONCURRENCY"),
    ],
    ids=["port-flag", "concurrency-env"],
)
def test_bad_setting_exits_2_naming_it(
    tmp_path: Path, flags: list[str], env: dict[str, str], named: str
) -> None:
    db = tmp_path / "j.db"
    result = run_cli(["serve", "--db", str(db), *flags], env)
    assert result.returncode == 2, result.stderr
    assert named in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert not db.exists(), "a configuration error must not touch the database"


def test_a_postgresql_url_without_asyncpg_is_one_clear_line(tmp_path: Path) -> None:
    """asyncpg is an optional extra: without it, serve said so in a traceback."""
    hidden = tmp_path / "site" / "asyncpg"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('asyncpg is hidden by this test')\n")
    result = run_cli(
        ["serve", "--db", "postgresql://postgres@127.0.0.1:1/none", "--port", "0"],
        {"PYTHONPATH": str(hidden.parent)},
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    [line] = [x for x in result.stderr.splitlines() if x.strip()]
    assert "asyncpg" in line and "jobserver[postgres]" in line, line


# -- 5. a file that is not a database -------------------------------------------------------------
def test_file_that_is_not_a_database_is_refused_untouched(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    garbage = b"not a database\n" + os.urandom(8192)
    db.write_bytes(garbage)
    result = run_cli(["serve", "--db", str(db), "--port", str(free_port())])
    assert result.returncode == 1, result.stderr
    assert "not a usable SQLite database" in result.stderr, result.stderr
    assert str(db) in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert db.read_bytes() == garbage
    assert not Path(f"{db}-wal").exists()


async def test_a_job_that_kills_the_process_is_dead_lettered_after_its_attempts(
    tmp_path: Path, spawn: Spawn
) -> None:
    db = tmp_path / "poison.db"
    flags = ["--log-level", "warning"]
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        server = spawn(db, flags)
        await server.wait_ready(session)
        body = {"task": "crash_process", "max_retries": 2}
        try:
            async with session.post(f"{server.url}/jobs", json=body) as resp:
                job_id = (await resp.json())["id"]
        except aiohttp.ClientError:
            # Committed, then claimed in the same transaction: the job may start, and kill the
            # process, before the reply is written (as a client of any queue may see).
            job_id = 1  # a new database's first job
        assert await server.wait_exit() == 3  # the task's os._exit
        crashes = 1
        while True:
            server = spawn(db, flags)
            if await ready_or_exited(session, server):
                try:
                    job = await get_job(session, server, job_id)
                except aiohttp.ClientError:
                    job = {"is_terminal": False}  # it crashed between /healthz and this GET
                if job["is_terminal"]:
                    break
                assert await server.wait_exit() == 3
            crashes += 1
            assert crashes <= 3, "re-run past its attempts"
        assert crashes == 3  # max_retries + 1 attempts, each counted when claimed
        assert job["status"] == "failed" and job["error"]["type"] == "LeaseExpired"
        async with session.get(f"{server.url}/dead-letters") as resp:
            assert [d["job_id"] for d in (await resp.json())["items"]] == [job_id]
        async with session.get(f"{server.url}/healthz") as resp:
            assert resp.status == 200  # and the server stays up


async def ready_or_exited(session: aiohttp.ClientSession, server: ServerProcess) -> bool:
    """True once the server answers /healthz; False if it exits (with 3) first."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            assert server.proc.returncode == 3, server.output()
            return False
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with session.get(f"{server.url}/healthz") as resp:
                if resp.status == 200:
                    return True
        await asyncio.sleep(0.02)
    pytest.fail(f"server neither ready nor exited:\n{server.output()}")
