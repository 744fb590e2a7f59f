"""Durable steps' moves, written once for every store as lifecycle's are (programs that yield
named SQL; see lifecycle.py): a job's steps, its suspension while it sleeps or waits for a
signal, and signals.

A suspended job is pending again, its attempt given back (a suspension is not a failure), due
when its sleep ends or its wait times out; a signal to the key it waits for makes it due at
once. Its completed steps stay in job_steps, so the next run replays them instead of running
them again (durable.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import codec
from .lifecycle import (
    CANCELLED,
    CHILD_KEY,
    PENDING,
    RUNNING,
    Changes,
    NewRow,
    Program,
    _moved,
    count,
    enqueue,
    row,
    rows,
    value,
)
from .models import JobState

STEP_COLUMNS = ("seq", "name", "kind", "status", "result", "attempt", "started_at", "ended_at")


def job_steps(job_id: int) -> Program[list[Sequence[Any]]]:
    found: list[Sequence[Any]] = yield rows("job_steps", job_id)
    return found


def _save(job_id: int, token: str, seq: int, *rest: Any) -> Program[int]:
    """Keep a step (STEP_COLUMNS but attempt, which the job's row gives) with the wait or
    child it belongs to, and set the job's has_steps flag (set by its first kept step,
    whichever number that is: a task may catch a step's failure and keep the next). The
    steps of ctx.step and sleeps are kept by the drivers, many in one statement
    (Store.save_step), with the same effect."""
    saved: int = yield count("save_step", job_id, token, seq, *rest)
    if saved:
        yield count("mark_has_steps", job_id)
    return saved


def take_signal(
    job_id: int, token: str, key: str, step: Sequence[Any], now: float
) -> Program[tuple[bool, Any]]:
    """Take the oldest signal sent to `key` and keep it as the job's wait step, done.
    (False, None): none was there; (True, payload) else. A lost lease takes nothing."""
    yield row("lock_signal_key", key)
    if (yield row("job_leased", job_id, token)) is None:
        return False, None
    taken = yield row("take_signal", key, job_id, now)
    if taken is None:
        return False, None
    seq, name, _kind, _status, _result, started_at, _ended = step
    payload = taken[0]
    yield from _save(job_id, token, seq, name, "wait", "done", payload, started_at, now)
    return True, payload


def start_child(
    job_id: int, token: str, step: Sequence[Any], child: NewRow, now: float, ch: Changes
) -> Program[int | None]:
    """Enqueue a job's child (ctx.run_child) and keep the step that names it, in one
    transaction: a crash cannot start the child twice, nor lose it. The child's end wakes its
    parent (lifecycle.wake_parent): it is marked as having dependants, so that its success
    runs after_success. None if the lease is gone (nothing is enqueued)."""
    if (yield row("job_leased", job_id, token)) is None:
        return None
    (enqueued,), _unlimited = yield from enqueue([child], now, (), ch)
    child_id = enqueued.job.id
    yield count("mark_has_dependants", [child_id])
    seq, name, _kind, _status, _result, started_at, _ended = step
    kept = codec.dumps({"job_id": child_id})
    yield from _save(job_id, token, seq, name, "child", "waiting", kept, started_at, None)
    ch.due = True
    return int(child_id)


def suspend(
    job_id: int,
    token: str,
    until: float,
    waiting_for: str | None,
    now: float,
    ch: Changes,
) -> Program[JobState | None]:
    """running -> pending, due at `until` (a sleep's end, a wait's timeout), the attempt given
    back; -> cancelled if a client asked meanwhile. A job waiting for a signal that was sent
    meanwhile, or for a child that ended meanwhile, is due at once."""
    ended = yield row("release_leased_if_cancel_requested", job_id, token, now)
    if ended is not None:
        _moved(ch, job_id, ended, RUNNING, CANCELLED, "cancel_requested", ended[4])
        yield count("record_attempts", [job_id], ended[4], "cancelled", None)
        return JobState.CANCELLED
    if waiting_for is not None:
        yield row("lock_signal_key", waiting_for)
        if waiting_for.startswith(CHILD_KEY):  # waits for its child: ended already?
            status = yield value("job_status", int(waiting_for[len(CHILD_KEY) :]))
            if status not in ("pending", "running"):
                until = now
        elif (yield row("has_signal", waiting_for)) is not None:
            until = now
    moved = yield row("suspend_leased", job_id, token, until, waiting_for)
    if moved is None:
        return None
    _moved(ch, job_id, moved, RUNNING, PENDING, "suspended", now)
    if until <= now:
        ch.new_pending = True
    else:
        ch.due = True  # other nodes' dispatchers learn of its run_at
    return JobState.PENDING


def send_signal(key: str, payload: bytes, now: float, ch: Changes) -> Program[tuple[int, int]]:
    """Keep a signal for `key` (a job waiting for it, now or later, takes it) and make the
    jobs suspended waiting for it due now. Returns (the signal's id, how many were woken)."""
    yield row("lock_signal_key", key)
    signal_id = yield row("insert_signal", key, payload, now)
    woken = yield rows("wake_waiting", key, now)
    if woken:
        ch.due = True
        ch.new_pending = True
    return int(signal_id[0]), len(woken)
