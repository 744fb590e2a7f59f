"""Embedding: `async with JobServer(...)`, and the API mounted inside a host aiohttp app."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from jobserver import JobServer, JobState
from jobserver.errors import ValidationError
from jobserver.store.base import JobFilter
from jobserver.tasks import Registry, task

from ..conftest import eventually

reg = Registry()


@task(registry=reg)
async def shout(word: str) -> str:
    return word.upper()


async def test_async_with_runs_jobs_and_closes_the_database(tmp_path: Path) -> None:
    async with JobServer(db=tmp_path / "e.db", tasks=list(reg)) as server:
        job = await server.enqueue("shout", ["hey"])
        done = await server.wait_for(job.id, timeout_s=5)
        assert done.status == JobState.SUCCEEDED and done.result == "HEY"
    # closed: the file lock is free, so a new server can open the same file
    async with JobServer(db=tmp_path / "e.db", tasks=list(reg)) as again:
        assert (await again.get_job(job.id)).result == "HEY"


async def test_mounted_in_a_host_app(tmp_path: Path) -> None:
    server = JobServer(db=tmp_path / "m.db", tasks=list(reg))
    app = web.Application()

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="the host app")

    app.router.add_get("/", hello)
    app.add_subapp("/jobs-api", server.create_app())
    app.cleanup_ctx.append(server.lifespan)
    runner = web.AppRunner(app)
    await runner.setup()  # runs the lifespan: the server starts with the host app
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    base = f"http://{host}:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(base + "/") as resp:
                assert await resp.text() == "the host app"
            async with session.post(
                base + "/jobs-api/jobs", json={"task": "shout", "args": ["mounted"]}
            ) as resp:
                assert resp.status == 202
                created = await resp.json()
            assert created["poll_url"] == f"/jobs-api/jobs/{created['id']}"

            async def poll() -> dict[str, object]:
                async with session.get(base + created["poll_url"]) as r:
                    return await r.json()  # type: ignore[no-any-return]

            done = await eventually(poll, lambda j: bool(j["is_terminal"]))
            assert done["result"] == "MOUNTED"
    finally:
        await runner.cleanup()  # and stops with it: the database file is free again
    async with JobServer(db=tmp_path / "m.db", tasks=list(reg)) as again:
        assert (await again.get_job(created["id"])).status == JobState.SUCCEEDED


async def test_an_open_long_poll_does_not_hold_up_shutdown(tmp_path: Path) -> None:
    server = JobServer(db=tmp_path / "lp.db", tasks=list(reg))
    await server.start()
    [address] = await server.serve("127.0.0.1", 0)
    job = await server.enqueue("shout", ["later"], delay_s=3600)
    async with aiohttp.ClientSession() as session:
        poll = asyncio.create_task(session.get(f"{address}/jobs/{job.id}?wait=60"))
        await eventually(lambda: _waiting(server), lambda n: n == 1)
        started = time.monotonic()
        await server.stop()
        assert time.monotonic() - started < 5  # not the 60 s the poll asked for
        resp = await poll
        assert resp.status == 200 and (await resp.json())["status"] == "pending"
        resp.release()


async def _waiting(server: JobServer) -> int:
    return sum(len(w) for w in server._waiters.values())


async def test_the_python_api_checks_a_job_as_the_http_api_does(tmp_path: Path) -> None:
    """One check for both doors (job_options): a bad option from Python is refused, named as
    Python names it, and nothing is written (this API once stored priority 10**6 and any
    queue name)."""
    async with JobServer(db=tmp_path / "v.db", tasks=list(reg)) as server:
        for options, field in (
            ({"priority": 10**6}, "priority"),
            ({"queue": "no spaces"}, "queue"),
            ({"deadline_s": 5, "deadline": time.time() + 9}, "deadline"),
            ({"timeout_s": -1}, "timeout_s"),
            ({"max_retries": 1.5}, "max_retries"),
            ({"surprise": 1}, "surprise"),
        ):
            with pytest.raises(ValidationError) as caught:
                await server.enqueue("shout", ["x"], **options)
            assert caught.value.field == field, options
            assert "deadline_in" not in caught.value.message
        assert await server.list_jobs(JobFilter(), 10, None) == []
        job = await server.enqueue("shout", ["ok"], priority=1000, queue="a.b:c-d")
        assert (job.priority, job.queue) == (1000, "a.b:c-d")


async def test_the_python_api_checks_queue_settings_as_the_http_api_does(tmp_path: Path) -> None:
    """configure_queue once took any value (a limit of -5, an unknown key reached the SQL)."""
    async with JobServer(db=tmp_path / "q.db", tasks=list(reg)) as server:
        for changes, field in (
            ({"concurrency_limit": -5}, "concurrency_limit"),
            ({"rate_limit": 0}, "rate_limit"),
            ({"paused": None}, "paused"),
            ({"max_depth": 2.5}, "max_depth"),
            ({"surprise": 1}, "surprise"),
        ):
            with pytest.raises(ValidationError) as caught:
                await server.configure_queue("q", **changes)
            assert caught.value.field == field, changes
        info = await server.configure_queue("q", concurrency_limit=3, rate_limit=None)
        assert info.settings.concurrency_limit == 3 and info.settings.rate_limit is None


async def test_the_python_api_checks_a_schedule_as_the_http_api_does(tmp_path: Path) -> None:
    """save_schedule once took any name (`task:...` is the names of @task(cron=...)
    schedules), any queue, priority or zone length, and stored them."""
    async with JobServer(db=tmp_path / "s.db", tasks=list(reg)) as server:
        for options, field in (
            ({"name": "task:shout"}, "name"),
            ({"name": "has space"}, "name"),
            ({"queue": "no spaces"}, "queue"),
            ({"priority": 5000}, "priority"),
            ({"timezone": "x" * 101}, "timezone"),
            ({"missed": "sometimes"}, "missed"),
            ({"paused": "yes"}, "paused"),
            ({"surprise": 1}, "surprise"),
        ):
            args = {"name": "nightly", "task": "shout", "cron": "@daily", **options}
            with pytest.raises(ValidationError) as caught:
                await server.save_schedule(**args)
            assert caught.value.field == field, options
        assert [s.name for s in await server.list_schedules()] == []
        saved = await server.save_schedule("nightly", "shout", "@daily", ["x"], queue="q")
        assert (saved.queue, saved.args, saved.timezone, saved.missed) == (
            "q",
            ["x"],
            "UTC",
            "skip",
        )


async def test_a_host_apps_shutdown_ends_open_event_streams(tmp_path: Path) -> None:
    """An app's graceful stop waits for its requests; an /events stream never ends by itself
    (the dashboard keeps one open), so the mounted app ends them on shutdown."""
    async with JobServer(db=tmp_path / "s.db", tasks=list(reg)) as server:
        app = web.Application()
        app.add_subapp("/jobs-api", server.create_app())
        runner = web.AppRunner(app, shutdown_timeout=30)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        async with aiohttp.ClientSession() as session:
            stream = await session.get(f"http://{host}:{port}/jobs-api/events")
            assert (await stream.content.readline()).startswith(b": connected")
            started = time.monotonic()
            await runner.cleanup()
            assert time.monotonic() - started < 5  # not the 30 s of shutdown_timeout
            assert await stream.content.read() == b"\n"  # the stream's end, then closed
            stream.close()
