"""A client for jobserver's HTTP API: `AsyncClient` (aiohttp) and `Client` (the standard library).

    async with AsyncClient("http://127.0.0.1:8000") as jobs:
        ref = await jobs.enqueue("send_email", ["a@example.com"], priority=5)
        job = await jobs.wait(ref.id, timeout_s=30)     # long-polls until the job is terminal
        print(job.status, job.result)

    with Client("http://127.0.0.1:8000") as jobs:     # the same methods, blocking
        job = jobs.wait(jobs.enqueue("echo", ["hi"]).id)

Both clients share one implementation: every method is written once as a generator that yields
the HTTP calls it needs and gets their answers back (`_Op`); each client only knows how to send
a call. Errors from the API raise `ApiError` subclasses, network failures `ConnectionFailed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import select
import socket
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from types import TracebackType
from typing import Any, Final, Generic, Literal, TypeVar, cast

import aiohttp

from . import codec
from .errors import ValidationError
from .job_options import BACKOFF_BY_NAME, BY_NAME, BY_WIRE, Option, parse_rfc3339
from .models import TERMINAL_STATES, Backoff, JobState

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "DEFAULT_URL",
    "MAX_WAIT_S",
    "NOT_GIVEN",
    "ApiError",
    "AsyncClient",
    "AttemptInfo",
    "AuthError",
    "BulkInfo",
    "Client",
    "ClientError",
    "ConflictError",
    "ConnectionFailed",
    "DeadLetterInfo",
    "InvalidArgument",
    "InvalidRequest",
    "JobError",
    "JobInfo",
    "JobRef",
    "KeyInfo",
    "NotFoundError",
    "Page",
    "Progress",
    "PurgeInfo",
    "QueueFull",
    "QueueInfo",
    "QueueLimits",
    "ScheduleInfo",
    "StepInfo",
    "TooManyFailures",
    "Unavailable",
    "UnexpectedResponse",
    "WorkflowInfo",
    "WorkflowRef",
]

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT_S = 30.0
MAX_WAIT_S = 60.0  # the longest long-poll the server accepts (GET /jobs/{id}?wait=S)
USER_AGENT = "jobserver-client/0.1"

T = TypeVar("T")
DependencyFailure = Literal["fail", "cancel"]  # what a dependency that did not succeed does


# -- errors ---------------------------------------------------------------------------------------
class ClientError(Exception):
    """Base of every error the client raises."""


class ConnectionFailed(ClientError):
    """No answer from the server: refused, reset, timed out, or an unreadable response."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"the server at {url} is not reachable: {reason}")
        self.url = url
        self.reason = reason


class InvalidArgument(ClientError, TypeError, ValueError):
    """An argument the client cannot send (the wrong type, a datetime without a zone...): raised
    before any request. Also a TypeError and a ValueError, which it once was."""


class UnexpectedResponse(ClientError):
    """The server answered with something the API does not document (not jobserver?); `status`
    is its HTTP status, when it had one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ApiError(ClientError):
    """The API refused the request: `{"error": {"code", "message", "field"}}` and its status."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        *,
        body: Mapping[str, Any] | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        text = f"{code}: {message}" + (f" (field: {field})" if field else "")
        super().__init__(text)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.body: Mapping[str, Any] = body or {}
        self.retry_after_s = retry_after_s  # from a Retry-After header (429, 503), if any


class InvalidRequest(ApiError):
    """400, 413, 415 or 422: the request itself is wrong; `field` names what, when known.

    For a batch, `items` lists each invalid job: `{"index", "field", "message"}`."""

    @property
    def items(self) -> list[dict[str, Any]]:
        items = self.body.get("items")
        return list(items) if isinstance(items, list) else []


class NotFoundError(ApiError):
    """404: no such job or dead letter (or route: check the URL's path prefix)."""


class ConflictError(ApiError):
    """409: e.g. cancelling a finished job, or an idempotency key reused for another payload."""


class AuthError(ApiError):
    """401 or 403: the token is missing, wrong, or not allowed to do this."""


class TooManyFailures(AuthError):
    """429 `too_many_failures`: this address failed to authenticate too often; the server
    refuses it until `retry_after_s` has passed (check the token)."""


class QueueFull(ApiError):
    """429 `queue_full`: the queue holds its `max_depth` of pending jobs; nothing was enqueued.
    Try again after `retry_after_s`."""


class Unavailable(ApiError):
    """503: the database cannot take writes now; try again after `retry_after_s`."""


_ERRORS: dict[int, type[ApiError]] = {
    400: InvalidRequest,
    401: AuthError,
    403: AuthError,
    404: NotFoundError,
    409: ConflictError,
    413: InvalidRequest,
    415: InvalidRequest,
    422: InvalidRequest,
    503: Unavailable,
}
_ERRORS_429: dict[str, type[ApiError]] = {
    "queue_full": QueueFull,
    "too_many_failures": TooManyFailures,
}


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def _api_error(status: int, raw: bytes, retry_after: str | None) -> ApiError:
    """The exception for an error response, from its standard error body; UnexpectedResponse
    (raised) for an answer that does not have one."""
    body: dict[str, Any] = {}
    try:
        data = json.loads(raw) if raw else None
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        body = data["error"]
    else:  # every error of jobserver's has that shape: this is someone else's answer
        snippet = raw.decode("utf-8", "replace").strip()[:200]
        raise UnexpectedResponse(
            f"HTTP {status} that is not jobserver's error (is the URL right?): {snippet!r}", status
        )
    code = str(body.get("code") or "http_error")
    message = str(body.get("message") or raw.decode("utf-8", "replace").strip()[:200])
    if not message:
        message = f"HTTP {status}"
    field = body.get("field")
    field = None if field is None else str(field)
    kind = _ERRORS_429.get(code, ApiError) if status == 429 else _ERRORS.get(status, ApiError)
    return kind(status, code, message, field, body=body, retry_after_s=_retry_after(retry_after))


# -- results --------------------------------------------------------------------------------------
def _time(value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"expected an RFC 3339 string, got {value!r}")
    return datetime.fromisoformat(value)


def _required_time(value: Any) -> datetime:
    when = _time(value)
    if when is None:
        raise TypeError("expected an RFC 3339 string, got null")
    return when


def _render_time(when: datetime | None) -> str | None:
    """As the API writes times: UTC, milliseconds, `Z`."""
    if when is None:
        return None
    text = when.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Progress:
    """What a running task last reported: `fraction` in [0, 1] and an optional message."""

    fraction: float
    message: str | None = None


@dataclass(frozen=True, slots=True)
class JobError:
    """The last failed attempt's error (tracebacks stay in the server's log)."""

    type: str | None
    message: str | None

    @classmethod
    def from_dict(cls, data: Any) -> JobError | None:
        if data is None:
            return None
        return cls(type=data.get("type"), message=data.get("message"))

    def __str__(self) -> str:
        return f"{self.type}: {self.message}" if self.message else str(self.type)


@dataclass(frozen=True, slots=True)
class JobRef:
    """What enqueueing returns. `created` is False when an idempotency key matched an earlier
    job, which is returned instead (nothing new was enqueued)."""

    id: int
    status: JobState
    poll_url: str
    created: bool = True


@dataclass(frozen=True, slots=True)
class JobInfo:
    """A job as the API shows it (GET /jobs/{id})."""

    id: int
    task: str
    queue: str
    status: JobState
    priority: int
    args: list[Any]
    kwargs: dict[str, Any]
    attempts: int
    max_retries: int
    timeout_s: float | None
    created_at: datetime
    run_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    result: Any
    error: JobError | None
    progress: Progress | None
    cancel_requested: bool
    deadline: datetime | None = None
    unique_key: str | None = None
    depends_on: tuple[int, ...] = ()
    workflow_id: int | None = None
    callback_url: str | None = None
    traceparent: str | None = None  # the W3C trace context given at enqueue
    fairness_key: str | None = None  # the key whose fair share of its queue it runs in
    waiting: dict[str, Any] | None = None  # for a pending job: why it has not started

    @property
    def is_terminal(self) -> bool:
        """Succeeded, failed or cancelled: the job will not change any more."""
        return self.status in TERMINAL_STATES

    @property
    def succeeded(self) -> bool:
        return self.status == JobState.SUCCEEDED

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobInfo:
        progress = data.get("progress")
        return cls(
            id=int(data["id"]),
            task=str(data["task"]),
            queue=str(data["queue"]),
            status=JobState(data["status"]),
            priority=int(data["priority"]),
            args=list(data["args"]),
            kwargs=dict(data["kwargs"]),
            attempts=int(data["attempts"]),
            max_retries=int(data["max_retries"]),
            timeout_s=None if data.get("timeout") is None else float(data["timeout"]),
            created_at=_required_time(data["created_at"]),
            run_at=_required_time(data["run_at"]),
            started_at=_time(data.get("started_at")),
            completed_at=_time(data.get("completed_at")),
            result=data.get("result"),
            error=JobError.from_dict(data.get("error")),
            progress=None
            if progress is None
            else Progress(float(progress["fraction"]), progress.get("message")),
            cancel_requested=bool(data.get("cancel_requested", False)),
            deadline=_time(data.get("deadline")),
            unique_key=data.get("unique_key"),
            depends_on=tuple(int(d) for d in data.get("depends_on") or ()),
            workflow_id=data.get("workflow_id"),
            callback_url=data.get("callback_url"),
            traceparent=data.get("traceparent"),
            fairness_key=data.get("fairness_key"),
            waiting=data.get("waiting"),
        )

    def to_dict(self) -> dict[str, Any]:
        """The job in the API's JSON shape (as GET /jobs/{id} returns it)."""
        return {
            "id": self.id,
            "task": self.task,
            "queue": self.queue,
            "status": self.status.value,
            "priority": self.priority,
            "args": self.args,
            "kwargs": self.kwargs,
            "attempts": self.attempts,
            "max_retries": self.max_retries,
            "timeout": self.timeout_s,
            "created_at": _render_time(self.created_at),
            "run_at": _render_time(self.run_at),
            "started_at": _render_time(self.started_at),
            "completed_at": _render_time(self.completed_at),
            "result": self.result,
            "error": None
            if self.error is None
            else {"type": self.error.type, "message": self.error.message},
            "progress": None
            if self.progress is None
            else {"fraction": self.progress.fraction, "message": self.progress.message},
            "cancel_requested": self.cancel_requested,
            "is_terminal": self.is_terminal,
            "deadline": _render_time(self.deadline),
            "unique_key": self.unique_key,
            "depends_on": list(self.depends_on),
            "workflow_id": self.workflow_id,
            "callback_url": self.callback_url,
            "traceparent": self.traceparent,
            "fairness_key": self.fairness_key,
            **({"waiting": self.waiting} if self.status == JobState.PENDING else {}),
        }


@dataclass(frozen=True, slots=True)
class StepInfo:
    """One durable step of a job (GET /jobs/{id}/steps): `kind` run, sleep or wait; `status`
    done or waiting; `result` its kept value."""

    seq: int
    name: str
    kind: str
    status: str
    result: Any
    attempt: int
    started_at: datetime | None
    ended_at: datetime | None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StepInfo:
        return cls(
            seq=int(data["seq"]),
            name=str(data["name"]),
            kind=str(data["kind"]),
            status=str(data["status"]),
            result=data.get("result"),
            attempt=int(data["attempt"]),
            started_at=_time(data.get("started_at")),
            ended_at=_time(data.get("ended_at")),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "name": self.name,
            "kind": self.kind,
            "status": self.status,
            "result": self.result,
            "attempt": self.attempt,
            "started_at": _render_time(self.started_at),
            "ended_at": _render_time(self.ended_at),
        }


@dataclass(frozen=True, slots=True)
class AttemptInfo:
    """One attempt in a job's history (GET /jobs/{id}/attempts). `outcome`: running,
    succeeded, failed, cancelled or lease_expired; `traceback` is the task's own, if it raised."""

    attempt: int
    started_at: datetime | None
    ended_at: datetime | None
    node: str | None
    outcome: str
    error: JobError | None
    traceback: str | None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AttemptInfo:
        error = data.get("error")
        return cls(
            attempt=int(data["attempt"]),
            started_at=_time(data.get("started_at")),
            ended_at=_time(data.get("ended_at")),
            node=data.get("node"),
            outcome=str(data["outcome"]),
            error=JobError.from_dict(error),
            traceback=None if error is None else error.get("traceback"),
        )

    def to_dict(self) -> dict[str, Any]:
        error = self.error
        return {
            "attempt": self.attempt,
            "outcome": self.outcome,
            "started_at": _render_time(self.started_at),
            "ended_at": _render_time(self.ended_at),
            "node": self.node,
            "error": None
            if error is None
            else {"type": error.type, "message": error.message, "traceback": self.traceback},
        }


@dataclass(frozen=True, slots=True)
class DeadLetterInfo:
    """A job that failed for good, as GET /dead-letters/{id} shows it."""

    id: int
    job_id: int
    task: str
    queue: str
    args: list[Any]
    kwargs: dict[str, Any]
    error: JobError | None
    attempts: int
    failed_at: datetime

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeadLetterInfo:
        return cls(
            id=int(data["id"]),
            job_id=int(data["job_id"]),
            task=str(data["task"]),
            queue=str(data["queue"]),
            args=list(data["args"]),
            kwargs=dict(data["kwargs"]),
            error=JobError.from_dict(data.get("error")),
            attempts=int(data["attempts"]),
            failed_at=_required_time(data["failed_at"]),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "job_id": self.job_id,
            "task": self.task,
            "queue": self.queue,
            "args": self.args,
            "kwargs": self.kwargs,
            "error": None
            if self.error is None
            else {"type": self.error.type, "message": self.error.message},
            "attempts": self.attempts,
            "failed_at": _render_time(self.failed_at),
        }


@dataclass(frozen=True, slots=True)
class PurgeInfo:
    """A queue purge: how many pending jobs it took (would take, in a dry run), whether more
    are pending, and the ids it cancelled."""

    matched: int
    more: bool
    cancelled: list[int]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PurgeInfo:
        return cls(int(data["matched"]), bool(data["more"]), [int(i) for i in data["cancelled"]])


@dataclass(frozen=True, slots=True)
class BulkInfo:
    """What a bulk action on dead letters found and did: `matched` (how many, up to its
    limit), `more` (more matched), their ids, a `sample` of them whole, and `done`: the new
    jobs' ids (requeue) or the dead letters deleted (delete); empty in a dry run."""

    matched: int
    more: bool
    dead_letter_ids: list[int]
    sample: list[DeadLetterInfo]
    done: list[int]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], done: str) -> BulkInfo:
        return cls(
            matched=int(data["matched"]),
            more=bool(data["more"]),
            dead_letter_ids=[int(i) for i in data["dead_letter_ids"]],
            sample=[DeadLetterInfo.from_dict(d) for d in data["sample"]],
            done=[int(i) for i in data[done]],
        )


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list, newest first; pass `next_cursor` as `cursor` for the next one
    (None: this was the last page)."""

    items: list[T]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class QueueLimits:
    """A queue's limits; None: no limit. `rate_limit` is jobs started per second (a token
    bucket of `rate_burst`; None: one second's worth), `max_depth` the most pending jobs."""

    concurrency_limit: int | None = None
    rate_limit: float | None = None
    rate_burst: float | None = None
    max_depth: int | None = None
    key_concurrency_limit: int | None = None  # each fairness key's, unless it sets its own
    key_rate_limit: float | None = None
    key_rate_burst: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "concurrency_limit": self.concurrency_limit,
            "rate_limit": self.rate_limit,
            "rate_burst": self.rate_burst,
            "max_depth": self.max_depth,
            "key_concurrency_limit": self.key_concurrency_limit,
            "key_rate_limit": self.key_rate_limit,
            "key_rate_burst": self.key_rate_burst,
        }


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """A queue as GET /queues/{name} shows it: its jobs by state (`counts`, keyed by
    `JobState` values), how long its oldest due job has waited, and its limits."""

    name: str
    paused: bool
    counts: dict[str, int]
    oldest_due_age_s: float | None
    limits: QueueLimits
    rate_tokens: float | None = None  # tokens in the bucket now, for a rate-limited queue
    # the fairness keys with the most jobs pending or running: {key, pending, running}
    busiest_keys: tuple[dict[str, Any], ...] = ()

    @property
    def pending(self) -> int:
        return self.counts.get(JobState.PENDING.value, 0)

    @property
    def running(self) -> int:
        return self.counts.get(JobState.RUNNING.value, 0)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QueueInfo:
        limits = data["limits"]
        age = data.get("oldest_due_age_s")
        tokens = data.get("rate_tokens")
        return cls(
            name=str(data["name"]),
            paused=bool(data["paused"]),
            counts={str(k): int(v) for k, v in data["counts"].items()},
            oldest_due_age_s=None if age is None else float(age),
            limits=QueueLimits(
                concurrency_limit=_opt_int(limits.get("concurrency_limit")),
                rate_limit=_opt_float(limits.get("rate_limit")),
                rate_burst=_opt_float(limits.get("rate_burst")),
                max_depth=_opt_int(limits.get("max_depth")),
                key_concurrency_limit=_opt_int(limits.get("key_concurrency_limit")),
                key_rate_limit=_opt_float(limits.get("key_rate_limit")),
                key_rate_burst=_opt_float(limits.get("key_rate_burst")),
            ),
            rate_tokens=None if tokens is None else float(tokens),
            busiest_keys=tuple(
                {"key": str(k["key"]), "pending": int(k["pending"]), "running": int(k["running"])}
                for k in data.get("busiest_keys") or ()
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "paused": self.paused,
            "counts": dict(self.counts),
            "oldest_due_age_s": self.oldest_due_age_s,
            "limits": self.limits.to_dict(),
            "rate_tokens": self.rate_tokens,
            "busiest_keys": [dict(k) for k in self.busiest_keys],
        }


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A fairness key of a queue as GET /queues/{name}/keys/{key} shows it: its own settings
    (`own`, None where it takes the queue's), what holds for it (`effective`), its running
    jobs and, when rate-limited, the tokens in its bucket."""

    queue: str
    key: str
    own: dict[str, Any]
    effective: dict[str, Any]
    running: int
    rate_tokens: float | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> KeyInfo:
        tokens = data.get("rate_tokens")
        return cls(
            queue=str(data["queue"]),
            key=str(data["key"]),
            own=dict(data["own"]),
            effective=dict(data["effective"]),
            running=int(data["running"]),
            rate_tokens=None if tokens is None else float(tokens),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "key": self.key,
            "own": dict(self.own),
            "effective": dict(self.effective),
            "running": self.running,
            "rate_tokens": self.rate_tokens,
        }


@dataclass(frozen=True, slots=True)
class ScheduleInfo:
    """A cron schedule as GET /schedules/{name} shows it. `source` is "api" for one created
    over HTTP, "task" for one declared with `@task(cron=...)` (named `task:<task>`)."""

    name: str
    task: str
    cron: str
    timezone: str
    args: list[Any]
    kwargs: dict[str, Any]
    queue: str
    priority: int
    missed: str  # "skip" or "catch_up": what ticks missed while the server was down do
    paused: bool
    next_run_at: datetime
    last_run_at: datetime | None
    source: str

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScheduleInfo:
        return cls(
            name=str(data["name"]),
            task=str(data["task"]),
            cron=str(data["cron"]),
            timezone=str(data["timezone"]),
            args=list(data["args"]),
            kwargs=dict(data["kwargs"]),
            queue=str(data["queue"]),
            priority=int(data["priority"]),
            missed=str(data["missed"]),
            paused=bool(data["paused"]),
            next_run_at=_required_time(data["next_run_at"]),
            last_run_at=_time(data.get("last_run_at")),
            source=str(data["source"]),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "task": self.task,
            "cron": self.cron,
            "timezone": self.timezone,
            "args": self.args,
            "kwargs": self.kwargs,
            "queue": self.queue,
            "priority": self.priority,
            "missed": self.missed,
            "paused": self.paused,
            "next_run_at": _render_time(self.next_run_at),
            "last_run_at": _render_time(self.last_run_at),
            "source": self.source,
        }


@dataclass(frozen=True, slots=True)
class WorkflowRef:
    """What enqueueing a workflow returns: its id and every job's id, dependencies first.
    Unpacks as `(id, job_ids)`."""

    id: int
    job_ids: list[int]
    poll_url: str

    def __iter__(self) -> Iterator[Any]:
        return iter((self.id, self.job_ids))


WORKFLOW_TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


@dataclass(frozen=True, slots=True)
class WorkflowInfo:
    """A workflow (GET /workflows/{id}): `status` is pending, running, succeeded, failed or
    cancelled; `jobs` are its jobs, dependencies first."""

    id: int
    status: str
    jobs: list[JobInfo]

    @property
    def is_terminal(self) -> bool:
        """Every job ended: the workflow will not change any more."""
        return self.status in WORKFLOW_TERMINAL

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WorkflowInfo:
        return cls(
            id=int(data["id"]),
            status=str(data["status"]),
            jobs=[JobInfo.from_dict(j) for j in data["jobs"]],
        )

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "jobs": [j.to_dict() for j in self.jobs]}


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


class _NotGiven(Enum):
    """The default of `configure_queue`'s settings: leave it as it is (None lifts a limit)."""

    NOT_GIVEN = "NOT_GIVEN"

    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN: Final = _NotGiven.NOT_GIVEN


# -- requests, shared by both clients -------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Call:
    method: str
    path: str
    query: Mapping[str, str] | None = None
    body: Any = None
    wait_s: float = 0.0  # a long poll: allow this much longer for the answer


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    data: Any


# An operation: yields the calls it makes, is sent each reply (or thrown each ClientError).
_Op = Generator[_Call, _Reply, T]


def _job_id(value: int, what: str = "job id") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{what} must be an int, got {value!r}")
    return value


def _timestamp(name: str, when: Any) -> str:
    """A time as the API takes it: an aware datetime, or RFC 3339 text (checked here, so that
    a mistake is an InvalidArgument before any request, as a naive datetime is)."""
    if isinstance(when, str):
        try:
            parse_rfc3339(name, when)
        except ValidationError as exc:
            raise InvalidArgument(f"{name} {exc.message}") from None
        return when
    if not isinstance(when, datetime):
        raise InvalidArgument(f"{name} must be an aware datetime or RFC 3339 text, got {when!r}")
    if when.tzinfo is None:
        raise InvalidArgument(f"{name} must be timezone-aware (e.g. datetime.now(UTC))")
    return when.isoformat()


def _backoff(backoff: Backoff | Mapping[str, float]) -> dict[str, float]:
    if isinstance(backoff, Backoff):
        backoff = {"base_s": backoff.base_s, "factor": backoff.factor, "cap_s": backoff.cap_s}
    return {(o.wire if (o := BACKOFF_BY_NAME.get(k)) else k): v for k, v in backoff.items()}


def _api_value(key: str, option: Option, value: Any) -> Any:
    """An option's value as the API takes it; a value of the wrong type for the server to
    refuse, naming the field, except where Python's type says more (a datetime without a zone)."""
    if option.kind == "time":
        return _timestamp(key, value)
    if option.kind == "backoff" and isinstance(value, Backoff | Mapping):
        return _backoff(value)
    if option.kind == "ids":
        if isinstance(value, int):
            raise InvalidArgument(f"{key} must be a sequence of job ids, not one id")
        return [_job_id(d, f"{key} id") for d in value]
    if option.kind == "array":
        if isinstance(value, str | bytes):
            raise InvalidArgument(f"{key} must be a sequence of arguments, not a string")
        return list(value)
    return dict(value) if option.kind == "object" and isinstance(value, Mapping) else value


def _api_job(options: Mapping[str, Any]) -> dict[str, Any]:
    """A job's options by their Python names (as enqueue and workflows.job take them; the
    API's own names pass as they are) as a JSON object in the API's names: the names and
    their spellings come from job_options.OPTIONS. None, empty kwargs and empty depends_on
    are left out; anything unknown is passed on for the server to refuse, naming it."""
    job: dict[str, Any] = {}
    for key, value in options.items():
        option = BY_NAME.get(key) or BY_WIRE.get(key)
        wire = key if option is None else option.wire
        if wire in job:
            raise InvalidArgument(f"a job gives both {key} and {wire}")
        if value is None or (option is not None and option.kind in ("object", "ids") and not value):
            continue
        job[wire] = value if option is None else _api_value(key, option, value)
    return job


def _job_body(
    task: str, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None, **options: Any
) -> dict[str, Any]:
    """A POST /jobs body from enqueue's arguments; the server checks the values and names
    the field it refuses."""
    return _api_job({"task": task, "args": args, "kwargs": kwargs, **options})


_WORKFLOW_KINDS = ("chain", "group", "chord")


def _workflow_node(node: Any) -> Any:
    """A workflow spec (built with jobserver.workflows' chain/group/chord/job, or already in
    the API's shape) in the API's shape: Python option names and values become the API's.
    Anything not understood is passed on for the server to refuse, naming where."""
    if not isinstance(node, Mapping):
        return node
    kinds = [k for k in _WORKFLOW_KINDS if k in node]
    if len(kinds) == 1 and len(node) == 1:
        kind = kinds[0]
        inner = node[kind]
        if kind == "chord" and isinstance(inner, Mapping):
            members = inner.get("group")
            if isinstance(members, Mapping) and set(members) == {"group"}:
                members = members["group"]  # chord({"group": [...]}, ...) written by hand
            chord = {k: v for k, v in inner.items() if k not in ("group", "callback")}
            if isinstance(members, list | tuple):
                chord["group"] = [_workflow_node(m) for m in members]
            elif "group" in inner:
                chord["group"] = members
            if "callback" in inner:
                chord["callback"] = _workflow_node(inner["callback"])
            return {"chord": chord}
        if isinstance(inner, list | tuple):
            return {kind: [_workflow_node(item) for item in inner]}
        return dict(node)
    if kinds:
        return dict(node)
    return _api_job(node)


def _workflow_body(
    spec: Mapping[str, Any], on_dependency_failure: DependencyFailure | None
) -> dict[str, Any]:
    if not isinstance(spec, Mapping):
        raise InvalidArgument(f"a workflow spec is a dict (chain, group or chord), got {spec!r}")
    body = dict(spec)
    given = body.pop("on_dependency_failure", None)
    body = _workflow_node(body)
    policy = on_dependency_failure if on_dependency_failure is not None else given
    if policy is not None:
        body["on_dependency_failure"] = policy
    return cast(dict[str, Any], body)


def _page_query(limit: int | None, cursor: str | None, **filters: str | None) -> dict[str, str]:
    query = {k: v for k, v in filters.items() if v is not None}
    if limit is not None:
        query["limit"] = str(limit)
    if cursor is not None:
        query["cursor"] = str(cursor)
    return query


def _parse(what: str, build: Any, data: Any) -> Any:
    try:
        return build(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UnexpectedResponse(f"cannot read the {what} in the response: {exc!r}") from None


def _job(data: Any) -> JobInfo:
    return cast(JobInfo, _parse("job", JobInfo.from_dict, data))


def _ref(reply: _Reply) -> JobRef:
    def build(data: Any) -> JobRef:
        return JobRef(
            int(data["id"]), JobState(data["status"]), str(data["poll_url"]), reply.status == 202
        )

    return cast(JobRef, _parse("job", build, reply.data))


def _page_of(build: Any, data: Any) -> Page[Any]:
    def page(d: Any) -> Page[Any]:
        cursor = d["next_cursor"]
        return Page([build(item) for item in d["items"]], None if cursor is None else str(cursor))

    return cast(Page[Any], _parse("page", page, data))


def _queue(data: Any) -> QueueInfo:
    return cast(QueueInfo, _parse("queue", QueueInfo.from_dict, data))


def _schedule(data: Any) -> ScheduleInfo:
    return cast(ScheduleInfo, _parse("schedule", ScheduleInfo.from_dict, data))


def _name(name: str, what: str) -> str:
    """A queue's, schedule's or fairness key's name as one path segment."""
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"{what} name must be a non-empty string, got {name!r}")
    return urllib.parse.quote(name, safe="")


def _queue_changes(**settings: Any) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if v is not NOT_GIVEN}


def _schedule_body(
    name: str,
    task: str,
    cron: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any] | None,
    **options: Any,
) -> dict[str, Any]:
    if isinstance(args, str | bytes):
        raise InvalidArgument("args must be a sequence of arguments, not a string")
    body: dict[str, Any] = {"name": name, "task": task, "cron": cron, "args": list(args)}
    if kwargs:
        body["kwargs"] = dict(kwargs)
    body.update({k: v for k, v in options.items() if v is not None})
    return body


def _seconds(value: float) -> str:
    return f"{max(0.0, value):.3f}"


class _Ops:
    """Every API operation, written once as a generator of `_Call`s."""

    @staticmethod
    def enqueue(body: dict[str, Any]) -> _Op[JobRef]:
        reply = yield _Call("POST", "/jobs", body=body)
        return _ref(reply)

    @staticmethod
    def enqueue_batch(jobs: Sequence[Mapping[str, Any]]) -> _Op[list[int]]:
        bodies = []
        for item in jobs:
            item = dict(item)
            try:
                task = item.pop("task")
            except KeyError:
                raise InvalidArgument("every job needs a 'task'") from None
            bodies.append(_job_body(task, **item))
        reply = yield _Call("POST", "/jobs/batch", body={"jobs": bodies})
        ids = _parse("ids", lambda d: [int(i) for i in d["ids"]], reply.data)
        return cast(list[int], ids)

    @staticmethod
    def get(job_id: int, wait_s: float | None = None) -> _Op[JobInfo]:
        query = None if wait_s is None else {"wait": _seconds(wait_s)}
        reply = yield _Call(
            "GET", f"/jobs/{_job_id(job_id)}", query=query, wait_s=max(0.0, wait_s or 0.0)
        )
        return _job(reply.data)

    @staticmethod
    def attempts(job_id: int) -> _Op[list[AttemptInfo]]:
        reply = yield _Call("GET", f"/jobs/{_job_id(job_id)}/attempts")
        items = _parse(
            "attempts", lambda d: [AttemptInfo.from_dict(a) for a in d["items"]], reply.data
        )
        return cast(list[AttemptInfo], items)

    @staticmethod
    def steps(job_id: int) -> _Op[list[StepInfo]]:
        reply = yield _Call("GET", f"/jobs/{_job_id(job_id)}/steps")
        items = _parse("steps", lambda d: [StepInfo.from_dict(a) for a in d["items"]], reply.data)
        return cast(list[StepInfo], items)

    @staticmethod
    def signal(key: str, payload: Any) -> _Op[tuple[int, int]]:
        try:
            body = {"payload": json.loads(codec.dumps(payload))}
        except TypeError as exc:
            raise InvalidArgument(f"payload must be JSON: {exc}") from None
        reply = yield _Call("POST", f"/signals/{_name(key, 'signal key')}", body=body)
        sent = _parse("signal", lambda d: (int(d["id"]), int(d["woken"])), reply.data)
        return cast(tuple[int, int], sent)

    @staticmethod
    def wait(job_id: int, timeout_s: float | None) -> _Op[JobInfo]:
        if timeout_s is not None and not timeout_s >= 0:
            raise InvalidArgument(f"timeout_s must be a number of seconds >= 0, got {timeout_s!r}")
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            left = MAX_WAIT_S if deadline is None else deadline - time.monotonic()
            job = yield from _Ops.get(job_id, min(MAX_WAIT_S, max(0.0, left)))
            if job.is_terminal or (deadline is not None and time.monotonic() >= deadline):
                return job

    @staticmethod
    def list_jobs(
        status: JobState | str | None,
        queue: str | None,
        task: str | None,
        limit: int | None,
        cursor: str | None,
        search: str | None = None,
    ) -> _Op[Page[JobInfo]]:
        status_text = None if status is None else JobState(status).value
        query = _page_query(
            limit, cursor, status=status_text, queue=queue, task=task, search=search
        )
        reply = yield _Call("GET", "/jobs", query=query)
        return cast(Page[JobInfo], _page_of(JobInfo.from_dict, reply.data))

    @staticmethod
    def cancel(job_id: int) -> _Op[JobInfo]:
        reply = yield _Call("POST", f"/jobs/{_job_id(job_id)}/cancel")
        return _job(reply.data)

    @staticmethod
    def dead_letters(
        limit: int | None, cursor: str | None, task: str | None, queue: str | None
    ) -> _Op[Page[DeadLetterInfo]]:
        query = _page_query(limit, cursor, task=task, queue=queue)
        reply = yield _Call("GET", "/dead-letters", query=query)
        return cast(Page[DeadLetterInfo], _page_of(DeadLetterInfo.from_dict, reply.data))

    @staticmethod
    def dead_letter(dead_letter_id: int) -> _Op[DeadLetterInfo]:
        reply = yield _Call("GET", f"/dead-letters/{_job_id(dead_letter_id, 'dead letter id')}")
        return cast(DeadLetterInfo, _parse("dead letter", DeadLetterInfo.from_dict, reply.data))

    @staticmethod
    def requeue_dead_letter(dead_letter_id: int) -> _Op[int]:
        path = f"/dead-letters/{_job_id(dead_letter_id, 'dead letter id')}/requeue"
        reply = yield _Call("POST", path)
        return _ref(reply).id

    @staticmethod
    def bulk_dead_letters(action: str, selection: Mapping[str, Any]) -> _Op[BulkInfo]:
        body = {
            k: (_timestamp(k, v) if k in ("failed_after", "failed_before") else v)
            for k, v in selection.items()
            if v is not None
        }
        reply = yield _Call("POST", f"/dead-letters/{action}", body=body)
        done = "job_ids" if action == "requeue" else "deleted"
        return cast(BulkInfo, _parse(action, lambda d: BulkInfo.from_dict(d, done), reply.data))

    @staticmethod
    def delete_dead_letter(dead_letter_id: int) -> _Op[None]:
        yield _Call("DELETE", f"/dead-letters/{_job_id(dead_letter_id, 'dead letter id')}")

    @staticmethod
    def delete_job(job_id: int) -> _Op[None]:
        yield _Call("DELETE", f"/jobs/{_job_id(job_id)}")

    # -- queues
    @staticmethod
    def queues() -> _Op[list[QueueInfo]]:
        reply = yield _Call("GET", "/queues")
        items = _parse("queues", lambda d: [QueueInfo.from_dict(q) for q in d["items"]], reply.data)
        return cast(list[QueueInfo], items)

    @staticmethod
    def queue(name: str) -> _Op[QueueInfo]:
        reply = yield _Call("GET", f"/queues/{_name(name, 'queue')}")
        return _queue(reply.data)

    @staticmethod
    def configure_queue(name: str, changes: dict[str, Any]) -> _Op[QueueInfo]:
        reply = yield _Call("PATCH", f"/queues/{_name(name, 'queue')}", body=changes)
        return _queue(reply.data)

    @staticmethod
    def pause_queue(name: str, pause: bool) -> _Op[QueueInfo]:
        action = "pause" if pause else "resume"
        reply = yield _Call("POST", f"/queues/{_name(name, 'queue')}/{action}")
        return _queue(reply.data)

    @staticmethod
    def key(queue: str, key: str) -> _Op[KeyInfo]:
        reply = yield _Call("GET", f"/queues/{_name(queue, 'queue')}/keys/{_name(key, 'key')}")
        return cast(KeyInfo, _parse("key", KeyInfo.from_dict, reply.data))

    @staticmethod
    def configure_key(queue: str, key: str, changes: dict[str, Any]) -> _Op[KeyInfo]:
        path = f"/queues/{_name(queue, 'queue')}/keys/{_name(key, 'key')}"
        reply = yield _Call("PATCH", path, body=changes)
        return cast(KeyInfo, _parse("key", KeyInfo.from_dict, reply.data))

    @staticmethod
    def purge_queue(name: str, limit: int | None, dry_run: bool) -> _Op[PurgeInfo]:
        body: dict[str, Any] = {"dry_run": dry_run}
        if limit is not None:
            body["limit"] = limit
        reply = yield _Call("POST", f"/queues/{_name(name, 'queue')}/purge", body=body)
        return cast(PurgeInfo, _parse("purge", PurgeInfo.from_dict, reply.data))

    # -- schedules
    @staticmethod
    def create_schedule(body: dict[str, Any]) -> _Op[ScheduleInfo]:
        reply = yield _Call("POST", "/schedules", body=body)
        return _schedule(reply.data)

    @staticmethod
    def schedules() -> _Op[list[ScheduleInfo]]:
        reply = yield _Call("GET", "/schedules")
        build = ScheduleInfo.from_dict
        items = _parse("schedules", lambda d: [build(x) for x in d["items"]], reply.data)
        return cast(list[ScheduleInfo], items)

    @staticmethod
    def schedule(name: str) -> _Op[ScheduleInfo]:
        reply = yield _Call("GET", f"/schedules/{_name(name, 'schedule')}")
        return _schedule(reply.data)

    @staticmethod
    def delete_schedule(name: str) -> _Op[None]:
        yield _Call("DELETE", f"/schedules/{_name(name, 'schedule')}")

    # -- workflows
    @staticmethod
    def enqueue_workflow(body: dict[str, Any]) -> _Op[WorkflowRef]:
        reply = yield _Call("POST", "/workflows", body=body)

        def build(d: Any) -> WorkflowRef:
            return WorkflowRef(int(d["id"]), [int(i) for i in d["jobs"]], str(d["poll_url"]))

        return cast(WorkflowRef, _parse("workflow", build, reply.data))

    @staticmethod
    def workflow(workflow_id: int) -> _Op[WorkflowInfo]:
        reply = yield _Call("GET", f"/workflows/{_job_id(workflow_id, 'workflow id')}")
        return cast(WorkflowInfo, _parse("workflow", WorkflowInfo.from_dict, reply.data))

    @staticmethod
    def wait_workflow(workflow_id: int, timeout_s: float | None) -> _Op[WorkflowInfo]:
        """Until every job ended: long-polls one unfinished job at a time (woken when it
        ends), then looks at the whole workflow again."""
        if timeout_s is not None and not timeout_s >= 0:
            raise InvalidArgument(f"timeout_s must be a number of seconds >= 0, got {timeout_s!r}")
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            flow = yield from _Ops.workflow(workflow_id)
            left = MAX_WAIT_S if deadline is None else deadline - time.monotonic()
            if flow.is_terminal or left <= 0:
                return flow
            unfinished = [j for j in flow.jobs if not j.is_terminal]
            if not unfinished:
                return flow
            # The running ones end first; a pending one may wait on others (then the poll
            # just runs out and the workflow is read again).
            unfinished.sort(key=lambda j: j.status != JobState.RUNNING)
            with contextlib.suppress(NotFoundError):  # deleted meanwhile: look again
                yield from _Ops.get(unfinished[0].id, min(MAX_WAIT_S, left))

    @staticmethod
    def probe(path: str) -> _Op[bool]:
        """True on 200; False when unreachable or on a 5xx. Other refusals (401, 404) raise:
        they mean a wrong token or URL, not an unhealthy server."""
        try:
            yield _Call("GET", path)
        except ConnectionFailed:
            return False
        except ApiError as exc:
            if exc.status >= 500:
                return False
            raise
        return True


def _dropped(sock: socket.socket) -> bool:
    """Whether the server has closed a kept-alive connection: an idle one has nothing to
    read, so a readable one holds its end (or stray bytes, as good as broken)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


DEFAULT_RETRIES = 3  # of a request answered 429 queue_full or 503, which wrote nothing
MAX_RETRY_WAIT_S = 30.0  # a longer Retry-After is raised, not waited for


def _retry_wait(exc: ClientError, retries_left: int, attempt: int) -> float | None:
    """Seconds to wait before sending the request again, or None to raise `exc`. Only answers
    that say nothing was done are tried again: a full queue (429 `queue_full`) and a server
    that cannot write now (503); their Retry-After is honoured."""
    if retries_left <= 0 or not isinstance(exc, QueueFull | Unavailable):
        return None
    wait = exc.retry_after_s if exc.retry_after_s is not None else min(0.25 * 2**attempt, 5.0)
    return wait if wait <= MAX_RETRY_WAIT_S else None


def _check_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidArgument(f"the server URL must be http://host[:port][/prefix], got {url!r}")
    return url.rstrip("/")


class _Base:
    def __init__(self, url: str, token: str | None, timeout_s: float, retries: int) -> None:
        if not timeout_s > 0:
            raise InvalidArgument(f"timeout_s must be positive, got {timeout_s!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise InvalidArgument(f"retries must be a whole number >= 0, got {retries!r}")
        self.url = _check_url(url)
        self.timeout_s = float(timeout_s)
        self.retries = retries
        self._headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

    def __repr__(self) -> str:  # never show the token
        return f"{type(self).__name__}({self.url!r})"

    def _url(self, call: _Call) -> str:
        url = self.url + call.path
        if call.query:
            url += "?" + urllib.parse.urlencode(call.query)
        return url

    def _encode(self, call: _Call) -> tuple[bytes | None, dict[str, str]]:
        headers = dict(self._headers)
        if call.body is None:
            return None, headers
        headers["Content-Type"] = "application/json"
        return json.dumps(call.body, separators=(",", ":"), allow_nan=False).encode(), headers

    @staticmethod
    def _reply(status: int, raw: bytes, retry_after: str | None) -> _Reply:
        if status >= 400:
            raise _api_error(status, raw, retry_after)
        if not raw:
            return _Reply(status, None)
        try:
            return _Reply(status, json.loads(raw))
        except ValueError:
            raise UnexpectedResponse(
                f"the answer (HTTP {status}) is not JSON: {raw[:200]!r}"
            ) from None


# -- the async client -----------------------------------------------------------------------------
class AsyncClient(_Base):
    """The API over aiohttp. Use `async with AsyncClient(url) as client:`, or call `close()`.

    `session`: an aiohttp session of your own to use (it is left open)."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        *,
        session: aiohttp.ClientSession | None = None,
        retries: int = DEFAULT_RETRIES,
    ) -> None:
        super().__init__(url, token, timeout_s, retries)
        self._session = session
        self._own_session = session is None

    async def __aenter__(self) -> AsyncClient:
        self._get_session()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def _send_retrying(self, call: _Call) -> _Reply:
        attempt = 0
        while True:
            try:
                return await self._send(call)
            except ClientError as exc:
                wait = _retry_wait(exc, self.retries - attempt, attempt)
                if wait is None:
                    raise
            await asyncio.sleep(wait)
            attempt += 1

    async def _send(self, call: _Call) -> _Reply:
        data, headers = self._encode(call)
        timeout = aiohttp.ClientTimeout(total=self.timeout_s + call.wait_s)
        url = self._url(call)
        try:
            async with self._get_session().request(
                call.method, url, data=data, headers=headers, timeout=timeout
            ) as resp:
                raw = await resp.read()
                return self._reply(resp.status, raw, resp.headers.get("Retry-After"))
        except TimeoutError:
            raise ConnectionFailed(self.url, f"no answer within {timeout.total:g} s") from None
        except aiohttp.ClientError as exc:
            raise ConnectionFailed(self.url, str(exc) or type(exc).__name__) from exc

    async def _run(self, op: _Op[T]) -> T:
        try:
            call = next(op)
            while True:
                try:
                    reply = await self._send_retrying(call)
                except ClientError as exc:
                    call = op.throw(exc)
                else:
                    call = op.send(reply)
        except StopIteration as stop:
            return cast(T, stop.value)
        finally:
            op.close()

    async def enqueue(
        self,
        task: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        queue: str | None = None,
        priority: int | None = None,
        delay_s: float | None = None,
        run_at: datetime | None = None,
        max_retries: int | None = None,
        timeout_s: float | None = None,
        backoff: Backoff | Mapping[str, float] | None = None,
        idempotency_key: str | None = None,
        deadline: datetime | None = None,
        deadline_s: float | None = None,
        unique_key: str | None = None,
        depends_on: Sequence[int] = (),
        pass_result: bool | None = None,
        on_dependency_failure: DependencyFailure | None = None,
        callback_url: str | None = None,
        traceparent: str | None = None,
        fairness_key: str | None = None,
    ) -> JobRef:
        """Enqueue one job; returns once the server has committed it. Options left None take
        the task's defaults (queue "default", priority 0).

        `deadline` (an aware datetime) or `deadline_s` (seconds from now): do not start it
        after then (it fails as `expired`). `unique_key`: while a pending or running job holds
        the key, that job is returned instead (`created` False). `depends_on`: ids of jobs that
        must succeed first; `pass_result` gives it their result(s) as its first argument;
        `on_dependency_failure` "fail" (default) or "cancel". `callback_url`: POSTed the job's
        record, signed, when it ends. `fairness_key`: the key (a tenant, a customer) whose fair
        share of the queue it runs in. `traceparent`: the W3C trace context its attempts, http
        calls and webhook carry on. A queue at its `max_depth` raises QueueFull."""
        body = _job_body(
            task,
            args,
            kwargs,
            queue=queue,
            priority=priority,
            delay_s=delay_s,
            run_at=run_at,
            max_retries=max_retries,
            timeout_s=timeout_s,
            backoff=backoff,
            idempotency_key=idempotency_key,
            deadline=deadline,
            deadline_s=deadline_s,
            unique_key=unique_key,
            depends_on=depends_on,
            pass_result=pass_result,
            on_dependency_failure=on_dependency_failure,
            callback_url=callback_url,
            traceparent=traceparent,
            fairness_key=fairness_key,
        )
        return await self._run(_Ops.enqueue(body))

    async def enqueue_batch(self, jobs: Sequence[Mapping[str, Any]]) -> list[int]:
        """Enqueue jobs in one transaction, all or none. Each item has `enqueue`'s parameters
        as keys: {"task": "echo", "args": [1], "priority": 5, ...}. Returns the ids in order."""
        return await self._run(_Ops.enqueue_batch(jobs))

    async def get(self, job_id: int, *, wait_s: float | None = None) -> JobInfo:
        """The job; with `wait_s` (at most 60), answered when it ends or `wait_s` has passed."""
        return await self._run(_Ops.get(job_id, wait_s))

    async def attempts(self, job_id: int) -> list[AttemptInfo]:
        """The job's attempts, first to last: start, end, node, outcome and error."""
        return await self._run(_Ops.attempts(job_id))

    async def steps(self, job_id: int) -> list[StepInfo]:
        """The job's durable steps, in order: name, kind, status, kept result, times."""
        return await self._run(_Ops.steps(job_id))

    async def signal(self, key: str, payload: Any = None) -> tuple[int, int]:
        """Send `payload` to the jobs waiting for `key` (ctx.wait_for_event), or keep it for
        the next one. Returns (the signal's id, how many waiting jobs woke)."""
        return await self._run(_Ops.signal(key, payload))

    async def wait(self, job_id: int, timeout_s: float | None = None) -> JobInfo:
        """The job once terminal, or as it stands after `timeout_s` (None: no limit)."""
        return await self._run(_Ops.wait(job_id, timeout_s))

    async def list_jobs(
        self,
        *,
        status: JobState | str | None = None,
        queue: str | None = None,
        task: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        search: str | None = None,
    ) -> Page[JobInfo]:
        """One page of jobs, newest first (limit 1-1000, default 50); `search`: a part of the
        task's or the queue's name, any case."""
        return await self._run(_Ops.list_jobs(status, queue, task, limit, cursor, search))

    async def iter_jobs(
        self,
        *,
        status: JobState | str | None = None,
        queue: str | None = None,
        task: str | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[JobInfo]:
        """Every matching job, newest first, fetched a page at a time."""
        cursor: str | None = None
        while True:
            page = await self.list_jobs(
                status=status, queue=queue, task=task, limit=page_size, cursor=cursor
            )
            for job in page.items:
                yield job
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def cancel(self, job_id: int) -> JobInfo:
        """Cancel a job: pending ends `cancelled` at once; running is asked to stop
        (`cancel_requested`); a job that succeeded or failed raises ConflictError."""
        return await self._run(_Ops.cancel(job_id))

    async def dead_letters(
        self,
        *,
        limit: int | None = None,
        cursor: str | None = None,
        task: str | None = None,
        queue: str | None = None,
    ) -> Page[DeadLetterInfo]:
        return await self._run(_Ops.dead_letters(limit, cursor, task, queue))

    async def iter_dead_letters(self, *, page_size: int = 100) -> AsyncIterator[DeadLetterInfo]:
        cursor: str | None = None
        while True:
            page = await self.dead_letters(limit=page_size, cursor=cursor)
            for dl in page.items:
                yield dl
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def dead_letter(self, dead_letter_id: int) -> DeadLetterInfo:
        return await self._run(_Ops.dead_letter(dead_letter_id))

    async def requeue_dead_letter(self, dead_letter_id: int) -> int:
        """Enqueue the dead letter again as a new job (fresh attempts); returns its id."""
        return await self._run(_Ops.requeue_dead_letter(dead_letter_id))

    async def delete_dead_letter(self, dead_letter_id: int) -> None:
        await self._run(_Ops.delete_dead_letter(dead_letter_id))

    async def requeue_dead_letters(self, **selection: Any) -> BulkInfo:
        """Enqueue again the dead letters that match, in one transaction. Selection: task,
        queue, error_type, failed_after, failed_before (aware datetimes or RFC 3339), limit
        (default 1000), dry_run (change nothing; say which)."""
        return await self._run(_Ops.bulk_dead_letters("requeue", selection))

    async def delete_dead_letters(self, **selection: Any) -> BulkInfo:
        """Delete the dead letters that match; the selection as requeue_dead_letters'."""
        return await self._run(_Ops.bulk_dead_letters("delete", selection))

    async def delete_job(self, job_id: int) -> None:
        """Delete a finished job (ConflictError while it is pending or running)."""
        await self._run(_Ops.delete_job(job_id))

    async def queues(self) -> list[QueueInfo]:
        """Every queue that has jobs or settings, by name."""
        return await self._run(_Ops.queues())

    async def queue(self, name: str) -> QueueInfo:
        return await self._run(_Ops.queue(name))

    async def configure_queue(
        self,
        name: str,
        *,
        paused: bool | _NotGiven = NOT_GIVEN,
        concurrency_limit: int | _NotGiven | None = NOT_GIVEN,
        rate_limit: float | _NotGiven | None = NOT_GIVEN,
        rate_burst: float | _NotGiven | None = NOT_GIVEN,
        max_depth: int | _NotGiven | None = NOT_GIVEN,
        key_concurrency_limit: int | _NotGiven | None = NOT_GIVEN,
        key_rate_limit: float | _NotGiven | None = NOT_GIVEN,
        key_rate_burst: float | _NotGiven | None = NOT_GIVEN,
    ) -> QueueInfo:
        """Change the settings given (None lifts a limit); the others stay as they are.
        `key_*` are each fairness key's limits, unless a key sets its own (configure_key)."""
        changes = _queue_changes(
            paused=paused,
            concurrency_limit=concurrency_limit,
            rate_limit=rate_limit,
            rate_burst=rate_burst,
            max_depth=max_depth,
            key_concurrency_limit=key_concurrency_limit,
            key_rate_limit=key_rate_limit,
            key_rate_burst=key_rate_burst,
        )
        return await self._run(_Ops.configure_queue(name, changes))

    async def key(self, queue: str, key: str) -> KeyInfo:
        """A fairness key of a queue: its own settings, what holds for it, its running jobs."""
        return await self._run(_Ops.key(queue, key))

    async def configure_key(
        self,
        queue: str,
        key: str,
        *,
        weight: float | _NotGiven | None = NOT_GIVEN,
        concurrency_limit: int | _NotGiven | None = NOT_GIVEN,
        rate_limit: float | _NotGiven | None = NOT_GIVEN,
        rate_burst: float | _NotGiven | None = NOT_GIVEN,
    ) -> KeyInfo:
        """Set a fairness key's own weight or limits (None: back to the queue's default)."""
        changes = _queue_changes(
            weight=weight,
            concurrency_limit=concurrency_limit,
            rate_limit=rate_limit,
            rate_burst=rate_burst,
        )
        return await self._run(_Ops.configure_key(queue, key, changes))

    async def pause_queue(self, name: str) -> QueueInfo:
        """Stop starting the queue's jobs (running ones go on; enqueueing still works)."""
        return await self._run(_Ops.pause_queue(name, True))

    async def resume_queue(self, name: str) -> QueueInfo:
        return await self._run(_Ops.pause_queue(name, False))

    async def purge_queue(
        self, name: str, *, limit: int | None = None, dry_run: bool = False
    ) -> PurgeInfo:
        """Cancel the queue's pending jobs, oldest first, up to `limit` (default 10,000), in
        one transaction; `dry_run` only counts them."""
        return await self._run(_Ops.purge_queue(name, limit, dry_run))

    async def create_schedule(
        self,
        name: str,
        task: str,
        cron: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        queue: str | None = None,
        priority: int | None = None,
        timezone: str | None = None,
        missed: Literal["skip", "catch_up"] | None = None,
        paused: bool | None = None,
    ) -> ScheduleInfo:
        """Create (or replace) a cron schedule: one job of `task` per tick of `cron` in
        `timezone` (default UTC). `missed`: "skip" (default) or "catch_up"."""
        body = _schedule_body(
            name,
            task,
            cron,
            args,
            kwargs,
            queue=queue,
            priority=priority,
            timezone=timezone,
            missed=missed,
            paused=paused,
        )
        return await self._run(_Ops.create_schedule(body))

    async def schedules(self) -> list[ScheduleInfo]:
        return await self._run(_Ops.schedules())

    async def schedule(self, name: str) -> ScheduleInfo:
        return await self._run(_Ops.schedule(name))

    async def delete_schedule(self, name: str) -> None:
        await self._run(_Ops.delete_schedule(name))

    async def enqueue_workflow(
        self,
        spec: Mapping[str, Any],
        *,
        on_dependency_failure: DependencyFailure | None = None,
    ) -> WorkflowRef:
        """Enqueue a chain, group or chord (built with jobserver.workflows' `chain`, `group`,
        `chord` and `job`) in one transaction; returns its id and its jobs' ids."""
        body = _workflow_body(spec, on_dependency_failure)
        return await self._run(_Ops.enqueue_workflow(body))

    async def workflow(self, workflow_id: int) -> WorkflowInfo:
        return await self._run(_Ops.workflow(workflow_id))

    async def wait_workflow(self, workflow_id: int, timeout_s: float | None = None) -> WorkflowInfo:
        """The workflow once every job ended, or as it stands after `timeout_s`."""
        return await self._run(_Ops.wait_workflow(workflow_id, timeout_s))

    async def health(self) -> bool:
        """GET /healthz: True if the process answers; False if unreachable."""
        return await self._run(_Ops.probe("/healthz"))

    async def ready(self) -> bool:
        """GET /readyz: True if the database takes writes; False on 503 or unreachable."""
        return await self._run(_Ops.probe("/readyz"))


# -- the sync client ------------------------------------------------------------------------------
class Client(_Base):
    """The API over http.client, blocking; the same methods as `AsyncClient`. Connections are
    kept alive and reused, one a thread; `close()` (or `with Client(...)`) closes them.

    Proxy variables (http_proxy, ...) are ignored, as aiohttp does by default."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        *,
        retries: int = DEFAULT_RETRIES,
    ) -> None:
        super().__init__(url, token, timeout_s, retries)
        parts = urllib.parse.urlsplit(self.url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._prefix = parts.path
        self._local = threading.local()  # this thread's connection
        self._connections: set[http.client.HTTPConnection] = set()
        self._lock = threading.Lock()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # A client dropped without close() closes its connections (no ResourceWarning).
        with contextlib.suppress(Exception):
            self.close()

    def close(self) -> None:
        """Close the kept-alive connections (a later call opens a new one)."""
        with self._lock:
            connections, self._connections = self._connections, set()
        for conn in connections:
            conn.close()

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's connection, and whether it has served a request before. One the
        server has closed meanwhile (idle too long) is dropped here, before a request is sent
        on it, so that a request is not lost to that race."""
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is not None and conn.sock is not None and not _dropped(conn.sock):
            return conn, True
        if conn is not None:
            self._forget(conn)
        kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = kind(self._host, self._port, timeout=self.timeout_s)
        self._local.conn = conn
        with self._lock:
            self._connections.add(conn)
        return conn, False

    def _forget(self, conn: http.client.HTTPConnection) -> None:
        conn.close()
        with self._lock:
            self._connections.discard(conn)
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None

    def _send(self, call: _Call) -> _Reply:
        data, headers = self._encode(call)
        path = self._prefix + call.path
        if call.query:
            path += "?" + urllib.parse.urlencode(call.query)
        timeout = self.timeout_s + call.wait_s
        for _ in range(2):
            conn, reused = self._connection()
            conn.timeout = timeout
            if conn.sock is not None:
                conn.sock.settimeout(timeout)
            sent = False
            try:
                conn.request(call.method, path, body=data, headers=headers)
                sent = True
                resp = conn.getresponse()
                raw = resp.read()
            except TimeoutError:
                self._forget(conn)
                raise ConnectionFailed(self.url, f"no answer within {timeout:g} s") from None
            except (OSError, http.client.HTTPException) as exc:
                self._forget(conn)
                # A kept-alive connection that failed before the request was sent (or, for a
                # request that is safe to repeat, before any answer) is tried once on a new one.
                if reused and (not sent or call.method in ("GET", "HEAD", "DELETE")):
                    continue
                raise ConnectionFailed(self.url, str(exc) or type(exc).__name__) from exc
            if resp.will_close:
                self._forget(conn)
            return self._reply(resp.status, raw, resp.getheader("Retry-After"))
        raise AssertionError("unreachable")  # the second try raises or returns

    def _run(self, op: _Op[T]) -> T:
        try:
            call = next(op)
            while True:
                try:
                    reply = self._send_retrying(call)
                except ClientError as exc:
                    call = op.throw(exc)
                else:
                    call = op.send(reply)
        except StopIteration as stop:
            return cast(T, stop.value)
        finally:
            op.close()

    def _send_retrying(self, call: _Call) -> _Reply:
        attempt = 0
        while True:
            try:
                return self._send(call)
            except ClientError as exc:
                wait = _retry_wait(exc, self.retries - attempt, attempt)
                if wait is None:
                    raise
            time.sleep(wait)
            attempt += 1

    def enqueue(
        self,
        task: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        queue: str | None = None,
        priority: int | None = None,
        delay_s: float | None = None,
        run_at: datetime | None = None,
        max_retries: int | None = None,
        timeout_s: float | None = None,
        backoff: Backoff | Mapping[str, float] | None = None,
        idempotency_key: str | None = None,
        deadline: datetime | None = None,
        deadline_s: float | None = None,
        unique_key: str | None = None,
        depends_on: Sequence[int] = (),
        pass_result: bool | None = None,
        on_dependency_failure: DependencyFailure | None = None,
        callback_url: str | None = None,
        traceparent: str | None = None,
        fairness_key: str | None = None,
    ) -> JobRef:
        """See `AsyncClient.enqueue`."""
        body = _job_body(
            task,
            args,
            kwargs,
            queue=queue,
            priority=priority,
            delay_s=delay_s,
            run_at=run_at,
            max_retries=max_retries,
            timeout_s=timeout_s,
            backoff=backoff,
            idempotency_key=idempotency_key,
            deadline=deadline,
            deadline_s=deadline_s,
            unique_key=unique_key,
            depends_on=depends_on,
            pass_result=pass_result,
            on_dependency_failure=on_dependency_failure,
            callback_url=callback_url,
            traceparent=traceparent,
            fairness_key=fairness_key,
        )
        return self._run(_Ops.enqueue(body))

    def enqueue_batch(self, jobs: Sequence[Mapping[str, Any]]) -> list[int]:
        return self._run(_Ops.enqueue_batch(jobs))

    def get(self, job_id: int, *, wait_s: float | None = None) -> JobInfo:
        return self._run(_Ops.get(job_id, wait_s))

    def attempts(self, job_id: int) -> list[AttemptInfo]:
        return self._run(_Ops.attempts(job_id))

    def steps(self, job_id: int) -> list[StepInfo]:
        """See `AsyncClient.steps`."""
        return self._run(_Ops.steps(job_id))

    def signal(self, key: str, payload: Any = None) -> tuple[int, int]:
        """See `AsyncClient.signal`."""
        return self._run(_Ops.signal(key, payload))

    def wait(self, job_id: int, timeout_s: float | None = None) -> JobInfo:
        return self._run(_Ops.wait(job_id, timeout_s))

    def list_jobs(
        self,
        *,
        status: JobState | str | None = None,
        queue: str | None = None,
        task: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        search: str | None = None,
    ) -> Page[JobInfo]:
        return self._run(_Ops.list_jobs(status, queue, task, limit, cursor, search))

    def iter_jobs(
        self,
        *,
        status: JobState | str | None = None,
        queue: str | None = None,
        task: str | None = None,
        page_size: int = 100,
    ) -> Iterator[JobInfo]:
        cursor: str | None = None
        while True:
            page = self.list_jobs(
                status=status, queue=queue, task=task, limit=page_size, cursor=cursor
            )
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def cancel(self, job_id: int) -> JobInfo:
        return self._run(_Ops.cancel(job_id))

    def dead_letters(
        self,
        *,
        limit: int | None = None,
        cursor: str | None = None,
        task: str | None = None,
        queue: str | None = None,
    ) -> Page[DeadLetterInfo]:
        return self._run(_Ops.dead_letters(limit, cursor, task, queue))

    def iter_dead_letters(self, *, page_size: int = 100) -> Iterator[DeadLetterInfo]:
        cursor: str | None = None
        while True:
            page = self.dead_letters(limit=page_size, cursor=cursor)
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def dead_letter(self, dead_letter_id: int) -> DeadLetterInfo:
        return self._run(_Ops.dead_letter(dead_letter_id))

    def requeue_dead_letter(self, dead_letter_id: int) -> int:
        return self._run(_Ops.requeue_dead_letter(dead_letter_id))

    def delete_dead_letter(self, dead_letter_id: int) -> None:
        self._run(_Ops.delete_dead_letter(dead_letter_id))

    def requeue_dead_letters(self, **selection: Any) -> BulkInfo:
        """See `AsyncClient.requeue_dead_letters`."""
        return self._run(_Ops.bulk_dead_letters("requeue", selection))

    def delete_dead_letters(self, **selection: Any) -> BulkInfo:
        """See `AsyncClient.delete_dead_letters`."""
        return self._run(_Ops.bulk_dead_letters("delete", selection))

    def delete_job(self, job_id: int) -> None:
        self._run(_Ops.delete_job(job_id))

    def queues(self) -> list[QueueInfo]:
        return self._run(_Ops.queues())

    def queue(self, name: str) -> QueueInfo:
        return self._run(_Ops.queue(name))

    def configure_queue(
        self,
        name: str,
        *,
        paused: bool | _NotGiven = NOT_GIVEN,
        concurrency_limit: int | _NotGiven | None = NOT_GIVEN,
        rate_limit: float | _NotGiven | None = NOT_GIVEN,
        rate_burst: float | _NotGiven | None = NOT_GIVEN,
        max_depth: int | _NotGiven | None = NOT_GIVEN,
        key_concurrency_limit: int | _NotGiven | None = NOT_GIVEN,
        key_rate_limit: float | _NotGiven | None = NOT_GIVEN,
        key_rate_burst: float | _NotGiven | None = NOT_GIVEN,
    ) -> QueueInfo:
        """See `AsyncClient.configure_queue`."""
        changes = _queue_changes(
            paused=paused,
            concurrency_limit=concurrency_limit,
            rate_limit=rate_limit,
            rate_burst=rate_burst,
            max_depth=max_depth,
            key_concurrency_limit=key_concurrency_limit,
            key_rate_limit=key_rate_limit,
            key_rate_burst=key_rate_burst,
        )
        return self._run(_Ops.configure_queue(name, changes))

    def key(self, queue: str, key: str) -> KeyInfo:
        """See `AsyncClient.key`."""
        return self._run(_Ops.key(queue, key))

    def configure_key(
        self,
        queue: str,
        key: str,
        *,
        weight: float | _NotGiven | None = NOT_GIVEN,
        concurrency_limit: int | _NotGiven | None = NOT_GIVEN,
        rate_limit: float | _NotGiven | None = NOT_GIVEN,
        rate_burst: float | _NotGiven | None = NOT_GIVEN,
    ) -> KeyInfo:
        """See `AsyncClient.configure_key`."""
        changes = _queue_changes(
            weight=weight,
            concurrency_limit=concurrency_limit,
            rate_limit=rate_limit,
            rate_burst=rate_burst,
        )
        return self._run(_Ops.configure_key(queue, key, changes))

    def pause_queue(self, name: str) -> QueueInfo:
        return self._run(_Ops.pause_queue(name, True))

    def resume_queue(self, name: str) -> QueueInfo:
        return self._run(_Ops.pause_queue(name, False))

    def purge_queue(
        self, name: str, *, limit: int | None = None, dry_run: bool = False
    ) -> PurgeInfo:
        """See `AsyncClient.purge_queue`."""
        return self._run(_Ops.purge_queue(name, limit, dry_run))

    def create_schedule(
        self,
        name: str,
        task: str,
        cron: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        queue: str | None = None,
        priority: int | None = None,
        timezone: str | None = None,
        missed: Literal["skip", "catch_up"] | None = None,
        paused: bool | None = None,
    ) -> ScheduleInfo:
        """See `AsyncClient.create_schedule`."""
        body = _schedule_body(
            name,
            task,
            cron,
            args,
            kwargs,
            queue=queue,
            priority=priority,
            timezone=timezone,
            missed=missed,
            paused=paused,
        )
        return self._run(_Ops.create_schedule(body))

    def schedules(self) -> list[ScheduleInfo]:
        return self._run(_Ops.schedules())

    def schedule(self, name: str) -> ScheduleInfo:
        return self._run(_Ops.schedule(name))

    def delete_schedule(self, name: str) -> None:
        self._run(_Ops.delete_schedule(name))

    def enqueue_workflow(
        self,
        spec: Mapping[str, Any],
        *,
        on_dependency_failure: DependencyFailure | None = None,
    ) -> WorkflowRef:
        """See `AsyncClient.enqueue_workflow`."""
        return self._run(_Ops.enqueue_workflow(_workflow_body(spec, on_dependency_failure)))

    def workflow(self, workflow_id: int) -> WorkflowInfo:
        return self._run(_Ops.workflow(workflow_id))

    def wait_workflow(self, workflow_id: int, timeout_s: float | None = None) -> WorkflowInfo:
        return self._run(_Ops.wait_workflow(workflow_id, timeout_s))

    def health(self) -> bool:
        return self._run(_Ops.probe("/healthz"))

    def ready(self) -> bool:
        return self._run(_Ops.probe("/readyz"))
