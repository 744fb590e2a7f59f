"""Job transitions as a stream of events, for GET /events (Server-Sent Events), resumable from
the database.

Every transaction that moves jobs also writes one compact row to the event log (the store's
`event_log` table: the jobs, their new states and attempts, and when), so the stream outlives
the process: a client that reconnects with the id of the last event it saw (Last-Event-ID)
gets what it missed from the log, across restarts, as long as retention keeps it
(`keep_events_hours`). An event's id is its row's id and its place in the row:
`log_id << 16 | index`, so ids grow in the order the rows are read.

Where one process writes the database (SQLite), it streams each commit's events as it
commits, in commit order. Where several nodes share it (PostgreSQL), a row's id is drawn
before its transaction commits, so ids do not arrive in order: while anyone listens, each
node tails the log instead, in id order, waiting a moment at a hole for the transaction that
holds it; every node thus streams every node's transitions, in the same order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from . import codec
from .models import JobState, Transition
from .render import rfc3339

log = logging.getLogger(__name__)

SUBSCRIBER_BUFFER = 10_000  # events a slow client may lag behind before it is cut off
INDEX_BITS = 16
ROW_ENTRIES = 1 << INDEX_BITS  # transitions a log row holds; a bigger commit writes more rows
_STATES = tuple(JobState)  # a state is stored as its index here: append new states only
_STATE_INDEX = {state: i for i, state in enumerate(_STATES)}
REPLAY_ROWS = 256  # log rows a read of the replay takes
HOLE_WAIT_S = 2.0  # how long a tailing node waits for a transaction holding a lower id
TAIL_POLL_S = 0.2  # how often it looks without a wake (other nodes' claims send no notice)


# Not frozen: a frozen dataclass's __init__ sets each field through object.__setattr__, a
# visible cost at one event a transition. Nothing changes an event once published.
@dataclass(slots=True)
class Event:
    id: int
    job_id: int
    task: str | None  # None: the job was deleted before its event was read from the log
    queue: str | None
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


# -- the log rows -----------------------------------------------------------------------------
LogRow = tuple[int, float, bytes]  # (log id, base time, entries) as read back


def encode_log(transitions: Sequence[Transition]) -> list[tuple[float, bytes]]:
    """A commit's transitions as event-log rows to write: (base time, entries), where entries
    is a flat JSON list of (job id, state index, attempt, microseconds after the base)."""
    out = []
    for start in range(0, len(transitions), ROW_ENTRIES):
        part = transitions[start : start + ROW_ENTRIES]
        base = part[0].at
        flat: list[int] = []
        for t in part:
            flat += (t.job_id, _STATE_INDEX[t.after], t.attempt, round((t.at - base) * 1e6))
        out.append((base, codec.dumps(flat)))
    return out


def decode_log(log_id: int, base: float, entries: bytes | str) -> list[Event]:
    """A log row's events, their task and queue not yet known (None)."""
    flat = codec.loads(entries)
    first = log_id << INDEX_BITS
    return [
        Event(
            first + i // 4,
            flat[i],
            None,
            None,
            _STATES[flat[i + 1]].value,
            flat[i + 2],
            base + flat[i + 3] / 1e6,
        )
        for i in range(0, len(flat), 4)
    ]


def _live_events(log_ids: Sequence[int], transitions: Sequence[Transition]) -> list[Event]:
    """The events of a commit this process made, as decode_log would read them back."""
    events = []
    for n, log_id in enumerate(log_ids):
        part = transitions[n * ROW_ENTRIES : (n + 1) * ROW_ENTRIES]
        base = part[0].at
        first = log_id << INDEX_BITS
        for i, t in enumerate(part):
            at = base + round((t.at - base) * 1e6) / 1e6
            events.append(Event(first + i, t.job_id, t.task, t.queue, t.after.value, t.attempt, at))
    return events


class EventLog(Protocol):
    """What the bus reads: the store's event log."""

    async def read_event_log(self, first_id: int, last_id: int, limit: int) -> list[LogRow]:
        """Rows with first_id <= id <= last_id, by id, at most `limit`."""
        ...

    async def event_log_span(self) -> tuple[int, int]:
        """(oldest, newest) row id kept; (0, 0) when the log is empty."""
        ...

    async def job_names(self, job_ids: Sequence[int]) -> dict[int, tuple[str, str]]:
        """job id -> (task, queue), for the jobs still kept."""
        ...


# -- the stream ---------------------------------------------------------------------------------
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


class Ready(Exception):
    """The stream is subscribed: every event committed from now on will reach it."""


class _Subscriber:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(SUBSCRIBER_BUFFER)
        self.ended = False  # its stream ends once what it holds is sent

    def end(self) -> None:
        self.ended = True
        if not self.queue.full():
            self.queue.put_nowait(None)  # wakes a reader waiting on an empty queue


class EventBus:
    """Live events to subscribers, and the missed ones from the log.

    `tail`: several nodes write the log (PostgreSQL): read it in id order while anyone
    listens. Otherwise this process's commits are the log, streamed as they commit.
    """

    def __init__(self, log: EventLog, *, tail: bool) -> None:
        self._log = log
        self._tails = tail
        self.position = 0  # the id of the last event streamed live (all before it are in the log)
        self._subscribers: set[_Subscriber] = set()
        self._closed = False
        # tailing: this node's own recent rows' (task, queue)s, so that it need not read them
        self._own_names: dict[int, list[tuple[str, str]]] = {}
        self._tailer: asyncio.Task[None] | None = None
        self._tail_ready: asyncio.Future[None] | None = None
        self._poked = asyncio.Event()

    async def start(self) -> None:
        """Live events start after the newest row in the log."""
        _, newest = await self._log.event_log_span()
        self.position = max(self.position, (newest << INDEX_BITS) | (ROW_ENTRIES - 1))

    def committed(self, log_ids: Sequence[int], transitions: Sequence[Transition]) -> None:
        """This process committed `transitions`, logged in the rows `log_ids`."""
        if not log_ids:
            return
        if self._tails:
            if self._tailer is not None:  # the tailer reads them: spare it their names
                for n, log_id in enumerate(log_ids):
                    part = transitions[n * ROW_ENTRIES : (n + 1) * ROW_ENTRIES]
                    self._own_names[log_id] = [(t.task, t.queue) for t in part]
                self._poked.set()
            return
        if self._subscribers:
            self._fan_out(_live_events(log_ids, transitions))
        self.position = (log_ids[-1] << INDEX_BITS) | (ROW_ENTRIES - 1)

    def poke(self) -> None:
        """Another node committed something: look at the log now rather than at the next poll."""
        if self._tailer is not None:
            self._poked.set()

    def _fan_out(self, events: list[Event]) -> None:
        for sub in list(self._subscribers):
            try:
                for event in events:
                    sub.queue.put_nowait(event)
            except asyncio.QueueFull:  # too slow: cut it off; it may reconnect and resume
                self._subscribers.discard(sub)
                sub.end()

    def close(self) -> None:
        """End every stream (at shutdown)."""
        self._closed = True
        for sub in list(self._subscribers):
            sub.end()
        self._subscribers.clear()
        if self._tailer is not None:
            self._tailer.cancel()
            self._tailer = None

    async def stream(
        self, flt: EventFilter, after_id: int | None, idle_s: float = 15.0
    ) -> AsyncIterator[Event | type[Gap] | type[Ready] | None]:
        """`Ready` once subscribed, then the events matching `flt`: first those after
        `after_id` read from the log, then live ones. Yields `Gap` first when some after
        `after_id` are no longer kept, and None after `idle_s` without an event (time for a
        keep-alive)."""
        sub = _Subscriber()
        if self._closed:
            return
        self._subscribers.add(sub)
        try:
            if self._tails:
                await self._tailing()
            upto = self.position  # live events from here on reach `sub`
            yield Ready
            if after_id is not None:
                async for item in self._replay(flt, after_id, upto):
                    yield item
            while not (sub.ended and sub.queue.empty()):
                try:
                    event = await asyncio.wait_for(sub.queue.get(), idle_s)
                except TimeoutError:
                    yield None
                    continue
                if event is None:
                    return
                if event.id > upto and flt.matches(event):
                    yield event
        finally:
            self._subscribers.discard(sub)

    async def _replay(
        self, flt: EventFilter, after_id: int, upto: int
    ) -> AsyncIterator[Event | type[Gap]]:
        if after_id > upto:  # an id this log never gave (another database, an older version)
            yield Gap
            return
        oldest, _ = await self._log.event_log_span()
        first = after_id >> INDEX_BITS
        if first + 1 < oldest:  # a whole commit's events after it were pruned
            yield Gap
        last = upto >> INDEX_BITS
        while first <= last:
            rows = await self._log.read_event_log(first, last, REPLAY_ROWS)
            if not rows:
                return
            events = [
                e
                for r in rows
                for e in decode_log(*r)
                if after_id < e.id <= upto and (flt.job_id is None or e.job_id == flt.job_id)
            ]
            await self._name(events, {})
            for event in events:
                if flt.matches(event):
                    yield event
            first = rows[-1][0] + 1

    async def _name(self, events: list[Event], known: dict[int, tuple[str, str]]) -> None:
        """Fill in each event's task and queue: from `known`, else from the jobs table."""
        missing = {e.job_id for e in events if e.job_id not in known}
        if missing:
            known = {**known, **await self._log.job_names(sorted(missing))}
        for e in events:
            if (names := known.get(e.job_id)) is not None:
                e.task, e.queue = names

    # -- tailing (several nodes) ----------------------------------------------------------------
    async def _tailing(self) -> None:
        """Start the tailer if it is not running; returns once it knows where it starts."""
        if self._tailer is None or self._tailer.done():
            self._tail_ready = asyncio.get_running_loop().create_future()
            self._tailer = asyncio.create_task(self._tail(), name="jobserver-events-tail")
        assert self._tail_ready is not None
        await asyncio.shield(self._tail_ready)

    async def _tail(self) -> None:
        ready = self._tail_ready
        assert ready is not None
        try:
            await self.start()
        except BaseException as exc:
            ready.set_exception(exc)
            raise
        ready.set_result(None)
        next_id = (self.position >> INDEX_BITS) + 1
        hole_since: float | None = None
        try:
            while self._subscribers:
                self._poked.clear()
                try:
                    rows = await self._log.read_event_log(next_id, 2**62, REPLAY_ROWS)
                except Exception:
                    log.warning("reading the event log failed; trying again", exc_info=True)
                    rows = []
                stuck = False
                for log_id, base, entries in rows:
                    if log_id != next_id:
                        # A hole: a transaction that drew this id has not committed yet (or
                        # rolled back). Wait for it a moment, then go on without it.
                        now = time.monotonic()
                        hole_since = hole_since if hole_since is not None else now
                        if now - hole_since < HOLE_WAIT_S:
                            stuck = True
                            break
                    hole_since = None
                    events = decode_log(log_id, base, entries)
                    own = self._own_names.pop(log_id, None)
                    if own is not None:
                        for event, (task, queue) in zip(events, own, strict=True):
                            event.task, event.queue = task, queue
                    else:
                        await self._name(events, {})
                    self._fan_out(events)
                    self.position = (log_id << INDEX_BITS) | (ROW_ENTRIES - 1)
                    next_id = log_id + 1
                for log_id in [i for i in self._own_names if i < next_id]:
                    del self._own_names[log_id]  # read past (a hole given up on)
                if len(rows) == REPLAY_ROWS and not stuck:
                    continue  # more to read
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._poked.wait(), 0.02 if stuck else TAIL_POLL_S)
        finally:
            self._own_names.clear()
            self._tailer = None
