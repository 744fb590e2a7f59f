"""jobserver.client against real servers: `AsyncClient` against a JobServer started in the test,
`Client` (which blocks) against a `jobserver serve` subprocess.

Only the status codes the server cannot produce yet (401/403 for the auth that is coming, a
503, a non-JSON error from something in front of the server) use a stub aiohttp app.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from jobserver import Backoff, JobServer, JobState, PermanentError, SystemClock
from jobserver.client import (
    ApiError,
    AsyncClient,
    AuthError,
    Client,
    ConflictError,
    ConnectionFailed,
    DeadLetterInfo,
    InvalidRequest,
    JobInfo,
    JobRef,
    NotFoundError,
    Page,
    Progress,
    Unavailable,
)
from jobserver.tasks import JobContext, Registry, task

from . import test_cli_commands
from .conftest import ServerFactory
from .test_cli_commands import ServeProcess

served = test_cli_commands.served  # the fixture: a `jobserver serve` subprocess for this module

reg = Registry()


@task(registry=reg, name="client_refuse")
async def client_refuse(reason: str) -> None:
    raise PermanentError(reason)


@task(registry=reg, name="client_progress")
async def client_progress(ctx: JobContext) -> str:
    ctx.progress(0.5, "half")
    await asyncio.sleep(0.2)
    return "done"


def closed_port() -> int:
    """A port nothing listens on (bound, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
async def server(make_server: ServerFactory) -> JobServer:
    # The system clock: delays and timestamps are real, as a client sees them.
    return await make_server(tasks=list(reg), clock=SystemClock())


@pytest.fixture
async def client(server: JobServer) -> AsyncIterator[AsyncClient]:
    [address] = await server.serve("127.0.0.1", 0)
    async with AsyncClient(address, timeout_s=10) as c:
        yield c


# -- AsyncClient ----------------------------------------------------------------------------------
async def test_enqueue_get_and_wait(client: AsyncClient) -> None:
    ref = await client.enqueue("echo", [1, 2], {"k": "v"})
    assert isinstance(ref, JobRef)
    assert ref.created and ref.status == JobState.PENDING
    assert ref.poll_url == f"/jobs/{ref.id}"

    job = await client.wait(ref.id, timeout_s=10)
    assert isinstance(job, JobInfo)
    assert job.status is JobState.SUCCEEDED and job.succeeded and job.is_terminal
    assert job.result == {"args": [1, 2], "kwargs": {"k": "v"}}
    assert (job.task, job.queue, job.args, job.kwargs) == ("echo", "default", [1, 2], {"k": "v"})
    assert job.attempts == 1 and job.error is None and not job.cancel_requested
    assert job.started_at is not None and job.completed_at is not None
    for when in (job.created_at, job.run_at, job.started_at, job.completed_at):
        assert when.tzinfo is not None
        assert abs(when - datetime.now(UTC)) < timedelta(minutes=1)
    assert job.created_at <= job.started_at <= job.completed_at

    # to_dict gives back exactly what the API sent
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{client.url}/jobs/{ref.id}") as resp,
    ):
        raw = await resp.json()
    assert job.to_dict() == raw
    assert await client.get(ref.id) == job


async def test_enqueue_with_every_option(client: AsyncClient, server: JobServer) -> None:
    ref = await client.enqueue(
        "echo",
        ["x"],
        queue="reports",
        priority=10,
        delay_s=60,
        max_retries=7,
        timeout_s=12.5,
        backoff=Backoff(base_s=2, factor=3, cap_s=100),
        idempotency_key="opts-1",
    )
    job = await client.get(ref.id)
    assert (job.queue, job.priority, job.max_retries, job.timeout_s) == ("reports", 10, 7, 12.5)
    assert job.status == JobState.PENDING
    assert timedelta(seconds=55) < job.run_at - job.created_at < timedelta(seconds=65)
    stored = await server.get_job(ref.id)
    assert stored.backoff == Backoff(base_s=2, factor=3, cap_s=100)
    assert stored.idempotency_key == "opts-1"

    when = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    at = await client.get((await client.enqueue("echo", run_at=when, backoff={"cap": 9})).id)
    assert at.run_at == when
    with pytest.raises(ValueError, match="timezone"):
        await client.enqueue("echo", run_at=datetime(2030, 1, 1))


async def test_idempotency_key(client: AsyncClient) -> None:
    first = await client.enqueue("echo", ["receipt"], idempotency_key="order-42")
    again = await client.enqueue("echo", ["receipt"], idempotency_key="order-42")
    assert first.created and not again.created
    assert again.id == first.id
    with pytest.raises(ConflictError) as err:
        await client.enqueue("echo", ["other"], idempotency_key="order-42")
    assert err.value.status == 409 and err.value.code == "conflict"
    assert "order-42" in err.value.message


async def test_api_errors_are_typed(client: AsyncClient) -> None:
    with pytest.raises(NotFoundError) as not_found:
        await client.get(987654)
    assert (not_found.value.status, not_found.value.code) == (404, "not_found")
    assert str(not_found.value) == "not_found: no job 987654"

    with pytest.raises(InvalidRequest) as invalid:
        await client.enqueue("echo", priority=5000)
    assert (invalid.value.status, invalid.value.code, invalid.value.field) == (
        422,
        "invalid",
        "priority",
    )
    assert str(invalid.value) == "invalid: must be between -1000 and 1000 (field: priority)"

    with pytest.raises(InvalidRequest) as unknown_task:
        await client.enqueue("no_such_task")
    assert unknown_task.value.field == "task"
    with pytest.raises(InvalidRequest) as both:
        await client.enqueue("echo", delay_s=1, run_at=datetime.now(UTC))
    assert both.value.field == "delay"
    with pytest.raises(InvalidRequest) as limit:
        await client.list_jobs(limit=0)
    assert limit.value.field == "limit"
    with pytest.raises(InvalidRequest) as wait:
        await client.get(1, wait_s=61)
    assert wait.value.field == "wait"
    with pytest.raises(InvalidRequest) as status:
        await client.list_jobs(cursor="not-a-cursor")
    assert status.value.field == "cursor"
    with pytest.raises(ValueError):
        await client.list_jobs(status="sleeping")  # not a JobState: refused before sending
    for error in (not_found.value, invalid.value):
        assert isinstance(error, ApiError)


async def test_connection_refused_on_a_closed_port() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    async with AsyncClient(url, timeout_s=5) as client:
        with pytest.raises(ConnectionFailed) as err:
            await client.get(1)
        assert err.value.url == url
        assert "not reachable" in str(err.value)
        assert await client.health() is False
        assert await client.ready() is False


async def test_wait_long_polls_until_the_job_ends(client: AsyncClient) -> None:
    ref = await client.enqueue("sleep", [0.3])
    started = time.monotonic()
    job = await client.wait(ref.id, timeout_s=10)
    assert job.status == JobState.SUCCEEDED and job.result == 0.3
    assert time.monotonic() - started < 5


async def test_wait_gives_up_after_its_timeout(client: AsyncClient) -> None:
    ref = await client.enqueue("echo", delay_s=600)
    started = time.monotonic()
    job = await client.wait(ref.id, timeout_s=0.3)
    took = time.monotonic() - started
    assert job.status == JobState.PENDING and not job.is_terminal
    assert 0.25 < took < 3, took
    job = await client.get(ref.id, wait_s=0.2)  # one long poll
    assert job.status == JobState.PENDING
    with pytest.raises(ValueError):
        await client.wait(ref.id, timeout_s=-1)


async def test_progress_is_typed(client: AsyncClient) -> None:
    ref = await client.enqueue("client_progress")

    async def half() -> JobInfo:
        while True:
            job = await client.get(ref.id, wait_s=0.05)
            if job.progress is not None or job.is_terminal:
                return job

    job = await asyncio.wait_for(half(), 10)
    assert job.progress == Progress(0.5, "half") or job.is_terminal
    done = await client.wait(ref.id, timeout_s=10)
    assert done.progress is not None and done.progress.fraction == 1.0


async def test_list_jobs_pages_and_iterates(client: AsyncClient) -> None:
    ids = await client.enqueue_batch(
        [{"task": "echo", "args": [i], "queue": "pages", "delay_s": 600} for i in range(5)]
    )
    assert len(ids) == 5 and ids == sorted(ids)
    first = await client.list_jobs(queue="pages", limit=2)
    assert isinstance(first, Page)
    assert [j.id for j in first.items] == ids[:2:-1]  # newest first
    assert first.next_cursor == str(ids[3])
    second = await client.list_jobs(queue="pages", limit=2, cursor=first.next_cursor)
    assert [j.id for j in second.items] == [ids[2], ids[1]]
    every = [j.id async for j in client.iter_jobs(queue="pages", page_size=2)]
    assert every == ids[::-1]
    pending = await client.list_jobs(status=JobState.PENDING, queue="pages", task="echo")
    assert len(pending.items) == 5 and pending.next_cursor is None
    assert (await client.list_jobs(status="succeeded", queue="pages")).items == []


async def test_enqueue_batch_is_all_or_nothing(client: AsyncClient) -> None:
    with pytest.raises(InvalidRequest) as err:
        await client.enqueue_batch(
            [{"task": "echo", "queue": "batch"}, {"task": "echo", "priority": 9999}]
        )
    assert err.value.field == "jobs[1].priority"
    assert err.value.items == [
        {"index": 1, "field": "priority", "message": "must be between -1000 and 1000"}
    ]
    assert (await client.list_jobs(queue="batch")).items == []
    with pytest.raises(TypeError):
        await client.enqueue_batch([{"args": [1]}])  # no task


async def test_cancel(client: AsyncClient) -> None:
    later = await client.enqueue("echo", delay_s=600)
    cancelled = await client.cancel(later.id)
    assert cancelled.status == JobState.CANCELLED and cancelled.is_terminal
    assert (await client.cancel(later.id)).status == JobState.CANCELLED  # twice is fine

    running = await client.enqueue("sleep", [30])
    while (await client.get(running.id)).status != JobState.RUNNING:
        await asyncio.sleep(0.01)
    asked = await client.cancel(running.id)
    assert asked.cancel_requested and asked.status in (JobState.RUNNING, JobState.CANCELLED)
    assert (await client.wait(running.id, timeout_s=10)).status == JobState.CANCELLED

    done = await client.enqueue("echo")
    await client.wait(done.id, timeout_s=10)
    with pytest.raises(ConflictError) as err:
        await client.cancel(done.id)
    assert err.value.message == f"job {done.id} is already succeeded"
    with pytest.raises(NotFoundError):
        await client.cancel(987654)


async def test_dead_letters(client: AsyncClient) -> None:
    refs = [await client.enqueue("client_refuse", [f"no {i}"]) for i in range(3)]
    for ref in refs:
        failed = await client.wait(ref.id, timeout_s=10)
        assert failed.status == JobState.FAILED
        assert failed.error is not None
        assert (failed.error.type, failed.error.message) == (
            "PermanentError",
            f"no {refs.index(ref)}",
        )

    page = await client.dead_letters(limit=2)
    assert [d.job_id for d in page.items] == [refs[2].id, refs[1].id]
    assert page.next_cursor is not None
    every = [d async for d in client.iter_dead_letters(page_size=2)]
    assert [d.job_id for d in every] == [r.id for r in reversed(refs)]

    dl = await client.dead_letter(every[0].id)
    assert isinstance(dl, DeadLetterInfo)
    assert (dl.task, dl.queue, dl.args, dl.attempts) == ("client_refuse", "default", ["no 2"], 1)
    assert dl.error is not None and str(dl.error) == "PermanentError: no 2"
    assert dl.failed_at.tzinfo is not None

    new_id = await client.requeue_dead_letter(dl.id)
    assert new_id not in [r.id for r in refs]
    requeued = await client.get(new_id)
    assert (requeued.task, requeued.args) == ("client_refuse", ["no 2"])
    with pytest.raises(NotFoundError):  # a requeued dead letter is gone
        await client.dead_letter(dl.id)

    await client.delete_dead_letter(every[1].id)
    with pytest.raises(NotFoundError):
        await client.dead_letter(every[1].id)
    with pytest.raises(NotFoundError):
        await client.delete_dead_letter(every[1].id)
    with pytest.raises(NotFoundError):
        await client.requeue_dead_letter(987654)


async def test_health_and_ready(client: AsyncClient) -> None:
    assert await client.health() is True
    assert await client.ready() is True


async def test_client_without_async_with_and_on_a_shared_session(server: JobServer) -> None:
    [address] = await server.serve("127.0.0.1", 0)
    client = AsyncClient(address + "/")  # a trailing slash is fine
    try:
        assert await client.health()
    finally:
        await client.close()
    async with aiohttp.ClientSession() as session:
        async with AsyncClient(address, session=session) as shared:
            assert await shared.health()
        assert not session.closed  # a session passed in is left open


def test_bad_urls_and_ids_are_refused_before_sending() -> None:
    for url in ("127.0.0.1:8000", "ftp://host", "http://"):
        with pytest.raises(ValueError):
            Client(url)
    with pytest.raises(TypeError):
        Client().get("7")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Client().enqueue("echo", "abc")


# -- the status codes our server does not send yet, from a stub ----------------------------------
async def test_auth_unavailable_and_foreign_errors(unused_tcp_port: int) -> None:
    seen: list[str | None] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        status = int(request.match_info["status"])
        if status == 502:
            return web.Response(status=502, text="<html>Bad Gateway</html>")
        error = {"error": {"code": f"c{status}", "message": f"m{status}", "field": None}}
        headers = {"Retry-After": "3"} if status == 503 else None
        return web.json_response(error, status=status, headers=headers)

    app = web.Application()
    app.router.add_get("/jobs/{status}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()
        url = f"http://127.0.0.1:{unused_tcp_port}"
        async with AsyncClient(url, token="s3cret") as client:
            assert "s3cret" not in repr(client)
            for status in (401, 403):
                with pytest.raises(AuthError) as auth:
                    await client.get(status)
                assert (auth.value.status, auth.value.code) == (status, f"c{status}")
            with pytest.raises(Unavailable) as unavailable:
                await client.get(503)
            assert unavailable.value.retry_after_s == 3.0
            with pytest.raises(ApiError) as foreign:
                await client.get(502)
            assert (foreign.value.status, foreign.value.code) == (502, "http_error")
            assert "Bad Gateway" in foreign.value.message
        assert seen == ["Bearer s3cret"] * 4

        sync_error = await asyncio.to_thread(_sync_get, url, 401)
        assert isinstance(sync_error, AuthError) and sync_error.status == 401
        sync_503 = await asyncio.to_thread(_sync_get, url, 503)
        assert isinstance(sync_503, Unavailable) and sync_503.retry_after_s == 3.0
        assert seen[-2:] == ["Bearer s3cret"] * 2
    finally:
        await runner.cleanup()


def _sync_get(url: str, status: int) -> Exception:
    try:
        Client(url, token="s3cret").get(status)
    except Exception as exc:
        return exc
    raise AssertionError("no error raised")


# -- Client (sync) against a server subprocess ----------------------------------------------------
def test_sync_client_round_trip(served: ServeProcess) -> None:
    with Client(served.url, timeout_s=10) as client:
        assert client.health() and client.ready()
        ref = client.enqueue("echo", ["sync"], queue="sync")
        assert ref.created and ref.status == JobState.PENDING
        job = client.wait(ref.id, timeout_s=10)
        assert (job.status, job.result) == (JobState.SUCCEEDED, "sync")
        assert client.get(ref.id) == job
        assert job.to_dict() == _raw_get(served.url, ref.id)

        later = client.enqueue("echo", delay_s=600, queue="sync")
        assert client.wait(later.id, timeout_s=0.2).status == JobState.PENDING
        assert client.cancel(later.id).status == JobState.CANCELLED
        ids = client.enqueue_batch([{"task": "echo", "args": [i], "queue": "sync"} for i in (1, 2)])
        listed = [j.id for j in client.iter_jobs(queue="sync", page_size=1)]
        assert listed == [*ids[::-1], later.id, ref.id]
        page = client.list_jobs(queue="sync", status="cancelled")
        assert [j.id for j in page.items] == [later.id] and page.next_cursor is None

        failed = client.wait(client.enqueue("cli_refuse", ["sync no"]).id, timeout_s=10)
        assert failed.status == JobState.FAILED
        [dl] = [d for d in client.iter_dead_letters() if d.job_id == failed.id]
        assert client.dead_letter(dl.id) == dl
        assert client.get(client.requeue_dead_letter(dl.id)).task == "cli_refuse"
        other = client.wait(client.enqueue("cli_refuse", ["again"]).id, timeout_s=10)
        [dl2] = [d for d in client.dead_letters(limit=1000).items if d.job_id == other.id]
        client.delete_dead_letter(dl2.id)

        with pytest.raises(NotFoundError):
            client.get(987654)
        with pytest.raises(NotFoundError):
            client.delete_dead_letter(dl2.id)
        with pytest.raises(ConflictError):
            client.cancel(ref.id)
        with pytest.raises(InvalidRequest) as invalid:
            client.enqueue("echo", queue="no spaces")
        assert invalid.value.field == "queue"

    refused = Client(f"http://127.0.0.1:{closed_port()}", timeout_s=5)
    with pytest.raises(ConnectionFailed, match="not reachable"):
        refused.get(1)
    assert refused.health() is False


def _raw_get(url: str, job_id: int) -> Any:
    import urllib.request

    with urllib.request.urlopen(f"{url}/jobs/{job_id}", timeout=10) as resp:
        return json.loads(resp.read())
