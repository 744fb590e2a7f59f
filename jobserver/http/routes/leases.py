"""/leases: workers outside the server (any language) lease jobs of external tasks and report
on them. Every report is guarded by the lease token: one that lost its lease changes nothing
(its item says `lost`). The moves themselves are jobserver/leasing.py's."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from ...job_options import check_given
from ...leasing import FAILURE, PROGRESS, RENEWAL, check_items, check_lease_request
from ...render import job_to_dict
from ..context import server_of
from ..errors import json_response
from ..schema import read_json_object


async def lease_jobs(request: web.Request) -> web.Response:
    server = server_of(request)
    asked = check_lease_request(await read_json_object(request, server.max_body_bytes))

    def gone() -> bool:  # a worker that left takes nothing more (aiohttp runs on without it)
        return request.transport is None or request.transport.is_closing()

    jobs = await server.leasing.lease(
        asked["queues"], asked["limit"], asked["lease_s"], asked["wait_s"], gone
    )
    return json_response(
        {"leases": [{"job": job_to_dict(j), "lease_token": j.lease_token} for j in jobs]}
    )


async def renew_leases(request: web.Request) -> web.Response:
    server = server_of(request)
    items, rest = check_items(await read_json_object(request, server.max_body_bytes), PROGRESS)
    lease_s = check_given(rest, {o.name: o for o in RENEWAL}).get("lease_s", RENEWAL[0].default)
    renewal = await server.leasing.renew([(i["job_id"], i["lease_token"]) for i in items], lease_s)
    lost = set(renewal.lost)
    await asyncio.gather(
        *(
            server.leasing.progress(
                i["job_id"], i["lease_token"], i["progress"], i.get("progress_message")
            )
            for i in items
            if i.get("progress") is not None and i["job_id"] not in lost
        )
    )
    return json_response(
        {
            "renewed": renewal.renewed,
            "lost": renewal.lost,
            "cancel_requested": renewal.cancel_requested,
        }
    )


async def complete_leased(request: web.Request) -> web.Response:
    server = server_of(request)
    items, rest = check_items(
        await read_json_object(request, server.max_body_bytes), with_result=True
    )
    check_given(rest, {})
    leasing = server.leasing
    states = await asyncio.gather(
        *(leasing.complete(i["job_id"], i["lease_token"], i["result"]) for i in items)
    )
    return _outcomes(items, states)


async def fail_leased(request: web.Request) -> web.Response:
    server = server_of(request)
    items, rest = check_items(await read_json_object(request, server.max_body_bytes), FAILURE)
    check_given(rest, {})
    leasing = server.leasing
    states = await asyncio.gather(
        *(
            leasing.fail(
                i["job_id"],
                i["lease_token"],
                {"type": i.get("type"), "message": i["message"], "traceback": i.get("traceback")},
                retryable=i["retryable"],
                retry_in_s=i.get("retry_in_s"),
            )
            for i in items
        )
    )
    return _outcomes(items, states)


async def release_leased(request: web.Request) -> web.Response:
    server = server_of(request)
    items, rest = check_items(await read_json_object(request, server.max_body_bytes))
    check_given(rest, {})
    leasing = server.leasing
    states = await asyncio.gather(*(leasing.release(i["job_id"], i["lease_token"]) for i in items))
    return _outcomes(items, states)


def _outcomes(items: list[dict[str, Any]], states: list[Any]) -> web.Response:
    """Each item's job and what its report did: the state written, or `lost`."""
    return json_response(
        {
            "items": [
                {"job_id": i["job_id"], "status": "lost" if s is None else s.value}
                for i, s in zip(items, states, strict=True)
            ]
        }
    )
