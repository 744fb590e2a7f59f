"""Task bodies in child processes: a task that crashes, hangs, leaks or calls os._exit() takes
down a child, never the server.

A supervised pool of child Python processes (`main()` below) runs the tasks marked
`@task(isolation="process")` (or every task, with the server's `isolation="process"`); the
queue, the workers and the HTTP API stay in the server's one process. For each attempt:
- the task's `timeout` is a soft limit: `SoftTimeLimitExceeded` is raised in the task, which
  may catch it and clean up;
- its hard limit (`hard_timeout`, default the soft one plus HARD_GRACE_S) kills the child: the
  attempt ends as `timeout` and is retried by the task's policy;
- a child that dies mid-task (a crash, os._exit, the kernel's OOM killer) ends only that
  attempt, as `WorkerLost` (retried: the task did not say it failed);
- a child is replaced after `max_tasks_per_child` tasks, or once its memory passes
  `max_memory_mb` after a task.

The protocol is one JSON line each way a task: the function by module and name, its
arguments and what its JobContext holds; back, the result (already JSON) or the error record.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import signal
import sys
from dataclasses import dataclass
from typing import Any

from . import codec
from .models import Job, error_info
from .outcomes import Failed, returned

log = logging.getLogger(__name__)

HARD_GRACE_S = 5.0  # a task's hard limit, past its soft one, when it sets none of its own
START_TIMEOUT_S = 30.0  # a child that has not said it is ready by then failed to start
MEMORY_CHECK_EVERY = 8  # a child's memory is read after its 1st, 9th, 17th... task
_READY = b"ready\n"


class SoftTimeLimitExceeded(Exception):
    """Raised in an isolated task when its soft time limit (the task's timeout) passes."""


@dataclass(slots=True)
class ChildOutcome:
    """What a child reported (`result` JSON, or `error` with `retryable`), or why there is no
    report: `killed` (hard limit), `lost` (the child died)."""

    result: bytes | None = None
    error: dict[str, Any] | None = None
    retryable: bool = False
    killed: bool = False
    lost: bool = False


class _Child:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.tasks_run = 0

    def rss_mb(self) -> float:
        try:
            with open(f"/proc/{self.proc.pid}/statm", "rb") as statm:
                pages = int(statm.read().split()[1])
        except (OSError, ValueError, IndexError):
            return 0.0
        return pages * os.sysconf("SC_PAGE_SIZE") / 1e6

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()


class ProcessPool:
    """Up to `size` children, started when first needed and replaced as they wear out."""

    def __init__(
        self, size: int, *, max_tasks_per_child: int = 10_000, max_memory_mb: float = 1024.0
    ) -> None:
        self.size = size
        self.max_tasks_per_child = max_tasks_per_child
        self.max_memory_mb = max_memory_mb
        self._idle: list[_Child] = []
        self._slots = asyncio.Semaphore(size)
        self._all: set[_Child] = set()
        self._reaping: set[asyncio.Task[None]] = set()
        # A worn child's successor, started as it is let go: a child takes about as long to
        # start (it imports the task modules) as hundreds of short tasks take to run.
        self._spare: asyncio.Task[_Child] | None = None
        self.started = 0  # children started, replacements included
        self.lost = 0  # children that died under a task, or were killed at its hard limit

    async def run(
        self,
        job: Job,
        fn: Any,
        ctx: dict[str, Any] | None,
        soft_s: float | None,
        hard_s: float | None,
    ) -> ChildOutcome:
        request = codec.dumps(
            {
                "m": fn.__module__,
                "f": fn.__qualname__,
                "a": job.args,
                "k": job.kwargs,
                "ctx": ctx,
                "soft": soft_s,
            }
        )
        async with self._slots:
            try:
                child = await self._take()
            except (RuntimeError, OSError) as exc:
                log.error("a task child process could not start: %s", exc)
                return ChildOutcome(lost=True)
            answered = False
            try:
                outcome = await self._exchange(child, request, hard_s)
                answered = not (outcome.killed or outcome.lost)
                return outcome
            finally:
                if not answered:  # killed, lost, or the attempt cancelled mid-task
                    self._retire(child, kill=True)
                    self._start_spare()
                elif self._worn(child):
                    self._retire(child, kill=False)
                    self._start_spare()
                else:
                    self._idle.append(child)

    async def _take(self) -> _Child:
        if self._idle:
            return self._idle.pop()
        if self._spare is not None:
            spare, self._spare = self._spare, None
            return await spare
        return await self._start()

    def _start_spare(self) -> None:
        if self._spare is None:
            self._spare = asyncio.get_running_loop().create_task(self._start())
            self._spare.add_done_callback(_retrieve)

    async def _exchange(self, child: _Child, request: bytes, hard_s: float | None) -> ChildOutcome:
        assert child.proc.stdin is not None and child.proc.stdout is not None
        child.tasks_run += 1
        try:
            child.proc.stdin.write(request + b"\n")
            await child.proc.stdin.drain()
            line = await asyncio.wait_for(child.proc.stdout.readline(), hard_s)
        except TimeoutError:
            self.lost += 1
            return ChildOutcome(killed=True)
        except (ConnectionError, BrokenPipeError):
            line = b""
        if not line:
            self.lost += 1
            return ChildOutcome(lost=True)
        kind, payload = line[:1], line[1:].rstrip(b"\n")
        if kind == b"R":
            return ChildOutcome(result=payload)
        report = codec.loads(payload)
        return ChildOutcome(error=report["error"], retryable=bool(report["retryable"]))

    def _worn(self, child: _Child) -> bool:
        if child.tasks_run >= self.max_tasks_per_child:
            return True
        if child.tasks_run % MEMORY_CHECK_EVERY != 1:  # /proc costs more than a no-op task
            return False
        rss = child.rss_mb()
        if rss > self.max_memory_mb:
            log.info(
                "replacing task child %s: %.0f MB over %s", child.proc.pid, rss, self.max_memory_mb
            )
            return True
        return False

    async def _start(self) -> _Child:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "from jobserver.isolation import main; main()",
            codec.dumps(sys.path).decode(),  # the child imports task modules as this process does
            str(os.getpid()),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=2**30,  # a result line may be large
        )
        child = _Child(proc)
        self._all.add(child)
        self.started += 1
        assert proc.stdout is not None
        try:
            ready = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT_S)
        except TimeoutError:
            ready = b""
        if ready != _READY:
            self._retire(child, kill=True)
            raise RuntimeError("a task child process did not start")
        return child

    def _retire(self, child: _Child, *, kill: bool) -> None:
        """Let an idle child go (it reads EOF and exits), or kill one that is mid-task."""
        self._all.discard(child)
        if child.proc.stdin is not None:
            child.proc.stdin.close()
        if kill:
            child.kill()
        reap = asyncio.get_running_loop().create_task(self._reap(child))
        self._reaping.add(reap)
        reap.add_done_callback(self._reaping.discard)

    async def _reap(self, child: _Child) -> None:
        try:
            await asyncio.wait_for(child.proc.wait(), 2.0)
        except TimeoutError:
            child.kill()
            await child.proc.wait()

    async def close(self) -> None:
        """Let idle children go, kill the rest, and wait for them all."""
        if self._spare is not None:
            with contextlib.suppress(Exception):
                self._idle.append(await self._spare)
            self._spare = None
        idle = set(self._idle)
        self._idle.clear()
        for child in list(self._all):
            self._retire(child, kill=child not in idle)
        if self._reaping:
            await asyncio.wait(self._reaping)


def _retrieve(task: asyncio.Task[Any]) -> None:
    """A spare that failed to start: its error is told to the job that takes it (or logged
    here, if none does), not reported as never retrieved."""
    if not task.cancelled() and task.exception() is not None:
        log.debug("a spare task child failed to start: %s", task.exception())


# -- the child ------------------------------------------------------------------------------------
def _soft_limit(signum: int, frame: Any) -> None:
    raise SoftTimeLimitExceeded("the task's soft time limit passed")


def _resolve(module: str, qualname: str) -> Any:
    target: Any = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    return target


def _run_one(request: dict[str, Any]) -> bytes:
    from .tasks import JobContext, bind_current_job

    fn = _resolve(request["m"], request["f"])
    spec = getattr(fn, "task_spec", None)
    kwargs = dict(request["k"])
    ctx_fields = request["ctx"]
    if ctx_fields is not None:
        ctx = JobContext(**ctx_fields, report_progress=lambda fraction, message: None)
        bind_current_job(ctx)
        if spec is not None and spec.wants_ctx:
            kwargs["ctx"] = ctx
    soft = request["soft"]
    if soft:
        signal.setitimer(signal.ITIMER_REAL, soft)
    try:
        result = fn(*request["a"], **kwargs)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
    except BaseException as exc:  # SystemExit included: it ends this task, not the child
        retryable = spec.is_retryable(exc) if spec is not None else isinstance(exc, Exception)
        return b"E" + codec.dumps({"error": error_info(exc), "retryable": retryable})
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    outcome = returned(result)
    if isinstance(outcome, Failed):
        return b"E" + codec.dumps({"error": outcome.error, "retryable": outcome.retryable})
    return b"R" + outcome.result


def _die_with(parent: int) -> None:
    """Linux: the kernel kills this child when the server dies, kill -9 included (a child
    spinning in a task never reads the EOF that would tell it)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # the server died before the call above
        os._exit(0)


def main() -> None:
    _die_with(int(sys.argv[2]))
    sys.path[:] = [*codec.loads(sys.argv[1]), *sys.path]
    signal.signal(signal.SIGALRM, _soft_limit)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server's Ctrl-C is the server's
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a task's print() must not write into the protocol
    stdout.write(_READY)
    stdout.flush()
    for line in stdin:
        stdout.write(_run_one(codec.loads(line)) + b"\n")
        stdout.flush()
