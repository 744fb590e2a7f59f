"""GET /events: job transitions as Server-Sent Events, filtered and resumable."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from jobserver import JobServer, JobState
from jobserver.events import Event, EventBus, EventFilter, Gap
from jobserver.models import Job

from ..conftest import ServerFactory, eventually


@pytest.fixture
async def served(make_server: ServerFactory) -> AsyncIterator[tuple[JobServer, str]]:
    server = await make_server()
    [base] = await server.serve("127.0.0.1", 0)
    yield server, base


async def read_events(
    resp: aiohttp.ClientResponse, until: Any, limit: int = 50
) -> list[dict[str, Any]]:
    """Parse SSE frames until `until(event)` holds."""
    events: list[dict[str, Any]] = []
    frame: dict[str, str] = {}
    while len(events) < limit:
        line = (await asyncio.wait_for(resp.content.readline(), 5)).decode().rstrip("\n")
        if line.startswith(":"):
            continue
        if line:
            key, _, value = line.partition(": ")
            frame[key] = value
            continue
        if frame:
            event = {"id": frame.get("id"), "event": frame["event"], **json.loads(frame["data"])}
            events.append(event)
            frame = {}
            if until(event):
                break
    return events


async def test_transitions_stream_filtered_by_queue(served: tuple[JobServer, str]) -> None:
    server, base = served
    async with aiohttp.ClientSession() as session, session.get(f"{base}/events?queue=q1") as resp:
        assert resp.status == 200 and resp.content_type == "text/event-stream"
        await resp.content.readline()  # ": connected"
        other = await server.enqueue("echo", ["x"], queue="q2")
        mine = await server.enqueue("echo", ["y"], queue="q1")
        events = await read_events(resp, lambda e: e["state"] == "succeeded")
    assert {e["job_id"] for e in events} == {mine.id}  # q2's job never shows
    assert [e["state"] for e in events] == ["pending", "running", "succeeded"]
    assert all(e["event"] == "job" and e["queue"] == "q1" for e in events)
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(ids)
    assert (await server.wait_for(other.id, timeout_s=5)).status == JobState.SUCCEEDED


async def test_a_reconnect_with_last_event_id_resumes(served: tuple[JobServer, str]) -> None:
    server, base = served
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/events") as resp:
            await resp.content.readline()
            first = await server.enqueue("echo", [1])
            seen = await read_events(resp, lambda e: e["state"] == "succeeded")
        last_id = seen[-1]["id"]
        # while disconnected:
        second = await server.enqueue("echo", [2])
        await server.wait_for(second.id, timeout_s=5)
        headers = {"Last-Event-ID": str(last_id)}
        async with session.get(f"{base}/events", headers=headers) as resp:
            await resp.content.readline()
            missed = await read_events(resp, lambda e: e["state"] == "succeeded")
    assert {e["job_id"] for e in seen} == {first.id}
    assert [(e["job_id"], e["state"]) for e in missed] == [
        (second.id, "pending"), (second.id, "running"), (second.id, "succeeded"),
    ]  # fmt: skip
    assert int(missed[0]["id"]) > int(last_id)


async def test_filter_by_job_id_and_bad_parameters(served: tuple[JobServer, str]) -> None:
    server, base = served
    async with aiohttp.ClientSession() as session:
        noise = await server.enqueue("echo", ["noise"])
        await server.wait_for(noise.id, timeout_s=5)
        job = await server.enqueue("echo", ["only"], delay_s=0)
        async with session.get(f"{base}/events?job_id={job.id}&last_event_id=0") as resp:
            await resp.content.readline()
            events = await read_events(resp, lambda e: e.get("state") == "succeeded")
        assert events[0]["event"] == "gap"  # id 0 is older than anything kept
        assert {e["job_id"] for e in events[1:]} == {job.id}
        for query in ("job_id=abc", "last_event_id=-1", "colour=red"):
            async with session.get(f"{base}/events?{query}") as resp:
                assert resp.status == 422
                assert (await resp.json())["error"]["field"] == query.split("=")[0]


def fake_job(job_id: int) -> Job:
    return Job(id=job_id, task="t", queue="q", args=[], kwargs={}, priority=0,
               status=JobState.PENDING, attempts=0, max_retries=0, timeout_s=None, backoff=None,
               created_at=0.0, run_at=0.0)  # fmt: skip


async def test_a_resume_past_the_kept_events_says_gap() -> None:
    bus = EventBus(keep=3)
    published = [bus.publish(fake_job(i), JobState.PENDING, 0.0) for i in range(6)]
    stream = bus.stream(EventFilter(), after_id=published[0].id, idle_s=0.01)
    first = await anext(stream)
    assert first is Gap
    rest = [await anext(stream) for _ in range(3)]
    assert [e.job_id for e in rest] == [3, 4, 5]  # type: ignore[union-attr]
    assert await anext(stream) is None  # idle: a keep-alive
    bus.close()
    with pytest.raises(StopAsyncIteration):
        await anext(stream)


async def test_each_jobs_events_come_in_the_order_of_its_transitions(
    make_server: ServerFactory,
) -> None:
    """An enqueue to an idle dispatcher commits with the claim it sets off: `pending` must
    still be told before `running`, one job at a time and for jobs enqueued together."""
    server = await make_server()

    async def dispatcher_idle() -> bool:
        return server.worker.dispatcher_idle  # waiting for a wake, nothing to do

    jobs = []
    for i in range(10):
        await eventually(dispatcher_idle, bool)
        jobs.append(await server.enqueue("echo", [i]))
        await server.wait_for(jobs[-1].id, timeout_s=5)
    jobs += await asyncio.gather(*(server.enqueue("echo", [i]) for i in range(20)))
    for job in jobs:
        await server.wait_for(job.id, timeout_s=5)
    order: dict[int, list[str]] = {}  # from the bus's kept history, in publishing order
    async for event in server.events.stream(EventFilter(), after_id=0, idle_s=0.05):
        if event is None:
            break
        if isinstance(event, Event):
            order.setdefault(event.job_id, []).append(event.state)
    assert {job.id: order.get(job.id) for job in jobs} == {
        job.id: ["pending", "running", "succeeded"] for job in jobs
    }
