"""Cron schedules: a loop that sleeps until the next tick, then fires every due schedule.

A tick is claimed in the database (`store.fire_schedule` moves the schedule on only from the
tick it expects), so it runs once across restarts and across nodes sharing one database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from .clock import Clock
from .errors import JobServerError
from .models import Job, NewJob, Schedule
from .schedule import ticks_to_fire
from .store.base import Store

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        job_for_tick: Callable[[Schedule, float], NewJob],
        on_fired: Callable[[list[Job]], None],
        idle_recheck_s: float = 60.0,
    ) -> None:
        self.store = store
        self.clock = clock
        self.job_for_tick = job_for_tick
        self.on_fired = on_fired
        self.idle_recheck_s = idle_recheck_s  # schedules saved by other nodes show up by then
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="jobserver-scheduler")

    def wake(self) -> None:
        """A schedule was added or changed: look again now."""
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def fire_due(self) -> list[Job]:
        """Fire every due schedule once; returns the jobs enqueued, as written."""
        now = self.clock.now()
        fired: list[Job] = []
        for schedule in await self.store.due_schedules(now):
            ticks, next_tick = ticks_to_fire(
                schedule.cron, schedule.timezone, schedule.next_tick_at, now, schedule.missed
            )
            try:
                jobs = [self.job_for_tick(schedule, tick) for tick in ticks]
            except JobServerError as exc:  # e.g. its task is gone: skip the tick, keep going
                log.error("schedule %r cannot enqueue: %s", schedule.name, exc)
                jobs = []
            enqueued = await self.store.fire_schedule(
                schedule.name, schedule.next_tick_at, next_tick, jobs, now
            )
            if len(ticks) > len(enqueued) and jobs:
                log.info("schedule %r: tick taken by another node", schedule.name)
            skipped = "" if schedule.missed != "skip" or ticks else " (missed ticks skipped)"
            log.info("schedule %r fired %d job(s)%s", schedule.name, len(enqueued), skipped)
            fired.extend(enqueued)
        if fired:
            self.on_fired(fired)
        return fired

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.fire_due()
                next_at = await self.store.next_schedule_at()
            except Exception:
                log.exception("firing schedules failed; trying again in 1 s")
                next_at = self.clock.now() + 1
            until = self.clock.now() + self.idle_recheck_s
            if next_at is not None:
                until = min(until, next_at)
            waiter = asyncio.ensure_future(self._wake.wait())
            timer = asyncio.ensure_future(self.clock.sleep_until(until))
            try:
                await asyncio.wait({waiter, timer}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                timer.cancel()
