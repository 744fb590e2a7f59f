"""What the server publishes (its event stream) is what the store wrote, on both stores.

The worker used to guess a write's result from a bool: a failed attempt whose cancel was
requested (by another node, say) was published `pending` with a retry while the row said
`cancelled`, and its end was never published; a release at shutdown the same. Jobs put back by
the rescuer and jobs fired by a schedule were not published at all."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from jobserver import JobServer, JobState, ManualClock
from jobserver.events import Event, EventFilter, decode_log
from jobserver.models import NewJob
from jobserver.schedule import next_tick
from jobserver.tasks import Registry, task

from ..conftest import ServerFactory, eventually

reg = Registry()
gates: dict[str, asyncio.Event] = {}


@task(registry=reg, max_retries=3)
async def fails_when_let_go(name: str) -> None:
    await gates.setdefault(name, asyncio.Event()).wait()
    raise ValueError("failed after its cancel was asked for")


@task(registry=reg)
async def waits(name: str) -> str:
    await gates.setdefault(name, asyncio.Event()).wait()
    return name


@task(registry=reg)
async def noop() -> None:
    return None


@pytest.fixture(autouse=True)
def _reset() -> None:
    gates.clear()


async def start(make_server: ServerFactory, **kwargs: Any) -> JobServer:
    """A server on each store (conftest's make_server), with this module's tasks."""
    return await make_server(tasks=list(reg), **kwargs)


async def published(server: JobServer, job_id: int) -> list[str]:
    """The states published for a job, in order (from the server's kept event history)."""
    states: list[str] = []
    async for event in server.events.stream(EventFilter(), after_id=0, idle_s=0.02):
        if event is None:
            break
        if isinstance(event, Event) and event.job_id == job_id:
            states.append(event.state)
    return states


async def last_published(server: JobServer, job_id: int) -> str | None:
    states = await published(server, job_id)
    return states[-1] if states else None


async def test_a_failed_attempt_whose_cancel_was_requested_is_published_cancelled(
    make_server: ServerFactory, clock: ManualClock
) -> None:
    server = await start(make_server)
    job = await server.enqueue("fails_when_let_go", ["a"])
    await eventually(lambda: server.get_job(job.id), lambda j: j.status == JobState.RUNNING)
    # Asked of the store, as another node's API would: this node's run is not told at once.
    await server.store.request_cancel(job.id, clock.now())
    gates.setdefault("a", asyncio.Event()).set()  # the attempt fails; the worker asks a retry
    await eventually(lambda: last_published(server, job.id), lambda s: s == "cancelled")
    stored = await server.get_job(job.id)
    assert stored.status == JobState.CANCELLED
    assert await published(server, job.id) == ["pending", "running", "cancelled"]


async def test_a_release_at_shutdown_whose_cancel_was_requested_is_published_cancelled(
    make_server: ServerFactory, clock: ManualClock
) -> None:
    server = await start(make_server)
    job = await server.enqueue("waits", ["b"])
    await eventually(lambda: server.get_job(job.id), lambda j: j.status == JobState.RUNNING)
    await server.store.request_cancel(job.id, clock.now())
    await server.stop(grace_period_s=0.05)  # cut off: the run is released
    await server.store.open()  # the stopped server's store, opened again to read the row
    try:
        stored = await server.store.get_job(job.id)
        assert stored is not None and stored.status == JobState.CANCELLED
        # streams end at shutdown: what was published during the drain is in the log
        rows = await server.store.read_event_log(0, 2**62, 1000)
        logged = [e.state for r in rows for e in decode_log(*r) if e.job_id == job.id]
        assert logged == ["pending", "running", "cancelled"]
    finally:
        await server.store.close()


async def test_a_job_put_back_by_the_rescuer_is_published_pending_then_runs(
    make_server: ServerFactory, clock: ManualClock
) -> None:
    server = await start(make_server, lease_ttl_s=30, rescue_interval_s=7)
    start_at = clock.now() + 1  # due later, so this server's worker cannot take it first
    [enqueued] = await server.store.enqueue([NewJob(task="noop", run_at=start_at)], clock.now())
    [held] = await server.store.claim(1, start_at, 30)  # "another node", which then dies
    clock.advance(1 + 30 + 7)
    done = await server.wait_for(held.id, timeout_s=5)
    assert (done.status, done.attempts) == (JobState.SUCCEEDED, 2)
    assert enqueued.job.id == held.id
    # every move the store made: the dead run's claim and its rescue included
    assert await published(server, held.id) == [
        "pending",
        "running",
        "pending",
        "running",
        "succeeded",
    ]


async def test_a_job_fired_by_a_schedule_is_published_from_pending(
    make_server: ServerFactory, clock: ManualClock
) -> None:
    server = await start(make_server)
    saved = await server.save_schedule("every-minute", "noop", "* * * * *")
    assert saved.next_tick_at == next_tick("* * * * *", clock.now())
    clock.set(saved.next_tick_at)
    history = await eventually(
        lambda: _schedule_jobs(server), lambda jobs: len(jobs) == 1 and jobs[0].is_terminal
    )
    assert history[0].status == JobState.SUCCEEDED
    assert await published(server, history[0].id) == ["pending", "running", "succeeded"]


async def _schedule_jobs(server: JobServer) -> list[Any]:
    from jobserver.store.base import JobFilter

    return await server.list_jobs(JobFilter(task="noop"), 10, None)


@task(registry=reg, max_retries=0)
async def fails_at_once() -> None:
    raise ValueError("no")


async def published_events(server: JobServer, job_id: int) -> list[Event]:
    found: list[Event] = []
    async for event in server.events.stream(EventFilter(job_id=job_id), after_id=0, idle_s=0.02):
        if event is None:
            break
        if isinstance(event, Event):
            found.append(event)
    return found


async def assert_published_is_stored(server: JobServer, job_id: int) -> None:
    """The last event of the job says what its row says: state and attempts."""
    stored = await server.get_job(job_id)
    last = (await published_events(server, job_id))[-1]
    assert (last.state, last.attempt) == (stored.status.value, stored.attempts)


async def test_a_dependant_ended_by_its_dependency_is_published_as_stored(
    make_server: ServerFactory,
) -> None:
    server = await start(make_server)
    parent = await server.enqueue("fails_at_once")
    child = await server.enqueue("noop", depends_on=[parent.id])
    await eventually(lambda: server.get_job(child.id), lambda j: j.is_terminal)
    assert await published(server, parent.id) == ["pending", "running", "failed"]
    assert await published(server, child.id) == ["pending", "failed"]
    await assert_published_is_stored(server, child.id)


async def test_a_cancelled_pending_job_and_a_requeued_dead_letter_are_published(
    make_server: ServerFactory,
) -> None:
    server = await start(make_server)
    later = await server.enqueue("noop", delay_s=3600)
    await server.cancel(later.id)
    assert await published(server, later.id) == ["pending", "cancelled"]
    failed = await server.enqueue("fails_at_once")
    await eventually(lambda: server.get_job(failed.id), lambda j: j.is_terminal)
    [letter] = await server.list_dead_letters(10, None)
    again = await server.requeue_dead_letter(letter.id)
    await eventually(lambda: server.get_job(again.id), lambda j: j.is_terminal)
    assert await published(server, again.id) == ["pending", "running", "failed"]
    for job_id in (later.id, failed.id, again.id):
        await assert_published_is_stored(server, job_id)


async def test_a_job_past_its_deadline_is_published_failed_by_the_rescuer(
    make_server: ServerFactory, clock: ManualClock
) -> None:
    server = await start(make_server, rescue_interval_s=5)
    await server.configure_queue("held", paused=True)  # nothing starts there
    job = await server.enqueue("noop", queue="held", deadline_s=30)
    clock.advance(40)  # past the deadline; the rescuer runs every 5 s
    await eventually(lambda: server.get_job(job.id), lambda j: j.is_terminal)
    assert await published(server, job.id) == ["pending", "failed"]
    await assert_published_is_stored(server, job.id)
    assert (await server.get_job(job.id)).error["type"] == "expired"


async def test_every_transition_is_published_once_and_in_order(
    make_server: ServerFactory, clock: ManualClock
) -> None:
    """A failed attempt retried, then run to success: each move once, attempts as stored."""
    server = await start(make_server)
    job = await server.enqueue("fails_when_let_go", ["c"], max_retries=1)
    await eventually(lambda: server.get_job(job.id), lambda j: j.status == JobState.RUNNING)
    gates["c"].set()
    await eventually(lambda: last_published(server, job.id), lambda s: s == "pending")
    clock.advance(3600)  # past any backoff: the retry runs, fails for good
    await eventually(lambda: server.get_job(job.id), lambda j: j.is_terminal)
    events = await published_events(server, job.id)
    assert [(e.state, e.attempt) for e in events] == [
        ("pending", 0),
        ("running", 1),
        ("pending", 1),
        ("running", 2),
        ("failed", 2),
    ]
    await assert_published_is_stored(server, job.id)
