"""Cron schedules, retention and "why is my job waiting", through an embedded JobServer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from jobserver import JobServer, JobState, ManualClock
from jobserver.errors import NotFound, ValidationError
from jobserver.schedule import next_tick
from jobserver.tasks import Registry, task

from ..conftest import ServerFactory, eventually

reg = Registry()
runs: list[str] = []


@task(registry=reg, cron="*/5 * * * *")
async def every_five_minutes() -> str:
    runs.append("tick")
    return "tick"


@task(registry=reg, cron="0 * * * *", cron_missed="catch_up")
async def hourly_catch_up() -> None:
    runs.append("hourly")


@task(registry=reg)
async def report(name: str) -> str:
    runs.append(name)
    return name


@pytest.fixture(autouse=True)
def _reset() -> None:
    runs.clear()


async def start(make_server: ServerFactory, **kwargs: Any) -> JobServer:
    kwargs.setdefault("tasks", list(reg))
    return await make_server(**kwargs)


async def jobs_of(server: JobServer, task_name: str) -> list[Any]:
    from jobserver.store.base import JobFilter

    return await server.list_jobs(JobFilter(task=task_name), 1000, None)


async def test_a_cron_task_runs_at_its_tick_and_not_before(
    make_server: ServerFactory, clock: ManualClock
) -> None:
    server = await start(make_server)
    tick = next_tick("*/5 * * * *", clock.now())
    clock.set(tick - 0.5)
    await clock.wait_for_sleep_until(tick)  # the scheduler sleeps until the tick, none fired
    assert await jobs_of(server, "every_five_minutes") == []
    clock.set(tick)
    [job] = await eventually(lambda: jobs_of(server, "every_five_minutes"), lambda j: len(j) == 1)
    assert (await server.wait_for(job.id, timeout_s=5)).status == JobState.SUCCEEDED
    schedule = await server.get_schedule("task:every_five_minutes")
    assert schedule.last_tick_at == tick and schedule.next_tick_at == tick + 300


async def test_a_restart_neither_repeats_nor_catches_up_a_skip_schedule(
    tmp_path: Path, clock: ManualClock
) -> None:
    db = tmp_path / "cron.db"
    tick = next_tick("*/5 * * * *", clock.now())
    async with JobServer(db=db, tasks=list(reg), clock=clock) as server:
        clock.set(tick)
        await eventually(lambda: jobs_of(server, "every_five_minutes"), lambda j: len(j) == 1)
    clock.advance(3700)  # down for an hour: twelve ticks missed, the last 100 s ago
    async with JobServer(db=db, tasks=list(reg), clock=clock) as server:
        for name in ("task:every_five_minutes", "task:hourly_catch_up"):  # both seen to
            await eventually(
                lambda n=name: server.get_schedule(n), lambda s: s.next_tick_at > clock.now()
            )  # type: ignore[misc]
        assert len(await jobs_of(server, "every_five_minutes")) == 1  # skipped, not repeated
        hourly = await jobs_of(server, "hourly_catch_up")
        assert len(hourly) == 1  # catch_up: the hour's one tick runs after all
        schedule = await server.get_schedule("task:every_five_minutes")
        assert schedule.next_tick_at > clock.now()


async def test_schedules_over_the_server_api(
    make_server: ServerFactory, clock: ManualClock
) -> None:
    server = await start(make_server)
    saved = await server.save_schedule("daily-report", "report", "30 6 * * *", ["daily"])
    assert saved.next_tick_at == next_tick("30 6 * * *", clock.now())
    assert "daily-report" in [s.name for s in await server.list_schedules()]
    clock.set(saved.next_tick_at)
    [job] = await eventually(lambda: jobs_of(server, "report"), lambda j: len(j) == 1)
    assert (await server.wait_for(job.id, timeout_s=5)).result == "daily"
    await server.delete_schedule("daily-report")
    with pytest.raises(NotFound):
        await server.get_schedule("daily-report")
    with pytest.raises(ValidationError) as bad_cron:
        await server.save_schedule("x", "report", "every tuesday")
    assert bad_cron.value.field == "cron"
    with pytest.raises(ValidationError) as bad_task:
        await server.save_schedule("x", "nope", "* * * * *")
    assert bad_task.value.field == "task"
    with pytest.raises(ValidationError) as bad_zone:
        await server.save_schedule("x", "report", "* * * * *", timezone="Mars/Olympus")
    assert bad_zone.value.field == "timezone"


async def test_a_task_that_drops_its_cron_loses_its_schedule(
    tmp_path: Path, clock: ManualClock
) -> None:
    db = tmp_path / "drop.db"
    async with JobServer(db=db, tasks=list(reg), clock=clock) as server:
        assert "task:every_five_minutes" in [s.name for s in await server.list_schedules()]
    only_report = [s for s in reg if s.name == "report"]
    async with JobServer(db=db, tasks=only_report, clock=clock) as server:
        names = [s.name for s in await server.list_schedules()]
        assert "task:every_five_minutes" not in names


async def test_retention_prunes_old_finished_jobs(
    make_server: ServerFactory, clock: ManualClock
) -> None:
    server = await start(make_server)
    old = await server.enqueue("report", ["old"])
    await server.wait_for(old.id, timeout_s=5)
    clock.advance(8 * 86_400)
    new = await server.enqueue("report", ["new"])
    await server.wait_for(new.id, timeout_s=5)
    await server.retention.prune_once()  # (its loop, woken by the clock, may have been first)
    with pytest.raises(NotFound):
        await server.get_job(old.id)
    assert (await server.get_job(new.id)).status == JobState.SUCCEEDED


async def test_why_a_pending_job_waits(make_server: ServerFactory, clock: ManualClock) -> None:
    server = await start(make_server)
    later = await server.enqueue("report", ["x"], delay_s=60)
    reason = await server.why_waiting(later)
    assert reason is not None and reason["code"] == "scheduled"
    assert reason["until"] == clock.now() + 60

    await server.configure_queue("slow", paused=True)
    paused = await server.enqueue("report", ["y"], queue="slow")
    reason = await server.why_waiting(await server.get_job(paused.id))
    assert reason is not None and reason["code"] == "queue_paused"

    await server.configure_queue("slow", paused=False, rate_limit=1.0)
    first = await server.enqueue("report", ["a"], queue="slow")
    await server.wait_for(paused.id, timeout_s=5)  # the resumed queue's job ran, using the token
    reason = await server.why_waiting(await server.get_job(first.id))
    assert reason is not None and reason["code"] == "queue_rate_limit"
    clock.advance(1)
    assert (await server.wait_for(first.id, timeout_s=5)).status == JobState.SUCCEEDED
    assert await server.why_waiting(await server.get_job(first.id)) is None


async def test_a_deadline_that_passes_fails_the_job_as_expired(
    make_server: ServerFactory, clock: ManualClock
) -> None:
    server = await start(make_server, rescue_interval_s=1)
    await server.configure_queue("held", paused=True)
    job = await server.enqueue("report", ["late"], queue="held", deadline_s=10)
    clock.advance(11)
    done = await server.wait_for(job.id, timeout_s=5)
    assert done.status == JobState.FAILED
    assert done.error is not None and done.error["type"] == "expired"
    with pytest.raises(ValidationError):
        await server.enqueue("report", ["x"], delay_s=100, deadline_s=50)
