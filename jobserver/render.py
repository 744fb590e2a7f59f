"""Jobs and dead letters as clients see them: JSON-ready dicts, RFC 3339 times. Used by the
HTTP API, webhooks and the event stream, so all three show a job the same way."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .models import Attempt, DeadLetter, Job

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


def job_to_dict(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "task": job.task,
        "queue": job.queue,
        "status": job.status.value,
        "priority": job.priority,
        "args": job.args,
        "kwargs": job.kwargs,
        "attempts": job.attempts,
        "max_retries": job.max_retries,
        "timeout": job.timeout_s,
        "created_at": rfc3339(job.created_at),
        "run_at": rfc3339(job.run_at),
        "started_at": rfc3339(job.started_at),
        "completed_at": rfc3339(job.completed_at),
        "result": job.result,
        "error": public_error(job.error),
        "progress": None
        if job.progress is None
        else {"fraction": job.progress, "message": job.progress_message},
        "cancel_requested": job.cancel_requested,
        "is_terminal": job.is_terminal,
        "deadline": rfc3339(job.deadline),
        "unique_key": job.unique_key,
        "depends_on": job.depends_on,
        "workflow_id": job.workflow_id,
        "callback_url": job.callback_url,
    }


def dead_letter_to_dict(dl: DeadLetter) -> dict[str, Any]:
    return {
        "id": dl.id,
        "job_id": dl.job_id,
        "task": dl.task,
        "queue": dl.queue,
        "args": dl.args,
        "kwargs": dl.kwargs,
        "error": public_error(dl.error),
        "attempts": dl.attempts,
        "failed_at": rfc3339(dl.failed_at),
    }


def attempt_to_dict(attempt: Attempt) -> dict[str, Any]:
    """One attempt of a job's history. Its error keeps the traceback: the task's own, asked
    for by a client that may read the job (the job's `error` shows type and message only)."""
    error = attempt.error
    return {
        "attempt": attempt.attempt,
        "outcome": attempt.outcome,
        "started_at": rfc3339(attempt.started_at),
        "ended_at": rfc3339(attempt.ended_at),
        "node": attempt.node,
        "error": None
        if error is None
        else {**(public_error(error) or {}), "traceback": error.get("traceback")},
    }
