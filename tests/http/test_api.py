"""The HTTP API over real HTTP on 127.0.0.1 against a real SQLite file."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from jobserver import Backoff, JobServer, JobState, ManualClock
from jobserver.tasks import Registry, task

from ..conftest import ServerFactory, eventually, read_outside

reg = Registry()


@task(registry=reg, max_retries=0)
async def explode() -> None:
    raise RuntimeError("kaboom")


@task(registry=reg, timeout=8, backoff=Backoff(base_s=3, factor=2, cap_s=30))
async def slow_to_give_up() -> None:
    raise RuntimeError("never works")


class Api:
    def __init__(self, server: JobServer, base: str, session: aiohttp.ClientSession) -> None:
        self.server = server
        self.base = base
        self.session = session

    async def call(
        self, method: str, path: str, body: Any = None, **kwargs: Any
    ) -> tuple[int, Any, aiohttp.ClientResponse]:
        if body is not None:
            kwargs["json"] = body
        async with self.session.request(method, self.base + path, **kwargs) as resp:
            raw = await resp.read()
            data = json.loads(raw) if raw else None
            return resp.status, data, resp

    async def post_job(self, **body: Any) -> dict[str, Any]:
        status, data, _ = await self.call("POST", "/jobs", body)
        assert status == 202, data
        return data  # type: ignore[no-any-return]

    async def wait_terminal(self, job_id: int) -> dict[str, Any]:
        async def probe() -> dict[str, Any]:
            return (await self.call("GET", f"/jobs/{job_id}"))[1]  # type: ignore[no-any-return]

        return await eventually(probe, lambda j: j["is_terminal"])


@pytest.fixture
async def api(make_server: ServerFactory) -> AsyncIterator[Api]:
    server = await make_server(tasks=list(reg), max_body_bytes=64 * 1024)
    [address] = await server.serve("127.0.0.1", 0)
    assert address.startswith("http://127.0.0.1:")
    async with aiohttp.ClientSession() as session:
        yield Api(server, address, session)


async def job_count(api: Api) -> int:
    return sum((await api.server.store.count_by_status()).values())


async def test_enqueue_then_poll(api: Api) -> None:
    created = await api.post_job(task="echo", args=["hi"])
    assert created["status"] == "pending"
    assert created["poll_url"] == f"/jobs/{created['id']}"
    done = await api.wait_terminal(created["id"])
    assert done["status"] == "succeeded"
    assert done["result"] == "hi"
    assert done["attempts"] == 1
    for key in ("created_at", "started_at", "completed_at", "run_at"):
        assert done[key].endswith("Z")
    assert set(done) >= {
        "id", "task", "queue", "status", "attempts", "max_retries", "created_at", "started_at",
        "completed_at", "run_at", "result", "error", "progress", "is_terminal",
    }  # fmt: skip


async def test_enqueue_with_every_option(api: Api, clock: ManualClock) -> None:
    created = await api.post_job(
        task="echo",
        args=[1],
        kwargs={},
        queue="reports",
        priority=10,
        delay=60,
        max_retries=7,
        timeout=12.5,
        backoff={"base": 2, "factor": 3, "cap": 100},
        idempotency_key="opts-1",
    )
    _, job, _ = await api.call("GET", f"/jobs/{created['id']}")
    assert (job["queue"], job["priority"], job["max_retries"], job["timeout"]) == (
        "reports", 10, 7, 12.5,
    )  # fmt: skip
    assert job["status"] == "pending"
    stored = await api.server.get_job(created["id"])
    assert stored.run_at == clock.now() + 60
    assert stored.backoff is not None and stored.backoff.factor == 3


async def test_a_partial_backoff_and_no_timeout_come_from_the_task(api: Api) -> None:
    created = await api.post_job(task="slow_to_give_up", backoff={"factor": 5})
    stored = await api.server.get_job(created["id"])
    assert stored.backoff is not None
    assert (stored.backoff.base_s, stored.backoff.factor, stored.backoff.cap_s) == (3, 5, 30)
    assert stored.timeout_s == 8


async def test_run_at_is_read_as_rfc3339(api: Api) -> None:
    created = await api.post_job(task="echo", args=[1], run_at="2030-01-02T03:04:05+01:00")
    stored = await api.server.get_job(created["id"])
    assert stored.run_at == 1893549845.0
    _, job, _ = await api.call("GET", f"/jobs/{created['id']}")
    assert job["run_at"] == "2030-01-02T02:04:05.000Z"


async def test_unknown_job_is_404(api: Api) -> None:
    for path in ("/jobs/999999", "/jobs/abc", "/jobs/99999999999999999999999"):
        status, body, _ = await api.call("GET", path)
        assert status == 404, path
        assert body["error"]["code"] == "not_found"


async def test_list_filters_and_pages(api: Api) -> None:
    ids = [
        (await api.post_job(task="echo", args=[i], queue="q1", delay=999))["id"] for i in range(5)
    ]
    await api.post_job(task="echo", args=["x"], queue="q2", delay=999)
    status, page, _ = await api.call("GET", "/jobs?queue=q1&limit=2")
    assert status == 200
    assert [j["id"] for j in page["items"]] == ids[::-1][:2]
    seen = [j["id"] for j in page["items"]]
    while page["next_cursor"]:
        _, page, _ = await api.call("GET", f"/jobs?queue=q1&limit=2&cursor={page['next_cursor']}")
        seen += [j["id"] for j in page["items"]]
    assert seen == ids[::-1]
    _, exact, _ = await api.call("GET", "/jobs?queue=q1&limit=5")
    assert len(exact["items"]) == 5 and exact["next_cursor"] is None  # no empty last page
    _, pending, _ = await api.call("GET", "/jobs?status=pending&task=echo")
    assert len(pending["items"]) == 6


async def test_cancel_over_http(api: Api) -> None:
    created = await api.post_job(task="echo", args=[1], delay=999)
    status, job, _ = await api.call("POST", f"/jobs/{created['id']}/cancel")
    assert status == 200 and job["status"] == "cancelled" and job["is_terminal"]
    status, job, _ = await api.call("POST", f"/jobs/{created['id']}/cancel")
    assert status == 200 and job["status"] == "cancelled"
    done = await api.post_job(task="echo", args=[1])
    await api.wait_terminal(done["id"])
    status, body, _ = await api.call("POST", f"/jobs/{done['id']}/cancel")
    assert status == 409 and body["error"]["code"] == "conflict"
    status, _, _ = await api.call("POST", "/jobs/424242/cancel")
    assert status == 404


async def test_dead_letters_over_http(api: Api) -> None:
    created = await api.post_job(task="explode")
    failed = await api.wait_terminal(created["id"])
    assert failed["status"] == "failed"
    assert failed["error"] == {"type": "RuntimeError", "message": "kaboom"}  # no traceback
    status, page, _ = await api.call("GET", "/dead-letters")
    assert status == 200
    [dl] = page["items"]
    assert (dl["job_id"], dl["task"], dl["attempts"]) == (created["id"], "explode", 1)
    status, one, _ = await api.call("GET", f"/dead-letters/{dl['id']}")
    assert status == 200 and one == dl

    status, requeued, _ = await api.call("POST", f"/dead-letters/{dl['id']}/requeue")
    assert status == 202 and requeued["id"] != created["id"]
    again = await api.wait_terminal(requeued["id"])
    assert again["status"] == "failed"  # it still explodes: a new dead letter

    _, page, _ = await api.call("GET", "/dead-letters")
    [dl2] = page["items"]
    assert dl2["job_id"] == requeued["id"]
    status, _, _ = await api.call("DELETE", f"/dead-letters/{dl2['id']}")
    assert status == 204
    status, _, _ = await api.call("DELETE", f"/dead-letters/{dl2['id']}")
    assert status == 404
    status, _, _ = await api.call("GET", f"/dead-letters/{dl2['id']}")
    assert status == 404
    status, _, _ = await api.call("POST", "/dead-letters/777/requeue")
    assert status == 404


async def test_idempotency_key_in_header_or_body(api: Api) -> None:
    headers = {"Idempotency-Key": "order-17"}
    body = {"task": "echo", "args": ["pay"], "delay": 999}
    s1, first, _ = await api.call("POST", "/jobs", body, headers=headers)
    s2, second, _ = await api.call("POST", "/jobs", body, headers=headers)
    assert (s1, s2) == (202, 200)
    assert first["id"] == second["id"]
    s3, clash, _ = await api.call("POST", "/jobs", {**body, "args": ["refund"]}, headers=headers)
    assert s3 == 409 and clash["error"]["code"] == "conflict"
    s4, same, _ = await api.call("POST", "/jobs", {**body, "idempotency_key": "order-17"})
    assert s4 == 200 and same["id"] == first["id"]
    assert await job_count(api) == 1


async def test_health_and_readiness(api: Api) -> None:
    assert (await api.call("GET", "/healthz"))[:2] == (200, {"status": "ok"})
    assert (await api.call("GET", "/readyz"))[:2] == (200, {"status": "ready"})


async def test_unknown_route_and_wrong_method_answer_json(api: Api) -> None:
    status, body, _ = await api.call("GET", "/nope")
    assert status == 404 and body["error"]["code"] == "not_found"
    status, body, resp = await api.call("PUT", "/jobs")
    assert status == 405 and body["error"]["code"] == "method_not_allowed"
    assert "POST" in resp.headers["Allow"]


def deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


BAD_BODIES: list[tuple[str, int, str | None]] = [
    # (raw body, expected status, field named in the error)
    ("{not json", 400, "body"),
    ("", 400, "body"),
    ("[1, 2]", 422, "body"),
    ("{}", 422, "task"),
    ('{"task": 5}', 422, "task"),
    ('{"task": ""}', 422, "task"),
    ('{"task": "no_such_task"}', 422, "task"),
    ('{"task": "echo", "colour": "red"}', 422, "colour"),
    ('{"task": "echo", "args": {"a": 1}}', 422, "args"),
    ('{"task": "echo", "kwargs": [1]}', 422, "kwargs"),
    ('{"task": "echo", "kwargs": {"ctx": 1}}', 422, "kwargs.ctx"),
    ('{"task": "echo", "queue": ""}', 422, "queue"),
    ('{"task": "echo", "queue": "bad queue!"}', 422, "queue"),
    ('{"task": "echo", "queue": 3}', 422, "queue"),
    ('{"task": "echo", "priority": "high"}', 422, "priority"),
    ('{"task": "echo", "priority": true}', 422, "priority"),
    ('{"task": "echo", "priority": 1.5}', 422, "priority"),
    ('{"task": "echo", "priority": 100000}', 422, "priority"),
    ('{"task": "echo", "max_retries": -1}', 422, "max_retries"),
    ('{"task": "echo", "max_retries": 101}', 422, "max_retries"),
    ('{"task": "echo", "timeout": 0}', 422, "timeout"),
    ('{"task": "echo", "timeout": -3}', 422, "timeout"),
    ('{"task": "echo", "timeout": 1e300}', 422, "timeout"),
    ('{"task": "echo", "timeout": "5"}', 422, "timeout"),
    ('{"task": "echo", "delay": -1}', 422, "delay"),
    ('{"task": "echo", "delay": 1e12}', 422, "delay"),
    ('{"task": "echo", "delay": 5, "run_at": "2030-01-01T00:00:00Z"}', 422, "delay"),
    ('{"task": "echo", "run_at": "tomorrow"}', 422, "run_at"),
    ('{"task": "echo", "run_at": "2030-01-01T00:00:00"}', 422, "run_at"),
    ('{"task": "echo", "run_at": 1893456000}', 422, "run_at"),
    ('{"task": "echo", "backoff": 5}', 422, "backoff"),
    ('{"task": "echo", "backoff": {"base": 0}}', 422, "backoff.base"),
    ('{"task": "echo", "backoff": {"factor": 0.5}}', 422, "backoff.factor"),
    ('{"task": "echo", "backoff": {"jitter": 1}}', 422, "backoff.jitter"),
    ('{"task": "echo", "idempotency_key": ""}', 422, "idempotency_key"),
    ('{"task": "echo", "idempotency_key": 12}', 422, "idempotency_key"),
    ('{"task": "echo", "args": [NaN]}', 422, "body"),
    ('{"task": "echo", "args": [Infinity]}', 422, "body"),
    ('{"task": "echo", "args": [-Infinity]}', 422, "body"),
    (json.dumps({"task": "echo", "args": deep(40)}), 422, "body"),
    ('{"task": "echo", "args": ' + "[" * 5000 + "]" * 5000 + "}", 422, "body"),
]


@pytest.mark.parametrize(("raw", "expected", "field"), BAD_BODIES)
async def test_bad_input_is_refused_naming_the_field_and_writes_nothing(
    api: Api, raw: str, expected: int, field: str | None
) -> None:
    before = await job_count(api)
    status, body, resp = await api.call(
        "POST", "/jobs", data=raw.encode(), headers={"Content-Type": "application/json"}
    )
    assert status == expected, body
    assert resp.content_type == "application/json"
    assert body["error"]["field"] == field
    assert body["error"]["message"]
    assert await job_count(api) == before


async def test_wrong_content_type_is_415(api: Api) -> None:
    status, body, _ = await api.call(
        "POST", "/jobs", data=b'{"task": "echo"}', headers={"Content-Type": "text/plain"}
    )
    assert status == 415 and body["error"]["field"] == "Content-Type"
    assert await job_count(api) == 0


async def test_a_body_over_the_limit_is_413(api: Api) -> None:
    big = json.dumps({"task": "echo", "args": ["x" * (80 * 1024)]}).encode()
    status, body, _ = await api.call(
        "POST", "/jobs", data=big, headers={"Content-Type": "application/json"}
    )
    assert status == 413 and body["error"]["code"] == "too_large"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit still holds
        for _ in range(100):
            yield b" " * 1024

    status, body, _ = await api.call(
        "POST", "/jobs", data=chunks(), headers={"Content-Type": "application/json"}
    )
    assert status == 413
    assert await job_count(api) == 0


async def test_an_idempotency_header_that_is_too_long_is_refused(api: Api) -> None:
    status, body, _ = await api.call(
        "POST", "/jobs", {"task": "echo"}, headers={"Idempotency-Key": "k" * 500}
    )
    assert status == 422 and body["error"]["field"] == "Idempotency-Key"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=bogus", "status"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("cursor=abc", "cursor"),
        ("colour=red", "colour"),
    ],
)
async def test_bad_list_queries_name_the_parameter(api: Api, query: str, field: str) -> None:
    status, body, _ = await api.call("GET", f"/jobs?{query}")
    assert status == 422 and body["error"]["field"] == field


async def test_a_job_enqueued_over_http_is_committed_before_the_reply(api: Api) -> None:
    created = await api.post_job(task="echo", args=["durable"], delay=999)
    # read it back through a separate connection: the commit happened
    rows = await read_outside(
        api.server.store,
        "SELECT status FROM jobs WHERE id = ?",
        "SELECT status FROM jobs WHERE id = $1",
        created["id"],
    )
    assert rows == [(JobState.PENDING.value,)]


async def test_batch_enqueue_is_one_transaction(api: Api) -> None:
    jobs = [{"task": "echo", "args": [i], "delay": 999} for i in range(2_000)]
    status, body, _ = await api.call("POST", "/jobs/batch", {"jobs": jobs})
    assert status == 202
    ids = body["ids"]
    assert len(ids) == 2_000 and ids == sorted(ids)
    assert (await api.server.get_job(ids[1234])).args == [1234]
    assert await job_count(api) == 2_000


async def test_a_batch_with_bad_items_enqueues_nothing_and_names_each(api: Api) -> None:
    jobs: list[Any] = [{"task": "echo", "args": [i]} for i in range(10)]
    jobs[3]["priority"] = "high"
    jobs[7] = {"task": "no_such_task"}
    jobs.append("not an object")
    status, body, _ = await api.call("POST", "/jobs/batch", {"jobs": jobs})
    assert status == 422
    assert body["error"]["field"] == "jobs[3].priority"
    assert [(p["index"], p["field"]) for p in body["error"]["items"]] == [
        (3, "priority"),
        (7, "task"),
        (10, None),
    ]
    assert await job_count(api) == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"jobs": []}, "jobs"),
        ({"jobs": {"task": "echo"}}, "jobs"),
        ({"jobs": [{"task": "echo"}] * 10_001}, "jobs"),
        ({"jobs": [{"task": "echo"}], "extra": 1}, "extra"),
    ],
)
async def test_bad_batches_name_the_field(api: Api, body: Any, field: str) -> None:
    status, reply, _ = await api.call("POST", "/jobs/batch", body)
    assert status == 422 and reply["error"]["field"] == field
    assert await job_count(api) == 0


async def test_long_poll_returns_when_the_job_ends(api: Api) -> None:
    gate = await api.post_job(task="echo", args=["x"], delay=30)
    # the clock is manual: the job becomes due only when the test moves it
    clock: ManualClock = api.server.clock  # type: ignore[assignment]

    async def finish_later() -> None:
        await eventually(lambda: _waiters(api), lambda n: n > 0)
        clock.advance(30)

    mover = asyncio.create_task(finish_later())
    status, job, _ = await api.call("GET", f"/jobs/{gate['id']}?wait=30")
    await mover
    assert status == 200 and job["status"] == "succeeded"  # woken by the transition


async def _waiters(api: Api) -> int:
    return len(api.server._waiters)


async def test_long_poll_that_runs_out_returns_the_current_state(api: Api) -> None:
    created = await api.post_job(task="echo", args=["x"], delay=999)
    status, job, _ = await api.call("GET", f"/jobs/{created['id']}?wait=0.05")
    assert status == 200 and job["status"] == "pending"


async def test_enqueue_and_wait_for_the_result(api: Api) -> None:
    status, job, _ = await api.call("POST", "/jobs?wait=10", {"task": "echo", "args": ["now"]})
    assert status == 200 and job["status"] == "succeeded" and job["result"] == "now"
    status, job, _ = await api.call(
        "POST", "/jobs?wait=0.05", {"task": "echo", "args": [1], "delay": 999}
    )
    assert status == 202 and job["status"] == "pending"


@pytest.mark.parametrize("wait", ["-1", "61", "soon", "nan"])
async def test_a_bad_wait_is_refused(api: Api, wait: str) -> None:
    created = await api.post_job(task="echo", args=["x"], delay=999)
    status, body, _ = await api.call("GET", f"/jobs/{created['id']}?wait={wait}")
    assert status == 422 and body["error"]["field"] == "wait"
    status, body, _ = await api.call("POST", f"/jobs?wait={wait}", {"task": "echo"})
    assert status == 422 and body["error"]["field"] == "wait"
    assert await job_count(api) == 1


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/jobs?wait=0", b'{"task": "echo"}'),
        ("/jobs/batch", b'{"jobs": [{"task": "echo"}]}'),
    ],
)
async def test_a_body_not_encoded_as_its_content_encoding_says_is_400(
    api: Api, path: str, body: bytes
) -> None:
    """Content-Encoding: gzip on a plain body was a 500 (aiohttp's decoding error escaped)."""
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    # a session of its own: the server closes a connection whose body it cannot read
    async with (
        aiohttp.ClientSession() as fresh,
        fresh.post(api.base + path, data=body, headers=headers) as resp,
    ):
        assert resp.status == 400
        error = (await resp.json())["error"]
    assert (error["code"], error["field"]) == ("bad_body", "Content-Encoding")
    assert await job_count(api) == 0


@pytest.mark.parametrize(
    ("cron", "says"),
    [
        ("0 0 30 2 *", "never fires"),  # was a 500
        ("*/10 * * * * *", "6 fields"),  # croniter reads a seconds field: every second
        ("0 0 * * * 2030", "not a valid cron"),
    ],
)
async def test_a_cron_that_never_fires_or_has_extra_fields_is_refused(
    api: Api, cron: str, says: str
) -> None:
    status, data, _ = await api.call(
        "POST", "/schedules", {"name": "s", "task": "echo", "cron": cron}
    )
    assert status == 422, data
    assert data["error"]["field"] == "cron" and says in data["error"]["message"]
    assert (await api.call("GET", "/schedules"))[1]["items"] == []


async def test_an_internal_task_cannot_be_enqueued_from_outside(api: Api) -> None:
    """A client could enqueue `jobserver.webhook` and make the server send a genuinely signed
    record of any job to an allowed host."""
    from jobserver.models import WEBHOOK_TASK

    internal = {"task": WEBHOOK_TASK, "args": ["http://127.0.0.1:9/", 1]}
    for path, body in [
        ("/jobs", internal),
        ("/jobs?wait=0", internal),
        ("/jobs/batch", {"jobs": [internal]}),
        ("/schedules", {"name": "s", "cron": "* * * * *", **internal}),
    ]:
        status, data, _ = await api.call("POST", path, body)
        assert status == 422, (path, data)
        assert data["error"]["field"].endswith("task"), (path, data)
    assert await job_count(api) == 0
    spec = (await api.call("GET", "/openapi.json"))[1]
    assert WEBHOOK_TASK not in json.dumps(spec)


async def test_a_list_page_is_bounded_in_bytes_and_pages_through_everything(
    make_server: ServerFactory,
) -> None:
    """100 jobs of about 1.8 MB each made one 180 MB response (674 MB RSS): a page now ends
    once it holds max_page_bytes (with one job at least), and the cursor goes on from there."""
    server = await make_server(tasks=list(reg), max_page_bytes=5_000)
    [base] = await server.serve("127.0.0.1", 0)
    big = "x" * 1_500
    ids = [(await server.enqueue("echo", [big], delay_s=3600)).id for _ in range(10)]
    huge = (await server.enqueue("echo", ["y" * 20_000], delay_s=3600)).id
    seen: list[int] = []
    pages = 0
    cursor = ""
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(f"{base}/jobs?limit=100{cursor}") as resp:
                assert resp.status == 200
                raw = await resp.read()
            page = json.loads(raw)
            pages += 1
            assert len(page["items"]) >= 1
            assert len(page["items"]) == 1 or len(raw) <= 5_000 + 200
            seen += [item["id"] for item in page["items"]]
            if page["next_cursor"] is None:
                break
            cursor = f"&cursor={page['next_cursor']}"
    assert seen == sorted([*ids, huge], reverse=True)  # each once, newest first
    assert pages >= 4
