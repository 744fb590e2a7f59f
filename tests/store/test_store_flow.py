"""Flow control in the store, for every backend: queues, limits, deadlines, uniqueness,
idempotency windows, schedules and retention."""

from __future__ import annotations

import asyncio

import pytest

from jobserver.errors import Conflict, NotFound, QueueFull
from jobserver.models import JobState, NewJob, Schedule
from jobserver.store.base import Store

T0 = 1_800_000_000.0
TTL = 30.0


def new(task: str = "t", **kw: object) -> NewJob:
    return NewJob(task=task, **kw)  # type: ignore[arg-type]


async def finish_all(store: Store, jobs: list, now: float = T0) -> None:  # type: ignore[type-arg]
    for job in jobs:
        assert await store.complete(job.id, job.lease_token, b"null", now)


async def test_a_paused_queue_is_not_claimed_until_resumed(store: Store) -> None:
    await store.enqueue([new(queue="q")], T0)
    info = await store.configure_queue("q", {"paused": True}, T0)
    assert info.settings.paused
    assert await store.claim(10, T0, TTL) == []
    assert await store.next_wake_at(T0) is None  # no busy loop on a paused queue
    await store.configure_queue("q", {"paused": False}, T0)
    assert len(await store.claim(10, T0, TTL)) == 1


async def test_a_concurrency_limit_caps_running_jobs(store: Store) -> None:
    await store.enqueue([new(queue="q") for _ in range(5)], T0)
    await store.configure_queue("q", {"concurrency_limit": 2}, T0)
    first = await store.claim(10, T0, TTL)
    assert len(first) == 2
    assert await store.claim(10, T0, TTL) == []
    wake = await store.next_wake_at(T0)
    assert wake is not None and wake > T0  # a recheck later, not a spin
    await finish_all(store, first[:1])
    assert len(await store.claim(10, T0, TTL)) == 1


async def test_a_rate_limit_is_a_token_bucket(store: Store) -> None:
    await store.enqueue([new(queue="q") for _ in range(20)], T0)
    await store.configure_queue("q", {"rate_limit": 5.0}, T0)
    assert len(await store.claim(10, T0, TTL)) == 5  # a full bucket: one second's worth
    assert await store.claim(10, T0, TTL) == []
    wake = await store.next_wake_at(T0)
    assert wake == pytest.approx(T0 + 0.2)  # the next token
    assert len(await store.claim(10, T0 + 0.2, TTL)) == 1
    assert len(await store.claim(10, T0 + 10, TTL)) == 5  # refilled, but never past the size


async def test_a_flood_in_one_queue_does_not_starve_another(store: Store) -> None:
    await store.enqueue([new(queue="flood", priority=9) for _ in range(100)], T0)
    await store.enqueue([new(queue="small") for _ in range(3)], T0)
    claimed = await store.claim(4, T0, TTL)
    queues = sorted(j.queue for j in claimed)
    assert queues == ["flood", "flood", "small", "small"]


async def test_max_depth_refuses_an_enqueue_and_writes_nothing(store: Store) -> None:
    await store.configure_queue("q", {"max_depth": 3}, T0)
    await store.enqueue([new(queue="q"), new(queue="q")], T0)
    with pytest.raises(QueueFull):
        await store.enqueue([new(queue="q"), new(queue="q")], T0)  # would make 4
    await store.enqueue([new(queue="q")], T0)
    with pytest.raises(QueueFull):
        await store.enqueue([new(queue="other"), new(queue="q")], T0)
    counts = await store.count_by_status()
    assert counts["pending"] == 3  # the refused batches left nothing, not even "other"


async def test_a_max_depth_set_on_a_queue_already_in_use_holds_at_once(store: Store) -> None:
    """Enqueues into a queue with no limit may skip checking it; a limit set later counts."""
    await store.enqueue([new(queue="busy")], T0)
    await store.enqueue([new(queue="busy")], T0)
    await store.configure_queue("busy", {"max_depth": 3}, T0)
    await store.enqueue([new(queue="busy")], T0)
    with pytest.raises(QueueFull):
        await store.enqueue([new(queue="busy")], T0)
    await store.configure_queue("busy", {"max_depth": None}, T0)
    await store.enqueue([new(queue="busy")], T0)
    assert (await store.count_by_status())["pending"] == 4


async def test_a_max_depth_set_just_before_single_enqueues_counts_each_of_them(
    store: Store,
) -> None:
    """Enqueues sent while a limit is being set on their (so far unlimited) queue: the limit
    is written first, so it holds for each of them, one by one."""
    await store.enqueue([new(queue="busy")], T0)
    limit = store.configure_queue("busy", {"max_depth": 3}, T0)
    answers = await asyncio.gather(
        limit, *(store.enqueue([new(queue="busy")], T0) for _ in range(5)), return_exceptions=True
    )
    outcomes = [type(a).__name__ if isinstance(a, Exception) else "ok" for a in answers[1:]]
    assert outcomes == ["ok", "ok", "QueueFull", "QueueFull", "QueueFull"]
    assert (await store.count_by_status())["pending"] == 3


async def test_a_job_past_its_deadline_never_starts_and_fails_as_expired(store: Store) -> None:
    [res] = await store.enqueue([new(deadline=T0 + 5)], T0)
    assert await store.claim(10, T0 + 6, TTL) == []
    report = await store.rescue_expired(T0 + 6)
    assert report.expired == [res.job.id]
    job = await store.get_job(res.job.id)
    assert job is not None and job.status == JobState.FAILED and job.attempts == 0
    assert job.error is not None and job.error["type"] == "expired"
    [dl] = await store.list_dead_letters(10)
    assert dl.job_id == res.job.id


async def test_a_job_within_its_deadline_runs(store: Store) -> None:
    await store.enqueue([new(deadline=T0 + 5)], T0)
    assert len(await store.claim(10, T0 + 5, TTL)) == 1


async def test_a_unique_key_allows_one_live_job(store: Store) -> None:
    [first] = await store.enqueue([new(args=[1], unique_key="report:7")], T0)
    [again] = await store.enqueue([new(args=[2], unique_key="report:7")], T0)
    assert first.created and not again.created and again.job.id == first.job.id
    [running] = await store.claim(1, T0, TTL)
    [still] = await store.enqueue([new(unique_key="report:7")], T0)
    assert not still.created  # running counts as live too
    await finish_all(store, [running])
    [fresh] = await store.enqueue([new(unique_key="report:7")], T0)
    assert fresh.created and fresh.job.id != first.job.id


async def test_an_idempotency_key_is_free_again_after_its_window(store: Store) -> None:
    [first] = await store.enqueue([new(args=[1], idempotency_key="k", idempotency_window_s=10)], T0)
    [same] = await store.enqueue([new(args=[1], idempotency_key="k")], T0 + 9)
    assert same.job.id == first.job.id and not same.created
    [later] = await store.enqueue([new(args=[2], idempotency_key="k")], T0 + 11)
    assert later.created and later.job.id != first.job.id
    with pytest.raises(Conflict):
        await store.enqueue([new(args=[3], idempotency_key="k")], T0 + 12)


async def test_queue_info(store: Store) -> None:
    await store.enqueue([new(queue="q", run_at=T0 - 30), new(queue="q", run_at=T0 + 99)], T0)
    await store.enqueue([new(queue="q", run_at=T0 - 10)], T0)
    await store.claim(1, T0, TTL)
    await store.configure_queue("q", {"rate_limit": 2.0, "max_depth": 50}, T0)
    [info] = [q for q in await store.list_queues(T0) if q.name == "q"]
    assert info.counts["pending"] == 2 and info.counts["running"] == 1
    assert info.oldest_due_age_s == 10  # the older due job was claimed first
    assert info.settings.rate_limit == 2.0 and info.settings.max_depth == 50
    assert info.rate_tokens == 2.0
    assert await store.get_queue("nope", T0) is None


async def test_configure_queue_refuses_unknown_settings(store: Store) -> None:
    with pytest.raises(ValueError):
        await store.configure_queue("q", {"colour": "red"}, T0)


def schedule(**kw: object) -> Schedule:
    base: dict[str, object] = {"name": "nightly", "task": "t", "cron": "0 3 * * *"}
    base.update(kw)
    return Schedule(next_tick_at=T0 + 100, **base)  # type: ignore[arg-type]


async def test_schedules_are_saved_and_listed(store: Store) -> None:
    saved = await store.save_schedule(schedule(args=[1], kwargs={"a": 2}), keep_next_tick=True)
    assert saved.next_tick_at == T0 + 100 and saved.args == [1] and saved.kwargs == {"a": 2}
    assert [s.name for s in await store.list_schedules()] == ["nightly"]
    assert await store.get_schedule("nightly") == saved
    assert await store.next_schedule_at() == T0 + 100
    # saving again with the same cron keeps the stored next tick (restarts move nothing)
    moved = schedule(args=[9])
    moved.next_tick_at = T0 + 555
    again = await store.save_schedule(moved, keep_next_tick=True)
    assert again.next_tick_at == T0 + 100 and again.args == [9]
    assert await store.delete_schedule("nightly")
    assert not await store.delete_schedule("nightly")


async def test_each_tick_fires_once(store: Store) -> None:
    await store.save_schedule(schedule(), keep_next_tick=True)
    assert await store.due_schedules(T0 + 99) == []
    [due] = await store.due_schedules(T0 + 100)
    jobs = [new(idempotency_key="schedule:nightly:1")]
    ids = await store.fire_schedule("nightly", due.next_tick_at, T0 + 200, jobs, T0 + 100)
    assert len(ids) == 1
    # a second node that read the same due schedule fires nothing
    assert await store.fire_schedule("nightly", due.next_tick_at, T0 + 200, jobs, T0 + 100) == []
    after = await store.get_schedule("nightly")
    assert after is not None
    assert (after.next_tick_at, after.last_tick_at) == (T0 + 200, T0 + 100)
    assert (await store.count_by_status())["pending"] == 1


async def test_prune_deletes_old_finished_jobs_in_batches(store: Store) -> None:
    day = 86_400.0
    await store.enqueue([new(max_retries=0) for _ in range(6)], T0)
    jobs = await store.claim(6, T0, TTL)
    for job in jobs[:3]:
        assert await store.complete(job.id, job.lease_token, b"1", T0)  # type: ignore[arg-type]
    for job in jobs[3:5]:
        assert await store.dead_letter(job.id, job.lease_token, {"type": "E"}, T0)  # type: ignore[arg-type]
    await store.enqueue([new()], T0)  # pending: never pruned
    now = T0 + 8 * day
    assert await store.prune(now - 7 * day, now - 30 * day, 2) == 2  # a batch at a time
    assert await store.prune(now - 7 * day, now - 30 * day, 2) == 1
    assert await store.prune(now - 7 * day, now - 30 * day, 2) == 0
    counts = await store.count_by_status()
    assert counts["succeeded"] == 0 and counts["failed"] == 2 and counts["running"] == 1
    later = T0 + 31 * day
    assert await store.prune(later - 7 * day, later - 30 * day, 100) == 4  # 2 jobs + 2 letters
    assert await store.list_dead_letters(10) == []
    assert (await store.count_by_status())["pending"] == 1
    await store.reclaim_space(100)


async def test_delete_job(store: Store) -> None:
    [done] = await store.enqueue([new()], T0)
    [job] = await store.claim(1, T0, TTL)
    assert await store.complete(job.id, job.lease_token, b"1", T0)  # type: ignore[arg-type]
    [pending] = await store.enqueue([new()], T0 + 1000)
    await store.delete_job(done.job.id)
    assert await store.get_job(done.job.id) is None
    with pytest.raises(NotFound):
        await store.delete_job(done.job.id)
    with pytest.raises(Conflict):
        await store.delete_job(pending.job.id)


async def test_prune_goes_by_when_a_job_ended_not_when_it_was_created(store: Store) -> None:
    day = 86_400.0
    [slow] = await store.enqueue([new()], T0)  # created first, ends last
    [gone] = await store.enqueue([new()], T0 + 1)
    [quick] = await store.enqueue([new()], T0 + 2)
    await store.request_cancel(gone.job.id, T0 + 1)
    await store.delete_job(gone.job.id)  # a gap in the ids
    claimed = {j.id: j for j in await store.claim(2, T0 + 2, TTL)}
    quick_job, slow_job = claimed[quick.job.id], claimed[slow.job.id]
    assert await store.complete(quick_job.id, quick_job.lease_token, b"1", T0 + 3)  # type: ignore[arg-type]
    assert await store.complete(slow_job.id, slow_job.lease_token, b"1", T0 + 9 * day)  # type: ignore[arg-type]
    now = T0 + 9 * day
    assert await store.prune(now - 7 * day, now - 30 * day, 10) == 1
    assert await store.get_job(quick.job.id) is None
    kept = await store.get_job(slow.job.id)
    assert kept is not None and kept.status == JobState.SUCCEEDED
