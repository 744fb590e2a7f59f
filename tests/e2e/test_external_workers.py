"""The reference workers in examples/workers run against a real `jobserver serve`: the Node
one (plain fetch) completes and fails jobs through the lease routes, type-checks against the
TypeScript types generated from the server's /openapi.json, and a kill -9 of it under load
loses nothing: its leased jobs are rescued once their leases run out."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ..conftest import SPEC_TOOLS, Spawn
from ..procs import ServerProcess

ROOT = Path(__file__).parents[2]
NODE_WORKER = ROOT / "examples" / "workers" / "worker.mjs"
GO_WORKER = ROOT / "examples" / "workers" / "go"
NODE = shutil.which("node")
GO = shutil.which("go")
needs_node = pytest.mark.skipif(NODE is None, reason="node is not installed")
TASKS = ["--external-task", "double=numbers,explode=numbers,delay=numbers"]


class NodeWorker:
    """examples/workers/worker.mjs, run against `server`; its output in a log file."""

    def __init__(self, server: ServerProcess, log: Path, **env: str) -> None:
        assert NODE is not None
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [NODE, str(NODE_WORKER)],
                env={
                    **os.environ,
                    "JOBSERVER_URL": server.url,
                    "JOBSERVER_QUEUES": "numbers",
                    **env,
                },
                stdout=out,
                stderr=out,
            )

    def stop(self) -> int:
        """SIGTERM: the worker finishes and reports what it holds, then exits."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=20)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()


async def enqueue(
    session: aiohttp.ClientSession, base: str, jobs: list[dict[str, Any]]
) -> list[int]:
    async with session.post(f"{base}/jobs/batch", json={"jobs": jobs}) as resp:
        assert resp.status == 202, await resp.text()
        return (await resp.json())["ids"]  # type: ignore[no-any-return]


async def wait_done(
    session: aiohttp.ClientSession, base: str, ids: list[int], timeout_s: float = 60
) -> list[dict[str, Any]]:
    """Each job once it has ended (a long poll each, up to `timeout_s` in all)."""
    give_up = asyncio.get_running_loop().time() + timeout_s
    jobs = []
    for job_id in ids:
        while True:
            async with session.get(f"{base}/jobs/{job_id}?wait=10") as resp:
                job = await resp.json()
            assert resp.status == 200, job
            if job["status"] not in ("pending", "running"):
                break
            assert asyncio.get_running_loop().time() < give_up, job
        jobs.append(job)
    return jobs


@needs_node
async def test_the_node_worker_runs_external_jobs(spawn: Spawn, tmp_path: Path) -> None:
    server = spawn(tmp_path / "n.db", TASKS)
    async with aiohttp.ClientSession() as session:
        await server.wait_ready(session)
        worker = NodeWorker(server, tmp_path / "worker.log")
        try:
            ids = await enqueue(session, server.url, [
                *({"task": "double", "args": [n]} for n in range(200)),
                {"task": "explode", "max_retries": 0},
            ])  # fmt: skip
            done = await wait_done(session, server.url, ids)
        finally:
            assert worker.stop() == 0, worker.log.read_text()
    assert [j["status"] for j in done[:-1]] == ["succeeded"] * 200
    assert [j["result"] for j in done[:-1]] == [2 * n for n in range(200)]
    failed = done[-1]
    assert failed["status"] == "failed" and failed["error"]["message"] == "boom"
    assert failed["error"]["type"] == "Error"


@needs_node
@pytest.mark.parametrize("worker_token", [None, "wk"])
async def test_a_worker_killed_under_load_loses_no_job(
    spawn: Spawn, tmp_path: Path, worker_token: str | None
) -> None:
    # With tokens set, the worker holds a --worker-token (it may only lease and report); the
    # checks here use the full one.
    flags = [*TASKS, "--rescue-interval", "0.2"]
    if worker_token is not None:
        flags += ["--token", "admin", "--worker-token", worker_token]
    server = spawn(tmp_path / "k.db", flags)
    admin = {} if worker_token is None else {"Authorization": "Bearer admin"}
    token_env = {} if worker_token is None else {"JOBSERVER_TOKEN": worker_token}
    async with aiohttp.ClientSession(headers=admin) as session:
        await server.wait_ready(session)
        slow = NodeWorker(
            server, tmp_path / "slow.log", JOBSERVER_BATCH="50", JOBSERVER_LEASE_S="2",
            **token_env,
        )  # fmt: skip
        jobs = [{"task": "delay", "args": [3000 if n < 10 else 100, n]} for n in range(2000)]
        ids = await enqueue(session, server.url, jobs)
        # Kill it mid-stream, some jobs done: the batch holding the ten 3 s jobs is then still
        # leased, whatever the timing (its loop waits for the whole batch).
        while True:
            async with session.get(f"{server.url}/jobs?status=succeeded&limit=1") as resp:
                if (await resp.json())["items"]:
                    break
            await asyncio.sleep(0.005)
        slow.kill()
        # The killed worker's leases (2 s) run out and the rescuer takes its jobs back; a new
        # worker leases them again.
        fresh = NodeWorker(server, tmp_path / "fresh.log", **token_env)
        try:
            done = await wait_done(session, server.url, ids, timeout_s=90)
        finally:
            fresh.stop()
    assert sorted(j["result"] for j in done) == list(range(2000))
    assert all(j["status"] == "succeeded" for j in done)
    assert {j["id"] for j in done if j["attempts"] == 2} >= set(ids[:10])  # rescued


@needs_node
@pytest.mark.skipif(not (SPEC_TOOLS / "tsc").exists(), reason="tests/ts tools not installed")
async def test_the_node_worker_type_checks_against_the_generated_types(
    spawn: Spawn, tmp_path: Path
) -> None:
    server = spawn(tmp_path / "t.db", TASKS)
    async with aiohttp.ClientSession() as session:
        await server.wait_ready(session)
        async with session.get(f"{server.url}/openapi.json") as resp:
            (tmp_path / "openapi.json").write_text(json.dumps(await resp.json()))
    shutil.copy(NODE_WORKER, tmp_path / "worker.mjs")
    tools = {"cwd": tmp_path, "capture_output": True, "text": True, "timeout": 120}
    made = subprocess.run(
        [str(SPEC_TOOLS / "openapi-typescript"), "openapi.json", "-o", "jobserver.d.ts"], **tools
    )
    assert made.returncode == 0, made.stderr
    checked = subprocess.run(
        [
            str(SPEC_TOOLS / "tsc"), "--noEmit", "--strict", "--allowJs", "--checkJs",
            "--target", "es2022", "--module", "nodenext", "--types", "node",
            "--typeRoots", str(SPEC_TOOLS.parent / "@types"), "worker.mjs",
        ],
        **tools,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout


@pytest.mark.skipif(GO is None, reason="go is not installed (Debian: golang-go)")
async def test_the_go_worker_runs_external_jobs(spawn: Spawn, tmp_path: Path) -> None:
    assert GO is not None
    binary = tmp_path / "go-worker"
    built = subprocess.run(
        [GO, "build", "-o", str(binary), "."],
        cwd=GO_WORKER,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "GOCACHE": str(tmp_path / "gocache"), "GOFLAGS": "-mod=mod"},
    )
    assert built.returncode == 0, built.stderr
    assert len(NODE_WORKER.read_text().splitlines()) <= 150
    assert len((GO_WORKER / "main.go").read_text().splitlines()) <= 150
    server = spawn(tmp_path / "g.db", TASKS)
    async with aiohttp.ClientSession() as session:
        await server.wait_ready(session)
        env = {**os.environ, "JOBSERVER_URL": server.url, "JOBSERVER_QUEUES": "numbers"}
        with (tmp_path / "go.log").open("ab") as log:
            worker = subprocess.Popen([str(binary)], env=env, stdout=log, stderr=log)
        try:
            ids = await enqueue(session, server.url, [
                *({"task": "double", "args": [n]} for n in range(200)),
                {"task": "explode", "max_retries": 0},  # a task this worker does not have
            ])  # fmt: skip
            done = await wait_done(session, server.url, ids)
        finally:
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=20) == 0, (tmp_path / "go.log").read_text()
    assert [j["result"] for j in done[:-1]] == [2 * n for n in range(200)]
    failed = done[-1]
    assert failed["status"] == "failed"
    assert failed["error"]["message"] == "this worker has no task explode"


@needs_node
async def test_jobs_done_early_in_a_batch_keep_their_lease_until_reported(
    spawn: Spawn, tmp_path: Path
) -> None:
    # One slow job holds its batch's report back past the lease: the quick ones must still
    # be renewed (they were dropped from renewal as each ended, rescued and run again).
    server = spawn(tmp_path / "r.db", [*TASKS, "--rescue-interval", "0.2"])
    async with aiohttp.ClientSession() as session:
        await server.wait_ready(session)
        jobs = [{"task": "delay", "args": [3000 if n == 0 else 10, n]} for n in range(20)]
        ids = await enqueue(session, server.url, jobs)
        worker = NodeWorker(server, tmp_path / "w.log", JOBSERVER_LEASE_S="1", JOBSERVER_LOOPS="1")
        try:
            done = await wait_done(session, server.url, ids)
        finally:
            assert worker.stop() == 0, worker.log.read_text()
    assert [j["status"] for j in done] == ["succeeded"] * 20
    assert [j["attempts"] for j in done] == [1] * 20
