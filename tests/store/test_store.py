"""The store conformance suite: every backend must pass these (see STORE_BACKENDS)."""

from __future__ import annotations

import asyncio

import pytest

from jobserver.errors import Conflict, NotFound
from jobserver.models import Backoff, Job, JobState, NewJob
from jobserver.store.base import JobFilter, Store

T0 = 1_800_000_000.0
TTL = 30.0


def new(task: str = "t", **kw: object) -> NewJob:
    return NewJob(task=task, **kw)  # type: ignore[arg-type]


async def enqueue_one(store: Store, now: float = T0, **kw: object) -> int:
    return (await store.enqueue([new(**kw)], now))[0].job.id


async def test_enqueue_round_trips_every_field(store: Store) -> None:
    args = [1, "zwei", {"drei": [3.5, None, True]}, "ünïcødé ✓"]
    kwargs = {"k": {"nested": ["x"]}}
    [res] = await store.enqueue(
        [
            new(
                "send",
                args=args,
                kwargs=kwargs,
                queue="mail",
                priority=7,
                max_retries=5,
                timeout_s=2.5,
                backoff=Backoff(base_s=0.5, factor=3.0, cap_s=60.0),
                run_at=T0 + 10,
            )
        ],
        T0,
    )
    assert res.created
    job = await store.get_job(res.job.id)
    assert job is not None
    assert (job.task, job.args, job.kwargs, job.queue) == ("send", args, kwargs, "mail")
    assert (job.priority, job.max_retries, job.timeout_s) == (7, 5, 2.5)
    assert job.backoff == Backoff(base_s=0.5, factor=3.0, cap_s=60.0)
    assert job.status == JobState.PENDING
    assert job.attempts == 0
    assert (job.created_at, job.run_at) == (T0, T0 + 10)
    assert await store.get_job(job.id + 1000) is None


async def test_a_claim_is_answered_before_the_enqueue_it_shared_a_transaction_with(
    store: Store,
) -> None:
    """The claim's waiter starts the job: it resumes first, so the job need not wait for the
    reply to its own enqueue to be written."""
    answered: list[str] = []

    async def enqueue() -> int:
        [enqueued] = await store.enqueue([new()], T0)
        answered.append("enqueue")
        return enqueued.job.id

    async def claim() -> list[int]:
        jobs = await store.claim(1, T0, 30)
        answered.append("claim")
        return [j.id for j in jobs]

    # Both queued before the writer takes its batch: one transaction, the insert first.
    job_id, claimed = await asyncio.gather(enqueue(), claim())
    assert claimed == [job_id]
    assert answered == ["claim", "enqueue"]


async def test_a_batch_round_trips_every_field_of_each_job(store: Store) -> None:
    """Many plain jobs go in by another path than one (SQLite: one statement); same result."""
    jobs = [
        new(
            f"t{i}",
            args=[i, 'ünï ✓ "q" \\ \n', {"n": [1.5, None, True, 10**15]}, []],
            kwargs={"k": "v" * i, "e": {}},
            queue=f"q{i % 3}",
            priority=i - 5,
            max_retries=i,
            timeout_s=None if i % 2 else 0.25 * (i + 1),
            backoff=Backoff(base_s=0.5, factor=2.0, cap_s=9.0) if i % 3 == 0 else None,
            run_at=T0 + i / 3,
            deadline=T0 + 100 + i if i % 4 == 0 else None,
        )
        for i in range(12)
    ]
    results = await store.enqueue(jobs, T0)
    for asked, res in zip(jobs, results, strict=True):
        stored = await store.get_job(res.job.id)
        assert stored == res.job  # what enqueue answered is what a read gives
        assert (stored.task, stored.args, stored.kwargs) == (asked.task, asked.args, asked.kwargs)
        assert (stored.queue, stored.priority, stored.max_retries) == (
            asked.queue, asked.priority, asked.max_retries,
        )  # fmt: skip
        assert (stored.timeout_s, stored.backoff, stored.run_at, stored.deadline) == (
            asked.timeout_s, asked.backoff, asked.run_at, asked.deadline,
        )  # fmt: skip
        assert (stored.status, stored.attempts, stored.created_at) == (JobState.PENDING, 0, T0)


async def test_enqueue_of_many_is_one_call_with_ids_in_order(store: Store) -> None:
    results = await store.enqueue([new(args=[i]) for i in range(50)], T0)
    ids = [r.job.id for r in results]
    assert ids == sorted(ids) and len(set(ids)) == 50
    assert [r.job.args for r in results] == [[i] for i in range(50)]


async def test_claim_orders_by_priority_then_run_at(store: Store) -> None:
    low = await enqueue_one(store, priority=0, run_at=T0 - 30)
    high_late = await enqueue_one(store, priority=5, run_at=T0 - 10)
    high_early = await enqueue_one(store, priority=5, run_at=T0 - 20)
    jobs = await store.claim(10, T0, TTL)
    assert [j.id for j in jobs] == [high_early, high_late, low]


async def test_claim_never_takes_a_job_before_it_is_due(store: Store) -> None:
    later = await enqueue_one(store, run_at=T0 + 60)
    assert await store.claim(10, T0 + 59.999, TTL) == []
    assert await store.next_wake_at(T0) == T0 + 60
    jobs = await store.claim(10, T0 + 60, TTL)
    assert [j.id for j in jobs] == [later]
    assert await store.next_wake_at(T0 + 60) is None


async def test_claim_counts_the_attempt_and_takes_a_lease(store: Store) -> None:
    job_id = await enqueue_one(store)
    [job] = await store.claim(1, T0, TTL)
    assert job.id == job_id
    assert job.status == JobState.RUNNING
    assert job.attempts == 1
    assert job.lease_token
    assert job.lease_expires_at == T0 + TTL
    assert job.started_at == T0
    assert await store.claim(1, T0, TTL) == []  # a running job is not claimed twice


async def test_a_claimed_job_is_the_job_as_stored(store: Store) -> None:
    """The claim reads back only what it did not set itself: the rest must still match."""
    [dep] = await store.enqueue([new()], T0)
    [first] = await store.claim(1, T0, TTL)
    assert await store.complete(first.id, first.lease_token, b"1", T0)  # type: ignore[arg-type]
    full = new(
        args=[1, "a"],
        kwargs={"k": [2]},
        priority=5,
        max_retries=4,
        timeout_s=9.5,
        backoff=Backoff(base_s=2.0, factor=3.0, cap_s=60.0),
        idempotency_key="idem",
        deadline=T0 + 999,
        unique_key="uniq",
        depends_on=[dep.job.id],
        pass_result=True,
        on_dependency_failure="cancel",
        callback_url="http://127.0.0.1:9/hook",
    )
    [enqueued] = await store.enqueue([full], T0 + 1)
    [tried] = await store.claim(1, T0 + 2, TTL)  # a first attempt leaves progress and an error
    token = tried.lease_token
    assert token is not None
    await store.update_progress(tried.id, token, 0.5, "half")
    assert await store.schedule_retry(tried.id, token, {"type": "E"}, T0 + 3, T0 + 2)
    [job] = await store.claim(1, T0 + 3, TTL)
    assert job.id == enqueued.job.id and job.attempts == 2 and job.error == {"type": "E"}
    assert job == await store.get_job(job.id)


async def test_enqueue_gathered_queues_its_write_before_a_later_callback(store: Store) -> None:
    """What the HTTP fast path and the dispatcher's wake rely on: a claim started by a callback
    scheduled after the call sees the job. A job the store cannot gather is left to enqueue."""
    loop = asyncio.get_running_loop()
    await store.enqueue([new()], T0)  # the queue is known: the next plain job is gathered
    [first] = await store.claim(1, T0, TTL)
    assert store.enqueue_gathered(new(idempotency_key="k"), T0) is None
    written = store.enqueue_gathered(new(args=[1]), T0)
    assert written is not None
    claims: list[asyncio.Future[list[Job]]] = []
    loop.call_soon(lambda: claims.append(asyncio.ensure_future(store.claim(5, T0, TTL))))
    enqueued = await written
    await asyncio.sleep(0)
    [claimed] = await claims[0]
    assert claimed.id == enqueued.job.id != first.id and enqueued.created
    assert (await store.count_by_status())["pending"] == 0  # the keyed job was not written


async def test_enqueue_gathered_gives_a_refusal_to_its_own_future(store: Store) -> None:
    await store.enqueue([new()], T0)
    refused = store.enqueue_gathered(new(max_retries=-1), T0)  # the schema refuses the row
    accepted = store.enqueue_gathered(new(args=[2]), T0)
    assert refused is not None and accepted is not None
    with pytest.raises(Exception):  # noqa: B017 - each store's own integrity error
        await refused
    assert (await accepted).job.args == [2]
    assert (await store.count_by_status())["pending"] == 2


async def test_claim_respects_the_limit(store: Store) -> None:
    await store.enqueue([new() for _ in range(7)], T0)
    assert len(await store.claim(3, T0, TTL)) == 3
    assert len(await store.claim(10, T0, TTL)) == 4


async def test_complete_needs_the_current_lease_token(store: Store) -> None:
    await enqueue_one(store)
    [job] = await store.claim(1, T0, TTL)
    assert not await store.complete(job.id, "not-the-token", b'"x"', T0 + 1)
    still = await store.get_job(job.id)
    assert still is not None and still.status == JobState.RUNNING
    assert job.lease_token is not None
    assert await store.complete(job.id, job.lease_token, b'{"ok": 1}', T0 + 1)
    done = await store.get_job(job.id)
    assert done is not None
    assert done.status == JobState.SUCCEEDED
    assert done.result == {"ok": 1}
    assert done.completed_at == T0 + 1
    assert done.lease_token is None
    # A second completion (a duplicate delivery) changes nothing.
    assert not await store.complete(job.id, job.lease_token, b'"again"', T0 + 2)
    again = await store.get_job(job.id)
    assert again is not None and again.result == {"ok": 1}


async def test_completions_sent_together_each_get_their_own_answer(store: Store) -> None:
    """Completions that meet in one transaction (SQLite writes them as one statement) are
    still judged one by one: a stale token fails alone, results do not mix."""
    await store.enqueue([new(args=[i]) for i in range(300)], T0)
    jobs = await store.claim(300, T0, TTL)
    tokens = [j.lease_token if j.id % 7 else "stale" for j in jobs]
    answers = await asyncio.gather(
        *(
            store.complete(j.id, token or "", f'{{"n": {j.id}}}'.encode(), T0 + 1)
            for j, token in zip(jobs, tokens, strict=True)
        )
    )
    assert answers == [JobState.SUCCEEDED if token != "stale" else None for token in tokens]
    for job, ok in zip(jobs, answers, strict=True):
        stored = await store.get_job(job.id)
        assert stored is not None
        if ok:
            assert (stored.status, stored.result) == (JobState.SUCCEEDED, {"n": job.id})
            assert (stored.completed_at, stored.lease_token) == (T0 + 1, None)
        else:
            assert (stored.status, stored.result) == (JobState.RUNNING, None)


async def test_completions_sent_together_set_off_their_follow_ups(store: Store) -> None:
    """In a shared completion, a job with a dependant frees it and a job with a callback_url
    queues its webhook delivery; the plain ones beside them have neither."""
    [parent, hooked, *plain] = await store.enqueue(
        [new(), new(callback_url="http://127.0.0.1:9/hook"), *(new() for _ in range(5))], T0
    )
    [child] = await store.enqueue([new("child", depends_on=[parent.job.id])], T0)
    assert child.job.blocked_by == 1
    jobs = await store.claim(10, T0, TTL)
    assert sorted(j.id for j in jobs) == sorted(e.job.id for e in [parent, hooked, *plain])
    answers = await asyncio.gather(
        *(store.complete(j.id, j.lease_token or "", b"null", T0 + 1) for j in jobs)
    )
    assert all(answers)
    freed = await store.get_job(child.job.id)
    assert freed is not None and (freed.status, freed.blocked_by) == (JobState.PENDING, 0)
    follow_ups = await store.claim(10, T0 + 2, TTL)
    deliveries = [j for j in follow_ups if j.task != "child"]
    assert sorted(j.task for j in follow_ups) == ["child", "jobserver.webhook"]
    assert deliveries[0].args == ["http://127.0.0.1:9/hook", hooked.job.id]


async def test_single_enqueues_sent_together_each_get_their_own_job(store: Store) -> None:
    """Single enqueues that meet in one transaction (SQLite inserts them with one statement)
    are still judged one by one: a row the schema refuses fails alone, ids do not mix."""
    await enqueue_one(store, queue="q")  # the queue exists: later enqueues need no check
    answers = await asyncio.gather(
        *(
            store.enqueue([new(queue="q", args=[i], max_retries=-1 if i == 7 else 2)], T0)
            for i in range(40)
        ),
        return_exceptions=True,
    )
    assert isinstance(answers[7], Exception)
    created = [a for i, a in enumerate(answers) if i != 7]
    assert all(isinstance(a, list) and a[0].created for a in created)
    ids = [a[0].job.id for a in created]  # type: ignore[index]
    assert len(set(ids)) == 39
    for i, answer in enumerate(answers):
        if i == 7:
            continue
        [enqueued] = answer  # type: ignore[misc]
        stored = await store.get_job(enqueued.job.id)
        assert stored is not None
        assert (stored.args, stored.queue, stored.max_retries) == ([i], "q", 2)
        assert enqueued.job.args == [i]
    assert (await store.count_by_status())["pending"] == 40


async def test_single_enqueues_that_arrive_together_are_one_write(store: Store) -> None:
    """Single plain enqueues that arrive before the writer takes them are one op (one
    INSERT), not one each; every caller gets its own job."""
    await enqueue_one(store)  # the queue is registered (SQLite then knows it has no limit)
    writes: list[int] = []
    store.commit_observer = lambda count, _seconds: writes.append(count)
    results = await asyncio.gather(*(store.enqueue([new(args=[i])], T0) for i in range(200)))
    assert sum(writes) <= 3  # without gathering: 200 writes
    assert len({r[0].job.id for r in results}) == 200
    for i, [enqueued] in enumerate(results):
        stored = await store.get_job(enqueued.job.id)
        assert stored is not None and stored.args == enqueued.job.args == [i]


async def test_a_stale_token_from_before_a_reclaim_is_rejected(store: Store) -> None:
    await enqueue_one(store)
    [first] = await store.claim(1, T0, TTL)
    await store.rescue_expired(T0 + TTL)  # lease ran out: back to pending
    [second] = await store.claim(1, T0 + TTL, TTL)
    assert second.id == first.id and second.lease_token != first.lease_token
    assert first.lease_token is not None and second.lease_token is not None
    assert not await store.complete(first.id, first.lease_token, b"1", T0 + TTL + 1)
    assert not await store.schedule_retry(first.id, first.lease_token, {}, T0, T0)
    assert not await store.dead_letter(first.id, first.lease_token, {}, T0)
    assert not await store.release(first.id, first.lease_token)
    assert await store.complete(second.id, second.lease_token, b"2", T0 + TTL + 1)


async def test_schedule_retry_returns_the_job_to_pending_later(store: Store) -> None:
    await enqueue_one(store)
    [job] = await store.claim(1, T0, TTL)
    assert job.lease_token is not None
    error = {"type": "ValueError", "message": "boom", "traceback": None}
    assert await store.schedule_retry(job.id, job.lease_token, error, T0 + 5, T0)
    after = await store.get_job(job.id)
    assert after is not None
    assert (after.status, after.run_at, after.attempts) == (JobState.PENDING, T0 + 5, 1)
    assert after.error == error
    assert await store.claim(1, T0 + 4, TTL) == []
    [again] = await store.claim(1, T0 + 5, TTL)
    assert again.attempts == 2


async def test_dead_letter_fails_the_job_and_records_it(store: Store) -> None:
    await enqueue_one(store, args=[1, 2], kwargs={"a": "b"}, queue="q1", max_retries=0)
    [job] = await store.claim(1, T0, TTL)
    assert job.lease_token is not None
    error = {"type": "KeyError", "message": "'x'", "traceback": "Traceback..."}
    assert await store.dead_letter(job.id, job.lease_token, error, T0 + 3)
    failed = await store.get_job(job.id)
    assert failed is not None and failed.status == JobState.FAILED and failed.error == error
    [dl] = await store.list_dead_letters(10)
    assert (dl.job_id, dl.task, dl.queue, dl.args, dl.kwargs) == (
        job.id,
        "t",
        "q1",
        [1, 2],
        {"a": "b"},
    )
    assert (dl.error, dl.attempts, dl.failed_at) == (error, 1, T0 + 3)
    assert await store.get_dead_letter(dl.id) == dl


async def test_requeue_dead_letter_makes_a_fresh_job_and_removes_the_letter(store: Store) -> None:
    await enqueue_one(store, args=["a"], priority=3, max_retries=0, timeout_s=9.0)
    [job] = await store.claim(1, T0, TTL)
    assert job.lease_token is not None
    await store.dead_letter(job.id, job.lease_token, {"type": "E"}, T0)
    [dl] = await store.list_dead_letters(10)
    fresh = await store.requeue_dead_letter(dl.id, T0 + 100)
    assert fresh.id != job.id
    assert (fresh.status, fresh.attempts, fresh.args) == (JobState.PENDING, 0, ["a"])
    assert (fresh.priority, fresh.max_retries, fresh.timeout_s) == (3, 0, 9.0)
    assert await store.list_dead_letters(10) == []
    old = await store.get_job(job.id)
    assert old is not None and old.status == JobState.FAILED  # terminal stays terminal
    with pytest.raises(NotFound):
        await store.requeue_dead_letter(dl.id, T0)


async def test_delete_dead_letter(store: Store) -> None:
    await enqueue_one(store, max_retries=0)
    [job] = await store.claim(1, T0, TTL)
    assert job.lease_token is not None
    await store.dead_letter(job.id, job.lease_token, {"type": "E"}, T0)
    [dl] = await store.list_dead_letters(10)
    assert await store.delete_dead_letter(dl.id)
    assert not await store.delete_dead_letter(dl.id)
    assert await store.get_dead_letter(dl.id) is None


async def test_dead_letters_page_by_cursor(store: Store) -> None:
    await store.enqueue([new(max_retries=0) for _ in range(5)], T0)
    for job in await store.claim(5, T0, TTL):
        assert job.lease_token is not None
        await store.dead_letter(job.id, job.lease_token, {"type": "E"}, T0)
    first = await store.list_dead_letters(2)
    second = await store.list_dead_letters(2, before_id=first[-1].id)
    third = await store.list_dead_letters(2, before_id=second[-1].id)
    ids = [d.id for d in first + second + third]
    assert len(ids) == 5 and ids == sorted(ids, reverse=True)


async def test_release_gives_the_attempt_back(store: Store) -> None:
    await enqueue_one(store)
    [job] = await store.claim(1, T0, TTL)
    assert job.lease_token is not None
    assert await store.release(job.id, job.lease_token)
    after = await store.get_job(job.id)
    assert after is not None
    assert (after.status, after.attempts, after.lease_token) == (JobState.PENDING, 0, None)


async def test_mark_cancelled_ends_a_running_job(store: Store) -> None:
    await enqueue_one(store)
    [job] = await store.claim(1, T0, TTL)
    assert job.lease_token is not None
    assert await store.mark_cancelled(job.id, job.lease_token, T0 + 1)
    after = await store.get_job(job.id)
    assert after is not None and after.status == JobState.CANCELLED


async def test_request_cancel_in_each_state(store: Store) -> None:
    pending = await enqueue_one(store, run_at=T0 + 100)
    cancelled, before = await store.request_cancel(pending, T0)
    assert before == JobState.PENDING
    assert cancelled.status == JobState.CANCELLED and cancelled.completed_at == T0
    again, before = await store.request_cancel(pending, T0 + 1)  # idempotent
    assert before == JobState.CANCELLED
    assert again.status == JobState.CANCELLED and again.completed_at == T0

    await enqueue_one(store)
    [running] = await store.claim(1, T0, TTL)
    flagged, before = await store.request_cancel(running.id, T0)
    assert before == JobState.RUNNING
    assert flagged.status == JobState.RUNNING and flagged.cancel_requested

    assert running.lease_token is not None
    await store.complete(running.id, running.lease_token, b"1", T0)
    with pytest.raises(Conflict):
        await store.request_cancel(running.id, T0)
    with pytest.raises(NotFound):
        await store.request_cancel(999_999, T0)


async def test_renew_leases_extends_and_reports(store: Store) -> None:
    await store.enqueue([new(), new()], T0)
    a, b = await store.claim(2, T0, TTL)
    assert a.lease_token is not None and b.lease_token is not None
    await store.request_cancel(b.id, T0)
    report = await store.renew_leases(
        [(a.id, a.lease_token), (b.id, b.lease_token), (a.id, "stale")], T0 + 20, TTL
    )
    assert report.lost == [a.id]  # the entry with the stale token
    assert report.cancel_requested == [b.id]
    renewed = await store.get_job(a.id)
    assert renewed is not None and renewed.lease_expires_at == T0 + 20 + TTL
    # The renewal moved the expiry: the old deadline no longer frees the job.
    assert (await store.rescue_expired(T0 + TTL)).requeued == []


async def test_rescue_waits_for_the_lease_to_expire(store: Store) -> None:
    job_id = await enqueue_one(store)
    await store.claim(1, T0, TTL)
    early = await store.rescue_expired(T0 + TTL - 0.001)
    assert early.requeued == [] and early.dead_lettered == []
    report = await store.rescue_expired(T0 + TTL)
    assert report.requeued == [job_id]
    job = await store.get_job(job_id)
    assert job is not None
    assert (job.status, job.attempts, job.run_at) == (JobState.PENDING, 1, T0 + TTL)
    assert job.error is not None and job.error["type"] == "LeaseExpired"


async def test_rescue_dead_letters_a_job_with_no_attempts_left(store: Store) -> None:
    job_id = await enqueue_one(store, max_retries=1)
    await store.claim(1, T0, TTL)
    await store.rescue_expired(T0 + TTL)
    await store.claim(1, T0 + TTL, TTL)  # second and last attempt
    report = await store.rescue_expired(T0 + 2 * TTL)
    assert report.dead_lettered == [job_id] and report.requeued == []
    job = await store.get_job(job_id)
    assert job is not None and job.status == JobState.FAILED and job.attempts == 2
    [dl] = await store.list_dead_letters(10)
    assert dl.job_id == job_id and dl.attempts == 2


async def test_recover_orphans_at_start(store: Store) -> None:
    await store.enqueue([new(), new(max_retries=0)], T0)
    retryable, spent = await store.claim(2, T0, TTL)
    report = await store.recover_orphans(T0 + 1)  # long before the lease would expire
    if store.exclusive:
        # One process owns the database: every running job is an orphan, taken back at once.
        assert report.requeued == [retryable.id]
        assert report.dead_lettered == [spent.id]
    else:
        # Other nodes may be alive and holding these leases: only expired ones are orphans.
        assert report.requeued == [] and report.dead_lettered == []
        report = await store.recover_orphans(T0 + TTL)
        assert report.requeued == [retryable.id] and report.dead_lettered == [spent.id]
    counts = await store.count_by_status()
    assert counts["running"] == 0 and counts["pending"] == 1 and counts["failed"] == 1


async def test_update_progress(store: Store) -> None:
    await enqueue_one(store)
    [job] = await store.claim(1, T0, TTL)
    assert job.lease_token is not None
    assert await store.update_progress(job.id, job.lease_token, 0.25, "a quarter")
    assert not await store.update_progress(job.id, "stale", 0.5, None)
    seen = await store.get_job(job.id)
    assert seen is not None and (seen.progress, seen.progress_message) == (0.25, "a quarter")


async def test_idempotency_key_returns_the_first_job_or_refuses_a_different_payload(
    store: Store,
) -> None:
    [first] = await store.enqueue([new(args=[1], idempotency_key="k1")], T0)
    [again] = await store.enqueue([new(args=[1], idempotency_key="k1")], T0 + 5)
    assert first.created and not again.created
    assert again.job.id == first.job.id
    with pytest.raises(Conflict):
        await store.enqueue([new(args=[2], idempotency_key="k1")], T0)
    assert (await store.count_by_status())["pending"] == 1


async def test_one_refused_write_does_not_undo_its_neighbours(store: Store) -> None:
    await store.enqueue([new(args=[1], idempotency_key="dup")], T0)
    results = await asyncio.gather(
        *[store.enqueue([new(args=[i])], T0) for i in range(20)],
        store.enqueue([new(args=["other"], idempotency_key="dup")], T0),
        *[store.enqueue([new(args=[i])], T0) for i in range(20)],
        return_exceptions=True,
    )
    assert sum(isinstance(r, Conflict) for r in results) == 1
    assert sum(isinstance(r, list) for r in results) == 40
    assert (await store.count_by_status())["pending"] == 41


async def test_list_jobs_filters_and_pages(store: Store) -> None:
    await store.enqueue([new("a", queue="q1") for _ in range(3)], T0)
    await store.enqueue([new("b", queue="q2") for _ in range(4)], T0)
    [claimed] = await store.claim(1, T0, TTL)
    assert len(await store.list_jobs(JobFilter(), 100)) == 7
    assert len(await store.list_jobs(JobFilter(queue="q2"), 100)) == 4
    assert len(await store.list_jobs(JobFilter(task="a"), 100)) == 3
    running = await store.list_jobs(JobFilter(status=JobState.RUNNING), 100)
    assert [j.id for j in running] == [claimed.id]
    page1 = await store.list_jobs(JobFilter(), 3)
    page2 = await store.list_jobs(JobFilter(), 3, before_id=page1[-1].id)
    page3 = await store.list_jobs(JobFilter(), 3, before_id=page2[-1].id)
    ids = [j.id for j in page1 + page2 + page3]
    assert len(ids) == 7 and ids == sorted(ids, reverse=True)


async def test_check_writable_passes_on_an_open_store(store: Store) -> None:
    await store.check_writable()


async def test_a_refused_write_leaves_nothing_behind(store: Store) -> None:
    await store.enqueue([new(args=[1], idempotency_key="same")], T0)
    with pytest.raises(Conflict):  # a batch whose second job clashes: the first is undone too
        await store.enqueue([new(args=[2]), new(args=[3], idempotency_key="same")], T0)
    assert (await store.count_by_status())["pending"] == 1


async def test_ids_are_never_reused(store: Store) -> None:
    await store.enqueue([new(max_retries=0), new(max_retries=0)], T0)
    for job in await store.claim(2, T0, TTL):
        assert job.lease_token is not None
        await store.dead_letter(job.id, job.lease_token, {"type": "E"}, T0)
    newest = (await store.list_dead_letters(10))[0]
    assert await store.delete_dead_letter(newest.id)
    await enqueue_one(store, max_retries=0)
    [job] = await store.claim(1, T0, TTL)
    assert job.lease_token is not None
    await store.dead_letter(job.id, job.lease_token, {"type": "E"}, T0)
    assert (await store.list_dead_letters(10))[0].id > newest.id


async def test_success_clears_the_error_of_an_earlier_attempt(store: Store) -> None:
    await enqueue_one(store)
    [job] = await store.claim(1, T0, TTL)
    assert job.lease_token is not None
    await store.schedule_retry(job.id, job.lease_token, {"type": "E"}, T0, T0)
    [job] = await store.claim(1, T0, TTL)
    assert job.error == {"type": "E"} and job.lease_token is not None
    await store.complete(job.id, job.lease_token, b"1", T0)
    done = await store.get_job(job.id)
    assert done is not None and done.error is None


async def test_idempotency_compares_every_option_but_the_start_time(store: Store) -> None:
    await store.enqueue([new(args=[1], priority=1, idempotency_key="opt")], T0)
    with pytest.raises(Conflict):
        await store.enqueue([new(args=[1], priority=2, idempotency_key="opt")], T0)
    [again] = await store.enqueue(
        [new(args=[1], priority=1, run_at=T0 + 9, idempotency_key="opt")], T0
    )
    assert not again.created


async def test_a_job_past_its_deadline_keeps_no_recheck_of_a_limited_queue(store: Store) -> None:
    """A queue held by its concurrency limit is looked at again soon while it has claimable
    jobs; one whose only due job is past its deadline has none (the rescuer expires it). The
    two stores disagreed here."""
    await store.configure_queue("q", {"concurrency_limit": 1}, T0)
    await store.enqueue([new(queue="q")], T0)
    assert len(await store.claim(1, T0, TTL)) == 1  # holds the queue's one slot
    await store.enqueue([new(queue="q", deadline=T0 + 5)], T0)
    assert await store.next_wake_at(T0 + 1) == T0 + 1 + 1.0  # due, held by the limit
    assert await store.next_wake_at(T0 + 10) is None  # past its deadline: nothing to claim
