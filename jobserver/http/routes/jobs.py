"""/jobs: enqueue (one, or a batch), read, list, cancel, delete, and a job's attempts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from ...errors import ValidationError
from ...models import (
    Job,
    JobState,
    NewJob,
)
from ...render import (
    attempt_to_dict,
    job_to_dict,
    rfc3339,
    step_to_dict,
)
from ...store.base import JobFilter, payload_fingerprint
from ..context import poll_prefix, server_of
from ..errors import in_api_names, json_response
from ..schema import (
    MAX_BATCH,
    MAX_ITEM_ERRORS,
    bounded_page,
    page_params,
    parse_enqueue,
    path_id,
    query_params,
    read_json_object,
    wait_param,
)

if TYPE_CHECKING:
    pass


def accepted(job: Job, prefix: str) -> dict[str, Any]:
    """The reply to an enqueue (also fast_path.py's)."""
    return {"id": job.id, "status": job.status.value, "poll_url": f"{prefix}{job.id}"}


async def post_job(request: web.Request) -> web.Response:
    server = server_of(request)
    wait_s = wait_param(query_params(request, {"wait"}))
    body = await read_json_object(request, server.max_body_bytes)
    fields = parse_enqueue(
        body, request.headers.get("Idempotency-Key"), request.headers.get("traceparent")
    )
    enqueued = await server.submit(**fields)
    job = enqueued.job
    if wait_s:
        job = await server.wait_for(job.id, wait_s)
        if job.is_terminal:
            return json_response(job_to_dict(job))
    return json_response(
        accepted(job, poll_prefix(request.app)), status=202 if enqueued.created else 200
    )


async def post_jobs_batch(request: web.Request) -> web.Response:
    """Up to MAX_BATCH jobs in one transaction: every item valid, or nothing enqueued."""
    server = server_of(request)
    body = await read_json_object(request, server.max_batch_body_bytes)
    unknown = set(body) - {"jobs"}
    if unknown:
        raise ValidationError(sorted(unknown)[0], "unknown field")
    items = body.get("jobs")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
        raise ValidationError("jobs", f"must be an array of 1 to {MAX_BATCH} jobs")
    new_jobs: list[NewJob] = []
    problems: list[dict[str, Any]] = []
    keys: dict[str, tuple[int, str]] = {}  # idempotency key -> (first index, payload digest)
    for index, item in enumerate(items):
        try:
            if not isinstance(item, dict):
                raise ValidationError(None, "must be a JSON object")
            new = server.new_job(**parse_enqueue(item, None, request.headers.get("traceparent")))
            key = new.idempotency_key
            if key is not None:
                seen_at, digest = keys.setdefault(key, (index, payload_fingerprint(new)))
                if seen_at != index and digest != payload_fingerprint(new):
                    raise ValidationError(
                        "idempotency_key", f"repeats item {seen_at}'s key with another payload"
                    )
            new_jobs.append(new)
        except ValidationError as exc:
            exc = in_api_names(exc)
            problems.append({"index": index, "field": exc.field, "message": exc.message})
    if problems:
        first = problems[0]
        where = f"jobs[{first['index']}]" + (f".{first['field']}" if first["field"] else "")
        return json_response(
            {
                "error": {
                    "code": "invalid",
                    "message": f"{len(problems)} of {len(items)} jobs are invalid; none was"
                    f" enqueued. First: {where}: {first['message']}",
                    "field": where,
                    "items": problems[:MAX_ITEM_ERRORS],
                }
            },
            status=422,
        )
    results = await server.enqueue_many(new_jobs)
    return json_response(
        {"ids": [r.job.id for r in results], "created": [r.created for r in results]}, status=202
    )


async def get_job(request: web.Request) -> web.Response:
    server = server_of(request)
    wait_s = wait_param(query_params(request, {"wait"}))
    job_id = path_id(request, "job")
    job = await (server.wait_for(job_id, wait_s) if wait_s else server.get_job(job_id))
    body = job_to_dict(job)
    if job.status == JobState.PENDING:
        reason = await server.why_waiting(job)
        if reason is not None and "until" in reason:
            reason = {**reason, "until": rfc3339(reason["until"])}
        body["waiting"] = reason
    return json_response(body)


async def delete_job(request: web.Request) -> web.Response:
    await server_of(request).delete_job(path_id(request, "job"))
    return web.Response(status=204)


async def list_jobs(request: web.Request) -> web.Response:
    query = query_params(request, {"status", "queue", "task", "search", "limit", "cursor"})
    limit, cursor = page_params(query)
    status = None
    if "status" in query:
        try:
            status = JobState(query["status"])
        except ValueError:
            raise ValidationError(
                "status", f"must be one of {', '.join(s.value for s in JobState)}"
            ) from None
    search = query.get("search")
    if search is not None and not 1 <= len(search) <= 200:
        raise ValidationError("search", "must be 1 to 200 characters")
    flt = JobFilter(status=status, queue=query.get("queue"), task=query.get("task"), search=search)
    server = server_of(request)
    return await bounded_page(
        lambda n, before: server.list_jobs(flt, n, before), limit, cursor, job_to_dict, server
    )


async def list_attempts(request: web.Request) -> web.Response:
    job_id = path_id(request, "job")
    attempts = await server_of(request).list_attempts(job_id)
    return json_response({"job_id": job_id, "items": [attempt_to_dict(a) for a in attempts]})


async def list_steps(request: web.Request) -> web.Response:
    """A job's durable steps (ctx.step, ctx.sleep, ctx.wait_for_event), in order."""
    job_id = path_id(request, "job")
    steps = await server_of(request).get_steps(job_id)
    return json_response({"job_id": job_id, "items": [step_to_dict(s) for s in steps]})


async def post_signal(request: web.Request) -> web.Response:
    """Send a signal to `key`: the jobs waiting for it wake; kept for a later wait if none."""
    server = server_of(request)
    key = request.match_info["key"]
    body = await read_json_object(request, server.max_body_bytes)
    unknown = set(body) - {"payload"}
    if unknown:
        raise ValidationError(sorted(unknown)[0], "unknown field")
    signal_id, woken = await server.signal(key, body.get("payload"))
    return json_response({"id": signal_id, "key": key, "woken": woken}, status=202)


async def cancel_job(request: web.Request) -> web.Response:
    job = await server_of(request).cancel(path_id(request, "job"))
    return json_response(job_to_dict(job))
