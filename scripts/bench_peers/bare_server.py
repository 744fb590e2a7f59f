"""The baseline for the HTTP figure: a bare aiohttp + uvloop endpoint.

    python -m bench_peers.bare_server PORT

`POST /jobs` reads and parses the JSON body and answers 202 with a small JSON reply shaped like
jobserver's (`{"id", "status", "poll_url"}`), with no validation, no storage and no commit.
"""

from __future__ import annotations

import itertools
import sys

import orjson
import uvloop
from aiohttp import web

_ids = itertools.count(1)


async def post_job(request: web.Request) -> web.Response:
    orjson.loads(await request.read())
    job_id = next(_ids)
    body = orjson.dumps({"id": job_id, "status": "pending", "poll_url": f"/jobs/{job_id}"})
    return web.Response(body=body, status=202, content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', content_type="application/json")


def main() -> None:
    app = web.Application()
    app.router.add_post("/jobs", post_job)
    app.router.add_get("/healthz", healthz)
    web.run_app(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        access_log=None,
        print=None,
        backlog=1024,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
