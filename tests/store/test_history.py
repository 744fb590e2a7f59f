"""A job's history of attempts, on both stores: every attempt with its start, end, node,
outcome and error (the task's traceback included), kept with the job and pruned with it."""

from __future__ import annotations

from typing import Any

from jobserver.models import Attempt, JobState, NewJob, error_info
from jobserver.store.base import Store

T0 = 1_800_000_000.0
TTL = 30.0


def failure(message: str) -> dict[str, Any]:
    try:
        raise ValueError(message)
    except ValueError as exc:
        return error_info(exc)


async def claimed(store: Store, now: float) -> tuple[int, str]:
    [job] = await store.claim(1, now, TTL)
    assert job.lease_token is not None
    return job.id, job.lease_token


async def test_each_attempt_is_kept_with_its_outcome_error_and_node(store: Any) -> None:
    [done] = await store.enqueue([NewJob(task="t", max_retries=3)], T0)
    job_id = done.job.id
    assert await store.list_attempts(job_id) == []  # not run yet

    _, token = await claimed(store, T0 + 1)
    assert await store.list_attempts(job_id) == [
        Attempt(1, T0 + 1, None, store.node, "running", None)
    ]
    first = failure("first")
    assert await store.schedule_retry(job_id, token, first, T0 + 5, T0 + 2) == JobState.PENDING

    _, token = await claimed(store, T0 + 5)
    second = failure("second")
    await store.schedule_retry(job_id, token, second, T0 + 9, T0 + 6)

    _, token = await claimed(store, T0 + 9)
    assert await store.complete(job_id, token, b"42", T0 + 10) == JobState.SUCCEEDED

    history = await store.list_attempts(job_id)
    assert history == [
        Attempt(1, T0 + 1, T0 + 2, store.node, "failed", first),
        Attempt(2, T0 + 5, T0 + 6, store.node, "failed", second),
        Attempt(3, T0 + 9, T0 + 10, store.node, "succeeded", None),
    ]
    assert "ValueError: first" in history[0].error["traceback"]


async def test_a_lost_run_a_dead_letter_and_a_cancel_are_kept(store: Any) -> None:
    [lost] = await store.enqueue([NewJob(task="t", max_retries=1)], T0)
    await claimed(store, T0)
    await store.rescue_expired(T0 + TTL)  # its process died: back to pending
    _, token = await claimed(store, T0 + TTL)
    error = failure("for good")
    assert await store.dead_letter(lost.job.id, token, error, T0 + TTL + 1) == JobState.FAILED
    [first, second] = await store.list_attempts(lost.job.id)
    assert (first.attempt, first.outcome, first.ended_at) == (1, "lease_expired", T0 + TTL)
    assert first.error is not None and first.error["type"] == "LeaseExpired"
    assert (second.attempt, second.outcome, second.error) == (2, "failed", error)

    [cancelled] = await store.enqueue([NewJob(task="t")], T0)
    _, token = await claimed(store, T0)
    await store.request_cancel(cancelled.job.id, T0 + 1)
    assert await store.mark_cancelled(cancelled.job.id, token, T0 + 2) == JobState.CANCELLED
    assert await store.list_attempts(cancelled.job.id) == [
        Attempt(1, T0, T0 + 2, store.node, "cancelled", None)
    ]


async def test_a_release_at_shutdown_gives_the_attempt_back_and_keeps_no_row(store: Any) -> None:
    [done] = await store.enqueue([NewJob(task="t")], T0)
    _, token = await claimed(store, T0)
    assert await store.release(done.job.id, token, T0 + 1) == JobState.PENDING
    assert await store.list_attempts(done.job.id) == []
    _, token = await claimed(store, T0 + 2)
    await store.complete(done.job.id, token, b"1", T0 + 3)
    assert [a.outcome for a in await store.list_attempts(done.job.id)] == ["succeeded"]


async def test_history_goes_with_its_job(store: Any) -> None:
    assert await store.list_attempts(999_999) is None
    [done] = await store.enqueue([NewJob(task="t", max_retries=0)], T0)
    _, token = await claimed(store, T0)
    await store.dead_letter(done.job.id, token, failure("x"), T0 + 1)
    assert len(await store.list_attempts(done.job.id)) == 1
    await store.delete_job(done.job.id)
    assert await store.list_attempts(done.job.id) is None

    [old] = await store.enqueue([NewJob(task="t", max_retries=0)], T0)
    _, token = await claimed(store, T0)
    await store.dead_letter(old.job.id, token, failure("y"), T0 + 1)
    assert await store.prune(T0 + 100, T0 + 100, 100) >= 1
    assert await store.list_attempts(old.job.id) is None
    # the row went too: a job created later with the same id would not inherit it
    assert not await _attempt_rows(store, old.job.id)


async def _attempt_rows(store: Any, job_id: int) -> list[Any]:
    from ..conftest import read_outside

    return await read_outside(
        store,
        "SELECT attempt FROM job_attempts WHERE job_id = ?",
        "SELECT attempt FROM job_attempts WHERE job_id = $1",
        job_id,
    )
