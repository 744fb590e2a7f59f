"""jobserver.client against real servers: `AsyncClient` against a JobServer started in the test,
`Client` (which blocks) against a `jobserver serve` subprocess.

Only the answers our server cannot be made to give on demand (a 503, a non-JSON error from
something in front of the server) use a stub aiohttp app.
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
    NOT_GIVEN,
    ApiError,
    AsyncClient,
    AuthError,
    Client,
    ConflictError,
    ConnectionFailed,
    DeadLetterInfo,
    InvalidArgument,
    InvalidRequest,
    JobInfo,
    JobRef,
    NotFoundError,
    Page,
    Progress,
    QueueFull,
    QueueInfo,
    QueueLimits,
    ScheduleInfo,
    TooManyFailures,
    Unavailable,
    UnexpectedResponse,
    WorkflowInfo,
    WorkflowRef,
)
from jobserver.models import Job
from jobserver.render import job_to_dict
from jobserver.tasks import JobContext, Registry, task
from jobserver.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from jobserver.workflows import chain, chord, group, job

from ..conftest import ServerFactory
from ..e2e import test_cli_commands
from ..e2e.test_cli_commands import ServeProcess

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


@task(registry=reg, name="client_sum")
async def client_sum(results: list[int]) -> int:
    return sum(results)


WEBHOOK_SECRET = "client-test-secret"


def closed_port() -> int:
    """A port nothing listens on (bound, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
async def server(make_server: ServerFactory) -> JobServer:
    # The system clock: delays and timestamps are real, as a client sees them.
    return await make_server(tasks=list(reg), clock=SystemClock(), webhook_secret=WEBHOOK_SECRET)


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


@task(registry=reg, name="client_timeout")
async def client_timeout() -> None:
    raise TimeoutError("the mail server did not answer")


async def test_dead_letters_requeued_and_deleted_by_a_filter(client: AsyncClient) -> None:
    """Bulk re-drive (issue 20): by task, queue, error type and time; a dry run changes
    nothing; limit and `more`; the new jobs are real jobs, the dead letters are gone."""
    before = datetime.now(UTC)
    refused = [await client.enqueue("client_refuse", [f"r{i}"], queue="bulk") for i in range(3)]
    timed_out = [
        await client.enqueue("client_timeout", queue="bulk", max_retries=0) for _ in range(2)
    ]
    other_queue = await client.enqueue("client_refuse", ["o"], queue="elsewhere")
    for ref in [*refused, *timed_out, other_queue]:
        assert (await client.wait(ref.id, timeout_s=10)).status == JobState.FAILED

    dry = await client.requeue_dead_letters(queue="bulk", error_type="TimeoutError", dry_run=True)
    assert (dry.matched, dry.more, dry.done) == (2, False, [])
    assert {d.job_id for d in dry.sample} == {r.id for r in timed_out}
    assert len((await client.dead_letters(queue="bulk")).items) == 5  # nothing changed

    limited = await client.requeue_dead_letters(
        task="client_refuse", queue="bulk", limit=2, failed_after=before
    )
    assert (limited.matched, limited.more, len(limited.done)) == (2, True, 2)
    for job_id in limited.done:  # new jobs, which fail again (as refused jobs do)
        assert (await client.wait(job_id, timeout_s=10)).task == "client_refuse"
    assert await client.delete_dead_letters(
        failed_before=before
    ) == await client.delete_dead_letters(
        failed_before=before, dry_run=True
    )  # nothing failed before the test began: both empty
    gone = await client.delete_dead_letters(queue="bulk", error_type="TimeoutError")
    assert gone.done == gone.dead_letter_ids and len(gone.done) == 2
    left = await client.dead_letters(queue="bulk")
    assert {d.task for d in left.items} == {"client_refuse"}
    assert [d.job_id for d in (await client.dead_letters(queue="elsewhere")).items] == [
        other_queue.id
    ]
    with pytest.raises(InvalidRequest) as bad:
        await client.requeue_dead_letters(limit=0)
    assert bad.value.field == "limit"
    with pytest.raises(InvalidRequest) as bad:
        await client.delete_dead_letters(tasks="x")
    assert bad.value.field == "tasks"


async def test_jobs_found_by_a_part_of_their_task_or_queue(client: AsyncClient) -> None:
    """`search` (issue 20: the dashboard's filter matched whole names only): any case, and %
    and _ in it are themselves, on both stores alike."""
    outbox = await client.enqueue("echo", queue="Mail_Outbox", delay_s=600)
    lookalike = await client.enqueue("echo", queue="mailxoutbox", delay_s=600)
    other = await client.enqueue("client_sum", [[1]], queue="billing", delay_s=600)

    async def found(text: str) -> set[int]:
        return {j.id for j in (await client.list_jobs(search=text, limit=1000)).items}

    assert {outbox.id, lookalike.id} <= await found("MAIL")
    assert other.id not in await found("mail")
    assert await found("l_o") & {outbox.id, lookalike.id} == {outbox.id}  # _ is no wildcard
    assert await found("%") & {outbox.id, lookalike.id, other.id} == set()  # nor is %
    assert other.id in await found("CLIENT_S")  # the task's name
    assert await found("no such thing") == set()
    with pytest.raises(InvalidRequest) as bad:
        await client.list_jobs(search="x" * 201)
    assert bad.value.field == "search"


async def test_a_queue_purge_cancels_its_pending_jobs_oldest_first(client: AsyncClient) -> None:
    """Issue 20: no purge existed. Pending only (running and elsewhere untouched), in one
    transaction, oldest first up to the limit; a dependant follows its policy."""
    jobs = [await client.enqueue("echo", [i], queue="purge-me", delay_s=600) for i in range(3)]
    after = await client.enqueue(
        "echo", queue="kept", depends_on=[jobs[0].id], on_dependency_failure="cancel"
    )
    elsewhere = await client.enqueue("echo", queue="kept", delay_s=600)
    dry = await client.purge_queue("purge-me", dry_run=True)
    assert (dry.matched, dry.more, dry.cancelled) == (3, False, [])
    first = await client.purge_queue("purge-me", limit=2)
    assert (first.matched, first.more, first.cancelled) == (2, True, [jobs[0].id, jobs[1].id])
    rest = await client.purge_queue("purge-me")
    assert (rest.cancelled, rest.more) == ([jobs[2].id], False)
    for ref in jobs:
        assert (await client.get(ref.id)).status == JobState.CANCELLED
    assert (await client.get(after.id)).status == JobState.CANCELLED  # its dependency was
    assert (await client.get(elsewhere.id)).status == JobState.PENDING
    assert (await client.purge_queue("purge-me")).matched == 0
    with pytest.raises(InvalidRequest) as bad:
        await client.purge_queue("purge-me", limit=0)
    assert bad.value.field == "limit"


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


async def _raw(client: AsyncClient, path: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(client.url + path) as resp:
        assert resp.status == 200
        return await resp.json()


async def test_enqueue_with_deadline_and_unique_key(client: AsyncClient) -> None:
    when = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
    ref = await client.enqueue("echo", delay_s=600, deadline=when, unique_key="uniq-1")
    job = await client.get(ref.id)
    assert (job.deadline, job.unique_key) == (when, "uniq-1")
    assert job.waiting is not None and job.waiting["code"] == "scheduled"
    again = await client.enqueue("echo", ["other"], unique_key="uniq-1")
    assert (again.id, again.created) == (ref.id, False)  # the key is held: the same job

    relative = await client.get((await client.enqueue("echo", delay_s=600, deadline_s=900)).id)
    assert relative.deadline is not None
    assert timedelta(seconds=895) < relative.deadline - relative.created_at < timedelta(seconds=905)

    with pytest.raises(InvalidRequest) as both:
        await client.enqueue("echo", deadline=when, deadline_s=5)
    assert both.value.field == "deadline"
    with pytest.raises(InvalidRequest) as early:  # before the job would start
        await client.enqueue("echo", delay_s=600, deadline_s=1)
    assert early.value.field == "deadline"
    with pytest.raises(ValueError, match="timezone"):
        await client.enqueue("echo", deadline=datetime(2030, 1, 1))


async def test_depends_on_and_pass_result(client: AsyncClient) -> None:
    await client.pause_queue("deps")  # the parent waits until the queue resumes
    parent = await client.enqueue("echo", [2], queue="deps")
    child = await client.enqueue("echo", ["x"], depends_on=[parent.id], pass_result=True)
    info = await client.get(child.id)
    assert info.depends_on == (parent.id,)
    assert info.waiting is not None and info.waiting["code"] == "waiting_for_dependencies"
    await client.resume_queue("deps")
    done = await client.wait(child.id, timeout_s=10)
    assert done.result == {"args": [2, "x"], "kwargs": {}}  # the parent's result comes first

    blocker = await client.enqueue("echo", delay_s=600)
    cancel = await client.enqueue("echo", depends_on=[blocker.id], on_dependency_failure="cancel")
    fail = await client.enqueue("echo", depends_on=[blocker.id])
    await client.cancel(blocker.id)
    assert (await client.wait(cancel.id, timeout_s=10)).status == JobState.CANCELLED
    failed = await client.wait(fail.id, timeout_s=10)
    assert failed.status == JobState.FAILED
    assert failed.error is not None and failed.error.type == "dependency_failed"

    with pytest.raises(InvalidRequest) as missing:
        await client.enqueue("echo", depends_on=[987654])
    assert (missing.value.field, missing.value.message) == ("depends_on", "no job 987654")
    with pytest.raises(InvalidRequest) as policy:
        await client.enqueue("echo", depends_on=[parent.id], on_dependency_failure="ignore")  # type: ignore[arg-type]
    assert policy.value.field == "on_dependency_failure"
    with pytest.raises(TypeError):
        await client.enqueue("echo", depends_on=parent.id)  # type: ignore[arg-type]


async def test_callback_url_is_posted_signed(client: AsyncClient, unused_tcp_port: int) -> None:
    received: asyncio.Queue[tuple[dict[str, str], bytes]] = asyncio.Queue()

    async def hook(request: web.Request) -> web.Response:
        await received.put((dict(request.headers), await request.read()))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()
        url = f"http://127.0.0.1:{unused_tcp_port}/hook"
        ref = await client.enqueue("echo", ["called back"], callback_url=url)
        assert (await client.get(ref.id)).callback_url == url
        headers, body = await asyncio.wait_for(received.get(), 10)
    finally:
        await runner.cleanup()
    sent = json.loads(body)
    assert (sent["id"], sent["status"], sent["result"]) == (ref.id, "succeeded", "called back")
    assert verify(
        WEBHOOK_SECRET, headers[TIMESTAMP_HEADER], body, headers[SIGNATURE_HEADER], time.time()
    )
    with pytest.raises(InvalidRequest) as refused:  # not on the allow-list
        await client.enqueue("echo", callback_url="http://example.com/hook")
    assert refused.value.field == "callback_url"


async def test_delete_job(client: AsyncClient) -> None:
    done = await client.enqueue("echo")
    await client.wait(done.id, timeout_s=10)
    await client.delete_job(done.id)
    with pytest.raises(NotFoundError):
        await client.get(done.id)
    with pytest.raises(NotFoundError):
        await client.delete_job(done.id)
    later = await client.enqueue("echo", delay_s=600)
    with pytest.raises(ConflictError, match="only finished jobs"):
        await client.delete_job(later.id)


async def test_queues_limits_pause_and_resume(client: AsyncClient) -> None:
    await client.enqueue("echo", queue="qa", delay_s=600)
    [qa] = [q for q in await client.queues() if q.name == "qa"]
    assert isinstance(qa, QueueInfo) and qa == await client.queue("qa")
    assert (qa.paused, qa.pending, qa.running, qa.limits) == (False, 1, 0, QueueLimits())
    assert qa.counts == {"pending": 1, "running": 0, "succeeded": 0, "failed": 0, "cancelled": 0}
    assert qa.to_dict() == await _raw(client, "/queues/qa")

    limited = await client.configure_queue("qa", concurrency_limit=2, rate_limit=5, max_depth=10)
    assert limited.limits == QueueLimits(2, 5.0, None, 10)
    # only what is given changes; None lifts a limit
    lifted = await client.configure_queue("qa", rate_limit=None, rate_burst=NOT_GIVEN)
    assert lifted.limits == QueueLimits(2, None, None, 10)
    with pytest.raises(InvalidRequest) as bad:
        await client.configure_queue("qa", concurrency_limit=0)
    assert bad.value.field == "concurrency_limit"

    paused = await client.pause_queue("qa")
    assert paused.paused and (await client.queue("qa")).paused
    ref = await client.enqueue("echo", ["after pause"], queue="qa")
    waiting = await client.get(ref.id, wait_s=0.3)
    assert waiting.status == JobState.PENDING
    assert waiting.waiting == {"code": "queue_paused", "message": "queue 'qa' is paused"}
    assert not (await client.resume_queue("qa")).paused
    assert (await client.wait(ref.id, timeout_s=10)).result == "after pause"

    with pytest.raises(NotFoundError):
        await client.queue("no-such-queue")


async def test_a_full_queue_answers_queue_full(client: AsyncClient) -> None:
    client.retries = 0  # tried again, it waits (the next test)
    await client.configure_queue("tiny", max_depth=1)
    first = await client.enqueue("echo", queue="tiny", delay_s=600)
    with pytest.raises(QueueFull) as full:
        await client.enqueue("echo", queue="tiny", delay_s=600)
    err = full.value
    assert (err.status, err.code, err.field, err.retry_after_s) == (429, "queue_full", "queue", 1.0)
    assert "maximum of 1 pending" in err.message
    await client.cancel(first.id)  # room again
    assert (await client.enqueue("echo", queue="tiny", delay_s=600)).created
    assert (await client.configure_queue("tiny", max_depth=None)).limits.max_depth is None


async def test_schedules(client: AsyncClient) -> None:
    saved = await client.create_schedule(
        "nightly", "echo", "0 3 * * *", ["report"], {"to": "ops"}, queue="sched",
        priority=4, timezone="Europe/Paris", missed="catch_up",
    )  # fmt: skip
    assert isinstance(saved, ScheduleInfo)
    assert (saved.name, saved.task, saved.cron, saved.timezone) == (
        "nightly", "echo", "0 3 * * *", "Europe/Paris",
    )  # fmt: skip
    assert (saved.args, saved.kwargs, saved.queue, saved.priority) == (
        ["report"], {"to": "ops"}, "sched", 4,
    )  # fmt: skip
    assert (saved.missed, saved.paused, saved.source, saved.last_run_at) == (
        "catch_up", False, "api", None,
    )  # fmt: skip
    from zoneinfo import ZoneInfo

    local = saved.next_run_at.astimezone(ZoneInfo("Europe/Paris"))
    assert (local.hour, local.minute) == (3, 0) and saved.next_run_at > datetime.now(UTC)

    paused = await client.create_schedule("often", "echo", "*/5 * * * *", paused=True)
    assert (paused.paused, paused.timezone, paused.missed) == (True, "UTC", "skip")
    listed = {s.name: s for s in await client.schedules()}
    assert listed == {"nightly": saved, "often": paused}
    assert await client.schedule("nightly") == saved
    assert saved.to_dict() == await _raw(client, "/schedules/nightly")

    await client.delete_schedule("nightly")
    with pytest.raises(NotFoundError):
        await client.schedule("nightly")
    with pytest.raises(NotFoundError):
        await client.delete_schedule("nightly")
    assert [s.name for s in await client.schedules()] == ["often"]
    with pytest.raises(InvalidRequest) as bad:
        await client.create_schedule("broken", "echo", "not a cron")
    assert bad.value.field == "cron"


async def test_workflow_chord_runs_to_success(client: AsyncClient) -> None:
    spec = chord(
        group(job("echo", 1), job("echo", 2, timeout_s=5), job("echo", 3, max_retries=1)),
        job("client_sum", deadline_s=600),
    )
    ref = await client.enqueue_workflow(spec)
    assert isinstance(ref, WorkflowRef) and ref.poll_url == f"/workflows/{ref.id}"
    workflow_id, job_ids = ref  # unpacks as (id, job ids)
    assert workflow_id == ref.id and len(job_ids) == 4

    flow = await client.wait_workflow(workflow_id, timeout_s=10)
    assert isinstance(flow, WorkflowInfo)
    assert (flow.status, flow.succeeded, flow.is_terminal) == ("succeeded", True, True)
    assert [j.id for j in flow.jobs] == job_ids
    members, callback = flow.jobs[:3], flow.jobs[3]
    assert [m.result for m in members] == [1, 2, 3] and callback.result == 6
    assert all(j.workflow_id == workflow_id for j in flow.jobs)
    assert sorted(callback.depends_on) == job_ids[:3]
    # the Python option names became the API's
    assert (members[1].timeout_s, members[2].max_retries) == (5, 1)
    assert callback.deadline is not None
    assert await client.workflow(workflow_id) == flow
    assert flow.to_dict() == await _raw(client, f"/workflows/{workflow_id}")


async def test_workflow_failure_policy_and_timeout(client: AsyncClient) -> None:
    failing = chain(job("client_refuse", "no"), job("echo", "never"))
    ref = await client.enqueue_workflow(failing, on_dependency_failure="cancel")
    flow = await client.wait_workflow(ref.id, timeout_s=10)
    assert flow.status == "failed" and not flow.succeeded
    assert [j.status for j in flow.jobs] == [JobState.FAILED, JobState.CANCELLED]

    when = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    later = await client.enqueue_workflow(
        chain(job("echo", 1, delay_s=600), job("echo", run_at=when, backoff=Backoff(2, 3, 4)))
    )
    started = time.monotonic()
    pending = await client.wait_workflow(later.id, timeout_s=0.3)
    assert pending.status == "pending" and not pending.is_terminal
    assert time.monotonic() - started < 3
    first, second = pending.jobs  # delay_s became delay; the datetime an RFC 3339 string
    assert timedelta(seconds=595) < first.run_at - first.created_at < timedelta(seconds=605)
    assert second.run_at == when

    with pytest.raises(NotFoundError):
        await client.workflow(987654)
    with pytest.raises(InvalidRequest) as bad:
        await client.enqueue_workflow(chain(job("echo"), job("echo", priority=5000)))
    assert bad.value.field == "chain[1].priority"
    with pytest.raises(InvalidRequest) as own:
        await client.enqueue_workflow(group(job("echo", depends_on=[1])))
    assert own.value.field == "group[0].depends_on"
    with pytest.raises(ValueError, match="both"):
        await client.enqueue_workflow(group(job("echo", delay_s=1, delay=1)))


async def test_auth_errors_from_a_server_with_tokens(make_server: ServerFactory) -> None:
    server = await make_server(tokens=["full-token"], read_tokens=["read-token"])
    [address] = await server.serve("127.0.0.1", 0)
    async with AsyncClient(address, token="read-token") as reader:
        assert await reader.queues() == []
        with pytest.raises(AuthError) as forbidden:
            await reader.pause_queue("q")
        assert (forbidden.value.status, forbidden.value.code) == (403, "forbidden")
    async with AsyncClient(address, token="wrong") as wrong:
        for _ in range(10):
            with pytest.raises(AuthError) as unauthorized:
                await wrong.schedules()
            assert unauthorized.value.status == 401
            assert not isinstance(unauthorized.value, TooManyFailures)
        with pytest.raises(TooManyFailures) as throttled:
            await wrong.schedules()
    err = throttled.value
    assert isinstance(err, AuthError)
    assert (err.status, err.code, err.field) == (429, "too_many_failures", "Authorization")
    assert err.retry_after_s is not None and 0 < err.retry_after_s <= 60


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
        async with AsyncClient(url, token="s3cret", retries=0) as client:
            assert "s3cret" not in repr(client)
            for status in (401, 403):
                with pytest.raises(AuthError) as auth:
                    await client.get(status)
                assert (auth.value.status, auth.value.code) == (status, f"c{status}")
            with pytest.raises(Unavailable) as unavailable:
                await client.get(503)
            assert unavailable.value.retry_after_s == 3.0
            # not jobserver's answer (a proxy's page): said so, not taken for an API error
            with pytest.raises(UnexpectedResponse) as foreign:
                await client.get(502)
            assert foreign.value.status == 502 and "Bad Gateway" in str(foreign.value)
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
        Client(url, token="s3cret", retries=0).get(status)
    except Exception as exc:
        return exc
    raise AssertionError("no error raised")


# -- Client (sync) against a server subprocess ----------------------------------------------------
@pytest.mark.e2e  # a `jobserver serve` subprocess
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


@pytest.mark.e2e  # a `jobserver serve` subprocess
def test_sync_client_queues_schedules_workflows_and_flow_options(served: ServeProcess) -> None:
    queue = f"sync-{time.monotonic_ns()}"
    with Client(served.url, timeout_s=10) as client:
        # enqueue's new options
        key = f"{queue}-unique"
        held_key = client.enqueue("echo", queue=queue, delay_s=600, unique_key=key)
        assert client.enqueue("echo", ["other"], unique_key=key).id == held_key.id
        client.cancel(held_key.id)  # frees the key
        assert client.enqueue("echo", ["free"], unique_key=key).id != held_key.id
        parent = client.enqueue("echo", [1], queue=queue)
        child = client.enqueue(
            "echo", ["c"], queue=queue, depends_on=[parent.id], pass_result=True,
            callback_url="http://127.0.0.1:9/hook",
        )  # fmt: skip
        done = client.wait(child.id, timeout_s=10)
        assert done.result == {"args": [1, "c"], "kwargs": {}}
        assert (done.depends_on, done.callback_url) == ((parent.id,), "http://127.0.0.1:9/hook")
        expiring = client.get(client.enqueue("echo", delay_s=600, deadline_s=900).id)
        assert expiring.deadline is not None and expiring.deadline > expiring.run_at
        client.cancel(expiring.id)

        # delete_job
        client.delete_job(child.id)
        with pytest.raises(NotFoundError):
            client.delete_job(child.id)

        # queues: limits, pause / resume, a full queue
        configured = client.configure_queue(queue, max_depth=1, concurrency_limit=3)
        assert configured.limits == QueueLimits(3, None, None, 1)
        assert client.pause_queue(queue).paused
        held = client.enqueue("echo", ["held"], queue=queue)
        with pytest.raises(QueueFull) as full:
            client.enqueue("echo", queue=queue)
        assert (full.value.status, full.value.retry_after_s) == (429, 1.0)
        [info] = [q for q in client.queues() if q.name == queue]
        again = client.queue(queue)
        assert (info.name, info.limits, info.counts) == (again.name, again.limits, again.counts)
        assert (info.paused, info.pending) == (True, 1) and info.oldest_due_age_s is not None
        assert client.get(held.id).waiting == {
            "code": "queue_paused", "message": f"queue '{queue}' is paused",
        }  # fmt: skip
        assert not client.resume_queue(queue).paused
        assert client.wait(held.id, timeout_s=10).result == "held"
        lifted = client.configure_queue(queue, max_depth=None)
        assert lifted.limits == QueueLimits(3, None, None, None)

        # schedules
        name = f"{queue}-every-5"
        saved = client.create_schedule(name, "echo", "*/5 * * * *", ["tick"], queue=queue)
        assert (saved.name, saved.args, saved.missed, saved.source) == (
            name,
            ["tick"],
            "skip",
            "api",
        )
        assert saved in client.schedules() and client.schedule(name) == saved
        client.delete_schedule(name)
        assert name not in [s.name for s in client.schedules()]
        with pytest.raises(NotFoundError):
            client.schedule(name)

        # a workflow: a chord whose callback sums
        spec = chord([job("echo", n, queue=queue) for n in (1, 2, 3)], job("cli_sum", queue=queue))
        workflow_id, job_ids = client.enqueue_workflow(spec)
        flow = client.wait_workflow(workflow_id, timeout_s=10)
        assert (flow.status, [j.id for j in flow.jobs]) == ("succeeded", job_ids)
        assert flow.jobs[-1].result == 6 and client.workflow(workflow_id) == flow


def _raw_get(url: str, job_id: int) -> Any:
    import urllib.request

    with urllib.request.urlopen(f"{url}/jobs/{job_id}", timeout=10) as resp:
        return json.loads(resp.read())


async def test_an_enqueue_to_a_full_queue_is_tried_again_after_retry_after(
    client: AsyncClient,
) -> None:
    """429 queue_full wrote nothing: the client waits the Retry-After (1 s) and sends it
    again, so a queue that drains meanwhile takes the job; retries=0 raises at once."""
    await client.configure_queue("drains", max_depth=1)
    first = await client.enqueue("echo", queue="drains", delay_s=600)

    async def drain_soon() -> None:
        await asyncio.sleep(0.3)
        await client.cancel(first.id)

    drained = asyncio.ensure_future(drain_soon())
    second = await client.enqueue("echo", queue="drains", delay_s=600)
    await drained
    assert second.created and second.id != first.id
    client.retries = 0
    with pytest.raises(QueueFull):
        await client.enqueue("echo", queue="drains", delay_s=600)
    pending = await client.list_jobs(status="pending", queue="drains")
    assert [j.id for j in pending.items] == [second.id]  # each try wrote nothing


def _a_job() -> Job:
    return Job(
        id=1, task="echo", queue="default", status=JobState.SUCCEEDED, priority=0, args=[],
        kwargs={}, attempts=1, max_retries=3, timeout_s=None, backoff=Backoff(),
        created_at=1e9, run_at=1e9,
    )  # fmt: skip


async def _counting_server(port: int, answers: list[tuple[int, dict[str, str]]]) -> Any:
    """A server that answers GET /jobs/{id} with the given (status, headers) in turn, then
    200, and records each request's client port (one port: one connection)."""
    ports: list[int] = []

    async def handler(request: web.Request) -> web.Response:
        ports.append(request.transport.get_extra_info("peername")[1])  # type: ignore[union-attr]
        if answers:
            status, headers = answers.pop(0)
            body = {"error": {"code": "unavailable", "message": "busy", "field": None}}
            return web.json_response(body, status=status, headers=headers)
        return web.json_response(job_to_dict(_a_job()))

    app = web.Application()
    app.router.add_get("/jobs/{id}", handler)
    runner = web.AppRunner(app, keepalive_timeout=0.3)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, ports


async def test_503_is_tried_again_with_its_retry_after_and_a_long_one_is_raised(
    unused_tcp_port: int,
) -> None:
    busy = (503, {"Retry-After": "0.05"})
    answers = [busy, busy]
    runner, ports = await _counting_server(unused_tcp_port, answers)
    url = f"http://127.0.0.1:{unused_tcp_port}"
    try:
        async with AsyncClient(url) as client:
            assert (await client.get(1)).id == 1
        assert len(ports) == 3  # two 503s, then the answer
        answers += [busy, busy]
        with Client(url) as sync:
            assert (await asyncio.to_thread(sync.get, 1)).id == 1
        assert len(ports) == 6
        answers += [busy, busy]
        async with AsyncClient(url, retries=1) as client:
            with pytest.raises(Unavailable):
                await client.get(1)  # one retry, and the second 503 is raised
        assert len(ports) == 8
        answers.append((503, {"Retry-After": "3600"}))  # longer than MAX_RETRY_WAIT_S
        started = time.monotonic()
        async with AsyncClient(url) as client:
            with pytest.raises(Unavailable):
                await client.get(1)
        assert time.monotonic() - started < 5 and len(ports) == 9
    finally:
        await runner.cleanup()


async def test_the_sync_client_keeps_one_connection_and_outlives_the_servers_idle_close(
    unused_tcp_port: int,
) -> None:
    """Calls share one kept-alive connection (the client once connected per call); after the
    server closed it for idleness, the next call opens another and is sent once."""
    runner, ports = await _counting_server(unused_tcp_port, [])
    try:
        with Client(f"http://127.0.0.1:{unused_tcp_port}") as client:

            def calls() -> list[int]:  # in one thread: a connection is a thread's
                ids = [client.get(1).id for _ in range(5)]
                time.sleep(0.8)  # past the server's keep-alive of 0.3 s: it closed
                return [*ids, client.get(1).id]

            assert await asyncio.to_thread(calls) == [1] * 6
            assert len(set(ports[:5])) == 1
            assert len(ports) == 6 and ports[-1] != ports[0]
    finally:
        await runner.cleanup()


def test_every_input_mistake_is_a_client_error_before_any_request() -> None:
    client = Client("http://127.0.0.1:9")  # nothing listens: a request would fail otherwise
    for call in (
        lambda: client.enqueue("echo", run_at=datetime(2030, 1, 1)),  # naive
        lambda: client.enqueue("echo", run_at="tomorrow"),
        lambda: client.enqueue("echo", run_at=1.5e9),  # type: ignore[arg-type]
        lambda: client.enqueue("echo", "abc"),
        lambda: client.enqueue("echo", depends_on=5),  # type: ignore[arg-type]
        lambda: client.get("7"),  # type: ignore[arg-type]
    ):
        with pytest.raises(InvalidArgument):
            call()
    with pytest.raises(InvalidArgument):
        Client("ftp://x")
    with pytest.raises(InvalidArgument):
        Client(retries=-1)
