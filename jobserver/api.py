"""The HTTP API: one route table, input validation, and one error shape for every failure:
`{"error": {"code": ..., "message": ..., "field": ...}}`."""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web

from . import codec
from .errors import Conflict, NotFound, StorageUnavailable, ValidationError
from .models import DeadLetter, Job, JobState, NewJob
from .store.base import JobFilter

if TYPE_CHECKING:
    from .server import JobServer

log = logging.getLogger(__name__)
T = TypeVar("T", Job, DeadLetter)

SERVER_KEY: web.AppKey[JobServer] = web.AppKey("jobserver")
OPENAPI_KEY: web.AppKey[bytes] = web.AppKey("openapi", bytes)
MAX_NESTING = 32
MAX_PAGE = 1000
DEFAULT_PAGE = 50
PRIORITY_RANGE = (-1000, 1000)
MAX_RETRIES_RANGE = (0, 100)
MAX_DELAY_S = 366 * 86400.0
MAX_TIMEOUT_S = 7 * 86400.0
QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,99}")
MAX_KEY_LEN = 200
RFC3339_NO_ZONE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
)
RFC3339 = re.compile(RFC3339_NO_ZONE.pattern + r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})")
MIN_TS = datetime(1, 1, 1, tzinfo=UTC).timestamp()
MAX_TS = datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC).timestamp()
DECIMAL = re.compile(r"-?[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?")
MAX_WAIT_S = 60.0
MAX_BATCH = 10_000
MAX_ITEM_ERRORS = 100
JOB_FIELDS = frozenset(
    {
        "task",
        "args",
        "kwargs",
        "queue",
        "priority",
        "delay",
        "run_at",
        "max_retries",
        "timeout",
        "backoff",
        "idempotency_key",
    }
)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# -- rendering ------------------------------------------------------------------------------------
def rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    ts = min(max(ts, MIN_TS), MAX_TS)  # a datetime holds years 1 to 9999 only
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def public_error(error: dict[str, Any] | None) -> dict[str, Any] | None:
    """A job's error as clients see it: type and message; tracebacks stay in the log."""
    if error is None:
        return None
    return {"type": error.get("type"), "message": error.get("message")}


def job_to_dict(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "task": job.task,
        "queue": job.queue,
        "status": job.status.value,
        "priority": job.priority,
        "args": job.args,
        "kwargs": job.kwargs,
        "attempts": job.attempts,
        "max_retries": job.max_retries,
        "timeout": job.timeout_s,
        "created_at": rfc3339(job.created_at),
        "run_at": rfc3339(job.run_at),
        "started_at": rfc3339(job.started_at),
        "completed_at": rfc3339(job.completed_at),
        "result": job.result,
        "error": public_error(job.error),
        "progress": None
        if job.progress is None
        else {"fraction": job.progress, "message": job.progress_message},
        "cancel_requested": job.cancel_requested,
        "is_terminal": job.is_terminal,
    }


def dead_letter_to_dict(dl: DeadLetter) -> dict[str, Any]:
    return {
        "id": dl.id,
        "job_id": dl.job_id,
        "task": dl.task,
        "queue": dl.queue,
        "args": dl.args,
        "kwargs": dl.kwargs,
        "error": public_error(dl.error),
        "attempts": dl.attempts,
        "failed_at": rfc3339(dl.failed_at),
    }


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=codec.dumps(data), status=status, content_type="application/json", headers=headers
    )


def error_response(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    return json_response(
        {"error": {"code": code, "message": message, "field": field}}, status, headers
    )


# -- errors ---------------------------------------------------------------------------------------
class RequestError(Exception):
    """An HTTP-level refusal (400, 413, 415) raised while reading a request."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ValidationError as exc:
        return error_response(422, "invalid", exc.message, exc.field)
    except RequestError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.field)
    except NotFound as exc:
        return error_response(404, "not_found", str(exc))
    except Conflict as exc:
        return error_response(409, "conflict", str(exc))
    except StorageUnavailable as exc:
        log.warning("storage unavailable: %s", exc)
        return error_response(
            503, "unavailable", str(exc), headers={"Retry-After": str(exc.retry_after_s)}
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        code = HTTP_CODES.get(exc.status, "http_error")
        return error_response(exc.status, code, exc.reason, headers=headers)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, "internal", "internal server error")


# -- reading requests -----------------------------------------------------------------------------
def _reject_nan(name: str) -> Any:
    raise ValueError(f"{name} is not a valid JSON number")


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `max_bytes` (never buffered past)."""
    too_large = RequestError(413, "too_large", f"the body is over the limit of {max_bytes} bytes")
    if request.content_length is not None and request.content_length > max_bytes:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > max_bytes:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json_object(request: web.Request, max_bytes: int) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise RequestError(
            415, "unsupported_media_type", "send the body as application/json", "Content-Type"
        )
    raw = await read_body(request, max_bytes)
    try:
        body = codec.loads(raw)
    except codec.JSONDecodeError as exc:
        if "depth" in str(exc).lower() or "recursion" in str(exc).lower():
            raise ValidationError("body", f"JSON nests deeper than {MAX_NESTING} levels") from None
        try:  # say so when the only fault is a NaN or Infinity, which JSON has no words for
            json.loads(raw, parse_constant=_reject_nan)
        except ValueError as nan_exc:
            if "is not a valid JSON number" in str(nan_exc):
                raise ValidationError("body", str(nan_exc)) from None
        except RecursionError:
            pass
        raise RequestError(400, "bad_json", f"the body is not valid JSON: {exc}", "body") from None
    if not isinstance(body, dict):
        raise ValidationError("body", "the body must be a JSON object")
    if codec.nesting_depth(body, MAX_NESTING + 1) > MAX_NESTING:
        raise ValidationError("body", f"JSON nests deeper than {MAX_NESTING} levels")
    return body


def _int(body: dict[str, Any], name: str, lo: int, hi: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON has one number type: 2.0 is the integer 2 (as JSON Schema says)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(name, "must be an integer")
    if not lo <= value <= hi:
        raise ValidationError(name, f"must be between {lo} and {hi}")
    return value


def _number(
    body: dict[str, Any], name: str, lo: float, hi: float, *, open_lo: bool = False
) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(name, "must be a number")
    number = float(value)
    if not math.isfinite(number) or number > hi or number < lo or (open_lo and number == lo):
        bound = f"greater than {lo}" if open_lo else f"at least {lo}"
        raise ValidationError(name, f"must be {bound} and at most {hi}")
    return number


def _string(body: dict[str, Any], name: str, max_len: int) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(name, "must be a string")
    if not 1 <= len(value) <= max_len:
        raise ValidationError(name, f"must be 1 to {max_len} characters")
    return value


def parse_rfc3339(name: str, value: Any) -> float:
    """Epoch seconds from an RFC 3339 time with a zone (fromisoformat alone takes other ISO 8601
    forms too); a time outside years 1-9999 in UTC is taken as that bound."""
    if not isinstance(value, str):
        raise ValidationError(name, "must be an RFC 3339 timestamp string")
    if not RFC3339.fullmatch(value):
        if RFC3339_NO_ZONE.fullmatch(value):
            raise ValidationError(name, "must include a time zone (Z or +hh:mm)")
        raise ValidationError(name, "must be an RFC 3339 timestamp, e.g. 2030-01-01T12:00:00Z")
    try:
        when = datetime.fromisoformat(value.upper())
    except ValueError as exc:  # e.g. month 13, or a leap second (:60), which datetime cannot hold
        raise ValidationError(name, f"is not a valid time: {exc}") from None
    return min(max(when.timestamp(), MIN_TS), MAX_TS)


def parse_backoff(value: Any) -> dict[str, float] | None:
    """The backoff fields a request gives; the rest come from the task's own policy."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValidationError("backoff", "must be an object with base, factor and cap (seconds)")
    unknown = set(value) - {"base", "factor", "cap"}
    if unknown:
        raise ValidationError(f"backoff.{sorted(unknown)[0]}", "unknown field")
    fields = {
        "base_s": _number(value, "base", 0.0, 3600.0, open_lo=True),
        "factor": _number(value, "factor", 1.0, 10.0),
        "cap_s": _number(value, "cap", 0.0, 86400.0, open_lo=True),
    }
    return {k: v for k, v in fields.items() if v is not None}


def _is_utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def parse_enqueue(body: dict[str, Any], header_key: str | None) -> dict[str, Any]:
    """Validate a POST /jobs body into keyword arguments for JobServer.enqueue."""
    unknown = set(body) - JOB_FIELDS
    if unknown:
        raise ValidationError(sorted(unknown)[0], "unknown field")
    task = _string(body, "task", 200)
    if task is None:
        raise ValidationError("task", "is required")
    args = body.get("args", [])
    if not isinstance(args, list):
        raise ValidationError("args", "must be an array")
    kwargs = body.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise ValidationError("kwargs", "must be an object")
    if "ctx" in kwargs:
        raise ValidationError("kwargs.ctx", "is reserved for the job context")
    queue = body.get("queue", "default")
    if not isinstance(queue, str) or not QUEUE_NAME.fullmatch(queue):
        raise ValidationError("queue", "must be 1-100 of A-Z a-z 0-9 _ . : - starting alphanumeric")
    delay = _number(body, "delay", 0.0, MAX_DELAY_S)
    run_at = parse_rfc3339("run_at", body["run_at"]) if body.get("run_at") is not None else None
    if delay is not None and run_at is not None:
        raise ValidationError("delay", "give delay or run_at, not both")
    key = _string(body, "idempotency_key", MAX_KEY_LEN)
    if header_key is not None:
        if not 1 <= len(header_key) <= MAX_KEY_LEN:
            raise ValidationError("Idempotency-Key", f"must be 1 to {MAX_KEY_LEN} characters")
        if not _is_utf8(header_key):  # aiohttp keeps other bytes as lone surrogates
            raise ValidationError("Idempotency-Key", "must be UTF-8 text")
        if key is not None and key != header_key:
            raise ValidationError("idempotency_key", "differs from the Idempotency-Key header")
        key = header_key
    priority = _int(body, "priority", *PRIORITY_RANGE)
    return {
        "task": task,
        "args": args,
        "kwargs": kwargs,
        "queue": queue,
        "priority": 0 if priority is None else priority,
        "delay_s": delay,
        "run_at": run_at,
        "max_retries": _int(body, "max_retries", *MAX_RETRIES_RANGE),
        "timeout_s": _number(body, "timeout", 0.0, MAX_TIMEOUT_S, open_lo=True),
        "backoff": parse_backoff(body.get("backoff")),
        "idempotency_key": key,
    }


def _query(request: web.Request, allowed: set[str]) -> dict[str, str]:
    for name in request.query:
        if name not in allowed:
            raise ValidationError(name, "unknown query parameter")
    return {k: request.query[k] for k in allowed if k in request.query}


def _is_digits(text: str) -> bool:
    """Only 0-9: str.isdigit() also takes digits int() cannot read, such as '²'."""
    return text.isascii() and text.isdigit()


def _page(query: dict[str, str]) -> tuple[int, int | None]:
    limit = DEFAULT_PAGE
    if "limit" in query:
        if not _is_digits(query["limit"]) or not 1 <= int(query["limit"]) <= MAX_PAGE:
            raise ValidationError("limit", f"must be an integer from 1 to {MAX_PAGE}")
        limit = int(query["limit"])
    cursor = None
    if "cursor" in query:
        text = query["cursor"]
        if not _is_digits(text) or len(text) > 18:
            raise ValidationError("cursor", "is not a cursor this server gave out")
        cursor = int(text)
    return limit, cursor


def _wait_s(query: dict[str, str]) -> float | None:
    if "wait" not in query:
        return None
    text = query["wait"]
    # a decimal number, as in JSON: float() alone also reads " 5", "1_0", "١٢" and "nan"
    wait = float(text) if DECIMAL.fullmatch(text) else -1.0
    if not 0 <= wait <= MAX_WAIT_S:
        raise ValidationError("wait", f"must be a number of seconds from 0 to {MAX_WAIT_S:g}")
    return wait


def _path_id(request: web.Request, kind: str) -> int:
    text = request.match_info["id"]
    if not _is_digits(text) or len(text) > 18:
        raise NotFound(f"no {kind} {text!r}")
    return int(text)


def _page_of(items: list[T], limit: int) -> tuple[list[T], str | None]:
    """Trim a list fetched with limit + 1 rows; the cursor is set only if more remain."""
    if len(items) > limit:
        items = items[:limit]
        return items, str(items[-1].id)
    return items, None


# -- handlers -------------------------------------------------------------------------------------
def _server(request: web.Request) -> JobServer:
    return request.app[SERVER_KEY]


def _poll_url(request: web.Request, job_id: int) -> str:
    return f"{request.app.router['get_job'].url_for(id=str(job_id))}"


def _accepted(request: web.Request, job: Job) -> dict[str, Any]:
    return {"id": job.id, "status": job.status.value, "poll_url": _poll_url(request, job.id)}


async def post_job(request: web.Request) -> web.Response:
    server = _server(request)
    wait_s = _wait_s(_query(request, {"wait"}))
    body = await read_json_object(request, server.max_body_bytes)
    fields = parse_enqueue(body, request.headers.get("Idempotency-Key"))
    enqueued = await server.submit(**fields)
    job = enqueued.job
    if wait_s:
        job = await server.wait_for(job.id, wait_s)
        if job.is_terminal:
            return json_response(job_to_dict(job))
    return json_response(_accepted(request, job), status=202 if enqueued.created else 200)


async def post_jobs_batch(request: web.Request) -> web.Response:
    """Up to MAX_BATCH jobs in one transaction: every item valid, or nothing enqueued."""
    server = _server(request)
    body = await read_json_object(request, server.max_batch_body_bytes)
    unknown = set(body) - {"jobs"}
    if unknown:
        raise ValidationError(sorted(unknown)[0], "unknown field")
    items = body.get("jobs")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
        raise ValidationError("jobs", f"must be an array of 1 to {MAX_BATCH} jobs")
    new_jobs: list[NewJob] = []
    problems: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        try:
            if not isinstance(item, dict):
                raise ValidationError(None, "must be a JSON object")
            new_jobs.append(server.new_job(**parse_enqueue(item, None)))
        except ValidationError as exc:
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
    return json_response({"ids": [r.job.id for r in results]}, status=202)


async def get_job(request: web.Request) -> web.Response:
    server = _server(request)
    wait_s = _wait_s(_query(request, {"wait"}))
    job_id = _path_id(request, "job")
    job = await (server.wait_for(job_id, wait_s) if wait_s else server.get_job(job_id))
    return json_response(job_to_dict(job))


async def list_jobs(request: web.Request) -> web.Response:
    query = _query(request, {"status", "queue", "task", "limit", "cursor"})
    limit, cursor = _page(query)
    status = None
    if "status" in query:
        try:
            status = JobState(query["status"])
        except ValueError:
            raise ValidationError(
                "status", f"must be one of {', '.join(s.value for s in JobState)}"
            ) from None
    flt = JobFilter(status=status, queue=query.get("queue"), task=query.get("task"))
    jobs, next_cursor = _page_of(await _server(request).list_jobs(flt, limit + 1, cursor), limit)
    return json_response({"items": [job_to_dict(j) for j in jobs], "next_cursor": next_cursor})


async def cancel_job(request: web.Request) -> web.Response:
    job = await _server(request).cancel(_path_id(request, "job"))
    return json_response(job_to_dict(job))


async def list_dead_letters(request: web.Request) -> web.Response:
    limit, cursor = _page(_query(request, {"limit", "cursor"}))
    fetched = await _server(request).list_dead_letters(limit + 1, cursor)
    items, next_cursor = _page_of(fetched, limit)
    return json_response(
        {"items": [dead_letter_to_dict(d) for d in items], "next_cursor": next_cursor}
    )


async def get_dead_letter(request: web.Request) -> web.Response:
    dl = await _server(request).get_dead_letter(_path_id(request, "dead letter"))
    return json_response(dead_letter_to_dict(dl))


async def requeue_dead_letter(request: web.Request) -> web.Response:
    job = await _server(request).requeue_dead_letter(_path_id(request, "dead letter"))
    return json_response(_accepted(request, job), status=202)


async def delete_dead_letter(request: web.Request) -> web.Response:
    await _server(request).delete_dead_letter(_path_id(request, "dead letter"))
    return web.Response(status=204)


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    await _server(request).check_ready()
    return json_response({"status": "ready"})


async def openapi_json(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document of this API (jobserver/openapi.py), built once per app."""
    return web.Response(body=request.app[OPENAPI_KEY], content_type="application/json")


# Ids are ASCII digits, so that /jobs/batch is never a job id (GET /jobs/batch is 405, not 404).
ID = "{id:[0-9]+}"
ROUTES: list[tuple[str, str, Handler, str]] = [
    ("POST", "/jobs", post_job, "enqueue"),
    ("POST", "/jobs/batch", post_jobs_batch, "enqueue_batch"),
    ("GET", "/jobs", list_jobs, "list_jobs"),
    ("GET", f"/jobs/{ID}", get_job, "get_job"),
    ("POST", f"/jobs/{ID}/cancel", cancel_job, "cancel_job"),
    ("GET", "/dead-letters", list_dead_letters, "list_dead_letters"),
    ("GET", f"/dead-letters/{ID}", get_dead_letter, "get_dead_letter"),
    ("POST", f"/dead-letters/{ID}/requeue", requeue_dead_letter, "requeue_dead_letter"),
    ("DELETE", f"/dead-letters/{ID}", delete_dead_letter, "delete_dead_letter"),
    ("GET", "/healthz", healthz, "healthz"),
    ("GET", "/readyz", readyz, "readyz"),
    ("GET", "/openapi.json", openapi_json, "openapi"),
]


def create_app(server: JobServer) -> web.Application:
    app = web.Application(middlewares=[error_middleware])
    app[SERVER_KEY] = server
    from .openapi import build_spec  # openapi.py reads this module's limits

    app[OPENAPI_KEY] = codec.dumps(build_spec(tasks=server.registry.names()))
    for method, path, handler, name in ROUTES:
        app.router.add_route(method, path, handler, name=name)
    return app
