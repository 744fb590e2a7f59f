"""Jobs, dead letters and attempts as clients see them: JSON-ready dicts, RFC 3339 times. Used
by the HTTP API, webhooks and the event stream, so all three show a job the same way. Each
record's fields are declared once (JOB_RECORD...), with the JSON Schema that openapi.py
publishes for them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from .fairness import BUSIEST_KEYS, KeyOverride, KeyState
from .models import (
    ATTEMPT_OUTCOMES,
    MISSED_TICK_POLICIES,
    Attempt,
    DeadLetter,
    Job,
    QueueInfo,
    QueueSettings,
    Schedule,
    Step,
)

MIN_TS = datetime(1, 1, 1, tzinfo=UTC).timestamp()
MAX_TS = datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC).timestamp()


def rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    ts = min(max(ts, MIN_TS), MAX_TS)  # a datetime holds years 1 to 9999 only
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def public_error(error: dict[str, Any] | None) -> dict[str, Any] | None:
    """A job's error as clients see it: type and message; tracebacks stay in the log."""
    if error is None:
        return None
    return {"type": error.get("type"), "message": error.get("message")}


# -- records: each field declared once, with its JSON Schema (the OpenAPI document's) -------------
COMPONENTS = "#/components/schemas/"
TIMESTAMP = {"type": "string", "format": "date-time"}
T = TypeVar("T")


def _null(schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    return {**schema, "type": [schema["type"], "null"]}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": COMPONENTS + name}


@dataclass(frozen=True, slots=True)
class Field(Generic[T]):
    """One field of a record as clients see it: its name, its JSON Schema (refs name the
    OpenAPI document's components) and how it is read from the model."""

    name: str
    schema: dict[str, Any]
    read: Callable[[T], Any]


def _progress(job: Job) -> dict[str, Any] | None:
    if job.progress is None:
        return None
    return {"fraction": job.progress, "message": job.progress_message}


PROGRESS_SCHEMA = {
    "type": "object",
    "required": ["fraction", "message"],
    "additionalProperties": False,
    "properties": {
        "fraction": {"type": "number", "minimum": 0, "maximum": 1},
        "message": {"type": ["string", "null"]},
    },
}
ID = {"type": "integer", "minimum": 1}
COUNT = {"type": "integer", "minimum": 0}

JOB_RECORD: tuple[Field[Job], ...] = (
    Field("id", ID, lambda j: j.id),
    Field("task", {"type": "string"}, lambda j: j.task),
    Field("queue", {"type": "string"}, lambda j: j.queue),
    Field("status", _ref("JobStatus"), lambda j: j.status.value),
    Field("priority", {"type": "integer"}, lambda j: j.priority),
    Field("args", {"type": "array"}, lambda j: j.args),
    Field("kwargs", {"type": "object"}, lambda j: j.kwargs),
    Field("attempts", COUNT, lambda j: j.attempts),
    Field("max_retries", COUNT, lambda j: j.max_retries),
    Field(
        "timeout",
        {
            "type": ["number", "null"],
            "description": "The timeout that applies: the job's, else its task's.",
        },
        lambda j: j.timeout_s,
    ),
    Field("created_at", TIMESTAMP, lambda j: rfc3339(j.created_at)),
    Field("run_at", TIMESTAMP, lambda j: rfc3339(j.run_at)),
    Field("started_at", _null(TIMESTAMP), lambda j: rfc3339(j.started_at)),
    Field("completed_at", _null(TIMESTAMP), lambda j: rfc3339(j.completed_at)),
    Field(
        "result",
        {"description": "The task's return value (any JSON), once it succeeded."},
        lambda j: j.result,
    ),
    Field("error", _null(_ref("JobError")), lambda j: public_error(j.error)),
    Field("progress", {"anyOf": [PROGRESS_SCHEMA, {"type": "null"}]}, _progress),
    Field("cancel_requested", {"type": "boolean"}, lambda j: j.cancel_requested),
    Field("is_terminal", {"type": "boolean"}, lambda j: j.is_terminal),
    Field("deadline", _null(TIMESTAMP), lambda j: rfc3339(j.deadline)),
    Field("unique_key", {"type": ["string", "null"]}, lambda j: j.unique_key),
    Field("depends_on", {"type": "array", "items": {"type": "integer"}}, lambda j: j.depends_on),
    Field("workflow_id", {"type": ["integer", "null"]}, lambda j: j.workflow_id),
    Field("callback_url", {"type": ["string", "null"]}, lambda j: j.callback_url),
    Field(
        "traceparent",
        {"type": ["string", "null"], "description": "The W3C trace context given at enqueue."},
        lambda j: j.traceparent,
    ),
    Field(
        "fairness_key",
        {"type": ["string", "null"], "description": "The key whose fair share it runs in."},
        lambda j: j.fairness_key,
    ),
)

DEAD_LETTER_RECORD: tuple[Field[DeadLetter], ...] = (
    Field("id", ID, lambda d: d.id),
    Field("job_id", ID, lambda d: d.job_id),
    Field("task", {"type": "string"}, lambda d: d.task),
    Field("queue", {"type": "string"}, lambda d: d.queue),
    Field("args", {"type": "array"}, lambda d: d.args),
    Field("kwargs", {"type": "object"}, lambda d: d.kwargs),
    Field("error", _null(_ref("JobError")), lambda d: public_error(d.error)),
    Field("attempts", COUNT, lambda d: d.attempts),
    Field("failed_at", TIMESTAMP, lambda d: rfc3339(d.failed_at)),
)


def _attempt_error(attempt: Attempt) -> dict[str, Any] | None:
    # The task's own traceback, asked for by a client that may read the job (the job's
    # `error` shows type and message only).
    error = attempt.error
    if error is None:
        return None
    return {**(public_error(error) or {}), "traceback": error.get("traceback")}


ATTEMPT_ERROR_SCHEMA = {
    "type": "object",
    "required": ["type", "message", "traceback"],
    "additionalProperties": False,
    "properties": {
        "type": {"type": ["string", "null"]},
        "message": {"type": ["string", "null"]},
        "traceback": {"type": ["string", "null"], "description": "The task's own, when it raised."},
    },
}

ATTEMPT_RECORD: tuple[Field[Attempt], ...] = (
    Field("attempt", ID, lambda a: a.attempt),
    Field("outcome", {"type": "string", "enum": list(ATTEMPT_OUTCOMES)}, lambda a: a.outcome),
    Field("started_at", _null(TIMESTAMP), lambda a: rfc3339(a.started_at)),
    Field("ended_at", _null(TIMESTAMP), lambda a: rfc3339(a.ended_at)),
    Field(
        "node",
        {"type": ["string", "null"], "description": "host:pid that ran it"},
        lambda a: a.node,
    ),
    Field("error", {"anyOf": [ATTEMPT_ERROR_SCHEMA, {"type": "null"}]}, _attempt_error),
)


def job_to_dict(job: Job) -> dict[str, Any]:
    return {f.name: f.read(job) for f in JOB_RECORD}


def dead_letter_to_dict(dl: DeadLetter) -> dict[str, Any]:
    return {f.name: f.read(dl) for f in DEAD_LETTER_RECORD}


def attempt_to_dict(attempt: Attempt) -> dict[str, Any]:
    """One attempt of a job's history."""
    return {f.name: f.read(attempt) for f in ATTEMPT_RECORD}


STEP_RECORD: tuple[Field[Step], ...] = (
    Field("seq", {"type": "integer", "minimum": 0}, lambda s: s.seq),
    Field("name", {"type": "string"}, lambda s: s.name),
    Field(
        "kind",
        {
            "type": "string",
            "enum": ["run", "sleep", "wait", "child"],
            "description": "ctx.step, a durable sleep, a wait for a signal, or a child job"
            " (ctx.run_child)",
        },
        lambda s: s.kind,
    ),
    Field(
        "status",
        {
            "type": "string",
            "enum": ["done", "waiting", "failed"],
            "description": "waiting: a wait whose signal (or child job) has not come; failed:"
            " a child job that ended without success",
        },
        lambda s: s.status,
    ),
    Field(
        "result",
        {
            "description": "The step's kept value: what ctx.step returned, a sleep's end (epoch"
            " seconds), a wait's payload (null when it timed out; {deadline} while waiting)."
        },
        lambda s: s.result,
    ),
    Field("attempt", ID, lambda s: s.attempt),
    Field("started_at", TIMESTAMP, lambda s: rfc3339(s.started_at)),
    Field("ended_at", _null(TIMESTAMP), lambda s: rfc3339(s.ended_at)),
)


def step_to_dict(step: Step) -> dict[str, Any]:
    return {f.name: f.read(step) for f in STEP_RECORD}


def _record_schema(fields: tuple[Field[Any], ...]) -> dict[str, Any]:
    """An object with exactly these fields, each always there."""
    return {
        "type": "object",
        "required": [f.name for f in fields],
        "additionalProperties": False,
        "properties": {f.name: f.schema for f in fields},
    }


SCHEDULE_RECORD: tuple[Field[Schedule], ...] = (
    Field("name", {"type": "string"}, lambda s: s.name),
    Field("task", {"type": "string"}, lambda s: s.task),
    Field("cron", {"type": "string"}, lambda s: s.cron),
    Field("timezone", {"type": "string"}, lambda s: s.timezone),
    Field("args", {"type": "array"}, lambda s: s.args),
    Field("kwargs", {"type": "object"}, lambda s: s.kwargs),
    Field("queue", {"type": "string"}, lambda s: s.queue),
    Field("priority", {"type": "integer"}, lambda s: s.priority),
    Field("missed", {"type": "string", "enum": list(MISSED_TICK_POLICIES)}, lambda s: s.missed),
    Field("paused", {"type": "boolean"}, lambda s: s.paused),
    Field("next_run_at", TIMESTAMP, lambda s: rfc3339(s.next_tick_at)),
    Field("last_run_at", _null(TIMESTAMP), lambda s: rfc3339(s.last_tick_at)),
    Field("source", {"type": "string", "enum": ["api", "task"]}, lambda s: s.source),
)

QUEUE_LIMITS: tuple[Field[QueueSettings], ...] = (
    Field("concurrency_limit", {"type": ["integer", "null"]}, lambda q: q.concurrency_limit),
    Field("rate_limit", {"type": ["number", "null"]}, lambda q: q.rate_limit),
    Field("rate_burst", {"type": ["number", "null"]}, lambda q: q.rate_burst),
    Field("max_depth", {"type": ["integer", "null"]}, lambda q: q.max_depth),
    Field(
        "key_concurrency_limit",
        {"type": ["integer", "null"], "description": "Each fairness key's running jobs."},
        lambda q: q.key_concurrency_limit,
    ),
    Field(
        "key_rate_limit",
        {"type": ["number", "null"], "description": "Each fairness key's starts a second."},
        lambda q: q.key_rate_limit,
    ),
    Field("key_rate_burst", {"type": ["number", "null"]}, lambda q: q.key_rate_burst),
)

BUSY_KEY = {
    "type": "object",
    "additionalProperties": False,
    "required": ["key", "pending", "running"],
    "properties": {
        "key": {"type": "string"},
        "pending": {"type": "integer", "minimum": 0},
        "running": {"type": "integer", "minimum": 0},
    },
}

QUEUE_RECORD: tuple[Field[QueueInfo], ...] = (
    Field("name", {"type": "string"}, lambda q: q.name),
    Field("paused", {"type": "boolean"}, lambda q: q.settings.paused),
    Field(
        "counts",
        {
            "type": "object",
            "additionalProperties": {"type": "integer", "minimum": 0},
            "description": "Jobs by state.",
        },
        lambda q: q.counts,
    ),
    Field("oldest_due_age_s", {"type": ["number", "null"]}, lambda q: q.oldest_due_age_s),
    Field(
        "limits",
        _record_schema(QUEUE_LIMITS),
        lambda q: {f.name: f.read(q.settings) for f in QUEUE_LIMITS},
    ),
    Field("rate_tokens", {"type": ["number", "null"]}, lambda q: q.rate_tokens),
    Field(
        "busiest_keys",
        {
            "type": "array",
            "items": BUSY_KEY,
            "maxItems": BUSIEST_KEYS,
            "description": "The fairness keys with the most jobs pending or running, most"
            f" first: at most {BUSIEST_KEYS}, however many keys the queue has.",
        },
        lambda q: q.busiest_keys,
    ),
)

KEY_OWN: tuple[Field[KeyOverride], ...] = (
    Field("weight", {"type": ["number", "null"]}, lambda o: o.weight),
    Field("concurrency_limit", {"type": ["integer", "null"]}, lambda o: o.concurrency_limit),
    Field("rate_limit", {"type": ["number", "null"]}, lambda o: o.rate_limit),
    Field("rate_burst", {"type": ["number", "null"]}, lambda o: o.rate_burst),
)
KEY_RECORD: tuple[Field[KeyState], ...] = (
    Field("queue", {"type": "string"}, lambda k: k.queue),
    Field("key", {"type": "string"}, lambda k: k.key),
    Field(
        "own",
        {**_record_schema(KEY_OWN), "description": "The key's own settings (null: the queue's)."},
        lambda k: {f.name: f.read(k.override) for f in KEY_OWN},
    ),
    Field(
        "effective",
        {
            **_record_schema(KEY_OWN),
            "description": "What holds for the key: its own settings, else its queue's key_*.",
        },
        lambda k: {
            "weight": k.policy.weight,
            "concurrency_limit": k.policy.concurrency_limit,
            "rate_limit": k.policy.rate_limit,
            "rate_burst": k.policy.rate_burst,
        },
    ),
    Field("running", {"type": "integer", "minimum": 0}, lambda k: k.running),
    Field("rate_tokens", {"type": ["number", "null"]}, lambda k: k.rate_tokens),
)


def schedule_to_dict(schedule: Schedule) -> dict[str, Any]:
    return {f.name: f.read(schedule) for f in SCHEDULE_RECORD}


def queue_to_dict(info: QueueInfo) -> dict[str, Any]:
    return {f.name: f.read(info) for f in QUEUE_RECORD}


def key_to_dict(state: KeyState) -> dict[str, Any]:
    return {f.name: f.read(state) for f in KEY_RECORD}
