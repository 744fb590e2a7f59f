"""Process isolation (issue 19, item 1): task bodies in child processes. A child that exits,
crashes, hangs or leaks ends its own attempt; the server and its other jobs go on."""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from jobserver import JobServer, JobState
from jobserver.isolation import SoftTimeLimitExceeded
from jobserver.tasks import JobContext, Registry, task

from ..conftest import ServerFactory

reg = Registry()


@task(registry=reg, isolation="process", max_retries=0)
def pid_and(value: Any) -> dict[str, Any]:
    return {"pid": os.getpid(), "value": value}


@task(registry=reg, isolation="process", max_retries=0)
async def async_pid(ctx: JobContext) -> dict[str, Any]:
    return {"pid": os.getpid(), "job": ctx.job_id, "attempt": ctx.attempt}


@task(registry=reg, isolation="process", max_retries=0)
def exits_hard() -> None:
    os._exit(9)  # no exception, no cleanup: the process is gone


@task(registry=reg, isolation="process", max_retries=0)
def segfaults() -> None:
    ctypes.string_at(0)  # reads address 0: SIGSEGV


@task(registry=reg, isolation="process", max_retries=0)
def raises_system_exit() -> None:
    raise SystemExit(5)


@task(registry=reg, isolation="process", timeout=0.2, hard_timeout=0.6, max_retries=0)
def spins(catch_soft: bool) -> str:
    """A CPU loop: nothing an in-process timeout could stop."""
    try:
        while True:
            pass
    except SoftTimeLimitExceeded:
        if catch_soft:
            return "cleaned up"
        while True:  # ignores the soft limit too: the hard one kills it
            pass


@task(registry=reg, isolation="process", max_retries=0)
def hogs(megabytes: int) -> int:
    global _hog
    _hog = bytearray(megabytes * 1_000_000)  # kept: the child's memory stays high
    return len(_hog)


_hog = bytearray()


@task(registry=reg, isolation="process", max_retries=0)
def returns_nan() -> float:
    return float("nan")


@task(registry=reg, max_retries=0)
async def in_server() -> int:
    return os.getpid()


async def start(make_server: ServerFactory, **kwargs: Any) -> JobServer:
    return await make_server(tasks=list(reg), concurrency=2, **kwargs)


async def run(server: JobServer, task_name: str, *args: Any) -> Any:
    job = await server.enqueue(task_name, list(args))
    return await server.wait_for(job.id, timeout_s=20)


async def test_an_isolated_task_runs_in_a_child_and_others_in_the_server(
    make_server: ServerFactory,
) -> None:
    server = await start(make_server)
    done = await run(server, "pid_and", [1, "x"])
    assert done.status == JobState.SUCCEEDED and done.result["value"] == [1, "x"]
    assert done.result["pid"] != os.getpid()
    ctx_done = await run(server, "async_pid")
    assert ctx_done.result["job"] == ctx_done.id and ctx_done.result["attempt"] == 1
    assert (await run(server, "in_server")).result == os.getpid()


@pytest.mark.parametrize(
    ("name", "error_type"),
    [
        ("exits_hard", "WorkerLost"),
        ("segfaults", "WorkerLost"),
        ("raises_system_exit", "SystemExit"),
    ],
)
async def test_a_child_that_dies_or_exits_ends_only_its_attempt(
    make_server: ServerFactory, name: str, error_type: str
) -> None:
    server = await start(make_server)
    done = await run(server, name)
    assert done.status == JobState.FAILED and done.error is not None
    assert done.error["type"] == error_type
    after = await run(server, "pid_and", "after")  # a new child takes the next job
    assert after.status == JobState.SUCCEEDED and after.result["value"] == "after"


async def test_soft_limit_is_catchable_and_the_hard_limit_kills(
    make_server: ServerFactory,
) -> None:
    server = await start(make_server)
    caught = await run(server, "spins", True)
    assert caught.status == JobState.SUCCEEDED and caught.result == "cleaned up"
    began = time.monotonic()
    killed = await run(server, "spins", False)
    assert time.monotonic() - began < 10
    assert killed.status == JobState.FAILED and killed.error is not None
    assert killed.error["type"] == "timeout" and "killed" in killed.error["message"]
    assert server.processes is not None and server.processes.lost == 1
    assert (await run(server, "pid_and", 1)).status == JobState.SUCCEEDED


async def test_children_are_replaced_after_max_tasks_and_past_max_memory(
    make_server: ServerFactory,
) -> None:
    server = await start(make_server, max_tasks_per_child=2, max_memory_per_child_mb=200)
    pids = [(await run(server, "pid_and", i)).result["pid"] for i in range(4)]
    assert len(set(pids)) >= 2  # two tasks a child at most
    assert all(pids.count(p) <= 2 for p in pids)
    assert server.processes is not None
    started = server.processes.started
    assert (await run(server, "hogs", 300)).status == JobState.SUCCEEDED
    await run(server, "pid_and", "next")
    assert server.processes.started > started  # the hog's child was let go


async def test_a_result_json_cannot_carry_fails_in_a_child_too(make_server: ServerFactory) -> None:
    server = await start(make_server)
    done = await run(server, "returns_nan")
    assert done.status == JobState.FAILED and done.error is not None
    assert done.error["type"] == "InvalidResult"


async def test_every_task_isolated_by_the_server_default_but_the_builtins(
    make_server: ServerFactory,
) -> None:
    server = await start(make_server, isolation="process")
    assert (await run(server, "echo", "hi")).result == "hi"  # built-in: in the server
    done = await run(server, "pid_and", 2)
    assert done.result["pid"] != os.getpid()


@task(registry=reg, isolation="process", max_retries=0)
def spins_for_ever(pid_file: str) -> None:
    with open(pid_file, "w") as f:
        f.write(str(os.getpid()))
    while True:
        pass


SERVER_THAT_DIES = """
import asyncio, sys
from jobserver import JobServer
from tests.server import test_isolation

async def main():
    server = JobServer(db=sys.argv[1], tasks=list(test_isolation.reg), concurrency=1)
    await server.start()
    await server.enqueue("spins_for_ever", [sys.argv[2]])
    await asyncio.sleep(600)

asyncio.run(main())
"""


async def test_children_die_with_a_server_killed_with_sigkill(tmp_path: Path) -> None:
    """A child spinning in a task reads no EOF: after the server's kill -9 it spun on for
    ever, an orphan, one more at every crash."""
    pid_file = tmp_path / "child.pid"
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER_THAT_DIES, str(tmp_path / "jobs.db"), str(pid_file)],
        cwd=Path(__file__).parents[2],
    )
    try:
        for _ in range(300):
            if pid_file.exists() and pid_file.read_text():
                break
            await asyncio.sleep(0.05)
        child = int(pid_file.read_text())
        os.kill(child, 0)  # running
    finally:
        server.kill()
        server.wait()
    for _ in range(100):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        await asyncio.sleep(0.05)
    os.kill(child, signal.SIGKILL)
    raise AssertionError("the child outlived its server")


@task(registry=reg, isolation="process", timeout=0.2, max_retries=0)
def cleans_up_slowly() -> str:
    """Catches its soft limit and takes 2.5 s to clean up: inside its hard limit (+5 s)."""
    try:
        time.sleep(30)
    except SoftTimeLimitExceeded:
        time.sleep(2.5)
        return "cleaned up late"
    return "never"


async def test_an_isolated_task_may_clean_up_until_its_hard_limit(
    make_server: ServerFactory,
) -> None:
    """The watchdog for tasks deaf to cancellation took its soft limit for the deadline, and
    ended the attempt 2 s past it, while the child was still cleaning up within its hard one."""
    server = await start(make_server)
    done = await run(server, "cleans_up_slowly")
    assert (done.status, done.result) == (JobState.SUCCEEDED, "cleaned up late")
    assert server.worker.abandoned_tasks == 0


@task(registry=reg, isolation="process", max_retries=0)
def sleeps_in_child(pid_file: str) -> None:
    with open(pid_file, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(60)


async def test_cancelling_an_isolated_job_kills_its_child(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server = await start(make_server)
    pid_file = tmp_path / "pid"
    job = await server.enqueue("sleeps_in_child", [str(pid_file)])
    for _ in range(200):
        if pid_file.exists() and pid_file.read_text():
            break
        await asyncio.sleep(0.05)
    child = int(pid_file.read_text())
    await server.cancel(job.id)
    done = await server.wait_for(job.id, timeout_s=10)
    assert done.status == JobState.CANCELLED
    for _ in range(100):  # the child is killed (and reaped)
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the cancelled job's child still runs")
    assert (await run(server, "pid_and", "next")).status == JobState.SUCCEEDED
