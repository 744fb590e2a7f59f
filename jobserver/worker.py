"""The worker pool: claims due jobs, runs them, records how each attempt ended.

Three loops run beside the jobs themselves:
- the dispatcher claims as many due jobs as there are free slots, then sleeps until an
  enqueue or a finished job wakes it, or until the next scheduled job is due;
- the heartbeat renews the leases of the jobs this process runs, and cancels those whose
  lease was lost or whose cancellation a client asked for;
- the rescuer puts back jobs whose lease expired (their worker died or stalled).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import random
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from . import retry
from .clock import Clock
from .durable import DurableSteps
from .executor import Executor
from .logs import job_fields
from .models import Backoff, Job, JobState, NewJob, error_info
from .outcomes import Cancelled, Failed, Outcome, Succeeded, Suspended
from .store.base import LeaseReport, Store
from .tasks import JobContext
from .tracing import attempt_span

log = logging.getLogger(__name__)
# A task still running this long after its timeout ignores cancellation: its attempt ends as
# a timeout and its slot is given back; it is left to run (abandoned), counted.
OVERRUN_GRACE_S = 2.0
# At shutdown, how long the jobs cancelled after the grace period have to stop: past it they
# are abandoned, so that the drain ends within grace + this whatever the tasks do.
STOP_BOUND_S = 5.0


def _unheeded(read: asyncio.Future[Any]) -> None:
    """A read left running once a wake came first: its error, if any, is not news."""
    if not read.cancelled():
        read.exception()


@dataclass(slots=True)
class _Running:
    job: Job
    ctx: JobContext
    task: asyncio.Task[None]
    slot_given_back: bool = False  # its task has returned (its outcome is being written) or ended
    watchdog: asyncio.TimerHandle | None = None  # fires OVERRUN_GRACE_S past its timeout


class Worker:
    def __init__(
        self,
        store: Store,
        executor: Executor,
        clock: Clock,
        *,
        concurrency: int = 16,
        lease_ttl_s: float = 30.0,
        rescue_interval_s: float = 5.0,
        progress_interval_s: float = 0.5,
        rng: random.Random | None = None,
        new_job: Callable[..., NewJob] | None = None,
        skip_queues: frozenset[str] = frozenset(),
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.store = store
        self.executor = executor
        self.clock = clock
        self.concurrency = concurrency
        self.lease_ttl_s = lease_ttl_s
        self.rescue_interval_s = rescue_interval_s
        self.progress_interval_s = progress_interval_s
        self.rng = rng or random.Random()
        self.new_job = new_job  # checks a child job's options (ctx.run_child)
        self.skip_queues = skip_queues  # external tasks' queues: leased over HTTP instead
        self._running: dict[int, _Running] = {}
        # Jobs whose task is still executing: what `concurrency` limits. A job whose outcome
        # is being written has given its slot back, so the claim of its successor goes into
        # the same transaction as its completion (one commit a job, not two in a row).
        self._executing = 0
        # Set by wake(); the dispatcher clears it before each claim. `_wake_waiter` is what
        # it awaits while idle: resolved directly, so a wake costs one loop turn.
        self._woken = False
        self._wake_waiter: asyncio.Future[None] | None = None
        # The dispatcher claims again by this time without being woken; an enqueue of a job due
        # earlier must wake it. inf: it waits with no timer; -inf: every slot is taken (a
        # finished job wakes it). While it claims, enqueues only note their due time
        # (`_arrived`), which it sleeps no later than: its reads may have missed them.
        self._planned_wake = math.inf
        self._claiming = False
        self._arrived = math.inf
        # Awaited beside the read of the next wake time: resolved by a wake, or by an enqueue
        # of a job due now, so that such a job need not wait for the read.
        self._read_waiter: asyncio.Future[None] | None = None
        self._stopping = False
        self._loops: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self.abandoned_tasks = 0  # async tasks left running after their attempt ended
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- control ----------------------------------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loops = [
            self._spawn(self._dispatch_loop(), "dispatcher"),
            self._spawn(self._heartbeat_loop(), "heartbeat"),
            self._spawn(self._rescue_loop(), "rescuer"),
        ]

    def wake(self) -> None:
        """A job may be due now: claim at once rather than at the next timer."""
        self._woken = True
        for waiter in (self._wake_waiter, self._read_waiter):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def wake_for(self, run_at: float) -> None:
        """A job due at `run_at` was (or is being) enqueued: wake the dispatcher only if it
        would otherwise claim later than that. Called before the enqueue commits, the claim
        it sets off lands in the same transaction or a later one, so it sees the job."""
        if self._claiming:
            self._arrived = min(self._arrived, run_at)
            waiter = self._read_waiter
            if waiter is not None and not waiter.done() and run_at <= self.clock.now():
                waiter.set_result(None)
        elif run_at < self._planned_wake:
            self.wake()

    @property
    def dispatcher_idle(self) -> bool:
        """The dispatcher has claimed what it could and waits for a wake or its timer."""
        return self._wake_waiter is not None

    @property
    def running_ids(self) -> list[int]:
        return list(self._running)

    @property
    def running_jobs(self) -> list[Job]:
        return [r.job for r in self._running.values()]

    def cancel_running(self, job_id: int) -> bool:
        """Deliver a client's cancellation to a job this process runs."""
        running = self._running.get(job_id)
        if running is None:
            return False
        self._cancel(running, "cancelled")
        return True

    async def stop(self, grace_s: float) -> None:
        """Stop claiming; let running jobs finish for `grace_s`, then release the rest."""
        self._stopping = True
        self.wake()
        dispatcher = self._loops[0] if self._loops else None
        if dispatcher is not None:
            await dispatcher
        tasks = [r.task for r in self._running.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=grace_s)
        for running in list(self._running.values()):
            self._cancel(running, "shutdown")
        tasks = [r.task for r in self._running.values()]
        if tasks:
            _, stuck = await asyncio.wait(tasks, timeout=STOP_BOUND_S)
            if stuck:
                # They ignore cancellation: their leases lapse and the jobs run again.
                log.warning(
                    "%d job(s) did not stop when cancelled at shutdown; left behind: %s",
                    len(stuck),
                    sorted(r.job.id for r in self._running.values() if r.task in stuck),
                )
        for loop_task in self._loops[1:]:
            loop_task.cancel()
        for loop_task in self._loops[1:]:
            with contextlib.suppress(asyncio.CancelledError):
                await loop_task
        self._loops = []

    def _cancel(self, running: _Running, reason: str) -> None:
        if running.slot_given_back and reason != "shutdown":
            return  # the task has ended; its outcome is being written and stands
        running.ctx.request_cancel(reason)
        running.task.cancel()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        # The loop's own create_task: asyncio.create_task first asks for the running loop,
        # which costs a getpid() system call, once a job.
        loop = self._loop or asyncio.get_running_loop()
        return loop.create_task(coro, name=f"jobserver-{name}")

    # -- the dispatcher ---------------------------------------------------------------------------
    async def _dispatch_loop(self) -> None:
        while not self._stopping:
            try:
                await self._dispatch_once()
            except Exception:
                # A store hiccup (disk full, say) must not kill the pool: back off, then retry.
                log.exception("claiming jobs failed; trying again in 1 s")
                await self._sleep_or_wake(self.clock.now() + 1.0)

    async def _dispatch_once(self) -> None:
        free = self.concurrency - self._executing
        if free <= 0:
            self._planned_wake = -math.inf
            self._woken = False
            await self._sleep_or_wake(None)
            return
        self._woken = False  # before claiming: a wake meanwhile means claim again
        self._claiming, self._arrived = True, math.inf
        try:
            now = self.clock.now()
            jobs = await self.store.claim(free, now, self.lease_ttl_s, skip=self.skip_queues)
            for job in jobs:
                self._start_job(job)
            if len(jobs) == free or self._stopping:
                return  # claims again at once, after every enqueue noted meanwhile
            if self._woken or self._arrived <= self.clock.now():
                return  # a slot freed or a due job came while it claimed: claim again
            # Asked as of the claim's own time: a job that fell due since then is counted
            # here, and the loop claims again at once instead of sleeping past it.
            woken, next_due = await self._next_wake_unless_woken(now)
            if woken:
                return
        finally:
            self._claiming = False
        wake_at = min(math.inf if next_due is None else next_due, self._arrived)
        if wake_at <= self.clock.now():
            return  # due already (a retry scheduled meanwhile): claim again
        self._planned_wake = wake_at
        await self._sleep_or_wake(None if wake_at == math.inf else wake_at)

    async def _next_wake_unless_woken(self, now: float) -> tuple[bool, float | None]:
        """(False, the store's next wake time), or (True, None) if a wake or a due job comes
        first. A queue held by a limit leaves slots free, and a job enqueued for them would
        otherwise wait for this read (several statements) before the claim that starts it;
        the read then finishes unheeded."""
        loop = self._loop or asyncio.get_running_loop()
        read = asyncio.ensure_future(self.store.next_wake_at(now))
        waiter = self._read_waiter = loop.create_future()
        try:
            await asyncio.wait((read, waiter), return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._read_waiter = None
        if read.done():
            return False, read.result()
        read.add_done_callback(_unheeded)
        return True, None

    async def _sleep_or_wake(self, until: float | None) -> None:
        if self._woken:
            return
        waiter = (self._loop or asyncio.get_running_loop()).create_future()
        self._wake_waiter = waiter
        timer = None
        if until is not None:
            timer = asyncio.ensure_future(self.clock.sleep_until(until))
            timer.add_done_callback(self._on_timer)
        try:
            await waiter
        finally:
            self._wake_waiter = None
            if timer is not None:
                timer.cancel()

    def _on_timer(self, timer: asyncio.Future[None]) -> None:
        if not timer.cancelled():  # cancelled: woken otherwise, the timer is moot
            self.wake()

    def _start_job(self, job: Job) -> None:
        ctx = JobContext(
            job_id=job.id,
            task=job.task,
            queue=job.queue,
            attempt=job.attempts,
            max_retries=job.max_retries,
            report_progress=self._progress_reporter(job),
        )
        ctx.durable = DurableSteps(self.store, self.clock, job, self.new_job)
        task = self._spawn(self._run_job(job, ctx), f"job-{job.id}")
        running = self._running[job.id] = _Running(job, ctx, task)
        self._executing += 1
        timeout_s = self.executor.time_limit(job)
        if timeout_s is not None:
            loop = self._loop or asyncio.get_running_loop()
            running.watchdog = loop.call_later(
                timeout_s + OVERRUN_GRACE_S, self._overran, running, timeout_s
            )
        # Also for a task cancelled before its first step, which runs none of `_run_job`: its
        # lease, no longer renewed, expires and the rescuer settles the job.
        task.add_done_callback(lambda _: self._forget(running))

    def _give_back_slot(self, running: _Running) -> None:
        if not running.slot_given_back:
            running.slot_given_back = True
            self._executing -= 1
            self.wake()

    def _overran(self, running: _Running, timeout_s: float) -> None:
        """The task ignored its timeout's cancellation: end its attempt as a timeout, give its
        slot back and stop renewing its lease; leave the task to run (nothing can stop a
        coroutine that swallows CancelledError), counted. Its late outcome is stale."""
        job = running.job
        if running.slot_given_back or self._running.get(job.id) is not running:
            return
        self.abandoned_tasks += 1
        log.warning(
            "job %s (%s) ignored its timeout of %s s for %s s more: its attempt ends as a"
            " timeout, and the task is left running (%d such now)",
            job.id,
            job.task,
            timeout_s,
            OVERRUN_GRACE_S,
            self.abandoned_tasks,
            extra=job_fields(job),
        )
        running.task.add_done_callback(self._abandoned_task_ended)
        self._give_back_slot(running)
        del self._running[job.id]
        overrun = Failed(
            error_info(
                None,
                type_="timeout",
                message=f"timeout: {timeout_s} s (the task ignored its cancellation)",
            ),
            retryable=True,
        )
        record = self._spawn(self._record_overrun(job, overrun), f"job-{job.id}-overrun")
        self._background.add(record)
        record.add_done_callback(self._background.discard)

    async def _record_overrun(self, job: Job, overrun: Failed) -> None:
        try:
            await self.record(job, overrun)
        except Exception:
            log.exception(
                "recording the timeout of job %s failed; its lease will expire",
                job.id,
                extra=job_fields(job),
            )

    def _abandoned_task_ended(self, _: asyncio.Task[None]) -> None:
        self.abandoned_tasks -= 1

    def _forget(self, running: _Running) -> None:
        """Its task is over: free its slot if it still holds one, stop renewing its lease. By
        identity: the job may already run again here (a retry due at once, claimed in the
        transaction that wrote it, starts before this run's task resumes)."""
        if running.watchdog is not None:
            running.watchdog.cancel()
        self._give_back_slot(running)
        if self._running.get(running.job.id) is running:
            del self._running[running.job.id]

    async def _run_job(self, job: Job, ctx: JobContext) -> None:
        running = self._running[job.id]  # stored by _start_job before this first step
        try:
            if job.depends_on:
                job = await self._with_parent_results(job, ctx)
            with attempt_span(job) as ctx.traceparent:
                outcome = await self.executor.run(job, ctx)
            self._give_back_slot(running)
            await self.record(job, outcome)
        except asyncio.CancelledError:
            # Cancelled outside the task itself (shutdown while recording): the lease
            # expires and the job runs again; at-least-once.
            pass
        except Exception:
            log.exception(
                "recording the end of job %s failed; its lease will expire",
                job.id,
                extra=job_fields(job),
            )
        finally:
            self._forget(running)

    async def _with_parent_results(self, job: Job, ctx: JobContext) -> Job:
        """Give a dependant its dependencies' results: all of them in ctx.parent_results, and
        for a chain or chord step (pass_result) as its first argument: the one result, or the
        list of them in dependency order."""
        results = await self.store.results_of(job.depends_on)
        ctx.parent_results = {d: results.get(d) for d in job.depends_on}
        if not job.pass_result:
            return job
        ordered = [results.get(d) for d in job.depends_on]
        first = ordered[0] if len(ordered) == 1 else ordered
        return dataclasses.replace(job, args=[first, *job.args])

    async def record(self, job: Job, outcome: Outcome) -> JobState | None:
        """Write the attempt's outcome (for this process's runs, and for external workers'
        reports: leasing.py); the state written, None if the lease was gone. The store
        publishes the move it made once committed (which may differ from the one asked for:
        a cancel requested meanwhile wins over a retry); a write that finds the lease gone
        changes nothing."""
        assert job.lease_token is not None
        token = job.lease_token
        now = self.clock.now()
        stored: JobState | None
        if isinstance(outcome, Succeeded):
            stored = await self.store.complete(job.id, token, outcome.result, now)
        elif isinstance(outcome, Suspended):
            until = max(outcome.until, now)
            stored = await self.store.suspend(job.id, token, until, outcome.waiting_for, now)
        elif isinstance(outcome, Cancelled):
            if outcome.reason == "lease_lost":
                stored = None
            elif outcome.reason == "shutdown":
                stored = await self.store.release(job.id, token, now)
            else:
                stored = await self.store.mark_cancelled(job.id, token, now)
        else:
            stored = await self._record_failure(job, token, outcome, now)
        if stored is None:
            self._stale(job)
        return stored

    async def _record_failure(
        self, job: Job, token: str, outcome: Failed, now: float
    ) -> JobState | None:
        spec = self.executor.registry.get(job.task)
        policy = job.backoff or (spec.backoff if spec else Backoff())
        decision = retry.decide(
            attempts=job.attempts,
            max_retries=job.max_retries,
            retryable=outcome.retryable,
            requested_delay_s=outcome.retry_delay_s,
            policy=policy,
            rng=self.rng,
        )
        if isinstance(decision, retry.RetryAt):
            run_at = now + decision.delay_s
            return await self.store.schedule_retry(job.id, token, outcome.error, run_at, now)
        stored = await self.store.dead_letter(job.id, token, outcome.error, now)
        if stored == JobState.FAILED:
            log.warning(
                "job %s (%s) failed for good after %s attempt(s), %s: %s",
                job.id,
                job.task,
                job.attempts,
                decision.reason,
                outcome.error.get("message"),
                extra=job_fields(
                    job,
                    error_type=outcome.error.get("type"),
                    traceback=outcome.error.get("traceback"),
                ),
            )
        return stored

    def _stale(self, job: Job) -> None:
        log.warning(
            "job %s: the outcome of attempt %s was discarded; its lease is no longer current",
            job.id,
            job.attempts,
            extra=job_fields(job),
        )

    # -- progress ---------------------------------------------------------------------------------
    def _progress_reporter(self, job: Job) -> Callable[[float, str | None], None]:
        """What a job's ctx.progress calls: built on first use, since most jobs never do."""
        reporter: Callable[[float, str | None], None] | None = None

        def report(fraction: float, message: str | None) -> None:
            nonlocal reporter
            if reporter is None:
                reporter = self._throttled_reporter(job)
            reporter(fraction, message)

        return report

    def _throttled_reporter(self, job: Job) -> Callable[[float, str | None], None]:
        """Progress writes are throttled: at most one per interval, the latest value wins."""
        loop = self._loop or asyncio.get_running_loop()
        state: dict[str, Any] = {"last": float("-inf"), "pending": None, "scheduled": False}

        def flush() -> None:
            state["scheduled"] = False
            value = state["pending"]
            if value is None or job.id not in self._running:
                return
            state["pending"] = None
            state["last"] = loop.time()
            assert job.lease_token is not None
            write = loop.create_task(self._write_progress(job, job.lease_token, *value))
            self._background.add(write)
            write.add_done_callback(self._background.discard)

        def on_loop(fraction: float, message: str | None) -> None:
            state["pending"] = (fraction, message)
            if state["scheduled"]:
                return
            wait = state["last"] + self.progress_interval_s - loop.time()
            state["scheduled"] = True
            if wait <= 0:
                flush()
            else:
                loop.call_later(wait, flush)

        def report(fraction: float, message: str | None) -> None:
            try:
                running_loop = asyncio.get_running_loop()
            except RuntimeError:
                running_loop = None
            if running_loop is loop:
                on_loop(fraction, message)
            else:  # a sync task in its thread
                loop.call_soon_threadsafe(on_loop, fraction, message)

        return report

    async def _write_progress(self, job: Job, token: str, fraction: float, msg: str | None) -> None:
        try:
            await self.store.update_progress(job.id, token, fraction, msg)
        except Exception:
            log.warning("job %s: progress not saved", job.id, exc_info=True, extra=job_fields(job))

    # -- leases -----------------------------------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        interval = self.lease_ttl_s / 3
        while True:
            await self.clock.sleep(interval)
            leases = self.held_leases()
            if not leases:
                continue
            try:
                report = await self.store.renew_leases(leases, self.clock.now(), self.lease_ttl_s)
            except Exception:
                log.warning("renewing leases failed", exc_info=True)
                continue
            self.apply_renewal(leases, report)

    def held_leases(self) -> list[tuple[int, str]]:
        """(job id, lease token) of each run this process holds."""
        return [
            (r.job.id, r.job.lease_token)
            for r in self._running.values()
            if r.job.lease_token is not None
        ]

    def apply_renewal(self, sent: list[tuple[int, str]], report: LeaseReport) -> None:
        """Stop the runs whose lease the renewal found lost: only the run holding the token
        that was sent. While the renewal was in flight, that run may have ended and the job
        been claimed again here under a new token: that new attempt holds its lease."""
        tokens = dict(sent)
        for job_id in report.lost:
            running = self._running.get(job_id)
            if running is not None and running.job.lease_token == tokens.get(job_id):
                log.warning(
                    "job %s lost its lease; stopping this run of it",
                    job_id,
                    extra=job_fields(running.job),
                )
                self._cancel(running, "lease_lost")
        for job_id in report.cancel_requested:
            self.cancel_running(job_id)

    async def _rescue_loop(self) -> None:
        while True:
            await self.clock.sleep(self.rescue_interval_s)
            try:
                report = await self.store.rescue_expired(self.clock.now())
            except Exception:
                log.warning("rescuing expired leases failed", exc_info=True)
                continue
            if report.requeued or report.dead_lettered:
                log.warning(
                    "rescued jobs whose lease expired: requeued %s, dead-lettered %s",
                    report.requeued,
                    report.dead_lettered,
                )
                self.wake()
            if report.expired:
                log.warning("jobs past their deadline, failed as expired: %s", report.expired)
