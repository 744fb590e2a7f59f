"""Who may call: with tokens set, a bearer token (a read-only one for GETs only), failed
attempts throttled; with none, only requests whose `Host` is localhost or a --server-name."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from aiohttp import web

from ..auth import READ_METHODS, Access
from .context import SERVER_KEY, Handler
from .errors import error_response

if TYPE_CHECKING:
    pass


OPEN_ROUTES = frozenset({"healthz", "dashboard", "dashboard_static"})
# What a worker token may call (external workers, leasing.py), besides the open routes
WORKER_ROUTES = frozenset(
    {"lease_jobs", "renew_leases", "complete_leased", "fail_leased", "release_leased"}
)


def local_address(request: web.Request) -> str | None:
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    return str(sockname[0]).lower() if isinstance(sockname, tuple) and sockname else None


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """With tokens configured, every route but /healthz and the page itself needs
    `Authorization: Bearer <token>`; a read-only token may only read."""
    server = request.app[SERVER_KEY]
    auth = server.auth
    if not auth.enabled:
        if not auth.host_allowed(request.headers.get("Host"), local_address(request)):
            return error_response(
                403, "host_not_allowed",
                "with no token set, the API answers only to localhost and its --server-name",
                "Host",
            )  # fmt: skip
        return await handler(request)
    if request.match_info.route.name in OPEN_ROUTES:
        return await handler(request)
    access = auth.access(request.headers.get("Authorization"))
    if access is Access.NONE:
        # Only a failed authentication is throttled: a valid token always gets in.
        client = request.remote or "?"
        now = time.monotonic()
        wait = auth.throttled(client, now)
        if wait is not None:
            return error_response(
                429, "too_many_failures", "too many failed authentications; try again later",
                "Authorization", headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )  # fmt: skip
        auth.record_failure(client, now)
        return error_response(
            401, "unauthorized", "send Authorization: Bearer <token>", "Authorization",
            headers={"WWW-Authenticate": 'Bearer realm="jobserver"'},
        )  # fmt: skip
    if access is Access.READ and request.method not in READ_METHODS:
        return error_response(403, "forbidden", "this token may only read", "Authorization")
    if access is Access.WORKER and request.match_info.route.name not in WORKER_ROUTES:
        return error_response(
            403, "forbidden", "this token may only lease jobs and report on them",
            "Authorization",
        )  # fmt: skip
    response = await handler(request)
    if access is Access.READ and not response.prepared:
        response.headers["X-Jobserver-Access"] = "read"  # the dashboard hides its writes
    return response
