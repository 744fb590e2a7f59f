"""A Hypothesis state machine over the store (issue 6, item 6).

Random sequences of what the server and its workers do to a store (enqueue, claim, renew,
complete, fail, time out, cancel, release, reap expired leases, crash and reopen, requeue or
delete dead letters, clock jumps, and writes with stale lease tokens), each followed by a check
of the whole store against what came before:

- only legal transitions happened (jobserver.models.is_legal), terminal states stay final;
- attempts never exceed max_retries + 1, and move only by a claim (+1) or a release (-1);
- a running job holds exactly one lease, the token of its last claim; a job that is not running
  holds none; an old token never succeeds and never changes anything;
- every failed job has exactly one dead-letter row, unless that row was requeued or deleted;
- no job appears that was not enqueued or requeued in that step.

Hypothesis drives the machine synchronously, so the machine runs the async store on a private
event loop. Each example gets a fresh SQLite file in a temporary directory (and, with
JOBSERVER_TEST_PG set, a fresh PostgreSQL schema), created in __init__ and dropped in teardown.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from jobserver.errors import Conflict, NotFound
from jobserver.models import TERMINAL_STATES, DeadLetter, Job, JobState, NewJob, is_legal
from jobserver.store.base import JobFilter, RescueReport

from ..conftest import PG_DSN, PG_SKIP, STORE_BACKENDS, drop_store, open_store

T = TypeVar("T")
T0 = 1_800_000_000.0
TTL = 30.0
EVERYTHING = 1_000_000
QUEUES = ("a", "b")
ERROR = {"type": "ValueError", "message": "boom", "traceback": None}
TIMEOUT = {"type": "timeout", "message": "attempt timed out", "traceback": None}

SETTINGS = {
    # SQLite: ~7 s on 2 cores. PostgreSQL opens a pool and a listener at every (re)open, so it
    # runs fewer, shorter examples (~15 s; both about twice that on a busy machine).
    "sqlite": settings(
        max_examples=100,
        stateful_step_count=50,
        deadline=None,
        database=None,  # nothing written into the repository
        suppress_health_check=[HealthCheck.too_slow],
    ),
    "postgres": settings(
        max_examples=50,
        stateful_step_count=40,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    ),
}


def claim_order(job: Job) -> tuple[int, float, int]:
    return (-job.priority, job.run_at, job.id)


class StoreMachine(RuleBasedStateMachine):
    kind = "sqlite"

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tmp = Path(tempfile.mkdtemp(prefix="jobserver-stateful-"))
        self.store: Any = None
        self.store = self.run(open_store(self.kind, self.tmp))
        self.now = T0
        self.tokens: dict[int, str] = {}  # running job -> the token of its last claim
        self.all_tokens: dict[int, set[str]] = {}  # every token a job was ever claimed with
        self.stale: list[tuple[int, str]] = []  # (job, token) pairs that must never work again
        self.jobs: dict[int, Job] = {}  # the store as the last check saw it
        self.dead: dict[int, DeadLetter] = {}
        self.letters_gone: set[int] = set()  # jobs whose dead letter was requeued or deleted
        self.new_ids: set[int] = set()  # jobs this step created

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        try:
            if self.store is not None:
                self.run(drop_store(self.store))
            self.run(self.loop.shutdown_asyncgens())
            self.run(self.loop.shutdown_default_executor())
        finally:
            self.loop.close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- helpers ---------------------------------------------------------------------------------
    def ids(self, *states: JobState) -> list[int]:
        return sorted(i for i, j in self.jobs.items() if not states or j.status in states)

    def job(self, job_id: int) -> Job:
        job: Job | None = self.run(self.store.get_job(job_id))
        assert job is not None, f"job {job_id} vanished"
        return job

    def retire(self, job_id: int) -> None:
        """The job's lease is over: its token joins the stale ones."""
        token = self.tokens.pop(job_id, None)
        if token is not None:
            self.stale.append((job_id, token))

    def pick_running(self, data: st.DataObject) -> tuple[int, str]:
        job_id = data.draw(st.sampled_from(self.ids(JobState.RUNNING)), label="running job")
        return job_id, self.tokens[job_id]

    def expect_rescue(self, report: RescueReport, *, everything: bool, expire: bool) -> None:
        """Check a reap against the store as it stood: which leases had run out (or, at a
        start-up that owns the file, every running job), which pending deadlines passed.
        A lost run whose cancellation a client asked for ends cancelled; the others go back
        to pending, or fail if no attempts are left."""
        lost = [
            j
            for j in self.jobs.values()
            if j.status == JobState.RUNNING
            and (everything or (j.lease_expires_at is not None and j.lease_expires_at <= self.now))
        ]
        cancelled = sorted(j.id for j in lost if j.cancel_requested)
        running = [j for j in lost if not j.cancel_requested]
        requeued = sorted(j.id for j in running if j.attempts <= j.max_retries)
        spent = sorted(j.id for j in running if j.attempts > j.max_retries)
        assert sorted(report.cancelled) == cancelled
        assert sorted(report.requeued) == requeued
        assert sorted(report.dead_lettered) == spent
        if expire:
            # Jobs requeued by this very reap are pending too, and expire with the others.
            pending = [
                j for j in self.jobs.values() if j.status == JobState.PENDING or j.id in requeued
            ]
            overdue = sorted(
                j.id for j in pending if j.deadline is not None and j.deadline < self.now
            )
            assert sorted(report.expired) == overdue
        else:
            assert report.expired == []
        for job_id in cancelled + requeued + spent:
            self.retire(job_id)

    # -- rules: the client's side ----------------------------------------------------------------
    @initialize()
    def start(self) -> None:
        self.check()

    @rule(
        count=st.integers(1, 3),
        queue=st.sampled_from(QUEUES),
        priority=st.integers(-1, 1),
        max_retries=st.integers(0, 2),
        delay=st.sampled_from([0.0, 0.0, 0.0, 5.0, 45.0]),
        deadline=st.none() | st.sampled_from([1.0, 20.0, 100.0]),
        key=st.sampled_from([None, None, "x", "y"]),
    )
    def enqueue(
        self,
        count: int,
        queue: str,
        priority: int,
        max_retries: int,
        delay: float,
        deadline: float | None,
        key: str | None,
    ) -> None:
        self._enqueue(count, queue, priority, max_retries, delay, deadline, key)

    @rule(count=st.integers(1, 4), max_retries=st.integers(0, 1))
    def enqueue_due(self, count: int, max_retries: int) -> None:
        """A batch due at once in one queue (the other enqueue varies every option)."""
        self._enqueue(count, "a", 0, max_retries, 0.0, None)

    def _enqueue(
        self,
        count: int,
        queue: str,
        priority: int,
        max_retries: int,
        delay: float,
        deadline: float | None,
        key: str | None = None,
    ) -> None:
        run_at = self.now + delay if delay else None
        new = [
            NewJob(
                task="t",
                args=[len(self.jobs) + i],
                queue=queue,
                priority=priority,
                max_retries=max_retries,
                run_at=run_at,
                deadline=None if deadline is None else self.now + delay + deadline,
                fairness_key=key,
            )
            for i in range(count)
        ]
        results = self.run(self.store.enqueue(new, self.now))
        assert len(results) == count and all(r.created for r in results)
        for r in results:
            assert (r.job.status, r.job.attempts, r.job.lease_token) == (JobState.PENDING, 0, None)
            self.new_ids.add(r.job.id)

    @precondition(lambda self: self.jobs)
    @rule(data=st.data(), missing=st.sampled_from([False] * 9 + [True]))
    def cancel(self, data: st.DataObject, missing: bool) -> None:
        if missing:
            with pytest.raises(NotFound):
                self.run(self.store.request_cancel(max(self.jobs, default=0) + 1000, self.now))
            return
        # A state first, then a job in it: most jobs are pending, and every state matters here.
        state = data.draw(st.sampled_from(sorted({j.status for j in self.jobs.values()})))
        job_id = data.draw(st.sampled_from(self.ids(state)), label="job to cancel")
        before = self.jobs[job_id]
        if before.status in (JobState.SUCCEEDED, JobState.FAILED):
            with pytest.raises(Conflict):
                self.run(self.store.request_cancel(job_id, self.now))
            assert self.job(job_id) == before
            return
        after, was = self.run(self.store.request_cancel(job_id, self.now))
        assert was == before.status
        if before.status == JobState.PENDING:
            assert after.status == JobState.CANCELLED
        elif before.status == JobState.RUNNING:
            assert after.status == JobState.RUNNING and after.cancel_requested
            assert after.lease_token == before.lease_token
        else:
            assert after == before  # cancelling twice changes nothing

    @precondition(lambda self: self.dead)
    @rule(data=st.data(), requeue=st.booleans())
    def settle_dead_letter(self, data: st.DataObject, requeue: bool) -> None:
        letter_id = data.draw(st.sampled_from(sorted(self.dead)), label="dead letter")
        letter = self.dead[letter_id]
        if requeue:
            job = self.run(self.store.requeue_dead_letter(letter_id, self.now))
            original = self.jobs[letter.job_id]
            assert (job.status, job.attempts, job.task, job.args) == (
                JobState.PENDING,
                0,
                original.task,
                original.args,
            )
            assert job.max_retries == original.max_retries
            self.new_ids.add(job.id)
        else:
            assert self.run(self.store.delete_dead_letter(letter_id))
        self.letters_gone.add(letter.job_id)
        assert self.run(self.store.get_dead_letter(letter_id)) is None

    # -- rules: the worker's side ----------------------------------------------------------------
    @rule(limit=st.integers(1, 4))
    def claim(self, limit: int) -> None:
        due = [
            j
            for j in self.jobs.values()
            if j.status == JobState.PENDING
            and j.run_at <= self.now
            and (j.deadline is None or j.deadline >= self.now)
        ]
        claimed = self.run(self.store.claim(limit, self.now, TTL))
        assert len(claimed) == min(limit, len(due)), (len(claimed), limit, len(due))
        due_ids = {j.id for j in due}
        for queue in QUEUES:
            # Each queue gives its unkeyed jobs in its own order: priority, then run_at, then
            # id (keyed ones go in their keys' fair order, beside them).
            mine = [j.id for j in claimed if j.queue == queue and j.fairness_key is None]
            ordered = [
                j.id
                for j in sorted(due, key=claim_order)
                if j.queue == queue and j.fairness_key is None
            ]
            assert sorted(mine, key=ordered.index) == ordered[: len(mine)], (mine, ordered)
        for job in claimed:
            assert job.id in due_ids
            before = self.jobs[job.id]
            assert job.status == JobState.RUNNING and not job.cancel_requested
            assert job.attempts == before.attempts + 1
            assert job.lease_expires_at == self.now + TTL and job.started_at == self.now
            assert job.lease_token is not None
            assert job.lease_token not in self.all_tokens.get(job.id, set()), "a token came back"
            self.tokens[job.id] = job.lease_token
            self.all_tokens.setdefault(job.id, set()).add(job.lease_token)

    @precondition(lambda self: self.tokens)
    @rule(data=st.data())
    def renew(self, data: st.DataObject) -> None:
        job_id, token = self.pick_running(data)
        report = self.run(self.store.renew_leases([(job_id, token)], self.now, TTL))
        assert report.lost == []
        assert report.cancel_requested == ([job_id] if self.jobs[job_id].cancel_requested else [])
        assert self.job(job_id).lease_expires_at == self.now + TTL

    @precondition(lambda self: self.tokens)
    @rule(data=st.data(), fraction=st.floats(0, 1))
    def progress(self, data: st.DataObject, fraction: float) -> None:
        job_id, token = self.pick_running(data)
        assert self.run(self.store.update_progress(job_id, token, fraction, "step"))
        assert self.job(job_id).progress == fraction

    @precondition(lambda self: self.tokens)
    @rule(data=st.data())
    def complete(self, data: st.DataObject) -> None:
        job_id, token = self.pick_running(data)
        written = self.run(self.store.complete(job_id, token, b'{"ok": true}', self.now))
        assert written == JobState.SUCCEEDED
        done = self.job(job_id)
        assert (done.status, done.result, done.error) == (JobState.SUCCEEDED, {"ok": True}, None)
        self.retire(job_id)

    def _fail(
        self, job_id: int, token: str, error: dict[str, Any], retryable: bool, delay: float
    ) -> None:
        before = self.jobs[job_id]
        # What the worker decides (jobserver.retry.decide): retry while attempts remain.
        if retryable and before.attempts <= before.max_retries:
            written = self.run(
                self.store.schedule_retry(job_id, token, error, self.now + delay, self.now)
            )
            after = self.job(job_id)
            assert written == after.status  # the state it says it wrote is the stored one
            if before.cancel_requested:
                # A client asked to cancel this run: the failed attempt ends it cancelled, not
                # retried (tests/server/test_leases.py has the case on its own).
                assert after.status == JobState.CANCELLED
            else:
                assert (after.status, after.run_at) == (JobState.PENDING, self.now + delay)
            assert after.error == error
        else:
            written = self.run(self.store.dead_letter(job_id, token, error, self.now))
            after = self.job(job_id)
            assert written == after.status
            assert (after.status, after.error) == (JobState.FAILED, error)
        self.retire(job_id)

    @precondition(lambda self: self.tokens)
    @rule(data=st.data(), permanent=st.booleans(), delay=st.sampled_from([0.0, 1.0, 10.0]))
    def fail(self, data: st.DataObject, permanent: bool, delay: float) -> None:
        job_id, token = self.pick_running(data)
        self._fail(job_id, token, ERROR, not permanent, delay)

    @precondition(lambda self: self.tokens)
    @rule(data=st.data(), delay=st.sampled_from([0.0, 2.0]))
    def time_out(self, data: st.DataObject, delay: float) -> None:
        """The executor's timeout: a retryable failure of type `timeout`, whatever retry_on."""
        job_id, token = self.pick_running(data)
        self._fail(job_id, token, TIMEOUT, True, delay)

    @precondition(lambda self: any(self.jobs[i].cancel_requested for i in self.tokens))
    @rule(data=st.data())
    def task_saw_its_cancellation(self, data: st.DataObject) -> None:
        flagged = sorted(i for i in self.tokens if self.jobs[i].cancel_requested)
        job_id = data.draw(st.sampled_from(flagged), label="cancel-requested job")
        written = self.run(self.store.mark_cancelled(job_id, self.tokens[job_id], self.now))
        assert written == self.job(job_id).status == JobState.CANCELLED
        self.retire(job_id)

    @precondition(lambda self: self.tokens)
    @rule(data=st.data())
    def release_at_shutdown(self, data: st.DataObject) -> None:
        """Back to pending with the attempt given back; cancelled if a client asked for that."""
        job_id, token = self.pick_running(data)
        before = self.jobs[job_id]
        written = self.run(self.store.release(job_id, token, self.now))
        after = self.job(job_id)
        assert written == after.status
        if before.cancel_requested:
            assert (after.status, after.attempts) == (JobState.CANCELLED, before.attempts)
        else:
            assert (after.status, after.attempts) == (JobState.PENDING, before.attempts - 1)
        self.retire(job_id)

    @precondition(lambda self: self.stale)
    @rule(
        data=st.data(),
        write=st.sampled_from(
            [
                "complete",
                "schedule_retry",
                "dead_letter",
                "mark_cancelled",
                "release",
                "update_progress",
                "renew",
            ]
        ),
    )
    def stale_write(self, data: st.DataObject, write: str) -> None:
        job_id, token = data.draw(st.sampled_from(self.stale), label="stale lease")
        before = self.jobs[job_id]
        letters = len(self.dead)
        s, now = self.store, self.now
        if write == "renew":
            assert self.run(s.renew_leases([(job_id, token)], now, TTL)).lost == [job_id]
        else:
            call: Callable[[], Coroutine[Any, Any, Any]] = {
                "complete": lambda: s.complete(job_id, token, b'"stale"', now),
                "schedule_retry": lambda: s.schedule_retry(job_id, token, ERROR, now, now),
                "dead_letter": lambda: s.dead_letter(job_id, token, ERROR, now),
                "mark_cancelled": lambda: s.mark_cancelled(job_id, token, now),
                "release": lambda: s.release(job_id, token),
                "update_progress": lambda: s.update_progress(job_id, token, 0.5, "stale"),
            }[write]
            nothing = False if write == "update_progress" else None  # the moves return a state
            assert self.run(call()) is nothing, f"{write} succeeded with a stale token"
        assert self.job(job_id) == before, f"{write} with a stale token changed the job"
        assert self.run(self.store.count_dead_letters()) == letters

    # -- rules: the rescuer, crashes, time -------------------------------------------------------
    @rule()
    def reap(self) -> None:
        report = self.run(self.store.rescue_expired(self.now))
        self.expect_rescue(report, everything=False, expire=True)

    @precondition(lambda self: self.jobs)
    @rule()
    def crash_and_reopen(self) -> None:
        """The process dies with jobs running; a new one opens the same database."""
        old = self.store
        self.run(old.close())
        self.store = None
        if self.kind == "sqlite":
            from jobserver.store.sqlite import SQLiteStore

            reopened: Any = SQLiteStore(old.path)
        else:
            from jobserver.store.postgres import PostgresStore

            assert PG_DSN is not None
            reopened = PostgresStore(PG_DSN, schema=old.schema)
        self.run(reopened.open())
        self.store = reopened
        report = self.run(self.store.recover_orphans(self.now))
        # SQLite owns its file: every running job is an orphan. PostgreSQL: only expired leases.
        exclusive = bool(self.store.exclusive)
        self.expect_rescue(report, everything=exclusive, expire=not exclusive)

    @rule(
        seconds=st.one_of(
            st.floats(0, 2 * TTL, allow_nan=False),
            st.sampled_from([0.001, TTL - 0.001, TTL, 3 * TTL]),
        )
    )
    def clock_jump(self, seconds: float) -> None:
        self.now += seconds

    @precondition(lambda self: self.tokens)
    @rule(data=st.data(), offset=st.sampled_from([-0.001, 0.0, 0.0]))
    def clock_to_a_lease_expiry(self, data: st.DataObject, offset: float) -> None:
        """Just to a running job's lease expiry, or a millisecond short of it: the boundary."""
        expiries = sorted({self.jobs[i].lease_expires_at or 0.0 for i in self.tokens})
        target = data.draw(st.sampled_from(expiries), label="lease expiry") + offset
        self.now = max(self.now, target)

    # -- the check after every step ------------------------------------------------------------
    @invariant()
    def check(self) -> None:
        jobs = {j.id: j for j in self.run(self.store.list_jobs(JobFilter(), EVERYTHING))}
        dead = {d.id: d for d in self.run(self.store.list_dead_letters(EVERYTHING))}
        appeared = jobs.keys() - self.jobs.keys()
        assert appeared == self.new_ids, f"jobs from nowhere: {sorted(appeared - self.new_ids)}"
        assert self.jobs.keys() <= jobs.keys(), "jobs vanished"
        for job_id, job in jobs.items():
            prev = self.jobs.get(job_id)
            if prev is not None and prev.status != job.status:
                assert is_legal(prev.status, job.status), (
                    f"job {job_id}: illegal {prev.status} -> {job.status}"
                )
            if prev is not None and prev.status in TERMINAL_STATES:
                assert job == prev, f"job {job_id}: a {prev.status} job changed"
            if prev is not None and job.attempts != prev.attempts:
                claimed = (prev.status, job.status, job.attempts - prev.attempts) == (
                    JobState.PENDING,
                    JobState.RUNNING,
                    1,
                )
                released = (prev.status, job.status, job.attempts - prev.attempts) == (
                    JobState.RUNNING,
                    JobState.PENDING,
                    -1,
                )
                assert claimed or released, (job_id, prev.attempts, job.attempts)
            assert 0 <= job.attempts <= job.max_retries + 1, (job_id, job.attempts)
            if job.status == JobState.RUNNING:
                # Exactly one valid lease: the token of its last claim.
                assert job.lease_token is not None and job.lease_expires_at is not None
                assert job.lease_token == self.tokens.get(job_id), f"job {job_id}: lease token"
                assert job.attempts >= 1
            else:
                assert job.lease_token is None and job.lease_expires_at is None
                assert job_id not in self.tokens, f"job {job_id} is {job.status} but leased"
            if job.is_terminal:
                assert job.completed_at is not None
            letters = [d for d in dead.values() if d.job_id == job_id]
            if job.status == JobState.FAILED:
                if job_id not in self.letters_gone:
                    assert len(letters) == 1, f"failed job {job_id} has {len(letters)} dead letters"
                    assert letters[0].attempts == job.attempts
                    assert letters[0].error == job.error
            else:
                assert not letters, f"job {job_id} is {job.status} but has a dead letter"
        for job_id, token in self.stale:
            assert jobs[job_id].lease_token != token, f"job {job_id}: an old token is current"
        self.jobs, self.dead, self.new_ids = jobs, dead, set()


@pytest.mark.parametrize("kind", STORE_BACKENDS)
def test_the_store_only_makes_legal_moves(kind: str) -> None:
    if kind == "postgres" and not PG_DSN:
        pytest.skip(PG_SKIP)
    machine = type(f"StoreMachine_{kind}", (StoreMachine,), {"kind": kind})
    run_state_machine_as_test(machine, settings=SETTINGS[kind])
