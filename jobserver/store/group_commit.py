"""Group commit, shared by the stores: writes that arrive while a transaction runs wait in a
queue and go into the next transaction together (one commit, one fsync, for many writes).
Each store supplies `_commit`, which runs a batch and settles each write's future."""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ..errors import StorageUnavailable
from ..models import Transition

log = logging.getLogger(__name__)
OpT = TypeVar("OpT")
ItemT = TypeVar("ItemT")


@dataclass(slots=True)
class PendingWrite(Generic[OpT]):
    op: OpT
    future: asyncio.Future[Any]


class GroupCommitQueue(Generic[OpT]):
    def __init__(self, name: str, max_batch: int) -> None:
        self._name = name
        self._max_batch = max_batch
        self._queue: collections.deque[PendingWrite[OpT]] = collections.deque()
        self._has_work = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.observer: Callable[[int, float], None] | None = None  # (writes, seconds)
        # told, once a batch has committed and before any of its callers resumes, the
        # `changes` (lifecycle.Changes) of each write that went in, in the batch's order, and
        # the ids of the event-log rows the transaction wrote for them
        self.on_commit: Callable[[list[Any], list[int]], object] | None = None

    def start(self) -> None:
        # Kept: asking for the running loop on every write is a visible cost at this rate.
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(), name=self._name)

    def put(self, op: OpT) -> asyncio.Future[Any]:
        """Queue a write now (in the caller's step, so writes keep the order of the calls);
        the future holds its result once the transaction holding it has committed."""
        if self._closing or self._loop is None:
            raise StorageUnavailable("the store is closing")
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._queue.append(PendingWrite(op, fut))
        self._has_work.set()
        return fut

    async def close(self) -> None:
        """Finish every write already queued, then stop."""
        self._closing = True
        self._has_work.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while True:
            await self._has_work.wait()
            # One more loop turn before taking the batch: a write that the same wake-up sets
            # off (the dispatcher's claim after an enqueue) joins this transaction.
            await asyncio.sleep(0)
            self._has_work.clear()
            while self._queue:
                count = min(len(self._queue), self._max_batch)
                batch = [self._queue.popleft() for _ in range(count)]
                for w in batch:
                    if isinstance(w.op, GatheredWrite):
                        w.op.sealed = True  # taken: later items start another
                try:
                    await self._commit(batch)
                except Exception as exc:
                    # A store's _commit settles its batch; an error it did not foresee must
                    # neither end this task (the node would never write again, silently) nor
                    # leave the batch's callers waiting.
                    log.exception("%s: a transaction failed unexpectedly", self._name)
                    self._fail(batch, StorageUnavailable(f"the database write failed: {exc}"))
            if self._closing and not self._queue:
                return

    async def _commit(self, batch: list[PendingWrite[OpT]]) -> None:
        raise NotImplementedError

    def _settle(
        self,
        batch: list[PendingWrite[OpT]],
        outcomes: list[tuple[bool, Any]],
        log_ids: list[int],
    ) -> None:
        """Give each write of a committed batch its outcome: (True, value) or (False, error).

        First `on_commit` hears what the writes changed, in their order (so a job's `pending`
        is published before the `running` of a claim that came after it in the batch). Then
        claims (ops marked `claims = True`) are settled first: their waiter starts jobs, so a
        job claimed in the transaction of its own enqueue starts before the reply to that
        enqueue is written.
        """
        if self.on_commit is not None:
            changed = changes_of([w.op for w in batch], outcomes)
            if changed:
                try:
                    self.on_commit(changed, log_ids)
                except Exception:  # publishing is a courtesy: the writes have committed
                    log.exception("%s: publishing a commit's transitions failed", self._name)
        settled = sorted(zip(batch, outcomes, strict=True), key=_claims_last)
        for w, (ok, value) in settled:
            _resolve(w, ok, value)

    @staticmethod
    def _fail(batch: list[PendingWrite[OpT]], error: BaseException) -> None:
        """The transaction failed as a whole: every write of the batch gets `error`."""
        for w in batch:
            _resolve(w, False, error)


def changes_of(ops: list[Any], outcomes: list[tuple[bool, Any]]) -> list[Any]:
    """The `changes` (lifecycle.Changes) of the writes that went in, in the batch's order."""
    return [
        changes
        for op, (ok, _) in zip(ops, outcomes, strict=True)
        if ok and (changes := getattr(op, "changes", None)) is not None
    ]


def transitions_of(ops: list[Any], outcomes: list[tuple[bool, Any]]) -> list[Transition]:
    """What the writes that went in moved, in order: what the event log gets."""
    return [t for changes in changes_of(ops, outcomes) for t in changes.transitions]


class GatheredWrite(Generic[ItemT]):
    """One op that the writes arriving before the writer takes it join as items (completions:
    one statement for all of them). Called by the store, it returns an answer per item; an
    answer that is an exception is raised to that item's caller alone."""

    def __init__(self) -> None:
        self.items: list[ItemT] = []
        self.sealed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._answers: list[asyncio.Future[Any]] = []  # an item's caller waits on its own

    def start(self, put: Callable[[Any], asyncio.Future[Any]]) -> None:
        """Queue this op's write (through the store's `put`), before its first item."""
        written = put(self)
        self._loop = written.get_loop()
        written.add_done_callback(self._written)

    def _written(self, written: asyncio.Future[Any]) -> None:
        # Callers hear of a failure through their own answers (see settle); retrieving it
        # here keeps asyncio from reporting it as never retrieved.
        if not written.cancelled() and written.exception() is None:
            self.committed()

    def committed(self) -> None:
        """Called once the transaction holding this write has committed (stores override it
        to tell what the write set off)."""

    async def join(self, item: ItemT) -> Any:
        """Add an item; returns its own answer once the transaction holding it has committed."""
        return await self.join_soon(item)  # its caller going away cancels only its own answer

    def join_soon(self, item: ItemT) -> asyncio.Future[Any]:
        """Add an item; the future holds its own answer once the transaction has committed."""
        assert self._loop is not None and not self.sealed
        answer = self._loop.create_future()
        self.items.append(item)
        self._answers.append(answer)
        return answer

    def settle(self, ok: bool, value: Any) -> None:
        # Set directly, in the same turn as the other writes' futures (no hop through the
        # op's future): callers resume in the order the transaction's writes were settled.
        for index, answer in enumerate(self._answers):
            if answer.done():
                continue
            if not ok:
                answer.set_exception(value)
            elif isinstance(value[index], Exception):
                answer.set_exception(value[index])
            else:
                answer.set_result(value[index])


GatheredT = TypeVar("GatheredT", bound=GatheredWrite[Any])


def open_gathered(
    current: GatheredT | None,
    make: Callable[[], GatheredT],
    put: Callable[[Any], asyncio.Future[Any]],
) -> GatheredT:
    """The gathered write to join: `current` until the writer has taken it, else a new one,
    queued now."""
    if current is not None and not current.sealed:
        return current
    gathered = make()
    gathered.start(put)
    return gathered


def _resolve(w: PendingWrite[Any], ok: bool, value: Any) -> None:
    if isinstance(w.op, GatheredWrite):
        w.op.settle(ok, value)
    if w.future.done():  # the caller went away; the write has committed all the same
        return
    if ok:
        w.future.set_result(value)
    else:
        w.future.set_exception(value)


def _claims_last(settled: tuple[PendingWrite[Any], tuple[bool, Any]]) -> bool:
    return not getattr(settled[0].op, "claims", False)
