"""The dashboard: a page the server serves at `/`, with everything it needs in the package
(no build step, no CDN). It talks to the same HTTP API as any client."""

from __future__ import annotations

from importlib import resources

from aiohttp import web

STATIC = resources.files("jobserver") / "dashboard_static"


async def index(request: web.Request) -> web.Response:
    return web.Response(
        body=(STATIC / "index.html").read_bytes(), content_type="text/html", charset="utf-8"
    )


def add_routes(app: web.Application) -> None:
    """`/` and `/static/...`; their names start with "dashboard" (they are not API routes)."""
    app.router.add_get("/", index, name="dashboard")
    app.router.add_static("/static/", str(STATIC), name="dashboard_static")
