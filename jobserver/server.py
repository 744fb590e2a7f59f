"""`JobServer`, the composition root: wires the store, the worker pool and the HTTP API,
and is the API for programs that embed jobserver.

    async with JobServer(db="jobs.db", tasks=["myapp.tasks"]) as server:
        job = await server.enqueue("send_email", args=["a@example.com"])
        done = await server.wait_for(job.id, timeout_s=10)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import TYPE_CHECKING, Any

from . import fairness, flow, workflows
from .auth import TokenAuth
from .builtin_tasks import DEFAULT_ALLOWED_HOSTS, HttpTask, builtin_specs
from .clock import Clock, SystemClock
from .errors import NotFound, StorageUnavailable, ValidationError
from .events import EventBus
from .executor import Executor
from .fairness import KeyState
from .http.app import create_app
from .http.listener import HttpListener
from .isolation import ProcessPool
from .job_options import BY_NAME as OPTIONS_BY_NAME
from .job_options import (
    DEAD_LETTER_SELECTION_BY_NAME,
    MAX_BULK,
    check_dead_letter_selection,
    check_fairness_key,
    check_key_settings,
    check_options,
    check_queue_settings,
    check_schedule,
    check_signal_key,
    check_signal_payload,
)
from .leasing import Leasing
from .metrics import Metrics
from .models import (
    Attempt,
    DeadLetter,
    Job,
    JobState,
    NewJob,
    QueueInfo,
    QueueSettings,
    Schedule,
    Step,
)
from .retention import DAY_S, Retention
from .schedule import check_cron, next_tick
from .scheduler import Scheduler
from .store.base import BulkResult, DeadLetterFilter, Enqueued, JobFilter, Store
from .store.sqlite import SQLiteStore
from .tasks import Registry, TaskSpec, default_registry, load_task_modules
from .transitions import Publisher
from .webhooks import Webhooks
from .worker import Worker
from .workflows import ParseJob

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger(__name__)

DEAD_LETTER_SCAN = 500  # rows read at a time while selecting dead letters
LAG_PROBE_S = 0.25
LAG_WARNING_S = 0.5


def open_store(db: str | os.PathLike[str], durability: str = "full") -> Store:
    """The store a `--db` value names: a postgresql:// URL, else a SQLite file path."""
    text = os.fspath(db)
    if text.startswith(("postgres://", "postgresql://")):
        try:
            from .store.postgres import PostgresStore
        except ImportError:
            raise ValidationError(
                "db", "PostgreSQL needs asyncpg: pip install 'jobserver[postgres]'"
            ) from None
        return PostgresStore(text)
    return SQLiteStore(text, durability=durability)


class JobServer:
    def __init__(
        self,
        db: str | os.PathLike[str] = "jobserver.db",
        *,
        tasks: Iterable[str | ModuleType | TaskSpec] = (),
        concurrency: int = 16,
        durability: str = "full",
        lease_ttl_s: float = 30.0,
        rescue_interval_s: float = 5.0,
        grace_period_s: float = 30.0,
        http_allowed_hosts: Iterable[str] = DEFAULT_ALLOWED_HOSTS,
        max_body_bytes: int = 1024 * 1024,
        max_batch_body_bytes: int = 32 * 1024 * 1024,
        max_page_bytes: int = 8 * 1024 * 1024,
        max_connections: int = 1024,
        body_timeout_s: float = 30.0,
        header_timeout_s: float = 10.0,
        access_log: bool = False,
        idempotency_window_s: float = 86_400.0,
        webhook_secret: str | None = None,
        tokens: Iterable[str] = (),
        read_tokens: Iterable[str] = (),
        worker_tokens: Iterable[str] = (),
        server_names: Iterable[str] = (),
        keep_finished_s: float = 7 * DAY_S,
        keep_failed_s: float = 30 * DAY_S,
        keep_events_s: float = DAY_S,
        isolation: str = "inline",
        max_tasks_per_child: int = 10_000,
        max_memory_per_child_mb: float = 1024.0,
        clock: Clock | None = None,
        store: Store | None = None,
    ) -> None:
        self.clock = clock or SystemClock()
        self.store = store or open_store(db, durability)
        self.metrics = Metrics()
        self.store.commit_observer = self.metrics.record_commit
        self.grace_period_s = grace_period_s
        self.max_body_bytes = max_body_bytes
        self.max_batch_body_bytes = max(max_batch_body_bytes, max_body_bytes)
        # a list page (jobs, dead letters) ends early past this many bytes: its items carry
        # arguments and results, and a page of big ones held hundreds of MB
        self.max_page_bytes = max_page_bytes
        self.max_connections = max_connections
        self.body_timeout_s = body_timeout_s  # a client sending its body slower is cut off
        self.header_timeout_s = header_timeout_s  # ... or its first request head
        self.access_log = access_log  # a line a request, logger jobserver.access
        self.idempotency_window_s = idempotency_window_s
        self.auth = TokenAuth(
            tokens, read_tokens, server_names=server_names, worker_tokens=worker_tokens
        )
        self._http_task = HttpTask(http_allowed_hosts, webhook_secret)
        self.webhooks = Webhooks(self._http_task, webhook_secret, self.get_job, self.clock)
        self.registry = self._build_registry(tasks)
        # Queues whose jobs external workers lease over HTTP (leasing.py); ours leave them.
        self.external_queues = frozenset(
            spec.external_queue for spec in self.registry if spec.external_queue is not None
        )
        for name in self.external_queues:
            check_options({"task": "x", "queue": name})  # a name a queue may have
        # As many threads again as jobs at once: sync tasks that hang past their attempt
        # (a thread cannot be stopped) take up to that many without holding up other jobs.
        self._thread_pool = ThreadPoolExecutor(
            max_workers=2 * concurrency, thread_name_prefix="jobserver-task"
        )
        if isolation not in ("inline", "process"):
            raise ValueError("isolation must be 'inline' or 'process'")
        # Child processes for task bodies, if any task runs isolated (isolation.py).
        isolated = isolation == "process" or any(
            spec.isolation == "process" for spec in self.registry.specs()
        )
        self.processes = (
            ProcessPool(
                concurrency,
                max_tasks_per_child=max_tasks_per_child,
                max_memory_mb=max_memory_per_child_mb,
            )
            if isolated
            else None
        )
        self.executor = Executor(
            self.registry,
            self._thread_pool,
            abandoned_cap=concurrency,
            processes=self.processes,
            isolate_by_default=isolation == "process",
        )
        self.worker = Worker(
            self.store,
            self.executor,
            self.clock,
            concurrency=concurrency,
            lease_ttl_s=lease_ttl_s,
            rescue_interval_s=rescue_interval_s,
            new_job=self.new_job,
            skip_queues=self.external_queues,
        )
        self.leasing = Leasing(self.store, self.worker, self.clock, self.external_queues)
        self.scheduler = Scheduler(
            self.store, self.clock, job_for_tick=self._job_for_tick, on_fired=self._on_fired
        )
        self.retention = Retention(
            self.store,
            self.clock,
            keep_finished_s=keep_finished_s,
            keep_failed_s=keep_failed_s,
            keep_events_s=keep_events_s,
        )
        self._waiters: dict[int, list[asyncio.Future[None]]] = {}
        # several nodes write the log where the store is shared: each tails it (events.py)
        self.events = EventBus(self.store, tail=not self.store.exclusive)
        # every transition the store commits, and those other nodes report, go out here
        self.publisher = Publisher(self.events, self.metrics, self._notify)
        self._lag_watch: asyncio.Task[None] | None = None
        # Kept at start: asyncio.get_running_loop() costs a getpid() system call, once an
        # enqueue otherwise.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: HttpListener | None = None
        self._started = False

    def _build_registry(self, tasks: Iterable[str | ModuleType | TaskSpec]) -> Registry:
        items = list(tasks)
        load_task_modules(t for t in items if isinstance(t, str | ModuleType))
        registry = Registry([*builtin_specs(self._http_task), self.webhooks.spec()])
        for spec in default_registry:
            registry.add(spec)
        for item in items:
            if isinstance(item, TaskSpec):
                registry.add(item)
        return registry

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.store.subscribe(on_due=self._on_due, on_transitions=self.publisher.publish)
        await self.store.open()
        await self.events.start()
        report = await self.store.recover_orphans(self.clock.now(), self.external_queues)
        if report.requeued or report.dead_lettered:
            log.warning(
                "recovered jobs left running by a previous process: requeued %d, dead-lettered %d",
                len(report.requeued),
                len(report.dead_lettered),
            )
        await self._sync_task_schedules()
        self.worker.start()
        self.scheduler.start()
        self.retention.start()
        self._lag_watch = asyncio.create_task(self._watch_loop_lag(), name="jobserver-lag")
        self._started = True

    async def stop(self, grace_period_s: float | None = None) -> None:
        """Refuse new requests, let running jobs finish (then release them), close the store."""
        if not self._started:
            return
        self._started = False
        # Long-polls answer now with the job as it stands, so they don't hold the shutdown;
        # event streams end.
        for job_id in list(self._waiters):
            self._notify(job_id)
        self.events.close()
        self.leasing.stop()  # external workers' long polls too, before the listener waits on them
        if self._listener is not None:
            await self._listener.close()
            self._listener = None
        grace = self.grace_period_s if grace_period_s is None else grace_period_s
        if self._lag_watch is not None:
            self._lag_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lag_watch
        await self.scheduler.stop()
        await self.retention.stop()
        await self.worker.stop(grace)
        if self.processes is not None:
            await self.processes.close()
        await self._http_task.close()
        await self.store.close()
        self._thread_pool.shutdown(wait=False, cancel_futures=True)
        for job_id in list(self._waiters):
            self._notify(job_id)

    async def __aenter__(self) -> JobServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def lifespan(self, app: web.Application) -> AsyncIterator[None]:
        """For `app.cleanup_ctx`: start with the host application, stop with it.

        app.add_subapp("/jobs-api", server.create_app())
        app.cleanup_ctx.append(server.lifespan)
        """
        await self.start()
        yield
        await self.stop()

    def create_app(self) -> web.Application:
        """The HTTP API as an aiohttp application; mount it with `app.add_subapp(...)`."""
        return create_app(self)

    async def serve(self, host: str = "127.0.0.1", port: int = 8000) -> list[str]:
        """Serve the HTTP API; returns the addresses it listens on."""
        self._listener = HttpListener(self)
        return await self._listener.open(host, port)

    # -- jobs -------------------------------------------------------------------------------------
    def task_spec(self, name: str) -> TaskSpec:
        spec = self.registry.get(name)
        # An internal task (webhook delivery) is the server's to enqueue, in SQL: enqueued by a
        # client, it would send a genuinely signed record of any job to an allowed host.
        if spec is None or spec.internal:
            raise ValidationError("task", f"unknown task {name!r}")
        return spec

    async def enqueue(
        self,
        task: str,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Job:
        """Enqueue one job; returns once it is committed to disk.

        Options (job_options.OPTIONS): queue, priority, delay_s or run_at (an aware datetime,
        RFC 3339 text or epoch seconds), max_retries, timeout_s, backoff, idempotency_key..."""
        return (await self.submit(task, args, kwargs, **options)).job

    async def submit(self, task: str, *args: Any, **options: Any) -> Enqueued:
        """Enqueue one job; `created` is False when an idempotency key matched an earlier job."""
        return await self.submit_soon(task, *args, **options)

    def submit_soon(self, task: str, *args: Any, **options: Any) -> asyncio.Future[Enqueued]:
        """submit() for a caller that is not a coroutine (the HTTP fast path: a task a request
        would cost more than the rest of its Python). A bad request raises at once; the
        future holds the job once committed, and its `pending` has been published before the
        future's callbacks run (the store publishes a batch's transitions before it settles)."""
        job = self.new_job(task, *args, **options)
        now = self.clock.now()
        written = self.store.enqueue_gathered(job, now)
        if written is None:
            loop = self._loop or asyncio.get_running_loop()
            return loop.create_task(self._enqueue_one(job, now))
        self._wake_after_write([job], now)  # queued: gathered jobs have no dependencies
        return written

    async def _enqueue_one(self, job: NewJob, now: float) -> Enqueued:
        return (await self._enqueue_and_wake([job], now))[0]

    def _queue_for(self, spec: TaskSpec, given: Any, checked: str) -> str:
        """The queue a job of `spec` goes to: an external task's own (whatever else is given,
        a 422; "default", a schedule's own default, means none was chosen); any other, the
        one checked, unless it holds external tasks' jobs."""
        if spec.external_queue is not None:
            if given not in (None, "default", spec.external_queue):
                raise ValidationError(
                    "queue", f"task {spec.name!r} is external: its jobs go to"
                    f" {spec.external_queue!r}",
                )  # fmt: skip
            return spec.external_queue
        if checked in self.external_queues:
            raise ValidationError("queue", f"queue {checked!r} holds external tasks' jobs only")
        return checked

    def new_job(
        self,
        task: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> NewJob:
        """A job request checked (once, here: see job_options.OPTIONS for each option) with
        the task's defaults filled in; ValidationError naming the option for a bad value.

        `delay_s` / `deadline_s` are seconds from now; `run_at` / `deadline` epoch seconds."""
        o = check_options({"task": task, "args": args, "kwargs": kwargs, **options})
        spec = self.task_spec(task)
        o["queue"] = self._queue_for(spec, options.get("queue"), o["queue"])
        now = self.clock.now()
        run_at = o["run_at"] if o["delay_s"] is None else now + o["delay_s"]
        deadline = o["deadline"] if o["deadline_s"] is None else now + o["deadline_s"]
        if deadline is not None and deadline < (run_at if run_at is not None else now):
            raise ValidationError("deadline", "is before the job would start")
        if o["callback_url"] is not None:
            self.webhooks.check_url(o["callback_url"])
        backoff = o["backoff"]
        return NewJob(
            task=task,
            args=list(o["args"]),
            kwargs=dict(o["kwargs"]),
            queue=o["queue"],
            priority=o["priority"],
            run_at=run_at,
            max_retries=spec.max_retries if o["max_retries"] is None else o["max_retries"],
            timeout_s=spec.timeout_s if o["timeout_s"] is None else o["timeout_s"],
            # a partial policy (some of base_s, factor, cap_s) fills in from the task's own
            backoff=dataclasses.replace(spec.backoff, **backoff)
            if isinstance(backoff, dict)
            else backoff,
            idempotency_key=o["idempotency_key"],
            idempotency_window_s=self.idempotency_window_s,
            deadline=deadline,
            unique_key=o["unique_key"],
            depends_on=list(o["depends_on"]),
            pass_result=o["pass_result"],
            on_dependency_failure=o["on_dependency_failure"],
            callback_url=o["callback_url"],
            traceparent=o["traceparent"],
            fairness_key=o["fairness_key"],
        )

    async def enqueue_many(self, jobs: Sequence[NewJob]) -> list[Enqueued]:
        """Enqueue jobs in one transaction: all of them or none."""
        for job in jobs:
            self.task_spec(job.task)
        return await self._enqueue_and_wake(jobs, self.clock.now())

    def _on_due(self) -> None:
        self.worker.wake()
        self.leasing.wake()

    def _wake_after_write(self, jobs: Sequence[NewJob], now: float) -> None:
        """Woken before the commit, the dispatcher's claim can join the enqueue's transaction:
        the job starts one commit after its enqueue, not two. Called in the step in which the
        store queues the write (see Store.enqueue), never a step before it: the dispatcher
        resumes a loop turn later, so its claim is queued after the insert and sees the job,
        and before the writer, which waits a turn more (GroupCommitQueue._run), takes the
        batch. (Woken earlier, a claim could run before the insert and the wake be spent.)"""
        # A job with dependencies waits for them; the store tells when it becomes due.
        due = [
            now if j.run_at is None else j.run_at
            for j in jobs
            if not (j.depends_on or j.depends_on_index)
        ]
        if due:
            self.worker.wake_for(min(due))
            self.leasing.wake()  # (after the commit is soon enough: a lease looks again)

    async def _enqueue_and_wake(self, jobs: Sequence[NewJob], now: float) -> list[Enqueued]:
        self._wake_after_write(jobs, now)  # in this step, which queues the write
        results = await self.store.enqueue(jobs, now)
        self._wake_for_unblocked(results)
        return results

    def _wake_for_unblocked(self, results: Sequence[Enqueued]) -> None:
        # A job whose dependencies had all succeeded is due now: the wake at write time left
        # it out. (The store published the jobs as it committed them.)
        for r in results:
            if r.created and r.job.depends_on and not r.job.blocked_by:
                self.worker.wake_for(r.job.run_at)

    async def get_job(self, job_id: int) -> Job:
        job = await self.store.get_job(job_id)
        if job is None:
            raise NotFound(f"no job {job_id}")
        return job

    async def list_attempts(self, job_id: int) -> list[Attempt]:
        """The job's history: each attempt's start, end, node, outcome and error."""
        attempts = await self.store.list_attempts(job_id)
        if attempts is None:
            raise NotFound(f"no job {job_id}")
        return attempts

    async def list_jobs(self, flt: JobFilter, limit: int, before_id: int | None) -> list[Job]:
        return await self.store.list_jobs(flt, limit, before_id)

    async def cancel(self, job_id: int) -> Job:
        """Pending: cancelled at once. Running: the task is cancelled. Terminal: Conflict."""
        job, before = await self.store.request_cancel(job_id, self.clock.now())
        if before == JobState.RUNNING:
            self.worker.cancel_running(job_id)
        return job

    # -- workflows --------------------------------------------------------------------------------
    async def enqueue_workflow(
        self,
        spec: dict[str, Any],
        *,
        parse_job: ParseJob | None = None,
        on_dependency_failure: str | None = None,
    ) -> tuple[int, list[Job]]:
        """Enqueue a chain / group / chord (see jobserver.workflows) in one transaction;
        returns the workflow id and its jobs, dependencies first."""
        if on_dependency_failure is not None:
            OPTIONS_BY_NAME["on_dependency_failure"].check(on_dependency_failure)
        flat = workflows.flatten(spec, parse_job or dict)
        new_jobs = []
        for item in flat:
            options = {"on_dependency_failure": on_dependency_failure, **item.options}
            try:
                new = self.new_job(**options)
            except ValidationError as exc:
                where = ".".join(p for p in (item.path, exc.field) if p)
                raise ValidationError(where or None, exc.message) from None
            new.depends_on_index = item.depends_on_index
            new.pass_result = item.pass_result or new.pass_result
            new_jobs.append(new)
        workflow_id, jobs = await self.store.create_workflow(new_jobs, self.clock.now())
        self.worker.wake()
        return workflow_id, jobs

    # -- durable steps (durable.py) ----------------------------------------------------------------
    async def signal(self, key: str, payload: Any = None) -> tuple[int, int]:
        """Send `payload` (JSON) to the jobs waiting for `key` with ctx.wait_for_event, or
        keep it for the next one that does. Returns (the signal's id, jobs woken)."""
        check_signal_key(key)
        encoded = check_signal_payload(payload)
        signal_id, woken = await self.store.send_signal(key, encoded, self.clock.now())
        if woken:
            self.worker.wake()
        return signal_id, woken

    async def get_steps(self, job_id: int) -> list[Step]:
        """A job's durable steps, in order; NotFound for a job that does not exist."""
        await self.get_job(job_id)
        return await self.store.job_steps(job_id)

    async def get_workflow(self, workflow_id: int) -> tuple[str, list[Job]]:
        jobs = await self.store.workflow_jobs(workflow_id)
        if jobs is None:
            raise NotFound(f"no workflow {workflow_id}")
        return workflows.workflow_status(jobs), jobs

    async def delete_job(self, job_id: int) -> None:
        await self.store.delete_job(job_id)

    async def why_waiting(self, job: Job) -> dict[str, Any] | None:
        """For a pending job: why it has not started (scheduled, paused, at a limit...)."""
        if job.status != JobState.PENDING:
            return None
        now = self.clock.now()
        info = await self.store.get_queue(job.queue, now)
        if info is None:
            return flow.waiting_reason(job, QueueSettings(), 0, None, now)
        reason = flow.waiting_reason(
            job, info.settings, info.counts[JobState.RUNNING.value], info.rate_tokens, now
        )
        if job.fairness_key is not None and reason is not None and reason["code"] == "due":
            key = await self.store.get_key(job.queue, job.fairness_key, now)
            held = fairness.waiting_reason(
                key.key, key.queue, key.policy, key.running, key.rate_tokens, now
            )
            if held is not None:
                return held
        return reason

    # -- queues -----------------------------------------------------------------------------------
    async def list_queues(self) -> list[QueueInfo]:
        return await self.store.list_queues(self.clock.now())

    async def get_queue(self, name: str) -> QueueInfo:
        info = await self.store.get_queue(name, self.clock.now())
        if info is None:
            raise NotFound(f"no queue {name!r}")
        return info

    async def configure_queue(self, name: str, **changes: Any) -> QueueInfo:
        """Set some of paused, concurrency_limit, rate_limit, rate_burst, max_depth (None
        lifts a limit); ValidationError naming a bad one (job_options.QUEUE_SETTINGS)."""
        changes = check_queue_settings(changes)
        info = await self.store.configure_queue(name, changes, self.clock.now())
        log.info("queue %r: %s", name, changes)
        self.worker.wake()
        return info

    async def configure_key(self, queue: str, key: str, **changes: Any) -> KeyState:
        """Set some of a fairness key's own weight, concurrency_limit, rate_limit, rate_burst
        (None: back to its queue's key_* default); ValidationError naming a bad one."""
        OPTIONS_BY_NAME["queue"].check(queue)
        check_fairness_key(key)
        changes = check_key_settings(changes)
        state = await self.store.configure_key(queue, key, changes, self.clock.now())
        log.info("queue %r, key %r: %s", queue, key, changes)
        self.worker.wake()
        return state

    async def get_key(self, queue: str, key: str) -> KeyState:
        """A fairness key's settings, what holds for it, its running jobs and its bucket (a
        key never seen has its queue's defaults)."""
        OPTIONS_BY_NAME["queue"].check(queue)
        check_fairness_key(key)
        return await self.store.get_key(queue, key, self.clock.now())

    # -- schedules --------------------------------------------------------------------------------
    async def save_schedule(
        self,
        name: str,
        task: str,
        cron: str,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Schedule:
        """Save (or replace) the schedule `name`; options: queue, priority, timezone, missed,
        paused. ValidationError names a bad field (job_options.SCHEDULE_OPTIONS)."""
        fields = check_schedule(
            {"name": name, "task": task, "cron": cron, "args": args, "kwargs": kwargs, **options}
        )
        spec = self.task_spec(task)
        check_cron(fields["cron"], fields["timezone"])
        fields["queue"] = self._queue_for(spec, options.get("queue"), fields["queue"])
        schedule = Schedule(
            **fields,
            next_tick_at=next_tick(fields["cron"], self.clock.now(), fields["timezone"]),
            source="api",
        )
        saved = await self.store.save_schedule(schedule, keep_next_tick=True)
        self.scheduler.wake()
        return saved

    async def list_schedules(self) -> list[Schedule]:
        return await self.store.list_schedules()

    async def get_schedule(self, name: str) -> Schedule:
        schedule = await self.store.get_schedule(name)
        if schedule is None:
            raise NotFound(f"no schedule {name!r}")
        return schedule

    async def delete_schedule(self, name: str) -> None:
        if not await self.store.delete_schedule(name):
            raise NotFound(f"no schedule {name!r}")

    async def _sync_task_schedules(self) -> None:
        """Schedules declared with @task(cron=...): saved at start (keeping their next tick
        across restarts); those of tasks that no longer declare one are removed."""
        now = self.clock.now()
        declared = {f"task:{spec.name}": spec for spec in self.registry if spec.cron}
        for name, spec in declared.items():
            assert spec.cron is not None
            await self.store.save_schedule(
                Schedule(
                    name=name,
                    task=spec.name,
                    cron=spec.cron,
                    timezone=spec.cron_timezone,
                    missed=spec.cron_missed,
                    next_tick_at=next_tick(spec.cron, now, spec.cron_timezone),
                    source="task",
                ),
                keep_next_tick=True,
            )
        for schedule in await self.store.list_schedules():
            if schedule.source == "task" and schedule.name not in declared:
                await self.store.delete_schedule(schedule.name)

    def _job_for_tick(self, schedule: Schedule, tick: float) -> NewJob:
        # The key makes a tick's job unique even if two processes were to fire it.
        return self.new_job(
            schedule.task,
            schedule.args,
            schedule.kwargs,
            queue=schedule.queue,
            priority=schedule.priority,
            idempotency_key=f"schedule:{schedule.name}:{tick:.3f}",
        )

    def _on_fired(self, jobs: list[Job]) -> None:
        """A schedule's jobs were written (and published as they committed): claim them."""
        self.worker.wake()

    async def wait_for(self, job_id: int, timeout_s: float | None = None) -> Job:
        """The job once it is terminal, or as it stands when `timeout_s` runs out."""
        job = await self.get_job(job_id)
        if job.is_terminal or timeout_s == 0 or not self._started:
            return job
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(job_id, []).append(fut)
        try:
            job = await self.get_job(job_id)  # it may have ended while we registered
            if not job.is_terminal:
                await asyncio.wait_for(asyncio.shield(fut), timeout_s)
        except TimeoutError:
            pass
        finally:
            waiters = self._waiters.get(job_id)
            if waiters is not None and fut in waiters:
                waiters.remove(fut)
                if not waiters:
                    del self._waiters[job_id]
        return await self.get_job(job_id)

    # -- dead letters -----------------------------------------------------------------------------
    async def list_dead_letters(
        self, limit: int, before_id: int | None, flt: DeadLetterFilter | None = None
    ) -> list[DeadLetter]:
        """Newest first; `flt` by task, queue and time (its error_type is not read here)."""
        return await self.store.list_dead_letters(limit, before_id, flt)

    async def select_dead_letters(
        self, flt: DeadLetterFilter, limit: int
    ) -> tuple[list[DeadLetter], bool]:
        """Up to `limit` dead letters that match, newest first, and whether more do."""
        found: list[DeadLetter] = []
        cursor = None
        while True:
            page = await self.store.list_dead_letters(DEAD_LETTER_SCAN, cursor, flt)
            for letter in page:
                if flt.matches(letter):
                    if len(found) == limit:
                        return found, True
                    found.append(letter)
            if len(page) < DEAD_LETTER_SCAN:
                return found, False
            cursor = page[-1].id

    async def purge_queue(
        self, name: str, *, limit: int = MAX_BULK, dry_run: bool = False
    ) -> tuple[int, bool, list[int]]:
        """Cancel the queue's pending jobs, oldest first, up to `limit`, in one transaction
        (each as cancel() does: their dependants follow their policy). Returns how many are
        taken (`dry_run`: would be), whether more are pending, and the ids cancelled."""
        OPTIONS_BY_NAME["queue"].check(name)
        limit = DEAD_LETTER_SELECTION_BY_NAME["limit"].check(limit)
        dry_run = DEAD_LETTER_SELECTION_BY_NAME["dry_run"].check(dry_run)
        found = await self.store.list_jobs(
            JobFilter(status=JobState.PENDING, queue=name), limit + 1, None
        )
        matched, more = min(len(found), limit), len(found) > limit
        if dry_run or not matched:
            return matched, more, []
        cancelled = await self.store.purge_queue(name, limit, self.clock.now())
        return len(cancelled), more, cancelled

    async def requeue_dead_letters(self, **selection: Any) -> BulkResult:
        """Enqueue again, in one transaction, the dead letters that match (each as
        requeue_dead_letter does). Selection (job_options.DEAD_LETTER_SELECTION): task, queue,
        error_type, failed_after, failed_before, limit (1000), dry_run (only say which)."""
        flt, limit, dry_run = self._dead_letter_selection(selection)
        matched, more = await self.select_dead_letters(flt, limit)
        if dry_run or not matched:
            return BulkResult(matched, more, [])
        jobs = await self.store.requeue_dead_letters([d.id for d in matched], self.clock.now())
        self.worker.wake()
        return BulkResult(matched, more, [j.id for j in jobs])

    async def delete_dead_letters(self, **selection: Any) -> BulkResult:
        """Delete, in one transaction, the dead letters that match; the selection as
        requeue_dead_letters takes it."""
        flt, limit, dry_run = self._dead_letter_selection(selection)
        matched, more = await self.select_dead_letters(flt, limit)
        if dry_run or not matched:
            return BulkResult(matched, more, [])
        deleted = await self.store.delete_dead_letters([d.id for d in matched])
        return BulkResult(matched, more, deleted)

    @staticmethod
    def _dead_letter_selection(selection: dict[str, Any]) -> tuple[DeadLetterFilter, int, bool]:
        fields = check_dead_letter_selection(selection)
        limit, dry_run = fields.pop("limit"), fields.pop("dry_run")
        return DeadLetterFilter(**fields), limit, dry_run

    async def get_dead_letter(self, dead_letter_id: int) -> DeadLetter:
        dl = await self.store.get_dead_letter(dead_letter_id)
        if dl is None:
            raise NotFound(f"no dead letter {dead_letter_id}")
        return dl

    async def requeue_dead_letter(self, dead_letter_id: int) -> Job:
        job = await self.store.requeue_dead_letter(dead_letter_id, self.clock.now())
        self.worker.wake()
        return job

    async def delete_dead_letter(self, dead_letter_id: int) -> None:
        if not await self.store.delete_dead_letter(dead_letter_id):
            raise NotFound(f"no dead letter {dead_letter_id}")

    async def check_ready(self) -> None:
        await self.store.check_writable()
        abandoned = self.executor.abandoned_threads
        if abandoned >= self.executor.abandoned_cap > 0:
            # Every spare thread holds a hung sync task: new sync jobs would wait for one.
            raise StorageUnavailable(
                f"{abandoned} sync task thread(s) still run after their attempts ended (hung"
                " tasks); restart the server to reclaim them"
            )

    # -- transitions ------------------------------------------------------------------------------
    async def render_metrics(self) -> bytes:
        queues = await self.store.list_queues(self.clock.now())
        self.metrics.abandoned.labels("thread").set(self.executor.abandoned_threads)
        self.metrics.abandoned.labels("coroutine").set(self.worker.abandoned_tasks)
        return self.metrics.render(queues, await self.store.count_dead_letters())

    async def _watch_loop_lag(self) -> None:
        """Measure how late the loop wakes a timer; warn, naming the running tasks, when a
        task blocks it (an async task doing blocking work should be a sync task)."""
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(LAG_PROBE_S)
            lag = max(0.0, loop.time() - before - LAG_PROBE_S)
            self.metrics.loop_lag.set(lag)
            if lag >= LAG_WARNING_S:
                running_jobs = self.worker.running_jobs
                for task_name in {j.task for j in running_jobs}:
                    self.metrics.loop_blocks.inc((task_name,))
                running = sorted({f"{j.task} (job {j.id})" for j in running_jobs})
                log.warning(
                    "the event loop was blocked for %.2f s; running then: %s. An async task that"
                    " blocks (time.sleep, CPU work, blocking I/O) should be a sync task, which"
                    " runs in a thread.",
                    lag,
                    ", ".join(running) or "no jobs",
                )

    def _notify(self, job_id: int) -> None:
        waiters = self._waiters.pop(job_id, None)
        if waiters is None:  # the usual case: nobody waits for this job
            return
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)
