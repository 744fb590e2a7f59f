"""/workflows: chains, groups and chords submitted as one request."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from ...render import (
    job_to_dict,
)
from ..context import server_of
from ..errors import json_response
from ..schema import parse_workflow_job, path_id, read_json_object

if TYPE_CHECKING:
    pass


async def post_workflow(request: web.Request) -> web.Response:
    server = server_of(request)
    body = await read_json_object(request, server.max_batch_body_bytes)
    policy = body.pop("on_dependency_failure", None)  # the whole workflow's
    workflow_id, jobs = await server.enqueue_workflow(
        body, parse_job=parse_workflow_job, on_dependency_failure=policy
    )
    return json_response(
        {
            "id": workflow_id,
            "jobs": [j.id for j in jobs],
            "poll_url": str(request.app.router["get_workflow"].url_for(id=str(workflow_id))),
        },
        status=202,
    )


async def get_workflow(request: web.Request) -> web.Response:
    status, jobs = await server_of(request).get_workflow(path_id(request, "workflow"))
    return json_response(
        {
            "id": int(request.match_info["id"]),
            "status": status,
            "jobs": [job_to_dict(j) for j in jobs],
        }
    )
