"""Prometheus metrics (prometheus-client), one registry per server.

Counters and histograms are fed by job transitions as they happen; gauges about the queues
(depth by state, oldest due job, dead letters) are read from the store when scraped.

The counters and histograms fed per job are kept as plain numbers here and handed to
prometheus-client only when scraped: its own Counter and Histogram take a lock and do several
calls an update, which at tens of thousands of jobs a second measured about 7 us a job (a
quarter of a no-op job's whole cost). Everything is updated and scraped on the event loop's
thread, so no lock is needed.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from .fairness import BUSIEST_KEYS
from .models import JobState, QueueInfo, Transition
from .throughput import ThroughputHistory

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)


def transition_event(t: Transition) -> str | None:
    """The counter a transition feeds: enqueued, started, succeeded, retried, ..."""
    if t.after == JobState.PENDING:
        if t.before is None:
            return "enqueued"  # enqueued, fired by a schedule, requeued from a dead letter
        return "retried" if t.reason == "retry" else None  # a release or rescue is not a retry
    return _EVENT_OF_STATE.get(t.after)


# moves that end a run the task saw through (a lost or given-back run has no duration)
_ATTEMPT_ENDINGS = frozenset({"succeeded", "retry", "failed", "cancelled", "cancel_requested"})

_EVENT_OF_STATE = {
    JobState.RUNNING: "started",
    JobState.SUCCEEDED: "succeeded",
    JobState.FAILED: "dead_lettered",
    JobState.CANCELLED: "cancelled",
}


class LabelledCounter:
    """A counter family: one float per label values, exported as `<name>_total`."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        self.name, self.documentation, self.labels = name, documentation, list(labels)
        self.values: dict[tuple[str, ...], float] = {}
        self._created: dict[tuple[str, ...], float] = {}

    def inc(self, labels: tuple[str, ...], amount: float = 1.0) -> None:
        value = self.values.get(labels)
        if value is None:
            value = 0.0
            self._created[labels] = time.time()
        self.values[labels] = value + amount

    def family(self) -> Metric:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, value in self.values.items():
            family.add_metric(labels, value, created=self._created[labels])
        return family


class LabelledHistogram:
    """A histogram family: per label values, a count per bucket (not cumulative) and a sum."""

    def __init__(
        self, name: str, documentation: str, labels: Sequence[str], buckets: Sequence[float]
    ) -> None:
        self.name, self.documentation, self.labels = name, documentation, list(labels)
        self.bounds = sorted(float(b) for b in buckets)
        les = [floatToGoString(b) for b in self.bounds]  # type: ignore[no-untyped-call]
        self._les: list[str] = [*les, "+Inf"]
        # labels -> [counts per bucket, the last one +Inf; sum; created]
        self._series: dict[tuple[str, ...], list[Any]] = {}

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        series = self._series.get(labels)
        if series is None:
            series = self._series[labels] = [[0] * (len(self.bounds) + 1), 0.0, time.time()]
        # bucket `le` counts values <= le: the first bound not below the value
        series[0][bisect.bisect_left(self.bounds, value)] += 1
        series[1] += value

    def cumulative(self, labels: tuple[str, ...]) -> list[tuple[str, int]]:
        """(le, how many observations were <= le) for every bucket, +Inf last."""
        counts = self._series[labels][0] if labels in self._series else [0] * (len(self.bounds) + 1)
        running, out = 0, []
        for le, count in zip(self._les, counts, strict=True):
            running += count
            out.append((le, running))
        return out

    def family(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, (_, total, created) in self._series.items():
            family.add_metric(labels, self.cumulative(labels), total)
            family.samples.append(
                Sample(f"{self.name}_created", dict(zip(self.labels, labels, strict=True)), created)
            )
        return family


class _Families(Collector):
    def __init__(self, families: list[LabelledCounter | LabelledHistogram]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        for family in self._families:
            yield family.family()


class Metrics:
    def __init__(self) -> None:
        self.throughput = ThroughputHistory()  # the dashboard's chart, this node's
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs = LabelledCounter(
            "jobserver_jobs",
            "Job events: enqueued, started, succeeded, retried, dead_lettered (failed for good),"
            " cancelled",
            ["event", "queue", "task"],
        )
        self.failures = LabelledCounter(
            "jobserver_job_failures", "Failed attempts, whether retried or not", ["queue", "task"]
        )
        self.duration = LabelledHistogram(
            "jobserver_job_duration_seconds",
            "Time from an attempt's start to its end",
            ["queue", "task"],
            DURATION_BUCKETS,
        )
        self.queue_wait = LabelledHistogram(
            "jobserver_job_queue_wait_seconds",
            "Time a job waited between being due and starting",
            ["queue"],
            DURATION_BUCKETS,
        )
        self.batch_size = LabelledHistogram(
            "jobserver_store_batch_size",
            "Writes per group-committed transaction",
            [],
            BATCH_BUCKETS,
        )
        self.commit_seconds = LabelledHistogram(
            "jobserver_store_commit_seconds",
            "Time to run and commit one group-committed transaction",
            [],
            COMMIT_BUCKETS,
        )
        self.loop_blocks = LabelledCounter(
            "jobserver_event_loop_blocks",
            "Times the event loop was blocked past the warning threshold, by each task running"
            " then (one of them is the culprit)",
            ["task"],
        )
        r.register(
            _Families(
                [
                    self.jobs,
                    self.failures,
                    self.duration,
                    self.queue_wait,
                    self.batch_size,
                    self.commit_seconds,
                    self.loop_blocks,
                ]
            )
        )
        self.depth = Gauge(
            "jobserver_queue_jobs", "Jobs in a queue by state", ["queue", "state"], registry=r
        )
        self.oldest_due = Gauge(
            "jobserver_queue_oldest_due_age_seconds",
            "How long the oldest due pending job of a queue has waited",
            ["queue"],
            registry=r,
        )
        self.busiest_keys = Gauge(
            "jobserver_queue_busiest_key_jobs",
            "Jobs pending or running of a queue's busiest fairness keys: at most"
            f" {BUSIEST_KEYS} keys a queue, whatever the number of keys",
            ["queue", "key", "state"],
            registry=r,
        )
        self.dead_letters = Gauge(
            "jobserver_dead_letters", "Jobs in the dead-letter table", registry=r
        )
        self.loop_lag = Gauge(
            "jobserver_event_loop_lag_seconds",
            "How late the event loop woke a timer (a blocked loop shows here)",
            registry=r,
        )
        self.abandoned = Gauge(
            "jobserver_abandoned_tasks",
            "Tasks still running after their attempt ended: sync ones hung in their thread"
            " (kind=thread), async ones deaf to cancellation (kind=coroutine)",
            ["kind"],
            registry=r,
        )

    def record_transition(self, t: Transition) -> None:
        event = transition_event(t)
        if event is not None:
            self.jobs.inc((event, t.queue, t.task))
        job = t.job
        if t.after == JobState.RUNNING and job is not None and job.started_at is not None:
            self.queue_wait.observe((t.queue,), max(0.0, job.started_at - job.run_at))
        if t.error_type is not None:
            self.failures.inc((t.queue, t.task))
        if t.reason in _ATTEMPT_ENDINGS and t.started_at is not None:
            self.duration.observe((t.queue, t.task), max(0.0, t.at - t.started_at))
        if t.after in (JobState.SUCCEEDED, JobState.FAILED):
            self.throughput.record(t.after == JobState.SUCCEEDED, t.at)

    def record_commit(self, writes: int, seconds: float) -> None:
        self.batch_size.observe((), writes)
        self.commit_seconds.observe((), seconds)

    def render(self, queues: list[QueueInfo], dead_letters: int) -> bytes:
        """The exposition text, with the queue gauges set from a fresh read of the store."""
        self.depth.clear()
        self.oldest_due.clear()
        self.busiest_keys.clear()  # the top keys change: last scrape's must not linger
        for info in queues:
            for state, count in info.counts.items():
                self.depth.labels(info.name, state).set(count)
            self.oldest_due.labels(info.name).set(info.oldest_due_age_s or 0.0)
            for key in info.busiest_keys:
                for state in ("pending", "running"):
                    self.busiest_keys.labels(info.name, key["key"], state).set(key[state])
        self.dead_letters.set(dead_letters)
        return generate_latest(self.registry)
