"""/dead-letters: jobs that failed for good; read, requeue, delete."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from ...render import (
    dead_letter_to_dict,
)
from ..context import poll_prefix, server_of
from ..errors import json_response
from ..schema import bounded_page, page_params, path_id, query_params
from .jobs import accepted

if TYPE_CHECKING:
    pass


async def list_dead_letters(request: web.Request) -> web.Response:
    limit, cursor = page_params(query_params(request, {"limit", "cursor"}))
    server = server_of(request)
    return await bounded_page(server.list_dead_letters, limit, cursor, dead_letter_to_dict, server)


async def get_dead_letter(request: web.Request) -> web.Response:
    dl = await server_of(request).get_dead_letter(path_id(request, "dead letter"))
    return json_response(dead_letter_to_dict(dl))


async def requeue_dead_letter(request: web.Request) -> web.Response:
    job = await server_of(request).requeue_dead_letter(path_id(request, "dead letter"))
    return json_response(accepted(job, poll_prefix(request.app)), status=202)


async def delete_dead_letter(request: web.Request) -> web.Response:
    await server_of(request).delete_dead_letter(path_id(request, "dead letter"))
    return web.Response(status=204)
