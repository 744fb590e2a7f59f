"""Jobs for workers outside the server, in any language, over HTTP: lease, renew, complete,
fail, release (routes in http/routes/leases.py).

An external task (tasks.external_task) is declared by name; its jobs wait in its own queue,
which the server's own workers leave alone. An external worker leases due jobs of such
queues, each under a lease token it shows on every later call: a worker that lost its lease
(it expired and the rescuer took the job back, or the job was cancelled) changes nothing.
Completions, failures and releases are the in-process worker's own moves (Worker.record), so
retries with backoff, dead letters, cancellation, limits, fairness keys and the job's history
behave alike; the rescuer takes back the jobs of a worker that stops renewing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .clock import Clock
from .errors import ValidationError
from .job_options import BY_NAME, MAX_DELAY_S, MAX_ID, Option, check_given
from .models import Job, JobState, error_info
from .outcomes import Failed, returned
from .store.base import Store
from .worker import Worker

log = logging.getLogger(__name__)
MAX_LEASE_S = 3600.0
MAX_WAIT_S = 60.0
MAX_ITEMS = 1000  # jobs a call leases or reports at most
# An error's text is cut to the sizes a job keeps (models.error_info), not refused: one long
# stack must not refuse its whole batch. This bounds only what is read.
MAX_ERROR_TEXT = 1024 * 1024

# What a worker sends, each field declared once: checked here, and the OpenAPI document
# (http/openapi.py) is written from the same declarations.
LEASE_REQUEST = (
    Option(
        "queues", "queues", "array", "The external tasks' queues to lease from (1 to 100).",
        nullable=False,
    ),
    Option(
        "limit", "limit", "integer", "At most this many jobs.", default=1, lo=1, hi=MAX_ITEMS
    ),
    Option(
        "lease_s", "lease_s", "number",
        "How long the lease holds unless renewed (seconds); the rescuer takes the job back"
        " after it.", default=30.0, lo=0, hi=MAX_LEASE_S, open_lo=True,
    ),
    Option(
        "wait_s", "wait_s", "number",
        "With no job due, wait up to this long for one (a long poll).",
        default=0.0, lo=0, hi=MAX_WAIT_S,
    ),
)  # fmt: skip
LEASED = (
    Option("job_id", "job_id", "integer", "The job.", lo=1, hi=MAX_ID, nullable=False),
    Option(
        "lease_token", "lease_token", "string", "The token its lease was given with.",
        max_len=64, nullable=False,
    ),
)  # fmt: skip
FAILURE = (
    Option("type", "type", "string", "The error's type, e.g. `TimeoutError`.", max_len=200),
    Option(
        "message", "message", "string", "What went wrong.", max_len=MAX_ERROR_TEXT,
        nullable=False,
    ),
    Option("traceback", "traceback", "string", "Where, as text.", max_len=MAX_ERROR_TEXT),
    Option(
        "retryable", "retryable", "boolean",
        "false: fail for good now; true: retry by the job's policy.", default=True,
    ),
    Option(
        "retry_in_s", "retry_in_s", "number",
        "Retry after this long instead of the policy's backoff (attempts still count).",
        lo=0, hi=MAX_DELAY_S,
    ),
)  # fmt: skip
RENEWAL = (LEASE_REQUEST[2],)
PROGRESS = (
    Option(
        "progress", "progress", "number", "How far the job is, from 0 to 1 (as ctx.progress).",
        lo=0, hi=1,
    ),
    Option(
        "progress_message", "progress_message", "string", "What it is doing now.", max_len=200
    ),
)  # fmt: skip
_LEASE_BY_NAME = {o.name: o for o in LEASE_REQUEST}


def check_lease_request(body: dict[str, Any]) -> dict[str, Any]:
    """A lease request, checked (ValidationError naming the field), defaults filled in."""
    given = check_given(body, _LEASE_BY_NAME)
    if "queues" not in given:
        raise ValidationError("queues", "is required")
    queues = given["queues"]
    if not 1 <= len(queues) <= 100:
        raise ValidationError("queues", "must hold 1 to 100 queue names")
    for i, name in enumerate(queues):
        try:
            BY_NAME["queue"].check(name)
        except ValidationError as exc:
            raise ValidationError(f"queues[{i}]", exc.message) from None
    return {**{o.name: o.default for o in LEASE_REQUEST}, **given}


def check_items(
    body: dict[str, Any], extra: tuple[Option, ...] = (), *, with_result: bool = False
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A report's `items` (each a leased job, and `extra` fields, and a `result` if asked
    for), and the body's other fields (`lease_s` for a renewal)."""
    items = body.get("items")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_ITEMS:
        raise ValidationError("items", f"must be an array of 1 to {MAX_ITEMS} items")
    declared = {o.name: o for o in (*LEASED, *extra)}
    checked = []
    seen: set[Any] = set()
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValidationError(f"items[{i}]", "must be an object")
        fields = dict(item)
        result = fields.pop("result", None) if with_result else None
        try:
            one = check_given(fields, declared)
            for option in declared.values():
                if not option.nullable and option.name not in one:
                    raise ValidationError(option.name, "is required")
        except ValidationError as exc:
            raise ValidationError(f"items[{i}].{exc.field}", exc.message) from None
        if one["job_id"] in seen:  # two answers for one job in one write: which would hold?
            raise ValidationError(f"items[{i}].job_id", "is given twice")
        seen.add(one["job_id"])
        checked.append({**{o.name: o.default for o in extra}, **one, "result": result})
    rest = {k: v for k, v in body.items() if k != "items"}
    return checked, rest


@dataclass(frozen=True, slots=True)
class Renewal:
    renewed: list[int]
    lost: list[int]  # no longer this worker's: stop, report nothing
    cancel_requested: list[int]  # a client asked: stop, and report it failed or released


class Leasing:
    """The external workers' side of the queue, for one server."""

    def __init__(self, store: Store, worker: Worker, clock: Clock, queues: frozenset[str]):
        self._store = store
        self._worker = worker
        self._clock = clock
        self.queues = queues  # the external tasks' queues
        self._waiters: set[asyncio.Future[None]] = set()
        # The timeouts of the jobs leased here: an attempt past its job's timeout_s ends as
        # `timeout`, retried by its policy, as an in-process one does (a node that dies takes
        # its timers along; the lease then runs out and the rescuer takes the job back).
        self._timeouts: dict[tuple[int, str], asyncio.TimerHandle] = {}
        self._timing_out: set[asyncio.Task[Any]] = set()
        self._stopped = False

    def stop(self) -> None:
        """At shutdown: no timeout fires into a closing store (leases run out instead)."""
        self._stopped = True  # a long poll answers with nothing from now on
        for timer in self._timeouts.values():
            timer.cancel()
        self._timeouts.clear()
        self.wake()

    def wake(self) -> None:
        """Jobs may be due: long polls look again."""
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    async def lease(
        self,
        queues: Sequence[str],
        limit: int,
        lease_s: float,
        wait_s: float,
        gone: Callable[[], bool] = lambda: False,
    ) -> list[Job]:
        """Up to `limit` due jobs of `queues`, each leased for `lease_s`; when none is due,
        wait up to `wait_s` for one. A job leased is running: its attempt counts. `gone`: the
        caller has left (its connection closed): lease nothing more for it."""
        unknown = sorted(set(queues) - self.queues)
        if unknown:
            raise ValidationError("queues", f"{unknown[0]!r} is no external task's queue")
        loop = asyncio.get_running_loop()
        give_up = loop.time() + wait_s
        while not self._stopped and not gone():
            # Registered before the claim looks: a wake while it looks is not missed.
            waiter = loop.create_future()
            self._waiters.add(waiter)
            jobs = await self._store.claim(limit, self._clock.now(), lease_s, only=queues)
            left = give_up - loop.time()
            if jobs or left <= 0:
                self._waiters.discard(waiter)
                for job in jobs:
                    if job.timeout_s is not None:
                        key = (job.id, job.lease_token or "")
                        self._timeouts[key] = loop.call_later(job.timeout_s, self._expire, job)
                return jobs
            # Other nodes' enqueues and delayed jobs coming due send no wake: look again
            # every half second at least.
            try:
                await asyncio.wait_for(waiter, min(left, 0.5))
            except TimeoutError:
                self._waiters.discard(waiter)
        return []

    def _expire(self, job: Job) -> None:
        self._timeouts.pop((job.id, job.lease_token or ""), None)
        message = f"timeout: gave up after {job.timeout_s} s (an external worker's attempt)"
        outcome = Failed(error_info(None, type_="timeout", message=message), retryable=True)
        ending = asyncio.ensure_future(self._worker.record(job, outcome))
        self._timing_out.add(ending)
        ending.add_done_callback(self._timed_out)

    def _timed_out(self, ending: asyncio.Future[Any]) -> None:
        self._timing_out.discard(ending)
        if not ending.cancelled() and ending.exception() is not None:
            # the store could not take the write: the lease runs out and the rescuer decides
            log.warning("an external job's timeout could not be written: %s", ending.exception())

    def _settled(self, job_id: int, token: str, state: JobState | None) -> JobState | None:
        """A report took effect (its lease held): the attempt's timeout is moot."""
        if state is not None:
            timer = self._timeouts.pop((job_id, token), None)
            if timer is not None:
                timer.cancel()
        return state

    async def progress(self, job_id: int, token: str, fraction: float, message: str | None) -> bool:
        return await self._store.update_progress(job_id, token, fraction, message)

    async def renew(self, leases: Sequence[tuple[int, str]], lease_s: float) -> Renewal:
        report = await self._store.renew_leases(leases, self._clock.now(), lease_s)
        lost = set(report.lost)
        return Renewal(
            renewed=[job_id for job_id, _ in leases if job_id not in lost],
            lost=sorted(lost),
            cancel_requested=sorted(report.cancel_requested),
        )

    async def complete(self, job_id: int, token: str, result: Any) -> JobState | None:
        """The job succeeded with `result`; None if the lease is gone. A result JSON cannot
        keep (NaN, NUL) fails the job instead, as an in-process task's would."""
        outcome = returned(result)
        if isinstance(outcome, Failed):
            return await self.fail(job_id, token, outcome.error, retryable=False)
        state = await self._store.complete(job_id, token, outcome.result, self._clock.now())
        return self._settled(job_id, token, state)

    async def fail(
        self,
        job_id: int,
        token: str,
        error: dict[str, Any],
        retryable: bool = True,
        retry_in_s: float | None = None,
    ) -> JobState | None:
        """The attempt failed: retried by the job's policy (pending), or failed for good into
        the dead letters (failed); cancelled if a client asked; None if the lease is gone."""
        job = await self._leased(job_id, token)
        if job is None:
            return None
        kept = error_info(
            None,
            type_=error.get("type") or "Error",
            message=error["message"],
            traceback=error.get("traceback"),
        )
        state = await self._worker.record(job, Failed(kept, retryable, retry_in_s))
        return self._settled(job_id, token, state)

    async def release(self, job_id: int, token: str) -> JobState | None:
        """Give the job back untried (a worker shutting down): pending again, its attempt not
        counted; cancelled if a client asked; None if the lease is gone."""
        state = await self._store.release(job_id, token, self._clock.now())
        return self._settled(job_id, token, state)

    async def _leased(self, job_id: int, token: str) -> Job | None:
        job = await self._store.get_job(job_id)
        if job is None or job.status != JobState.RUNNING or job.lease_token != token:
            return None
        return job
