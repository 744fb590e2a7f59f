"""The HTTP API: one route table, input validation, and one error shape for every failure:
`{"error": {"code": ..., "message": ..., "field": ...}}`."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web

from . import codec
from .auth import READ_METHODS, Access
from .dashboard import add_routes as add_dashboard_routes
from .errors import Conflict, NotFound, QueueFull, StorageUnavailable, ValidationError
from .events import Event, EventFilter, Gap, Ready
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .models import (
    DEPENDENCY_FAILURE_POLICIES,
    MISSED_TICK_POLICIES,
    DeadLetter,
    Job,
    JobState,
    NewJob,
    QueueInfo,
    Schedule,
)
from .render import (
    MAX_TS,
    MIN_TS,
    attempt_to_dict,
    dead_letter_to_dict,
    job_to_dict,
    rfc3339,
)
from .store.base import JobFilter, payload_fingerprint

if TYPE_CHECKING:
    from .server import JobServer

log = logging.getLogger(__name__)
T = TypeVar("T", Job, DeadLetter)

SERVER_KEY: web.AppKey[JobServer] = web.AppKey("jobserver")
OPENAPI_KEY: web.AppKey[bytes] = web.AppKey("openapi", bytes)
POLL_PREFIX_KEY: web.AppKey[dict[str, str]] = web.AppKey("poll_prefix", dict)
MAX_NESTING = 32
BODY_TOO_SLOW = "the body was sent too slowly"
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
        "deadline",
        "deadline_in",
        "unique_key",
        "depends_on",
        "pass_result",
        "on_dependency_failure",
        "callback_url",
    }
)
MAX_DEPENDENCIES = 1000
MAX_URL_LEN = 2000
SCHEDULE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,99}")
SCHEDULE_FIELDS = frozenset(
    {"name", "task", "cron", "args", "kwargs", "queue", "priority", "timezone", "missed", "paused"}
)
QUEUE_FIELDS = ("paused", "concurrency_limit", "rate_limit", "rate_burst", "max_depth")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=codec.dumps(data), status=status, content_type="application/json", headers=headers
    )


def error_body(code: str, message: str, field: str | None) -> bytes:
    return codec.dumps({"error": {"code": code, "message": message, "field": field}})


def error_response(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    return web.Response(
        body=error_body(code, message, field),
        status=status,
        content_type="application/json",
        headers=headers,
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


OPEN_ROUTES = frozenset({"healthz", "dashboard", "dashboard_static"})


def _local_address(request: web.Request) -> str | None:
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    return str(sockname[0]).lower() if isinstance(sockname, tuple) and sockname else None


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """With tokens configured, every route but /healthz and the page itself needs
    `Authorization: Bearer <token>`; a read-only token may only read."""
    server = request.app[SERVER_KEY]
    auth = server.auth
    if not auth.enabled:
        if not auth.host_allowed(request.headers.get("Host"), _local_address(request)):
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
    return await handler(request)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ValidationError as exc:
        return error_response(422, "invalid", exc.message, exc.field)
    except RequestError as exc:
        response = error_response(exc.status, exc.code, exc.message, exc.field)
        if exc.status in (408, 413):  # the rest of the body is not read: end the connection
            response.force_close()
        return response
    except NotFound as exc:
        return error_response(404, "not_found", str(exc))
    except Conflict as exc:
        return error_response(409, "conflict", str(exc))
    except QueueFull as exc:
        return error_response(
            429, "queue_full", str(exc), "queue", headers={"Retry-After": str(exc.retry_after_s)}
        )
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


def _too_large(max_bytes: int) -> RequestError:
    return RequestError(413, "too_large", f"the body is over the limit of {max_bytes} bytes")


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `max_bytes` (never buffered past)."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise _too_large(max_bytes)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json_object(request: web.Request, max_bytes: int) -> dict[str, Any]:
    if request.content.is_eof():  # the whole body is in already: nothing to time out
        return await _read_json_object(request, max_bytes)
    try:
        async with asyncio.timeout(request.app[SERVER_KEY].body_timeout_s):
            return await _read_json_object(request, max_bytes)
    except TimeoutError:
        raise RequestError(408, "timeout", BODY_TOO_SLOW, "body") from None


async def _read_json_object(request: web.Request, max_bytes: int) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise RequestError(
            415, "unsupported_media_type", "send the body as application/json", "Content-Type"
        )
    content = request.content
    try:
        if content.is_eof() and (request.content_length or 0) <= max_bytes:
            raw = content.read_nowait(-1)  # all in already (the usual small body): no loop
            if len(raw) > max_bytes:
                raise _too_large(max_bytes)
        else:
            raw = await read_body(request, max_bytes)
    except web.RequestPayloadError as exc:
        # aiohttp could not decode the body as its Content-Encoding says (gzip that is not
        # gzip, a cut-off chunk): the request's fault, not the server's.
        raise RequestError(
            400,
            "bad_body",
            f"the body could not be decoded as its Content-Encoding says ({type(exc).__name__})",
            "Content-Encoding",
        ) from None
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
    if nests_too_deep(raw, body):
        raise ValidationError("body", f"JSON nests deeper than {MAX_NESTING} levels")
    return body


def nests_too_deep(raw: bytes, body: Any) -> bool:
    # A body with fewer brackets than the limit cannot nest past it: the usual small body
    # is not walked.
    if raw.count(b"[") + raw.count(b"{") <= MAX_NESTING:
        return False
    return codec.nesting_depth(body, MAX_NESTING + 1) > MAX_NESTING


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
    deadline = (
        parse_rfc3339("deadline", body["deadline"]) if body.get("deadline") is not None else None
    )
    deadline_in = _number(body, "deadline_in", 0.0, MAX_DELAY_S, open_lo=True)
    if deadline is not None and deadline_in is not None:
        raise ValidationError("deadline", "give deadline or deadline_in, not both")
    depends_on = body.get("depends_on", [])
    if not isinstance(depends_on, list) or len(depends_on) > MAX_DEPENDENCIES:
        raise ValidationError(
            "depends_on", f"must be an array of at most {MAX_DEPENDENCIES} job ids"
        )
    depends_on = [_int({"depends_on": d}, "depends_on", 1, 10**18 - 1) for d in depends_on]
    pass_result = body.get("pass_result", False)
    if not isinstance(pass_result, bool):
        raise ValidationError("pass_result", "must be true or false")
    policy = body.get("on_dependency_failure", "fail")
    if policy not in DEPENDENCY_FAILURE_POLICIES:
        raise ValidationError(
            "on_dependency_failure", f"must be one of {', '.join(DEPENDENCY_FAILURE_POLICIES)}"
        )
    extra: dict[str, Any] = {}
    if deadline is not None or deadline_in is not None:
        extra["deadline"] = deadline
        extra["deadline_s"] = deadline_in
    if depends_on:
        extra["depends_on"] = depends_on
        extra["pass_result"] = pass_result
        extra["on_dependency_failure"] = policy
    unique_key = _string(body, "unique_key", MAX_KEY_LEN)
    if unique_key is not None:
        extra["unique_key"] = unique_key
    callback_url = _string(body, "callback_url", MAX_URL_LEN)
    if callback_url is not None:
        extra["callback_url"] = callback_url
    return {
        **extra,
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


PAGE_CHUNK = 50  # rows read at a time while a page is under its byte bound


async def _bounded_page(
    fetch: Callable[[int, int | None], Awaitable[Sequence[Any]]],
    limit: int,
    cursor: int | None,
    render: Callable[[Any], dict[str, Any]],
    server: JobServer,
) -> web.Response:
    """A page of up to `limit` items, newest first, that also ends once it holds
    `server.max_page_bytes` (always one item at least, so paging moves on); `next_cursor`
    is set when more remain. Rows are read PAGE_CHUNK at a time and each item encoded once,
    so a page of big jobs holds no more than a chunk of them in memory besides the page."""
    encoded: list[bytes] = []
    size = 0
    last_id: int | None = None
    while True:
        want = min(limit - len(encoded), PAGE_CHUNK)
        rows = await fetch(want + 1, cursor)
        for item in rows[:want]:
            body = codec.dumps(render(item))
            if encoded and size + len(body) > server.max_page_bytes:
                return _page_response(encoded, str(last_id))
            encoded.append(body)
            size += len(body)
            last_id = item.id
        if len(rows) <= want:
            return _page_response(encoded, None)  # nothing more
        if len(encoded) >= limit:
            return _page_response(encoded, str(last_id))
        cursor = last_id


def _page_response(encoded: list[bytes], next_cursor: str | None) -> web.Response:
    body = (
        b'{"items":[' + b",".join(encoded) + b'],"next_cursor":' + codec.dumps(next_cursor) + b"}"
    )
    return web.Response(body=body, content_type="application/json")


# -- handlers -------------------------------------------------------------------------------------
def _server(request: web.Request) -> JobServer:
    return request.app[SERVER_KEY]


def poll_prefix(app: web.Application) -> str:
    """Where a job is polled, but its id: `/jobs/`, behind the prefix the app is mounted at."""
    # url_for builds a URL object each call; the path differs only in the id, so the app
    # keeps its prefix (known once the app is mounted, where it may gain a path prefix).
    cache = app[POLL_PREFIX_KEY]
    prefix = cache.get("prefix")
    if prefix is None:
        prefix = cache["prefix"] = str(app.router["get_job"].url_for(id="0"))[:-1]
    return prefix


def accepted(job: Job, prefix: str) -> dict[str, Any]:
    """The reply to an enqueue (also fast_enqueue.py's)."""
    return {"id": job.id, "status": job.status.value, "poll_url": f"{prefix}{job.id}"}


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
    return json_response(
        accepted(job, poll_prefix(request.app)), status=202 if enqueued.created else 200
    )


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
    keys: dict[str, tuple[int, str]] = {}  # idempotency key -> (first index, payload digest)
    for index, item in enumerate(items):
        try:
            if not isinstance(item, dict):
                raise ValidationError(None, "must be a JSON object")
            new = server.new_job(**parse_enqueue(item, None))
            key = new.idempotency_key
            if key is not None:
                seen_at, digest = keys.setdefault(key, (index, payload_fingerprint(new)))
                if seen_at != index and digest != payload_fingerprint(new):
                    raise ValidationError(
                        "idempotency_key", f"repeats item {seen_at}'s key with another payload"
                    )
            new_jobs.append(new)
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
    return json_response(
        {"ids": [r.job.id for r in results], "created": [r.created for r in results]}, status=202
    )


async def get_job(request: web.Request) -> web.Response:
    server = _server(request)
    wait_s = _wait_s(_query(request, {"wait"}))
    job_id = _path_id(request, "job")
    job = await (server.wait_for(job_id, wait_s) if wait_s else server.get_job(job_id))
    body = job_to_dict(job)
    if job.status == JobState.PENDING:
        reason = await server.why_waiting(job)
        if reason is not None and "until" in reason:
            reason = {**reason, "until": rfc3339(reason["until"])}
        body["waiting"] = reason
    return json_response(body)


async def delete_job(request: web.Request) -> web.Response:
    await _server(request).delete_job(_path_id(request, "job"))
    return web.Response(status=204)


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
    server = _server(request)
    return await _bounded_page(
        lambda n, before: server.list_jobs(flt, n, before), limit, cursor, job_to_dict, server
    )


async def list_attempts(request: web.Request) -> web.Response:
    job_id = _path_id(request, "job")
    attempts = await _server(request).list_attempts(job_id)
    return json_response({"job_id": job_id, "items": [attempt_to_dict(a) for a in attempts]})


async def cancel_job(request: web.Request) -> web.Response:
    job = await _server(request).cancel(_path_id(request, "job"))
    return json_response(job_to_dict(job))


async def list_dead_letters(request: web.Request) -> web.Response:
    limit, cursor = _page(_query(request, {"limit", "cursor"}))
    server = _server(request)
    return await _bounded_page(server.list_dead_letters, limit, cursor, dead_letter_to_dict, server)


async def get_dead_letter(request: web.Request) -> web.Response:
    dl = await _server(request).get_dead_letter(_path_id(request, "dead letter"))
    return json_response(dead_letter_to_dict(dl))


async def requeue_dead_letter(request: web.Request) -> web.Response:
    job = await _server(request).requeue_dead_letter(_path_id(request, "dead letter"))
    return json_response(accepted(job, poll_prefix(request.app)), status=202)


async def delete_dead_letter(request: web.Request) -> web.Response:
    await _server(request).delete_dead_letter(_path_id(request, "dead letter"))
    return web.Response(status=204)


# -- queues ---------------------------------------------------------------------------------------
def queue_to_dict(info: QueueInfo) -> dict[str, Any]:
    st = info.settings
    return {
        "name": info.name,
        "paused": st.paused,
        "counts": info.counts,
        "oldest_due_age_s": info.oldest_due_age_s,
        "limits": {
            "concurrency_limit": st.concurrency_limit,
            "rate_limit": st.rate_limit,
            "rate_burst": st.rate_burst,
            "max_depth": st.max_depth,
        },
        "rate_tokens": info.rate_tokens,
    }


def _queue_name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not QUEUE_NAME.fullmatch(name):
        raise NotFound(f"no queue {name!r}")
    return name


async def list_queues(request: web.Request) -> web.Response:
    _query(request, set())
    queues = await _server(request).list_queues()
    return json_response({"items": [queue_to_dict(q) for q in queues]})


async def get_queue(request: web.Request) -> web.Response:
    return json_response(queue_to_dict(await _server(request).get_queue(_queue_name(request))))


def parse_queue_settings(body: dict[str, Any]) -> dict[str, Any]:
    """PATCH /queues/{name}: each limit a positive number, or null to lift it."""
    unknown = set(body) - set(QUEUE_FIELDS)
    if unknown:
        raise ValidationError(sorted(unknown)[0], "unknown field")
    changes: dict[str, Any] = {}
    if "paused" in body:
        if not isinstance(body["paused"], bool):
            raise ValidationError("paused", "must be true or false")
        changes["paused"] = body["paused"]
    for name, lo, hi, whole in (
        ("concurrency_limit", 1, 1_000_000, True),
        ("max_depth", 1, 10**12, True),
        ("rate_limit", 0.0, 1_000_000.0, False),
        ("rate_burst", 1.0, 1_000_000.0, False),
    ):
        if name not in body:
            continue
        if body[name] is None:
            changes[name] = None
        elif whole:
            changes[name] = _int(body, name, int(lo), int(hi))
        else:
            changes[name] = _number(body, name, lo, hi, open_lo=name == "rate_limit")
    return changes


async def patch_queue(request: web.Request) -> web.Response:
    server = _server(request)
    name = _queue_name(request)
    changes = parse_queue_settings(await read_json_object(request, server.max_body_bytes))
    return json_response(queue_to_dict(await server.configure_queue(name, **changes)))


async def pause_queue(request: web.Request) -> web.Response:
    info = await _server(request).configure_queue(_queue_name(request), paused=True)
    return json_response(queue_to_dict(info))


async def resume_queue(request: web.Request) -> web.Response:
    info = await _server(request).configure_queue(_queue_name(request), paused=False)
    return json_response(queue_to_dict(info))


# -- schedules ------------------------------------------------------------------------------------
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


def parse_schedule(body: dict[str, Any]) -> dict[str, Any]:
    unknown = set(body) - SCHEDULE_FIELDS
    if unknown:
        raise ValidationError(sorted(unknown)[0], "unknown field")
    name = body.get("name")
    if not isinstance(name, str) or not SCHEDULE_NAME.fullmatch(name) or name.startswith("task:"):
        raise ValidationError(
            "name", "must be 1-100 of A-Z a-z 0-9 _ . : - starting alphanumeric (not task:...)"
        )
    job = parse_enqueue(
        {k: body[k] for k in ("task", "args", "kwargs", "queue", "priority") if k in body}, None
    )
    cron = _string(body, "cron", 200)
    if cron is None:
        raise ValidationError("cron", "is required")
    timezone = _string(body, "timezone", 100) or "UTC"
    missed = body.get("missed", "skip")
    if missed not in MISSED_TICK_POLICIES:
        raise ValidationError("missed", f"must be one of {', '.join(MISSED_TICK_POLICIES)}")
    paused = body.get("paused", False)
    if not isinstance(paused, bool):
        raise ValidationError("paused", "must be true or false")
    return {
        "name": name,
        "task": job["task"],
        "cron": cron,
        "args": job["args"],
        "kwargs": job["kwargs"],
        "queue": job["queue"],
        "priority": job["priority"],
        "timezone": timezone,
        "missed": missed,
        "paused": paused,
    }


async def post_schedule(request: web.Request) -> web.Response:
    server = _server(request)
    fields = parse_schedule(await read_json_object(request, server.max_body_bytes))
    return json_response(schedule_to_dict(await server.save_schedule(**fields)), status=201)


async def list_schedules(request: web.Request) -> web.Response:
    _query(request, set())
    schedules = await _server(request).list_schedules()
    return json_response({"items": [schedule_to_dict(s) for s in schedules]})


async def get_schedule(request: web.Request) -> web.Response:
    schedule = await _server(request).get_schedule(request.match_info["name"])
    return json_response(schedule_to_dict(schedule))


async def delete_schedule(request: web.Request) -> web.Response:
    await _server(request).delete_schedule(request.match_info["name"])
    return web.Response(status=204)


# -- workflows ------------------------------------------------------------------------------------
async def post_workflow(request: web.Request) -> web.Response:
    server = _server(request)
    body = await read_json_object(request, server.max_batch_body_bytes)
    policy = body.pop("on_dependency_failure", "fail")
    if policy not in DEPENDENCY_FAILURE_POLICIES:
        raise ValidationError(
            "on_dependency_failure", f"must be one of {', '.join(DEPENDENCY_FAILURE_POLICIES)}"
        )
    workflow_id, jobs = await server.enqueue_workflow(
        body, parse_job=_parse_workflow_job, on_dependency_failure=policy
    )
    return json_response(
        {
            "id": workflow_id,
            "jobs": [j.id for j in jobs],
            "poll_url": str(request.app.router["get_workflow"].url_for(id=str(workflow_id))),
        },
        status=202,
    )


def _parse_workflow_job(item: dict[str, Any]) -> dict[str, Any]:
    if "depends_on" in item or "pass_result" in item:
        raise ValidationError("depends_on", "a workflow sets its own dependencies")
    if "on_dependency_failure" in item:
        # post_workflow took the root's: a job elsewhere in the workflow would have it ignored
        raise ValidationError(
            "on_dependency_failure", "is the whole workflow's: give it beside the root node only"
        )
    return parse_enqueue(item, None)


async def get_workflow(request: web.Request) -> web.Response:
    status, jobs = await _server(request).get_workflow(_path_id(request, "workflow"))
    return json_response(
        {
            "id": int(request.match_info["id"]),
            "status": status,
            "jobs": [job_to_dict(j) for j in jobs],
        }
    )


# -- event stream ---------------------------------------------------------------------------------
EVENT_IDLE_S = 15.0


def _digits_param(value: str | None, field: str) -> int | None:
    if value is None:
        return None
    if not _is_digits(value) or len(value) > 18:
        raise ValidationError(field, "must be a whole number")
    return int(value)


async def stream_events(request: web.Request) -> web.StreamResponse:
    """Job transitions as Server-Sent Events; `Last-Event-ID` (or last_event_id) resumes."""
    query = _query(request, {"queue", "task", "job_id", "last_event_id"})
    flt = EventFilter(
        queue=query.get("queue"),
        task=query.get("task"),
        job_id=_digits_param(query.get("job_id"), "job_id"),
    )
    header = request.headers.get("Last-Event-ID")
    last_id = _digits_param(header, "Last-Event-ID") if header else None
    if "last_event_id" in query:
        last_id = _digits_param(query["last_event_id"], "last_event_id")
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    try:
        async for item in _server(request).events.stream(flt, last_id, EVENT_IDLE_S):
            if item is Ready:  # subscribed: what commits from now on will be sent
                chunk = b": connected\n\n"
            elif item is None:
                chunk = b": keep-alive\n\n"
            elif item is Gap:
                chunk = b'event: gap\ndata: {"message": "some events were missed"}\n\n'
            else:
                assert isinstance(item, Event)
                data = codec.dumps({"id": item.id, **item.data()})
                chunk = b"id: %d\nevent: job\ndata: %s\n\n" % (item.id, data)
            await response.write(chunk)
    except ConnectionResetError:
        pass  # the client went away
    return response


# -- operations -----------------------------------------------------------------------------------
async def metrics(request: web.Request) -> web.Response:
    body = await _server(request).render_metrics()
    return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})


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
    ("DELETE", f"/jobs/{ID}", delete_job, "delete_job"),
    ("POST", f"/jobs/{ID}/cancel", cancel_job, "cancel_job"),
    ("GET", f"/jobs/{ID}/attempts", list_attempts, "list_attempts"),
    ("GET", "/dead-letters", list_dead_letters, "list_dead_letters"),
    ("GET", f"/dead-letters/{ID}", get_dead_letter, "get_dead_letter"),
    ("POST", f"/dead-letters/{ID}/requeue", requeue_dead_letter, "requeue_dead_letter"),
    ("DELETE", f"/dead-letters/{ID}", delete_dead_letter, "delete_dead_letter"),
    ("GET", "/queues", list_queues, "list_queues"),
    ("GET", "/queues/{name}", get_queue, "get_queue"),
    ("PATCH", "/queues/{name}", patch_queue, "configure_queue"),
    ("POST", "/queues/{name}/pause", pause_queue, "pause_queue"),
    ("POST", "/queues/{name}/resume", resume_queue, "resume_queue"),
    ("POST", "/schedules", post_schedule, "create_schedule"),
    ("GET", "/schedules", list_schedules, "list_schedules"),
    ("GET", "/schedules/{name}", get_schedule, "get_schedule"),
    ("DELETE", "/schedules/{name}", delete_schedule, "delete_schedule"),
    ("POST", "/workflows", post_workflow, "create_workflow"),
    ("GET", f"/workflows/{ID}", get_workflow, "get_workflow"),
    ("GET", "/events", stream_events, "events"),
    ("GET", "/metrics", metrics, "metrics"),
    ("GET", "/healthz", healthz, "healthz"),
    ("GET", "/readyz", readyz, "readyz"),
    ("GET", "/openapi.json", openapi_json, "openapi"),
]


def create_app(server: JobServer) -> web.Application:
    app = web.Application(middlewares=[error_middleware, auth_middleware])
    app[SERVER_KEY] = server
    app[POLL_PREFIX_KEY] = {}
    from .openapi import build_spec  # openapi.py reads this module's limits

    app[OPENAPI_KEY] = codec.dumps(build_spec(tasks=server.registry.names()))
    for method, path, handler, name in ROUTES:
        app.router.add_route(method, path, handler, name=name)
    add_dashboard_routes(app)
    return app
