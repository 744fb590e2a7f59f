"""The Store methods written once for both dialects.

Each method is a lifecycle program (jobserver/lifecycle.py) or a small read program below,
run by the dialect's driver: `_move` runs a program as one group-committed write and tells
listeners what it set off; `_look` runs one on a reading connection. SQLiteStore and
PostgresStore subclass this with their connections, notifications and hot paths (claim,
completion and insert batches, whose statements are shaped by the dialect).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any, TypeVar

from .. import codec, durable_lifecycle, lifecycle
from ..fairness import KeyState
from ..job_options import MAX_ID
from ..lifecycle import Changes, Program, count, job, row, rows, value
from ..models import (
    Attempt,
    Backoff,
    DeadLetter,
    Job,
    JobState,
    NewJob,
    QueueInfo,
    Schedule,
    Step,
    Transition,
)
from .base import (
    DeadLetterFilter,
    LeaseReport,
    OnTransitions,
    RescueReport,
    with_current_attempt,
)

T = TypeVar("T")

JOB_COLUMNS = (
    "id, task, queue, args, kwargs, priority, status, attempts, max_retries, timeout_s, backoff,"
    " created_at, run_at, started_at, completed_at, result, error, progress, progress_message,"
    " lease_token, lease_expires_at, cancel_requested, idempotency_key, deadline, unique_key,"
    " depends_on, blocked_by, pass_result, on_dependency_failure, callback_url, workflow_id,"
    " traceparent, fairness_key, has_steps"
)


def job_from_row(r: Sequence[Any], loads: Callable[[Any], Any]) -> Job:
    """A Job from a row of JOB_COLUMNS; `loads` decodes a JSON column as the driver reads it."""
    backoff = loads(r[10]) if r[10] is not None else None
    return Job(
        id=r[0],
        task=r[1],
        queue=r[2],
        args=loads(r[3]),
        kwargs=loads(r[4]),
        priority=r[5],
        status=JobState(r[6]),
        attempts=r[7],
        max_retries=r[8],
        timeout_s=r[9],
        backoff=Backoff(**backoff) if backoff is not None else None,
        created_at=r[11],
        run_at=r[12],
        started_at=r[13],
        completed_at=r[14],
        result=loads(r[15]) if r[15] is not None else None,
        error=loads(r[16]) if r[16] is not None else None,
        progress=r[17],
        progress_message=r[18],
        lease_token=r[19],
        lease_expires_at=r[20],
        cancel_requested=bool(r[21]),
        idempotency_key=r[22],
        deadline=r[23],
        unique_key=r[24],
        depends_on=loads(r[25]) if r[25] is not None else [],
        blocked_by=r[26],
        pass_result=bool(r[27]),
        on_dependency_failure=r[28],
        callback_url=r[29],
        workflow_id=r[30],
        traceparent=r[31],
        fairness_key=r[32],
        has_steps=bool(r[33]),
    )


class JobStore:
    exclusive: bool  # one process owns the database: at start every running job is an orphan
    dialect: lifecycle.Dialect
    node: str  # written on each job it claims: the history's `node`
    _turn: Iterator[int]  # which queue goes first in a claim: rotates for fairness

    # -- what a dialect supplies ------------------------------------------------------------
    async def _move(self, program: Callable[[Changes], Program[T]], *, claims: bool = False) -> T:
        """Run `program` as one write; once it commits, the driver publishes its Changes (and
        tells other nodes, where there are any). `claims`: the write takes jobs (its waiter
        is settled first)."""
        raise NotImplementedError

    async def _look(self, program: Program[T]) -> T:
        """Run a program that only reads, on a reading connection."""
        raise NotImplementedError

    def _json(self, stored: Any) -> Any:
        """A JSON column's value as read (PostgreSQL's driver decodes jsonb itself)."""
        raise NotImplementedError

    _on_transitions: list[OnTransitions]

    def _publish(self, changed: list[Changes], log_ids: list[int]) -> list[Transition]:
        """A batch committed: hand its writes' transitions, in order, with the event-log rows
        that hold them, to the subscribers."""
        transitions = [t for changes in changed for t in changes.transitions]
        if transitions:
            for on_transitions in self._on_transitions:
                on_transitions(transitions, log_ids)
        return transitions

    # -- claiming and queues ---------------------------------------------------------------------
    async def claim(
        self,
        limit: int,
        now: float,
        lease_ttl_s: float,
        *,
        only: Collection[str] | None = None,
        skip: Collection[str] = (),
    ) -> list[Job]:
        # An external worker's token goes over the network: 128 bits, not the 64 a lease
        # held inside this process needs.
        token = secrets.token_hex(8 if only is None else 16)
        start = next(self._turn)
        expires = now + lease_ttl_s
        return await self._move(
            lambda ch: lifecycle.claim(
                limit, now, token, expires, start, self.node, self.dialect, ch, only, skip
            ),
            claims=True,
        )

    async def next_wake_at(self, now: float) -> float | None:
        return await self._look(lifecycle.next_wake_at(now, self.dialect))

    async def list_queues(self, now: float) -> list[QueueInfo]:
        return await self._look(lifecycle.queue_infos(now, None))

    async def get_queue(self, name: str, now: float) -> QueueInfo | None:
        infos = await self._look(lifecycle.queue_infos(now, name))
        return infos[0] if infos else None

    async def configure_queue(self, name: str, changes: dict[str, Any], now: float) -> QueueInfo:
        """Set some of paused, concurrency_limit, rate_limit, rate_burst, max_depth."""
        return await self._move(lambda ch: lifecycle.configure_queue(name, changes, now, ch))

    async def configure_key(
        self, queue: str, key: str, changes: dict[str, Any], now: float
    ) -> KeyState:
        """Set some of a fairness key's own weight, concurrency_limit, rate_limit, rate_burst."""
        return await self._move(lambda ch: lifecycle.configure_key(queue, key, changes, now, ch))

    async def get_key(self, queue: str, key: str, now: float) -> KeyState:
        return await self._look(lifecycle.key_state(queue, key, now))

    # -- workflows and schedules ------------------------------------------------------------------
    async def create_workflow(self, jobs: Sequence[NewJob], now: float) -> tuple[int, list[Job]]:
        rows = [lifecycle.new_row(j, now) for j in jobs]
        return await self._move(lambda ch: lifecycle.create_workflow(rows, now, ch))

    async def fire_schedule(
        self, name: str, expected_tick: float, next_tick: float, jobs: Sequence[NewJob], now: float
    ) -> list[Job]:
        rows = [lifecycle.new_row(j, now) for j in jobs]
        return await self._move(
            lambda ch: lifecycle.fire_schedule(name, expected_tick, next_tick, rows, now, ch)
        )

    # -- a running job's end ------------------------------------------------------------------
    async def schedule_retry(
        self, job_id: int, token: str, error: dict[str, Any], run_at: float, now: float
    ) -> JobState | None:
        return await self._move(lambda ch: lifecycle.retry(job_id, token, error, run_at, now, ch))

    async def dead_letter(
        self, job_id: int, token: str, error: dict[str, Any], now: float
    ) -> JobState | None:
        return await self._move(lambda ch: lifecycle.dead_letter(job_id, token, error, now, ch))

    async def mark_cancelled(self, job_id: int, token: str, now: float) -> JobState | None:
        return await self._move(lambda ch: lifecycle.mark_cancelled(job_id, token, now, ch))

    async def release(self, job_id: int, token: str, now: float | None = None) -> JobState | None:
        return await self._move(lambda ch: lifecycle.release(job_id, token, now, ch))

    async def renew_leases(
        self, leases: Sequence[tuple[int, str]], now: float, lease_ttl_s: float
    ) -> LeaseReport:
        return await self._move(lambda ch: _renew(leases, now + lease_ttl_s))

    async def update_progress(
        self, job_id: int, token: str, fraction: float, message: str | None
    ) -> bool:
        return await self._move(
            lambda ch: _changed(count("update_progress", job_id, token, fraction, message))
        )

    # -- lost workers and missed deadlines ------------------------------------------------------
    async def rescue_expired(self, now: float) -> RescueReport:
        return await self._move(lambda ch: lifecycle.rescue_expired(now, ch))

    async def recover_orphans(
        self, now: float, external_queues: Collection[str] = ()
    ) -> RescueReport:
        if not self.exclusive:  # other nodes may be alive: only expired leases are orphans
            return await self.rescue_expired(now)
        keep = sorted(external_queues)
        return await self._move(lambda ch: lifecycle.recover_orphans(now, ch, keep))

    # -- the client's side ------------------------------------------------------------------------
    async def request_cancel(self, job_id: int, now: float) -> tuple[Job, JobState]:
        return await self._move(lambda ch: lifecycle.request_cancel(job_id, now, ch))

    async def requeue_dead_letter(self, dead_letter_id: int, now: float) -> Job:
        return await self._move(lambda ch: lifecycle.requeue_dead_letter(dead_letter_id, now, ch))

    async def delete_job(self, job_id: int) -> None:
        await self._move(lambda ch: lifecycle.delete_job(job_id))

    async def purge_queue(self, queue: str, limit: int, now: float) -> list[int]:
        return await self._move(lambda ch: lifecycle.purge_queue(queue, limit, now, ch))

    async def requeue_dead_letters(self, dead_letter_ids: Sequence[int], now: float) -> list[Job]:
        return await self._move(lambda ch: lifecycle.requeue_dead_letters(dead_letter_ids, now, ch))

    async def delete_dead_letter(self, dead_letter_id: int) -> bool:
        return await self._move(lambda ch: _changed(count("delete_dead_letter", dead_letter_id)))

    async def delete_dead_letters(self, dead_letter_ids: Sequence[int]) -> list[int]:
        return await self._move(lambda ch: lifecycle.delete_dead_letters(dead_letter_ids))

    async def check_writable(self) -> None:
        # A real write, committed: a transaction that changes nothing commits on a full disk
        # or a read-only standby too. One row, a new value each time, rewritten in place.
        await self._move(lambda ch: _changed(count("ready_probe")))

    # -- reads ------------------------------------------------------------------------------------
    async def get_job(self, job_id: int) -> Job | None:
        return await self._look(_one(job("job_by_id", job_id)))

    async def list_attempts(self, job_id: int) -> list[Attempt] | None:
        return await self._look(self._attempts(job_id))

    def _attempts(self, job_id: int) -> Program[list[Attempt] | None]:
        head = yield row("job_history_head", job_id)
        if head is None:
            return None
        kept = [
            Attempt(r[0], r[1], r[2], r[3], r[4], self._json(r[5]))
            for r in (yield rows("job_attempts", job_id))
        ]
        return with_current_attempt(kept, *head)

    async def count_dead_letters(self) -> int:
        found: int = await self._look(_one(value("count_dead_letters")))
        return found

    async def get_dead_letter(self, dead_letter_id: int) -> DeadLetter | None:
        found = await self._look(_one(row("dead_letter_by_id", dead_letter_id)))
        return None if found is None else self._dead_letter(found)

    async def list_dead_letters(
        self, limit: int, before_id: int | None = None, flt: DeadLetterFilter | None = None
    ) -> list[DeadLetter]:
        f = flt or DeadLetterFilter()
        page = rows(
            "dead_letters_page",
            MAX_ID + 1 if before_id is None else before_id,
            f.task,
            f.queue,
            f.failed_after,
            f.failed_before,
            limit,
        )
        return [self._dead_letter(r) for r in await self._look(_one(page))]

    def _dead_letter(self, r: Sequence[Any]) -> DeadLetter:
        args, kwargs, error = (self._json(v) for v in r[4:7])
        return DeadLetter(r[0], r[1], r[2], r[3], args, kwargs, error, r[7], r[8])

    # -- durable steps (durable.py) ----------------------------------------------------------------
    async def job_steps(self, job_id: int) -> list[Step]:
        found = await self._look(durable_lifecycle.job_steps(job_id))
        return [Step(r[0], r[1], r[2], r[3], self._json(r[4]), r[5], r[6], r[7]) for r in found]

    async def take_signal(
        self, job_id: int, token: str, key: str, step: Sequence[Any], now: float
    ) -> tuple[bool, Any]:
        taken, payload = await self._move(
            lambda ch: durable_lifecycle.take_signal(job_id, token, key, step, now)
        )
        return taken, self._json(payload) if taken else None

    async def start_child(
        self, job_id: int, token: str, step: Sequence[Any], child: NewJob, now: float
    ) -> int | None:
        r = lifecycle.new_row(child, now)
        return await self._move(
            lambda ch: durable_lifecycle.start_child(job_id, token, step, r, now, ch)
        )

    async def suspend(
        self, job_id: int, token: str, until: float, waiting_for: str | None, now: float
    ) -> JobState | None:
        return await self._move(
            lambda ch: durable_lifecycle.suspend(job_id, token, until, waiting_for, now, ch)
        )

    async def send_signal(self, key: str, payload: bytes, now: float) -> tuple[int, int]:
        return await self._move(lambda ch: durable_lifecycle.send_signal(key, payload, now, ch))

    async def prune_signals(self, taken_before: float, sent_before: float, limit: int) -> int:
        deleted: int = await self._move(
            lambda ch: _one(count("prune_signals", taken_before, sent_before, limit))
        )
        return deleted

    async def results_of(self, job_ids: Sequence[int]) -> dict[int, Any]:
        """The results of finished jobs, for dependants that receive them."""
        if not job_ids:
            return {}
        found = await self._look(_one(rows("results_of", list(job_ids))))
        return {r[0]: self._json(r[1]) for r in found}

    # -- the event log (jobserver/events.py) ---------------------------------------------------
    async def read_event_log(
        self, first_id: int, last_id: int, limit: int
    ) -> list[tuple[int, float, bytes]]:
        found = await self._look(_one(rows("event_log_rows", first_id, last_id, limit)))
        return [(r[0], r[1], r[2]) for r in found]

    async def event_log_span(self) -> tuple[int, int]:
        oldest, newest = await self._look(_one(row("event_log_span")))
        return oldest, newest

    async def job_names(self, job_ids: Sequence[int]) -> dict[int, tuple[str, str]]:
        found = await self._look(_one(rows("job_names", list(job_ids))))
        return {r[0]: (r[1], r[2]) for r in found}

    async def prune_keys(self, untouched_since: float, limit: int) -> int:
        deleted: int = await self._move(
            lambda ch: _one(count("prune_keys", untouched_since, limit))
        )
        return deleted

    async def prune_events(self, before: float, limit: int) -> int:
        deleted: int = await self._move(lambda ch: _one(count("prune_event_log", before, limit)))
        return deleted

    async def workflow_jobs(self, workflow_id: int) -> list[Job] | None:
        return await self._look(_workflow_jobs(workflow_id))

    # -- schedules --------------------------------------------------------------------------------
    async def save_schedule(self, schedule: Schedule, *, keep_next_tick: bool) -> Schedule:
        """Insert or replace a schedule; `keep_next_tick` keeps a stored one's next tick when
        its cron and zone are unchanged (a restart must not move or repeat a tick)."""
        saved = await self._move(lambda ch: _save_schedule(schedule, keep_next_tick))
        return self._schedule(saved)

    async def list_schedules(self) -> list[Schedule]:
        return [self._schedule(r) for r in await self._look(_one(rows("schedules_all")))]

    async def get_schedule(self, name: str) -> Schedule | None:
        found = await self._look(_one(row("schedule_by_name", name)))
        return None if found is None else self._schedule(found)

    async def delete_schedule(self, name: str) -> bool:
        return await self._move(lambda ch: _changed(count("delete_schedule", name)))

    async def due_schedules(self, now: float) -> list[Schedule]:
        return [self._schedule(r) for r in await self._look(_one(rows("schedules_due", now)))]

    async def next_schedule_at(self) -> float | None:
        found: float | None = await self._look(_one(value("next_schedule_at")))
        return found

    def _schedule(self, r: Sequence[Any]) -> Schedule:
        return Schedule(
            name=r[0],
            task=r[1],
            args=self._json(r[2]),
            kwargs=self._json(r[3]),
            queue=r[4],
            priority=r[5],
            cron=r[6],
            timezone=r[7],
            missed=r[8],
            paused=bool(r[9]),
            next_tick_at=r[10],
            last_tick_at=r[11],
            source=r[12],
        )


def _one(statement: lifecycle.Sql) -> Program[Any]:
    return (yield statement)


def _changed(statement: lifecycle.Sql) -> Program[bool]:
    return bool((yield statement))


def _renew(leases: Sequence[tuple[int, str]], expires: float) -> Program[LeaseReport]:
    report = LeaseReport()
    for job_id, token in leases:
        flag = yield value("renew_lease", expires, job_id, token)
        if flag is None:
            report.lost.append(job_id)
        elif flag:
            report.cancel_requested.append(job_id)
    return report


def _workflow_jobs(workflow_id: int) -> Program[list[Job] | None]:
    if (yield value("workflow_exists", workflow_id)) is None:
        return None
    found: list[Job] = yield lifecycle.jobs("workflow_jobs", workflow_id)
    return found


def _save_schedule(schedule: Schedule, keep_next_tick: bool) -> Program[Sequence[Any]]:
    next_tick, last_tick = schedule.next_tick_at, schedule.last_tick_at
    old = yield row("schedule_ticks", schedule.name)
    if (
        old is not None
        and keep_next_tick
        and (old[0], old[1]) == (schedule.cron, schedule.timezone)
    ):
        next_tick, last_tick = old[2], old[3]
    saved: Sequence[Any] = yield row(
        "save_schedule",
        schedule.name,
        schedule.task,
        codec.dumps(schedule.args),
        codec.dumps(schedule.kwargs),
        schedule.queue,
        schedule.priority,
        schedule.cron,
        schedule.timezone,
        schedule.missed,
        schedule.paused,
        next_tick,
        last_tick,
        schedule.source,
    )
    return saved
