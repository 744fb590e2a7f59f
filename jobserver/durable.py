"""Durable steps inside a task: `ctx.step`, `ctx.sleep`, `ctx.sleep_until`, `ctx.wait_for_event`,
`ctx.run_child`.

A task's steps are numbered in the order it calls them. A completed step is kept (its result,
JSON) in the store in the write's group commit; when the job runs again (a crash, a retry, a
lost lease, the end of a sleep), each step already done returns its kept result instead of
running, so the task resumes where it stopped. A step that was running when the process died
runs again: at-least-once per step. A step whose name differs from the one kept at its number
means the task's code changed between runs: the job fails (StepMismatch) rather than replay
the wrong result.

Sleeping and waiting release the job's worker slot: the task raises `Suspend` (out of the
task; it is a BaseException, so `except Exception` in a task does not catch it) and the worker
writes the job back as pending, due when the sleep ends or the wait times out. A signal sent
to the key a job waits for (POST /signals/{key}, JobServer.signal) makes it due at once; a
signal sent before the wait is kept for it. A child job (run_child) is enqueued in the
transaction that keeps its step, and the job waits for it as for a signal: the child's end
wakes it (lifecycle.wake_parent).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

from . import codec
from .clock import Clock
from .errors import PermanentError
from .job_options import check_signal_key
from .lifecycle import child_key
from .models import Job, NewJob, Step
from .store.base import Store

# How long a job waits for its child at most: as long as the child takes (its own timeout,
# retries and deadline bound it), written as a due time far off.
CHILD_WAIT_S = 100 * 365 * 86_400.0


# A step's result of these types comes back from JSON as it went in (not a float: orjson
# writes NaN and the infinities as null).
_SAME_AFTER_JSON = (int, str, bool, type(None))


class Suspend(BaseException):
    """Raised out of a task to give its slot back until `until` (or a signal to `waiting_for`).
    The worker catches it; a task must let it pass."""

    def __init__(self, until: float, waiting_for: str | None = None) -> None:
        super().__init__(until, waiting_for)
        self.until = until
        self.waiting_for = waiting_for


class StepMismatch(PermanentError):
    """The step at this number was kept under another name: the task's code changed between
    runs, and replaying the kept result could be wrong."""


class ChildFailed(Exception):
    """A child job (ctx.run_child) ended without success: failed, or was cancelled. A task
    may catch it; uncaught, it fails the job's attempt, and the job's next run starts a new
    child for that step (as a step that raised runs again)."""

    def __init__(self, job_id: int, status: str, error: Any) -> None:
        message = (error or {}).get("message") if isinstance(error, dict) else None
        super().__init__(f"child job {job_id} ended {status}" + (f": {message}" if message else ""))
        self.job_id = job_id
        self.status = status
        self.error = error


class LeaseLost(BaseException):
    """The job's lease was gone when a step was to be kept: another run owns the job now."""


class DurableSteps:
    """A running job's steps: read once (lazily, on the first step call), kept as they end."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        job: Job,
        new_job: Callable[..., NewJob] | None = None,
    ) -> None:
        assert job.lease_token is not None
        self._store = store
        self._clock = clock
        self._new_job = new_job  # JobServer.new_job: checks a child's options
        self._job_id = job.id
        self._token = job.lease_token
        # a job that never kept a step has none to read (most runs: a job's first)
        self._kept: dict[int, Step] | None = None if job.has_steps else {}
        self._next = 0

    def now(self) -> float:
        return self._clock.now()

    async def _take_number(self, name: str, kind: str) -> tuple[int, Step | None]:
        if not isinstance(name, str) or not 1 <= len(name) <= 200 or "\x00" in name:
            raise ValueError("a step's name must be 1 to 200 characters, none of them NUL")
        if self._kept is None:
            self._kept = {s.seq: s for s in await self._store.job_steps(self._job_id)}
        seq = self._next
        self._next += 1
        kept = self._kept.get(seq)
        if kept is not None and (kept.name != name or kept.kind != kind):
            raise StepMismatch(
                f"step {seq} is {kind} {name!r} now but was {kept.kind} {kept.name!r} when it"
                " ran: the task's code changed between runs"
            )
        return seq, kept

    async def _keep(self, step: tuple[Any, ...]) -> None:
        if not await self._store.save_step(self._job_id, self._token, step):
            raise LeaseLost(f"job {self._job_id}'s lease is gone: its step was not kept")

    async def step(
        self,
        name: str,
        fn: Callable[..., Any],
        *args: Any,
        retries: int = 0,
        retry_delay_s: float = 0.5,
        timeout_s: float | None = None,
        **kwargs: Any,
    ) -> Any:
        seq, kept = await self._take_number(name, "run")
        if kept is not None:
            return kept.result
        started = self._clock.now()
        attempt = 0
        while True:
            try:
                result = await _call(fn, args, kwargs, timeout_s)
                break
            except Exception:
                if attempt >= retries:
                    raise  # the job fails; its policy retries it, and kept steps replay
                await asyncio.sleep(retry_delay_s * 2**attempt)
                attempt += 1
        encoded = codec.dumps(result)  # a TypeError here names a result JSON cannot carry
        if b"\\u0000" in encoded and codec.holds_nul(encoded):  # jsonb cannot hold one
            raise ValueError(f"step {name!r}'s result holds a NUL character, which no store keeps")
        await self._keep((seq, name, "run", "done", encoded, started, self._clock.now()))
        if type(result) in _SAME_AFTER_JSON:
            return result
        return codec.loads(encoded)  # what a replay returns: the same, as JSON gives it back

    async def sleep_until(self, until: float, name: str = "sleep") -> None:
        seq, kept = await self._take_number(name, "sleep")
        now = self._clock.now()
        if kept is None:
            await self._keep((seq, name, "sleep", "done", codec.dumps(until), now, now))
        else:
            until = float(kept.result)
        if until > now:
            raise Suspend(until)

    async def wait_for_event(self, key: str, timeout_s: float, name: str | None = None) -> Any:
        check_signal_key(key)  # as a signal names it: a key no signal can reach is refused
        if not timeout_s > 0:
            raise ValueError("timeout_s must be greater than 0")
        name = name or f"wait:{key}"
        seq, kept = await self._take_number(name, "wait")
        now = self._clock.now()
        if kept is not None and kept.status == "done":
            return kept.result
        deadline = now + timeout_s if kept is None else float(kept.result["deadline"])
        step = (seq, name, "wait", "waiting", codec.dumps({"deadline": deadline}), now, None)
        taken, payload = await self._store.take_signal(self._job_id, self._token, key, step, now)
        if taken:
            return payload
        if now >= deadline:  # timed out: kept as done with no payload
            await self._keep((seq, name, "wait", "done", b"null", now, now))
            return None
        if kept is None:
            await self._keep(step)
        raise Suspend(deadline, waiting_for=key)

    async def run_child(
        self,
        task: str,
        args: Any = (),
        kwargs: dict[str, Any] | None = None,
        *,
        name: str | None = None,
        **options: Any,
    ) -> Any:
        if self._new_job is None:
            raise RuntimeError("ctx.run_child needs a JobServer to enqueue the child")
        name = name or f"child:{task}"
        seq, kept = await self._take_number(name, "child")
        if kept is not None and kept.status == "done":
            return kept.result["result"]
        if kept is None or kept.status == "failed":  # none yet, or a new run after a failure
            child = self._new_job(task, args, kwargs, **options)
            step = (seq, name, "child", "waiting", None, self._clock.now(), None)
            child_id = await self._store.start_child(
                self._job_id, self._token, step, child, self._clock.now()
            )
            if child_id is None:
                raise LeaseLost(f"job {self._job_id}'s lease is gone: its child was not started")
            started = step[5]
        else:
            child_id, started = int(kept.result["job_id"]), kept.started_at
        found = await self._store.get_job(child_id)
        if found is not None and not found.is_terminal:  # give the slot back until it ends
            raise Suspend(self._clock.now() + CHILD_WAIT_S, waiting_for=child_key(child_id))
        status = "gone" if found is None else found.status.value
        if found is not None and status == "succeeded":
            kept_result = {"job_id": child_id, "result": found.result}
            encoded = codec.dumps(kept_result)
            await self._keep((seq, name, "child", "done", encoded, started, self._clock.now()))
            return found.result
        error = None if found is None else found.error
        ended = codec.dumps({"job_id": child_id, "status": status, "error": error})
        await self._keep((seq, name, "child", "failed", ended, started, self._clock.now()))
        raise ChildFailed(child_id, status, error)


async def _call(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], timeout_s: float | None
) -> Any:
    if timeout_s is None and _is_async(fn):  # the usual step: no task, no timer around it
        return await fn(*args, **kwargs)

    async def run() -> Any:
        if _is_async(fn):
            return await fn(*args, **kwargs)
        result = await asyncio.to_thread(fn, *args, **kwargs)  # blocking work off the loop
        return await result if inspect.isawaitable(result) else result  # a lambda's coroutine

    if timeout_s is None:
        return await run()
    return await asyncio.wait_for(run(), timeout_s)


def _is_async(fn: Callable[..., Any]) -> bool:
    # A plain `async def` answers from its code's flags; inspect's look (which unwraps
    # partials and methods) cost a step about as much as the rest of its Python.
    code = getattr(fn, "__code__", None)
    if code is not None and code.co_flags & inspect.CO_COROUTINE:
        return True
    return inspect.iscoroutinefunction(fn)
