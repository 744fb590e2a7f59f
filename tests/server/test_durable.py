"""Durable steps on a real server, each store: steps replay instead of running again, durable
sleeps and waits give the worker slot back and resume, signals wake waiting jobs."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from jobserver import ChildFailed, Job, JobContext, JobServer, JobState, ManualClock, Retry
from jobserver.durable import Suspend
from jobserver.errors import PermanentError
from jobserver.lifecycle import child_key
from jobserver.store.base import JobFilter
from jobserver.tasks import Registry, task

from ..conftest import ServerFactory, eventually

reg = Registry()
effects: dict[str, int] = {}  # how many times each step's side effect ran


def effect(name: str) -> str:
    effects[name] = effects.get(name, 0) + 1
    return f"{name} done"


@pytest.fixture(autouse=True)
def _reset() -> None:
    effects.clear()


@task(registry=reg, max_retries=3)
async def three_steps(ctx: JobContext) -> list[str]:
    a = await ctx.step("a", effect, "a")
    b = await ctx.step("b", effect, "b")
    if ctx.attempt == 1:
        raise Retry(delay_s=0)  # the job fails after b: a and b must not run again
    c = await ctx.step("c", effect, "c")
    return [a, b, c]


@task(registry=reg, max_retries=2)
async def code_changed(ctx: JobContext) -> str:
    await ctx.step("charge" if ctx.attempt == 1 else "refund", effect, "x")
    raise Retry(delay_s=0)


@task(registry=reg)
async def sleeps_a_day(ctx: JobContext) -> str:
    await ctx.step("before", effect, "before")
    await ctx.sleep(86_400)
    await ctx.step("after", effect, "after")
    return "woke"


@task(registry=reg)
async def waits_for_confirmation(user: int, ctx: JobContext) -> Any:
    await ctx.step("mail", effect, "mail")
    payload = await ctx.wait_for_event(f"confirm:{user}", timeout_s=3600)
    await ctx.step("cleanup" if payload is None else "activate", effect, "end")
    return payload


@task(registry=reg, max_retries=0)
async def catches_everything(ctx: JobContext) -> str:
    try:
        await ctx.sleep(60)
    except Exception:  # a task's broad except must not swallow the suspension
        return "swallowed"
    return "woke"


@task(registry=reg, max_retries=0)
async def adds(a: int, b: int, ctx: JobContext) -> int:
    effect("child")
    return a + b


@task(registry=reg, max_retries=0)
async def out_of_stock(ctx: JobContext) -> None:
    effect("child")
    raise PermanentError("no stock")


@task(registry=reg, max_retries=2)
async def orders_a_sum(ctx: JobContext) -> int:
    total: int = await ctx.run_child("adds", [2, 3], queue="children")
    await ctx.step("after", effect, "after")
    if ctx.attempt == 1:
        raise Retry(delay_s=0)  # the job runs again: its child must not
    return total


@task(registry=reg, max_retries=0)
async def awaits_a_paused_child(ctx: JobContext) -> int:
    total: int = await ctx.run_child("adds", [1, 2], queue="children")
    return total


@task(registry=reg, max_retries=1)
async def orders_from_stock(ctx: JobContext) -> str:
    try:
        await ctx.run_child("out_of_stock")
    except ChildFailed as failed:
        await ctx.step("apologise", effect, "apologise")
        if ctx.attempt == 1:
            raise Retry(delay_s=0) from None  # a failed child is started anew next run
        return f"{failed.status}: {failed.error['message']}"
    return "in stock"


def flaky(name: str) -> str:
    effect(name)
    raise ValueError("down")


@task(registry=reg, max_retries=1)
async def catches_a_step(ctx: JobContext) -> str:
    with contextlib.suppress(ValueError):
        await ctx.step("first", flaky, "first")  # raises: not kept
    second: str = await ctx.step("second", effect, "second")  # the job's first kept step
    if ctx.attempt == 1:
        raise Retry(delay_s=0)
    return second


@task(registry=reg, max_retries=0)
async def keeps_a_nul(ctx: JobContext) -> str:
    await ctx.step("fine", effect, "fine")
    nul: str = await ctx.step("nul", lambda: "a\x00b")
    return nul


async def start(make_server: ServerFactory, **kwargs: Any) -> JobServer:
    return await make_server(tasks=list(reg), **kwargs)


async def jobs_of(server: JobServer, task_name: str) -> list[Job]:
    return await server.list_jobs(JobFilter(task=task_name), 100, None)


async def suspended_after_a_step(server: JobServer, job_id: int) -> bool:
    """Pending again once a step has run: suspended. (effects read first: a status read begun
    before the step ran would say pending too.)"""
    ran = bool(effects)
    return ran and await status(server, job_id) == JobState.PENDING


async def status(server: JobServer, job_id: int) -> JobState:
    return (await server.get_job(job_id)).status


async def test_completed_steps_replay_and_only_the_rest_run(make_server: ServerFactory) -> None:
    server = await start(make_server)
    job = await server.enqueue("three_steps")
    done = await server.wait_for(job.id, timeout_s=10)
    assert done.status == JobState.SUCCEEDED, done.error
    assert done.result == ["a done", "b done", "c done"]
    assert effects == {"a": 1, "b": 1, "c": 1}  # the retry replayed a and b
    assert done.attempts == 2
    steps = await server.store.job_steps(job.id)
    assert [(s.seq, s.name, s.kind, s.status, s.attempt) for s in steps] == [
        (0, "a", "run", "done", 1),
        (1, "b", "run", "done", 1),
        (2, "c", "run", "done", 2),
    ]
    assert steps[0].result == "a done"


async def test_a_job_whose_first_kept_step_is_not_its_first_replays_it(
    make_server: ServerFactory,
) -> None:
    # A run reads kept steps only for a job marked as having some: the mark must come with
    # whichever step is kept first, not only step 0.
    server = await start(make_server)
    job = await server.enqueue("catches_a_step")
    done = await server.wait_for(job.id, timeout_s=10)
    assert done.status == JobState.SUCCEEDED, done.error
    assert effects == {"first": 2, "second": 1}
    assert done.has_steps


async def test_a_step_renamed_between_runs_fails_the_job_instead_of_replaying(
    make_server: ServerFactory,
) -> None:
    server = await start(make_server)
    job = await server.enqueue("code_changed")
    done = await server.wait_for(job.id, timeout_s=10)
    assert done.status == JobState.FAILED
    assert done.error is not None and done.error["type"] == "StepMismatch"
    assert "'refund'" in done.error["message"] and "'charge'" in done.error["message"]
    assert effects == {"x": 1}


async def test_a_durable_sleep_gives_the_slot_back_and_resumes_when_due(
    make_server: ServerFactory, clock: ManualClock
) -> None:
    server = await start(make_server, concurrency=1)
    job = await server.enqueue("sleeps_a_day")
    await eventually(lambda: suspended_after_a_step(server, job.id), bool)
    slept = await server.get_job(job.id)
    assert slept.run_at == pytest.approx(clock.now() + 86_400)
    assert slept.attempts == 0  # a suspension is not an attempt
    other = await server.enqueue("three_steps")  # the one slot is free while it sleeps
    assert (await server.wait_for(other.id, timeout_s=10)).status == JobState.SUCCEEDED
    clock.advance(86_400)
    server.worker.wake()
    done = await server.wait_for(job.id, timeout_s=10)
    assert done.status == JobState.SUCCEEDED and done.result == "woke"
    assert (effects["before"], effects["after"]) == (1, 1)
    kinds = [(s.name, s.kind) for s in await server.store.job_steps(job.id)]
    assert kinds == [("before", "run"), ("sleep", "sleep"), ("after", "run")]


async def test_a_signal_wakes_the_job_waiting_for_it(
    make_server: ServerFactory, clock: ManualClock
) -> None:
    server = await start(make_server)
    job = await server.enqueue("waits_for_confirmation", [7])
    await eventually(lambda: suspended_after_a_step(server, job.id), bool)
    assert (await server.get_job(job.id)).run_at == pytest.approx(clock.now() + 3600)
    signal_id, woken = await server.signal("confirm:7", {"ok": True})
    assert signal_id >= 1 and woken == 1
    done = await server.wait_for(job.id, timeout_s=10)
    assert done.result == {"ok": True}
    assert effects == {"mail": 1, "end": 1}
    steps = await server.store.job_steps(job.id)
    assert steps[1].status == "done" and steps[1].result == {"ok": True}


async def test_a_signal_sent_before_the_wait_is_kept_for_it(make_server: ServerFactory) -> None:
    server = await start(make_server)
    assert await server.signal("confirm:8", "early") == (1, 0)
    job = await server.enqueue("waits_for_confirmation", [8])
    done = await server.wait_for(job.id, timeout_s=10)
    assert done.result == "early"
    again = await server.enqueue("waits_for_confirmation", [8])  # that signal is taken
    await eventually(lambda: status(server, again.id), lambda s: s == JobState.PENDING)


async def test_a_wait_that_times_out_returns_none(
    make_server: ServerFactory, clock: ManualClock
) -> None:
    server = await start(make_server)
    job = await server.enqueue("waits_for_confirmation", [9])
    await eventually(lambda: suspended_after_a_step(server, job.id), bool)
    clock.advance(3601)
    server.worker.wake()
    done = await server.wait_for(job.id, timeout_s=10)
    assert done.status == JobState.SUCCEEDED and done.result is None
    assert effects == {"mail": 1, "end": 1}
    assert [s.name for s in await server.store.job_steps(job.id)][-1] == "cleanup"


async def test_a_task_catching_exception_does_not_swallow_its_suspension(
    make_server: ServerFactory,
) -> None:
    assert not issubclass(Suspend, Exception)
    server = await start(make_server)
    job = await server.enqueue("catches_everything")
    await eventually(lambda: server.get_job(job.id), lambda j: j.run_at > j.created_at + 59)
    assert (await server.get_job(job.id)).status == JobState.PENDING


async def test_a_worker_that_lost_its_lease_keeps_no_step(make_server: ServerFactory) -> None:
    server = await start(make_server)
    await server.worker.stop(0.1)
    job = await server.enqueue("three_steps")
    (claimed,) = await server.store.claim(1, server.clock.now(), 30.0)
    step = (0, "a", "run", "done", b'"x"', 1.0, 2.0)
    assert await server.store.save_step(job.id, "not-the-token", step) is False
    assert await server.store.job_steps(job.id) == []
    assert await server.store.save_step(job.id, claimed.lease_token or "", step) is True
    assert [s.result for s in await server.store.job_steps(job.id)] == ["x"]


async def test_a_child_job_is_awaited_durably_and_never_started_twice(
    make_server: ServerFactory,
) -> None:
    # One slot: the parent must give it back while it waits, or its child never runs.
    server = await start(make_server, concurrency=1)
    job = await server.enqueue("orders_a_sum")
    done = await server.wait_for(job.id, timeout_s=10)
    assert done.status == JobState.SUCCEEDED, done.error
    assert done.result == 5 and done.attempts == 2
    assert effects == {"child": 1, "after": 1}  # the retry replayed the child's step
    steps = await server.store.job_steps(job.id)
    assert [(s.name, s.kind, s.status) for s in steps] == [
        ("child:adds", "child", "done"),
        ("after", "run", "done"),
    ]
    child_id = steps[0].result["job_id"]
    assert steps[0].result == {"job_id": child_id, "result": 5}
    child = await server.get_job(child_id)
    assert (child.task, child.queue, child.args) == ("adds", "children", [2, 3])
    assert [j.id for j in await jobs_of(server, "adds")] == [child_id]


async def test_a_failed_child_raises_in_its_parent_and_a_new_run_starts_a_new_one(
    make_server: ServerFactory,
) -> None:
    server = await start(make_server)
    job = await server.enqueue("orders_from_stock")
    done = await server.wait_for(job.id, timeout_s=10)
    assert done.status == JobState.SUCCEEDED, done.error
    assert done.result == "failed: no stock"
    assert effects == {"child": 2, "apologise": 1}  # two runs, a child each
    children = await jobs_of(server, "out_of_stock")
    assert sorted(j.status for j in children) == [JobState.FAILED] * 2
    (step, _) = await server.store.job_steps(job.id)
    assert (step.kind, step.status, step.result["status"]) == ("child", "failed", "failed")
    assert step.result["job_id"] == max(j.id for j in children)


async def test_a_cancelled_child_wakes_its_parent(make_server: ServerFactory) -> None:
    server = await start(make_server)
    await server.configure_queue("children", paused=True)
    job = await server.enqueue("awaits_a_paused_child")
    await eventually(lambda: jobs_of(server, "adds"), lambda found: len(found) == 1)
    await eventually(lambda: status(server, job.id), lambda s: s == JobState.PENDING)
    (child,) = await jobs_of(server, "adds")
    await server.cancel(child.id)
    done = await server.wait_for(job.id, timeout_s=10)
    assert done.status == JobState.FAILED  # ChildFailed, uncaught, and no retries
    assert done.error is not None and done.error["type"] == "ChildFailed"
    assert f"child job {child.id} ended cancelled" in done.error["message"]


async def test_a_child_that_ended_before_its_parent_suspended_wakes_it_at_once(
    make_server: ServerFactory, clock: ManualClock
) -> None:
    # The race the key's lock closes: the child ends between the parent's look at it and
    # the parent's suspension. The suspension must see the end, or the parent sleeps on.
    server = await start(make_server)
    await server.worker.stop(0.1)
    parent = await server.enqueue("orders_a_sum")
    (claimed,) = await server.store.claim(1, clock.now(), 30.0)
    token = claimed.lease_token or ""
    child = server.new_job("adds", [1, 1])
    step = (0, "child:adds", "child", "waiting", None, clock.now(), None)
    child_id = await server.store.start_child(parent.id, token, step, child, clock.now())
    assert child_id is not None
    assert await server.store.start_child(parent.id, "stale", step, child, clock.now()) is None
    (claimed_child,) = await server.store.claim(1, clock.now(), 30.0)
    assert claimed_child.id == child_id
    assert await server.store.complete(child_id, claimed_child.lease_token or "", b"2", clock.now())
    until = clock.now() + 3600
    moved = await server.store.suspend(parent.id, token, until, child_key(child_id), clock.now())
    assert moved == JobState.PENDING
    assert (await server.get_job(parent.id)).run_at == pytest.approx(clock.now())


async def test_a_step_result_holding_nul_fails_its_own_job_only(
    make_server: ServerFactory,
) -> None:
    # Steps are kept many to a statement: on PostgreSQL, whose jsonb refuses a NUL, one such
    # result failed every step in its statement. It is refused in its own job, on every store.
    server = await start(make_server)
    bad = await server.enqueue("keeps_a_nul")
    good = [await server.enqueue("three_steps") for _ in range(10)]
    done = await server.wait_for(bad.id, timeout_s=10)
    assert done.status == JobState.FAILED and done.error is not None
    assert done.error["type"] == "ValueError" and "NUL" in done.error["message"]
    for job in good:
        assert (await server.wait_for(job.id, timeout_s=10)).status == JobState.SUCCEEDED
    assert [s.name for s in await server.store.job_steps(bad.id)] == ["fine"]
