"""`@task`, the task registry, and the context a running task can see."""

from __future__ import annotations

import contextvars
import importlib
import inspect
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar, overload

from .errors import PermanentError
from .models import MISSED_TICK_POLICIES, Backoff
from .schedule import check_cron

if TYPE_CHECKING:
    from .durable import DurableSteps

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_MAX_RETRIES = 3


@dataclass(frozen=True, slots=True)
class TaskSpec:
    name: str
    fn: Callable[..., Any]
    is_async: bool
    wants_ctx: bool  # the function takes a `ctx` parameter
    timeout_s: float | None = None
    max_retries: int = DEFAULT_MAX_RETRIES
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    backoff: Backoff = field(default_factory=Backoff)
    cron: str | None = None  # run on this schedule, with no arguments
    cron_timezone: str = "UTC"
    cron_missed: str = "skip"  # ticks missed while down: "skip" or "catch_up"
    # the server's own (webhook delivery): run by the worker, never enqueued from outside
    internal: bool = False
    # "process": run in a child process (jobserver/isolation.py); "inline": in the server's;
    # None: as the server's default (--isolation)
    isolation: str | None = None
    hard_timeout_s: float | None = None  # isolated only: the child is killed past it
    # Run by a worker outside the server, which leases its jobs over HTTP (POST /leases): its
    # jobs all go to this queue, which the server's own workers leave alone.
    external_queue: str | None = None

    def is_retryable(self, exc: BaseException) -> bool:
        return not isinstance(exc, PermanentError) and isinstance(exc, self.retry_on)


class Registry:
    """Task names to their functions."""

    def __init__(self, specs: Iterable[TaskSpec] = ()) -> None:
        self._tasks: dict[str, TaskSpec] = {}
        for spec in specs:
            self.add(spec)

    def add(self, spec: TaskSpec) -> None:
        existing = self._tasks.get(spec.name)
        if existing is not None and _origin(existing.fn) != _origin(spec.fn):
            raise ValueError(
                f"task name {spec.name!r} is taken by {_origin(existing.fn)};"
                f" give {_origin(spec.fn)} another name with @task(name=...)"
            )
        self._tasks[spec.name] = spec

    def get(self, name: str) -> TaskSpec | None:
        return self._tasks.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def __iter__(self) -> Iterator[TaskSpec]:
        return iter(self._tasks.values())

    def specs(self) -> list[TaskSpec]:
        return list(self._tasks.values())

    def names(self) -> list[str]:
        """The tasks a client may enqueue (the server's internal ones left out)."""
        return sorted(name for name, spec in self._tasks.items() if not spec.internal)


def external_task(
    name: str,
    *,
    queue: str = "external",
    timeout: float | None = None,
    max_retries: int | None = None,
    backoff: Backoff | None = None,
) -> TaskSpec:
    """A task that runs outside the server, in a worker of any language that leases its jobs
    over HTTP (POST /leases, jobserver/leasing.py): declared by name, with no code here. Its
    jobs go to `queue`, which holds only external tasks' jobs; `timeout` (seconds from a
    lease's start), `max_retries` and `backoff` are its jobs' defaults, as @task's."""
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise ValueError("timeout must be a number of seconds greater than 0")
    return TaskSpec(
        name=name,
        fn=_runs_elsewhere,
        is_async=True,
        wants_ctx=False,
        timeout_s=timeout,
        max_retries=DEFAULT_MAX_RETRIES if max_retries is None else max_retries,
        backoff=backoff or Backoff(),
        external_queue=queue,
    )


async def _runs_elsewhere(*args: Any, **kwargs: Any) -> None:
    raise PermanentError("an external task runs in a worker that leases it over HTTP")


def _origin(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


# Every @task lands here; a JobServer copies it when it starts.
default_registry = Registry()


@overload
def task(fn: F, /) -> F: ...


@overload
def task(
    *,
    name: str | None = None,
    timeout: float | None = None,
    max_retries: int | None = None,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
    backoff: Backoff | None = None,
    cron: str | None = None,
    cron_timezone: str = "UTC",
    cron_missed: str = "skip",
    registry: Registry | None = None,
    isolation: str | None = None,
    hard_timeout: float | None = None,
) -> Callable[[F], F]: ...


def task(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    timeout: float | None = None,
    max_retries: int | None = None,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
    backoff: Backoff | None = None,
    cron: str | None = None,
    cron_timezone: str = "UTC",
    cron_missed: str = "skip",
    registry: Registry | None = None,
    isolation: str | None = None,
    hard_timeout: float | None = None,
) -> Any:
    """Register an async or sync function as a task; the function itself is returned unchanged.

    `timeout` (seconds) and `max_retries` are defaults a job may override; only exceptions in
    `retry_on` are retried; a function with a `ctx` parameter receives the JobContext.
    `cron` ("*/5 * * * *") also runs it on that schedule, in `cron_timezone`; ticks missed while
    the server was down are skipped, or all run with `cron_missed="catch_up"`.
    `isolation="process"` runs it in a child process (jobserver/isolation.py): `timeout` is
    then a soft limit (SoftTimeLimitExceeded raised in the task) and `hard_timeout` (default:
    the timeout plus 5 s) kills the child; "inline" keeps it in the server's process whatever
    the server's default.
    """

    def register(f: F) -> F:
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive")
        if max_retries is not None and max_retries < 0:
            raise ValueError("max_retries must be 0 or more")
        if cron is not None:
            check_cron(cron, cron_timezone)
        if cron_missed not in MISSED_TICK_POLICIES:
            raise ValueError(f"cron_missed must be one of {MISSED_TICK_POLICIES}")
        if isolation not in (None, "process", "inline"):
            raise ValueError("isolation must be 'process' or 'inline'")
        if hard_timeout is not None and hard_timeout <= 0:
            raise ValueError("hard_timeout must be positive")
        spec = TaskSpec(
            name=name or f.__name__,
            fn=f,
            is_async=inspect.iscoroutinefunction(f),
            wants_ctx="ctx" in inspect.signature(f).parameters,
            timeout_s=timeout,
            max_retries=DEFAULT_MAX_RETRIES if max_retries is None else max_retries,
            retry_on=retry_on if isinstance(retry_on, tuple) else (retry_on,),
            backoff=backoff or Backoff(),
            cron=cron,
            cron_timezone=cron_timezone,
            cron_missed=cron_missed,
            isolation=isolation,
            hard_timeout_s=hard_timeout,
        )
        (registry or default_registry).add(spec)
        f.task_spec = spec  # type: ignore[attr-defined]
        return f

    if fn is not None:
        return register(fn)
    return register


def load_task_modules(modules: Iterable[str | ModuleType]) -> None:
    """Import task modules named on the command line so their @task decorators run."""
    for module in modules:
        if isinstance(module, str):
            importlib.import_module(module)


class JobContext:
    """What a running task may know and do: its job id, attempt, progress, cancellation.

    A task gets it as a `ctx` parameter, or from `current_job()` anywhere in its call stack.
    Sync tasks run in a thread: they should check `ctx.cancelled` in long loops.
    """

    def __init__(
        self,
        *,
        job_id: int,
        task: str,
        queue: str,
        attempt: int,
        max_retries: int,
        report_progress: Callable[[float, str | None], None],
        traceparent: str | None = None,
    ) -> None:
        self.job_id = job_id
        self.task = task
        self.queue = queue
        self.attempt = attempt
        self.max_retries = max_retries
        self._report_progress = report_progress
        # A plain flag, not a threading.Event: nothing waits on it, and a sync task's thread
        # sees the write at once (one per job; an Event's lock and condition cost more).
        self._cancelled = False
        self.cancel_reason: str | None = None  # "cancelled" | "timeout" | "shutdown" | "lease_lost"
        # results of the jobs this one depends on, by job id (empty for a job without any)
        self.parent_results: dict[int, Any] = {}
        # this attempt's W3C trace context (a child of the job's), for calls the task makes;
        # the http task and webhooks send it as their `traceparent` header
        self.traceparent = traceparent
        # durable steps: set by the worker for a task run in the server's process
        self.durable: DurableSteps | None = None

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def request_cancel(self, reason: str) -> None:
        if self.cancel_reason is None:
            self.cancel_reason = reason
        self._cancelled = True

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Report progress in [0, 1]; safe to call from sync tasks' threads."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError("progress fraction must be between 0 and 1")
        self._report_progress(float(fraction), message)

    # -- durable steps (durable.py) --------------------------------------------------------------
    def _steps(self) -> DurableSteps:
        if self.durable is None:
            raise RuntimeError(
                "durable steps need a task run in the server's process (not isolation='process')"
            )
        return self.durable

    async def step(self, name: str, fn: Callable[..., Any], *args: Any, **options: Any) -> Any:
        """Run `fn(*args)` once for this job and keep its result (JSON): when the job runs
        again, a step already done returns its kept result without running. Steps are
        numbered in call order, and a name that changed at a number fails the job. Options:
        `retries` (in place, before the job's own retry), `retry_delay_s`, `timeout_s`; other
        keyword arguments go to `fn`."""
        return await self._steps().step(name, fn, *args, **options)

    async def sleep(self, seconds: float, name: str = "sleep") -> None:
        """Sleep durably: the job gives its worker slot back and resumes after `seconds`, on
        any node, across restarts."""
        if not seconds >= 0:
            raise ValueError("seconds must be 0 or more")
        steps = self._steps()
        await steps.sleep_until(steps.now() + seconds, name)

    async def sleep_until(self, when: float, name: str = "sleep") -> None:
        """Sleep durably until `when` (epoch seconds)."""
        await self._steps().sleep_until(float(when), name)

    async def wait_for_event(self, key: str, timeout_s: float, name: str | None = None) -> Any:
        """Wait durably for a signal to `key` (POST /signals/{key}, JobServer.signal) and
        return its payload; None if `timeout_s` passes first. A signal sent before the wait is
        kept for it; the job's slot is free while it waits."""
        return await self._steps().wait_for_event(key, timeout_s, name)

    async def run_child(
        self,
        task: str,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        name: str | None = None,
        **options: Any,
    ) -> Any:
        """Start a child job (options as JobServer.enqueue's) as a durable step and return its
        result once it succeeds; the job's slot is free while it waits, and a run after a
        crash awaits the same child, never a second one. A child that fails for good or is
        cancelled raises ChildFailed (a run after that starts a new child for this step).
        The step's name is `child:<task>` unless `name` is given."""
        return await self._steps().run_child(task, args, kwargs, name=name, **options)


_current: contextvars.ContextVar[JobContext] = contextvars.ContextVar("jobserver_current_job")


def current_job() -> JobContext:
    """The context of the job the calling code runs in; LookupError outside a job."""
    return _current.get()


def bind_current_job(ctx: JobContext) -> contextvars.Token[JobContext]:
    return _current.set(ctx)
