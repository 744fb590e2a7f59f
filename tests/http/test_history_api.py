"""A job's history over HTTP (GET /jobs/{id}/attempts) and in the Python client, on both
stores: every attempt with its start, end, node, outcome, error and the task's traceback."""

from __future__ import annotations

import aiohttp

from jobserver import Backoff, JobContext, JobState, ManualClock
from jobserver.client import AsyncClient, AttemptInfo, NotFoundError
from jobserver.tasks import Registry, task

from ..conftest import ServerFactory, eventually

reg = Registry()


@task(registry=reg, max_retries=2, backoff=Backoff(base_s=1, factor=1, cap_s=1))
async def third_time_lucky(ctx: JobContext) -> int:
    if ctx.attempt < 3:
        raise ValueError(f"attempt {ctx.attempt} fails")
    return ctx.attempt


async def test_the_attempts_of_a_job_over_http_and_the_client(
    make_server: ServerFactory, clock: ManualClock
) -> None:
    server = await make_server(tasks=list(reg))
    [base] = await server.serve("127.0.0.1", 0)
    job = await server.enqueue("third_time_lucky")
    for failed in (1, 2):  # each retry is due within a second (backoff with jitter)
        await eventually(
            lambda: server.get_job(job.id),
            lambda j, n=failed: j.attempts == n and j.status == JobState.PENDING,  # type: ignore[misc]
        )
        clock.advance(1)
    assert (await server.wait_for(job.id, timeout_s=5)).status == JobState.SUCCEEDED

    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/jobs/{job.id}/attempts") as resp:
            assert resp.status == 200
            body = await resp.json()
        async with session.get(f"{base}/jobs/999999/attempts") as resp:
            assert resp.status == 404
            assert (await resp.json())["error"]["code"] == "not_found"
    assert body["job_id"] == job.id
    items = body["items"]
    assert [(a["attempt"], a["outcome"]) for a in items] == [
        (1, "failed"),
        (2, "failed"),
        (3, "succeeded"),
    ]
    first = items[0]
    assert first["error"]["type"] == "ValueError" and first["error"]["message"] == "attempt 1 fails"
    assert "ValueError: attempt 1 fails" in first["error"]["traceback"]
    assert first["started_at"].endswith("Z") and first["ended_at"].endswith("Z")
    assert all(a["node"] == server.store.node for a in items)  # type: ignore[attr-defined]
    assert items[2]["error"] is None

    async with AsyncClient(base) as client:
        attempts = await client.attempts(job.id)
        assert all(isinstance(a, AttemptInfo) for a in attempts)
        assert [a.outcome for a in attempts] == ["failed", "failed", "succeeded"]
        assert attempts[1].error is not None and attempts[1].error.message == "attempt 2 fails"
        assert attempts[1].traceback is not None and "attempt 2 fails" in attempts[1].traceback
        assert attempts[0].started_at is not None and attempts[0].started_at.tzinfo is not None
        try:
            await client.attempts(999_999)
        except NotFoundError:
            pass
        else:
            raise AssertionError("no NotFoundError for a job that does not exist")
