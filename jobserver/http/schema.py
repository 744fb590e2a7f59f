"""Requests as the HTTP API reads them: the limits on each field (also what openapi.py
publishes), body and query parsing, and the field-precise 422s for bad input."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web

from .. import codec
from ..errors import NotFound, ValidationError
from ..job_options import (
    BACKOFF_BY_WIRE,
    BY_WIRE,
    MAX_KEY_LEN,
    QUEUE_NAME,
    SCHEDULE_JOB_FIELDS,
    Option,
)
from ..models import (
    DeadLetter,
    Job,
)
from ..tracing import TRACEPARENT
from .context import SERVER_KEY
from .errors import RequestError

if TYPE_CHECKING:
    from ..server import JobServer


T = TypeVar("T", Job, DeadLetter)


MAX_NESTING = 32


BODY_TOO_SLOW = "the body was sent too slowly"


MAX_PAGE = 1000


DEFAULT_PAGE = 50


DECIMAL = re.compile(r"-?[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?")


MAX_WAIT_S = 60.0


MAX_BATCH = 10_000


MAX_ITEM_ERRORS = 100


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
    inexact = field_with_inexact_integer(raw)
    if inexact is not None:
        raise ValidationError(
            inexact,
            "holds an integer outside -2^63 to 2^64-1, which would not be kept exactly;"
            " send it as a string",
        )
    return body


_LONG_DIGITS = re.compile(rb"[0-9]{19,}")  # -2^63 has 19 digits: anything shorter is exact
_EXACT_INTS = range(-(2**63), 2**64)


def field_with_inexact_integer(raw: bytes) -> str | None:
    """The top-level field of a JSON object body that holds an integer the JSON reader turns
    into a float (it keeps -2^63 to 2^64-1 exact); None if there is none. The usual body,
    with no run of 19 digits, is not read twice."""
    if _LONG_DIGITS.search(raw) is None:
        return None
    exact = json.loads(raw)  # Python's reader keeps every integer exactly
    for name, value in exact.items():
        todo = [value]
        while todo:
            item = todo.pop()
            if isinstance(item, bool):
                continue
            if isinstance(item, int) and item not in _EXACT_INTS:
                return str(name)
            if isinstance(item, dict):
                todo.extend(item.values())
            elif isinstance(item, list):
                todo.extend(item)
    return None


def nests_too_deep(raw: bytes, body: Any) -> bool:
    # A body with fewer brackets than the limit cannot nest past it: the usual small body
    # is not walked.
    if raw.count(b"[") + raw.count(b"{") <= MAX_NESTING:
        return False
    return codec.nesting_depth(body, MAX_NESTING + 1) > MAX_NESTING


def _string(body: dict[str, Any], name: str, max_len: int) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(name, "must be a string")
    if not 1 <= len(value) <= max_len:
        raise ValidationError(name, f"must be 1 to {max_len} characters")
    return value


def _is_utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def read_fields(body: dict[str, Any], declared: Mapping[str, Option]) -> dict[str, Any]:
    """A body's fields under their Python names (the table's); unknown ones refused, nulls
    left out (refused where the field may not be null), times text only (JSON has no time
    type; Python may also give epoch seconds). The core checks the values."""
    fields: dict[str, Any] = {}
    for wire, value in body.items():
        option = declared.get(wire)
        if option is None:
            raise ValidationError(wire, "unknown field")
        if value is None:
            if not option.nullable:
                raise ValidationError(wire, option.expected)
            continue
        if option.kind == "time" and not isinstance(value, str):
            raise ValidationError(wire, "must be an RFC 3339 timestamp string")
        if option.kind == "backoff" and isinstance(value, dict):
            value = {(b.name if (b := BACKOFF_BY_WIRE.get(k)) else k): v for k, v in value.items()}
        fields[option.name] = value
    return fields


def parse_enqueue(
    body: dict[str, Any], header_key: str | None, traceparent: str | None = None
) -> dict[str, Any]:
    """A POST /jobs body as keyword arguments for JobServer.new_job: the API's names become
    Python's (job_options.OPTIONS). The values, RFC 3339 times included, are checked there,
    once; its errors reach the client in the API's names (errors.in_api_names).

    The `traceparent` header is the job's trace context unless the body gives one; a header
    that is not a valid one is ignored, as W3C trace context asks of a receiver."""
    options = {"task": None, **read_fields(body, BY_WIRE)}  # no task: new_job says so
    given = None if traceparent is None else traceparent.strip().lower()
    if given is not None and "traceparent" not in options and TRACEPARENT.fullmatch(given):
        options["traceparent"] = given
    if header_key is not None:
        if not 1 <= len(header_key) <= MAX_KEY_LEN:
            raise ValidationError("Idempotency-Key", f"must be 1 to {MAX_KEY_LEN} characters")
        if not _is_utf8(header_key):  # aiohttp keeps other bytes as lone surrogates
            raise ValidationError("Idempotency-Key", "must be UTF-8 text")
        key = options.get("idempotency_key")
        if key is not None and key != header_key:
            raise ValidationError("idempotency_key", "differs from the Idempotency-Key header")
        options["idempotency_key"] = header_key
    return options


def query_params(request: web.Request, allowed: set[str]) -> dict[str, str]:
    for name in request.query:
        if name not in allowed:
            raise ValidationError(name, "unknown query parameter")
    return {k: request.query[k] for k in allowed if k in request.query}


def is_digits(text: str) -> bool:
    """Only 0-9: str.isdigit() also takes digits int() cannot read, such as '²'."""
    return text.isascii() and text.isdigit()


def page_params(query: dict[str, str]) -> tuple[int, int | None]:
    limit = DEFAULT_PAGE
    if "limit" in query:
        if not is_digits(query["limit"]) or not 1 <= int(query["limit"]) <= MAX_PAGE:
            raise ValidationError("limit", f"must be an integer from 1 to {MAX_PAGE}")
        limit = int(query["limit"])
    cursor = None
    if "cursor" in query:
        text = query["cursor"]
        if not is_digits(text) or len(text) > 18:
            raise ValidationError("cursor", "is not a cursor this server gave out")
        cursor = int(text)
    return limit, cursor


def wait_param(query: dict[str, str]) -> float | None:
    if "wait" not in query:
        return None
    text = query["wait"]
    # a decimal number, as in JSON: float() alone also reads " 5", "1_0", "١٢" and "nan"
    wait = float(text) if DECIMAL.fullmatch(text) else -1.0
    if not 0 <= wait <= MAX_WAIT_S:
        raise ValidationError("wait", f"must be a number of seconds from 0 to {MAX_WAIT_S:g}")
    return wait


def path_id(request: web.Request, kind: str) -> int:
    text = request.match_info["id"]
    if not is_digits(text) or len(text) > 18:
        raise NotFound(f"no {kind} {text!r}")
    return int(text)


PAGE_CHUNK = 50  # rows read at a time while a page is under its byte bound


async def bounded_page(
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
                return page_response(encoded, str(last_id))
            encoded.append(body)
            size += len(body)
            last_id = item.id
        if len(rows) <= want:
            return page_response(encoded, None)  # nothing more
        if len(encoded) >= limit:
            return page_response(encoded, str(last_id))
        cursor = last_id


def page_response(encoded: list[bytes], next_cursor: str | None) -> web.Response:
    body = (
        b'{"items":[' + b",".join(encoded) + b'],"next_cursor":' + codec.dumps(next_cursor) + b"}"
    )
    return web.Response(body=body, content_type="application/json")


def queue_name_param(request: web.Request) -> str:
    name = request.match_info["name"]
    if not QUEUE_NAME.fullmatch(name):
        raise NotFound(f"no queue {name!r}")
    return name


def parse_schedule(body: dict[str, Any]) -> dict[str, Any]:
    """A POST /schedules body as keyword arguments for JobServer.save_schedule, which checks
    them (its fields and its job's have the same names in Python and over HTTP)."""
    job = parse_enqueue({k: v for k, v in body.items() if k in SCHEDULE_JOB_FIELDS}, None)
    return {
        **{k: v for k, v in body.items() if k not in SCHEDULE_JOB_FIELDS},
        **job,
        "name": body.get("name"),
        "cron": body.get("cron"),
    }


def parse_workflow_job(item: dict[str, Any]) -> dict[str, Any]:
    if "depends_on" in item or "pass_result" in item:
        raise ValidationError("depends_on", "a workflow sets its own dependencies")
    if "on_dependency_failure" in item:
        # post_workflow took the root's: a job elsewhere in the workflow would have it ignored
        raise ValidationError(
            "on_dependency_failure", "is the whole workflow's: give it beside the root node only"
        )
    return parse_enqueue(item, None)


def digits_param(value: str | None, field: str) -> int | None:
    if value is None:
        return None
    if not is_digits(value) or len(value) > 18:
        raise ValidationError(field, "must be a whole number")
    return int(value)
