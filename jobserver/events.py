"""Job transitions as a stream of events, for GET /events (Server-Sent Events).

Recent events stay in memory (a ring of `keep`), so a client that reconnects with the id of
the last event it saw (Last-Event-ID) gets what it missed, as long as it is still there.
Ids start from the microsecond clock at start-up and count up, so they keep growing across
restarts; an id older than the ring is answered with a `gap` event first.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from .models import Job, JobState
from .render import rfc3339

SUBSCRIBER_BUFFER = 10_000  # events a slow client may lag behind before it is cut off


# Not frozen: a frozen dataclass's __init__ sets each field through object.__setattr__, a
# visible cost at one event a transition. Nothing changes an event once published.
@dataclass(slots=True)
class Event:
    id: int
    job_id: int
    task: str
    queue: str
    state: str
    attempt: int
    at: float

    def data(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "task": self.task,
            "queue": self.queue,
            "state": self.state,
            "attempt": self.attempt,
            "at": rfc3339(self.at),
        }


@dataclass(frozen=True, slots=True)
class EventFilter:
    queue: str | None = None
    task: str | None = None
    job_id: int | None = None

    def matches(self, event: Event) -> bool:
        return (
            (self.queue is None or event.queue == self.queue)
            and (self.task is None or event.task == self.task)
            and (self.job_id is None or event.job_id == self.job_id)
        )


class Gap(Exception):
    """Some events after the client's last one are no longer kept."""


class _Subscriber:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(SUBSCRIBER_BUFFER)
        self.ended = False  # its stream ends once what it holds is sent

    def end(self) -> None:
        self.ended = True
        if not self.queue.full():
            self.queue.put_nowait(None)  # wakes a reader waiting on an empty queue


class EventBus:
    def __init__(self, keep: int = 10_000) -> None:
        self._events: collections.deque[Event] = collections.deque(maxlen=keep)
        self._next_id = int(time.time() * 1_000_000)
        self._subscribers: set[_Subscriber] = set()

    def publish(self, job: Job, state: JobState, at: float) -> Event:
        return self.publish_fields(job.id, job.task, job.queue, state, job.attempts, at)

    def publish_fields(
        self, job_id: int, task: str, queue: str, state: JobState, attempts: int, at: float
    ) -> Event:
        event = Event(self._next_id, job_id, task, queue, str(state), attempts, at)
        self._next_id += 1
        self._events.append(event)
        for sub in list(self._subscribers):
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:  # too slow: cut it off; it may reconnect and resume
                self._subscribers.discard(sub)
                sub.end()
        return event

    def close(self) -> None:
        """End every stream (at shutdown)."""
        for sub in list(self._subscribers):
            sub.end()
        self._subscribers.clear()

    async def stream(
        self, flt: EventFilter, after_id: int | None, idle_s: float = 15.0
    ) -> AsyncIterator[Event | type[Gap] | None]:
        """Events matching `flt`: first the kept ones after `after_id`, then live ones. Yields
        `Gap` first when events after `after_id` were already dropped from the ring, and None
        after `idle_s` without an event (time for a keep-alive)."""
        sub = _Subscriber()
        self._subscribers.add(sub)
        try:
            last = after_id
            if after_id is not None:
                if self._events and self._events[0].id > after_id + 1:
                    yield Gap
                for event in list(self._events):
                    if event.id > after_id and flt.matches(event):
                        last = event.id
                        yield event
            while not (sub.ended and sub.queue.empty()):
                try:
                    item = await asyncio.wait_for(sub.queue.get(), idle_s)
                except TimeoutError:
                    yield None
                    continue
                if item is None:
                    return
                if (last is None or item.id > last) and flt.matches(item):
                    yield item
        finally:
            self._subscribers.discard(sub)
