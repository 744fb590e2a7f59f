"""A client for jobserver's HTTP API: `AsyncClient` (aiohttp) and `Client` (the standard library).

    async with AsyncClient("http://127.0.0.1:8000") as jobs:
        ref = await jobs.enqueue("send_email", ["a@example.com"], priority=5)
        job = await jobs.wait(ref.id, timeout_s=30)     # long-polls until the job is terminal
        print(job.status, job.result)

    with Client("http://127.0.0.1:8000") as jobs:     # the same methods, blocking
        job = jobs.wait(jobs.enqueue("echo", ["hi"]).id)

Both clients share one implementation: every method is written once as a generator that yields
the HTTP calls it needs and gets their answers back (`_Op`); each client only knows how to send
a call. Errors from the API raise `ApiError` subclasses, network failures `ConnectionFailed`.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Generic, TypeVar, cast

import aiohttp

from .models import TERMINAL_STATES, Backoff, JobState

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "DEFAULT_URL",
    "MAX_WAIT_S",
    "ApiError",
    "AsyncClient",
    "AuthError",
    "Client",
    "ClientError",
    "ConflictError",
    "ConnectionFailed",
    "DeadLetterInfo",
    "InvalidRequest",
    "JobError",
    "JobInfo",
    "JobRef",
    "NotFoundError",
    "Page",
    "Progress",
    "Unavailable",
    "UnexpectedResponse",
]

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT_S = 30.0
MAX_WAIT_S = 60.0  # the longest long-poll the server accepts (GET /jobs/{id}?wait=S)
USER_AGENT = "jobserver-client/0.1"

T = TypeVar("T")


# -- errors ---------------------------------------------------------------------------------------
class ClientError(Exception):
    """Base of every error the client raises."""


class ConnectionFailed(ClientError):
    """No answer from the server: refused, reset, timed out, or an unreadable response."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"the server at {url} is not reachable: {reason}")
        self.url = url
        self.reason = reason


class UnexpectedResponse(ClientError):
    """The server answered with something the API does not document (not jobserver?)."""


class ApiError(ClientError):
    """The API refused the request: `{"error": {"code", "message", "field"}}` and its status."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        *,
        body: Mapping[str, Any] | None = None,
    ) -> None:
        text = f"{code}: {message}" + (f" (field: {field})" if field else "")
        super().__init__(text)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.body: Mapping[str, Any] = body or {}


class InvalidRequest(ApiError):
    """400, 413, 415 or 422: the request itself is wrong; `field` names what, when known.

    For a batch, `items` lists each invalid job: `{"index", "field", "message"}`."""

    @property
    def items(self) -> list[dict[str, Any]]:
        items = self.body.get("items")
        return list(items) if isinstance(items, list) else []


class NotFoundError(ApiError):
    """404: no such job or dead letter (or route: check the URL's path prefix)."""


class ConflictError(ApiError):
    """409: e.g. cancelling a finished job, or an idempotency key reused for another payload."""


class AuthError(ApiError):
    """401 or 403: the token is missing, wrong, or not allowed to do this."""


class Unavailable(ApiError):
    """503: the database cannot take writes now; try again after `retry_after_s`."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        *,
        body: Mapping[str, Any] | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(status, code, message, field, body=body)
        self.retry_after_s = retry_after_s


_ERRORS: dict[int, type[ApiError]] = {
    400: InvalidRequest,
    401: AuthError,
    403: AuthError,
    404: NotFoundError,
    409: ConflictError,
    413: InvalidRequest,
    415: InvalidRequest,
    422: InvalidRequest,
}


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def _api_error(status: int, raw: bytes, retry_after: str | None) -> ApiError:
    """The exception for an error response, from its standard error body when it has one."""
    body: dict[str, Any] = {}
    try:
        data = json.loads(raw) if raw else None
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        body = data["error"]
    code = str(body.get("code") or "http_error")
    message = str(body.get("message") or raw.decode("utf-8", "replace").strip()[:200])
    if not message:
        message = f"HTTP {status}"
    field = body.get("field")
    field = None if field is None else str(field)
    if status == 503:
        return Unavailable(
            status, code, message, field, body=body, retry_after_s=_retry_after(retry_after)
        )
    return _ERRORS.get(status, ApiError)(status, code, message, field, body=body)


# -- results --------------------------------------------------------------------------------------
def _time(value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"expected an RFC 3339 string, got {value!r}")
    return datetime.fromisoformat(value)


def _required_time(value: Any) -> datetime:
    when = _time(value)
    if when is None:
        raise TypeError("expected an RFC 3339 string, got null")
    return when


def _render_time(when: datetime | None) -> str | None:
    """As the API writes times: UTC, milliseconds, `Z`."""
    if when is None:
        return None
    text = when.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Progress:
    """What a running task last reported: `fraction` in [0, 1] and an optional message."""

    fraction: float
    message: str | None = None


@dataclass(frozen=True, slots=True)
class JobError:
    """The last failed attempt's error (tracebacks stay in the server's log)."""

    type: str | None
    message: str | None

    @classmethod
    def from_dict(cls, data: Any) -> JobError | None:
        if data is None:
            return None
        return cls(type=data.get("type"), message=data.get("message"))

    def __str__(self) -> str:
        return f"{self.type}: {self.message}" if self.message else str(self.type)


@dataclass(frozen=True, slots=True)
class JobRef:
    """What enqueueing returns. `created` is False when an idempotency key matched an earlier
    job, which is returned instead (nothing new was enqueued)."""

    id: int
    status: JobState
    poll_url: str
    created: bool = True


@dataclass(frozen=True, slots=True)
class JobInfo:
    """A job as the API shows it (GET /jobs/{id})."""

    id: int
    task: str
    queue: str
    status: JobState
    priority: int
    args: list[Any]
    kwargs: dict[str, Any]
    attempts: int
    max_retries: int
    timeout_s: float | None
    created_at: datetime
    run_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    result: Any
    error: JobError | None
    progress: Progress | None
    cancel_requested: bool
    deadline: datetime | None = None
    unique_key: str | None = None
    depends_on: tuple[int, ...] = ()
    workflow_id: int | None = None
    callback_url: str | None = None
    waiting: dict[str, Any] | None = None  # for a pending job: why it has not started

    @property
    def is_terminal(self) -> bool:
        """Succeeded, failed or cancelled: the job will not change any more."""
        return self.status in TERMINAL_STATES

    @property
    def succeeded(self) -> bool:
        return self.status == JobState.SUCCEEDED

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobInfo:
        progress = data.get("progress")
        return cls(
            id=int(data["id"]),
            task=str(data["task"]),
            queue=str(data["queue"]),
            status=JobState(data["status"]),
            priority=int(data["priority"]),
            args=list(data["args"]),
            kwargs=dict(data["kwargs"]),
            attempts=int(data["attempts"]),
            max_retries=int(data["max_retries"]),
            timeout_s=None if data.get("timeout") is None else float(data["timeout"]),
            created_at=_required_time(data["created_at"]),
            run_at=_required_time(data["run_at"]),
            started_at=_time(data.get("started_at")),
            completed_at=_time(data.get("completed_at")),
            result=data.get("result"),
            error=JobError.from_dict(data.get("error")),
            progress=None
            if progress is None
            else Progress(float(progress["fraction"]), progress.get("message")),
            cancel_requested=bool(data.get("cancel_requested", False)),
            deadline=_time(data.get("deadline")),
            unique_key=data.get("unique_key"),
            depends_on=tuple(int(d) for d in data.get("depends_on") or ()),
            workflow_id=data.get("workflow_id"),
            callback_url=data.get("callback_url"),
            waiting=data.get("waiting"),
        )

    def to_dict(self) -> dict[str, Any]:
        """The job in the API's JSON shape (as GET /jobs/{id} returns it)."""
        return {
            "id": self.id,
            "task": self.task,
            "queue": self.queue,
            "status": self.status.value,
            "priority": self.priority,
            "args": self.args,
            "kwargs": self.kwargs,
            "attempts": self.attempts,
            "max_retries": self.max_retries,
            "timeout": self.timeout_s,
            "created_at": _render_time(self.created_at),
            "run_at": _render_time(self.run_at),
            "started_at": _render_time(self.started_at),
            "completed_at": _render_time(self.completed_at),
            "result": self.result,
            "error": None
            if self.error is None
            else {"type": self.error.type, "message": self.error.message},
            "progress": None
            if self.progress is None
            else {"fraction": self.progress.fraction, "message": self.progress.message},
            "cancel_requested": self.cancel_requested,
            "is_terminal": self.is_terminal,
            "deadline": _render_time(self.deadline),
            "unique_key": self.unique_key,
            "depends_on": list(self.depends_on),
            "workflow_id": self.workflow_id,
            "callback_url": self.callback_url,
            **({"waiting": self.waiting} if self.status == JobState.PENDING else {}),
        }


@dataclass(frozen=True, slots=True)
class DeadLetterInfo:
    """A job that failed for good, as GET /dead-letters/{id} shows it."""

    id: int
    job_id: int
    task: str
    queue: str
    args: list[Any]
    kwargs: dict[str, Any]
    error: JobError | None
    attempts: int
    failed_at: datetime

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeadLetterInfo:
        return cls(
            id=int(data["id"]),
            job_id=int(data["job_id"]),
            task=str(data["task"]),
            queue=str(data["queue"]),
            args=list(data["args"]),
            kwargs=dict(data["kwargs"]),
            error=JobError.from_dict(data.get("error")),
            attempts=int(data["attempts"]),
            failed_at=_required_time(data["failed_at"]),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "job_id": self.job_id,
            "task": self.task,
            "queue": self.queue,
            "args": self.args,
            "kwargs": self.kwargs,
            "error": None
            if self.error is None
            else {"type": self.error.type, "message": self.error.message},
            "attempts": self.attempts,
            "failed_at": _render_time(self.failed_at),
        }


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list, newest first; pass `next_cursor` as `cursor` for the next one
    (None: this was the last page)."""

    items: list[T]
    next_cursor: str | None


# -- requests, shared by both clients -------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Call:
    method: str
    path: str
    query: Mapping[str, str] | None = None
    body: Any = None
    wait_s: float = 0.0  # a long poll: allow this much longer for the answer


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    data: Any


# An operation: yields the calls it makes, is sent each reply (or thrown each ClientError).
_Op = Generator[_Call, _Reply, T]


def _job_id(value: int, what: str = "job id") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, got {value!r}")
    return value


def _job_body(
    task: str,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    queue: str | None = None,
    priority: int | None = None,
    delay_s: float | None = None,
    run_at: datetime | None = None,
    max_retries: int | None = None,
    timeout_s: float | None = None,
    backoff: Backoff | Mapping[str, float] | None = None,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    """A POST /jobs body; the server validates the values and names the field it refuses."""
    if isinstance(args, str | bytes):
        raise TypeError("args must be a sequence of arguments, not a string")
    body: dict[str, Any] = {"task": task, "args": list(args)}
    if kwargs:
        body["kwargs"] = dict(kwargs)
    if run_at is not None:
        if not isinstance(run_at, datetime):
            raise TypeError(f"run_at must be a datetime, got {run_at!r}")
        if run_at.tzinfo is None:
            raise ValueError("run_at must be timezone-aware (e.g. datetime.now(UTC))")
        body["run_at"] = run_at.isoformat()
    if isinstance(backoff, Backoff):
        body["backoff"] = {"base": backoff.base_s, "factor": backoff.factor, "cap": backoff.cap_s}
    elif backoff is not None:
        body["backoff"] = dict(backoff)
    options = {
        "queue": queue,
        "priority": priority,
        "delay": delay_s,
        "max_retries": max_retries,
        "timeout": timeout_s,
        "idempotency_key": idempotency_key,
    }
    body.update({k: v for k, v in options.items() if v is not None})
    return body


def _page_query(limit: int | None, cursor: str | None, **filters: str | None) -> dict[str, str]:
    query = {k: v for k, v in filters.items() if v is not None}
    if limit is not None:
        query["limit"] = str(limit)
    if cursor is not None:
        query["cursor"] = str(cursor)
    return query


def _parse(what: str, build: Any, data: Any) -> Any:
    try:
        return build(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UnexpectedResponse(f"cannot read the {what} in the response: {exc!r}") from None


def _job(data: Any) -> JobInfo:
    return cast(JobInfo, _parse("job", JobInfo.from_dict, data))


def _ref(reply: _Reply) -> JobRef:
    def build(data: Any) -> JobRef:
        return JobRef(
            int(data["id"]), JobState(data["status"]), str(data["poll_url"]), reply.status == 202
        )

    return cast(JobRef, _parse("job", build, reply.data))


def _page_of(build: Any, data: Any) -> Page[Any]:
    def page(d: Any) -> Page[Any]:
        cursor = d["next_cursor"]
        return Page([build(item) for item in d["items"]], None if cursor is None else str(cursor))

    return cast(Page[Any], _parse("page", page, data))


def _seconds(value: float) -> str:
    return f"{max(0.0, value):.3f}"


class _Ops:
    """Every API operation, written once as a generator of `_Call`s."""

    @staticmethod
    def enqueue(body: dict[str, Any]) -> _Op[JobRef]:
        reply = yield _Call("POST", "/jobs", body=body)
        return _ref(reply)

    @staticmethod
    def enqueue_batch(jobs: Sequence[Mapping[str, Any]]) -> _Op[list[int]]:
        bodies = []
        for item in jobs:
            item = dict(item)
            try:
                task = item.pop("task")
            except KeyError:
                raise TypeError("every job needs a 'task'") from None
            bodies.append(_job_body(task, **item))
        reply = yield _Call("POST", "/jobs/batch", body={"jobs": bodies})
        ids = _parse("ids", lambda d: [int(i) for i in d["ids"]], reply.data)
        return cast(list[int], ids)

    @staticmethod
    def get(job_id: int, wait_s: float | None = None) -> _Op[JobInfo]:
        query = None if wait_s is None else {"wait": _seconds(wait_s)}
        reply = yield _Call(
            "GET", f"/jobs/{_job_id(job_id)}", query=query, wait_s=max(0.0, wait_s or 0.0)
        )
        return _job(reply.data)

    @staticmethod
    def wait(job_id: int, timeout_s: float | None) -> _Op[JobInfo]:
        if timeout_s is not None and not timeout_s >= 0:
            raise ValueError(f"timeout_s must be a number of seconds >= 0, got {timeout_s!r}")
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            left = MAX_WAIT_S if deadline is None else deadline - time.monotonic()
            job = yield from _Ops.get(job_id, min(MAX_WAIT_S, max(0.0, left)))
            if job.is_terminal or (deadline is not None and time.monotonic() >= deadline):
                return job

    @staticmethod
    def list_jobs(
        status: JobState | str | None,
        queue: str | None,
        task: str | None,
        limit: int | None,
        cursor: str | None,
    ) -> _Op[Page[JobInfo]]:
        status_text = None if status is None else JobState(status).value
        query = _page_query(limit, cursor, status=status_text, queue=queue, task=task)
        reply = yield _Call("GET", "/jobs", query=query)
        return cast(Page[JobInfo], _page_of(JobInfo.from_dict, reply.data))

    @staticmethod
    def cancel(job_id: int) -> _Op[JobInfo]:
        reply = yield _Call("POST", f"/jobs/{_job_id(job_id)}/cancel")
        return _job(reply.data)

    @staticmethod
    def dead_letters(limit: int | None, cursor: str | None) -> _Op[Page[DeadLetterInfo]]:
        reply = yield _Call("GET", "/dead-letters", query=_page_query(limit, cursor))
        return cast(Page[DeadLetterInfo], _page_of(DeadLetterInfo.from_dict, reply.data))

    @staticmethod
    def dead_letter(dead_letter_id: int) -> _Op[DeadLetterInfo]:
        reply = yield _Call("GET", f"/dead-letters/{_job_id(dead_letter_id, 'dead letter id')}")
        return cast(DeadLetterInfo, _parse("dead letter", DeadLetterInfo.from_dict, reply.data))

    @staticmethod
    def requeue_dead_letter(dead_letter_id: int) -> _Op[int]:
        path = f"/dead-letters/{_job_id(dead_letter_id, 'dead letter id')}/requeue"
        reply = yield _Call("POST", path)
        return _ref(reply).id

    @staticmethod
    def delete_dead_letter(dead_letter_id: int) -> _Op[None]:
        yield _Call("DELETE", f"/dead-letters/{_job_id(dead_letter_id, 'dead letter id')}")

    @staticmethod
    def probe(path: str) -> _Op[bool]:
        """True on 200; False when unreachable or on a 5xx. Other refusals (401, 404) raise:
        they mean a wrong token or URL, not an unhealthy server."""
        try:
            yield _Call("GET", path)
        except ConnectionFailed:
            return False
        except ApiError as exc:
            if exc.status >= 500:
                return False
            raise
        return True


def _check_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"the server URL must be http://host[:port][/prefix], got {url!r}")
    return url.rstrip("/")


class _Base:
    def __init__(self, url: str, token: str | None, timeout_s: float) -> None:
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
        self.url = _check_url(url)
        self.timeout_s = float(timeout_s)
        self._headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

    def __repr__(self) -> str:  # never show the token
        return f"{type(self).__name__}({self.url!r})"

    def _url(self, call: _Call) -> str:
        url = self.url + call.path
        if call.query:
            url += "?" + urllib.parse.urlencode(call.query)
        return url

    def _encode(self, call: _Call) -> tuple[bytes | None, dict[str, str]]:
        headers = dict(self._headers)
        if call.body is None:
            return None, headers
        headers["Content-Type"] = "application/json"
        return json.dumps(call.body, separators=(",", ":"), allow_nan=False).encode(), headers

    @staticmethod
    def _reply(status: int, raw: bytes, retry_after: str | None) -> _Reply:
        if status >= 400:
            raise _api_error(status, raw, retry_after)
        if not raw:
            return _Reply(status, None)
        try:
            return _Reply(status, json.loads(raw))
        except ValueError:
            raise UnexpectedResponse(
                f"the answer (HTTP {status}) is not JSON: {raw[:200]!r}"
            ) from None


# -- the async client -----------------------------------------------------------------------------
class AsyncClient(_Base):
    """The API over aiohttp. Use `async with AsyncClient(url) as client:`, or call `close()`.

    `session`: an aiohttp session of your own to use (it is left open)."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        *,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        super().__init__(url, token, timeout_s)
        self._session = session
        self._own_session = session is None

    async def __aenter__(self) -> AsyncClient:
        self._get_session()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def _send(self, call: _Call) -> _Reply:
        data, headers = self._encode(call)
        timeout = aiohttp.ClientTimeout(total=self.timeout_s + call.wait_s)
        url = self._url(call)
        try:
            async with self._get_session().request(
                call.method, url, data=data, headers=headers, timeout=timeout
            ) as resp:
                raw = await resp.read()
                return self._reply(resp.status, raw, resp.headers.get("Retry-After"))
        except TimeoutError:
            raise ConnectionFailed(self.url, f"no answer within {timeout.total:g} s") from None
        except aiohttp.ClientError as exc:
            raise ConnectionFailed(self.url, str(exc) or type(exc).__name__) from exc

    async def _run(self, op: _Op[T]) -> T:
        try:
            call = next(op)
            while True:
                try:
                    reply = await self._send(call)
                except ClientError as exc:
                    call = op.throw(exc)
                else:
                    call = op.send(reply)
        except StopIteration as stop:
            return cast(T, stop.value)
        finally:
            op.close()

    async def enqueue(
        self,
        task: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        queue: str | None = None,
        priority: int | None = None,
        delay_s: float | None = None,
        run_at: datetime | None = None,
        max_retries: int | None = None,
        timeout_s: float | None = None,
        backoff: Backoff | Mapping[str, float] | None = None,
        idempotency_key: str | None = None,
    ) -> JobRef:
        """Enqueue one job; returns once the server has committed it. Options left None take
        the task's defaults (queue "default", priority 0)."""
        body = _job_body(
            task,
            args,
            kwargs,
            queue=queue,
            priority=priority,
            delay_s=delay_s,
            run_at=run_at,
            max_retries=max_retries,
            timeout_s=timeout_s,
            backoff=backoff,
            idempotency_key=idempotency_key,
        )
        return await self._run(_Ops.enqueue(body))

    async def enqueue_batch(self, jobs: Sequence[Mapping[str, Any]]) -> list[int]:
        """Enqueue jobs in one transaction, all or none. Each item has `enqueue`'s parameters
        as keys: {"task": "echo", "args": [1], "priority": 5, ...}. Returns the ids in order."""
        return await self._run(_Ops.enqueue_batch(jobs))

    async def get(self, job_id: int, *, wait_s: float | None = None) -> JobInfo:
        """The job; with `wait_s` (at most 60), answered when it ends or `wait_s` has passed."""
        return await self._run(_Ops.get(job_id, wait_s))

    async def wait(self, job_id: int, timeout_s: float | None = None) -> JobInfo:
        """The job once terminal, or as it stands after `timeout_s` (None: no limit)."""
        return await self._run(_Ops.wait(job_id, timeout_s))

    async def list_jobs(
        self,
        *,
        status: JobState | str | None = None,
        queue: str | None = None,
        task: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[JobInfo]:
        """One page of jobs, newest first (limit 1-1000, default 50)."""
        return await self._run(_Ops.list_jobs(status, queue, task, limit, cursor))

    async def iter_jobs(
        self,
        *,
        status: JobState | str | None = None,
        queue: str | None = None,
        task: str | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[JobInfo]:
        """Every matching job, newest first, fetched a page at a time."""
        cursor: str | None = None
        while True:
            page = await self.list_jobs(
                status=status, queue=queue, task=task, limit=page_size, cursor=cursor
            )
            for job in page.items:
                yield job
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def cancel(self, job_id: int) -> JobInfo:
        """Cancel a job: pending ends `cancelled` at once; running is asked to stop
        (`cancel_requested`); a job that succeeded or failed raises ConflictError."""
        return await self._run(_Ops.cancel(job_id))

    async def dead_letters(
        self, *, limit: int | None = None, cursor: str | None = None
    ) -> Page[DeadLetterInfo]:
        return await self._run(_Ops.dead_letters(limit, cursor))

    async def iter_dead_letters(self, *, page_size: int = 100) -> AsyncIterator[DeadLetterInfo]:
        cursor: str | None = None
        while True:
            page = await self.dead_letters(limit=page_size, cursor=cursor)
            for dl in page.items:
                yield dl
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def dead_letter(self, dead_letter_id: int) -> DeadLetterInfo:
        return await self._run(_Ops.dead_letter(dead_letter_id))

    async def requeue_dead_letter(self, dead_letter_id: int) -> int:
        """Enqueue the dead letter again as a new job (fresh attempts); returns its id."""
        return await self._run(_Ops.requeue_dead_letter(dead_letter_id))

    async def delete_dead_letter(self, dead_letter_id: int) -> None:
        await self._run(_Ops.delete_dead_letter(dead_letter_id))

    async def health(self) -> bool:
        """GET /healthz: True if the process answers; False if unreachable."""
        return await self._run(_Ops.probe("/healthz"))

    async def ready(self) -> bool:
        """GET /readyz: True if the database takes writes; False on 503 or unreachable."""
        return await self._run(_Ops.probe("/readyz"))


# -- the sync client ------------------------------------------------------------------------------
class Client(_Base):
    """The API over urllib, blocking; the same methods as `AsyncClient`.

    Proxy variables (http_proxy, ...) are ignored, as aiohttp does by default."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        super().__init__(url, token, timeout_s)
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release (each call has its own connection); for symmetry."""

    def _send(self, call: _Call) -> _Reply:
        data, headers = self._encode(call)
        request = urllib.request.Request(
            self._url(call), data=data, headers=headers, method=call.method
        )
        timeout = self.timeout_s + call.wait_s
        try:
            with self._opener.open(request, timeout=timeout) as resp:
                raw = resp.read()
                return self._reply(resp.status, raw, resp.headers.get("Retry-After"))
        except urllib.error.HTTPError as exc:
            with exc:
                raw = exc.read()
            return self._reply(exc.code, raw, exc.headers.get("Retry-After"))
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, TimeoutError):
                raise ConnectionFailed(self.url, f"no answer within {timeout:g} s") from None
            raise ConnectionFailed(self.url, str(reason)) from exc
        except TimeoutError:
            raise ConnectionFailed(self.url, f"no answer within {timeout:g} s") from None
        except (OSError, http.client.HTTPException) as exc:
            raise ConnectionFailed(self.url, str(exc) or type(exc).__name__) from exc

    def _run(self, op: _Op[T]) -> T:
        try:
            call = next(op)
            while True:
                try:
                    reply = self._send(call)
                except ClientError as exc:
                    call = op.throw(exc)
                else:
                    call = op.send(reply)
        except StopIteration as stop:
            return cast(T, stop.value)
        finally:
            op.close()

    def enqueue(
        self,
        task: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        queue: str | None = None,
        priority: int | None = None,
        delay_s: float | None = None,
        run_at: datetime | None = None,
        max_retries: int | None = None,
        timeout_s: float | None = None,
        backoff: Backoff | Mapping[str, float] | None = None,
        idempotency_key: str | None = None,
    ) -> JobRef:
        """See `AsyncClient.enqueue`."""
        body = _job_body(
            task,
            args,
            kwargs,
            queue=queue,
            priority=priority,
            delay_s=delay_s,
            run_at=run_at,
            max_retries=max_retries,
            timeout_s=timeout_s,
            backoff=backoff,
            idempotency_key=idempotency_key,
        )
        return self._run(_Ops.enqueue(body))

    def enqueue_batch(self, jobs: Sequence[Mapping[str, Any]]) -> list[int]:
        return self._run(_Ops.enqueue_batch(jobs))

    def get(self, job_id: int, *, wait_s: float | None = None) -> JobInfo:
        return self._run(_Ops.get(job_id, wait_s))

    def wait(self, job_id: int, timeout_s: float | None = None) -> JobInfo:
        return self._run(_Ops.wait(job_id, timeout_s))

    def list_jobs(
        self,
        *,
        status: JobState | str | None = None,
        queue: str | None = None,
        task: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[JobInfo]:
        return self._run(_Ops.list_jobs(status, queue, task, limit, cursor))

    def iter_jobs(
        self,
        *,
        status: JobState | str | None = None,
        queue: str | None = None,
        task: str | None = None,
        page_size: int = 100,
    ) -> Iterator[JobInfo]:
        cursor: str | None = None
        while True:
            page = self.list_jobs(
                status=status, queue=queue, task=task, limit=page_size, cursor=cursor
            )
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def cancel(self, job_id: int) -> JobInfo:
        return self._run(_Ops.cancel(job_id))

    def dead_letters(
        self, *, limit: int | None = None, cursor: str | None = None
    ) -> Page[DeadLetterInfo]:
        return self._run(_Ops.dead_letters(limit, cursor))

    def iter_dead_letters(self, *, page_size: int = 100) -> Iterator[DeadLetterInfo]:
        cursor: str | None = None
        while True:
            page = self.dead_letters(limit=page_size, cursor=cursor)
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def dead_letter(self, dead_letter_id: int) -> DeadLetterInfo:
        return self._run(_Ops.dead_letter(dead_letter_id))

    def requeue_dead_letter(self, dead_letter_id: int) -> int:
        return self._run(_Ops.requeue_dead_letter(dead_letter_id))

    def delete_dead_letter(self, dead_letter_id: int) -> None:
        self._run(_Ops.delete_dead_letter(dead_letter_id))

    def health(self) -> bool:
        return self._run(_Ops.probe("/healthz"))

    def ready(self) -> bool:
        return self._run(_Ops.probe("/readyz"))
