"""jobserver as a sidecar: an app (in any language) enqueues over HTTP, and the built-in `http`
task calls back into the app to do the work, with retries around it.

    python examples/sidecar.py

Everything runs in this one process, on loopback ports the OS picks:

- the "app": a small aiohttp server with `POST /hooks/welcome-email` (the work; it answers 503
  the first time, so the job is retried) and `POST /hooks/job-done` (the completion webhook,
  whose signature it checks with `jobserver.webhooks.verify`);
- the sidecar: a `JobServer` serving its HTTP API with a token, the same as
  `jobserver serve --token ... --webhook-secret ... --http-allow-hosts 127.0.0.1`.

The app's side only speaks HTTP and JSON; any language does the same with its HTTP client.
The database is a file in a temporary directory. Prints what happened, then "ok".
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from jobserver import JobServer
from jobserver.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify

TOKEN = secrets.token_urlsafe(24)  # in production: from a secret store, in JOBSERVER_TOKEN
WEBHOOK_SECRET = secrets.token_urlsafe(24)  # JOBSERVER_WEBHOOK_SECRET


class App:
    """The application jobserver works for: it only sees HTTP requests."""

    def __init__(self) -> None:
        self.emails_sent: list[int] = []
        self.calls = 0
        self.finished: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def welcome_email(self, request: web.Request) -> web.Response:
        self.calls += 1
        if self.calls == 1:  # a passing hiccup: 503 (and 429, and network errors) are retried
            return web.json_response({"error": "busy"}, status=503, headers={"Retry-After": "0"})
        user_id = (await request.json())["user_id"]
        self.emails_sent.append(user_id)
        return web.json_response({"sent": user_id})

    async def job_done(self, request: web.Request) -> web.Response:
        body = await request.read()  # verify the raw bytes, before parsing them
        ok = verify(
            WEBHOOK_SECRET,
            request.headers.get(TIMESTAMP_HEADER, ""),
            body,
            request.headers.get(SIGNATURE_HEADER, ""),
            now=time.time(),
        )
        if not ok:
            return web.json_response({"error": "bad signature"}, status=401)
        await self.finished.put(await request.json())
        return web.json_response({"thanks": True})

    def web_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hooks/welcome-email", self.welcome_email)
        app.router.add_post("/hooks/job-done", self.job_done)
        return app


async def serve_app(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


async def run(db: Path) -> None:
    app = App()
    app_runner, app_url = await serve_app(app.web_app())
    sidecar = JobServer(
        db=db,
        tokens=[TOKEN],
        webhook_secret=WEBHOOK_SECRET,
        http_allowed_hosts=["127.0.0.1"],  # the hosts the http task (and webhooks) may call
    )
    try:
        await sidecar.start()
        [jobs_url] = await sidecar.serve("127.0.0.1", 0)
        print(f"app on {app_url}, jobserver on {jobs_url}")
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession(headers=auth) as http:
            # What the app does to get an email sent in the background: one POST.
            body = {
                "task": "http",
                "kwargs": {"url": f"{app_url}/hooks/welcome-email", "json": {"user_id": 42}},
                "callback_url": f"{app_url}/hooks/job-done",  # tell me when it is over
            }
            async with http.post(f"{jobs_url}/jobs", json=body) as resp:
                assert resp.status == 202, await resp.text()
                job_id = (await resp.json())["id"]
            print(f"enqueued job {job_id}")

            done = await asyncio.wait_for(app.finished.get(), timeout=10)  # the webhook
            print(f"webhook for job {done['id']}: {done['status']}, result {done['result']}")
            assert done["id"] == job_id and done["status"] == "succeeded"
            assert done["result"] == {"status": 200, "body": {"sent": 42}}
            assert done["attempts"] == 2 and app.emails_sent == [42]

            # Without the token the API refuses (only /healthz is open).
            async with (
                aiohttp.ClientSession() as anonymous,
                anonymous.get(f"{jobs_url}/jobs/{job_id}") as resp,
            ):
                print(f"GET /jobs/{job_id} without a token: {resp.status}")
                assert resp.status == 401

            # A host off the allow-list fails for good, without being contacted.
            body = {"task": "http", "kwargs": {"url": "http://example.com/"}}
            async with http.post(f"{jobs_url}/jobs", params={"wait": "10"}, json=body) as resp:
                job = await resp.json()  # ?wait=S answers with the job once it has ended
            print(f"job {job['id']}: {job['status']}: {job['error']['message']}")
            assert job["status"] == "failed" and job["error"]["type"] == "PermanentError"
    finally:
        await sidecar.stop()
        await app_runner.cleanup()


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="jobserver-example-") as tmp:
        asyncio.run(run(Path(tmp) / "jobs.db"))
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
