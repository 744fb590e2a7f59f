"""The built-in `http` task against a real aiohttp app on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from jobserver import JobServer, JobState, ManualClock
from jobserver.builtin_tasks import retry_after_s

from ..conftest import ServerFactory, eventually

hits: list[str] = []


async def ok(request: web.Request) -> web.Response:
    hits.append(f"{request.method} {request.path} {await request.text()}")
    return web.json_response(
        {
            "done": True,
            "auth": request.headers.get("X-Token"),
            "job": request.headers.get("X-Jobserver-Job-Id"),
        }
    )


async def fail(request: web.Request) -> web.Response:
    hits.append("fail")
    return web.Response(status=503, text="down for maintenance")


async def busy(request: web.Request) -> web.Response:
    return web.Response(status=429, text="slow down", headers={"Retry-After": "7"})


async def missing(request: web.Request) -> web.Response:
    return web.Response(status=404, text="no such thing")


async def redirect_in(request: web.Request) -> web.Response:
    raise web.HTTPFound("/ok")


async def redirect_out(request: web.Request) -> web.Response:
    raise web.HTTPFound("http://example.com/steal")


streamed: list[int] = []  # bytes the /huge handler got out before the client stopped reading


async def huge(request: web.Request) -> web.StreamResponse:
    """400 MB, if the client reads it all."""
    resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
    await resp.prepare(request)
    chunk = b"z" * 65_536
    sent = 0
    try:
        for _ in range(6_400):
            await resp.write(chunk)
            sent += len(chunk)
    except (ConnectionError, RuntimeError):
        pass
    finally:
        streamed.append(sent)
    return resp


signed_calls: list[tuple[dict[str, str], bytes]] = []


async def signed(request: web.Request) -> web.Response:
    signed_calls.append(({k.lower(): v for k, v in request.headers.items()}, await request.read()))
    return web.json_response({"ok": True})


@pytest.fixture
async def target() -> AsyncIterator[str]:
    hits.clear()
    signed_calls.clear()
    app = web.Application()
    app.router.add_route("*", "/ok", ok)
    app.router.add_get("/fail", fail)
    app.router.add_get("/busy", busy)
    app.router.add_get("/missing", missing)
    app.router.add_get("/redirect-in", redirect_in)
    app.router.add_get("/redirect-out", redirect_out)
    app.router.add_get("/huge", huge)
    app.router.add_post("/signed", signed)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


async def run(server: JobServer, **kwargs: object) -> int:
    job = await server.enqueue("http", kwargs=kwargs)
    return job.id


async def test_2xx_succeeds_with_the_reply(make_server: ServerFactory, target: str) -> None:
    server = await make_server()
    job_id = await run(
        server, url=f"{target}/ok", method="POST", json={"n": 1}, headers={"X-Token": "t"}
    )
    done = await server.wait_for(job_id, timeout_s=5)
    assert done.status == JobState.SUCCEEDED
    assert done.result == {"status": 200, "body": {"done": True, "auth": "t", "job": str(job_id)}}
    assert hits == ['POST /ok {"n":1}']  # the JSON as the server encoded (and signed) it


async def test_5xx_is_retried(make_server: ServerFactory, target: str) -> None:
    server = await make_server()
    job_id = await run(server, url=f"{target}/fail", method="GET")
    job = await eventually(
        lambda: server.get_job(job_id), lambda j: j.status == JobState.PENDING and j.attempts == 1
    )
    assert job.error is not None and "503" in job.error["message"]


async def test_429_honours_retry_after(
    make_server: ServerFactory, target: str, clock: ManualClock
) -> None:
    server = await make_server()
    job_id = await run(server, url=f"{target}/busy", method="GET")
    job = await eventually(
        lambda: server.get_job(job_id), lambda j: j.status == JobState.PENDING and j.attempts == 1
    )
    assert job.run_at == clock.now() + 7


async def test_other_4xx_fails_for_good(make_server: ServerFactory, target: str) -> None:
    server = await make_server()
    job_id = await run(server, url=f"{target}/missing", method="GET")
    done = await server.wait_for(job_id, timeout_s=5)
    assert done.status == JobState.FAILED and done.attempts == 1
    assert done.error is not None and "404" in done.error["message"]


async def test_a_network_error_is_retried(make_server: ServerFactory) -> None:
    server = await make_server()
    job_id = await run(server, url="http://127.0.0.1:1/nothing-listens-here", method="GET")
    job = await eventually(
        lambda: server.get_job(job_id), lambda j: j.status == JobState.PENDING and j.attempts == 1
    )
    assert job.error is not None and job.error["type"] == "ConnectionError"


async def test_hosts_off_the_allow_list_are_never_called(make_server: ServerFactory) -> None:
    server = await make_server()
    job_id = await run(server, url="http://example.com/", method="GET")
    done = await server.wait_for(job_id, timeout_s=5)
    assert done.status == JobState.FAILED and done.attempts == 1
    assert done.error is not None and "allow-list" in done.error["message"]


async def test_redirects_are_checked_against_the_allow_list(
    make_server: ServerFactory, target: str
) -> None:
    server = await make_server()
    inside = await run(server, url=f"{target}/redirect-in", method="GET")
    outside = await run(server, url=f"{target}/redirect-out", method="GET")
    assert (await server.wait_for(inside, timeout_s=5)).status == JobState.SUCCEEDED
    out = await server.wait_for(outside, timeout_s=5)
    assert out.status == JobState.FAILED
    assert out.error is not None and "example.com" in out.error["message"]


async def test_the_allow_list_is_configurable(make_server: ServerFactory, target: str) -> None:
    server = await make_server(http_allowed_hosts=["example.com"])
    job_id = await run(server, url=f"{target}/ok", method="GET")
    done = await server.wait_for(job_id, timeout_s=5)
    assert done.status == JobState.FAILED and hits == []


def test_retry_after_parsing() -> None:
    assert retry_after_s("120") == 120.0
    assert retry_after_s(None) is None
    assert retry_after_s("soon") is None
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past


async def test_a_huge_response_is_read_only_up_to_what_is_kept(
    make_server: ServerFactory, target: str
) -> None:
    """The task read a whole response before cutting it to 64 KiB: a 400 MB reply took the
    server's RSS from 52 MB to 856 MB. It now stops reading at the cap."""
    from jobserver.builtin_tasks import MAX_BODY_KEPT

    streamed.clear()
    server = await make_server()
    job_id = await run(server, url=f"{target}/huge", method="GET")
    done = await server.wait_for(job_id, timeout_s=20)
    assert done.status == JobState.SUCCEEDED
    assert done.result == {"status": 200, "body": "z" * MAX_BODY_KEPT}
    await eventually(lambda: _streamed(), lambda s: len(s) == 1)
    assert streamed[0] < 50 * 1024 * 1024  # the sender was cut off far short of 400 MB


async def _streamed() -> list[int]:
    return streamed


async def test_an_allow_list_entry_can_name_a_port(make_server: ServerFactory, target: str) -> None:
    """An allowed host used to allow every port on it (the app's, and anything else beside it);
    `host:port` allows that port alone."""
    port = int(target.rsplit(":", 1)[1])
    server = await make_server(http_allowed_hosts=[f"127.0.0.1:{port}", "[::1]:1"])
    allowed = await run(server, url=f"{target}/ok", method="GET")
    assert (await server.wait_for(allowed, timeout_s=5)).status == JobState.SUCCEEDED
    other = await run(server, url=f"http://127.0.0.1:{port + 1}/ok", method="GET")
    refused = await server.wait_for(other, timeout_s=5)
    assert refused.status == JobState.FAILED
    assert "allow-list" in refused.error["message"]


async def test_calls_are_signed_in_the_standard_webhooks_format(
    make_server: ServerFactory, target: str
) -> None:
    """The app could not tell the server's calls from anyone else's. With a secret set, each
    call carries webhook-id (one a job: the same on its retries), webhook-timestamp and
    webhook-signature, which the standardwebhooks library verifies."""
    import base64
    import secrets as stdlib_secrets

    from standardwebhooks import Webhook

    secret = "whsec_" + base64.b64encode(stdlib_secrets.token_bytes(24)).decode()
    server = await make_server(webhook_secret=secret)
    job_id = await run(server, url=f"{target}/signed", method="POST", json={"n": 2})
    done = await server.wait_for(job_id, timeout_s=5)
    assert done.status == JobState.SUCCEEDED, done.error
    [(headers, body)] = signed_calls
    assert Webhook(secret).verify(body, headers) == {"n": 2}
    assert headers["webhook-id"] == f"msg_jobserver_job_{job_id}"
