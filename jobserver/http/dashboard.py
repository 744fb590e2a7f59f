"""The dashboard: a page the server serves at `/`, with everything it needs in the package
(no build step, no CDN). It talks to the same HTTP API as any client.

The page (dashboard_static/index.html, app.js, style.css) calls the API at URLs relative to its
own directory, so it works where the API is mounted under a prefix (`/jobs-api/`). Its routes
need no token; the API calls it makes do, and it asks for one when the server answers 401."""

from __future__ import annotations

import hashlib
from importlib import resources

from aiohttp import web

STATIC = resources.files("jobserver.http") / "dashboard_static"
ASSETS = ("app.js", "style.css", "favicon.svg")

# Everything the page loads comes from this server: a script injected into the page (through
# data it shows, say) could not run, nor send the stored token elsewhere.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _with_versions(html: str) -> str:
    """Tag each asset URL with a hash of its content, so that a browser never pairs a new page
    with an old script or style sheet from its cache."""
    for name in ASSETS:
        digest = hashlib.sha256((STATIC / name).read_bytes()).hexdigest()[:12]
        html = html.replace(f'"static/{name}"', f'"static/{name}?v={digest}"')
    return html


async def index(request: web.Request) -> web.Response:
    html = _with_versions((STATIC / "index.html").read_text(encoding="utf-8"))
    return web.Response(text=html, content_type="text/html", charset="utf-8", headers=HEADERS)


def add_routes(app: web.Application) -> None:
    """`/` and `/static/...`; their names start with "dashboard" (they are not API routes)."""
    app.router.add_get("/", index, name="dashboard")
    app.router.add_static("/static/", str(STATIC), name="dashboard_static")
