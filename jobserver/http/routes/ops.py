"""Operations: the event stream (SSE), metrics, health probes and the OpenAPI document."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ... import codec
from ...events import Event, EventFilter, Gap, Ready
from ...metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from ...render import rfc3339
from ..context import OPENAPI_KEY, STREAMS_KEY, server_of
from ..errors import json_response
from ..schema import digits_param, query_params

if TYPE_CHECKING:
    pass


EVENT_IDLE_S = 15.0


async def stream_events(request: web.Request) -> web.StreamResponse:
    """Job transitions as Server-Sent Events; `Last-Event-ID` (or last_event_id) resumes."""
    query = query_params(request, {"queue", "task", "job_id", "last_event_id"})
    flt = EventFilter(
        queue=query.get("queue"),
        task=query.get("task"),
        job_id=digits_param(query.get("job_id"), "job_id"),
    )
    header = request.headers.get("Last-Event-ID")
    last_id = digits_param(header, "Last-Event-ID") if header else None
    if "last_event_id" in query:
        last_id = digits_param(query["last_event_id"], "last_event_id")
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    streams = request.app[STREAMS_KEY]
    me = streams.enter()
    try:
        async for item in server_of(request).events.stream(flt, last_id, EVENT_IDLE_S):
            if item is Ready:  # subscribed: what commits from now on will be sent
                chunk = b": connected\n\n"
            elif item is None:
                chunk = b": keep-alive\n\n"
            elif item is Gap:
                chunk = b'event: gap\ndata: {"message": "some events were missed"}\n\n'
            else:
                assert isinstance(item, Event)
                data = codec.dumps({"id": item.id, **item.data()})
                chunk = b"id: %d\nevent: job\ndata: %s\n\n" % (item.id, data)
            await response.write(chunk)
    except ConnectionResetError:
        pass  # the client went away
    except asyncio.CancelledError:
        if not streams.closing or me is None:
            raise
        me.uncancel()  # ended by the app's shutdown: the stream closes like any other end
    finally:
        streams.leave(me)
    return response


class EventStreams:
    """The handlers streaming /events: an app's graceful stop waits for its requests, and a
    stream never ends by itself, so on shutdown (before that wait) they are ended."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()
        self.closing = False

    def enter(self) -> asyncio.Task[Any] | None:
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
        return task

    def leave(self, task: asyncio.Task[Any] | None) -> None:
        if task is not None:
            self.tasks.discard(task)

    async def close(self, app: web.Application) -> None:  # an on_shutdown handler
        self.closing = True
        for task in list(self.tasks):
            task.cancel()


async def metrics(request: web.Request) -> web.Response:
    body = await server_of(request).render_metrics()
    return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})


async def throughput(request: web.Request) -> web.Response:
    """Jobs that ended on this node, a bucket each over the last two minutes."""
    query_params(request, set())
    server = server_of(request)
    history = server.metrics.throughput
    points = [
        {"at": rfc3339(at), "succeeded": ok, "failed": failed}
        for at, ok, failed in history.points(server.clock.now())
    ]
    return json_response({"bucket_s": history.bucket_s, "points": points})


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    await server_of(request).check_ready()
    return json_response({"status": "ready"})


async def openapi_json(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document of this API (http/openapi.py), built once per app."""
    return web.Response(body=request.app[OPENAPI_KEY], content_type="application/json")
