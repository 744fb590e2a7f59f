"""Workers outside the server (any language) lease external tasks' jobs over real HTTP and
report on them: the same retries, dead letters, rescue and cancellation as in-process runs,
every report guarded by its lease token."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from jobserver import JobServer, JobState, ManualClock
from jobserver.errors import ValidationError
from jobserver.store.base import JobFilter
from jobserver.tasks import Registry, external_task, task

from ..conftest import ServerFactory, eventually

reg = Registry()
reg.add(external_task("resize", queue="images", max_retries=1))


@task(registry=reg)
async def local_echo(value: Any) -> Any:
    return value


class Worker:
    """An external worker's calls, as plain HTTP."""

    def __init__(self, session: aiohttp.ClientSession, base: str, token: str | None = None):
        self.session = session
        self.base = base
        self.headers = {} if token is None else {"Authorization": f"Bearer {token}"}

    async def post(self, path: str, body: Any) -> tuple[int, Any]:
        async with self.session.post(self.base + path, json=body, headers=self.headers) as r:
            return r.status, await r.json()

    async def lease(self, **body: Any) -> list[dict[str, Any]]:
        status, got = await self.post("/leases", {"queues": ["images"], **body})
        assert status == 200, got
        return got["leases"]  # type: ignore[no-any-return]

    async def report(self, action: str, *items: dict[str, Any]) -> list[str]:
        status, got = await self.post(f"/leases/{action}", {"items": list(items)})
        assert status == 200, got
        return [i["status"] for i in got["items"]]


def mine(lease: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"job_id": lease["job"]["id"], "lease_token": lease["lease_token"], **extra}


async def start(make_server: ServerFactory, **kwargs: Any) -> tuple[JobServer, str]:
    server = await make_server(tasks=list(reg), **kwargs)
    [base] = await server.serve("127.0.0.1", 0)
    return server, base


async def test_an_external_job_waits_for_a_worker_and_its_result_is_kept(
    make_server: ServerFactory,
) -> None:
    server, base = await start(make_server)
    job = await server.enqueue("resize", [640])
    local = await server.enqueue("local_echo", [1])
    assert job.queue == "images"
    assert (await server.wait_for(local.id, timeout_s=5)).status == JobState.SUCCEEDED
    assert (await server.get_job(job.id)).status == JobState.PENDING  # ours left it alone
    async with aiohttp.ClientSession() as session:
        worker = Worker(session, base)
        [lease] = await worker.lease(limit=10)
        assert lease["job"]["id"] == job.id and lease["job"]["args"] == [640]
        assert len(lease["lease_token"]) == 32  # 128 bits: it goes over the network
        assert (await server.get_job(job.id)).status == JobState.RUNNING
        assert await worker.lease() == []  # nothing else is due
        assert await worker.report("complete", mine(lease, result={"w": 640})) == ["succeeded"]
        # a second report of the same lease changes nothing
        assert await worker.report("complete", mine(lease, result=0)) == ["lost"]
    done = await server.get_job(job.id)
    assert done.status == JobState.SUCCEEDED and done.result == {"w": 640}


async def test_a_long_poll_returns_as_soon_as_a_job_is_enqueued(
    make_server: ServerFactory,
) -> None:
    server, base = await start(make_server)
    async with aiohttp.ClientSession() as session:
        worker = Worker(session, base)
        waiting = asyncio.create_task(worker.lease(wait_s=30))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        began = time.monotonic()
        job = await server.enqueue("resize", [1])
        [lease] = await asyncio.wait_for(waiting, 5)
        assert lease["job"]["id"] == job.id
        assert time.monotonic() - began < 2  # woken, not the half-second poll a few times


async def test_a_failure_is_retried_by_the_jobs_policy_then_dead_lettered(
    make_server: ServerFactory, clock: ManualClock
) -> None:
    server, base = await start(make_server)
    job = await server.enqueue("resize", [1])
    async with aiohttp.ClientSession() as session:
        worker = Worker(session, base)
        [first] = await worker.lease()
        failure = mine(first, type="IOError", message="disk", traceback="at line 3")
        assert await worker.report("fail", failure) == ["pending"]  # max_retries=1: again
        retried = await server.get_job(job.id)
        assert retried.run_at > clock.now() and retried.error is not None
        assert (retried.error["type"], retried.error["message"]) == ("IOError", "disk")
        clock.advance(3600)
        [second] = await worker.lease()
        assert second["job"]["attempts"] == 2
        assert await worker.report("fail", mine(second, message="again")) == ["failed"]
    failed = await server.get_job(job.id)
    assert failed.status == JobState.FAILED
    [letter] = await server.list_dead_letters(10, None)
    assert letter.job_id == job.id and letter.error["message"] == "again"
    attempts = await server.store.list_attempts(job.id)
    assert [a.outcome for a in attempts] == ["failed", "failed"]
    assert attempts[0].error is not None and attempts[0].error["traceback"] == "at line 3"


async def test_a_worker_whose_lease_ran_out_changes_nothing(
    make_server: ServerFactory, clock: ManualClock
) -> None:
    server, base = await start(make_server)
    job = await server.enqueue("resize", [1])
    async with aiohttp.ClientSession() as session:
        worker = Worker(session, base)
        [stale] = await worker.lease(lease_s=5)
        clock.advance(10)
        await server.store.rescue_expired(clock.now())  # as the rescuer does
        [fresh] = await worker.lease()
        assert fresh["lease_token"] != stale["lease_token"]
        assert await worker.report("complete", mine(stale, result="late")) == ["lost"]
        assert await worker.report("fail", mine(stale, message="x")) == ["lost"]
        assert await worker.report("release", mine(stale)) == ["lost"]
        _status, renewal = await worker.post("/leases/renew", {"items": [mine(stale)]})
        assert renewal["lost"] == [job.id] and renewal["renewed"] == []
        assert (await server.get_job(job.id)).status == JobState.RUNNING  # fresh holds it
        assert await worker.report("complete", mine(fresh, result="ok")) == ["succeeded"]
    assert (await server.get_job(job.id)).result == "ok"


async def test_a_cancel_reaches_the_worker_on_renew_and_a_release_ends_it(
    make_server: ServerFactory,
) -> None:
    server, base = await start(make_server)
    job = await server.enqueue("resize", [1])
    other = await server.enqueue("resize", [2])
    async with aiohttp.ClientSession() as session:
        worker = Worker(session, base)
        leases = await worker.lease(limit=2)
        await server.cancel(job.id)
        status, renewal = await worker.post(
            "/leases/renew", {"items": [mine(lease) for lease in leases], "lease_s": 60}
        )
        assert status == 200 and renewal["cancel_requested"] == [job.id]
        assert sorted(renewal["renewed"]) == [job.id, other.id]
        by_id = {lease["job"]["id"]: lease for lease in leases}
        assert await worker.report("release", mine(by_id[job.id])) == ["cancelled"]
        assert await worker.report("release", mine(by_id[other.id])) == ["pending"]
    given_back = await server.get_job(other.id)
    assert given_back.status == JobState.PENDING and given_back.attempts == 0


async def test_a_worker_token_may_only_lease_and_report(make_server: ServerFactory) -> None:
    server, base = await start(make_server, tokens=["admin"], worker_tokens=["wk"])
    await server.enqueue("resize", [1])
    async with aiohttp.ClientSession() as session:
        worker = Worker(session, base, token="wk")
        [lease] = await worker.lease()
        assert await worker.report("complete", mine(lease, result=1)) == ["succeeded"]
        for method, path, body in (
            ("POST", "/jobs", {"task": "resize"}),
            ("GET", "/jobs", None),
            ("POST", f"/jobs/{lease['job']['id']}/cancel", None),
            ("GET", "/queues", None),
        ):
            async with session.request(
                method, base + path, json=body, headers=worker.headers
            ) as resp:
                assert resp.status == 403, (method, path)
                assert (await resp.json())["error"]["code"] == "forbidden"
        nobody = Worker(session, base, token="wrong")
        assert (await nobody.post("/leases", {"queues": ["images"]}))[0] == 401


async def test_external_and_own_tasks_keep_to_their_queues(make_server: ServerFactory) -> None:
    _server, base = await start(make_server)
    async with aiohttp.ClientSession() as session:
        for body, field in (
            ({"task": "resize", "queue": "other"}, "queue"),
            ({"task": "local_echo", "queue": "images"}, "queue"),
        ):
            async with session.post(base + "/jobs", json=body) as resp:
                assert resp.status == 422
                assert (await resp.json())["error"]["field"] == field
        worker = Worker(session, base)
        status, got = await worker.post("/leases", {"queues": ["default"]})
        assert status == 422 and got["error"]["field"] == "queues"


@pytest.mark.parametrize("result", [float("nan"), "a\x00b"])
async def test_a_result_no_store_keeps_fails_the_job(
    make_server: ServerFactory, result: Any
) -> None:
    server, _base = await start(make_server)
    job = await server.enqueue("resize", [1])
    lease = (await server.leasing.lease(["images"], 1, 30, 0))[0]
    assert lease.lease_token is not None
    state = await server.leasing.complete(job.id, lease.lease_token, result)
    assert state == JobState.FAILED
    failed = await server.get_job(job.id)
    assert failed.error is not None and failed.error["type"] == "InvalidResult"


async def test_an_attempt_past_its_timeout_ends_as_timeout_and_is_retried(
    make_server: ServerFactory,
) -> None:
    server, base = await start(make_server)
    job = await server.enqueue("resize", [1], timeout_s=0.3)
    async with aiohttp.ClientSession() as session:
        worker = Worker(session, base)
        [lease] = await worker.lease()
        timed_out = await eventually(
            lambda: server.get_job(job.id), lambda j: j.status == JobState.PENDING, timeout_s=5
        )
        assert timed_out.error is not None and timed_out.error["type"] == "timeout"
        assert await worker.report("complete", mine(lease, result="late")) == ["lost"]


async def test_progress_goes_with_a_renewal(make_server: ServerFactory) -> None:
    server, base = await start(make_server)
    job = await server.enqueue("resize", [1])
    async with aiohttp.ClientSession() as session:
        worker = Worker(session, base)
        [lease] = await worker.lease()
        status, _ = await worker.post(
            "/leases/renew",
            {"items": [mine(lease, progress=0.5, progress_message="half")], "lease_s": 60},
        )
        assert status == 200
        running = await server.get_job(job.id)
        assert (running.progress, running.progress_message) == (0.5, "half")
        status, bad = await worker.post("/leases/renew", {"items": [mine(lease, progress=2)]})
        assert status == 422 and bad["error"]["field"] == "items[0].progress"


async def test_queue_limits_and_fairness_keys_hold_for_leases(make_server: ServerFactory) -> None:
    server, base = await start(make_server)
    await server.configure_queue("images", concurrency_limit=2)
    for key in ("big", "big", "big", "big", "small"):
        await server.enqueue("resize", [key], fairness_key=key)
    async with aiohttp.ClientSession() as session:
        worker = Worker(session, base)
        first = await worker.lease(limit=10)
        assert len(first) == 2  # the queue's concurrency limit
        assert sorted(lease["job"]["args"][0] for lease in first) == ["big", "small"]  # fair
        assert await worker.lease(limit=10) == []
        assert await worker.report("complete", mine(first[0], result=1)) == ["succeeded"]
        assert len(await worker.lease(limit=10)) == 1


async def test_a_long_poll_ends_empty_when_the_server_stops(make_server: ServerFactory) -> None:
    server, _base = await start(make_server)
    waiting = asyncio.create_task(server.leasing.lease(["images"], 10, 30, 30))
    await asyncio.sleep(0.1)
    await server.stop(grace_period_s=0.5)
    assert await asyncio.wait_for(waiting, 5) == []  # not a job leased while it stopped


async def test_a_schedule_of_an_external_task_fires_into_its_queue(
    make_server: ServerFactory, clock: ManualClock
) -> None:
    server, _base = await start(make_server)
    saved = await server.save_schedule("nightly", "resize", "* * * * *", args=[1])
    assert saved.queue == "images"  # not "default", where its jobs would be refused
    with pytest.raises(ValidationError):
        await server.save_schedule("wrong", "resize", "* * * * *", queue="other")
    clock.advance(61)
    server.scheduler.wake()
    [job] = await eventually(
        lambda: server.list_jobs(JobFilter(task="resize"), 10, None), lambda found: len(found) == 1
    )
    assert job.queue == "images"


async def test_a_report_naming_a_job_twice_is_refused(make_server: ServerFactory) -> None:
    server, base = await start(make_server)
    await server.enqueue("resize", [1])
    async with aiohttp.ClientSession() as session:
        worker = Worker(session, base)
        [lease] = await worker.lease()
        twice = {"items": [mine(lease, result=1), mine(lease, result=2)]}
        status, got = await worker.post("/leases/complete", twice)
        assert status == 422 and got["error"]["field"] == "items[1].job_id"
        long_stack = mine(lease, message="x" * 100_000, traceback="y" * 200_000)
        assert await worker.report("fail", long_stack) == ["pending"]  # cut, not refused
    kept = await server.get_job(lease["job"]["id"])
    assert kept.error is not None and len(kept.error["message"]) < 100_000


async def test_a_shutdown_does_not_wait_for_long_polls_over_http(
    make_server: ServerFactory,
) -> None:
    server, base = await start(make_server)
    async with aiohttp.ClientSession() as session:
        polling = asyncio.create_task(Worker(session, base).lease(wait_s=30))
        await asyncio.sleep(0.2)
        began = time.monotonic()
        await server.stop(grace_period_s=0.5)
        assert time.monotonic() - began < 5  # aiohttp's cleanup waited on the poll (60 s)
        assert await asyncio.wait_for(polling, 5) == []


async def test_a_worker_that_left_its_long_poll_leases_nothing(
    make_server: ServerFactory,
) -> None:
    server, base = await start(make_server)
    async with aiohttp.ClientSession() as session:
        polling = asyncio.create_task(Worker(session, base).lease(wait_s=30))
        await asyncio.sleep(0.2)
        polling.cancel()  # the worker goes away: its connection closes
    await asyncio.sleep(0.2)
    job = await server.enqueue("resize", [1])
    await asyncio.sleep(0.7)  # past the poll's next look
    assert (await server.get_job(job.id)).status == JobState.PENDING


async def test_a_restart_leaves_external_workers_their_leases(
    tmp_path: Path, clock: ManualClock
) -> None:
    # A SQLite server takes back every running job at start (its own workers died with it),
    # but an external worker outlives the server: its job stays leased, and its report counts.
    db = tmp_path / "restart.db"
    first = JobServer(db=db, tasks=list(reg), clock=clock, grace_period_s=0.5)
    await first.start()
    job = await first.enqueue("resize", [1])
    [lease] = await first.leasing.lease(["images"], 1, 60, 0)
    await first.stop(grace_period_s=0.5)
    second = JobServer(db=db, tasks=list(reg), clock=clock, grace_period_s=0.5)
    await second.start()
    try:
        assert (await second.get_job(job.id)).status == JobState.RUNNING
        token = lease.lease_token or ""
        assert await second.leasing.complete(job.id, token, "done") == JobState.SUCCEEDED
    finally:
        await second.stop(grace_period_s=0.5)
