"""jobserver mounted into an aiohttp application.

    python examples/aiohttp_mount.py

The app has its own route (`POST /signup`, which enqueues a job in-process) and serves
jobserver's HTTP API under `/jobs-api`; `app.cleanup_ctx.append(jobs.lifespan)` starts the
queue and its workers with the app and drains them when it stops. The example runs the app on
a free loopback port, enqueues one job through each door, polls both over HTTP, and shuts the
app down. The database is a file in a temporary directory. Prints what happened, then "ok".
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from jobserver import JobServer, task


@task
async def send_welcome_email(address: str) -> dict[str, str]:
    await asyncio.sleep(0.05)  # pretend to talk to a mail server
    return {"sent_to": address}


def build_app(jobs: JobServer) -> web.Application:
    async def signup(request: web.Request) -> web.Response:
        job = await jobs.enqueue("send_welcome_email", [request.query["email"]])
        return web.json_response({"job": job.id}, status=202)

    app = web.Application()
    app.router.add_post("/signup", signup)
    app.add_subapp("/jobs-api", jobs.create_app())  # POST /jobs-api/jobs, GET /jobs-api/jobs/1
    app.cleanup_ctx.append(jobs.lifespan)  # start with the app, drain when it stops
    return app


async def poll(http: aiohttp.ClientSession, url: str, timeout_s: float = 10) -> dict[str, Any]:
    """GET the job until it is terminal; `?wait=5` makes each GET a long poll."""
    deadline = time.monotonic() + timeout_s
    while True:
        async with http.get(url, params={"wait": "5"}) as resp:
            resp.raise_for_status()
            job: dict[str, Any] = await resp.json()
        if job["is_terminal"] or time.monotonic() > deadline:
            return job


async def run(db: Path) -> None:
    # In an application this would be JobServer(db=..., tasks=["myapp.tasks"]); here the task
    # is defined above, and every @task imported in the process is available anyway.
    jobs = JobServer(db=db)
    runner = web.AppRunner(build_app(jobs))
    await runner.setup()  # runs the cleanup_ctx: the JobServer starts here
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)  # port 0: the OS picks a free one
        await site.start()
        host, port = runner.addresses[0][:2]
        base = f"http://{host}:{port}"
        print(f"app listening on {base}")
        async with aiohttp.ClientSession() as http:
            # 1. through the app's own route, which enqueues in-process
            async with http.post(f"{base}/signup", params={"email": "a@example.com"}) as resp:
                assert resp.status == 202, resp.status
                job_id = (await resp.json())["job"]
            job = await poll(http, f"{base}/jobs-api/jobs/{job_id}")
            print(f"job {job['id']} via /signup: {job['status']}, result {job['result']}")
            assert job["status"] == "succeeded"

            # 2. through the mounted API, as any HTTP client would
            body = {"task": "send_welcome_email", "args": ["b@example.com"], "priority": 5}
            async with http.post(f"{base}/jobs-api/jobs", json=body) as resp:
                assert resp.status == 202, resp.status
                accepted = await resp.json()
            print(f"POST /jobs-api/jobs: {accepted}")
            assert accepted["poll_url"] == f"/jobs-api/jobs/{accepted['id']}"  # has the prefix
            job = await poll(http, base + accepted["poll_url"])
            print(f"job {job['id']} via the API: {job['status']}, result {job['result']}")
            assert job["status"] == "succeeded"
            assert job["result"] == {"sent_to": "b@example.com"}
    finally:
        await runner.cleanup()  # stops the site, then the JobServer (drains its workers)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="jobserver-example-") as tmp:
        asyncio.run(run(Path(tmp) / "jobs.db"))
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
