"""Storage faults: a full disk, a database another process locks, read-only media.

The full and read-only disks are small tmpfs mounts the test makes (it needs root, which CI
has); where mounting is not allowed, those tests say so and skip."""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from jobserver import JobServer, JobState
from jobserver.store.sqlite import SQLiteStore

from ..procs import run_cli


@contextlib.contextmanager
def small_disk(where: Path, size: str = "4m") -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here: {done.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def fill(disk: Path) -> Path:
    """Write until the disk is full; the filler file is returned (delete it to free space)."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as fh:
        for size in (65536, 4096, 512, 1):  # to the last byte: not even a page is left
            chunk = b"\0" * size
            with contextlib.suppress(OSError):
                while True:
                    fh.write(chunk)
    return filler


async def post(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any]
) -> tuple[int, Any, Any]:
    async with session.post(url, json=body) as resp:
        return resp.status, await resp.json(), resp.headers


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def test_a_full_disk_answers_503_commits_nothing_and_recovers(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    with small_disk(tmp_path / "disk") as disk:
        server = JobServer(db=disk / "jobs.db", grace_period_s=0.5)
        await server.start()
        try:
            [base] = await server.serve("127.0.0.1", 0)
            status, first, _ = await post(session, f"{base}/jobs", {"task": "echo", "args": [1]})
            assert status == 202
            filler = fill(disk)
            refused = 0
            for i in range(20):  # the WAL may still hold some room: write until it is gone
                body = {"task": "echo", "args": ["x" * 20_000, i], "delay": 999}
                status, reply, headers = await post(session, f"{base}/jobs", body)
                if status == 503:
                    refused += 1
                    assert reply["error"]["code"] == "unavailable"
                    assert int(headers["Retry-After"]) >= 1
                else:
                    assert status == 202, reply  # committed before it answered
            assert refused > 0
            async with session.get(f"{base}/healthz") as resp:
                assert resp.status == 200  # still alive
            filler.unlink()
            status, after, _ = await post(session, f"{base}/jobs", {"task": "echo", "args": [2]})
            assert status == 202
            done = await server.wait_for(after["id"], timeout_s=10)
            assert done.status == JobState.SUCCEEDED
        finally:
            await server.stop()
        # nothing was acknowledged that is not there, and the file is sound
        with contextlib.closing(sqlite3.connect(disk / "jobs.db")) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            assert conn.execute("SELECT status FROM jobs WHERE id = ?", (first["id"],)).fetchone()


async def test_a_database_locked_by_another_process_answers_503(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    db = tmp_path / "locked.db"
    server = JobServer(store=SQLiteStore(db, busy_timeout_ms=200), grace_period_s=0.5)
    await server.start()
    try:
        [base] = await server.serve("127.0.0.1", 0)
        other = sqlite3.connect(db, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")  # another program holds the write lock
        try:
            status, reply, headers = await post(session, f"{base}/jobs", {"task": "echo"})
            assert status == 503 and reply["error"]["code"] == "unavailable"
            assert "Retry-After" in headers
            async with session.get(f"{base}/readyz") as resp:
                assert resp.status == 503
        finally:
            other.execute("ROLLBACK")
            other.close()
        status, reply, _ = await post(session, f"{base}/jobs", {"task": "echo", "args": [1]})
        assert status == 202
        assert (await server.wait_for(reply["id"], timeout_s=10)).status == JobState.SUCCEEDED
    finally:
        await server.stop()


async def test_read_only_media_at_start_is_a_clear_error_and_leaves_the_file(
    tmp_path: Path,
) -> None:
    with small_disk(tmp_path / "ro") as disk:
        db = disk / "jobs.db"
        async with JobServer(db=db) as server:
            await server.enqueue("echo", ["kept"], delay_s=999)
        before = hashlib.sha256(db.read_bytes()).hexdigest()
        remount = subprocess.run(
            ["mount", "-o", "remount,ro", str(disk)], capture_output=True, check=False
        )
        if remount.returncode != 0:
            pytest.skip("cannot remount read-only here")
        result = run_cli(["serve", "--db", str(db), "--port", "0"])
        assert result.returncode == 1
        assert "Read-only file system" in result.stderr or "readonly" in result.stderr
        assert "Traceback" not in result.stderr
        assert hashlib.sha256(db.read_bytes()).hexdigest() == before


async def test_readyz_proves_a_write_and_says_503_on_a_full_disk(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    """A transaction that writes nothing commits on a full disk too: /readyz must write."""
    with small_disk(tmp_path / "disk") as disk:
        db = disk / "jobs.db"
        server = JobServer(db=db, grace_period_s=0.5)
        await server.start()
        try:
            [base] = await server.serve("127.0.0.1", 0)
            async with session.get(f"{base}/readyz") as resp:
                assert resp.status == 200
            # An empty write-ahead log: the next commit must grow it, which a full disk refuses.
            with contextlib.closing(sqlite3.connect(db)) as other:
                assert other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
            filler = fill(disk)
            async with session.get(f"{base}/readyz") as resp:
                assert resp.status == 503
                assert (await resp.json())["error"]["code"] == "unavailable"
            status, _, _ = await post(session, f"{base}/jobs", {"task": "echo"})
            assert status == 503  # and it acknowledges nothing meanwhile
            filler.unlink()
            async with session.get(f"{base}/readyz") as resp:
                assert resp.status == 200
        finally:
            await server.stop()


@pytest.mark.parametrize("fault", ["deleted", "replaced"])
async def test_a_database_file_deleted_or_replaced_under_the_server_stops_acknowledging(
    tmp_path: Path, session: aiohttp.ClientSession, fault: str
) -> None:
    """Writing on into an unlinked file would acknowledge jobs that the next start loses (it
    makes a new, empty database): every write is refused with 503, and /readyz says so."""
    db = tmp_path / "jobs.db"
    server = JobServer(db=db, grace_period_s=0.5)
    await server.start()
    try:
        [base] = await server.serve("127.0.0.1", 0)
        status, _, _ = await post(session, f"{base}/jobs", {"task": "echo", "delay": 999})
        assert status == 202
        if fault == "deleted":
            for suffix in ("", "-wal", "-shm"):
                Path(f"{db}{suffix}").unlink(missing_ok=True)
        else:
            with contextlib.closing(sqlite3.connect(tmp_path / "other.db")) as other:
                other.execute("CREATE TABLE t (x)")
            (tmp_path / "other.db").replace(db)
        for _ in range(3):
            status, reply, headers = await post(session, f"{base}/jobs", {"task": "echo"})
            assert status == 503, reply
            assert reply["error"]["code"] == "unavailable" and fault in reply["error"]["message"]
            assert "Retry-After" in headers
        async with session.post(f"{base}/jobs/batch", json={"jobs": [{"task": "echo"}]}) as resp:
            assert resp.status == 503
        async with session.get(f"{base}/readyz") as resp:
            assert resp.status == 503
        async with session.get(f"{base}/healthz") as resp:
            assert resp.status == 200  # alive: the operator sees why in /readyz and the log
    finally:
        await server.stop()
