"""Tasks that misbehave end their own attempt, never the server (issue 19, items 2 and 4): a
task that raises SystemExit or KeyboardInterrupt, an exception whose __str__ fails, a result
JSON cannot carry, integers the JSON reader would not keep exactly."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from jobserver import JobServer, JobState
from jobserver import worker as worker_module
from jobserver.tasks import Registry, task

from ..conftest import ServerFactory, eventually

reg = Registry()


@task(registry=reg, max_retries=0)
async def exits_async() -> None:
    raise SystemExit(3)


@task(registry=reg, max_retries=0)
def exits_sync() -> None:
    sys.exit(4)


@task(registry=reg, max_retries=0)
async def interrupts() -> None:
    raise KeyboardInterrupt


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no words for it")


@task(registry=reg, max_retries=0)
async def raises_unprintable() -> None:
    raise Unprintable()


@task(registry=reg, max_retries=0)
async def returns(value: Any) -> Any:
    return value


@task(registry=reg, max_retries=0)
async def returns_nan(where: str) -> Any:
    nan, inf = float("nan"), float("inf")
    return {"top": nan, "nested": {"list": [1, (2, -inf)]}, "inf": inf}[where]


@task(registry=reg, max_retries=0)
async def returns_nul() -> Any:
    return {"text": "a\x00b"}


@task(registry=reg, max_retries=0)
async def raises_nul() -> None:
    raise ValueError("bad\x00byte")


async def start(make_server: ServerFactory) -> JobServer:
    return await make_server(tasks=list(reg))


@pytest.mark.parametrize("name", ["exits_async", "exits_sync", "interrupts"])
async def test_a_task_that_exits_fails_its_attempt_and_the_server_goes_on(
    make_server: ServerFactory, name: str
) -> None:
    server = await start(make_server)
    job = await server.enqueue(name)
    done = await server.wait_for(job.id, timeout_s=5)
    assert done.status == JobState.FAILED and done.attempts == 1
    assert done.error is not None
    assert done.error["type"] == ("KeyboardInterrupt" if name == "interrupts" else "SystemExit")
    # The loop still runs: the next job runs, and the HTTP API answers.
    after = await server.enqueue("returns", ["still here"])
    assert (await server.wait_for(after.id, timeout_s=5)).result == "still here"
    [base] = await server.serve("127.0.0.1", 0)
    async with aiohttp.ClientSession() as session, session.get(f"{base}/healthz") as resp:
        assert resp.status == 200


async def test_an_exception_whose_str_fails_still_fails_the_attempt(
    make_server: ServerFactory,
) -> None:
    """It was left running until its lease expired (LeaseExpired after the TTL)."""
    server = await start(make_server)
    job = await server.enqueue("raises_unprintable")
    done = await server.wait_for(job.id, timeout_s=5)
    assert done.status == JobState.FAILED and done.attempts == 1
    assert done.error is not None and done.error["type"] == "Unprintable"
    assert "str() raised RuntimeError" in done.error["message"]


@pytest.mark.parametrize("where", ["top", "nested", "inf"])
async def test_a_result_json_cannot_carry_fails_the_attempt(
    make_server: ServerFactory, where: str
) -> None:
    """NaN was stored as null and the job 'succeeded'."""
    server = await start(make_server)
    job = await server.enqueue("returns_nan", [where])
    done = await server.wait_for(job.id, timeout_s=5)
    assert done.status == JobState.FAILED and done.result is None
    assert done.error is not None and done.error["type"] == "InvalidResult"
    # A null the task meant is a result like any other.
    meant = await server.enqueue("returns", [{"nothing": None}])
    assert (await server.wait_for(meant.id, timeout_s=5)).result == {"nothing": None}


async def test_a_result_or_error_holding_nul_ends_its_own_job_alike_on_every_store(
    make_server: ServerFactory,
) -> None:
    """PostgreSQL's jsonb refused the NUL: the completion, gathered with other jobs' into one
    statement, failed for all of them, and an error holding one could not be written."""
    server = await start(make_server)
    bad = await server.enqueue("returns_nul")
    raised = await server.enqueue("raises_nul")
    good = [await server.enqueue("returns", [i]) for i in range(20)]
    done = await server.wait_for(bad.id, timeout_s=5)
    assert done.status == JobState.FAILED and done.error is not None
    assert done.error["type"] == "InvalidResult" and "NUL" in done.error["message"]
    failed = await server.wait_for(raised.id, timeout_s=5)
    assert failed.status == JobState.FAILED and failed.error is not None
    assert failed.error["message"] == "bad\ufffdbyte"
    for i, job in enumerate(good):
        assert (await server.wait_for(job.id, timeout_s=5)).result == i


async def test_integers_beyond_64_bits_are_refused_at_enqueue_not_rounded(
    make_server: ServerFactory,
) -> None:
    """They became floats silently (2^64 + 1 stored as 1.8446744073709552e19)."""
    server = await start(make_server)
    [base] = await server.serve("127.0.0.1", 0)  # the fast path's listener, and aiohttp's
    big = 2**64 + 1
    async with aiohttp.ClientSession() as session:
        for path in ("/jobs", "/jobs?wait=0"):  # fast path; aiohttp's handler
            raw = f'{{"task": "returns", "args": [{{"n": {big}}}]}}'
            async with session.post(
                base + path, data=raw, headers={"Content-Type": "application/json"}
            ) as resp:
                assert resp.status == 422, path
                error = (await resp.json())["error"]
                assert error["field"] == "args" and "2^64-1" in error["message"]
            raw = f'{{"task": "returns", "kwargs": {{"value": -{2**63 + 1}}}}}'
            async with session.post(
                base + path, data=raw, headers={"Content-Type": "application/json"}
            ) as resp:
                assert resp.status == 422 and (await resp.json())["error"]["field"] == "kwargs"
        # At the edges of what is kept exactly, and long digits inside a string: accepted.
        edges = [2**64 - 1, -(2**63), "123456789012345678901234567890"]
        raw = f'{{"task": "returns", "args": [[{edges[0]}, {edges[1]}, "{edges[2]}"]]}}'
        async with session.post(
            base + "/jobs", data=raw, headers={"Content-Type": "application/json"}
        ) as resp:
            assert resp.status == 202
            job_id = (await resp.json())["id"]
    done = await server.wait_for(job_id, timeout_s=5)
    assert done.status == JobState.SUCCEEDED and done.result == edges
    counts = await server.store.count_by_status()
    assert {k: v for k, v in counts.items() if v} == {"succeeded": 1}  # nothing else went in


# -- tasks that hang or ignore cancellation hold only their own slot -------------------------------
release = threading.Event()
keep_swallowing = {"on": True}


@task(registry=reg, timeout=0.2, max_retries=0)
def hangs_in_thread() -> None:
    release.wait(60)  # a sync task that outlives its timeout: its thread cannot be stopped


@task(registry=reg)
def sync_echo(value: Any) -> Any:
    return value


@task(registry=reg, timeout=0.1, max_retries=0)
async def swallows_every_cancel() -> None:
    while keep_swallowing["on"]:
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            continue  # never hears it


@task(registry=reg)
async def ignores_cancel_without_timeout() -> None:
    while keep_swallowing["on"]:
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            continue


@task(registry=reg, timeout=0.1, max_retries=0)
async def blocks_the_loop() -> str:
    time.sleep(0.4)  # blocking work in an async task: the timeout cannot fire meanwhile
    return "late"


@pytest.fixture
def _hangs_end() -> Iterator[None]:
    release.clear()
    keep_swallowing["on"] = True
    yield
    release.set()
    keep_swallowing["on"] = False


@pytest.mark.usefixtures("_hangs_end")
async def test_hung_sync_tasks_hold_only_their_own_thread(make_server: ServerFactory) -> None:
    """Concurrency 2, two sync tasks that hang past their timeout: they were recorded as timed
    out, but their threads held the whole pool, so later sync jobs showed `running` and never
    ran. Now the threads are counted and others still run; /readyz says when every spare
    thread is held."""
    server = await make_server(tasks=list(reg), concurrency=2)
    [base] = await server.serve("127.0.0.1", 0)
    hung = [await server.enqueue("hangs_in_thread") for _ in range(2)]
    for job in hung:
        done = await server.wait_for(job.id, timeout_s=5)
        assert done.status == JobState.FAILED and done.error is not None
        assert done.error["type"] == "timeout"
    assert server.executor.abandoned_threads == 2
    later = [await server.enqueue("sync_echo", [i]) for i in range(4)]
    later.append(await server.enqueue("returns", ["async"]))
    for job in later:
        assert (await server.wait_for(job.id, timeout_s=5)).status == JobState.SUCCEEDED
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/readyz") as resp:
            assert resp.status == 503 and "restart" in (await resp.json())["error"]["message"]
        async with session.get(f"{base}/metrics") as resp:
            assert 'jobserver_abandoned_tasks{kind="thread"} 2.0' in await resp.text()
        release.set()  # the hung tasks return at last
        await eventually(lambda: _async(server.executor.abandoned_threads), lambda n: n == 0)
        async with session.get(f"{base}/readyz") as resp:
            assert resp.status == 200


async def _async(value: Any) -> Any:
    return value


@pytest.mark.usefixtures("_hangs_end")
async def test_a_task_that_ignores_its_timeout_is_abandoned_and_times_out(
    make_server: ServerFactory,
) -> None:
    """It swallowed every cancellation and held its job `running` (and its slot) forever."""
    server = await make_server(tasks=list(reg), concurrency=1)
    job = await server.enqueue("swallows_every_cancel")
    done = await server.wait_for(job.id, timeout_s=10)
    assert done.status == JobState.FAILED and done.error is not None
    assert done.error["type"] == "timeout" and "ignored its cancellation" in done.error["message"]
    assert server.worker.abandoned_tasks == 1
    after = await server.enqueue("returns", ["next"])  # its one slot is free again
    assert (await server.wait_for(after.id, timeout_s=5)).result == "next"
    keep_swallowing["on"] = False
    await eventually(lambda: _async(server.worker.abandoned_tasks), lambda n: n == 0)


@pytest.mark.usefixtures("_hangs_end")
async def test_the_shutdown_drain_ends_whatever_the_tasks_do(
    make_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task that ignores cancellation kept the process alive after SIGTERM's grace."""
    monkeypatch.setattr(worker_module, "STOP_BOUND_S", 0.3)
    server = await make_server(tasks=list(reg))
    job = await server.enqueue("ignores_cancel_without_timeout")
    await eventually(lambda: server.get_job(job.id), lambda j: j.status == JobState.RUNNING)
    began = time.monotonic()
    await asyncio.wait_for(server.stop(grace_period_s=0.1), 5)
    assert time.monotonic() - began < 3
    assert server.worker.running_ids == [job.id]  # left behind, still running
    keep_swallowing["on"] = False  # (before this test's event loop closes: it waits for it)
    await eventually(lambda: _async(server.worker.running_ids), lambda ids: ids == [])


async def test_a_task_that_blocks_the_loop_past_its_timeout_times_out(
    make_server: ServerFactory,
) -> None:
    """It 'succeeded' after blocking the loop four times its timeout."""
    server = await make_server(tasks=list(reg))
    job = await server.enqueue("blocks_the_loop")
    done = await server.wait_for(job.id, timeout_s=5)
    assert done.status == JobState.FAILED and done.result is None
    assert done.error is not None and done.error["type"] == "timeout"
    assert "blocked the event loop" in done.error["message"]
