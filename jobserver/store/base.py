"""The storage interface every backend meets (SQLite by default, PostgreSQL for scale-out).

Each method is one transaction. Methods that move a running job take its lease token and
return the state they moved it to, read from the row they changed (a failed attempt whose
cancel was requested ends `cancelled`, not `pending`: the caller publishes what was stored,
never a guess). They change nothing and return None when the token is no longer the current
one, so a worker that lost its lease cannot overwrite the work of the worker that took over.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .. import codec
from ..events import LogRow
from ..fairness import KeyState
from ..models import (
    Attempt,
    DeadLetter,
    Job,
    JobState,
    NewJob,
    QueueInfo,
    Schedule,
    Step,
    Transition,
)


@dataclass(slots=True)
class Enqueued:
    job: Job
    created: bool  # False: an earlier job with the same idempotency key was returned


# (transitions committed, ids of the event-log rows holding them; None: another node's notice)
OnTransitions = Callable[[list[Transition], list[int] | None], None]
CONCURRENCY_RECHECK_S = 1.0  # how soon to look again at a queue held by its concurrency limit


@dataclass(slots=True)
class LeaseReport:
    lost: list[int] = field(default_factory=list)  # leases that are no longer ours
    cancel_requested: list[int] = field(default_factory=list)


@dataclass(slots=True)
class RescueReport:
    requeued_jobs: list[Job] = field(default_factory=list)  # as written: pending again
    dead_lettered: list[int] = field(default_factory=list)
    expired: list[int] = field(default_factory=list)  # pending past their deadline: failed
    cancelled: list[int] = field(default_factory=list)  # lost runs whose cancel was asked

    @property
    def requeued(self) -> list[int]:
        return [job.id for job in self.requeued_jobs]


@dataclass(slots=True)
class JobFilter:
    status: JobState | None = None
    queue: str | None = None
    task: str | None = None
    search: str | None = None  # a part of the task's or the queue's name, any case

    def search_pattern(self) -> str | None:
        """`search` as a LIKE pattern (ESCAPE '\\'), lower case: its own % and _ match
        themselves. Both stores match with lower(...) LIKE it: the same rule on each (SQLite's
        LIKE ignores ASCII case by itself, PostgreSQL's does not)."""
        if self.search is None:
            return None
        text = self.search.lower()
        for special in ("\\", "%", "_"):
            text = text.replace(special, "\\" + special)
        return f"%{text}%"


@dataclass(frozen=True, slots=True)
class BulkResult:
    """What a bulk action found and did: the rows that matched (up to its limit), whether more
    matched, and the ids it made (requeued: the new jobs; deleted: the dead letters)."""

    matched: list[DeadLetter]
    more: bool
    done: list[int]


@dataclass(slots=True)
class DeadLetterFilter:
    """Which dead letters: each field left None matches all. Times are epoch seconds
    (failed_after inclusive, failed_before exclusive); error_type is the error's `type`."""

    task: str | None = None
    queue: str | None = None
    error_type: str | None = None
    failed_after: float | None = None
    failed_before: float | None = None

    def matches(self, letter: DeadLetter) -> bool:
        """The error type, which the stores keep inside a JSON value, is matched here."""
        return self.error_type is None or (letter.error or {}).get("type") == self.error_type


def payload_fingerprint(job: NewJob) -> str:
    """What makes two requests "the same job" for an idempotency key: every option but the
    start time (a retried request with `delay` names a different instant for the same intent)."""
    backoff = job.backoff
    return codec.fingerprint(
        {
            "task": job.task,
            "args": job.args,
            "kwargs": job.kwargs,
            "queue": job.queue,
            "priority": job.priority,
            "max_retries": job.max_retries,
            "timeout_s": job.timeout_s,
            "backoff": None if backoff is None else [backoff.base_s, backoff.factor, backoff.cap_s],
        }
    )


def node_name() -> str:
    """This process, as the job history names it: host and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


def with_current_attempt(
    kept: list[Attempt],
    status: str,
    attempts: int,
    started_at: float | None,
    completed_at: float | None,
    node: str | None,
) -> list[Attempt]:
    """A job's history: the attempts kept as rows, then the one its row describes when that
    one has no row of its own (running now, or the attempt that succeeded)."""
    if attempts >= 1 and not any(a.attempt == attempts for a in kept):
        if status == JobState.RUNNING.value:
            kept.append(Attempt(attempts, started_at, None, node, "running", None))
        elif status == JobState.SUCCEEDED.value:
            kept.append(Attempt(attempts, started_at, completed_at, node, "succeeded", None))
    return kept


class Store(Protocol):
    # True when one process owns the database, so at start every `running` row is an orphan.
    exclusive: bool
    # Told (writes, seconds) after each group-committed transaction; may be set at any time.
    commit_observer: Callable[[int, float], None] | None

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    def subscribe(
        self,
        on_due: Callable[[], None],
        on_transitions: OnTransitions,
    ) -> None:
        """Hear every transition this store commits (once committed, in write order, before
        the writes' callers resume, with the ids of the event-log rows written for them) and
        those other nodes report (with None); and when jobs became due without this process
        knowing (dependants, webhook deliveries, other nodes)."""
        ...

    # -- enqueue and read -------------------------------------------------------------------
    async def enqueue(self, jobs: Sequence[NewJob], now: float) -> list[Enqueued]:
        """Insert jobs in one transaction; returns once it has committed.

        The write is queued before the first suspension, so a claim queued after a call
        has started comes after the insert (JobServer wakes the dispatcher in that step)."""
        ...

    def enqueue_gathered(self, job: NewJob, now: float) -> asyncio.Future[Enqueued] | None:
        """enqueue([job]) without a coroutine, for a job that joins the single enqueues the
        writer has not taken yet (the HTTP fast path calls it once a request, and a task a
        request costs more than the rest of its Python); None for a job that does not (the
        caller uses enqueue).

        The write is queued before it returns. The future holds the job once committed, or
        the error that refused it, and is set in the same turn as the other writes of its
        transaction: its callbacks run before the first step of a job claimed with it."""
        ...

    async def get_job(self, job_id: int) -> Job | None: ...

    async def list_jobs(
        self, flt: JobFilter, limit: int, before_id: int | None = None
    ) -> list[Job]:
        """Newest first; `before_id` is the keyset cursor."""
        ...

    async def next_wake_at(self, now: float) -> float | None:
        """When a claim may next find work: the next run_at, a rate-limited queue's next
        token, a recheck of a queue held by its concurrency limit; None: only an enqueue."""
        ...

    async def count_by_status(self) -> dict[str, int]: ...

    async def list_attempts(self, job_id: int) -> list[Attempt] | None:
        """The job's attempts, first to last; None for no such job. Attempts that ended
        without ending the job well are kept as rows (written with their end, pruned with the
        job); the running or succeeded one is read from the job itself, so a job that
        succeeds first time writes nothing more than before."""
        ...

    async def count_dead_letters(self) -> int: ...

    # -- the worker's side --------------------------------------------------------------------
    async def claim(
        self,
        limit: int,
        now: float,
        lease_ttl_s: float,
        *,
        only: Collection[str] | None = None,
        skip: Collection[str] = (),
    ) -> list[Job]:
        """Take up to `limit` due jobs (priority, then run_at), counting an attempt on each;
        of the queues in `only` if given, none of those in `skip`."""
        ...

    async def renew_leases(
        self, leases: Sequence[tuple[int, str]], now: float, lease_ttl_s: float
    ) -> LeaseReport: ...

    async def complete(self, job_id: int, token: str, result: bytes, now: float) -> JobState | None:
        """running -> succeeded; `result` is JSON bytes."""
        ...

    async def schedule_retry(
        self, job_id: int, token: str, error: dict[str, Any], run_at: float, now: float
    ) -> JobState | None:
        """running -> pending, due at `run_at`; -> cancelled if a client asked to cancel it."""
        ...

    async def dead_letter(
        self, job_id: int, token: str, error: dict[str, Any], now: float
    ) -> JobState | None:
        """running -> failed, and a dead-letter row, in one transaction."""
        ...

    async def mark_cancelled(self, job_id: int, token: str, now: float) -> JobState | None:
        """running -> cancelled, after the task saw its cancellation."""
        ...

    async def release(self, job_id: int, token: str, now: float | None = None) -> JobState | None:
        """running -> pending at shutdown; the attempt is given back (or -> cancelled, if a
        client asked to cancel it)."""
        ...

    async def update_progress(
        self, job_id: int, token: str, fraction: float, message: str | None
    ) -> bool: ...

    async def rescue_expired(self, now: float) -> RescueReport:
        """Jobs whose lease ran out go back to pending (or fail if no attempts are left);
        pending jobs past their deadline fail as `expired`."""
        ...

    async def recover_orphans(
        self, now: float, external_queues: Collection[str] = ()
    ) -> RescueReport:
        """At start: take back running jobs that no live process can be holding (not those of
        `external_queues`, whose workers outlive the server: their leases run out as usual)."""
        ...

    # -- the client's side ---------------------------------------------------------------------
    async def request_cancel(self, job_id: int, now: float) -> tuple[Job, JobState]:
        """pending -> cancelled at once; running -> flagged for the worker to cancel.

        Returns the job after and its state before. Cancelling a cancelled job changes
        nothing; NotFound for no such job, Conflict for one that succeeded or failed."""
        ...

    async def list_dead_letters(
        self, limit: int, before_id: int | None = None, flt: DeadLetterFilter | None = None
    ) -> list[DeadLetter]:
        """Newest first; `flt` by task, queue and time in SQL (not its error_type)."""
        ...

    async def purge_queue(self, queue: str, limit: int, now: float) -> list[int]:
        """Cancel up to `limit` of the queue's pending jobs, in one transaction; their ids."""
        ...

    async def requeue_dead_letters(self, dead_letter_ids: Sequence[int], now: float) -> list[Job]:
        """requeue_dead_letter for each, in one transaction; one already gone is skipped."""
        ...

    async def delete_dead_letters(self, dead_letter_ids: Sequence[int]) -> list[int]:
        """Delete these, in one transaction; returns the ids that were there."""
        ...

    async def get_dead_letter(self, dead_letter_id: int) -> DeadLetter | None: ...

    async def requeue_dead_letter(self, dead_letter_id: int, now: float) -> Job:
        """A new pending job from a dead letter, which is removed. Raises NotFound."""
        ...

    async def delete_dead_letter(self, dead_letter_id: int) -> bool: ...

    async def delete_job(self, job_id: int) -> None:
        """Delete a finished job; NotFound, or Conflict for one still pending or running."""
        ...

    async def check_writable(self) -> None:
        """Raise StorageUnavailable unless a write transaction can start now."""
        ...

    # -- workflows and dependencies ---------------------------------------------------------
    async def results_of(self, job_ids: Sequence[int]) -> dict[int, Any]:
        """The results of finished jobs, for dependants that receive them."""
        ...

    async def create_workflow(self, jobs: Sequence[NewJob], now: float) -> tuple[int, list[Job]]:
        """Insert a workflow's jobs (their `depends_on_index` point at each other) at once."""
        ...

    async def workflow_jobs(self, workflow_id: int) -> list[Job] | None:
        """The workflow's jobs in order; None for no such workflow."""
        ...

    # -- queues ---------------------------------------------------------------------------------
    async def list_queues(self, now: float) -> list[QueueInfo]: ...

    async def get_queue(self, name: str, now: float) -> QueueInfo | None: ...

    async def configure_queue(self, name: str, changes: dict[str, Any], now: float) -> QueueInfo:
        """Set some of paused, concurrency_limit, rate_limit, rate_burst, max_depth."""
        ...

    # -- durable steps (durable.py) ----------------------------------------------------------------
    async def job_steps(self, job_id: int) -> list[Step]:
        """The job's steps, in order (none for a job that has none or does not exist)."""
        ...

    async def save_step(self, job_id: int, token: str, step: Sequence[Any]) -> bool:
        """Keep a step (seq, name, kind, status, result JSON, started_at, ended_at) of the
        job whose lease `token` is; False if the lease is gone."""
        ...

    async def take_signal(
        self, job_id: int, token: str, key: str, step: Sequence[Any], now: float
    ) -> tuple[bool, Any]:
        """Take the oldest signal sent to `key` as the job's wait step: (True, payload), or
        (False, None) when none is there (or the lease is gone)."""
        ...

    async def start_child(
        self, job_id: int, token: str, step: Sequence[Any], child: NewJob, now: float
    ) -> int | None:
        """Enqueue the job's child and keep `step` (as save_step) naming it, in one
        transaction; the child's id, or None if the lease is gone."""
        ...

    async def suspend(
        self, job_id: int, token: str, until: float, waiting_for: str | None, now: float
    ) -> JobState | None:
        """running -> pending until `until` (a signal to `waiting_for` wakes it sooner), the
        attempt given back; -> cancelled if asked. None: the lease was gone."""
        ...

    async def send_signal(self, key: str, payload: bytes, now: float) -> tuple[int, int]:
        """Keep a signal for `key`; wake the jobs waiting for it. (signal id, jobs woken)."""
        ...

    async def prune_signals(self, taken_before: float, sent_before: float, limit: int) -> int:
        """Delete up to `limit` signals taken before `taken_before`, or never taken and sent
        before `sent_before`; returns how many."""
        ...

    async def prune_keys(self, untouched_since: float, limit: int) -> int:
        """Forget up to `limit` fairness keys that hold nothing: no settings of their own, no
        turn owed, no bucket drawn since `untouched_since`. Returns how many."""
        ...

    async def configure_key(
        self, queue: str, key: str, changes: dict[str, Any], now: float
    ) -> KeyState:
        """Set some of a fairness key's own settings (None: back to its queue's default)."""
        ...

    async def get_key(self, queue: str, key: str, now: float) -> KeyState:
        """A fairness key's settings, running jobs and bucket (a key never seen: defaults)."""
        ...

    # -- schedules ------------------------------------------------------------------------------
    async def save_schedule(self, schedule: Schedule, *, keep_next_tick: bool) -> Schedule: ...

    async def list_schedules(self) -> list[Schedule]: ...

    async def get_schedule(self, name: str) -> Schedule | None: ...

    async def delete_schedule(self, name: str) -> bool: ...

    async def due_schedules(self, now: float) -> list[Schedule]: ...

    async def next_schedule_at(self) -> float | None: ...

    async def fire_schedule(
        self, name: str, expected_tick: float, next_tick: float, jobs: Sequence[NewJob], now: float
    ) -> list[Job]:
        """Move a schedule on from `expected_tick` and enqueue its jobs, in one transaction;
        nothing if another process already did (each tick is claimed once, in the database)."""
        ...

    # -- retention ------------------------------------------------------------------------------
    async def prune(self, finished_before: float, failed_before: float, limit: int) -> int:
        """Delete up to `limit` succeeded/cancelled jobs finished before `finished_before`, as
        many failed ones before `failed_before`, and dead letters before it; returns the count."""
        ...

    async def reclaim_space(self, pages: int) -> None: ...

    # -- the event log (jobserver/events.py) ---------------------------------------------------
    async def read_event_log(self, first_id: int, last_id: int, limit: int) -> list[LogRow]:
        """Event-log rows (id, base time, entries) with first_id <= id <= last_id, by id."""
        ...

    async def event_log_span(self) -> tuple[int, int]:
        """(oldest, newest) event-log row id; (0, 0) when the log is empty."""
        ...

    async def job_names(self, job_ids: Sequence[int]) -> dict[int, tuple[str, str]]:
        """job id -> (task, queue) of those still kept."""
        ...

    async def prune_events(self, before: float, limit: int) -> int:
        """Delete up to `limit` of the oldest event-log rows written before `before`."""
        ...
