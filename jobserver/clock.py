"""Where time comes from. Everything that schedules asks a `Clock`, so tests can move time."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the Unix epoch, UTC."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` of this clock's time."""
        ...

    async def sleep_until(self, when: float) -> None:
        """Wait until this clock reads `when` (an absolute time cannot drift while a waiter
        is being set up, as a relative one could)."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    async def sleep_until(self, when: float) -> None:
        await asyncio.sleep(max(0.0, when - time.time()))


class ManualClock:
    """A clock that moves only when a test calls `advance` or `set`."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        await self.sleep_until(self._now + seconds)

    async def sleep_until(self, when: float) -> None:
        if when <= self._now:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (when, next(self._seq), fut))
        await fut

    @property
    def wake_times(self) -> list[float]:
        """When each sleep now pending on this clock ends, soonest first. A test reads it as
        proof that a service has gone to sleep, and until when: after that, nothing it would
        have done before that time is still on its way."""
        return sorted(when for when, _, fut in self._sleepers if not fut.done())

    async def wait_for_sleep_until(self, when: float, timeout_s: float = 10.0) -> None:
        """Return once something sleeps on this clock until exactly `when` (real-time
        `timeout_s` as a backstop: TimeoutError)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while when not in self.wake_times:
            if loop.time() > deadline:
                raise TimeoutError(f"nothing slept until {when}; sleeps: {self.wake_times}")
            await asyncio.sleep(0.001)

    def advance(self, seconds: float) -> None:
        self.set(self._now + seconds)

    def set(self, now: float) -> None:
        self._now = now
        while self._sleepers and self._sleepers[0][0] <= now:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)
