"""Leases (issue 6, item 2): reclaimed within TTL + sweep interval and never before the TTL, a
healthy lease is never reclaimed, and an old lease token can change nothing.

Time is explicit: the store tests pass `now` to every call, the JobServer test moves a
ManualClock one second at a time. Every store test runs on SQLite and, with JOBSERVER_TEST_PG
set, on PostgreSQL (the `store` fixture).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from jobserver import JobServer, JobState, ManualClock
from jobserver.models import NewJob
from jobserver.store.base import RescueReport, Store
from jobserver.tasks import Registry, task

from ..conftest import ServerFactory, eventually

T0 = 1_800_000_000.0
TTL = 30.0
SWEEP = 5.0  # the rescuer's interval (--rescue-interval)
EPS = 0.001


async def claim_one(store: Store, now: float, ttl: float = TTL) -> tuple[int, str]:
    [job] = await store.claim(1, now, ttl)
    assert job.lease_token is not None and job.lease_expires_at == now + ttl
    return job.id, job.lease_token


async def status(store: Store, job_id: int) -> JobState:
    job = await store.get_job(job_id)
    assert job is not None
    return job.status


def sweep_times(first: float, until: float, interval: float = SWEEP) -> list[float]:
    times, t = [], first
    while t <= until:
        times.append(t)
        t += interval
    return times


# -- 1. an abandoned lease: reclaimed in [expiry, expiry + sweep), never before -------------------
@pytest.mark.parametrize("phase", [0.0, EPS, 1.7, SWEEP / 2, SWEEP - EPS])
async def test_an_abandoned_lease_is_reclaimed_within_ttl_plus_sweep_never_before(
    store: Store, phase: float
) -> None:
    """A worker claims at T0 and is never heard from again. A rescuer sweeps every SWEEP
    seconds, its first sweep `phase` seconds after the claim: the first sweep at or after
    T0 + TTL takes the job back, no sweep before it does."""
    [enq] = await store.enqueue([NewJob(task="t")], T0)
    job_id, _ = await claim_one(store, T0)
    expiry = T0 + TTL
    reclaimed_at = None
    for t in sweep_times(T0 + phase, expiry + 2 * SWEEP):
        report = await store.rescue_expired(t)
        if t < expiry:
            assert job_id not in report.requeued, f"reclaimed at {t - T0:+.3f} s, before the TTL"
            assert await status(store, job_id) == JobState.RUNNING
        elif reclaimed_at is None:
            assert report.requeued == [job_id], f"not reclaimed by the sweep at {t - T0:+.3f} s"
            reclaimed_at = t
        else:
            assert job_id not in report.requeued  # once, not at every sweep
    assert reclaimed_at is not None
    assert expiry <= reclaimed_at < expiry + SWEEP
    job = await store.get_job(enq.job.id)
    assert job is not None
    assert (job.status, job.attempts, job.lease_token) == (JobState.PENDING, 1, None)
    assert job.error is not None and job.error["type"] == "LeaseExpired"


async def test_the_ttl_counts_from_the_last_renewal(store: Store) -> None:
    """A worker renews three times and then stalls: the TTL runs from its last renewal."""
    await store.enqueue([NewJob(task="t")], T0)
    job_id, token = await claim_one(store, T0)
    last = T0
    for k in (1, 2, 3):
        last = T0 + k * TTL / 3
        report = await store.renew_leases([(job_id, token)], last, TTL)
        assert report.lost == []
    # The claim's own expiry (T0 + TTL) has passed: the renewals moved it.
    for t in (T0 + TTL, last + TTL - 1, last + TTL - EPS):
        assert (await store.rescue_expired(t)).requeued == [], t - last
    assert (await store.rescue_expired(last + TTL)).requeued == [job_id]


async def test_the_boundary_is_exact_on_both_sides(store: Store) -> None:
    """Several jobs claimed at different times, swept at one instant: exactly those whose
    lease ran out by then (expiry <= now) are taken back."""
    await store.enqueue([NewJob(task="t") for _ in range(6)], T0)
    claims = {}
    for i in range(6):
        job_id, _ = await claim_one(store, T0 + i)
        claims[job_id] = T0 + i + TTL
    now = T0 + 2.5 + TTL
    report = await store.rescue_expired(now)
    assert sorted(report.requeued) == sorted(i for i, exp in claims.items() if exp <= now)
    assert len(report.requeued) == 3
    for job_id, exp in claims.items():
        assert await status(store, job_id) == (JobState.PENDING if exp <= now else JobState.RUNNING)


# -- 2. a healthy lease is never reclaimed ------------------------------------------------------
@pytest.mark.parametrize("ttl", [TTL, 3.0])
async def test_a_healthy_lease_renewed_every_third_of_the_ttl_is_never_reclaimed(
    store: Store, ttl: float
) -> None:
    """One long job, renewed every TTL/3 for 40 TTLs, with a rescuer sweeping every TTL/6 in
    between and just before each renewal: never reclaimed, the same token throughout."""
    await store.enqueue([NewJob(task="long")], T0)
    job_id, token = await claim_one(store, T0, ttl)
    renew_every = ttl / 3
    renewals = 40 * 3
    for k in range(1, renewals + 1):
        renew_at = T0 + k * renew_every
        for t in (renew_at - renew_every / 2, renew_at - EPS):
            report = await store.rescue_expired(t)
            assert job_id not in report.requeued + report.dead_lettered, (k, t - T0)
        lease = await store.renew_leases([(job_id, token)], renew_at, ttl)
        assert lease.lost == [], f"renewal {k} found the lease lost"
    job = await store.get_job(job_id)
    assert job is not None
    assert (job.status, job.attempts, job.lease_token) == (JobState.RUNNING, 1, token)
    assert job.lease_expires_at == T0 + renewals * renew_every + ttl
    assert await store.complete(job_id, token, b'"done"', T0 + renewals * renew_every + 1)
    assert await status(store, job_id) == JobState.SUCCEEDED


async def test_a_renewal_of_one_job_does_not_keep_another_alive(store: Store) -> None:
    """Two jobs in one claim share a token; renewing one of them leaves the other to expire."""
    await store.enqueue([NewJob(task="t"), NewJob(task="t")], T0)
    a, b = await store.claim(2, T0, TTL)
    assert a.lease_token is not None
    await store.renew_leases([(a.id, a.lease_token)], T0 + 20, TTL)
    report = await store.rescue_expired(T0 + TTL)
    assert report.requeued == [b.id]
    assert await status(store, a.id) == JobState.RUNNING


# -- 3. a stale token changes nothing -----------------------------------------------------------
StaleWrite = Callable[[Store, int, str, float], Awaitable[bool]]

STALE_WRITES: dict[str, StaleWrite] = {
    "complete": lambda s, i, tok, now: s.complete(i, tok, b'"stale"', now),
    "schedule_retry": lambda s, i, tok, now: s.schedule_retry(
        i, tok, {"type": "E", "message": "stale", "traceback": None}, now + 1, now
    ),
    "dead_letter": lambda s, i, tok, now: s.dead_letter(
        i, tok, {"type": "E", "message": "stale", "traceback": None}, now
    ),
    "mark_cancelled": lambda s, i, tok, now: s.mark_cancelled(i, tok, now),
    "release": lambda s, i, tok, now: s.release(i, tok),
    "update_progress": lambda s, i, tok, now: s.update_progress(i, tok, 0.5, "stale"),
}


async def _reclaimed_by_another_worker(store: Store, job_id: int, now: float) -> float:
    await store.rescue_expired(now + TTL)
    [again] = await store.claim(1, now + TTL, TTL)
    assert again.id == job_id
    return now + TTL + 1


async def _rescued_not_yet_reclaimed(store: Store, job_id: int, now: float) -> float:
    await store.rescue_expired(now + TTL)
    assert await status(store, job_id) == JobState.PENDING
    return now + TTL + 1


async def _finished_by_the_new_holder(store: Store, job_id: int, now: float) -> float:
    later = await _reclaimed_by_another_worker(store, job_id, now)
    job = await store.get_job(job_id)
    assert job is not None and job.lease_token is not None
    assert await store.complete(job_id, job.lease_token, b'"winner"', later)
    return later + 1


async def _recovered_after_a_restart(store: Store, job_id: int, now: float) -> float:
    # SQLite takes orphans back at once; PostgreSQL once their lease has run out.
    later = now + (1 if store.exclusive else TTL)
    report = await store.recover_orphans(later)
    assert report.requeued == [job_id]
    [again] = await store.claim(1, later, TTL)
    assert again.id == job_id
    return later + 1


async def _cancelled_while_pending(store: Store, job_id: int, now: float) -> float:
    await store.rescue_expired(now + TTL)
    await store.request_cancel(job_id, now + TTL)
    assert await status(store, job_id) == JobState.CANCELLED
    return now + TTL + 1


HOW_STALE: dict[str, Callable[[Store, int, float], Awaitable[float]]] = {
    "reclaimed": _reclaimed_by_another_worker,
    "rescued": _rescued_not_yet_reclaimed,
    "finished": _finished_by_the_new_holder,
    "recovered": _recovered_after_a_restart,
    "cancelled": _cancelled_while_pending,
}


@pytest.mark.parametrize("how", sorted(HOW_STALE))
@pytest.mark.parametrize("write", sorted(STALE_WRITES))
async def test_a_stale_token_is_rejected_and_changes_nothing(
    store: Store, write: str, how: str
) -> None:
    await store.enqueue([NewJob(task="t", max_retries=5)], T0)
    job_id, old_token = await claim_one(store, T0)
    now = await HOW_STALE[how](store, job_id, T0)
    before = await store.get_job(job_id)
    dead_before = await store.count_dead_letters()

    nothing = False if write == "update_progress" else None  # the moves return a state
    assert await STALE_WRITES[write](store, job_id, old_token, now) is nothing

    after = await store.get_job(job_id)
    assert after == before, f"a {write} with an old token changed the job"
    assert await store.count_dead_letters() == dead_before
    # A renewal with the old token reports the lease lost and does not extend the new one.
    report = await store.renew_leases([(job_id, old_token)], now, TTL)
    assert report.lost == [job_id]
    assert await store.get_job(job_id) == before


async def test_the_current_token_still_works_after_a_stale_one_was_refused(store: Store) -> None:
    await store.enqueue([NewJob(task="t")], T0)
    job_id, old = await claim_one(store, T0)
    now = await _reclaimed_by_another_worker(store, job_id, T0)
    job = await store.get_job(job_id)
    assert job is not None and job.lease_token not in (None, old)
    for write in STALE_WRITES.values():
        assert not await write(store, job_id, old, now)
    assert await store.update_progress(job_id, job.lease_token, 0.25, "current")
    assert await store.complete(job_id, job.lease_token, b'"current"', now)
    done = await store.get_job(job_id)
    assert done is not None and (done.status, done.result, done.attempts) == (
        JobState.SUCCEEDED,
        "current",
        2,
    )


# -- a cancellation asked for a running job survives the loss of its run --------------------------
# (It did not at first: the job went back to pending with the flag set, and the next claim
# cleared the flag, so a job whose cancellation had been accepted ran again.)
async def _lease_expired(store: Store, job_id: int, token: str) -> float:
    await store.rescue_expired(T0 + TTL)  # the worker died before it saw the cancellation
    return T0 + TTL


async def _process_restarted(store: Store, job_id: int, token: str) -> float:
    await store.recover_orphans(T0 + TTL)  # start-up recovery after a crash
    return T0 + TTL


async def _released_at_shutdown(store: Store, job_id: int, token: str) -> float:
    assert await store.release(job_id, token)  # shut down before the heartbeat saw the flag
    return T0 + 2


LOST_RUNS = {
    "lease_expired": _lease_expired,
    "process_restarted": _process_restarted,
    "released_at_shutdown": _released_at_shutdown,
}


@pytest.mark.parametrize("how", sorted(LOST_RUNS))
async def test_a_cancel_requested_job_is_not_run_again_when_its_run_is_lost(
    store: Store, how: str
) -> None:
    await store.enqueue([NewJob(task="t")], T0)
    job_id, token = await claim_one(store, T0)
    job, before = await store.request_cancel(job_id, T0 + 1)
    assert before == JobState.RUNNING and job.cancel_requested  # the client got 200
    now = await LOST_RUNS[how](store, job_id, token)
    again = await store.claim(1, now, TTL)
    assert again == [], "a job whose cancellation was accepted was claimed and run again"
    ended = await store.get_job(job_id)
    assert ended is not None
    assert (ended.status, ended.lease_token) == (JobState.CANCELLED, None)
    assert ended.completed_at is not None
    assert await store.count_dead_letters() == 0


async def test_a_cancel_requested_job_whose_attempt_fails_is_not_retried(store: Store) -> None:
    await store.enqueue([NewJob(task="t", max_retries=3)], T0)
    job_id, token = await claim_one(store, T0)
    await store.request_cancel(job_id, T0 + 1)  # 200: the client is told it will stop
    # The attempt fails before the task saw the cancellation; the worker asks for a retry.
    error = {"type": "ValueError", "message": "failed meanwhile", "traceback": None}
    await store.schedule_retry(job_id, token, error, T0 + 2, T0 + 2)
    again = await store.claim(1, T0 + 3, TTL)
    assert again == [], "a job whose cancellation was accepted was retried"
    assert await status(store, job_id) == JobState.CANCELLED


# -- the same through a JobServer: its rescuer, on a ManualClock ----------------------------------
reg = Registry()
gate: dict[str, asyncio.Event] = {}


@task(registry=reg, name="lease_add")
async def lease_add(a: int, b: int) -> int:
    return a + b


@task(registry=reg, name="lease_gated")
async def lease_gated() -> str:
    await gate["open"].wait()
    return "finished"


async def test_jobserver_reclaims_a_stalled_lease_in_its_window_and_keeps_a_healthy_one(
    make_server: ServerFactory, clock: ManualClock
) -> None:
    """A JobServer (lease TTL 30 s, rescuer every 5 s) runs a long job of its own, renewing it;
    a second "worker" claims a job through the store and never renews it. The clock moves one
    second at a time for 12 TTLs: the stalled job is taken back by the first sweep at or after
    its expiry, never before, and then run by the server; the long job is never taken back."""
    gate["open"] = asyncio.Event()
    server: JobServer = await make_server(
        tasks=list(reg), lease_ttl_s=TTL, rescue_interval_s=SWEEP, concurrency=4
    )
    sweeps: list[tuple[float, RescueReport]] = []
    swept = asyncio.Event()
    rescue = server.store.rescue_expired

    async def recording_rescue(now: float) -> RescueReport:
        report = await rescue(now)
        sweeps.append((now, report))
        swept.set()
        return report

    server.store.rescue_expired = recording_rescue  # type: ignore[method-assign]
    start = clock.now()

    long_job = await server.enqueue("lease_gated")
    await eventually(lambda: server.get_job(long_job.id), lambda j: j.status == JobState.RUNNING, 5)
    # The stalled worker's job is due in 1 s, so the server's own dispatcher cannot take it
    # first; the "other worker" claims it at that instant through the store.
    await server.store.enqueue([NewJob(task="lease_add", args=[2, 3], run_at=start + 1)], start)
    [stalled] = await server.store.claim(1, start + 1, TTL)
    assert stalled.lease_token is not None
    stalled_expiry = start + 1 + TTL

    last_sweep = last_beat = start
    for _ in range(int(12 * TTL)):
        clock.advance(1)
        now = clock.now()
        if now - last_beat >= TTL / 3:  # the heartbeat is due: wait for it to land
            await eventually(
                lambda: server.get_job(long_job.id),
                lambda j, n=now: j.lease_expires_at == n + TTL,  # type: ignore[misc]
                5,
            )
            last_beat = now
        if now - last_sweep >= SWEEP:  # the rescuer is due: wait for its sweep
            await asyncio.wait_for(swept.wait(), 5)
            swept.clear()
            last_sweep = now

    assert [t - start for t, _ in sweeps] == [SWEEP * k for k in range(1, len(sweeps) + 1)]
    reclaims = [t for t, report in sweeps if stalled.id in report.requeued]
    assert len(reclaims) == 1, reclaims
    assert stalled_expiry <= reclaims[0] < stalled_expiry + SWEEP
    assert all(long_job.id not in r.requeued + r.dead_lettered for _, r in sweeps)

    done = await server.wait_for(stalled.id, timeout_s=5)
    assert (done.status, done.result, done.attempts) == (JobState.SUCCEEDED, 5, 2)
    # The stalled worker wakes up at last: its completion is refused.
    assert not await server.store.complete(stalled.id, stalled.lease_token, b"99", clock.now())
    assert (await server.get_job(stalled.id)).result == 5

    running = await server.get_job(long_job.id)
    assert (running.status, running.attempts) == (JobState.RUNNING, 1)
    gate["open"].set()
    finished = await server.wait_for(long_job.id, timeout_s=5)
    assert (finished.status, finished.attempts, finished.result) == (
        JobState.SUCCEEDED,
        1,
        "finished",
    )


# -- the lease race (issue 19, item 3) ------------------------------------------------------------
race_gates: dict[int, asyncio.Event] = {}


@task(registry=reg, name="lease_race_attempt")
async def lease_race_attempt() -> str:
    """Attempt n waits for race_gates[n] (each attempt gets its own gate)."""
    from jobserver.tasks import current_job

    attempt = current_job().attempt
    await race_gates.setdefault(attempt, asyncio.Event()).wait()
    return f"attempt {attempt}"


async def test_a_lost_lease_stops_only_the_run_that_held_it(
    make_server: ServerFactory, clock: ManualClock
) -> None:
    """A renewal is in flight for attempt 1 when that attempt ends and the job is claimed
    again here (attempt 2, a new token). The renewal reports the job's lease lost (attempt 1's
    token): attempt 2, which holds its own lease, must go on. (It was cancelled, and the job
    then ended dead-lettered as LeaseExpired.)"""
    race_gates.clear()
    server: JobServer = await make_server(tasks=list(reg), lease_ttl_s=TTL, rescue_interval_s=3600)
    job = await server.enqueue("lease_race_attempt")
    await eventually(lambda: server.get_job(job.id), lambda j: j.status == JobState.RUNNING, 5)
    # The heartbeat takes its snapshot of the leases held: attempt 1's.
    sent = server.worker.held_leases()
    assert [job_id for job_id, _ in sent] == [job.id]
    # Attempt 1's lease expires and another node's rescuer puts the job back; this process
    # claims it again: attempt 2 runs here under a new token.
    clock.advance(TTL + 1)
    assert (await server.store.rescue_expired(clock.now())).requeued == [job.id]
    race_gates.setdefault(1, asyncio.Event()).set()  # attempt 1 ends: its outcome is stale
    server.worker.wake()
    await eventually(
        lambda: server.get_job(job.id),
        lambda j: j.status == JobState.RUNNING and j.attempts == 2,
        5,
    )
    # The renewal sent with attempt 1's token comes back: that lease is lost.
    report = await server.store.renew_leases(sent, clock.now(), TTL)
    assert report.lost == [job.id]
    server.worker.apply_renewal(sent, report)
    race_gates.setdefault(2, asyncio.Event()).set()
    done = await server.wait_for(job.id, timeout_s=5)
    assert (done.status, done.result, done.attempts) == (JobState.SUCCEEDED, "attempt 2", 2)
