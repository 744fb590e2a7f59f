"""Fairness keys over real HTTP: a job's fairness_key, a key's own settings, the busiest keys,
and why a keyed job waits; every bad input a 4xx naming its field."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from jobserver import JobServer
from jobserver.tasks import Registry, task

from ..conftest import ServerFactory, eventually

reg = Registry()
release: dict[str, asyncio.Event] = {}  # one a test: an Event is bound to its loop


@task(registry=reg)
async def hold() -> str:
    await release["event"].wait()
    return "done"


class Api:
    def __init__(self, server: JobServer, base: str, session: aiohttp.ClientSession) -> None:
        self.server, self.base, self.session = server, base, session

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        kwargs = {} if body is None else {"json": body}
        async with self.session.request(method, self.base + path, **kwargs) as resp:
            return resp.status, await resp.json()


@pytest.fixture
async def api(make_server: ServerFactory) -> AsyncIterator[Api]:
    release["event"] = asyncio.Event()
    server = await make_server(tasks=list(reg))
    [address] = await server.serve("127.0.0.1", 0)
    async with aiohttp.ClientSession() as session:
        yield Api(server, address, session)
    release["event"].set()


async def test_a_job_keeps_its_key_and_a_held_key_says_why_its_job_waits(api: Api) -> None:
    status, body = await api.call("PATCH", "/queues/default", {"key_concurrency_limit": 1})
    assert status == 200, body
    assert body["limits"]["key_concurrency_limit"] == 1
    first = (await api.call("POST", "/jobs", {"task": "hold", "fairness_key": "acme"}))[1]
    assert (await api.call("GET", f"/jobs/{first['id']}"))[1]["fairness_key"] == "acme"

    async def running() -> str:
        return str((await api.call("GET", f"/jobs/{first['id']}"))[1]["status"])

    await eventually(running, lambda s: s == "running")
    second = (await api.call("POST", "/jobs", {"task": "hold", "fairness_key": "acme"}))[1]
    other = (await api.call("POST", "/jobs", {"task": "hold", "fairness_key": "zeta"}))[1]
    job = (await api.call("GET", f"/jobs/{second['id']}"))[1]
    assert job["status"] == "pending"
    assert job["waiting"]["code"] == "key_concurrency_limit"
    assert "'acme'" in job["waiting"]["message"]

    async def other_runs() -> str:
        return str((await api.call("GET", f"/jobs/{other['id']}"))[1]["status"])

    await eventually(other_runs, lambda s: s == "running")  # zeta is not held by acme's limit
    status, queue = await api.call("GET", "/queues/default")
    assert status == 200
    busiest = {k["key"]: k for k in queue["busiest_keys"]}
    assert busiest["acme"] == {"key": "acme", "pending": 1, "running": 1}
    assert busiest["zeta"]["running"] == 1


async def test_a_keys_own_settings_are_set_shown_and_given_back(api: Api) -> None:
    status, key = await api.call("PATCH", "/queues/q/keys/big%20customer", {"weight": 5})
    assert status == 200, key
    assert key["key"] == "big customer" and key["own"]["weight"] == 5.0
    assert key["effective"] == {
        "weight": 5.0, "concurrency_limit": None, "rate_limit": None, "rate_burst": None,
    }  # fmt: skip
    await api.call("PATCH", "/queues/q", {"key_rate_limit": 2})
    status, key = await api.call("GET", "/queues/q/keys/big%20customer")
    assert key["effective"]["rate_limit"] == 2.0 and key["own"]["rate_limit"] is None
    assert key["rate_tokens"] == 2.0 and key["running"] == 0
    status, key = await api.call(
        "PATCH", "/queues/q/keys/big%20customer", {"weight": None, "rate_limit": 10}
    )
    assert key["own"]["weight"] is None and key["effective"]["weight"] == 1.0
    assert key["effective"]["rate_limit"] == 10.0
    status, key = await api.call("GET", "/queues/q/keys/never-seen")
    assert status == 200 and key["effective"]["rate_limit"] == 2.0  # the queue's default


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/jobs", {"task": "hold", "fairness_key": ""}, "fairness_key"),
        ("POST", "/jobs", {"task": "hold", "fairness_key": "k" * 201}, "fairness_key"),
        ("POST", "/jobs", {"task": "hold", "fairness_key": 7}, "fairness_key"),
        ("POST", "/jobs", {"task": "hold", "fairness_key": "a\x00b"}, "fairness_key"),
        ("PATCH", "/queues/q/keys/a%00b", {"weight": 2}, "fairness_key"),
        ("PATCH", "/queues/q", {"key_concurrency_limit": 0}, "key_concurrency_limit"),
        ("PATCH", "/queues/q", {"key_rate_limit": -1}, "key_rate_limit"),
        ("PATCH", "/queues/q", {"key_rate_burst": 0.5}, "key_rate_burst"),
        ("PATCH", "/queues/q/keys/a", {"weight": 0}, "weight"),
        ("PATCH", "/queues/q/keys/a", {"weight": "heavy"}, "weight"),
        ("PATCH", "/queues/q/keys/a", {"weight": 1e300}, "weight"),
        ("PATCH", "/queues/q/keys/a", {"concurrency_limit": 2.5}, "concurrency_limit"),
        ("PATCH", "/queues/q/keys/a", {"tenant": 1}, "tenant"),
        ("PATCH", f"/queues/q/keys/{'k' * 201}", {"weight": 2}, "fairness_key"),
        ("GET", f"/queues/q/keys/{'k' * 201}", None, "fairness_key"),
    ],
)
async def test_bad_key_input_is_a_422_naming_the_field(
    api: Api, method: str, path: str, body: Any, field: str
) -> None:
    status, error = await api.call(method, path, body)
    assert status == 422, error
    assert error["error"]["field"] == field, error
    status, listed = await api.call("GET", "/queues")
    assert status == 200
    assert all(q["limits"]["key_concurrency_limit"] is None for q in listed["items"])


async def test_a_key_in_a_queue_that_is_not_a_queue_name_is_404(api: Api) -> None:
    status, error = await api.call("PATCH", "/queues/bad%20name/keys/a", {"weight": 2})
    assert status == 404, error


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("args", ["a\x00b"]),
        ("kwargs", {"note": "a\x00b"}),
        ("kwargs", {"a\x00b": 1}),
        ("unique_key", "a\x00b"),
        ("idempotency_key", "a\x00b"),
    ],
)
async def test_a_nul_character_anywhere_in_a_job_is_a_422_on_both_stores(
    api: Api, field: str, value: Any
) -> None:
    """PostgreSQL's text and jsonb cannot hold NUL: it answered 503 'cannot take writes now'
    for such input (SQLite took it), single and batch. Now both stores refuse it, naming the
    field; the text "\\u0000" itself is still taken."""
    body = {"task": "hold", field: value}
    status, error = await api.call("POST", "/jobs", body)
    assert status == 422 and error["error"]["field"] == field, error
    status, batch = await api.call("POST", "/jobs/batch", {"jobs": [body]})
    assert status == 422 and field in batch["error"]["field"], batch
    status, fine = await api.call("POST", "/jobs", {"task": "hold", "args": ["C:\\u0000"]})
    assert status == 202, fine
    job = (await api.call("GET", f"/jobs/{fine['id']}"))[1]
    assert job["args"] == ["C:\\u0000"]
