"""GET /events: job transitions as Server-Sent Events, filtered and resumable."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from jobserver import JobServer, JobState, ManualClock
from jobserver.events import Event, EventFilter, Gap, Ready

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
        # 0: from the start of the log, all of it kept
        assert [(e["event"], e["job_id"]) for e in events] == [("job", job.id)] * 3
        for query in ("job_id=abc", "last_event_id=-1", "colour=red"):
            async with session.get(f"{base}/events?{query}") as resp:
                assert resp.status == 422
                assert (await resp.json())["error"]["field"] == query.split("=")[0]


async def replayed(server: JobServer, after_id: int, flt: EventFilter | None = None) -> list[Any]:
    """What a stream resuming after `after_id` is sent before it goes quiet."""
    items: list[Any] = []
    async for item in server.events.stream(flt or EventFilter(), after_id, idle_s=0.1):
        if item is None:
            break
        if item is not Ready:
            items.append(item)
    return items


async def test_a_stream_resumes_from_the_log_across_a_restart(
    make_server: ServerFactory,
) -> None:
    server = await make_server()
    [base] = await server.serve("127.0.0.1", 0)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/events") as resp:
            await resp.content.readline()
            first = await server.enqueue("echo", [1])
            seen = await read_events(resp, lambda e: e["state"] == "succeeded")
        await server.stop()
        server = await make_server()  # the same database, a new process's memory
        [base] = await server.serve("127.0.0.1", 0)
        second = await server.enqueue("echo", [2])
        await server.wait_for(second.id, timeout_s=5)
        headers = {"Last-Event-ID": str(seen[-1]["id"])}
        async with session.get(f"{base}/events", headers=headers) as resp:
            await resp.content.readline()
            missed = await read_events(resp, lambda e: e["state"] == "succeeded")
        async with session.get(f"{base}/events?last_event_id=0") as resp:
            await resp.content.readline()
            everything = await read_events(
                resp, lambda e: e["job_id"] == second.id and e["state"] == "succeeded"
            )
    assert [(e["job_id"], e["state"]) for e in seen] == [
        (first.id, "pending"), (first.id, "running"), (first.id, "succeeded"),
    ]  # fmt: skip
    assert [(e["job_id"], e["state"]) for e in missed] == [
        (second.id, "pending"), (second.id, "running"), (second.id, "succeeded"),
    ]  # fmt: skip
    # The log gives back what was streamed live, word for word: ids, names, times.
    assert everything == seen + missed
    ids = [int(e["id"]) for e in everything]
    assert ids == sorted(set(ids))


async def test_a_resume_past_what_retention_kept_says_gap(
    make_server: ServerFactory, clock: ManualClock
) -> None:
    server = await make_server(keep_events_s=3600.0)
    old = await server.enqueue("echo", ["old"])
    await server.wait_for(old.id, timeout_s=5)
    [first_old, *_] = [e for e in await replayed(server, 0) if isinstance(e, Event)]
    clock.advance(2 * 3600.0)
    new = await server.enqueue("echo", ["new"])
    await server.wait_for(new.id, timeout_s=5)
    await server.retention.prune_once()
    after_first = await replayed(server, first_old.id)
    assert after_first[0] is Gap  # the old job's other events are gone
    assert [(e.job_id, e.state) for e in after_first[1:]] == [
        (new.id, "pending"), (new.id, "running"), (new.id, "succeeded"),
    ]  # fmt: skip
    # An id this log never gave (another database's, say) is a gap too, then live events.
    assert await replayed(server, server.events.position + (1 << 20)) == [Gap]


async def test_every_node_streams_every_nodes_transitions_in_one_order(
    make_server: ServerFactory,
) -> None:
    """Two nodes on one PostgreSQL: each streams the jobs both run, in the same order."""
    one = await make_server()
    if one.store.exclusive:
        pytest.skip("one process owns a SQLite database: there is no second node")
    two = await make_server()
    streams = [node.events.stream(EventFilter(), None, idle_s=5) for node in (one, two)]
    for stream in streams:
        assert await anext(stream) is Ready
    jobs = [await node.enqueue("echo", [i]) for i in range(10) for node in (one, two)]
    for job in jobs:
        await one.wait_for(job.id, timeout_s=10)

    async def collect(stream: AsyncIterator[Any]) -> list[tuple[int, int, str, str | None]]:
        got: list[tuple[int, int, str, str | None]] = []
        while sum(1 for g in got if g[2] == "succeeded") < len(jobs):
            item = await asyncio.wait_for(anext(stream), 10)
            assert isinstance(item, Event), item
            got.append((item.id, item.job_id, item.state, item.task))
        return got

    seen_one, seen_two = [await collect(s) for s in streams]
    assert seen_one == seen_two
    assert [i for i, *_ in seen_one] == sorted({i for i, *_ in seen_one})
    for job in jobs:
        assert [(s, t) for _, j, s, t in seen_one if j == job.id] == [
            ("pending", "echo"), ("running", "echo"), ("succeeded", "echo"),
        ]  # fmt: skip


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
    async for event in server.events.stream(EventFilter(), after_id=0, idle_s=0.2):
        if event is None:
            break
        if isinstance(event, Event):
            order.setdefault(event.job_id, []).append(event.state)
    assert {job.id: order.get(job.id) for job in jobs} == {
        job.id: ["pending", "running", "succeeded"] for job in jobs
    }


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
async def test_a_node_streams_in_id_order_across_a_transaction_still_open(
    make_server: ServerFactory, outcome: str
) -> None:
    """PostgreSQL draws a log row's id before its transaction commits: a reader that went
    past a hole would never stream the row that fills it. It waits there a moment: a row
    that commits late comes first; one rolled back is given up on."""
    server = await make_server()
    if server.store.exclusive:
        pytest.skip("one writer: SQLite's rows commit in id order")
    import asyncpg

    from jobserver.events import encode_log
    from jobserver.models import Transition

    stream = server.events.stream(EventFilter(), None, idle_s=5)
    assert await anext(stream) is Ready
    conn = await asyncpg.connect(server.store.dsn)  # type: ignore[attr-defined]
    try:
        held = conn.transaction()
        await held.start()
        [(at, entries)] = encode_log(
            [Transition(999_999, "t", "q", None, JobState.PENDING, "test", 0, 1.0)]
        )
        await conn.execute(
            f'INSERT INTO "{server.store.schema}".event_log (at, entries) VALUES ($1, $2)',  # type: ignore[attr-defined]
            at,
            entries,
        )
        job = await server.enqueue("echo", ["after the hole"])
        await server.wait_for(job.id, timeout_s=5)
        first = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0.3)
        assert not first.done()  # held at the hole
        await (held.commit() if outcome == "commit" else held.rollback())
        got = [await asyncio.wait_for(first, 5)]
        while len(got) < (4 if outcome == "commit" else 3):
            got.append(await asyncio.wait_for(anext(stream), 5))
    finally:
        await conn.close()
    states = [(e.job_id, e.state) for e in got]  # type: ignore[union-attr]
    expected = [(job.id, "pending"), (job.id, "running"), (job.id, "succeeded")]
    assert states == ([(999_999, "pending")] if outcome == "commit" else []) + expected
