"""Bearer tokens on every route, read-only tokens, throttled failures, bind refusal, and
injection strings stored as data, never run as SQL."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from jobserver import JobServer
from jobserver.auth import MAX_FAILURES

from ..conftest import ServerFactory, read_outside
from ..procs import REPO, server_env

FULL = "full-token-for-tests"
READ = "read-token-for-tests"
OPEN = {"healthz", "dashboard", "dashboard_static"}


class Client:
    def __init__(self, server: JobServer, base: str, session: aiohttp.ClientSession) -> None:
        self.server, self.base, self.session = server, base, session

    async def call(
        self, method: str, path: str, token: str | None = None, **kw: Any
    ) -> tuple[int, Any, Any]:
        headers = kw.pop("headers", {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        async with self.session.request(method, self.base + path, headers=headers, **kw) as r:
            body = await r.json() if r.content_type == "application/json" else await r.read()
            return r.status, body, r.headers


@pytest.fixture
async def client(make_server: ServerFactory) -> AsyncIterator[Client]:
    server = await make_server(tokens=[FULL, "another-full-token"], read_tokens=[READ])
    [base] = await server.serve("127.0.0.1", 0)
    async with aiohttp.ClientSession() as session:
        yield Client(server, base, session)


def api_routes(server: JobServer) -> list[tuple[str, str]]:
    out = []
    for route in server.create_app().router.routes():
        if route.method == "HEAD" or route.name in OPEN:
            continue
        path = re.sub(r"{id[^}]*}", "1", route.resource.canonical)  # type: ignore[union-attr]
        out.append((route.method, path.replace("{name}", "q")))
    return out


async def test_every_route_but_health_needs_a_token(client: Client) -> None:
    client.server.auth.max_failures = 1000  # this walk fails on purpose, many times
    routes = api_routes(client.server)
    assert len(routes) >= 20
    for method, path in routes:
        status, body, headers = await client.call(method, path)
        assert status == 401, (method, path)
        assert body["error"]["code"] == "unauthorized"
        assert headers["WWW-Authenticate"].startswith("Bearer")
    for method, path in routes:
        if path == "/events":  # a stream: its headers are enough
            headers = {"Authorization": f"Bearer {FULL}"}
            async with client.session.get(client.base + path, headers=headers) as resp:
                assert resp.status == 200
            continue
        status, _, _ = await client.call(method, path, token=FULL)
        assert status != 401, (method, path)
    assert (await client.call("GET", "/healthz"))[0] == 200


async def test_a_read_only_token_reads_but_never_writes(client: Client) -> None:
    status, created, _ = await client.call("POST", "/jobs", FULL, json={"task": "echo"})
    assert status == 202
    assert (await client.call("GET", f"/jobs/{created['id']}", READ))[0] == 200
    assert (await client.call("GET", "/queues", READ))[0] == 200
    for method, path in [("POST", "/jobs"), ("POST", f"/jobs/{created['id']}/cancel"),
                         ("DELETE", "/dead-letters/1"), ("POST", "/queues/q/pause")]:  # fmt: skip
        status, body, _ = await client.call(method, path, READ, json={"task": "echo"})
        assert status == 403 and body["error"]["code"] == "forbidden", (method, path)


async def test_repeated_failures_are_answered_with_429_but_a_valid_token_gets_in(
    client: Client,
) -> None:
    """Ten bad tokens from one address used to lock every client there out for a minute, the
    valid admin token included (a misconfigured script beside a sidecar locked out the app)."""
    for _ in range(MAX_FAILURES):
        assert (await client.call("GET", "/jobs", "wrong"))[0] == 401
    status, body, headers = await client.call("GET", "/jobs", "wrong again")
    assert status == 429 and int(headers["Retry-After"]) >= 1
    assert body["error"]["code"] == "too_many_failures"
    assert (await client.call("GET", "/jobs", None))[0] == 429  # no token is a failure too
    assert (await client.call("GET", "/jobs", FULL))[0] == 200
    assert (await client.call("GET", "/openapi.json", READ))[0] == 200
    status, _, _ = await client.call("POST", "/jobs", FULL, json={"task": "echo"})
    assert status == 202  # the fast path too


async def test_the_bearer_scheme_is_case_insensitive(client: Client) -> None:
    for scheme in ("bearer", "BEARER", "Bearer"):
        headers = {"Authorization": f"{scheme} {FULL}"}
        assert (await client.call("GET", "/jobs", headers=headers))[0] == 200, scheme
    assert (await client.call("GET", "/jobs", headers={"Authorization": f"Basic {FULL}"}))[0] == 401


def test_serving_beyond_loopback_needs_a_token() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "jobserver", "serve", "--host", "0.0.0.0", "--port", "0"],
        cwd=REPO, env=server_env(), capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "token" in result.stderr and "Traceback" not in result.stderr


INJECTIONS = [
    "'; DROP TABLE jobs; --",
    '" OR 1=1 --',
    "x'); DELETE FROM dead_letters; --",
    "\\x00\\'; SELECT * FROM sqlite_master; --",
    "Robert'); DROP TABLE queues;--",
]


async def test_injection_strings_are_stored_byte_exact_and_run_nothing(client: Client) -> None:
    async def schema() -> list[tuple[Any, ...]]:  # every table and index, as defined
        return await read_outside(
            client.server.store,
            "SELECT type, name, sql FROM sqlite_master ORDER BY name",
            "SELECT tablename, indexname, indexdef FROM pg_indexes"
            " WHERE schemaname = current_schema() ORDER BY 1, 2",
        )

    before = await schema()
    assert before
    ids = []
    for text in INJECTIONS:
        body = {"task": "echo", "args": [text], "kwargs": {text: text}, "delay": 999,
                "idempotency_key": text, "unique_key": text}  # fmt: skip
        status, created, _ = await client.call("POST", "/jobs", FULL, json=body)
        assert status == 202, created
        ids.append(created["id"])
        for query in (f"task={text}", f"queue={text}", f"status={text}", f"cursor={text}"):
            status, _, _ = await client.call(
                "GET", "/jobs", FULL, params=dict([query.split("=", 1)])
            )
            assert status in (200, 422)
        for path in (f"/queues/{text}", f"/schedules/{text}", f"/jobs/{text}"):
            assert (await client.call("GET", path, FULL))[0] in (404, 422)
    for text, job_id in zip(INJECTIONS, ids, strict=True):
        job = await client.server.get_job(job_id)
        assert job.args == [text] and job.kwargs == {text: text}
        assert job.idempotency_key == text and job.unique_key == text
    assert await schema() == before


async def test_with_no_token_a_request_naming_another_host_is_refused(
    make_server: ServerFactory,
) -> None:
    """DNS rebinding: a page from elsewhere whose name now points at 127.0.0.1 sends its own
    name as Host; with no token the API must not answer it (the fast path included)."""
    server = await make_server(server_names=["jobs.internal"])
    [base] = await server.serve("127.0.0.1", 0)
    port = base.rsplit(":", 1)[1]
    async with aiohttp.ClientSession() as session:
        for host, expected in [
            ("evil.example", 403),
            (f"evil.example:{port}", 403),
            ("localhost", 202),
            (f"127.0.0.1:{port}", 202),
            ("jobs.internal", 202),
        ]:
            headers = {"Host": host, "Content-Type": "application/json"}
            async with session.post(
                f"{base}/jobs", data=b'{"task": "echo", "delay": 60}', headers=headers
            ) as resp:
                assert resp.status == expected, host
                if expected == 403:
                    assert (await resp.json())["error"]["field"] == "Host"
            async with session.get(f"{base}/jobs", headers={"Host": host}) as resp:
                assert resp.status == (403 if expected == 403 else 200), host
    assert (await server.store.count_by_status())["pending"] == 3


async def test_with_a_token_any_host_is_served(client: Client) -> None:
    headers = {"Host": "jobs.example.com"}
    assert (await client.call("GET", "/jobs", FULL, headers=headers))[0] == 200
