"""W3C trace context: a `traceparent` given at enqueue is kept with the job, its attempts run
as its children (the task's ctx, the http task's calls, the webhook carry the trace on), and
with OpenTelemetry each attempt is a span."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator

from jobserver import JobServer, JobState, SystemClock
from jobserver.tasks import JobContext, Registry, task

from ..conftest import ServerFactory

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"

reg = Registry()
seen_in_task: list[str | None] = []


@task(registry=reg, name="traced")
async def traced(ctx: JobContext) -> None:
    seen_in_task.append(ctx.traceparent)


class _SecretIds(IdGenerator):
    """Ids from `secrets`: the SDK's default draws on the `random` module, whose use inside a
    Hypothesis test (the server runs in the fuzz tests' process) Hypothesis reports."""

    def generate_span_id(self) -> int:
        return secrets.randbits(64) or 1

    def generate_trace_id(self) -> int:
        return secrets.randbits(128) or 1


# One provider a process (OpenTelemetry allows it to be set once): every span of this module.
spans = InMemorySpanExporter()
_provider = TracerProvider(id_generator=_SecretIds())
_provider.add_span_processor(SimpleSpanProcessor(spans))
trace.set_tracer_provider(_provider)


@pytest.fixture
async def receiver(unused_tcp_port: int) -> AsyncIterator[tuple[str, asyncio.Queue[str]]]:
    """An app on 127.0.0.1 that records the traceparent of each request it gets."""
    got: asyncio.Queue[str] = asyncio.Queue()

    async def record(request: web.Request) -> web.Response:
        await got.put(request.headers.get("traceparent", ""))
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/work", record)
    app.router.add_post("/hook", record)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()
    yield f"http://127.0.0.1:{unused_tcp_port}", got
    await runner.cleanup()


async def _server(make_server: ServerFactory) -> tuple[JobServer, str]:
    server = await make_server(tasks=list(reg), clock=SystemClock(), webhook_secret="s3cret")
    [address] = await server.serve("127.0.0.1", 0)
    return server, address


def _parts(traceparent: str) -> tuple[str, str, str]:
    version, trace_id, parent_id, flags = traceparent.split("-")
    assert version == "00"
    return trace_id, parent_id, flags


async def test_a_traceparent_header_is_kept_and_reaches_the_task_as_a_child(
    make_server: ServerFactory,
) -> None:
    server, address = await _server(make_server)
    seen_in_task.clear()
    spans.clear()
    async with aiohttp.ClientSession() as session:
        for headers in ({"traceparent": PARENT}, {"traceparent": PARENT, "X-Other": "1"}):
            # the first is answered by the fast path, the second too; then aiohttp's route
            async with session.post(
                f"{address}/jobs", json={"task": "traced"}, headers=headers
            ) as r:
                assert r.status == 202
                job_id = (await r.json())["id"]
            assert (await server.wait_for(job_id, 10)).status == JobState.SUCCEEDED
            async with session.get(f"{address}/jobs/{job_id}") as r:
                assert (await r.json())["traceparent"] == PARENT
        async with session.post(
            f"{address}/jobs?wait=5", json={"task": "traced"}, headers={"traceparent": "junk"}
        ) as r:  # not a valid header: ignored, as W3C asks of a receiver
            assert (await r.json())["traceparent"] is None
        async with session.post(
            f"{address}/jobs", json={"task": "traced", "traceparent": "junk"}
        ) as r:  # a bad body field is the client's error
            assert r.status == 422 and (await r.json())["error"]["field"] == "traceparent"
    first, second, untraced = seen_in_task
    for seen in (first, second):
        assert seen is not None and seen != PARENT
        assert _parts(seen)[0] == TRACE_ID and _parts(seen)[2] == "01"
    assert untraced is not None and _parts(untraced)[0] != TRACE_ID  # a root span's own trace
    # each attempt was a span, the child of the job's context
    traced_spans = [s for s in spans.get_finished_spans() if s.name == "job traced"]
    assert len(traced_spans) == 3
    for span, seen in zip(traced_spans[:2], (first, second), strict=True):
        assert f"{span.context.trace_id:032x}" == TRACE_ID
        assert span.parent is not None and f"{span.parent.span_id:016x}" == "00f067aa0ba902b7"
        assert f"{span.context.span_id:016x}" == _parts(seen)[1]  # the task saw its span
        assert span.attributes is not None and span.attributes["jobserver.task"] == "traced"


async def test_the_http_task_and_the_webhook_carry_the_trace(
    make_server: ServerFactory, receiver: tuple[str, asyncio.Queue[str]]
) -> None:
    server, _ = await _server(make_server)
    base, got = receiver
    job = await server.enqueue(
        "http",
        kwargs={"url": f"{base}/work", "json": {"x": 1}},
        traceparent=PARENT,
        callback_url=f"{base}/hook",
    )
    call = await asyncio.wait_for(got.get(), 10)
    hook = await asyncio.wait_for(got.get(), 10)
    assert (await server.get_job(job.id)).traceparent == PARENT
    for sent in (call, hook):
        trace_id, parent_id, _ = _parts(sent)
        assert trace_id == TRACE_ID and parent_id != "00f067aa0ba902b7"
    assert call != hook  # each its own attempt's span


async def test_the_python_api_checks_a_traceparent(make_server: ServerFactory) -> None:
    server, _ = await _server(make_server)
    from jobserver.errors import ValidationError

    with pytest.raises(ValidationError) as caught:
        await server.enqueue("traced", traceparent=f"00-{'0' * 32}-00f067aa0ba902b7-01")
    assert caught.value.field == "traceparent"  # an all-zero trace id is invalid (W3C)


def test_without_opentelemetry_an_attempt_is_a_child_of_the_job_and_no_span(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from types import SimpleNamespace

    from jobserver import tracing

    monkeypatch.setattr(tracing, "_OTEL", False)
    spans.clear()
    with tracing.attempt_span(SimpleNamespace(traceparent=PARENT)) as child:
        assert child is not None
        trace_id, parent_id, flags = _parts(child)
        assert (trace_id, flags) == (TRACE_ID, "01") and parent_id != "00f067aa0ba902b7"
    with tracing.attempt_span(SimpleNamespace(traceparent=None)) as none:
        assert none is None
    assert spans.get_finished_spans() == ()
