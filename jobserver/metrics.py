"""Prometheus metrics (prometheus-client), one registry per server.

Counters and histograms are fed by job transitions as they happen; gauges about the queues
(depth by state, oldest due job, dead letters) are read from the store when scraped.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .models import Job, JobState, QueueInfo

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)


def transition_event(state: JobState, detail: dict[str, Any]) -> str | None:
    """The counter a transition feeds: enqueued, started, succeeded, retried, ..."""
    if state == JobState.PENDING:
        if detail.get("event") in ("enqueued", "requeued"):
            return "enqueued"
        return "retried" if "retry_in_s" in detail else None  # a release is not a retry
    return {
        JobState.RUNNING: "started",
        JobState.SUCCEEDED: "succeeded",
        JobState.FAILED: "dead_lettered",
        JobState.CANCELLED: "cancelled",
    }.get(state)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.jobs = Counter(
            "jobserver_jobs",
            "Job events: enqueued, started, succeeded, retried, dead_lettered (failed for good),"
            " cancelled",
            ["event", "queue", "task"],
            registry=r,
        )
        self.failures = Counter(
            "jobserver_job_failures",
            "Failed attempts, whether retried or not",
            ["queue", "task"],
            registry=r,
        )
        self.duration = Histogram(
            "jobserver_job_duration_seconds",
            "Time from an attempt's start to its end",
            ["queue", "task"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "jobserver_job_queue_wait_seconds",
            "Time a job waited between being due and starting",
            ["queue"],
            buckets=DURATION_BUCKETS,
            registry=r,
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
        self.dead_letters = Gauge(
            "jobserver_dead_letters", "Jobs in the dead-letter table", registry=r
        )
        self.loop_lag = Gauge(
            "jobserver_event_loop_lag_seconds",
            "How late the event loop woke a timer (a blocked loop shows here)",
            registry=r,
        )
        self.batch_size = Histogram(
            "jobserver_store_batch_size",
            "Writes per group-committed transaction",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.commit_seconds = Histogram(
            "jobserver_store_commit_seconds",
            "Time to run and commit one group-committed transaction",
            buckets=COMMIT_BUCKETS,
            registry=r,
        )

    def record_transition(
        self, job: Job, state: JobState, detail: dict[str, Any], now: float
    ) -> None:
        event = transition_event(state, detail)
        if event is not None:
            self._child(self.jobs, event, job.queue, job.task).inc()
        if state == JobState.RUNNING and job.started_at is not None:
            self._child(self.queue_wait, job.queue).observe(max(0.0, job.started_at - job.run_at))
        if "error" in detail:
            self._child(self.failures, job.queue, job.task).inc()
        attempt_ended = state in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED) or (
            state == JobState.PENDING and "retry_in_s" in detail
        )
        if attempt_ended and job.started_at is not None:
            self._child(self.duration, job.queue, job.task).observe(max(0.0, now - job.started_at))

    def _child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, looked up once: prometheus_client's own lookup costs a
        few microseconds, paid several times a job."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def record_commit(self, writes: int, seconds: float) -> None:
        self.batch_size.observe(writes)
        self.commit_seconds.observe(seconds)

    def render(self, queues: list[QueueInfo], dead_letters: int) -> bytes:
        """The exposition text, with the queue gauges set from a fresh read of the store."""
        self.depth.clear()
        self.oldest_due.clear()
        for info in queues:
            for state, count in info.counts.items():
                self.depth.labels(info.name, state).set(count)
            self.oldest_due.labels(info.name).set(info.oldest_due_age_s or 0.0)
        self.dead_letters.set(dead_letters)
        return generate_latest(self.registry)
