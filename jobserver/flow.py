"""Flow control across queues: token buckets, per-queue budgets for a claim, fair shares,
and why a pending job waits. Pure: no I/O; the stores call it inside their claim."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from .models import Job, JobState, QueueSettings


class Bucket(Protocol):
    """A token bucket's settings: a queue's (QueueSettings) or a key's (fairness.KeyPolicy)."""

    @property
    def rate_limit(self) -> float | None: ...

    @property
    def rate_burst(self) -> float | None: ...


def bucket_size(settings: Bucket) -> float:
    if settings.rate_burst is not None:
        return settings.rate_burst
    return max(1.0, settings.rate_limit or 1.0)


def refill(settings: Bucket, tokens: float | None, tokens_at: float | None, now: float) -> float:
    """Tokens in a bucket at `now`; a bucket never drawn from is full."""
    size = bucket_size(settings)
    if tokens is None or tokens_at is None or settings.rate_limit is None:
        return size
    return min(size, tokens + max(0.0, now - tokens_at) * settings.rate_limit)


def whole_tokens(tokens: float) -> int:
    """The jobs a bucket's tokens let start (a float's last bit does not cost a job)."""
    return max(0, math.floor(tokens + 1e-9))


def budget(limit: int, settings: QueueSettings, running: int, tokens: float | None) -> int:
    """How many jobs one claim may start from this queue."""
    if settings.paused:
        return 0
    allowed = limit
    if settings.concurrency_limit is not None:
        allowed = min(allowed, settings.concurrency_limit - running)
    if settings.rate_limit is not None and tokens is not None:
        allowed = min(allowed, whole_tokens(tokens))
    return max(0, allowed)


def fair_share(
    candidates: Sequence[tuple[str, Sequence[int]]], limit: int, start: int
) -> list[int]:
    """Take up to `limit` job ids, one queue at a time in turn, starting at queue `start`:
    a flood in one queue cannot starve the others. Each queue's list is in its own order."""
    if not candidates:
        return []
    order = [candidates[(start + i) % len(candidates)] for i in range(len(candidates))]
    chosen: list[int] = []
    depth = 0
    while len(chosen) < limit:
        took = False
        for _, ids in order:
            if depth < len(ids):
                chosen.append(ids[depth])
                took = True
                if len(chosen) == limit:
                    break
        if not took:
            break
        depth += 1
    return chosen


def interleave(first: Sequence[int], second: Sequence[int]) -> list[int]:
    """One of each in turn: a queue's unkeyed jobs and its keyed ones share its budget."""
    if not second:
        return list(first)
    if not first:
        return list(second)
    merged: list[int] = []
    for i in range(max(len(first), len(second))):
        merged.extend(ids[i] for ids in (first, second) if i < len(ids))
    return merged


def waiting_reason(
    job: Job,
    settings: QueueSettings,
    running_in_queue: int,
    tokens: float | None,
    now: float,
) -> dict[str, Any] | None:
    """Why a pending job has not started, for GET /jobs/{id}; None for jobs not pending."""
    if job.status != JobState.PENDING:
        return None
    if job.blocked_by > 0:
        return {
            "code": "waiting_for_dependencies",
            "message": f"waiting for {job.blocked_by} of the jobs it depends on to succeed",
        }
    if job.run_at > now:
        return {"code": "scheduled", "message": "scheduled for later", "until": job.run_at}
    if settings.paused:
        return {"code": "queue_paused", "message": f"queue {job.queue!r} is paused"}
    limit = settings.concurrency_limit
    if limit is not None and running_in_queue >= limit:
        return {
            "code": "queue_concurrency_limit",
            "message": f"queue {job.queue!r} is running {running_in_queue} of {limit} jobs",
        }
    if settings.rate_limit is not None and tokens is not None and tokens < 1:
        wait_s = (1 - tokens) / settings.rate_limit
        return {
            "code": "queue_rate_limit",
            "message": f"queue {job.queue!r} is at its rate limit of {settings.rate_limit:g}/s",
            "until": now + wait_s,
        }
    return {"code": "due", "message": "due: waiting for a free worker slot"}


def settings_from_row(row: Mapping[str, Any]) -> QueueSettings:
    return QueueSettings(
        paused=bool(row["paused"]),
        concurrency_limit=row["concurrency_limit"],
        rate_limit=row["rate_limit"],
        rate_burst=row["rate_burst"],
        max_depth=row["max_depth"],
        key_concurrency_limit=row["key_concurrency_limit"],
        key_rate_limit=row["key_rate_limit"],
        key_rate_burst=row["key_rate_burst"],
    )
