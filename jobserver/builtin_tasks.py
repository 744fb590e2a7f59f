"""Tasks every server has: `http` (a sidecar's way to get work done by calling its own app
back), and `echo` and `sleep` for trying jobserver out."""

from __future__ import annotations

import asyncio
import email.utils
import secrets
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urljoin

import aiohttp
from yarl import URL

from . import codec, signing
from .errors import PermanentError, Retry
from .models import Backoff
from .tasks import TaskSpec, current_job

DEFAULT_ALLOWED_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
MAX_REDIRECTS = 5
MAX_BODY_KEPT = 64 * 1024
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


async def echo(*args: Any, **kwargs: Any) -> Any:
    """Returns what it was given: one positional argument as itself, otherwise all of them."""
    if len(args) == 1 and not kwargs:
        return args[0]
    return {"args": list(args), "kwargs": kwargs}


async def sleep(seconds: float = 1.0) -> float:
    """Sleeps, then returns how long it slept; for trying timeouts and cancellation."""
    if not isinstance(seconds, int | float) or seconds < 0:
        raise PermanentError("seconds must be a number >= 0")
    await asyncio.sleep(seconds)
    return float(seconds)


def _job_headers() -> dict[str, str]:
    """Which job and attempt a call belongs to, so the app can spot a repeated delivery."""
    try:
        ctx = current_job()
    except LookupError:
        return {}
    headers = {"X-Jobserver-Job-Id": str(ctx.job_id), "X-Jobserver-Attempt": str(ctx.attempt)}
    if ctx.traceparent is not None:
        headers["traceparent"] = ctx.traceparent  # the app's work joins the job's trace
    return headers


def retry_after_s(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class HttpTask:
    """`http`: one HTTP request; 2xx succeeds, 5xx / 429 / network errors retry (honouring
    Retry-After), any other status fails for good. Only hosts on the allow-list are reached,
    redirects included."""

    def __init__(
        self, allowed_hosts: Iterable[str] = DEFAULT_ALLOWED_HOSTS, secret: str | None = None
    ) -> None:
        # With a secret, each call is signed (Standard Webhooks: signing.py), so the app can
        # tell the server's calls from anyone else's.
        self._key = signing.signing_key(secret) if secret else None
        # An entry is a host (any port) or host:port ([v6]:port), which allows that port only.
        self.entries = sorted({h.strip().lower() for h in allowed_hosts if h.strip()})
        self._any_port: set[str] = set()
        self._ports: set[tuple[str, int]] = set()
        for entry in self.entries:
            host, port = _host_and_port(entry)
            if port is None:
                self._any_port.add(host)
            else:
                self._ports.add((host, port))
        self._session: aiohttp.ClientSession | None = None

    def check_url(self, url: str) -> URL:
        parsed = URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise PermanentError(f"url must be an absolute http(s) URL, got {url!r}")
        host = parsed.host.lower().strip("[]")
        if host not in self._any_port and (host, parsed.port) not in self._ports:
            raise PermanentError(
                f"{host}:{parsed.port} is not on the http task's allow-list"
                f" ({', '.join(self.entries)})"
            )
        return parsed

    async def __call__(
        self,
        url: str,
        method: str = "POST",
        headers: dict[str, str] | None = None,
        json: Any = None,
        body: str | None = None,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        method = str(method).upper()
        if method not in METHODS:
            raise PermanentError(f"method must be one of {sorted(METHODS)}")
        if json is not None and body is not None:
            raise PermanentError("give json or body, not both")
        if self._session is None:
            self._session = aiohttp.ClientSession()
        target = self.check_url(url)
        headers = {**_job_headers(), **(headers or {})}
        data: bytes | None = None
        if json is not None:  # encoded here: the signature covers the exact bytes sent
            data = codec.dumps(json)
            headers.setdefault("Content-Type", "application/json")
        elif body is not None:
            data = body.encode()
        key = self._key
        try:
            for _ in range(MAX_REDIRECTS + 1):
                sent = headers if key is None else {**headers, **_signature_headers(key, data)}
                async with self._session.request(
                    method,
                    target,
                    headers=sent,
                    data=data,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=timeout),
                ) as resp:
                    if resp.status in (301, 302, 303, 307, 308) and "Location" in resp.headers:
                        target = self.check_url(urljoin(str(target), resp.headers["Location"]))
                        if resp.status == 303:
                            method, data = "GET", None
                        continue
                    kept = await _read_at_most(resp, MAX_BODY_KEPT)
                    text = kept.decode("utf-8", "replace")
                    return self._verdict(resp.status, resp.headers, text)
            raise PermanentError(f"more than {MAX_REDIRECTS} redirects")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ConnectionError(f"{method} {target}: {type(exc).__name__}: {exc}") from exc

    @staticmethod
    def _verdict(status: int, headers: Any, text: str) -> dict[str, Any]:
        if 200 <= status < 300:
            content_type = headers.get("Content-Type", "")
            body: Any = text
            if content_type.startswith("application/json") and text:
                try:
                    body = codec.loads(text)
                except codec.JSONDecodeError:
                    body = text
            return {"status": status, "body": body}
        summary = f"HTTP {status}: {text[:500]}"
        if status == 429 or status >= 500:
            delay = retry_after_s(headers.get("Retry-After"))
            if delay is not None:
                raise Retry(delay_s=delay, message=summary)
            raise ConnectionError(summary)
        raise PermanentError(summary)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def builtin_specs(http_task: HttpTask) -> list[TaskSpec]:
    # In the server's process whatever its --isolation: they are the server's own code (and
    # `http` holds the server's allow-list and connection pool).
    return [
        TaskSpec(name="echo", fn=echo, is_async=True, wants_ctx=False, isolation="inline"),
        TaskSpec(name="sleep", fn=sleep, is_async=True, wants_ctx=False, isolation="inline"),
        TaskSpec(
            name="http",
            fn=http_task,
            is_async=True,
            wants_ctx=False,
            max_retries=5,
            backoff=Backoff(base_s=1.0, factor=2.0, cap_s=300.0),
            isolation="inline",
        ),
    ]


async def _read_at_most(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The first `limit` bytes of the body; the rest is never read (the connection is then
    closed, not reused), so a huge reply costs no more memory than what is kept."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(65_536):
        chunks.append(chunk[: limit - size])
        size += len(chunks[-1])
        if size >= limit:
            break
    return b"".join(chunks)


def _host_and_port(entry: str) -> tuple[str, int | None]:
    """An allow-list entry: `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address."""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        if port.isdigit():
            return host, int(port)
    return entry, None


def _signature_headers(key: bytes, body: bytes | None) -> dict[str, str]:
    """One message a job: the same id on each of its attempts (the app dedupes with it)."""
    try:
        ctx = current_job()
        message_id = f"msg_jobserver_job_{ctx.job_id}"
    except LookupError:  # called outside a job (not through the task)
        message_id = f"msg_jobserver_{secrets.token_hex(8)}"
    return signing.signed_headers(key, message_id, int(time.time()), body or b"")
