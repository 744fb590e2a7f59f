"""Jobs, their states, and the moves between states. Pure: no I/O.

    enqueue ──> PENDING ──claim──> RUNNING ──ok──────────────> SUCCEEDED
                  ^  │ │             │ │ └──failed for good──> FAILED (+ dead letter)
                  │  │ └─deadline passed (expired)─────────> FAILED (+ dead letter)
                  │  └──cancel──┐    │ └──cancel───────────┐
                  │             v    │                     v
                  │          CANCELLED <───────────────────┘
                  └── retry / lease lost / released at shutdown ──┘

Who moves a job: the API enqueues and cancels; the worker claims, finishes, retries and
dead-letters; the rescuer puts back jobs whose worker stopped renewing, and fails pending jobs
whose deadline passed.
"""

from __future__ import annotations

import traceback as tb
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .errors import IllegalTransition

MAX_ERROR_MESSAGE = 2_000
MAX_TRACEBACK = 8_000


class JobState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})

TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.PENDING: frozenset({JobState.RUNNING, JobState.CANCELLED, JobState.FAILED}),
    JobState.RUNNING: frozenset(
        {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.PENDING}
    ),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


def is_legal(src: JobState, dst: JobState) -> bool:
    return dst in TRANSITIONS[src]


def check_transition(src: JobState, dst: JobState) -> None:
    """Raise IllegalTransition unless the state machine allows `src -> dst`."""
    if not is_legal(src, dst):
        raise IllegalTransition(f"a job cannot go from {src} to {dst}")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter: delay in [0, min(cap, base * factor**(n-1))]."""

    base_s: float = 1.0
    factor: float = 2.0
    cap_s: float = 300.0


DEFAULT_BACKOFF = Backoff()


@dataclass(slots=True)
class NewJob:
    """What a client asks for; validated before it reaches the store."""

    task: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    queue: str = "default"
    priority: int = 0
    run_at: float | None = None  # None: due at once
    max_retries: int = 3
    timeout_s: float | None = None
    backoff: Backoff | None = None  # None: the task's policy
    idempotency_key: str | None = None
    idempotency_window_s: float = 86_400.0  # after this the key may be used again
    deadline: float | None = None  # do not start after this (epoch s): it fails as `expired`
    unique_key: str | None = None  # at most one pending or running job holds it
    depends_on: list[int] = field(default_factory=list)  # ids of jobs that must succeed first
    depends_on_index: list[int] = field(default_factory=list)  # earlier jobs of the same batch
    pass_result: bool = False  # the dependencies' result(s) become the first argument
    on_dependency_failure: str = "fail"  # or "cancel": what a failed dependency does to it
    callback_url: str | None = None  # POSTed the job record when it ends
    workflow_id: int | None = None
    traceparent: str | None = None  # W3C trace context, carried to its attempts
    fairness_key: str | None = None  # shares its queue fairly with the queue's other keys


@dataclass(slots=True)
class Job:
    id: int
    task: str
    queue: str
    args: list[Any]
    kwargs: dict[str, Any]
    priority: int
    status: JobState
    attempts: int
    max_retries: int
    timeout_s: float | None
    backoff: Backoff | None
    created_at: float
    run_at: float
    started_at: float | None = None
    completed_at: float | None = None
    result: Any = None
    error: dict[str, Any] | None = None
    progress: float | None = None
    progress_message: str | None = None
    lease_token: str | None = None
    lease_expires_at: float | None = None
    cancel_requested: bool = False
    idempotency_key: str | None = None
    deadline: float | None = None
    unique_key: str | None = None
    depends_on: list[int] = field(default_factory=list)
    blocked_by: int = 0  # dependencies not yet succeeded
    pass_result: bool = False
    on_dependency_failure: str = "fail"
    callback_url: str | None = None
    workflow_id: int | None = None
    traceparent: str | None = None
    fairness_key: str | None = None
    # it kept a durable step once (durable.py): a run reads its kept steps only then
    has_steps: bool = False

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATES

    @property
    def retries_left(self) -> int:
        return self.max_retries + 1 - self.attempts


@dataclass(slots=True)
class DeadLetter:
    id: int
    job_id: int
    task: str
    queue: str
    args: list[Any]
    kwargs: dict[str, Any]
    error: dict[str, Any] | None
    attempts: int
    failed_at: float


# Not frozen: built for every move of every job (see events.Event).
@dataclass(slots=True)
class Transition:
    """One move a committed write made, as it wrote it: the record events, metrics, waiters
    and logs are made from (transitions.Publisher), so what is published is what is stored.

    `before` is None for a job the write created, and for a move heard from another node
    (its notice says where the job is, not where it was). `reason` says why: enqueued,
    requeued (from a dead letter), claimed, succeeded, retry, failed, cancelled,
    cancel_requested (a failed or released run whose cancel was asked), released (given back
    at shutdown), suspended (a durable sleep or wait gave its slot back), lease_expired,
    expired (deadline passed), dependency_failed, or heard."""

    job_id: int
    task: str
    queue: str
    before: JobState | None
    after: JobState
    reason: str
    attempt: int
    at: float
    started_at: float | None = None  # the attempt's start, when the move ended an attempt
    error_type: str | None = None  # the error that ended the attempt, if one did
    job: Job | None = None  # the job as written, when the write had it whole (claims)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One run of a job, as its history keeps it. `outcome`: running, succeeded, failed (the
    job may have been retried after it), cancelled, lease_expired (the run was lost: its
    process died or stalled). `error` holds type, message and the task's own traceback."""

    attempt: int
    started_at: float | None
    ended_at: float | None
    node: str | None
    outcome: str
    error: dict[str, Any] | None


ATTEMPT_OUTCOMES = ("running", "succeeded", "failed", "cancelled", "lease_expired")


def _cap(text: str, limit: int) -> str:
    if "\x00" in text:  # PostgreSQL cannot store a NUL: one would fail the write of the error
        text = text.replace("\x00", "\ufffd")
    if len(text) <= limit:
        return text
    suffix = f"... [{len(text)} chars, cut]"
    return text[: limit - len(suffix)] + suffix


def error_info(
    exc: BaseException | None,
    *,
    type_: str | None = None,
    message: str = "",
    traceback: str | None = None,
) -> dict[str, Any]:
    """The error record kept on a job: type, message and traceback, each capped in size (the
    traceback of `exc`, or `traceback` as given without one: an external worker's)."""
    if exc is None:
        return {
            "type": _cap(type_ or "Error", MAX_ERROR_MESSAGE),
            "message": _cap(message, MAX_ERROR_MESSAGE),
            "traceback": None if traceback is None else _cap(traceback, MAX_TRACEBACK),
        }
    return {
        "type": _cap(type_ or type(exc).__name__, MAX_ERROR_MESSAGE),
        "message": _cap(message or _safe_str(exc), MAX_ERROR_MESSAGE),
        "traceback": _cap(_safe_traceback(exc), MAX_TRACEBACK),
    }


def _safe_str(exc: BaseException) -> str:
    """str(exc), or what stands for it when the exception's own __str__ fails."""
    try:
        return str(exc)
    except Exception as failed:
        return f"<{type(exc).__name__}: its str() raised {type(failed).__name__}>"


def _safe_traceback(exc: BaseException) -> str:
    try:
        return "".join(tb.format_exception(type(exc), exc, exc.__traceback__))
    except Exception:  # formatting calls the exception's __str__ too
        frames = "".join(tb.format_tb(exc.__traceback__))
        return f"Traceback (most recent call last):\n{frames}{_safe_str(exc)}\n"


@dataclass(slots=True)
class QueueSettings:
    """Limits an operator sets on a queue; None: no limit."""

    paused: bool = False
    concurrency_limit: int | None = None  # running at once, across all nodes
    rate_limit: float | None = None  # jobs started per second (token bucket)
    rate_burst: float | None = None  # bucket size; None: one second's worth (at least 1)
    max_depth: int | None = None  # pending jobs; enqueue past it is refused (429)
    # each key's own defaults (fairness.py): running at once, started per second, burst
    key_concurrency_limit: int | None = None
    key_rate_limit: float | None = None
    key_rate_burst: float | None = None


@dataclass(slots=True)
class QueueInfo:
    name: str
    settings: QueueSettings
    counts: dict[str, int]  # jobs by state
    oldest_due_age_s: float | None  # how long the oldest due pending job has waited
    rate_tokens: float | None  # tokens in the bucket now, for a rate-limited queue
    # the keys with the most jobs pending or running ({key, pending, running}), at most a few
    busiest_keys: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Step:
    """One durable step of a job (durable.py): `kind` run (ctx.step), sleep, wait or child
    (ctx.run_child); `status` done, waiting (a wait whose signal, or child, has not come) or
    failed (a child that ended without success); `result` the step's value (a sleep's end
    time, a wait's payload or None when it timed out, a child's job_id and result)."""

    seq: int
    name: str
    kind: str
    status: str
    result: Any
    attempt: int
    started_at: float
    ended_at: float | None


MISSED_TICK_POLICIES = ("skip", "catch_up")

# A job with a callback_url that ends gets a delivery job of this shape (see webhooks.py);
# the stores enqueue it in the transaction that ends the job.
WEBHOOK_TASK = "jobserver.webhook"
WEBHOOK_QUEUE = "webhooks"
WEBHOOK_MAX_RETRIES = 8
DEPENDENCY_FAILURE_POLICIES = ("fail", "cancel")


@dataclass(slots=True)
class Schedule:
    """A cron schedule: one job per tick, each tick claimed once in the database."""

    name: str
    task: str
    cron: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    queue: str = "default"
    priority: int = 0
    timezone: str = "UTC"
    missed: str = "skip"  # "skip": missed ticks are dropped; "catch_up": each one runs
    paused: bool = False
    next_tick_at: float = 0.0
    last_tick_at: float | None = None
    source: str = "api"  # "api" or "task" (declared with @task(cron=...))
