"""Tasks that misbehave end their own attempt, never the server (issue 19, items 2 and 4): a
task that raises SystemExit or KeyboardInterrupt, an exception whose __str__ fails, a result
JSON cannot carry, integers the JSON reader would not keep exactly."""

from __future__ import annotations

import sys
from typing import Any

import aiohttp
import pytest

from jobserver import JobServer, JobState
from jobserver.tasks import Registry, task

from ..conftest import ServerFactory

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
