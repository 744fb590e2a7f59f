"""/schedules: cron schedules that enqueue jobs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from ...models import (
    Schedule,
)
from ...render import (
    rfc3339,
)
from ..context import server_of
from ..errors import json_response
from ..schema import parse_schedule, query_params, read_json_object

if TYPE_CHECKING:
    pass


def schedule_to_dict(schedule: Schedule) -> dict[str, Any]:
    return {
        "name": schedule.name,
        "task": schedule.task,
        "cron": schedule.cron,
        "timezone": schedule.timezone,
        "args": schedule.args,
        "kwargs": schedule.kwargs,
        "queue": schedule.queue,
        "priority": schedule.priority,
        "missed": schedule.missed,
        "paused": schedule.paused,
        "next_run_at": rfc3339(schedule.next_tick_at),
        "last_run_at": rfc3339(schedule.last_tick_at),
        "source": schedule.source,
    }


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
