"""Retention: old finished jobs and dead letters are deleted in small batches, so pruning
never holds the writer for long, and the freed pages go back to the file system."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from .clock import Clock
from .store.base import Store

log = logging.getLogger(__name__)

DAY_S = 86_400.0


class Retention:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        keep_finished_s: float = 7 * DAY_S,  # succeeded and cancelled jobs
        keep_failed_s: float = 30 * DAY_S,  # failed jobs and dead letters
        keep_events_s: float = DAY_S,  # the event log (resumable event streams)
        interval_s: float = 300.0,
        batch: int = 500,
    ) -> None:
        self.store = store
        self.clock = clock
        self.keep_finished_s = keep_finished_s
        self.keep_failed_s = keep_failed_s
        self.keep_events_s = keep_events_s
        self.interval_s = interval_s
        self.batch = batch
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="jobserver-retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def prune_once(self) -> int:
        """Delete everything past its age, a batch per transaction; returns the count."""
        now = self.clock.now()
        total = 0
        while True:
            deleted = await self.store.prune(
                now - self.keep_finished_s, now - self.keep_failed_s, self.batch
            )
            total += deleted
            if deleted == 0:
                break
            await asyncio.sleep(0)  # let enqueues and claims in between batches
        # The event log: a row a commit, so a batch of them is cheap; it holds no job.
        while await self.store.prune_events(now - self.keep_events_s, self.batch * 10):
            await asyncio.sleep(0)
        # Signals: taken ones as finished jobs go, ones no job took as failed ones do.
        while await self.store.prune_signals(
            now - self.keep_finished_s, now - self.keep_failed_s, self.batch * 10
        ):
            await asyncio.sleep(0)
        # Fairness keys that hold nothing (a key seen once stays a row until then).
        while await self.store.prune_keys(now - DAY_S, self.batch * 10):
            await asyncio.sleep(0)
        if total:
            await self.store.reclaim_space(pages=max(100, total // 4))
            log.info("retention: deleted %d old jobs and dead letters", total)
        return total

    async def _loop(self) -> None:
        while True:
            try:
                await self.prune_once()
            except Exception:
                log.exception("pruning failed; trying again later")
            await self.clock.sleep(self.interval_s)
