"""The OpenAPI document is kept true: every route is in it and every operation in it is a route,
the real server's responses validate against it (JSON Schema 2020-12, formats checked), and the
served /openapi.json is build_spec() and valid OpenAPI 3.1."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_openapi
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from jobserver import JobServer
from jobserver.auth import TokenAuth
from jobserver.errors import StorageUnavailable
from jobserver.http.openapi import build_spec
from jobserver.tasks import Registry as TaskRegistry
from jobserver.tasks import external_task, task

from ..conftest import ServerFactory, eventually

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
SPEC_URI = "urn:jobserver:openapi"
FORMATS = Draft202012Validator.FORMAT_CHECKER

reg = TaskRegistry()
reg.add(external_task("resize", queue="images"))


@task(registry=reg, max_retries=0)
async def openapi_explode() -> None:
    raise RuntimeError("kaboom")


def operations(spec: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): op
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if method in HTTP_METHODS
    }


def pointer(*parts: str) -> str:
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


class Spec:
    """Looks up and validates against the parts of an OpenAPI document."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.registry: Registry[Any] = Registry().with_resource(
            SPEC_URI, DRAFT202012.create_resource(doc)
        )

    def at(self, ptr: str) -> Any:
        node: Any = self.doc
        for part in ptr.split("/")[1:]:
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def deref(self, ptr: str) -> str:
        """Follow `$ref`s from `ptr` to the pointer of what they name."""
        while "$ref" in self.at(ptr):
            ptr = self.at(ptr)["$ref"].removeprefix("#")
        return ptr

    def response(self, method: str, template: str, status: int) -> str:
        """The pointer of the response an operation documents for `status`."""
        responses = pointer("paths", template, method.lower(), "responses")
        assert str(status) in self.at(responses), f"{method} {template} documents no {status}"
        return self.deref(f"{responses}/{status}")

    def validate(self, ptr: str, instance: Any) -> None:
        schema = {"$ref": f"{SPEC_URI}#{ptr}"}
        Draft202012Validator(schema, registry=self.registry, format_checker=FORMATS).validate(
            instance
        )


class Checked:
    """An HTTP client for the live server that validates every response against the spec."""

    def __init__(self, server: JobServer, base: str, session: aiohttp.ClientSession) -> None:
        self.server = server
        self.base = base
        self.session = session
        self.spec = Spec(
            build_spec(tasks=server.registry.names(), external_queues=server.external_queues)
        )
        self.seen: set[tuple[str, str, int]] = set()

    async def call(
        self, method: str, path: str, template: str | None = None, body: Any = None, **kw: Any
    ) -> tuple[int, Any]:
        """Call `path`, whose operation is `template` (None: the path is no route)."""
        if body is not None:
            kw["json"] = body
        async with self.session.request(method, self.base + path, **kw) as resp:
            raw = await resp.read()
            self.check(method, template, resp.status, resp.headers, raw)
            is_json = resp.headers.get("Content-Type", "").startswith("application/json")
            return resp.status, json.loads(raw) if raw and is_json else raw

    def check(
        self, method: str, template: str | None, status: int, headers: Any, raw: bytes
    ) -> None:
        if template is None:
            assert status == 404
            ptr = self.spec.deref("/components/responses/NotFound")
        elif status == 405:
            ptr = self.spec.deref("/components/responses/MethodNotAllowed")
        else:
            ptr = self.spec.response(method, template, status)
            self.seen.add((method, template, status))
        response = self.spec.at(ptr)
        for name, header in response.get("headers", {}).items():
            if header.get("required"):
                assert name in headers, f"{method} {template} {status}: no {name} header"
            if name in headers:
                self.spec.validate(f"{ptr}/headers/{name}/schema", headers[name])
        if "content" not in response:
            assert raw == b"", f"{method} {template} {status} documents no body"
            return
        for streamed in ("text/plain", "text/event-stream"):
            if streamed in response["content"]:
                assert headers["Content-Type"].startswith(streamed)
                return
        assert headers["Content-Type"].startswith("application/json")
        self.spec.validate(f"{ptr}/content/application~1json/schema", json.loads(raw))

    async def enqueue(self, **body: Any) -> dict[str, Any]:
        status, data = await self.call("POST", "/jobs", "/jobs", body)
        assert status == 202, data
        return data  # type: ignore[no-any-return]

    async def terminal(self, job_id: int) -> dict[str, Any]:
        async def probe() -> dict[str, Any]:
            return (await self.call("GET", f"/jobs/{job_id}", "/jobs/{id}"))[1]  # type: ignore[no-any-return]

        return await eventually(probe, lambda job: job["is_terminal"])


@pytest.fixture
async def checked(make_server: ServerFactory) -> AsyncIterator[Checked]:
    server = await make_server(
        tasks=list(reg), max_body_bytes=64 * 1024, max_batch_body_bytes=128 * 1024
    )
    [address] = await server.serve("127.0.0.1", 0)
    async with aiohttp.ClientSession() as session:
        yield Checked(server, address, session)


# -- (a) the routes and the operations are the same -----------------------------------------------
async def test_every_route_is_in_the_spec_and_every_operation_is_a_route(
    make_server: ServerFactory,
) -> None:
    app = (await make_server()).create_app()
    spec = build_spec()
    ops = operations(spec)
    routes = {
        (r.method, r.resource.canonical): r
        for r in app.router.routes()
        if r.method != "HEAD"
        and r.resource is not None
        and not (r.name or "").startswith("dashboard")  # the page, not the API
    }
    assert set(routes) - set(ops) == set(), "routes missing from the spec"
    assert set(ops) - set(routes) == set(), "operations in the spec with no route"
    view = Spec(spec)
    for (method, path), op in ops.items():
        if routes[method, path].name is not None:
            assert op["operationId"] == routes[method, path].name
        params = [
            view.at(view.deref(p["$ref"].removeprefix("#"))) if "$ref" in p else p
            for p in op.get("parameters", [])
        ]
        in_path = {p["name"] for p in params if p["in"] == "path"}
        assert in_path == set(re.findall(r"{(\w+)}", path)), (method, path)


# -- (b) real responses validate against the spec -------------------------------------------------
async def drive_jobs_routes(c: Checked) -> None:
    # enqueue: 202, then 200 for the same key and payload, 409 for another payload
    first = await c.enqueue(task="echo", args=[1], delay=999, idempotency_key="k1")
    status, again = await c.call(
        "POST", "/jobs", "/jobs", {"task": "echo", "args": [1], "delay": 999},
        headers={"Idempotency-Key": "k1"},
    )  # fmt: skip
    assert (status, again["id"]) == (200, first["id"])
    status, _ = await c.call("POST", "/jobs", "/jobs", {"task": "echo", "idempotency_key": "k1"})
    assert status == 409
    # every option, and the Job once it ended within `wait`
    status, job = await c.call(
        "POST", "/jobs?wait=10", "/jobs",
        {"task": "echo", "args": ["x"], "kwargs": {"a": [1, {"b": None}]}, "queue": "q.1:a-b",
         "priority": 5, "run_at": "2000-01-01T00:00:00+02:00", "max_retries": 2, "timeout": 3.5,
         "backoff": {"base": 0.5, "factor": 3, "cap": 60}},
    )  # fmt: skip
    assert status == 200 and job["status"] == "succeeded", job
    # errors: 400, 413, 415, 422
    json_type = {"Content-Type": "application/json"}
    status, _ = await c.call("POST", "/jobs", "/jobs", data=b"{nope", headers=json_type)
    assert status == 400
    big = json.dumps({"task": "echo", "args": ["x" * 70_000]}).encode()
    status, _ = await c.call("POST", "/jobs", "/jobs", data=big, headers=json_type)
    assert status == 413
    status, _ = await c.call("POST", "/jobs", "/jobs", data=b"{}", headers={"Content-Type": "a/b"})
    assert status == 415
    for bad in ({}, {"task": "nope"}, {"task": "echo", "colour": 1}, {"task": "echo", "delay": -1}):
        status, _ = await c.call("POST", "/jobs", "/jobs", bad)
        assert status == 422, bad
    status, _ = await c.call("POST", "/jobs?wait=61", "/jobs", {"task": "echo"})
    assert status == 422

    # batch: 202, 409, 413, 415, 400, 422 with items
    status, batch = await c.call(
        "POST", "/jobs/batch", "/jobs/batch", {"jobs": [{"task": "echo", "delay": 999}] * 3}
    )
    assert status == 202 and len(batch["ids"]) == 3
    status, _ = await c.call(
        "POST", "/jobs/batch", "/jobs/batch", {"jobs": [{"task": "sleep", "idempotency_key": "k1"}]}
    )
    assert status == 409
    status, body = await c.call(
        "POST", "/jobs/batch", "/jobs/batch", {"jobs": [{"task": "echo"}, {"task": 1}, 2]}
    )
    assert status == 422 and [i["index"] for i in body["error"]["items"]] == [1, 2]
    status, _ = await c.call("POST", "/jobs/batch", "/jobs/batch", {"jobs": []})
    assert status == 422
    big = json.dumps({"jobs": [{"task": "echo", "args": ["x" * 140_000]}]}).encode()
    status, _ = await c.call("POST", "/jobs/batch", "/jobs/batch", data=big, headers=json_type)
    assert status == 413
    status, _ = await c.call("POST", "/jobs/batch", "/jobs/batch", data=b"[", headers=json_type)
    assert status == 400
    status, _ = await c.call("POST", "/jobs/batch", "/jobs/batch", data=b"{}")
    assert status == 415

    # list: pages, filters, 422
    status, page = await c.call("GET", "/jobs?limit=2", "/jobs")
    assert status == 200 and len(page["items"]) == 2 and page["next_cursor"]
    status, page = await c.call(
        "GET", f"/jobs?limit=2&cursor={page['next_cursor']}&status=pending&queue=default&task=echo",
        "/jobs",
    )  # fmt: skip
    assert status == 200
    for query in ("status=nope", "limit=0", "cursor=x", "colour=red"):
        status, _ = await c.call("GET", f"/jobs?{query}", "/jobs")
        assert status == 422, query

    # one job: 200 (also with wait), 404, 422
    assert (await c.call("GET", f"/jobs/{first['id']}", "/jobs/{id}"))[0] == 200
    assert (await c.call("GET", f"/jobs/{first['id']}?wait=0.01", "/jobs/{id}"))[0] == 200
    assert (await c.call("GET", "/jobs/999999", "/jobs/{id}"))[0] == 404
    assert (await c.call("GET", "/jobs/1?wait=x", "/jobs/{id}"))[0] == 422

    # cancel: 200, 409, 404
    status, cancelled = await c.call("POST", f"/jobs/{first['id']}/cancel", "/jobs/{id}/cancel")
    assert status == 200 and cancelled["status"] == "cancelled"
    status, _ = await c.call("POST", f"/jobs/{job['id']}/cancel", "/jobs/{id}/cancel")
    assert status == 409
    status, _ = await c.call("POST", "/jobs/999999/cancel", "/jobs/{id}/cancel")
    assert status == 404

    # attempts: 200, 404
    status, history = await c.call("GET", f"/jobs/{job['id']}/attempts", "/jobs/{id}/attempts")
    assert status == 200 and [a["outcome"] for a in history["items"]] == ["succeeded"]
    status, _ = await c.call("GET", "/jobs/999999/attempts", "/jobs/{id}/attempts")
    assert status == 404


async def drive_dead_letter_and_health_routes(c: Checked) -> None:
    failed = await c.terminal((await c.enqueue(task="openapi_explode"))["id"])
    assert failed["status"] == "failed" and failed["error"]["type"] == "RuntimeError"
    status, page = await c.call("GET", "/dead-letters", "/dead-letters")
    assert status == 200
    [dl] = page["items"]
    assert (await c.call("GET", "/dead-letters?limit=1&cursor=999", "/dead-letters"))[0] == 200
    for query in ("limit=1001", "cursor=-1", "status=failed"):
        assert (await c.call("GET", f"/dead-letters?{query}", "/dead-letters"))[0] == 422
    one = "/dead-letters/{id}"
    assert (await c.call("GET", f"/dead-letters/{dl['id']}", one))[0] == 200
    assert (await c.call("GET", "/dead-letters/999", one))[0] == 404
    requeue = "/dead-letters/{id}/requeue"
    assert (await c.call("POST", f"/dead-letters/{dl['id']}/requeue", requeue))[0] == 202
    assert (await c.call("POST", f"/dead-letters/{dl['id']}/requeue", requeue))[0] == 404
    # the requeued job explodes again: a new dead letter
    _, page = await eventually(
        lambda: c.call("GET", "/dead-letters", "/dead-letters"), lambda r: bool(r[1]["items"])
    )
    [dl2] = page["items"]
    assert (await c.call("DELETE", f"/dead-letters/{dl2['id']}", one))[0] == 204
    assert (await c.call("DELETE", f"/dead-letters/{dl2['id']}", one))[0] == 404
    # by a filter: a dry run, then each action; bad selections and bodies
    await c.terminal((await c.enqueue(task="openapi_explode"))["id"])
    for action in ("requeue", "delete"):
        path = f"/dead-letters/{action}"
        selection = {"task": "openapi_explode", "error_type": "RuntimeError", "dry_run": True}
        status, dry = await c.call("POST", path, path, selection)
        assert status == 200 and dry["matched"] >= 1 and dry["sample"]
        assert (await c.call("POST", path, path, {"limit": 0}))[0] == 422
        assert (await c.call("POST", path, path, {"failed_after": 5}))[0] == 422
        await drive_body_errors(c, "POST", path, path)
    path = "/dead-letters/delete"
    status, gone = await c.call("POST", path, path, {"task": "openapi_explode"})
    assert status == 200 and gone["deleted"] == gone["dead_letter_ids"] != []
    assert (await c.call("GET", "/dead-letters?task=openapi_explode", "/dead-letters"))[1][
        "items"
    ] == []

    assert (await c.call("GET", "/healthz", "/healthz"))[0] == 200
    assert (await c.call("GET", "/readyz", "/readyz"))[0] == 200
    assert (await c.call("GET", "/openapi.json", "/openapi.json"))[0] == 200


async def drive_access_errors(c: Checked) -> None:
    """What every operation may answer before it runs: 403 for a Host the server does not
    answer to (no token set); with tokens, 401 without one, 429 once throttled, and 403 for a
    read-only token on a write."""
    ops = operations(c.spec.doc)

    def path_of(template: str) -> str:
        return template.replace("{id}", "1").replace("{name}", "q")

    for method, template in ops:
        status, body = await c.call(
            method, path_of(template), template, headers={"Host": "evil.example"}
        )
        assert (status, body["error"]["code"]) == (403, "host_not_allowed"), (method, template)
    no_tokens = c.server.auth
    try:
        for method, template in ops:
            if template == "/healthz":
                continue  # needs no token
            c.server.auth = TokenAuth(["full"], ["read"], max_failures=1)
            path = path_of(template)
            status, body = await c.call(method, path, template)
            assert (status, body["error"]["code"]) == (401, "unauthorized"), (method, template)
            status, body = await c.call(method, path, template)
            assert (status, body["error"]["code"]) == (429, "too_many_failures")
            if method != "GET":
                read_only = {"Authorization": "Bearer read"}
                status, body = await c.call(method, path, template, headers=read_only)
                assert (status, body["error"]["code"]) == (403, "forbidden"), (method, template)
    finally:
        c.server.auth = no_tokens


async def test_wrong_methods_and_unknown_paths_answer_as_documented(checked: Checked) -> None:
    c = checked
    for path, template in [
        ("/jobs", "/jobs"),
        ("/jobs/batch", "/jobs/batch"),
        ("/jobs/1", "/jobs/{id}"),
        ("/dead-letters/1", "/dead-letters/{id}"),
        ("/queues/q", "/queues/{name}"),
        ("/schedules", "/schedules"),
        ("/workflows", "/workflows"),
        ("/metrics", "/metrics"),
        ("/healthz", "/healthz"),
        ("/openapi.json", "/openapi.json"),
    ]:
        documented = {m.upper() for m in c.spec.at(pointer("paths", template)) if m in HTTP_METHODS}
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            if method in documented:
                continue
            async with c.session.request(method, c.base + path) as resp:
                raw = await resp.read()
                assert resp.status == 405, (method, path)
                c.check(method, template, resp.status, resp.headers, raw)
                assert set(resp.headers["Allow"].split(",")) == documented
    for path in ("/nope", "/jobs/abc", "/jobs/-1", "/jobs/1/nope"):
        assert (await c.call("GET", path))[0] == 404


STORE_CALLS = [
    "enqueue", "get_job", "list_jobs", "request_cancel", "list_dead_letters", "get_dead_letter",
    "requeue_dead_letter", "delete_dead_letter", "check_writable", "delete_job", "list_queues",
    "get_queue", "configure_queue", "save_schedule", "list_schedules", "get_schedule",
    "delete_schedule", "create_workflow", "workflow_jobs", "count_dead_letters", "list_attempts",
    "get_key", "configure_key", "job_steps", "send_signal", "claim", "renew_leases", "complete",
    "release",
]  # fmt: skip


@contextmanager
def storage_unavailable(server: JobServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    async def refuse(*args: Any, **kwargs: Any) -> Any:
        raise StorageUnavailable("database cannot take writes now: disk I/O error")

    def refuse_soon(*args: Any, **kwargs: Any) -> Any:  # a store call that returns a future
        raise StorageUnavailable("database cannot take writes now: disk I/O error")

    with monkeypatch.context() as patch:
        for name in STORE_CALLS:
            patch.setattr(server.store, name, refuse)
        patch.setattr(server.store, "enqueue_gathered", refuse_soon)
        yield


async def drive_storage_faults(c: Checked, monkeypatch: pytest.MonkeyPatch) -> None:
    with storage_unavailable(c.server, monkeypatch):
        for method, path, template, body in [
            ("POST", "/jobs", "/jobs", {"task": "echo"}),
            ("POST", "/jobs/batch", "/jobs/batch", {"jobs": [{"task": "echo"}]}),
            ("GET", "/jobs", "/jobs", None),
            ("GET", "/jobs/1", "/jobs/{id}", None),
            ("POST", "/jobs/1/cancel", "/jobs/{id}/cancel", None),
            ("GET", "/jobs/1/attempts", "/jobs/{id}/attempts", None),
            ("GET", "/dead-letters", "/dead-letters", None),
            ("GET", "/dead-letters/1", "/dead-letters/{id}", None),
            ("POST", "/dead-letters/1/requeue", "/dead-letters/{id}/requeue", None),
            ("DELETE", "/dead-letters/1", "/dead-letters/{id}", None),
            ("POST", "/dead-letters/requeue", "/dead-letters/requeue", {}),
            ("POST", "/dead-letters/delete", "/dead-letters/delete", {}),
            ("GET", "/readyz", "/readyz", None),
            ("DELETE", "/jobs/1", "/jobs/{id}", None),
            ("GET", "/queues", "/queues", None),
            ("GET", "/queues/q", "/queues/{name}", None),
            ("PATCH", "/queues/q", "/queues/{name}", {"paused": True}),
            ("POST", "/queues/q/pause", "/queues/{name}/pause", None),
            ("POST", "/queues/q/resume", "/queues/{name}/resume", None),
            ("POST", "/queues/q/purge", "/queues/{name}/purge", {}),
            ("GET", "/queues/q/keys/k", "/queues/{name}/keys/{key}", None),
            ("GET", "/jobs/1/steps", "/jobs/{id}/steps", None),
            ("POST", "/signals/s", "/signals/{key}", {"payload": 1}),
            ("PATCH", "/queues/q/keys/k", "/queues/{name}/keys/{key}", {"weight": 2}),
            ("POST", "/schedules", "/schedules", SCHEDULE),
            ("GET", "/schedules", "/schedules", None),
            ("GET", "/schedules/s", "/schedules/{name}", None),
            ("DELETE", "/schedules/s", "/schedules/{name}", None),
            ("POST", "/workflows", "/workflows", {"chain": [{"task": "echo"}]}),
            ("GET", "/workflows/1", "/workflows/{id}", None),
            ("GET", "/metrics", "/metrics", None),
            ("POST", "/leases", "/leases", {"queues": ["images"]}),
            *(
                ("POST", f"/leases/{action}", f"/leases/{action}", body)
                for action, body in LEASE_REPORTS.items()
            ),
        ]:
            status, _ = await c.call(method, path, template, body)
            assert status == 503, (method, path)


LEASED = {"job_id": 1, "lease_token": "t"}
LEASE_REPORTS = {
    "renew": {"items": [LEASED]},
    "complete": {"items": [{**LEASED, "result": 1}]},
    "fail": {"items": [{**LEASED, "message": "no"}]},
    "release": {"items": [LEASED]},
}


async def drive_lease_routes(c: Checked) -> None:
    """An external worker's calls: lease, renew, complete, fail, release; bad bodies."""
    job = await c.enqueue(task="resize", args=[1])
    assert (await c.call("GET", f"/jobs/{job['id']}", "/jobs/{id}"))[1]["queue"] == "images"
    status, got = await c.call("POST", "/leases", "/leases", {"queues": ["images"], "limit": 5})
    assert status == 200 and [g["job"]["id"] for g in got["leases"]] == [job["id"]]
    mine = {"job_id": job["id"], "lease_token": got["leases"][0]["lease_token"]}
    status, renewed = await c.call("POST", "/leases/renew", "/leases/renew", {"items": [mine]})
    assert status == 200 and renewed["renewed"] == [job["id"]]
    for action, body in LEASE_REPORTS.items():
        status, out = await c.call("POST", f"/leases/{action}", f"/leases/{action}", body)
        assert status == 200 and out != {}, action  # job 1's lease is not "t"
    report = {"items": [{**mine, "result": {"ok": True}}]}
    status, out = await c.call("POST", "/leases/complete", "/leases/complete", report)
    assert out["items"] == [{"job_id": job["id"], "status": "succeeded"}]
    for bad in ({}, {"queues": []}, {"queues": ["default"]}, {"queues": ["images"], "limit": 0}):
        assert (await c.call("POST", "/leases", "/leases", bad))[0] == 422, bad
    await drive_body_errors(c, "POST", "/leases", "/leases")
    for action in LEASE_REPORTS:
        path = f"/leases/{action}"
        for bad in ({}, {"items": [{"job_id": 1}]}, {"items": [LEASED], "x": 1}):
            assert (await c.call("POST", path, path, bad))[0] == 422, (action, bad)
        await drive_body_errors(c, "POST", path, path)


SCHEDULE = {"name": "nightly", "task": "echo", "cron": "0 3 * * *", "args": ["hi"]}


async def drive_body_errors(c: Checked, method: str, path: str, template: str) -> None:
    """400, 413 and 415 for a route that reads a JSON body."""
    json_type = {"Content-Type": "application/json"}
    assert (await c.call(method, path, template, data=b"{nope", headers=json_type))[0] == 400
    big = json.dumps({"x": "y" * 200_000}).encode()
    assert (await c.call(method, path, template, data=big, headers=json_type))[0] == 413
    plain = {"Content-Type": "text/plain"}
    assert (await c.call(method, path, template, data=b"{}", headers=plain))[0] == 415


async def drive_flow_routes(c: Checked) -> None:
    """Queues, schedules, workflows, metrics and deleting jobs."""
    done = await c.terminal((await c.enqueue(task="echo", args=[1]))["id"])
    pending = await c.enqueue(task="echo", delay=999)
    one = "/jobs/{id}"
    assert (await c.call("DELETE", f"/jobs/{done['id']}", one))[0] == 204
    assert (await c.call("DELETE", f"/jobs/{done['id']}", one))[0] == 404
    assert (await c.call("DELETE", f"/jobs/{pending['id']}", one))[0] == 409

    q = "/queues/{name}"
    assert (await c.call("GET", "/queues", "/queues"))[0] == 200
    assert (await c.call("GET", "/queues?x=1", "/queues"))[0] == 422
    assert (await c.call("GET", "/queues/default", q))[0] == 200
    assert (await c.call("GET", "/queues/never-used", q))[0] == 404
    assert (await c.call("PATCH", "/queues/small", q, {"max_depth": 1, "rate_limit": 5}))[0] == 200
    assert (await c.call("PATCH", "/queues/small", q, {"max_depth": 0}))[0] == 422
    assert (await c.call("PATCH", "/queues/%20bad", q, {"paused": True}))[0] == 404
    await drive_body_errors(c, "PATCH", "/queues/small", q)
    purge = "/queues/{name}/purge"
    await c.enqueue(task="echo", queue="purged", delay=999)
    status, dry = await c.call("POST", "/queues/purged/purge", purge, {"dry_run": True})
    assert status == 200 and (dry["matched"], dry["cancelled"]) == (1, [])
    status, done = await c.call("POST", "/queues/purged/purge", purge, {})  # the defaults
    assert status == 200 and done["matched"] == 1 and len(done["cancelled"]) == 1
    assert (await c.call("POST", "/queues/purged/purge", purge, {"limit": 0}))[0] == 422
    # the fuzz found {"dry_run": {}} taken as "no": it purged
    assert (await c.call("POST", "/queues/purged/purge", purge, {"dry_run": {}}))[0] == 422
    assert (await c.call("POST", "/queues/%20bad/purge", purge, {}))[0] == 404
    await drive_body_errors(c, "POST", "/queues/purged/purge", purge)
    steps, sig = "/jobs/{id}/steps", "/signals/{key}"
    ran = await c.terminal((await c.enqueue(task="echo", args=[2]))["id"])
    status, listed = await c.call("GET", f"/jobs/{ran['id']}/steps", steps)
    assert status == 200 and listed["items"] == []
    assert (await c.call("GET", "/jobs/999999/steps", steps))[0] == 404
    status, sent = await c.call("POST", "/signals/order-1", sig, {"payload": {"paid": True}})
    assert status == 202 and (sent["key"], sent["woken"]) == ("order-1", 0)
    assert (await c.call("POST", "/signals/order-1", sig, {"payload": 1, "x": 2}))[0] == 422
    assert (await c.call("POST", f"/signals/{'k' * 201}", sig, {}))[0] == 422
    await drive_body_errors(c, "POST", "/signals/order-1", sig)
    k = "/queues/{name}/keys/{key}"
    assert (await c.call("PATCH", "/queues/small/keys/acme", k, {"weight": 3}))[0] == 200
    assert (await c.call("PATCH", "/queues/small/keys/acme", k, {"weight": -3}))[0] == 422
    assert (await c.call("PATCH", "/queues/%20bad/keys/acme", k, {"weight": 3}))[0] == 404
    await drive_body_errors(c, "PATCH", "/queues/small/keys/acme", k)
    assert (await c.call("GET", "/queues/small/keys/acme", k))[0] == 200
    assert (await c.call("GET", f"/queues/small/keys/{'k' * 201}", k))[0] == 422
    assert (await c.call("GET", "/queues/%20bad/keys/acme", k))[0] == 404
    for action in ("pause", "resume"):
        route = f"/queues/{{name}}/{action}"
        assert (await c.call("POST", f"/queues/small/{action}", route))[0] == 200
        assert (await c.call("POST", f"/queues/%20bad/{action}", route))[0] == 404
    # a full queue: 429 with Retry-After
    await c.enqueue(task="echo", queue="small", delay=999)
    full = {"task": "echo", "queue": "small"}
    assert (await c.call("POST", "/jobs", "/jobs", full))[0] == 429
    assert (await c.call("POST", "/jobs/batch", "/jobs/batch", {"jobs": [full]}))[0] == 429
    assert (await c.call("POST", "/workflows", "/workflows", {"group": [full]}))[0] == 429

    s = "/schedules/{name}"
    assert (await c.call("POST", "/schedules", "/schedules", SCHEDULE))[0] == 201
    bad = {**SCHEDULE, "cron": "every day"}
    assert (await c.call("POST", "/schedules", "/schedules", bad))[0] == 422
    await drive_body_errors(c, "POST", "/schedules", "/schedules")
    assert (await c.call("GET", "/schedules", "/schedules"))[0] == 200
    assert (await c.call("GET", "/schedules?x=1", "/schedules"))[0] == 422
    assert (await c.call("GET", "/schedules/nightly", s))[0] == 200
    assert (await c.call("DELETE", "/schedules/nightly", s))[0] == 204
    assert (await c.call("GET", "/schedules/nightly", s))[0] == 404
    assert (await c.call("DELETE", "/schedules/nightly", s))[0] == 404

    w = "/workflows/{id}"
    flow = {"chord": {"group": [{"task": "echo", "args": [1]}], "callback": {"task": "echo"}}}
    status, accepted = await c.call("POST", "/workflows", "/workflows", flow)
    assert status == 202 and len(accepted["jobs"]) == 2
    assert (await c.call("GET", f"/workflows/{accepted['id']}", w))[0] == 200
    assert (await c.call("GET", "/workflows/999", w))[0] == 404
    assert (await c.call("POST", "/workflows", "/workflows", {"chain": []}))[0] == 422
    await drive_body_errors(c, "POST", "/workflows", "/workflows")
    keyed = {"task": "echo", "args": [1], "idempotency_key": "wf-k"}
    await c.enqueue(**keyed)
    clash = {"group": [{**keyed, "args": [2]}]}
    assert (await c.call("POST", "/workflows", "/workflows", clash))[0] == 409
    assert (await c.call("GET", "/metrics", "/metrics"))[0] == 200
    status, history = await c.call("GET", "/stats/throughput", "/stats/throughput")
    assert status == 200 and len(history["points"]) == 60
    assert sum(p["succeeded"] for p in history["points"]) >= 1  # the jobs run above
    assert (await c.call("GET", "/stats/throughput?x=1", "/stats/throughput"))[0] == 422
    assert (await c.call("GET", "/events?job_id=x", "/events"))[0] == 422
    async with c.session.get(c.base + "/events") as resp:  # a stream: read its start only
        first = await resp.content.readline()
        c.check("GET", "/events", resp.status, resp.headers, b"")
        assert first.startswith(b": ")


async def test_every_route_answers_as_documented(
    checked: Checked, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Normal and error cases of every route; each status an operation documents is answered,
    and every answer validates against the spec."""
    await drive_jobs_routes(checked)
    await drive_dead_letter_and_health_routes(checked)
    await drive_flow_routes(checked)
    await drive_lease_routes(checked)
    await drive_storage_faults(checked, monkeypatch)
    await drive_access_errors(checked)
    documented = {
        (method, path, int(status))
        for (method, path), op in operations(checked.spec.doc).items()
        for status in op["responses"]
    }
    assert documented - checked.seen == set()


# -- regressions: what the fuzzer and a review of the HTTP layer found ---------------------------
async def test_inputs_the_fuzzer_and_review_found(checked: Checked) -> None:
    c = checked
    # 500: str.isdigit() took '²', which int() cannot read (and took a fullwidth 1 as 1)
    for query in ("limit=%C2%B2", "cursor=%C2%B2", "limit=%EF%BC%91"):
        assert (await c.call("GET", f"/jobs?{query}", "/jobs"))[0] == 422, query
    assert (await c.call("GET", "/dead-letters?limit=%C2%B2", "/dead-letters"))[0] == 422
    # float() read these as numbers ('١٢' as 12, '1_0' as 10, ' 5' as 5)
    for wait in ("%D9%A1%D9%A2", "1_0", "%205", "nan", "inf"):
        assert (await c.call("GET", f"/jobs/1?wait={wait}", "/jobs/{id}"))[0] == 422, wait
    # 500: a run_at out of datetime's range in UTC made the job, and every page holding it, fail
    low = await c.enqueue(task="echo", run_at="0001-01-01T00:00:00+01:00")
    high = await c.enqueue(task="echo", run_at="9999-12-31T23:59:59-01:00")
    for created in (low, high):
        assert (await c.call("GET", f"/jobs/{created['id']}", "/jobs/{id}"))[0] == 200
    assert (await c.call("GET", "/jobs", "/jobs"))[0] == 200
    # other ISO 8601 forms are not RFC 3339
    for run_at in (
        "20300101T000000Z",
        "2030-01-01 00:00Z",
        "2030-W01-1T00:00Z",
        "2030-13-01T00:00Z",
    ):
        status, body = await c.call("POST", "/jobs", "/jobs", {"task": "echo", "run_at": run_at})
        assert status == 422 and body["error"]["field"] == "run_at", run_at
    # 422 for valid data: JSON has one number type, and 2.0 is an integer (as JSON Schema says)
    await c.enqueue(task="echo", priority=2.0, max_retries=1.0)
    # GET /jobs/batch was 404 "no job 'batch'" (the /jobs/{id} route took it): now 405
    async with c.session.get(c.base + "/jobs/batch") as resp:
        assert resp.status == 405 and resp.headers["Allow"] == "POST"


async def test_an_idempotency_key_header_that_is_not_utf8_is_refused(checked: Checked) -> None:
    """It was a 500: aiohttp keeps the bytes as lone surrogates, which SQLite cannot store."""
    host, port = checked.base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    body = b'{"task": "echo"}'
    writer.write(
        b"POST /jobs HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Idempotency-Key: k\xff\xfe\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    await writer.drain()
    head, _, raw = (await reader.read()).partition(b"\r\n\r\n")
    writer.close()
    await writer.wait_closed()
    assert head.split(b"\r\n")[0] == b"HTTP/1.1 422 Unprocessable Entity"
    assert json.loads(raw)["error"]["field"] == "Idempotency-Key"


# -- (c) the served document ----------------------------------------------------------------------
async def test_the_served_spec_is_build_spec_and_valid_openapi_3_1(checked: Checked) -> None:
    status, served = await checked.call("GET", "/openapi.json", "/openapi.json")
    assert status == 200
    assert served == build_spec(
        tasks=checked.server.registry.names(), external_queues=checked.server.external_queues
    )
    assert served["openapi"].startswith("3.1.")
    task_enum = served["components"]["schemas"]["JobRequest"]["properties"]["task"]["enum"]
    assert {"echo", "sleep", "http", "openapi_explode"} <= set(task_enum)
    validate_openapi(served)
    validate_openapi(build_spec())
    assert "enum" not in build_spec()["components"]["schemas"]["JobRequest"]["properties"]["task"]


def test_formats_are_checked() -> None:
    """date-time is checked only when its checker's package is installed: make sure it is."""
    assert not FORMATS.conforms("2030-01-01", "date-time")
    assert FORMATS.conforms("2030-01-01T00:00:00.000Z", "date-time")
