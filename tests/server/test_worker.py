"""The worker pool, driven through an embedded JobServer on a real SQLite file.

Time is a ManualClock: it never moves unless a test moves it, so a job that runs proves the
worker was woken, and a retry that waits proves it waits for the clock, not for a poll."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest

from jobserver import Backoff, JobContext, JobServer, JobState, ManualClock, PermanentError, Retry
from jobserver.errors import Conflict
from jobserver.models import NewJob
from jobserver.store.sqlite import SQLiteStore
from jobserver.tasks import Registry, current_job, task

from ..conftest import ServerFactory, eventually

reg = Registry()
calls: dict[str, list[Any]] = {}
gates: dict[str, asyncio.Event] = {}


def record(name: str, value: Any) -> None:
    calls.setdefault(name, []).append(value)


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()
    gates.clear()


@task(registry=reg)
async def add(a: int, b: int) -> int:
    return a + b


@task(registry=reg)
def sync_add(a: int, b: int) -> dict[str, Any]:
    return {"sum": a + b, "thread": threading.current_thread().name, "job": current_job().job_id}


@task(registry=reg, timeout=0.05, max_retries=0)
async def too_slow() -> None:
    await asyncio.sleep(30)


@task(registry=reg, timeout=0.05, max_retries=0)
async def swallows_cancellation() -> str:
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        await asyncio.sleep(0.01)  # pretends it never heard
    return "too late"


@task(registry=reg, max_retries=3, backoff=Backoff(base_s=10, factor=2, cap_s=100))
async def flaky(ctx: JobContext) -> int:
    record("flaky", ctx.attempt)
    if ctx.attempt < 3:
        raise ValueError(f"attempt {ctx.attempt} fails")
    return ctx.attempt


@task(registry=reg, max_retries=1, backoff=Backoff(base_s=1, factor=1, cap_s=1))
async def fails_while_flagged() -> str:
    if calls.get("broken"):
        raise RuntimeError("still broken")
    return "fixed"


@task(registry=reg, max_retries=5)
async def permanent() -> None:
    record("permanent", 1)
    raise PermanentError("bad input, no point retrying")


@task(registry=reg, max_retries=5, retry_on=(ValueError,))
async def raises_key_error() -> None:
    raise KeyError("not a ValueError")


@task(registry=reg, max_retries=5)
async def asks_for_retry(ctx: JobContext) -> str:
    if ctx.attempt == 1:
        raise Retry(delay_s=50)
    return "second time lucky"


@task(registry=reg)
async def waits_forever(ctx: JobContext) -> None:
    try:
        ctx.progress(0.5, "half way")
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        record("saw_cancel", ctx.job_id)
        raise


@task(registry=reg)
def sync_waits_for_cancel(ctx: JobContext) -> str:
    while not ctx.cancelled:
        threading.Event().wait(0.005)
    record("sync_saw_cancel", ctx.cancel_reason)
    return "stopped"


@task(registry=reg)
async def gated(name: str) -> str:
    await gates.setdefault(name, asyncio.Event()).wait()
    return name


@task(registry=reg, max_retries=1)
async def retries_at_once_then_waits(ctx: JobContext) -> str:
    if ctx.attempt == 1:
        raise Retry(delay_s=0)
    await gates.setdefault("second run", asyncio.Event()).wait()
    return "second run"


@task(registry=reg)
async def unserialisable() -> object:
    return object()


async def start(make_server: ServerFactory, **kwargs: Any) -> JobServer:
    kwargs.setdefault("tasks", list(reg))
    return await make_server(**kwargs)


async def status_of(server: JobServer, job_id: int) -> JobState:
    return (await server.get_job(job_id)).status


async def test_an_enqueued_job_runs_at_once_without_the_clock_moving(
    make_server: ServerFactory, clock: ManualClock
) -> None:
    server = await start(make_server)
    before = clock.now()
    job = await server.enqueue("add", [2, 3])
    done = await server.wait_for(job.id, timeout_s=5)
    assert done.status == JobState.SUCCEEDED
    assert done.result == 5
    assert done.attempts == 1
    assert clock.now() == before  # woken by the enqueue, not by a timer


async def test_sync_tasks_run_in_the_thread_pool(make_server: ServerFactory) -> None:
    server = await start(make_server)
    job = await server.enqueue("sync_add", [1, 2])
    done = await server.wait_for(job.id, timeout_s=5)
    assert done.status == JobState.SUCCEEDED
    assert done.result["sum"] == 3
    assert done.result["thread"].startswith("jobserver-task")
    assert done.result["job"] == job.id  # current_job() reaches into the thread


async def test_a_timed_out_attempt_is_a_failure_that_says_timeout(
    make_server: ServerFactory,
) -> None:
    server = await start(make_server)
    job = await server.enqueue("too_slow")
    done = await server.wait_for(job.id, timeout_s=5)
    assert done.status == JobState.FAILED
    assert done.error is not None and done.error["type"] == "timeout"
    assert "timeout" in done.error["message"]
    [dl] = await server.list_dead_letters(10, None)
    assert dl.job_id == job.id


async def test_a_task_that_swallows_its_timeout_is_timed_out_and_its_result_dropped(
    make_server: ServerFactory,
) -> None:
    server = await start(make_server)
    job = await server.enqueue("swallows_cancellation")
    done = await server.wait_for(job.id, timeout_s=5)
    assert done.status == JobState.FAILED and done.result is None
    assert done.error is not None and done.error["type"] == "timeout"


async def test_a_per_job_timeout_overrides_the_task_default(make_server: ServerFactory) -> None:
    server = await start(make_server)
    job = await server.enqueue("gated", ["never"], timeout_s=0.05, max_retries=0)
    done = await server.wait_for(job.id, timeout_s=5)
    assert done.status == JobState.FAILED
    assert done.error is not None and done.error["type"] == "timeout"


async def test_retries_back_off_then_succeed(
    make_server: ServerFactory, clock: ManualClock
) -> None:
    server = await start(make_server)
    job = await server.enqueue("flaky")
    for attempt in (1, 2):
        waiting = await eventually(
            lambda: server.get_job(job.id),
            lambda j, n=attempt: j.status == JobState.PENDING and j.attempts == n,  # type: ignore[misc]
        )
        delay = waiting.run_at - clock.now()
        ceiling = min(100, 10 * 2 ** (attempt - 1))
        assert 0 <= delay <= ceiling  # full jitter within the exponential ceiling
        assert waiting.error is not None and waiting.error["type"] == "ValueError"
        clock.advance(ceiling)
    done = await server.wait_for(job.id, timeout_s=5)
    assert done.status == JobState.SUCCEEDED
    assert done.result == 3
    assert calls["flaky"] == [1, 2, 3]


async def test_exhausted_retries_dead_letter_then_requeue_succeeds(
    make_server: ServerFactory, clock: ManualClock
) -> None:
    calls["broken"] = [True]
    server = await start(make_server)
    job = await server.enqueue("fails_while_flagged")
    await eventually(
        lambda: server.get_job(job.id), lambda j: j.attempts == 1 and not j.lease_token
    )
    clock.advance(1)
    done = await server.wait_for(job.id, timeout_s=5)
    assert done.status == JobState.FAILED
    assert done.attempts == 2  # max_retries=1: two attempts in all
    [dl] = await server.list_dead_letters(10, None)
    assert (dl.job_id, dl.attempts, dl.task) == (job.id, 2, "fails_while_flagged")
    assert dl.error is not None and dl.error["message"] == "still broken"

    calls.pop("broken")
    fresh = await server.requeue_dead_letter(dl.id)
    again = await server.wait_for(fresh.id, timeout_s=5)
    assert again.status == JobState.SUCCEEDED and again.result == "fixed"
    assert await server.list_dead_letters(10, None) == []


async def test_a_permanent_error_is_never_retried(make_server: ServerFactory) -> None:
    server = await start(make_server)
    job = await server.enqueue("permanent")
    done = await server.wait_for(job.id, timeout_s=5)
    assert done.status == JobState.FAILED and done.attempts == 1
    assert calls["permanent"] == [1]
    assert done.error is not None and done.error["type"] == "PermanentError"


async def test_only_exceptions_in_retry_on_are_retried(make_server: ServerFactory) -> None:
    server = await start(make_server)
    job = await server.enqueue("raises_key_error")
    done = await server.wait_for(job.id, timeout_s=5)
    assert done.status == JobState.FAILED and done.attempts == 1


async def test_a_task_can_ask_for_a_retry_after_a_delay(
    make_server: ServerFactory, clock: ManualClock
) -> None:
    server = await start(make_server)
    job = await server.enqueue("asks_for_retry")
    waiting = await eventually(
        lambda: server.get_job(job.id), lambda j: j.status == JobState.PENDING and j.attempts == 1
    )
    assert waiting.run_at == clock.now() + 50
    clock.advance(49)
    assert (await server.get_job(job.id)).status == JobState.PENDING
    clock.advance(1)
    done = await server.wait_for(job.id, timeout_s=5)
    assert done.result == "second time lucky" and done.attempts == 2


async def test_cancelling_a_running_async_task_cancels_it(make_server: ServerFactory) -> None:
    server = await start(make_server)
    job = await server.enqueue("waits_forever")
    await eventually(lambda: server.get_job(job.id), lambda j: j.progress == 0.5)
    seen = await server.get_job(job.id)
    assert seen.status == JobState.RUNNING and seen.progress_message == "half way"
    await server.cancel(job.id)
    done = await server.wait_for(job.id, timeout_s=5)
    assert done.status == JobState.CANCELLED
    assert calls["saw_cancel"] == [job.id]
    assert await server.list_dead_letters(10, None) == []  # cancelled is not failed
    assert (await server.cancel(job.id)).status == JobState.CANCELLED  # idempotent


async def test_cancelling_a_finished_job_is_a_conflict(make_server: ServerFactory) -> None:
    server = await start(make_server)
    job = await server.enqueue("add", [1, 1])
    await server.wait_for(job.id, timeout_s=5)
    with pytest.raises(Conflict):
        await server.cancel(job.id)


async def test_a_sync_task_sees_its_cancellation_flag(make_server: ServerFactory) -> None:
    server = await start(make_server)
    job = await server.enqueue("sync_waits_for_cancel")
    await eventually(lambda: status_of(server, job.id), lambda s: s == JobState.RUNNING)
    await server.cancel(job.id)
    done = await server.wait_for(job.id, timeout_s=5)
    assert done.status == JobState.CANCELLED
    await eventually(lambda: _value(calls, "sync_saw_cancel"), lambda v: v == ["cancelled"])


async def _value(d: dict[str, Any], key: str) -> Any:
    return d.get(key)


async def test_cancelling_a_pending_job_is_immediate_and_idempotent(
    make_server: ServerFactory,
) -> None:
    server = await start(make_server)
    job = await server.enqueue("add", [1, 2], delay_s=3600)
    assert (await server.cancel(job.id)).status == JobState.CANCELLED
    assert (await server.cancel(job.id)).status == JobState.CANCELLED
    assert (await server.wait_for(job.id, timeout_s=0)).status == JobState.CANCELLED


async def test_delayed_jobs_wait_for_the_clock(
    make_server: ServerFactory, clock: ManualClock
) -> None:
    server = await start(make_server)
    job = await server.enqueue("add", [1, 1], delay_s=30)
    clock.advance(29.9)
    # the dispatcher, having claimed what was due, sleeps until the job's time: proof that it
    # looked at 29.9 s and left the job alone
    await clock.wait_for_sleep_until(job.run_at)
    assert (await server.get_job(job.id)).status == JobState.PENDING
    clock.advance(0.1)
    assert (await server.wait_for(job.id, timeout_s=5)).status == JobState.SUCCEEDED


async def test_a_job_due_before_the_planned_wake_moves_the_wake_earlier(
    make_server: ServerFactory, clock: ManualClock
) -> None:
    """An enqueue wakes an idle dispatcher only for a job due before the wake it planned:
    a job due earlier must still run on time, one due later must not be forgotten."""
    server = await start(make_server)
    later = await server.enqueue("add", [1, 0], delay_s=100)
    await clock.wait_for_sleep_until(later.run_at)  # the dispatcher plans its wake for `later`
    sooner = await server.enqueue("add", [2, 0], delay_s=50)
    latest = await server.enqueue("add", [3, 0], delay_s=200)
    await clock.wait_for_sleep_until(sooner.run_at)  # ... and moves it earlier for `sooner`
    clock.advance(50)
    assert (await server.wait_for(sooner.id, timeout_s=5)).status == JobState.SUCCEEDED
    await clock.wait_for_sleep_until(later.run_at)  # asleep again, until `later` is due
    assert (await server.get_job(later.id)).status == JobState.PENDING
    clock.advance(50)
    assert (await server.wait_for(later.id, timeout_s=5)).status == JobState.SUCCEEDED
    await clock.wait_for_sleep_until(latest.run_at)
    assert (await server.get_job(latest.id)).status == JobState.PENDING
    clock.advance(100)
    assert (await server.wait_for(latest.id, timeout_s=5)).status == JobState.SUCCEEDED


async def test_concurrency_caps_jobs_running_at_once(make_server: ServerFactory) -> None:
    server = await start(make_server, concurrency=2)
    jobs = [await server.enqueue("gated", [f"g{i}"]) for i in range(4)]
    await eventually(lambda: server.store.count_by_status(), lambda c: c["running"] == 2)
    assert sorted(server.worker.running_ids) == [jobs[0].id, jobs[1].id]
    for i in range(4):
        gates.setdefault(f"g{i}", asyncio.Event()).set()
    for job in jobs:
        assert (await server.wait_for(job.id, timeout_s=5)).status == JobState.SUCCEEDED


async def test_a_result_that_is_not_json_fails_the_job(make_server: ServerFactory) -> None:
    server = await start(make_server)
    job = await server.enqueue("unserialisable", max_retries=3)
    done = await server.wait_for(job.id, timeout_s=5)
    assert done.status == JobState.FAILED and done.attempts == 1
    assert done.error is not None and "JSON" in done.error["message"]


async def test_a_job_whose_task_is_gone_fails_for_good(make_server: ServerFactory) -> None:
    server = await start(make_server)
    [res] = await server.store.enqueue([NewJob(task="renamed_long_ago")], server.clock.now())
    server.worker.wake()
    done = await server.wait_for(res.job.id, timeout_s=5)
    assert done.status == JobState.FAILED
    assert done.error is not None and done.error["type"] == "UnknownTask"


async def test_shutdown_releases_unfinished_jobs_without_using_an_attempt(
    make_server: ServerFactory,
) -> None:
    server = await start(make_server)
    job = await server.enqueue("gated", ["held"])
    await eventually(lambda: status_of(server, job.id), lambda s: s == JobState.RUNNING)
    await server.stop(grace_period_s=0.05)
    store = server.store  # the stopped server's store, opened again to read the row
    await store.open()
    try:
        after = await store.get_job(job.id)
        assert after is not None
        assert (after.status, after.attempts, after.lease_token) == (JobState.PENDING, 0, None)
    finally:
        await store.close()


async def test_shutdown_lets_running_jobs_finish_within_the_grace_period(
    make_server: ServerFactory,
) -> None:
    server = await start(make_server)
    job = await server.enqueue("gated", ["soon"])
    await eventually(lambda: status_of(server, job.id), lambda s: s == JobState.RUNNING)
    stopping = asyncio.create_task(server.stop(grace_period_s=5))
    await asyncio.sleep(0)  # let stop() begin: no new claims from here on
    gates.setdefault("soon", asyncio.Event()).set()
    await stopping
    store = server.store  # the stopped server's store, opened again to read the row
    await store.open()
    try:
        after = await store.get_job(job.id)
        assert after is not None and after.status == JobState.SUCCEEDED
    finally:
        await store.close()


async def test_a_restart_recovers_jobs_left_running_by_a_crash(
    tmp_path: Any, make_server: ServerFactory, clock: ManualClock
) -> None:
    db = tmp_path / "crash.db"
    crashed = SQLiteStore(db)
    await crashed.open()
    await crashed.enqueue([NewJob(task="add", args=[20, 22])], clock.now())
    [held] = await crashed.claim(1, clock.now(), 30)
    await crashed.close()  # the "crashed" process never finished its job

    server = await start(make_server, db=db)
    done = await server.wait_for(held.id, timeout_s=5)
    assert done.status == JobState.SUCCEEDED and done.result == 42
    assert done.attempts == 2  # the crashed attempt counted


async def test_a_lease_that_expires_is_rescued_and_run_again(
    make_server: ServerFactory, clock: ManualClock
) -> None:
    server = await start(make_server, lease_ttl_s=30, rescue_interval_s=7)
    # A job claimed by "another worker" that then stops renewing its lease; it is due only
    # in a second, so this server's own worker cannot take it first.
    start_at = clock.now() + 1
    await server.store.enqueue([NewJob(task="add", args=[1, 1], run_at=start_at)], clock.now())
    [held] = await server.store.claim(1, start_at, 30)
    clock.advance(1 + 25)  # lease not yet expired: the rescuer leaves it alone
    # the rescuer sleeps its interval again only after a pass at this time has ended (7 s:
    # no other service's wake falls there)
    await clock.wait_for_sleep_until(clock.now() + 7)
    assert (await server.get_job(held.id)).status == JobState.RUNNING
    clock.advance(7)  # the lease ended at 31 s; the rescuer's next pass is at 33 s
    done = await server.wait_for(held.id, timeout_s=5)
    assert done.status == JobState.SUCCEEDED and done.attempts == 2


async def test_a_healthy_lease_is_renewed_and_never_rescued(
    make_server: ServerFactory, clock: ManualClock
) -> None:
    server = await start(make_server, lease_ttl_s=30, rescue_interval_s=5)
    job = await server.enqueue("gated", ["long"])
    await eventually(lambda: status_of(server, job.id), lambda s: s == JobState.RUNNING)
    for _ in range(12):  # two minutes of clock time, four lease lifetimes
        first = (await server.get_job(job.id)).lease_expires_at
        await clock.wait_for_sleep_until(clock.now() + 10)  # the heartbeat waits its interval
        clock.advance(10)
        await eventually(
            lambda: server.get_job(job.id),
            lambda j, f=first: j.lease_expires_at is not None and j.lease_expires_at > f,  # type: ignore[misc]
        )
    seen = await server.get_job(job.id)
    assert seen.status == JobState.RUNNING and seen.attempts == 1
    gates["long"].set()
    assert (await server.wait_for(job.id, timeout_s=5)).status == JobState.SUCCEEDED


async def test_a_job_task_cancelled_before_its_first_step_gives_its_slot_back(
    make_server: ServerFactory, clock: ManualClock
) -> None:
    server = await start(make_server, concurrency=1, lease_ttl_s=30, rescue_interval_s=5)
    await server.store.enqueue([NewJob(task="add", args=[2, 3], run_at=clock.now() + 1)], 0)
    [job] = await server.store.claim(1, clock.now() + 1, 30)
    worker = server.worker
    worker._start_job(job)
    assert worker.cancel_running(job.id)  # in the same loop turn: none of its code has run
    await eventually(lambda: asyncio.sleep(0, job.id in worker.running_ids), lambda r: not r)
    # the slot is free: with concurrency 1, the next job can run
    follower = await server.enqueue("add", [1, 1])
    assert (await server.wait_for(follower.id, timeout_s=5)).result == 2
    # Its lease is no longer renewed: once it expires the job is rescued and runs again.
    clock.advance(1 + 30 + 5)
    done = await server.wait_for(job.id, timeout_s=5)
    assert (done.status, done.result, done.attempts) == (JobState.SUCCEEDED, 5, 2)


async def test_a_retry_claimed_with_its_own_retry_write_stays_tracked_while_it_runs(
    make_server: ServerFactory,
) -> None:
    """The retry is due at once, so the claim that starts its second run can share the
    transaction of the retry's write: the first run's end must not forget the second run
    (which would stop its lease being renewed and a client's cancel reaching it)."""
    server = await start(make_server)
    job = await server.enqueue("retries_at_once_then_waits")
    await eventually(lambda: server.get_job(job.id), lambda j: j.attempts == 2)
    await eventually(lambda: asyncio.sleep(0, gates.get("second run")), bool)
    for _ in range(5):  # a few loop turns: whatever the first run's end does has happened
        await asyncio.sleep(0)
    assert server.worker.running_ids == [job.id]
    assert server.worker.cancel_running(job.id)
    assert (await server.wait_for(job.id, timeout_s=5)).status == JobState.CANCELLED


async def test_a_job_that_falls_due_between_claim_and_sleep_is_not_stranded(
    make_server: ServerFactory,
) -> None:
    """With the real clock, jobs due a moment after a claim: none may wait for another wake."""
    from jobserver import SystemClock

    server = await start(make_server, clock=SystemClock())
    jobs = [await server.enqueue("add", [i, i], delay_s=0.02 * (i % 5)) for i in range(40)]
    for job in jobs:
        done = await server.wait_for(job.id, timeout_s=3)
        assert done.status == JobState.SUCCEEDED, done


async def test_a_job_enqueued_to_an_idle_pool_is_claimed_in_its_enqueues_transaction(
    make_server: ServerFactory,
) -> None:
    """The enqueue wakes the sleeping dispatcher before its write commits, so the claim joins
    that transaction: the job starts one commit (one fsync) after its enqueue, not two. For a
    single enqueue and a batch."""
    server = await start(make_server)

    async def sleeping() -> bool:  # the dispatcher has claimed (its write is done) and waits
        return server.worker.dispatcher_idle

    async def one() -> int:
        return (await server.enqueue("add", [1, 2])).id

    async def batch() -> int:
        return (await server.enqueue_many([server.new_job("add", [3, 4])]))[0].job.id

    # The first job into a queue takes the store's general path (it registers the queue); the
    # later single ones its gathered insert, which the HTTP fast path uses too. Each commit's
    # transitions are heard together, so the insert's and the claim's must come in one call
    # (a commit of some other write, a poll's empty claim say, may come between: not counted).
    commits: list[list[tuple[int, JobState]]] = []
    server.store.subscribe(
        lambda: None, lambda moved, _ids: commits.append([(t.job_id, t.after) for t in moved])
    )
    # Three tries each: on a loaded machine a poll or a rescue pass can wake the dispatcher
    # just before an enqueue (CI saw it once on PostgreSQL). Without the wake before the
    # commit, no try ever joins.
    for enqueue in (one, one, batch):
        seen = []
        for _ in range(3):
            await eventually(sleeping, bool)
            commits.clear()
            job_id = await enqueue()
            assert (await server.wait_for(job_id, timeout_s=5)).status == JobState.SUCCEEDED
            mine = [[after for jid, after in moved if jid == job_id] for moved in commits]
            seen.append([moves for moves in mine if moves])
            if seen[-1][0] == [JobState.PENDING, JobState.RUNNING]:
                break
        else:
            raise AssertionError(seen)


async def test_each_transition_is_logged_at_debug_only(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start(make_server)
    with caplog.at_level(logging.INFO, logger="jobserver.transitions"):
        job = await server.enqueue("add", [1, 2])
        await server.wait_for(job.id, timeout_s=5)
    assert not [r for r in caplog.records if r.name == "jobserver.transitions"]
    with caplog.at_level(logging.DEBUG, logger="jobserver.transitions"):
        job = await server.enqueue("add", [3, 4])
        await server.wait_for(job.id, timeout_s=5)
        # the waiter may wake (on PostgreSQL, told by the database) before the worker logs
        await eventually(
            lambda: asyncio.sleep(
                0,
                [
                    r
                    for r in caplog.records
                    if getattr(r, "state", "") == "succeeded"
                    and getattr(r, "job_id", None) == job.id
                ],
            ),
            bool,
        )
    states = [
        (r.job_id, r.state)  # type: ignore[attr-defined]
        for r in caplog.records
        # (the first job's end may be logged a moment after its waiter woke, on PostgreSQL
        # where the waiter hears of it from the database)
        if r.name == "jobserver.transitions" and r.levelno == logging.DEBUG and r.job_id == job.id  # type: ignore[attr-defined]
    ]
    assert states == [(job.id, "pending"), (job.id, "running"), (job.id, "succeeded")]


async def test_a_due_job_does_not_wait_for_the_dispatchers_next_wake_read(
    make_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A queue at its limit leaves slots free: after each short claim the dispatcher reads
    when to wake next (several statements). A job enqueued for those slots meanwhile waited
    for that read; now the read is left to finish and the job is claimed at once. Here the
    read is held open (the real one, gated) to make the window wide."""
    server = await start(make_server, concurrency=4)
    await server.configure_queue("held", concurrency_limit=1)
    first = await server.enqueue("gated", ["first"], queue="held")
    await eventually(lambda: status_of(server, first.id), lambda s: s == JobState.RUNNING)
    reading, release = asyncio.Event(), asyncio.Event()
    real_read = server.store.next_wake_at

    async def slow_read(now: float) -> float | None:
        reading.set()
        await release.wait()
        return await real_read(now)

    monkeypatch.setattr(server.store, "next_wake_at", slow_read)
    try:
        await server.enqueue("gated", ["second"], queue="held")  # held: a short claim
        await asyncio.wait_for(reading.wait(), 5)
        job = await server.enqueue("add", [2, 3])
        done = await server.wait_for(job.id, timeout_s=3)  # the read is still held open
        assert done.status == JobState.SUCCEEDED and done.result == 5
    finally:
        release.set()  # else the server's stop waits for the held read
        gates.setdefault("first", asyncio.Event()).set()
        gates.setdefault("second", asyncio.Event()).set()
