"""Committed transitions -> events, metrics, waiters and logs: the one place that publishes.

Every write a store commits hands its Transitions here (after the commit, before any caller
of the batch resumes, in the order of the batch's writes, with the ids of the event-log rows
that hold them), and so do other nodes' notices: nothing else publishes a job's state, so
nothing needs to guess or deduplicate.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from .events import EventBus
from .metrics import Metrics
from .models import TERMINAL_STATES, Transition

transitions_log = logging.getLogger("jobserver.transitions")


class Publisher:
    def __init__(
        self, events: EventBus, metrics: Metrics, job_ended: Callable[[int], None]
    ) -> None:
        self.events = events
        self.metrics = metrics
        self.job_ended = job_ended  # wakes whoever waits for the job

    def publish(self, transitions: Sequence[Transition], log_ids: Sequence[int] | None) -> None:
        """`log_ids`: the event-log rows of this process's commit; None for another node's
        notice (its events come from the log: see events.EventBus)."""
        if log_ids is None:
            self.events.poke()
        else:
            self.events.committed(log_ids, transitions)
        debug = transitions_log.isEnabledFor(logging.DEBUG)
        for t in transitions:
            self.metrics.record_transition(t)
            # One line a job and state costs more than the job at thousands a second: DEBUG.
            if debug:
                _log(t)
            if t.after in TERMINAL_STATES:
                self.job_ended(t.job_id)


def _log(t: Transition) -> None:
    transitions_log.debug(
        "job %s %s %s -> %s (%s)",
        t.job_id,
        t.task,
        t.before.value if t.before is not None else "-",
        t.after.value,
        t.reason,
        extra={
            "job_id": t.job_id,
            "task": t.task,
            "queue": t.queue,
            "state": t.after.value,
            "attempt": t.attempt,
            "reason": t.reason,
            "error": t.error_type,
        },
    )
