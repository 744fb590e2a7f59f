"""One error shape for every failure, `{"error": {"code", "message", "field"}}`, and the
middleware that maps the core's errors (jobserver/errors.py) to statuses."""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .. import codec
from ..errors import Conflict, NotFound, QueueFull, StorageUnavailable, ValidationError
from ..job_options import WIRE_NAMES
from .context import Handler

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


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


class RequestError(Exception):
    """An HTTP-level refusal (400, 413, 415) raised while reading a request."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}


# Words of a ValidationError's field and message that are Python names of job options the API
# spells otherwise (quoted text, a client's own value, is left as it is).
_PYTHON_NAMES = re.compile(r"'[^']*'|\b(" + "|".join(map(re.escape, WIRE_NAMES)) + r")\b")


def _api_name(match: re.Match[str]) -> str:
    name = match.group(1)
    return match.group(0) if name is None else WIRE_NAMES[name]


def in_api_names(exc: ValidationError) -> ValidationError:
    """The core's error about a job option (named as in Python) as the API names it."""
    field = None if exc.field is None else _PYTHON_NAMES.sub(_api_name, exc.field)
    return ValidationError(field, _PYTHON_NAMES.sub(_api_name, exc.message))


access_log = logging.getLogger("jobserver.access")


def log_access(method: str, path: str, status: int, started: float, client: str) -> None:
    """One line a request (with `--access-log on`); JSON lines carry each part as a field."""
    ms = (time.monotonic() - started) * 1000
    access_log.info(
        '%s "%s %s" %d %.1fms',
        client,
        method,
        path,
        status,
        ms,
        extra={"method": method, "path": path, "status": status, "ms": round(ms, 2),
               "client": client},
    )  # fmt: skip


@web.middleware
async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.monotonic()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        log_access(request.method, request.path_qs, status, started, request.remote or "?")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ValidationError as exc:
        exc = in_api_names(exc)
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
