"""/schedules: cron schedules that enqueue jobs."""

from __future__ import annotations

from aiohttp import web

from ...render import (
    schedule_to_dict,
)
from ..context import server_of
from ..errors import json_response
from ..schema import parse_schedule, query_params, read_json_object


async def post_schedule(request: web.Request) -> web.Response:
    server = server_of(request)
    fields = parse_schedule(await read_json_object(request, server.max_body_bytes))
    return json_response(schedule_to_dict(await server.save_schedule(**fields)), status=201)


async def list_schedules(request: web.Request) -> web.Response:
    query_params(request, set())
    schedules = await server_of(request).list_schedules()
    return json_response({"items": [schedule_to_dict(s) for s in schedules]})


async def get_schedule(request: web.Request) -> web.Response:
    schedule = await server_of(request).get_schedule(request.match_info["name"])
    return json_response(schedule_to_dict(schedule))


async def delete_schedule(request: web.Request) -> web.Response:
    await server_of(request).delete_schedule(request.match_info["name"])
    return web.Response(status=204)
