"""Run one job: find its task, apply the timeout, run sync tasks in a thread, and turn
whatever happened into an `Outcome` the worker can record."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
from concurrent.futures import Executor as ThreadPool
from concurrent.futures import Future
from typing import Any

from .durable import LeaseLost, Suspend
from .errors import PermanentError, Retry
from .isolation import HARD_GRACE_S, ProcessPool
from .logs import job_fields
from .models import Job, error_info
from .outcomes import Cancelled, Failed, Outcome, Succeeded, Suspended, returned
from .tasks import JobContext, Registry, TaskSpec, bind_current_job

log = logging.getLogger(__name__)


_NO_DEADLINE = contextlib.nullcontext()


class Executor:
    """`thread_pool` runs sync tasks; it should hold `abandoned_cap` threads more than the
    jobs that run at once, so that sync tasks still running after their attempt ended (a
    thread cannot be stopped) take no thread another job needs, up to that many."""

    def __init__(
        self,
        registry: Registry,
        thread_pool: ThreadPool,
        abandoned_cap: int = 0,
        processes: ProcessPool | None = None,
        isolate_by_default: bool = False,
    ) -> None:
        self.registry = registry
        self.thread_pool = thread_pool
        self.abandoned_cap = abandoned_cap
        self.abandoned_threads = 0  # sync tasks still running whose attempt has ended
        self.processes = processes  # runs the tasks isolated in child processes
        self.isolate_by_default = isolate_by_default

    async def run(self, job: Job, ctx: JobContext) -> Outcome:
        spec = self.registry.get(job.task)
        if spec is None:
            return Failed(
                error_info(None, type_="UnknownTask", message=f"no task named {job.task!r}"),
                retryable=False,
            )
        timeout_s = _timeout_s(job, spec)
        if self._isolated(spec):
            return await self._run_isolated(job, ctx, spec, timeout_s)
        # Not copied unless ctx joins it: the call unpacks it into a dict of its own anyway.
        kwargs = {**job.kwargs, "ctx": ctx} if spec.wants_ctx else job.kwargs
        bind_current_job(ctx)  # this coroutine runs in its own asyncio task: a private context
        # No timeout object for a task without one: it is a measurable cost per job.
        deadline = asyncio.timeout(timeout_s) if timeout_s is not None else None
        try:
            async with deadline or _NO_DEADLINE:
                if spec.is_async:
                    result = await spec.fn(*job.args, **kwargs)
                else:
                    call = functools.partial(spec.fn, *job.args, **kwargs)
                    run_in_context = functools.partial(contextvars.copy_context().run, call)
                    in_thread = self.thread_pool.submit(run_in_context)
                    try:
                        result = await asyncio.wrap_future(in_thread)
                    finally:
                        if not in_thread.done():  # timed out or cancelled: the thread runs on
                            self._abandon(job, in_thread)
        except TimeoutError as exc:
            if deadline is None or not deadline.expired():
                return self._failure(exc, spec.is_retryable(exc))  # the task's own TimeoutError
            ctx.request_cancel("timeout")  # a sync task, still in its thread, sees ctx.cancelled
            return Failed(
                error_info(None, type_="timeout", message=f"timeout: gave up after {timeout_s} s"),
                retryable=True,
            )
        except asyncio.CancelledError:
            if ctx.cancel_reason is None:
                raise  # not ours to swallow
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            ctx.request_cancel(ctx.cancel_reason)
            return Cancelled(ctx.cancel_reason)
        except Suspend as suspended:  # a durable sleep or wait: the slot is given back
            return Suspended(suspended.until, suspended.waiting_for)
        except LeaseLost:
            return Cancelled("lease_lost")
        except Retry as exc:
            return Failed(error_info(exc), retryable=True, retry_delay_s=exc.delay_s)
        except PermanentError as exc:
            return self._failure(exc, retryable=False)
        except Exception as exc:
            return self._failure(exc, spec.is_retryable(exc))
        except (SystemExit, KeyboardInterrupt) as exc:
            # Raised by a task (sys.exit() in a sync one reaches here through its future): it
            # ends this attempt, not the server, whose loop it would otherwise stop.
            log.warning(
                "job %s (%s) raised %s: its attempt failed",
                job.id,
                job.task,
                exc,
                extra=job_fields(job),
            )
            return self._failure(exc, retryable=False)
        if deadline is not None and (
            deadline.expired() or asyncio.get_running_loop().time() > (deadline.when() or 0)
        ):
            # The task caught its cancellation and went on, or blocked the event loop past its
            # timeout (which then could not fire): its late result is discarded.
            how = "ignored it" if deadline.expired() else "blocked the event loop past it"
            log.warning(
                "job %s (%s) %s: its timeout of %s s; its result is discarded",
                job.id,
                job.task,
                how,
                timeout_s,
                extra=job_fields(job),
            )
            return Failed(
                error_info(
                    None, type_="timeout", message=f"timeout: {timeout_s} s (the task {how})"
                ),
                retryable=True,
            )
        return returned(result)

    def _isolated(self, spec: TaskSpec) -> bool:
        return self.processes is not None and (
            spec.isolation == "process" or (spec.isolation is None and self.isolate_by_default)
        )

    def time_limit(self, job: Job) -> float | None:
        """Seconds after which the attempt has ended one way or another: its timeout, or, in
        a child process, its hard limit (the soft one only asks the task to stop)."""
        spec = self.registry.get(job.task)
        if spec is None:
            return None
        timeout_s = _timeout_s(job, spec)
        if not self._isolated(spec):
            return timeout_s
        return spec.hard_timeout_s or (timeout_s + HARD_GRACE_S if timeout_s is not None else None)

    async def _run_isolated(
        self, job: Job, ctx: JobContext, spec: TaskSpec, soft_s: float | None
    ) -> Outcome:
        """The task in a child process: its timeout a soft limit, its hard limit a kill."""
        assert self.processes is not None
        hard_s = self.time_limit(job)
        context = {
            "job_id": job.id,
            "task": job.task,
            "queue": job.queue,
            "attempt": job.attempts,
            "max_retries": job.max_retries,
            "traceparent": ctx.traceparent,
        }
        try:
            ran = await self.processes.run(job, spec.fn, context, soft_s, hard_s)
        except asyncio.CancelledError:  # the child was killed with the attempt
            if ctx.cancel_reason is None:
                raise
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            return Cancelled(ctx.cancel_reason)
        if ran.killed:
            message = f"timeout: hard limit of {hard_s} s; the task's process was killed"
            return Failed(error_info(None, type_="timeout", message=message), retryable=True)
        if ran.lost:
            message = "the task's process died while running it"
            return Failed(error_info(None, type_="WorkerLost", message=message), retryable=True)
        if ran.result is not None:
            return Succeeded(ran.result)
        assert ran.error is not None
        # past its soft limit: a timeout, retried whatever retry_on says (as in-process)
        retryable = ran.retryable or ran.error.get("type") == "SoftTimeLimitExceeded"
        return Failed(ran.error, retryable=retryable)

    def _abandon(self, job: Job, in_thread: Future[Any]) -> None:
        """A sync task whose attempt ended (timeout, cancel) still runs in its thread, which
        nothing can stop: count it until it returns."""
        self.abandoned_threads += 1
        log.warning(
            "job %s (%s): its sync task still runs in its thread after its attempt ended;"
            " %d such thread(s) now (%d more fit before sync tasks wait for a thread)",
            job.id,
            job.task,
            self.abandoned_threads,
            max(0, self.abandoned_cap - self.abandoned_threads),
            extra=job_fields(job),
        )
        loop = asyncio.get_running_loop()

        def thread_ended(_: Future[Any]) -> None:  # on the task's thread
            with contextlib.suppress(RuntimeError):  # the loop has closed: nothing to count
                loop.call_soon_threadsafe(self._thread_returned)

        in_thread.add_done_callback(thread_ended)

    def _thread_returned(self) -> None:
        self.abandoned_threads -= 1

    @staticmethod
    def _failure(exc: BaseException, retryable: bool) -> Failed:
        return Failed(error_info(exc), retryable=retryable)


def _timeout_s(job: Job, spec: TaskSpec) -> float | None:
    """The attempt's timeout: the job's own, else its task's."""
    return job.timeout_s if job.timeout_s is not None else spec.timeout_s
