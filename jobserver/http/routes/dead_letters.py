"""/dead-letters: jobs that failed for good; read, requeue, delete (one, or by a filter)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from ...job_options import DEAD_LETTER_SELECTION
from ...render import (
    dead_letter_to_dict,
)
from ...store.base import BulkResult, DeadLetterFilter
from ..context import poll_prefix, server_of
from ..errors import json_response
from ..schema import (
    bounded_page,
    page_params,
    path_id,
    query_params,
    read_fields,
    read_json_object,
)
from .jobs import accepted

SELECTION = {o.wire: o for o in DEAD_LETTER_SELECTION}

if TYPE_CHECKING:
    pass


async def list_dead_letters(request: web.Request) -> web.Response:
    query = query_params(request, {"limit", "cursor", "task", "queue"})
    limit, cursor = page_params(query)
    flt = DeadLetterFilter(task=query.get("task"), queue=query.get("queue"))
    server = server_of(request)
    return await bounded_page(
        lambda n, before: server.list_dead_letters(n, before, flt),
        limit,
        cursor,
        dead_letter_to_dict,
        server,
    )


async def get_dead_letter(request: web.Request) -> web.Response:
    dl = await server_of(request).get_dead_letter(path_id(request, "dead letter"))
    return json_response(dead_letter_to_dict(dl))


async def requeue_dead_letter(request: web.Request) -> web.Response:
    job = await server_of(request).requeue_dead_letter(path_id(request, "dead letter"))
    return json_response(accepted(job, poll_prefix(request.app)), status=202)


async def delete_dead_letter(request: web.Request) -> web.Response:
    await server_of(request).delete_dead_letter(path_id(request, "dead letter"))
    return web.Response(status=204)


SAMPLE = 10  # dead letters shown whole in a bulk answer


def bulk_answer(result: BulkResult, done: str) -> dict[str, Any]:
    """A bulk action's answer: how many matched, whether more did, a sample, and the ids it
    made (`done` names them)."""
    return {
        "matched": len(result.matched),
        "more": result.more,
        "dead_letter_ids": [d.id for d in result.matched],
        "sample": [dead_letter_to_dict(d) for d in result.matched[:SAMPLE]],
        done: result.done,
    }


async def requeue_dead_letters(request: web.Request) -> web.Response:
    server = server_of(request)
    selection = read_fields(await read_json_object(request, server.max_body_bytes), SELECTION)
    return json_response(bulk_answer(await server.requeue_dead_letters(**selection), "job_ids"))


async def delete_dead_letters(request: web.Request) -> web.Response:
    server = server_of(request)
    selection = read_fields(await read_json_object(request, server.max_body_bytes), SELECTION)
    return json_response(bulk_answer(await server.delete_dead_letters(**selection), "deleted"))
