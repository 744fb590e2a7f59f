"""Fairness keys in the store, for every backend: keys take turns within a queue, by weight,
within their own concurrency and rate limits, and a key's backlog never holds up another."""

from __future__ import annotations

import pytest

from jobserver.models import Job, JobState, NewJob
from jobserver.store.base import Store

T0 = 1_800_000_000.0
TTL = 30.0


def new(key: str | None, queue: str = "q", **kw: object) -> NewJob:
    return NewJob(task="t", queue=queue, fairness_key=key, **kw)  # type: ignore[arg-type]


def keys_of(jobs: list[Job]) -> list[str | None]:
    return [j.fairness_key for j in jobs]


async def finish(store: Store, jobs: list[Job], now: float = T0) -> None:
    for job in jobs:
        assert await store.complete(job.id, job.lease_token or "", b"null", now)


async def test_a_keys_backlog_does_not_hold_up_a_key_that_comes_later(store: Store) -> None:
    await store.enqueue([new("big") for _ in range(50)], T0)
    await store.enqueue([new("a"), new("b"), new("c")], T0 + 1)
    first = await store.claim(4, T0 + 1, TTL)
    # Unkeyed, the queue would run big's 50 first (FIFO); by key, a, b and c each go in the
    # first claim beside big's oldest job.
    assert sorted(k or "" for k in keys_of(first)) == ["a", "b", "big", "c"]
    rest = await store.claim(100, T0 + 1, TTL)
    assert keys_of(rest) == ["big"] * 49
    assert [j.fairness_key for j in first + rest].count("big") == 50  # nothing lost


async def test_a_key_that_was_idle_saves_no_credit(store: Store) -> None:
    """The virtual time moves with the claims: b, idle while a ran ten, starts at the front
    with one job's share, not with the ten turns it missed (it would run its five first)."""
    await store.enqueue([new("a") for _ in range(10)], T0)
    await finish(store, await store.claim(10, T0, TTL))
    await store.enqueue([new("a") for _ in range(5)] + [new("b") for _ in range(5)], T0 + 1)
    order = keys_of(await store.claim(10, T0 + 1, TTL))
    assert order == ["b", "a"] * 5  # turns, though a ran ten alone before


async def test_weights_share_the_queue_by_ratio(store: Store) -> None:
    await store.configure_key("q", "gold", {"weight": 3.0}, T0)
    await store.enqueue([new("gold") for _ in range(30)] + [new("free") for _ in range(30)], T0)
    taken = keys_of(await store.claim(20, T0, TTL))
    assert taken.count("gold") == 15 and taken.count("free") == 5


async def test_a_key_concurrency_limit_caps_that_key_only(store: Store) -> None:
    await store.configure_queue("q", {"key_concurrency_limit": 2}, T0)
    await store.enqueue([new("big") for _ in range(10)] + [new("small") for _ in range(3)], T0)
    first = await store.claim(10, T0, TTL)
    assert sorted(keys_of(first)) == ["big", "big", "small", "small"]
    assert await store.claim(10, T0, TTL) == []
    wake = await store.next_wake_at(T0)
    assert wake is not None and T0 < wake <= T0 + 1  # a recheck, not a spin
    await finish(store, [j for j in first if j.fairness_key == "big"][:1])
    assert keys_of(await store.claim(10, T0, TTL)) == ["big"]  # its one freed slot


async def test_one_key_may_be_given_more_room_than_the_default(store: Store) -> None:
    await store.configure_queue("q", {"key_concurrency_limit": 1}, T0)
    state = await store.configure_key("q", "vip", {"concurrency_limit": 3}, T0)
    assert state.policy.concurrency_limit == 3 and state.override.concurrency_limit == 3
    await store.enqueue([new("vip") for _ in range(5)] + [new("std") for _ in range(5)], T0)
    assert sorted(keys_of(await store.claim(10, T0, TTL))) == ["std", "vip", "vip", "vip"]
    state = await store.get_key("q", "vip", T0)
    assert state.running == 3
    back = await store.configure_key("q", "vip", {"concurrency_limit": None}, T0)
    assert back.policy.concurrency_limit == 1 and back.override.concurrency_limit is None


async def test_a_key_rate_limit_is_a_token_bucket_of_that_key(store: Store) -> None:
    await store.configure_queue("q", {"key_rate_limit": 2.0}, T0)
    await store.enqueue([new("a") for _ in range(10)] + [new("b") for _ in range(10)], T0)
    first = keys_of(await store.claim(20, T0, TTL))
    assert sorted(first) == ["a", "a", "b", "b"]  # a full bucket each: one second's worth
    assert await store.claim(20, T0, TTL) == []
    wake = await store.next_wake_at(T0)
    assert wake is not None and T0 < wake <= T0 + 0.5
    assert sorted(keys_of(await store.claim(20, T0 + 0.5, TTL))) == ["a", "b"]
    state = await store.get_key("q", "a", T0 + 0.5)
    assert state.rate_tokens == pytest.approx(0.0)


async def test_delayed_and_retried_keyed_jobs_wait_for_their_time(store: Store) -> None:
    await store.enqueue([new("a", run_at=T0 + 10), new("b")], T0)
    assert keys_of(await store.claim(10, T0, TTL)) == ["b"]
    wake = await store.next_wake_at(T0)
    assert wake == pytest.approx(T0 + 10)  # the delayed keyed job is not forgotten
    (job,) = await store.claim(10, T0 + 10, TTL)
    assert job.fairness_key == "a"
    outcome = await store.schedule_retry(job.id, job.lease_token or "", {"m": 1}, T0 + 20, T0 + 10)
    assert outcome == JobState.PENDING
    assert await store.claim(10, T0 + 11, TTL) == []  # its retry is not due yet
    assert await store.next_wake_at(T0 + 11) == pytest.approx(T0 + 20)
    (again,) = await store.claim(10, T0 + 20, TTL)
    assert again.id == job.id and again.attempts == 2


async def test_keyed_and_unkeyed_jobs_share_a_queue(store: Store) -> None:
    await store.enqueue([new(None) for _ in range(5)] + [new("k") for _ in range(5)], T0)
    taken = await store.claim(4, T0, TTL)
    assert keys_of(taken).count(None) == 2 and keys_of(taken).count("k") == 2
    assert len(await store.claim(10, T0, TTL)) == 6


async def test_a_paused_keyed_queue_is_not_claimed_and_does_not_spin(store: Store) -> None:
    await store.enqueue([new("a", run_at=T0 + 5)], T0)
    await store.configure_queue("q", {"paused": True}, T0)
    assert await store.claim(10, T0 + 6, TTL) == []
    assert await store.next_wake_at(T0 + 6) is None


async def test_the_busiest_keys_are_shown_most_first_and_bounded(store: Store) -> None:
    jobs = [new(f"k{i:02d}") for i in range(15) for _ in range(i + 1)]
    await store.enqueue(jobs, T0)
    await store.claim(3, T0, TTL)
    info = await store.get_queue("q", T0)
    assert info is not None
    busiest = info.busiest_keys
    assert len(busiest) == 10
    assert busiest[0]["key"] == "k14" and busiest[0]["pending"] + busiest[0]["running"] == 15
    totals = [b["pending"] + b["running"] for b in busiest]
    assert totals == sorted(totals, reverse=True)
    assert sum(info.counts[s.value] for s in (JobState.PENDING, JobState.RUNNING)) == len(jobs)


async def test_a_dead_lettered_keyed_job_is_requeued_with_its_key(store: Store) -> None:
    await store.enqueue([new("a", max_retries=0)], T0)
    (job,) = await store.claim(1, T0, TTL)
    assert await store.dead_letter(job.id, job.lease_token or "", {"m": 1}, T0) is not None
    (letter,) = await store.list_dead_letters(limit=10)
    requeued = await store.requeue_dead_letter(letter.id, T0 + 1)
    assert requeued.fairness_key == "a"
    (again,) = await store.claim(1, T0 + 1, TTL)
    assert again.id == requeued.id and again.fairness_key == "a"


async def test_keys_that_hold_nothing_are_pruned_and_those_that_do_are_kept(
    store: Store,
) -> None:
    await store.configure_key("q", "vip", {"weight": 2.0}, T0)
    await store.enqueue([new(f"once{i}") for i in range(5)] + [new("owed") for _ in range(3)], T0)
    await finish(store, await store.claim(6, T0, TTL))  # the five once-keys and owed's first
    await finish(store, await store.claim(1, T0, TTL))  # owed's second: the time moves past
    assert await store.prune_keys(T0 - 1, 3) == 3  # a batch at a time
    assert await store.prune_keys(T0 - 1, 100) == 2  # the rest of the once-seen keys
    assert await store.prune_keys(T0 - 1, 100) == 0
    assert (await store.get_key("q", "vip", T0)).override.weight == 2.0  # its own setting kept
    # owed, still a job ahead of the time, kept its place: its next job goes after fresh's
    await store.enqueue([new("owed"), new("fresh")], T0)
    order = keys_of(await store.claim(10, T0, TTL))
    assert order == ["fresh", "owed", "owed"]


async def test_a_delayed_keyed_job_alone_in_a_new_queue_runs_when_due(store: Store) -> None:
    """The first keyed job of a queue was delayed: the queue must still be known as keyed, or
    no claim ever stages its job (found by the metrics test: the queue showed no keys)."""
    await store.enqueue([new("a", queue="later", run_at=T0 + 5)], T0)
    assert await store.next_wake_at(T0) == pytest.approx(T0 + 5)
    info = await store.get_queue("later", T0)
    assert info is not None and info.busiest_keys == [{"key": "a", "pending": 1, "running": 0}]
    (job,) = await store.claim(10, T0 + 5, TTL)
    assert job.fairness_key == "a"
