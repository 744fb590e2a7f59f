"""Dependencies, chains, groups and chords, and completion webhooks."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from jobserver import JobServer, JobState, ManualClock
from jobserver.errors import ValidationError
from jobserver.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from jobserver.workflows import chain, chord, group, job

from .. import workflow_tasks
from ..conftest import ServerFactory, eventually
from ..procs import Spawn

TASKS = ["tests.workflow_tasks"]
SECRET = "s3cret-for-tests"


async def finished(server: JobServer, workflow_id: int) -> tuple[str, list[Any]]:
    async def probe() -> tuple[str, list[Any]]:
        return await server.get_workflow(workflow_id)

    return await eventually(probe, lambda r: r[0] in ("succeeded", "failed", "cancelled"))


async def test_a_chain_runs_in_order_passing_each_result_on(make_server: ServerFactory) -> None:
    server = await make_server(tasks=TASKS)
    wf, jobs = await server.enqueue_workflow(
        chain(job("step", "a"), job("step", "b"), job("step", "c"))
    )
    status, done = await finished(server, wf)
    assert status == "succeeded"
    assert [j.result for j in done] == [["a"], ["a", "b"], ["a", "b", "c"]]
    assert done[1].depends_on == [jobs[0].id] and done[2].depends_on == [jobs[1].id]
    assert done[0].started_at <= done[1].started_at <= done[2].started_at  # type: ignore[operator]


async def test_a_group_runs_at_once(make_server: ServerFactory) -> None:
    server = await make_server(tasks=TASKS, concurrency=4)
    wf, _ = await server.enqueue_workflow(group(*[job("slow_square", i, 0.3) for i in range(3)]))
    # all three run together: none waits for another
    await eventually(lambda: server.get_workflow(wf), lambda r: r[1][0].status == JobState.RUNNING)
    running = await eventually(
        lambda: server.store.count_by_status(), lambda c: c["running"] == 3, timeout_s=5
    )
    assert running["running"] == 3
    status, done = await finished(server, wf)
    assert status == "succeeded" and [j.result for j in done] == [0, 1, 4]


async def test_a_chord_callback_gets_every_result_in_order(make_server: ServerFactory) -> None:
    server = await make_server(tasks=TASKS)
    wf, jobs = await server.enqueue_workflow(
        chord(group(*[job("square", n) for n in (1, 2, 3)]), job("total"))
    )
    status, done = await finished(server, wf)
    assert status == "succeeded"
    assert done[-1].result == 1 + 4 + 9
    assert done[-1].depends_on == [j.id for j in jobs[:3]]


async def test_nesting_a_group_inside_a_chain(make_server: ServerFactory) -> None:
    server = await make_server(tasks=TASKS)
    wf, _ = await server.enqueue_workflow(
        chain(job("square", 3), group(job("square"), job("square")), job("total"))
    )
    status, done = await finished(server, wf)
    assert status == "succeeded"
    assert [j.result for j in done] == [9, 81, 81, 162]


async def test_a_failed_dependency_fails_or_cancels_what_follows(
    make_server: ServerFactory,
) -> None:
    server = await make_server(tasks=TASKS)
    wf, _ = await server.enqueue_workflow(chain(job("refuse"), job("step", "x"), job("step", "y")))
    status, done = await finished(server, wf)
    assert status == "failed"
    assert [j.status for j in done] == [JobState.FAILED] * 3
    assert done[1].error is not None and done[1].error["type"] == "dependency_failed"
    assert done[2].error is not None and "depends on" in done[2].error["message"]
    assert done[1].attempts == 0  # it never ran

    wf, _ = await server.enqueue_workflow(
        chain(job("refuse"), job("step", "x")), on_dependency_failure="cancel"
    )
    status, done = await finished(server, wf)
    assert done[1].status == JobState.CANCELLED


async def test_depends_on_existing_jobs_and_parent_results(make_server: ServerFactory) -> None:
    server = await make_server(tasks=TASKS)
    a = await server.enqueue("square", [4])
    b = await server.enqueue("square", [5], delay_s=3600)  # not done yet
    child = await server.enqueue("parents", depends_on=[a.id, b.id])
    reason = await server.why_waiting(await server.get_job(child.id))
    assert reason is not None and reason["code"] == "waiting_for_dependencies"
    clock: ManualClock = server.clock  # type: ignore[assignment]
    clock.advance(3600)
    done = await server.wait_for(child.id, timeout_s=5)
    assert done.status == JobState.SUCCEEDED
    assert done.result == {str(a.id): 16, str(b.id): 25}
    with pytest.raises(ValidationError) as missing:
        await server.enqueue("parents", depends_on=[999_999])
    assert missing.value.field == "depends_on"
    failed = await server.enqueue("refuse")
    await server.wait_for(failed.id, timeout_s=5)
    late = await server.enqueue("parents", depends_on=[failed.id])  # already failed: ends now
    assert (await server.wait_for(late.id, timeout_s=5)).status == JobState.FAILED


async def test_workflows_over_http(make_server: ServerFactory) -> None:
    server = await make_server(tasks=TASKS)
    [base] = await server.serve("127.0.0.1", 0)
    spec = {"chord": {"group": [{"task": "square", "args": [n]} for n in (2, 3)],
                      "callback": {"task": "total"}}}  # fmt: skip
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base}/workflows", json=spec) as resp:
            assert resp.status == 202
            accepted = await resp.json()
        assert len(accepted["jobs"]) == 3

        async def state() -> dict[str, Any]:
            async with session.get(base + accepted["poll_url"]) as r:
                return await r.json()  # type: ignore[no-any-return]

        wf = await eventually(state, lambda w: w["status"] == "succeeded")
        assert wf["jobs"][-1]["result"] == 13
        bad = {"chain": [{"task": "square", "args": [1]}, {"task": "nope"}]}
        async with session.post(f"{base}/workflows", json=bad) as resp:
            assert resp.status == 422
            assert (await resp.json())["error"]["field"] == "chain[1].task"
        assert sum((await server.store.count_by_status()).values()) == 3  # nothing from `bad`


@pytest.mark.e2e  # a `jobserver serve` subprocess, killed
async def test_a_chord_callback_runs_once_across_a_kill(tmp_path: Path, spawn: Spawn) -> None:
    log = tmp_path / "callbacks.log"
    env = {workflow_tasks.LOG_ENV: str(log)}
    db = tmp_path / "wf.db"
    flags = ["--tasks", "tests.workflow_tasks", "--concurrency", "2", "--log-level", "warning"]
    spec = {
        "chord": {
            "group": [{"task": "slow_square", "args": [n, 0.4 * n]} for n in (1, 2, 3, 4)],
            "callback": {"task": "total"},
        }
    }
    server = spawn(db, flags, env)
    async with aiohttp.ClientSession() as session:
        await server.wait_ready(session)
        async with session.post(f"{server.url}/workflows", json=spec) as resp:
            accepted = await resp.json()
        first = accepted["jobs"][0]

        async def status_of(job_id: int) -> str:
            async with session.get(f"{server.url}/jobs/{job_id}") as r:
                return str((await r.json())["status"])

        await eventually(lambda: status_of(first), lambda s: s == "succeeded", timeout_s=10)
        server.proc.send_signal(signal.SIGKILL)  # members still running or pending
        assert await server.wait_exit() == -signal.SIGKILL

    again = spawn(db, flags, env)
    async with aiohttp.ClientSession() as session:
        await again.wait_ready(session)

        async def workflow() -> dict[str, Any]:
            async with session.get(f"{again.url}{accepted['poll_url']}") as r:
                return await r.json()  # type: ignore[no-any-return]

        wf = await eventually(workflow, lambda w: w["status"] == "succeeded", timeout_s=30)
    assert wf["jobs"][-1]["result"] == 1 + 4 + 9 + 16
    runs = log.read_text().splitlines()
    assert len(runs) == 1 and runs[0].startswith(f"total {accepted['jobs'][-1]} ")


# -- webhooks -------------------------------------------------------------------------------
class Receiver:
    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.fail_first = 0
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.calls.append((dict(request.headers), await request.read()))
        if self.fail_first > 0:
            self.fail_first -= 1
            return web.Response(status=503)
        return web.Response(text="ok")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    rec.url = f"http://{host}:{port}/hook"
    yield rec
    await runner.cleanup()


async def test_a_webhook_is_signed_and_carries_the_job(
    make_server: ServerFactory, receiver: Receiver, clock: ManualClock
) -> None:
    server = await make_server(tasks=TASKS, webhook_secret=SECRET)
    done = await server.enqueue("square", [7], callback_url=receiver.url)
    await eventually(lambda: _count(receiver), lambda n: n == 1)
    headers, body = receiver.calls[0]
    assert verify(SECRET, headers[TIMESTAMP_HEADER], body, headers[SIGNATURE_HEADER], clock.now())
    stale = clock.now() + 3600
    assert not verify(SECRET, headers[TIMESTAMP_HEADER], body, headers[SIGNATURE_HEADER], stale)
    assert not verify("wrong", headers[TIMESTAMP_HEADER], body, headers[SIGNATURE_HEADER], 0)
    import json

    record = json.loads(body)
    assert record["id"] == done.id and record["status"] == "succeeded" and record["result"] == 49


async def test_a_failing_webhook_is_retried_with_backoff(
    make_server: ServerFactory, receiver: Receiver, clock: ManualClock
) -> None:
    receiver.fail_first = 2
    server = await make_server(tasks=TASKS, webhook_secret=SECRET)
    await server.enqueue("refuse", callback_url=receiver.url)  # failed jobs are reported too
    for expected in (1, 2, 3):
        await eventually(lambda: _count(receiver), lambda n, e=expected: n == e)  # type: ignore[misc]
        # the delivery's failure is recorded (its retry scheduled) before time moves
        await eventually(server.store.count_by_status, lambda c: c["running"] == 0)
        clock.advance(10)  # past the backoff (base 1 s, full jitter)
    headers, body = receiver.calls[-1]
    assert verify(SECRET, headers[TIMESTAMP_HEADER], body, headers[SIGNATURE_HEADER], clock.now())


async def test_callback_urls_are_checked_at_enqueue(
    make_server: ServerFactory, tmp_path: Path, clock: ManualClock
) -> None:
    server = await make_server(tasks=TASKS, webhook_secret=SECRET)
    with pytest.raises(ValidationError) as outside:
        await server.enqueue("square", [1], callback_url="http://example.com/hook")
    assert outside.value.field == "callback_url"
    async with JobServer(db=tmp_path / "nosecret.db", tasks=TASKS, clock=clock) as plain:
        with pytest.raises(ValidationError, match="secret"):
            await plain.enqueue("square", [1], callback_url="http://127.0.0.1:1/hook")


async def _count(receiver: Receiver) -> int:
    await asyncio.sleep(0)
    return len(receiver.calls)


async def test_a_webhook_verifies_with_the_standard_webhooks_library(
    make_server: ServerFactory, receiver: Receiver
) -> None:
    """Receivers verify with an off-the-shelf library (standardwebhooks, PyPI and npm), given
    the server's secret as whsec_ + base64 (or a whsec_ secret as it is)."""
    import base64

    from standardwebhooks import Webhook, WebhookVerificationError

    server = await make_server(tasks=TASKS, webhook_secret=SECRET)
    done = await server.enqueue("square", [3], callback_url=receiver.url)
    await eventually(lambda: _count(receiver), lambda n: n == 1)
    headers, body = receiver.calls[0]
    lowered = {k.lower(): v for k, v in headers.items()}
    verifier = Webhook("whsec_" + base64.b64encode(SECRET.encode()).decode())
    record = verifier.verify(body, lowered)  # raises unless signed with the secret, recently
    assert record["id"] == done.id and record["result"] == 9
    with pytest.raises(WebhookVerificationError):
        verifier.verify(body.replace(b"9", b"8"), lowered)
    with pytest.raises(WebhookVerificationError):
        Webhook(base64.b64encode(b"another secret").decode()).verify(body, lowered)
