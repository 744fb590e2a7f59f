"""The job lifecycle, written once for every store: how a job moves between states.

Each move is a *program*: a generator that yields the named SQL statements it needs (`Sql`)
and is sent each one's result. It does no I/O of its own. A store's driver runs it inside one
of its transactions: SQLite's synchronously on its writer thread, PostgreSQL's with an await
a statement. The SQL of each name lives in `store/shared.sql`, or in the dialect's
`store/<dialect>/queries.sql` where its SQL must differ (a comment there says why).

Each move records the Transitions it made (from what its statements returned) in its
Changes; the driver publishes them once the transaction holding the move has committed.

Parameters are positional (`$1`, `$2`...). A list parameter is a list of ids (PostgreSQL binds
an array, SQLite a JSON array read with json_each). JSON values are passed encoded (bytes).

Every move is guarded in SQL by the job's status (and, for a running job, its lease token):
a move that finds the row changed returns None and changes nothing.
"""

from __future__ import annotations

from collections.abc import Container, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from . import codec, fairness, flow
from .errors import Conflict, NotFound, QueueFull, StorageUnavailable, ValidationError
from .events import encode_log
from .models import (
    WEBHOOK_MAX_RETRIES,
    WEBHOOK_QUEUE,
    WEBHOOK_TASK,
    Backoff,
    Job,
    JobState,
    NewJob,
    QueueInfo,
    QueueSettings,
    Transition,
    error_info,
)
from .store.base import CONCURRENCY_RECHECK_S, Enqueued, RescueReport, payload_fingerprint

T = TypeVar("T")
PENDING, RUNNING = JobState.PENDING, JobState.RUNNING
FAILED, CANCELLED = JobState.FAILED, JobState.CANCELLED

# Rules both dialects apply, stated once.
LEASE_LOST = "worker stopped renewing its lease (its process crashed or stalled)"
EXPIRED = "expired: its deadline passed before it could start"


@dataclass(frozen=True, slots=True)
class Sql:
    """One statement a program asks its driver to run, and what it wants back."""

    name: str
    params: tuple[Any, ...]
    # count | rows | row | value | job | jobs | many, and two whose statement the driver
    # shapes for its dialect: claimed (a claim's jobs) and insert_plain (ids, in order)
    mode: str


Program = Generator[Sql, Any, T]


def count(name: str, *params: Any) -> Sql:
    """The number of rows the statement changed."""
    return Sql(name, params, "count")


def rows(name: str, *params: Any) -> Sql:
    """Every row, as a sequence of values."""
    return Sql(name, params, "rows")


def row(name: str, *params: Any) -> Sql:
    """The first row, or None."""
    return Sql(name, params, "row")


def value(name: str, *params: Any) -> Sql:
    """The first column of the first row, or None."""
    return Sql(name, params, "value")


def job(name: str, *params: Any) -> Sql:
    """The first row as a Job (the statement selects the driver's job columns), or None."""
    return Sql(name, params, "job")


def jobs(name: str, *params: Any) -> Sql:
    return Sql(name, params, "jobs")


def many(name: str, param_rows: Sequence[tuple[Any, ...]]) -> Sql:
    """The statement once for each row of parameters."""
    return Sql(name, tuple(param_rows), "many")


@dataclass(slots=True)
class Changes:
    """What a write did, for the driver to tell once the transaction has committed: the
    moves it made (published by this process), and what other dispatchers should know
    (SQLite: callbacks; PostgreSQL: NOTIFY to every node)."""

    transitions: list[Transition] = field(default_factory=list)  # every move, in order
    due: bool = False  # jobs that may start now: unblocked dependants, webhook deliveries
    # jobs this write made pending (inserted, retried, released, rescued): the process that
    # wrote them wakes its own dispatcher; other nodes hear of them from the driver
    new_pending: bool = False


# -- a running job's end --------------------------------------------------------------------


def retry(
    job_id: int, token: str, error: dict[str, Any], run_at: float, now: float, ch: Changes
) -> Program[JobState | None]:
    """running -> pending, due at `run_at`; -> cancelled if a client asked to cancel it (an
    attempt that failed after its cancel was asked is not retried)."""
    error_json = codec.dumps(error)
    kind = error.get("type")
    ended = yield row("cancel_leased_if_requested", job_id, token, now, error_json)
    if ended is not None:
        _moved(ch, job_id, ended, RUNNING, CANCELLED, "cancel_requested", now, kind)
        yield from _attempt_ended([job_id], "cancelled", error_json, now, ch)
        return JobState.CANCELLED
    retried = yield row("retry_leased", job_id, token, run_at, error_json)
    if retried is None:
        return None
    _moved(ch, job_id, retried, RUNNING, PENDING, "retry", now, kind)
    yield from record_attempts([job_id], "failed", error_json, now)
    ch.new_pending = True
    return JobState.PENDING


def dead_letter(
    job_id: int, token: str, error: dict[str, Any], now: float, ch: Changes
) -> Program[JobState | None]:
    """running -> failed, with a dead-letter row."""
    error_json = codec.dumps(error)
    failed = yield row("fail_leased", job_id, token, error_json, now)
    if failed is None:
        return None
    _moved(ch, job_id, failed, RUNNING, FAILED, "failed", now, error.get("type"))
    yield from _attempt_ended([job_id], "failed", error_json, now, ch)
    return JobState.FAILED


def mark_cancelled(job_id: int, token: str, now: float, ch: Changes) -> Program[JobState | None]:
    """running -> cancelled, after the task saw its cancellation."""
    ended = yield row("cancel_leased", job_id, token, now)
    if ended is None:
        return None
    _moved(ch, job_id, ended, RUNNING, CANCELLED, "cancelled", now)
    yield from _attempt_ended([job_id], "cancelled", None, now, ch)
    return JobState.CANCELLED


def release(job_id: int, token: str, now: float | None, ch: Changes) -> Program[JobState | None]:
    """running -> pending at shutdown, the attempt given back; -> cancelled if a client asked
    (ended at `now`, or when it started if no time is given)."""
    ended = yield row("release_leased_if_cancel_requested", job_id, token, now)
    if ended is not None:
        ended_at = ended[4]
        _moved(ch, job_id, ended, RUNNING, CANCELLED, "cancel_requested", ended_at)
        yield from _attempt_ended([job_id], "cancelled", None, ended_at, ch)
        return JobState.CANCELLED
    released = yield row("release_leased", job_id, token)
    if released is None:
        return None
    at = now if now is not None else released[3]
    _moved(ch, job_id, released, RUNNING, PENDING, "released", at)
    ch.new_pending = True
    return JobState.PENDING


def _moved(
    ch: Changes,
    job_id: int,
    r: Sequence[Any],
    before: JobState,
    after: JobState,
    reason: str,
    at: float,
    error_type: str | None = None,
) -> None:
    """Note a move whose statement returned (task, queue, attempts[, started_at])."""
    started_at = r[3] if len(r) > 3 else None
    ch.transitions.append(
        Transition(job_id, r[0], r[1], before, after, reason, r[2], at, started_at, error_type)
    )


def _attempt_ended(
    job_ids: list[int], outcome: str, error_json: bytes | None, now: float, ch: Changes
) -> Program[None]:
    """Jobs whose attempt ended them without success: keep the attempt, end their dependants."""
    yield from record_attempts(job_ids, outcome, error_json, now)
    yield from after_failure(job_ids, now, ch)


def record_attempts(
    job_ids: Sequence[int], outcome: str, error_json: bytes | None, now: float
) -> Program[None]:
    """Keep each job's current attempt (number, start and node from its row) in its history,
    ended now with `outcome`. Run in the transaction that ends the attempt."""
    if job_ids:
        yield count("record_attempts", list(job_ids), now, outcome, error_json)


# -- lost workers and missed deadlines -------------------------------------------------------


def rescue_expired(now: float, ch: Changes) -> Program[RescueReport]:
    """Jobs whose lease ran out go back to pending (or fail if no attempts are left, or end
    cancelled if a client asked); pending jobs past their deadline fail as `expired`."""
    report = yield from _rescue(now, now, ch, ())
    error = codec.dumps(error_info(None, type_="expired", message=EXPIRED))
    expired = yield rows("expire_overdue", now, error)
    for r in expired:
        _moved(ch, r[0], r[1:], PENDING, FAILED, "expired", now)
    report.expired = sorted(r[0] for r in expired)
    yield from after_failure(report.dead_lettered + report.expired + report.cancelled, now, ch)
    return report


def recover_orphans(
    now: float, ch: Changes, external_queues: Sequence[str] = ()
) -> Program[RescueReport]:
    """At start, for a store one process owns: every running job was left by a process that
    died, so all of them are taken back now, not after their lease runs out. Not those of
    external tasks' queues: their workers (leasing.py) outlive the server, and still hold
    them; their leases run out as usual if not."""
    report = yield from _rescue(float("inf"), now, ch, external_queues)
    yield from after_failure(report.dead_lettered + report.cancelled, now, ch)
    return report


def _rescue(
    lease_ends_by: float, now: float, ch: Changes, left: Sequence[str]
) -> Program[RescueReport]:
    """Running jobs whose lease ends by `lease_ends_by` lost their worker (but those of the
    queues `left`)."""
    error = codec.dumps(error_info(None, type_="LeaseExpired", message=LEASE_LOST))
    left = list(left)
    cancelled = yield rows("rescue_cancel_requested", lease_ends_by, now, left)
    for r in cancelled:
        _moved(ch, r[0], r[1:], RUNNING, CANCELLED, "lease_expired", now)
    requeued: list[Job] = yield jobs("rescue_requeue", lease_ends_by, now, error, left)
    for j in requeued:
        ch.transitions.append(
            Transition(
                j.id,
                j.task,
                j.queue,
                RUNNING,
                PENDING,
                "lease_expired",
                j.attempts,
                now,
                j.started_at,
                job=j,
            )
        )
    spent = yield rows("rescue_spent", lease_ends_by, now, error, left)
    for r in spent:
        _moved(ch, r[0], r[1:], RUNNING, FAILED, "lease_expired", now)
    lost = [r[0] for r in cancelled] + [j.id for j in requeued] + [r[0] for r in spent]
    yield from record_attempts(lost, "lease_expired", error, now)
    if requeued:
        ch.new_pending = True
    return RescueReport(
        requeued_jobs=sorted(requeued, key=lambda j: j.id),
        dead_lettered=sorted(r[0] for r in spent),
        cancelled=sorted(r[0] for r in cancelled),
    )


# -- dependencies and webhooks ------------------------------------------------------------------


def after_success(job_id: int, now: float, ch: Changes) -> Program[None]:
    """A job succeeded: its dependants wait for one fewer; those waiting for none are due;
    a parent waiting for it (ctx.run_child) is due."""
    left = yield rows("unblock_dependants", job_id)
    if any(r[0] == 0 for r in left):
        ch.due = True
    yield from wake_parent(job_id, now, ch)


def after_failure(job_ids: Sequence[int], now: float, ch: Changes) -> Program[None]:
    """Jobs ended without success: every pending job that depends on them, directly or not,
    ends too (failed as `dependency_failed`, or cancelled, as each asked). Every job that
    ended, the given ones too, gets its webhook queued."""
    yield from queue_webhooks(job_ids, now, ch)
    frontier = list(job_ids)
    while frontier:
        root = frontier.pop()
        ended = yield row("job_end", root)
        root_status = None if ended is None else ended[0]
        if ended is not None and ended[1]:  # only a child (marked so) has a parent to wake:
            yield from wake_parent(root, now, ch)  # a lock per failed job would not scale
        for (dependant,) in (yield rows("pending_dependants", root)):
            yield from _end_dependant(dependant, root, root_status or "gone", now, ch)
            frontier.append(dependant)


def _end_dependant(
    job_id: int, root: int, root_status: str, now: float, ch: Changes
) -> Program[None]:
    policy = yield value("dependency_policy", job_id)
    if policy == "cancel":
        ended = yield row("cancel_pending", job_id, now)
        after = CANCELLED
    else:
        error = error_info(
            None,
            type_="dependency_failed",
            message=f"job {root}, which this job depends on, ended {root_status}",
        )
        ended = yield row("fail_pending", job_id, now, codec.dumps(error))
        after = FAILED
    if ended is not None:
        _moved(ch, job_id, ended, PENDING, after, "dependency_failed", now)
    yield from queue_webhooks([job_id], now, ch)


def child_key(job_id: int) -> str:
    """What a job waiting for its child (ctx.run_child) waits for, as a wait for a signal
    names its key: the child's end wakes it."""
    return f"{CHILD_KEY}{job_id}"


CHILD_KEY = "jobserver.child:"


def wake_parent(job_id: int, now: float, ch: Changes) -> Program[None]:
    """A job ended: the job suspended waiting for it as its child, if any, is due now. The
    key's lock orders this against the parent's suspension (durable_lifecycle.suspend), which
    looks at the child's status under it: neither misses the other."""
    key = child_key(job_id)
    yield row("lock_signal_key", key)
    if (yield rows("wake_waiting", key, now)):
        ch.due = True


def queue_webhooks(job_ids: Sequence[int], now: float, ch: Changes) -> Program[None]:
    """Jobs that ended and have a callback_url: their delivery jobs, in this same transaction."""
    if not job_ids:
        return
    queued = yield rows(
        "queue_webhooks", list(job_ids), now, WEBHOOK_TASK, WEBHOOK_QUEUE, WEBHOOK_MAX_RETRIES
    )
    for r in queued:
        ch.transitions.append(Transition(r[0], r[1], r[2], None, PENDING, "enqueued", 0, now))
    if queued:
        yield count("register_queue", WEBHOOK_QUEUE)
        ch.due = True


def link_dependencies(job_id: int, deps: list[int], now: float, ch: Changes) -> Program[None]:
    """Make `job_id` wait for `deps`; if one of them already failed, it ends at once."""
    found = {r[0]: r[1] for r in (yield rows("statuses_of", deps))}
    missing = [d for d in deps if d not in found]
    if missing:
        raise ValidationError("depends_on", f"no job {missing[0]}")
    yield many("insert_dependency", [(job_id, d) for d in deps])
    yield count("mark_has_dependants", deps)
    waiting = sum(1 for d in deps if found[d] != "succeeded")
    yield count("set_dependencies", job_id, codec.dumps(deps), waiting)
    failed = [d for d in deps if found[d] in ("failed", "cancelled")]
    if failed:
        yield from _end_dependant(job_id, failed[0], found[failed[0]], now, ch)


def log_events(transitions: Sequence[Transition]) -> Program[list[int]]:
    """A commit's transitions as rows of the event log (events.encode_log); the drivers run
    it last before COMMIT, over the transitions of every write that went in."""
    ids = []
    for at, entries in encode_log(transitions):
        ids.append((yield value("event_log_append", at, entries)))
    return ids


def forget_jobs(job_ids: Sequence[int]) -> Program[None]:
    """What goes with deleted jobs: their dependency links and their history."""
    if job_ids:
        yield count("forget_dependencies", list(job_ids))
        yield count("forget_attempts", list(job_ids))
        yield count("forget_steps", list(job_ids))


# -- the client's side ----------------------------------------------------------------------------


def request_cancel(job_id: int, now: float, ch: Changes) -> Program[tuple[Job, JobState]]:
    """pending -> cancelled at once; running -> flagged for its worker. Returns the job after
    and its state before; cancelling a cancelled job changes nothing."""
    before: Job | None = yield job("job_for_update", job_id)
    if before is None:
        raise NotFound(f"no job {job_id}")
    if before.status == JobState.PENDING:
        ended = yield row("cancel_pending", job_id, now)  # (the row is locked: it is pending)
        if ended is not None:
            _moved(ch, job_id, ended, PENDING, CANCELLED, "cancelled", now)
        yield from after_failure([job_id], now, ch)
    elif before.status == JobState.RUNNING:
        yield count("flag_cancel", job_id)
    elif before.status == JobState.CANCELLED:
        return before, before.status
    else:
        raise Conflict(f"job {job_id} is already {before.status}")
    after: Job = yield job("job_by_id", job_id)
    return after, before.status


def purge_queue(queue: str, limit: int, now: float, ch: Changes) -> Program[list[int]]:
    """Cancel up to `limit` of the queue's pending jobs, oldest first, each as request_cancel
    does (its dependants fail or are cancelled by their own policy); the ids cancelled. A job
    that an earlier one's cascade already ended is passed over."""
    pending = yield rows("pending_in_queue", queue, limit)
    cancelled: list[int] = []
    for (job_id,) in pending:
        try:
            after, before = yield from request_cancel(job_id, now, ch)
        except Conflict:  # failed by an earlier one's cascade
            continue
        if before == JobState.PENDING and after.status == JobState.CANCELLED:
            cancelled.append(job_id)
    return cancelled


def requeue_dead_letter(dead_letter_id: int, now: float, ch: Changes) -> Program[Job]:
    """A new pending job from a dead letter, which is removed; it starts with fresh attempts
    and what the original job asked for (its priority, retries, timeout and backoff)."""
    new = yield from _requeue_letter(dead_letter_id, now, ch)
    if new is None:
        raise NotFound(f"no dead letter {dead_letter_id}")
    return new


def requeue_dead_letters(ids: Sequence[int], now: float, ch: Changes) -> Program[list[Job]]:
    """requeue_dead_letter for each of `ids`; one that is gone (requeued or deleted by another
    request meanwhile) is skipped."""
    jobs: list[Job] = []
    for dead_letter_id in ids:
        new = yield from _requeue_letter(dead_letter_id, now, ch)
        if new is not None:
            jobs.append(new)
    return jobs


def _requeue_letter(dead_letter_id: int, now: float, ch: Changes) -> Program[Job | None]:
    letter = yield row("take_dead_letter", dead_letter_id)
    if letter is None:
        return None
    job_id, task, queue, args, kwargs = letter
    original = yield row("job_options", job_id)
    priority, max_retries, timeout_s, backoff, key = original or (0, 3, None, None, None)
    new: Job = yield job(
        "insert_requeued",
        *(task, queue, args, kwargs, priority, max_retries, timeout_s, backoff, now, key),
    )
    ch.transitions.append(
        Transition(new.id, new.task, new.queue, None, PENDING, "requeued", 0, now, job=new)
    )
    ch.new_pending = True
    return new


def delete_dead_letters(ids: Sequence[int]) -> Program[list[int]]:
    """Delete these dead letters; the ids of those that were there."""
    deleted = []
    for dead_letter_id in ids:
        if (yield count("delete_dead_letter", dead_letter_id)):
            deleted.append(dead_letter_id)
    return deleted


def delete_job(job_id: int) -> Program[None]:
    """Delete a finished job; NotFound, or Conflict for one still pending or running."""
    status = yield value("job_status_for_update", job_id)
    if status is None:
        raise NotFound(f"no job {job_id}")
    if status not in ("succeeded", "failed", "cancelled"):
        raise Conflict(f"job {job_id} is {status}: only finished jobs can be deleted")
    yield count("delete_job", job_id)
    yield from forget_jobs([job_id])


# -- claiming ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Dialect:
    """Where the stores must take different roads to the same rule, and why."""

    # SQLite's planner reads a queue's due jobs in (priority, run_at) order from the jobs_claim
    # index only one priority level at a time: a single ORDER BY over every level walks each
    # pending job of the queue when few are due (measured: 70 ms with 1M delayed jobs, against
    # 0.1 ms a level at a time). PostgreSQL's does it in one statement, one round trip.
    walk_priority_levels: bool
    # Several PostgreSQL nodes claim at once: a queue with a limit is locked while a claim
    # counts against it, so the limit holds across nodes. SQLite has one writer.
    lock_limited_queues: bool


QUEUE_COLUMNS = (
    "name", "paused", "concurrency_limit", "rate_limit", "rate_burst", "max_depth", "tokens",
    "tokens_at", "key_concurrency_limit", "key_rate_limit", "key_rate_burst", "keyed",
)  # fmt: skip
QUEUE_SETTINGS = (
    "paused", "concurrency_limit", "rate_limit", "rate_burst", "max_depth",
    "key_concurrency_limit", "key_rate_limit", "key_rate_burst",
)  # fmt: skip
# one statement a setting: configure_queue runs those it is given
SET_QUEUE = {
    "paused": "set_queue_paused",
    "concurrency_limit": "set_queue_concurrency_limit",
    "rate_limit": "set_queue_rate_limit",
    "rate_burst": "set_queue_rate_burst",
    "max_depth": "set_queue_max_depth",
    "key_concurrency_limit": "set_queue_key_concurrency_limit",
    "key_rate_limit": "set_queue_key_rate_limit",
    "key_rate_burst": "set_queue_key_rate_burst",
}
# settings, tokens, tokens_at, and whether the queue has had keyed jobs
QueueState = tuple[QueueSettings, float | None, float | None, bool]


def _queue_state(r: Sequence[Any]) -> QueueState:
    fields = dict(zip(QUEUE_COLUMNS, r, strict=True))
    settings = flow.settings_from_row(fields)
    return settings, fields["tokens"], fields["tokens_at"], bool(fields["keyed"])


def queue_states(lock_limited: bool = False) -> Program[dict[str, QueueState]]:
    """Every queue's settings and bucket; `lock_limited` locks (and re-reads) those with a limit
    (a keyed queue included: its keys' limits hold across nodes, and its virtual time moves
    at each claim)."""
    queues = {r[0]: _queue_state(r) for r in (yield rows("queue_rows"))}
    limited = sorted(
        name
        for name, (settings, _, _, keyed) in queues.items()
        if settings.concurrency_limit is not None or settings.rate_limit is not None or keyed
    )
    if lock_limited and limited:
        for r in (yield rows("lock_queue_rows", limited)):
            queues[r[0]] = _queue_state(r)
    return queues


def _running_by_queue() -> Program[dict[str, int]]:
    return {r[0]: r[1] for r in (yield rows("running_by_queue"))}


def due_ids(queue: str, now: float, limit: int, d: Dialect) -> Program[list[int]]:
    """Up to `limit` of a queue's due jobs, by priority then run_at (PostgreSQL: locked, and
    skipping those another node holds)."""
    if not d.walk_priority_levels:
        return [r[0] for r in (yield rows("due_ids", queue, now, limit))]
    ids: list[int] = []
    level = yield value("top_priority", queue)
    while level is not None:
        found = yield rows("due_ids_at_priority", queue, level, now, limit - len(ids))
        ids += [r[0] for r in found]
        if len(ids) >= limit:
            break
        level = yield value("top_priority_below", queue, level)
    return ids


def claim(
    limit: int,
    now: float,
    token: str,
    expires: float,
    start: int,
    node: str,
    d: Dialect,
    ch: Changes,
    only: Container[str] | None = None,
    skip: Container[str] = (),
) -> Program[list[Job]]:
    """Take due jobs: each queue's within its budget (pause, concurrency, rate), shared fairly
    between queues (the turn starts at queue `start`), counting an attempt on each. `only`:
    of these queues alone (an external worker's lease); `skip`: not of these (the server's
    own workers leave the queues of external tasks alone)."""
    queues = yield from queue_states(lock_limited=d.lock_limited_queues)
    if only is not None or skip:
        queues = {
            name: state
            for name, state in queues.items()
            if (only is None or name in only) and name not in skip
        }
    limited = any(settings.concurrency_limit for settings, _, _, _ in queues.values())
    running = (yield from _running_by_queue()) if limited else {}
    candidates: list[tuple[str, list[int]]] = []
    tokens: dict[str, float] = {}
    keyed: dict[str, KeyedPick] = {}
    for name in sorted(queues):
        settings, bucket, bucket_at, has_keys = queues[name]
        if has_keys and not settings.paused:
            yield from stage_due(name, now)  # even when full: next_wake_at counts on it
        if settings.rate_limit is not None:
            tokens[name] = flow.refill(settings, bucket, bucket_at, now)
        allowed = flow.budget(limit, settings, running.get(name, 0), tokens.get(name))
        if allowed <= 0:
            continue
        ids = yield from due_ids(name, now, allowed, d)
        if has_keys:
            keyed[name] = yield from keyed_due(name, settings, now, allowed)
            ids = flow.interleave(ids, [c[0] for c in keyed[name].chosen])[:allowed]
        if ids:
            candidates.append((name, ids))
    chosen = flow.fair_share(candidates, limit, start % max(1, len(candidates)))
    if not chosen:
        return []
    claimed: list[Job] = yield Sql("claim_jobs", (now, token, expires, chosen, node), "claimed")
    ch.transitions.extend(
        Transition(j.id, j.task, j.queue, PENDING, RUNNING, "claimed", j.attempts, now, job=j)
        for j in claimed
    )
    for name, left in tokens.items():
        taken = sum(1 for j in claimed if j.queue == name)
        yield count("set_tokens", left - taken, now, name)
    for name, pick in keyed.items():
        yield from pick.settle([j for j in claimed if j.queue == name], now)
    order = {job_id: i for i, job_id in enumerate(chosen)}
    claimed.sort(key=lambda j: order[j.id])
    return claimed


def next_wake_at(now: float, d: Dialect) -> Program[float | None]:
    """When a claim may next find work: the next run_at, a rate-limited queue's next token, a
    recheck of a queue held by its concurrency limit; None: only an enqueue."""
    queues = yield from queue_states()
    candidates: list[float] = []
    if d.walk_priority_levels:
        for name in queues:
            level = yield value("top_priority", name)
            while level is not None:
                due = yield value("next_due_at_priority", name, level, now)
                if due is not None:
                    candidates.append(due)
                level = yield value("top_priority_below", name, level)
    else:
        wake = yield value("next_run_at", now)
        if wake is not None:
            candidates.append(wake)
    running = (yield from _running_by_queue()) if queues else {}
    for name, (settings, bucket, bucket_at, has_keys) in queues.items():
        if has_keys and not settings.paused:
            candidates.extend((yield from keyed_wake_at(name, settings, now)))
        if settings.paused or (settings.rate_limit is None and settings.concurrency_limit is None):
            continue
        if d.walk_priority_levels:  # (no row locks there: due_ids takes none on SQLite)
            has_due = bool((yield from due_ids(name, now, 1, d)))
        else:  # due_ids would lock rows: a read must not hold up other nodes' claims
            has_due = bool((yield value("has_due", name, now)))
        if not has_due:  # claimable, that is: a job past its deadline is not
            continue
        if (
            settings.concurrency_limit is not None
            and running.get(name, 0) >= settings.concurrency_limit
        ):
            candidates.append(now + CONCURRENCY_RECHECK_S)
        elif settings.rate_limit is not None:
            tokens = flow.refill(settings, bucket, bucket_at, now)
            candidates.append(now + max(0.0, 1 - tokens) / settings.rate_limit)
    return min(candidates) if candidates else None


# -- queues ------------------------------------------------------------------------------------


def queue_infos(now: float, only: str | None) -> Program[list[QueueInfo]]:
    queues = yield from queue_states()
    if only is not None:
        queues = {k: v for k, v in queues.items() if k == only}
    counts: dict[str, dict[str, int]] = {name: {s.value: 0 for s in JobState} for name in queues}
    for queue, status, n in (yield rows("job_counts_by_queue")):
        if queue in counts:
            counts[queue][status] = n
    infos = []
    for name in sorted(queues):
        settings, bucket, bucket_at, has_keys = queues[name]
        oldest = yield value("oldest_due", name, now)
        tokens = (
            flow.refill(settings, bucket, bucket_at, now)
            if settings.rate_limit is not None
            else None
        )
        infos.append(
            QueueInfo(
                name=name,
                settings=settings,
                counts=counts[name],
                oldest_due_age_s=None if oldest is None else now - oldest,
                rate_tokens=tokens,
                busiest_keys=(yield from busiest_keys(name)) if has_keys else [],
            )
        )
    return infos


def configure_queue(
    name: str, changes: dict[str, Any], now: float, ch: Changes
) -> Program[QueueInfo]:
    """Set some of a queue's settings (registering it if new)."""
    unknown = set(changes) - set(QUEUE_SETTINGS)
    if unknown:
        raise ValueError(f"not queue settings: {sorted(unknown)}")
    yield count("register_queue", name)
    for setting, new in changes.items():
        yield count(SET_QUEUE[setting], name, new)
    ch.due = True  # a resumed or widened queue may have work now
    infos = yield from queue_infos(now, name)
    return infos[0]


# -- enqueueing ------------------------------------------------------------------------------


@dataclass(slots=True)
class NewRow:
    """A job to insert: its column values in INSERT_ORDER (JSON encoded), and the
    dependencies linked after it (ids, and indexes of earlier jobs of the same batch)."""

    values: tuple[Any, ...]
    depends_on: list[int]
    depends_on_index: list[int]

    @property
    def queue(self) -> str:
        queue: str = self.values[1]
        return queue

    @property
    def plain(self) -> bool:
        """A job that needs no lookup before its insert: no keys, no dependencies."""
        values = self.values
        return (
            values[10] is None  # idempotency key
            and values[14] is None  # unique key
            and not self.depends_on
            and not self.depends_on_index
        )


# The columns an insert writes, in NewRow.values' order ("insert_job" binds them as $1..$22).
INSERT_ORDER = (
    "task", "queue", "args", "kwargs", "priority", "max_retries", "timeout_s", "backoff",
    "created_at", "run_at", "idempotency_key", "idempotency_expires_at", "payload_hash",
    "deadline", "unique_key", "pass_result", "on_dependency_failure", "callback_url",
    "workflow_id", "traceparent", "fairness_key", "fair_tag",
)  # fmt: skip
JSON_COLUMNS = frozenset({"args", "kwargs", "backoff"})
WORKFLOW_ID_INDEX = INSERT_ORDER.index("workflow_id")
# A plain job's columns ("insert_plain"): the rest keep their defaults.
PLAIN_COLUMNS = (
    "task", "queue", "args", "kwargs", "priority", "max_retries", "timeout_s", "backoff",
    "created_at", "run_at", "deadline", "pass_result", "on_dependency_failure", "callback_url",
    "workflow_id", "traceparent", "fairness_key", "fair_tag",
)  # fmt: skip
PLAIN_INDEXES = tuple(INSERT_ORDER.index(column) for column in PLAIN_COLUMNS)


def _json_column(name: str, value: Any) -> bytes:
    encoded = codec.dumps(value)
    # PostgreSQL's jsonb cannot hold a NUL: refused on both stores, as a 422, not a 503
    if codec.holds_nul(encoded):
        raise ValidationError(name, "must not contain the NUL character (\\u0000)")
    return encoded


def new_row(job: NewJob, now: float) -> NewRow:
    backoff = job.backoff
    key = job.idempotency_key
    values = (
        job.task,
        job.queue,
        _json_column("args", job.args),
        _json_column("kwargs", job.kwargs),
        job.priority,
        job.max_retries,
        job.timeout_s,
        None
        if backoff is None
        else codec.dumps(
            {"base_s": backoff.base_s, "factor": backoff.factor, "cap_s": backoff.cap_s}
        ),
        now,
        job.run_at if job.run_at is not None else now,
        key,
        now + job.idempotency_window_s if key is not None else None,
        payload_fingerprint(job) if key is not None else None,
        job.deadline,
        job.unique_key,
        job.pass_result,
        job.on_dependency_failure,
        job.callback_url,
        job.workflow_id,
        job.traceparent,
        job.fairness_key,
        None,  # fair_tag: given by tag_due_rows when the job is due
    )
    return NewRow(values, list(job.depends_on), list(job.depends_on_index))


def inserted_job(row: NewRow, job_id: int) -> Job:
    """The job just inserted from `row`, as a read would return it (no read needed)."""
    v = row.values
    backoff = codec.loads(v[7]) if v[7] is not None else None
    return Job(
        id=job_id,
        task=v[0],
        queue=v[1],
        args=codec.loads(v[2]),
        kwargs=codec.loads(v[3]),
        priority=v[4],
        status=JobState.PENDING,
        attempts=0,
        max_retries=v[5],
        timeout_s=v[6],
        backoff=Backoff(**backoff) if backoff is not None else None,
        created_at=v[8],
        run_at=v[9],
        idempotency_key=v[10],
        deadline=v[13],
        unique_key=v[14],
        pass_result=bool(v[15]),
        on_dependency_failure=v[16],
        callback_url=v[17],
        workflow_id=v[18],
        traceparent=v[19],
        fairness_key=v[20],
    )


def admit(rows: Sequence[NewRow], known_unlimited: Container[str] = ()) -> Program[list[str]]:
    """Register the jobs' queues, and refuse the whole batch if one would pass its max depth
    (PostgreSQL locks the queue's row while it counts: nodes cannot overshoot together).
    Queues in `known_unlimited` are known to exist with no max depth; returns those found so."""
    adding: dict[str, int] = {}
    for r in rows:
        if r.queue not in known_unlimited:
            adding[r.queue] = adding.get(r.queue, 0) + 1
    if not adding:
        return []
    yield many("register_queue", [(queue,) for queue in adding])
    found_unlimited = []
    for queue, n in adding.items():
        max_depth = yield value("queue_max_depth", queue)
        if max_depth is None:
            found_unlimited.append(queue)
            continue
        depth = yield value("pending_depth", queue)
        if depth + n > max_depth:
            raise QueueFull(queue, max_depth)
    return found_unlimited


def insert_plain(rows: Sequence[NewRow], ch: Changes) -> Program[list[Enqueued]]:
    """Plain jobs, all or none, in as few statements as the dialect can (the driver shapes
    them: a multi-row VALUES on SQLite, arrays on PostgreSQL); the ids come back in order."""
    yield from tag_due_rows(rows)
    ids: list[int] = yield Sql("insert_plain", tuple(rows), "insert_plain")
    ch.transitions.extend(
        Transition(job_id, r.values[0], r.values[1], None, PENDING, "enqueued", 0, r.values[8])
        for r, job_id in zip(rows, ids, strict=True)
    )
    return [
        Enqueued(inserted_job(r, job_id), created=True) for r, job_id in zip(rows, ids, strict=True)
    ]


def insert_one(r: NewRow, now: float, ch: Changes) -> Program[Enqueued]:
    """One job, or the job its idempotency key or unique key already names."""
    key, fingerprint, unique = r.values[10], r.values[12], r.values[14]
    for _ in range(2):
        if key is not None:
            holder = yield row("idempotency_holder", key)  # id, payload_hash, key expires
            if holder is not None:
                if holder[2] is not None and holder[2] <= now:  # past its window: free again
                    yield count("free_idempotency_key", holder[0])
                elif holder[1] != fingerprint:
                    raise Conflict(
                        f"idempotency key {key!r} was used for job {holder[0]} with a different"
                        " payload"
                    )
                else:
                    return Enqueued((yield job("job_by_id", holder[0])), created=False)
        if unique is not None:
            live = yield job("live_job_by_unique_key", unique)
            if live is not None:
                return Enqueued(live, created=False)
        job_id = yield value("insert_job", *r.values)
        if job_id is not None:
            ch.transitions.append(
                Transition(job_id, r.values[0], r.values[1], None, PENDING, "enqueued", 0, now)
            )
            return Enqueued(inserted_job(r, job_id), created=True)
        # PostgreSQL: another node inserted the same key after our look-up; the insert waited
        # for that transaction and found its row. Look again: that job is the answer.
    raise StorageUnavailable("the key of this job is being written by another node")


def insert_all(rows: Sequence[NewRow], now: float, ch: Changes) -> Program[list[Enqueued]]:
    """Insert a batch; `depends_on_index` names earlier jobs of the same batch."""
    if all(r.plain for r in rows):
        found = yield from insert_plain(rows, ch)  # nothing to look up first
        ch.new_pending = bool(found)
        return found
    yield from tag_due_rows(rows)
    results: list[Enqueued] = []
    for r in rows:
        enqueued = yield from insert_one(r, now, ch)
        batch_deps = [results[i].job.id for i in r.depends_on_index]
        deps = list(dict.fromkeys([*r.depends_on, *batch_deps]))
        if enqueued.created and deps:
            yield from link_dependencies(enqueued.job.id, deps, now, ch)
            enqueued = Enqueued((yield job("job_by_id", enqueued.job.id)), created=True)
        results.append(enqueued)
    ch.new_pending = True
    return results


def enqueue(
    rows: Sequence[NewRow], now: float, known_unlimited: Container[str], ch: Changes
) -> Program[tuple[list[Enqueued], list[str]]]:
    """Admit and insert a batch, in one transaction; also the queues found to have no limit."""
    unlimited = yield from admit(rows, known_unlimited)
    enqueued = yield from insert_all(rows, now, ch)
    return enqueued, unlimited


def create_workflow(
    rows: Sequence[NewRow], now: float, ch: Changes
) -> Program[tuple[int, list[Job]]]:
    """A workflow's jobs (their `depends_on_index` point at each other), in one transaction."""
    workflow_id = yield value("insert_workflow", now)
    for r in rows:
        at = WORKFLOW_ID_INDEX
        r.values = (*r.values[:at], workflow_id, *r.values[at + 1 :])
    yield from admit(rows)
    enqueued = yield from insert_all(rows, now, ch)
    return workflow_id, [e.job for e in enqueued]


def fire_schedule(
    name: str,
    expected_tick: float,
    next_tick: float,
    rows: Sequence[NewRow],
    now: float,
    ch: Changes,
) -> Program[list[Job]]:
    """Move a schedule on from `expected_tick` and enqueue its jobs; nothing if another
    process already did (each tick is claimed once, in the database)."""
    if not (yield count("move_schedule", next_tick, expected_tick, name)):
        return []
    yield from admit(rows)
    enqueued = yield from insert_all(rows, now, ch)
    return [e.job for e in enqueued]


# -- keys within a queue (fairness.py) --------------------------------------------------------

STAGE_MAX = 1000  # keyed jobs a claim tags at most; the rest at the next claims
KEY_SETTINGS = ("weight", "concurrency_limit", "rate_limit", "rate_burst")
SET_KEY = {
    "weight": "set_key_weight",
    "concurrency_limit": "set_key_concurrency_limit",
    "rate_limit": "set_key_rate_limit",
    "rate_burst": "set_key_rate_burst",
}
KEY_COLUMN = INSERT_ORDER.index("fairness_key")
TAG_COLUMN = INSERT_ORDER.index("fair_tag")


def _mark_keyed(queue: str) -> Program[float]:
    """Note that `queue` has keyed jobs (its claims take the keyed path from now on); returns
    its virtual time."""
    state = yield row("queue_virtual_time", queue)
    if state is None:
        yield count("register_queue", queue)
    if state is None or not state[1]:
        yield count("mark_queue_keyed", queue)
    return 0.0 if state is None else float(state[0])


def _tags(queue: str, keys: Sequence[str]) -> Program[list[float]]:
    """Tags for jobs of `keys` (in order) of `queue` becoming due now; moves their keys' ends."""
    virtual_time = yield from _mark_keyed(queue)
    ends: dict[str, float] = {}
    weights: dict[str, float] = {}
    for key, last_end, weight in (yield rows("key_ends", queue, list(dict.fromkeys(keys)))):
        ends[key] = last_end
        if weight is not None:
            weights[key] = weight
    tags, new_ends = fairness.start_tags(virtual_time, keys, ends, weights)
    yield many("set_key_end", [(queue, key, end) for key, end in new_ends.items()])
    return tags


def tag_due_rows(rows_: Sequence[NewRow]) -> Program[None]:
    """Tag the keyed jobs of a batch that are due when written (run_at <= created_at; the
    rest when a claim stages them, see stage_due), and mark their queues keyed. Unkeyed
    batches cost a look a job."""
    due: dict[str, list[NewRow]] = {}
    later: set[str] = set()
    for r in rows_:
        v = r.values
        if v[KEY_COLUMN] is None:
            continue
        if v[9] <= v[8] and not (r.depends_on or r.depends_on_index):
            due.setdefault(v[1], []).append(r)
        else:
            later.add(v[1])
    for queue, keyed in due.items():
        tags = yield from _tags(queue, [r.values[KEY_COLUMN] for r in keyed])
        for r, tag in zip(keyed, tags, strict=True):
            r.values = (*r.values[:TAG_COLUMN], tag, *r.values[TAG_COLUMN + 1 :])
    for queue in later - due.keys():
        yield from _mark_keyed(queue)


def stage_due(queue: str, now: float) -> Program[None]:
    """Tag keyed jobs that fell due since they were written (delayed, retried, requeued,
    unblocked): oldest first, up to STAGE_MAX a claim."""
    found = yield rows("untagged_due", queue, now, STAGE_MAX)
    if found:
        tags = yield from _tags(queue, [r[1] for r in found])
        yield many("set_tag", [(tag, r[0]) for tag, r in zip(tags, found, strict=True)])


def _key_policies(
    queue: str, settings: QueueSettings
) -> Program[tuple[fairness.KeyPolicy, dict[str, fairness.KeyPolicy]]]:
    """The queue's default policy for a key, and those of keys with settings of their own."""
    found = yield rows("key_overrides", queue)
    own = {r[0]: fairness.policy(settings, fairness.KeyOverride(*r[1:])) for r in found}
    return fairness.policy(settings, None), own


@dataclass(slots=True)
class KeyedPick:
    """A queue's keyed jobs a claim may take, in tag order, and what it settles after."""

    queue: str
    chosen: list[tuple[int, str, float]]  # id, key, tag
    default: fairness.KeyPolicy
    own: dict[str, fairness.KeyPolicy]
    tokens: dict[str, float]  # rate-limited keys' buckets at the claim, for those drawn from

    def settle(self, claimed: Sequence[Job], now: float) -> Program[None]:
        """Move the virtual time to the latest tag claimed; take the claimed jobs' tokens."""
        tag_of = {c[0]: c[2] for c in self.chosen}
        tags = [tag_of[j.id] for j in claimed if j.id in tag_of]
        if tags:
            yield count("advance_virtual_time", self.queue, max(tags))
        taken: dict[str, int] = {}
        for j in claimed:
            if j.id in tag_of and j.fairness_key is not None:
                taken[j.fairness_key] = taken.get(j.fairness_key, 0) + 1
        drawn = []
        for key, n in taken.items():
            p = self.own.get(key, self.default)
            if p.rate_limit is not None:
                drawn.append((self.queue, key, self.tokens.get(key, p.bucket_size) - n, now))
        if drawn:
            yield many("set_key_tokens", drawn)


def keyed_due(queue: str, settings: QueueSettings, now: float, allowed: int) -> Program[KeyedPick]:
    """Up to `allowed` of the queue's tagged jobs, in tag order, within each key's limits.
    Keys found full are left out of the next read, so a full key's backlog is passed over in
    the index rather than read; three reads at most."""
    default, own = yield from _key_policies(queue, settings)
    policies = [default, *own.values()]
    running: dict[str, int] = {}
    if any(p.concurrency_limit is not None for p in policies):
        running = {r[0]: r[1] for r in (yield rows("running_by_key", queue))}
    tokens: dict[str, float] = {}
    horizon = fairness.rate_horizon_s(policies)
    if horizon is not None:
        for key, left, left_at in (yield rows("drawn_buckets", queue, now - horizon)):
            tokens[key] = flow.refill(own.get(key, default), left, left_at, now)
    rooms: dict[str, int | None] = {}
    for key in {*running, *tokens, *own}:
        p = own.get(key, default)
        left = tokens.get(key, p.bucket_size if p.rate_limit is not None else None)
        rooms[key] = fairness.room(p, running.get(key, 0), left)
    default_room = fairness.room(
        default, 0, default.bucket_size if default.rate_limit is not None else None
    )
    full = {key for key, left in rooms.items() if left is not None and left <= 0}
    chosen: list[tuple[int, str, float]] = []
    taken: set[int] = set()
    for _ in range(3):
        want = allowed - len(chosen)
        found = yield rows("keyed_due", queue, now, sorted(full), want + len(taken))
        fresh = [(r[0], r[1], r[2]) for r in found if r[0] not in taken]
        picked, newly_full = fairness.pick(fresh, rooms, default_room, want)
        chosen += picked
        taken.update(c[0] for c in picked)
        if len(chosen) >= allowed or len(found) < want + len(taken) - len(picked):
            break  # enough, or the index had no more
        if not newly_full - full:
            break
        full |= newly_full
    return KeyedPick(queue, chosen, default, own, tokens)


def keyed_wake_at(queue: str, settings: QueueSettings, now: float) -> Program[list[float]]:
    """When a claim may next find keyed work: the next untagged job's run_at, or a recheck
    while tagged jobs wait on their keys' limits."""
    wake: list[float] = []
    untagged = yield value("next_untagged_at", queue)
    if untagged is not None:
        wake.append(max(untagged, now))
    default, own = yield from _key_policies(queue, settings)
    policies = [default, *own.values()]
    limited = any(p.concurrency_limit is not None or p.rate_limit is not None for p in policies)
    if limited and (yield value("has_tagged", queue)) is not None:
        rates = [p.rate_limit for p in policies if p.rate_limit is not None]
        token_s = 1 / max(rates) if rates else CONCURRENCY_RECHECK_S  # the soonest next token
        wake.append(now + min(CONCURRENCY_RECHECK_S, token_s))
    return wake


def busiest_keys(queue: str) -> Program[list[dict[str, Any]]]:
    found = yield rows("busiest_keys", queue, fairness.BUSIEST_KEYS)
    return fairness.busiest(((r[0], r[1], r[2]) for r in found), fairness.BUSIEST_KEYS)


def key_state(queue: str, key: str, now: float) -> Program[fairness.KeyState]:
    """One key's settings of its own, what holds for it, its running jobs and bucket."""
    states = yield from queue_states()
    settings = states[queue][0] if queue in states else QueueSettings()
    found = yield row("key_row", queue, key)
    override = fairness.KeyOverride(*found[:4]) if found is not None else fairness.KeyOverride()
    p = fairness.policy(settings, override)
    running = yield value("key_running", queue, key)
    tokens = None
    if p.rate_limit is not None:
        left, left_at = (found[4], found[5]) if found is not None else (None, None)
        tokens = flow.refill(p, left, left_at, now)
    return fairness.KeyState(queue, key, override, p, running or 0, tokens)


def configure_key(
    queue: str, key: str, changes: dict[str, Any], now: float, ch: Changes
) -> Program[fairness.KeyState]:
    """Set some of a key's own settings (None: back to its queue's)."""
    ch.due = True  # a key given more room may have work now
    unknown = set(changes) - set(KEY_SETTINGS)
    if unknown:
        raise ValueError(f"not key settings: {sorted(unknown)}")
    yield count("register_queue", queue)
    yield count("register_key", queue, key)
    for setting, new in changes.items():
        yield count(SET_KEY[setting], queue, key, new)
    return (yield from key_state(queue, key, now))
