"""The HTTP API as an aiohttp application: the route table of every resource's handlers
(routes/), the middlewares, the OpenAPI document and the dashboard."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from .. import codec
from .auth import auth_middleware
from .context import OPENAPI_KEY, POLL_PREFIX_KEY, SERVER_KEY, STREAMS_KEY, Handler
from .dashboard import add_routes as add_dashboard_routes
from .errors import access_middleware, error_middleware
from .openapi import build_spec
from .routes.dead_letters import (
    delete_dead_letter,
    delete_dead_letters,
    get_dead_letter,
    list_dead_letters,
    requeue_dead_letter,
    requeue_dead_letters,
)
from .routes.jobs import (
    cancel_job,
    delete_job,
    get_job,
    list_attempts,
    list_jobs,
    list_steps,
    post_job,
    post_jobs_batch,
    post_signal,
)
from .routes.leases import (
    complete_leased,
    fail_leased,
    lease_jobs,
    release_leased,
    renew_leases,
)
from .routes.ops import (
    EventStreams,
    healthz,
    metrics,
    openapi_json,
    readyz,
    stream_events,
    throughput,
)
from .routes.queues import (
    get_key,
    get_queue,
    list_queues,
    patch_key,
    patch_queue,
    pause_queue,
    purge_queue,
    resume_queue,
)
from .routes.schedules import delete_schedule, get_schedule, list_schedules, post_schedule
from .routes.workflows import get_workflow, post_workflow

if TYPE_CHECKING:
    from ..server import JobServer


# Ids are ASCII digits, so that /jobs/batch is never a job id (GET /jobs/batch is 405, not 404).
ID = "{id:[0-9]+}"


ROUTES: list[tuple[str, str, Handler, str]] = [
    ("POST", "/jobs", post_job, "enqueue"),
    ("POST", "/jobs/batch", post_jobs_batch, "enqueue_batch"),
    ("GET", "/jobs", list_jobs, "list_jobs"),
    ("GET", f"/jobs/{ID}", get_job, "get_job"),
    ("DELETE", f"/jobs/{ID}", delete_job, "delete_job"),
    ("POST", f"/jobs/{ID}/cancel", cancel_job, "cancel_job"),
    ("GET", f"/jobs/{ID}/attempts", list_attempts, "list_attempts"),
    ("GET", f"/jobs/{ID}/steps", list_steps, "list_steps"),
    ("POST", "/signals/{key}", post_signal, "send_signal"),
    ("POST", "/leases", lease_jobs, "lease_jobs"),
    ("POST", "/leases/renew", renew_leases, "renew_leases"),
    ("POST", "/leases/complete", complete_leased, "complete_leased"),
    ("POST", "/leases/fail", fail_leased, "fail_leased"),
    ("POST", "/leases/release", release_leased, "release_leased"),
    ("GET", "/dead-letters", list_dead_letters, "list_dead_letters"),
    ("GET", f"/dead-letters/{ID}", get_dead_letter, "get_dead_letter"),
    ("POST", "/dead-letters/requeue", requeue_dead_letters, "requeue_dead_letters"),
    ("POST", "/dead-letters/delete", delete_dead_letters, "delete_dead_letters"),
    ("POST", f"/dead-letters/{ID}/requeue", requeue_dead_letter, "requeue_dead_letter"),
    ("DELETE", f"/dead-letters/{ID}", delete_dead_letter, "delete_dead_letter"),
    ("GET", "/queues", list_queues, "list_queues"),
    ("GET", "/queues/{name}", get_queue, "get_queue"),
    ("PATCH", "/queues/{name}", patch_queue, "configure_queue"),
    ("POST", "/queues/{name}/pause", pause_queue, "pause_queue"),
    ("POST", "/queues/{name}/resume", resume_queue, "resume_queue"),
    ("POST", "/queues/{name}/purge", purge_queue, "purge_queue"),
    ("GET", "/queues/{name}/keys/{key}", get_key, "get_key"),
    ("PATCH", "/queues/{name}/keys/{key}", patch_key, "configure_key"),
    ("POST", "/schedules", post_schedule, "create_schedule"),
    ("GET", "/schedules", list_schedules, "list_schedules"),
    ("GET", "/schedules/{name}", get_schedule, "get_schedule"),
    ("DELETE", "/schedules/{name}", delete_schedule, "delete_schedule"),
    ("POST", "/workflows", post_workflow, "create_workflow"),
    ("GET", f"/workflows/{ID}", get_workflow, "get_workflow"),
    ("GET", "/events", stream_events, "events"),
    ("GET", "/metrics", metrics, "metrics"),
    ("GET", "/stats/throughput", throughput, "throughput"),
    ("GET", "/healthz", healthz, "healthz"),
    ("GET", "/readyz", readyz, "readyz"),
    ("GET", "/openapi.json", openapi_json, "openapi"),
]


def create_app(server: JobServer) -> web.Application:
    middlewares = [error_middleware, auth_middleware]
    if server.access_log:
        middlewares.insert(0, access_middleware)  # outermost: it sees the final status
    app = web.Application(middlewares=middlewares)
    streams = app[STREAMS_KEY] = EventStreams()
    app.on_shutdown.append(streams.close)
    app[SERVER_KEY] = server
    app[POLL_PREFIX_KEY] = {}
    app[OPENAPI_KEY] = codec.dumps(
        build_spec(tasks=server.registry.names(), external_queues=server.external_queues)
    )
    for method, path, handler, name in ROUTES:
        app.router.add_route(method, path, handler, name=name)
    add_dashboard_routes(app)
    return app
