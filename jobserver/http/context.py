"""What every handler shares: the app's keys, the JobServer it serves, where jobs are polled."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from ..server import JobServer
    from .routes.ops import EventStreams


SERVER_KEY: web.AppKey[JobServer] = web.AppKey("jobserver")


OPENAPI_KEY: web.AppKey[bytes] = web.AppKey("openapi", bytes)


POLL_PREFIX_KEY: web.AppKey[dict[str, str]] = web.AppKey("poll_prefix", dict)
STREAMS_KEY: web.AppKey[EventStreams] = web.AppKey("event_streams")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def server_of(request: web.Request) -> JobServer:
    return request.app[SERVER_KEY]


def poll_prefix(app: web.Application) -> str:
    """Where a job is polled, but its id: `/jobs/`, behind the prefix the app is mounted at."""
    # url_for builds a URL object each call; the path differs only in the id, so the app
    # keeps its prefix (known once the app is mounted, where it may gain a path prefix).
    cache = app[POLL_PREFIX_KEY]
    prefix = cache.get("prefix")
    if prefix is None:
        prefix = cache["prefix"] = str(app.router["get_job"].url_for(id="0"))[:-1]
    return prefix
