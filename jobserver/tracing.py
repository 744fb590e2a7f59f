"""W3C trace context for jobs: a `traceparent` given at enqueue is kept with the job, and each
attempt runs as a child of it, so the http task's calls and the webhook carry the trace on.

`traceparent` is `00-<trace id: 32 hex>-<parent id: 16 hex>-<flags: 2 hex>`
(https://www.w3.org/TR/trace-context/). With OpenTelemetry installed (the `otel` extra) and a
tracer provider set up, each attempt is also a span, the child of the job's context; without
OpenTelemetry nothing of it is imported.
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
import secrets
from collections.abc import Iterator
from typing import Any

TRACEPARENT = re.compile(r"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")
_OTEL = importlib.util.find_spec("opentelemetry") is not None  # found, not imported


def child_of(traceparent: str | None) -> str | None:
    """The traceparent of an operation inside `traceparent`'s: the same trace and flags, a
    new parent id (this operation's span id)."""
    if traceparent is None:
        return None
    _, trace_id, _, flags = traceparent.split("-")
    return f"00-{trace_id}-{secrets.token_hex(8)}-{flags}"


class _Plain:
    """An attempt without a span: its traceparent is a child of the job's (None for none)."""

    __slots__ = ("traceparent",)

    def __init__(self, traceparent: str | None) -> None:
        self.traceparent = traceparent

    def __enter__(self) -> str | None:
        return child_of(self.traceparent)

    def __exit__(self, *exc: object) -> None:
        return None


def attempt_span(job: Any) -> contextlib.AbstractContextManager[str | None]:
    """Around one attempt of `job`: gives the traceparent its task and calls carry (None for a
    job with none and no tracing). With OpenTelemetry installed and a tracer provider set up
    (an SDK's), the attempt is a span named `job <task>`, the child of the job's traceparent
    (a root span without one), with the job's id, queue and attempt; an exception out of it
    marks it failed. Otherwise no span is made: OpenTelemetry's no-op one costs ~17 us."""
    if _OTEL and _spans_recorded():
        return _span(job)
    return _Plain(job.traceparent)


_trace: Any = None  # opentelemetry.trace, once imported


def _spans_recorded() -> bool:
    global _trace
    if _trace is None:
        import opentelemetry.trace

        _trace = opentelemetry.trace
    return not isinstance(_trace.get_tracer_provider(), _trace.ProxyTracerProvider)


@contextlib.contextmanager
def _span(job: Any) -> Iterator[str | None]:
    import opentelemetry.propagate as propagate

    trace = _trace
    parent = propagate.extract({"traceparent": job.traceparent} if job.traceparent else {})
    attributes = {
        "jobserver.job_id": job.id,
        "jobserver.task": job.task,
        "jobserver.queue": job.queue,
        "jobserver.attempt": job.attempts,
    }
    with trace.get_tracer("jobserver").start_as_current_span(
        f"job {job.task}", context=parent, kind=trace.SpanKind.CONSUMER, attributes=attributes
    ):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        yield carrier.get("traceparent") or child_of(job.traceparent)
