"""/queues: counts and settings (limits, pause) of each queue."""

from __future__ import annotations

from aiohttp import web

from ...job_options import DEAD_LETTER_SELECTION
from ...render import key_to_dict, queue_to_dict
from ..context import server_of
from ..errors import json_response
from ..schema import query_params, queue_name_param, read_fields, read_json_object


async def list_queues(request: web.Request) -> web.Response:
    query_params(request, set())
    queues = await server_of(request).list_queues()
    return json_response({"items": [queue_to_dict(q) for q in queues]})


async def get_queue(request: web.Request) -> web.Response:
    return json_response(
        queue_to_dict(await server_of(request).get_queue(queue_name_param(request)))
    )


async def patch_queue(request: web.Request) -> web.Response:
    server = server_of(request)
    name = queue_name_param(request)
    changes = await read_json_object(request, server.max_body_bytes)  # checked by the server
    return json_response(queue_to_dict(await server.configure_queue(name, **changes)))


async def pause_queue(request: web.Request) -> web.Response:
    info = await server_of(request).configure_queue(queue_name_param(request), paused=True)
    return json_response(queue_to_dict(info))


async def resume_queue(request: web.Request) -> web.Response:
    info = await server_of(request).configure_queue(queue_name_param(request), paused=False)
    return json_response(queue_to_dict(info))


async def get_key(request: web.Request) -> web.Response:
    """A fairness key of a queue: its own settings, what holds for it, its running jobs."""
    server = server_of(request)
    state = await server.get_key(queue_name_param(request), request.match_info["key"])
    return json_response(key_to_dict(state))


async def patch_key(request: web.Request) -> web.Response:
    """Set a fairness key's own weight or limits (null: back to the queue's key_* default)."""
    server = server_of(request)
    name = queue_name_param(request)
    changes = await read_json_object(request, server.max_body_bytes)  # checked by the server
    state = await server.configure_key(name, request.match_info["key"], **changes)
    return json_response(key_to_dict(state))


PURGE = {o.wire: o for o in DEAD_LETTER_SELECTION if o.name in ("limit", "dry_run")}


async def purge_queue(request: web.Request) -> web.Response:
    """Cancel the queue's pending jobs (up to `limit`, oldest first); `dry_run` counts them."""
    server = server_of(request)
    name = queue_name_param(request)
    body = await read_json_object(request, server.max_body_bytes)  # {}: the defaults
    matched, more, cancelled = await server.purge_queue(name, **read_fields(body, PURGE))
    return json_response({"matched": matched, "more": more, "cancelled": cancelled})
