"""`POST /jobs` without aiohttp's request machinery: the hot request of a job server, read and
answered by a purpose-written HTTP/1.1 protocol on `jobserver serve`'s own listener.

Only the plain, successful case is handled here: a well-formed HTTP/1.1 `POST /jobs` with a
Content-Length, a JSON object body and (with tokens configured) a full-access token, whose
job is accepted. llhttp (through httptools), the parser aiohttp itself is built on, reads each
request; this module only finds where one ends. Anything else (another route, a query string,
chunked or `Expect`, a head llhttp refuses, a body that does not validate, a refused enqueue)
hands the connection, from that request on, to aiohttp, which parses the request again and
answers it the usual way, errors included. A refused enqueue wrote nothing, so trying it again
there creates at most one job.

Behind aiohttp, a request costs several times what its job costs to write (see BENCHMARKS.md);
this answers the same request with the same reply (status, body, headers that matter) for
about 60% of the CPU. Mounted apps (`create_app`) are served by aiohttp alone.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import TYPE_CHECKING, Any, cast

import httptools
from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE

from .. import codec
from ..auth import Access
from ..errors import Conflict, NotFound, QueueFull, StorageUnavailable, ValidationError
from .connections import MAX_HEADER_BYTES, aiohttp_protocol
from .errors import error_body, log_access
from .routes.jobs import accepted
from .schema import BODY_TOO_SLOW, field_with_inexact_integer, nests_too_deep, parse_enqueue

if TYPE_CHECKING:
    from ..server import JobServer
    from ..store.base import Enqueued

log = logging.getLogger(__name__)

REQUEST_LINE = b"POST /jobs HTTP/1.1\r\n"  # anything else is aiohttp's from the first bytes
MAX_HEAD_BYTES = 16_384  # a longer head is aiohttp's to refuse (its limits are per line)
MAX_BUFFERED = 65_536  # read no further while a reply is due (a client pipelining requests)
# The fields read here; a request that gives one of them twice is handed to aiohttp.
_USED = frozenset(
    {
        b"host",
        b"content-length",
        b"content-type",
        b"authorization",
        b"idempotency-key",
        b"connection",
        b"traceparent",
    }
)
# Bodies aiohttp decodes (Content-Encoding) or frames (Transfer-Encoding), and requests it
# must see: handed over, so that it answers them as it answers every other.
_HAND_OFF = frozenset({b"transfer-encoding", b"content-encoding", b"expect", b"upgrade"})
# Refusals that leave nothing written: aiohttp may try the request again and answer it.
_REFUSALS = (ValidationError, QueueFull, Conflict, NotFound, StorageUnavailable)
_STATUS_LINES = {
    200: b"HTTP/1.1 200 OK\r\n",
    202: b"HTTP/1.1 202 Accepted\r\n",
    408: b"HTTP/1.1 408 Request Timeout\r\n",
    500: b"HTTP/1.1 500 Internal Server Error\r\n",
}
_HEAD_TAIL = b"Content-Type: application/json\r\nServer: " + SERVER_SOFTWARE.encode() + b"\r\n"


def _text(value: bytes) -> str:
    return value.decode("utf-8", "surrogateescape")  # as aiohttp decodes header values


def _write_reply(
    transport: asyncio.WriteTransport, status: int, body: bytes, *, close: bool = False
) -> None:
    transport.write(
        b"%s%sContent-Length: %d\r\nDate: %s\r\n%s\r\n%s"
        % (
            _STATUS_LINES[status],
            b"Connection: close\r\n" if close else b"",
            len(body),
            _Date.now(),
            _HEAD_TAIL,
            body,
        )
    )


class _Date:
    """The Date header's value, formatted once a second."""

    second = -1
    value = b""

    @classmethod
    def now(cls) -> bytes:
        second = int(time.time())
        if second != cls.second:
            cls.second = second
            cls.value = formatdate(second, usegmt=True).encode()
        return cls.value


class _Request:
    """What llhttp read of one request (httptools' callbacks): the fields used here by
    lowercase name, whether one came twice or one of _HAND_OFF came, and whether the whole
    message was read."""

    __slots__ = ("complete", "fields", "not_ours")

    def __init__(self) -> None:
        self.fields: dict[bytes, bytes] = {}
        self.not_ours = False
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) > MAX_HEADER_BYTES or len(value) > MAX_HEADER_BYTES:
            self.not_ours = True  # over aiohttp's limit a field: its 400 to give
        name = name.lower()
        if name in _USED:
            if name in self.fields:
                self.not_ours = True  # a field given twice: aiohttp's to judge
            self.fields[name] = value.strip(b" \t")
        elif name in _HAND_OFF:
            self.not_ours = True

    def on_message_complete(self) -> None:
        self.complete = True


class FastEnqueue:
    """Shared by the connections of one listener: the server, aiohttp's protocol factory for
    connections handed over, and the requests in flight (for a graceful stop)."""

    def __init__(
        self,
        server: JobServer,
        aiohttp_server: web.Server,
        poll_prefix: str,
        *,
        keepalive_s: float,
        header_timeout_s: float,
    ) -> None:
        self.server = server
        self.aiohttp_server = aiohttp_server
        self.poll_prefix = poll_prefix
        self.keepalive_s = keepalive_s
        self.header_timeout_s = header_timeout_s
        self.in_flight: set[asyncio.Future[Enqueued]] = set()
        self.idle: set[EnqueueProtocol] = set()  # connections of ours between requests
        self.answered = 0  # requests answered here
        self.handed_over = 0  # connections handed to aiohttp

    def connection(self, on_lost: Callable[[Any], None]) -> EnqueueProtocol:
        """A new connection's protocol (for limits.ConnectionLimit)."""
        return EnqueueProtocol(self, on_lost)

    def aiohttp_protocol(self) -> asyncio.Protocol:
        return aiohttp_protocol(self.aiohttp_server)

    async def drain(self, timeout_s: float) -> None:
        """At shutdown, with the listener closed: answer the requests in flight, then close
        the connections that wait for another."""
        if self.in_flight:
            await asyncio.wait(set(self.in_flight), timeout=timeout_s)
        for conn in list(self.idle):
            conn.close_idle()


class _AiohttpRequests:
    """After the hand-over, llhttp follows the requests that aiohttp reads, only to time them
    as the fast path times its own: a head within `header_timeout_s` of its first byte, a
    body within `body_timeout_s` of its head (aiohttp has no such deadline of its own)."""

    def __init__(self, conn: EnqueueProtocol) -> None:
        self._conn = conn
        self.parser = httptools.HttpRequestParser(self)

    def on_message_begin(self) -> None:
        self._conn._start_head_timer()

    def on_headers_complete(self) -> None:
        self._conn._head_in()

    def on_message_complete(self) -> None:
        self._conn._body_in()


class EnqueueProtocol(asyncio.Protocol):
    """One connection: `POST /jobs` answered here until a request needs aiohttp, then aiohttp's
    protocol for the rest of the connection. A request head must arrive within
    `header_timeout_s` of its first byte (the first request's, of the connection's start), and
    a body within `body_timeout_s` of its head, on every request of the connection, those
    aiohttp answers too: a client dribbling bytes cannot hold the connection."""

    def __init__(self, shared: FastEnqueue, on_lost: Callable[[Any], None]) -> None:
        self._shared = shared
        self._on_lost = on_lost
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._buffer = b""
        self._inner: asyncio.Protocol | None = None  # aiohttp's, once handed over
        self._watch: _AiohttpRequests | None = None  # times aiohttp's requests, from then on
        self._request: _Request | None = None  # the head at the front, once llhttp read it
        self._parser: httptools.HttpRequestParser | None = None
        self._head_end = self._body_end = 0  # where that request's head and body end
        self._started = 0.0  # when the request being answered was read
        self._head_timer: asyncio.TimerHandle | None = None  # until the first head is in
        self._tail = b""  # the last bytes seen, to spot the end of the first head
        self._body_timer: asyncio.TimerHandle | None = None  # a head in, its body not yet
        self._idle_timer: asyncio.TimerHandle | None = None
        self._last_active = 0.0
        self._replying = False  # a request of ours is being answered
        self._paused = False  # reading paused while a reply is due
        self._eof = False
        self._closed = False
        self._client = "?"
        self._local: str | None = None  # the address the connection came in on

    # -- asyncio.Protocol -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self._client = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        local = transport.get_extra_info("sockname")
        self._local = str(local[0]).lower() if isinstance(local, tuple) and local else None
        self._head_timer = self._loop.call_later(self._shared.header_timeout_s, self._expire)
        self._last_active = self._loop.time()
        self._idle_timer = self._loop.call_later(self._shared.keepalive_s, self._check_idle)
        self._shared.idle.add(self)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            if self._watch is not None:
                self._follow(data)
            self._inner.data_received(data)
            return
        if self._head_timer is not None:
            self._tail = (self._tail + data)[-(len(data) + 3) :]
            if b"\r\n\r\n" in self._tail:
                self._head_timer.cancel()
                self._head_timer = None
        elif self._inner is None and not self._buffer and b"\r\n\r\n" not in data:
            # A later request whose head did not come whole: its head has the deadline too.
            # (One that came whole, the usual case, costs no timer.)
            self._start_head_timer()
            self._tail = data[-3:]
        self._buffer += data
        self._last_active = self._loop.time()
        if not self._replying:
            self._next_request()
        elif len(self._buffer) > MAX_BUFFERED and self._transport is not None and not self._paused:
            self._paused = True  # resumed when the reply is written
            self._transport.pause_reading()

    def eof_received(self) -> bool | None:
        if self._inner is not None:
            return self._inner.eof_received()
        self._eof = True
        return True if self._replying else None  # None: the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._shared.idle.discard(self)
        for timer in (self._head_timer, self._body_timer, self._idle_timer):
            if timer is not None:
                timer.cancel()
        if self._inner is not None:
            self._inner.connection_lost(exc)
        self._on_lost(self)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    # -- timers -----------------------------------------------------------------------------------
    def _start_head_timer(self) -> None:
        self._tail = b""
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self._loop.call_later(self._shared.header_timeout_s, self._expire)

    def _head_in(self) -> None:
        """(After the hand-over) a request's head is in: its body's deadline starts."""
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        timeout_s = self._shared.server.body_timeout_s
        self._body_timer = self._loop.call_later(timeout_s, self._expire)

    def _body_in(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _follow(self, data: bytes) -> None:
        assert self._watch is not None
        try:
            self._watch.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            # aiohttp refuses what llhttp cannot read (and closes); nothing more to time
            self._watch = None
            self._body_in()
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

    def _expire(self) -> None:
        self._head_timer = None
        if self._transport is not None:
            self._transport.close()

    def _check_idle(self) -> None:
        """Close a connection idle (no request, none in flight) for `keepalive_s`."""
        self._idle_timer = None
        if self._inner is not None or self._closed:
            return  # aiohttp keeps its own time
        idle_for = self._loop.time() - self._last_active
        if not self._replying and idle_for >= self._shared.keepalive_s:
            self.close_idle()
        else:
            wait = max(0.1, self._shared.keepalive_s - idle_for)
            self._idle_timer = self._loop.call_later(wait, self._check_idle)

    def close_idle(self) -> None:
        if self._inner is None and not self._replying and self._transport is not None:
            self._transport.close()

    def _body_too_slow(self) -> None:
        self._body_timer = None
        if self._inner is not None or self._replying or self._transport is None:
            return
        _write_reply(self._transport, 408, error_body("timeout", BODY_TOO_SLOW, "body"), close=True)
        self._transport.close()

    # -- requests ---------------------------------------------------------------------------------
    def _next_request(self) -> None:
        """Answer the request at the front of the buffer if it is ours and whole; hand the
        connection over if it is not ours; else wait for more bytes."""
        buffer = self._buffer
        if not buffer:
            return
        if not buffer.startswith(REQUEST_LINE):
            if len(buffer) >= len(REQUEST_LINE) or not REQUEST_LINE.startswith(buffer):
                self._hand_over()
            return
        if self._request is None:  # the head of the request at the front is not read yet
            end = buffer.find(b"\r\n\r\n", len(REQUEST_LINE) - 2)
            if end < 0 or end > MAX_HEAD_BYTES:
                if len(buffer) > MAX_HEAD_BYTES:
                    self._hand_over()
                return
            if not self._read_head(buffer[: end + 4]):
                self._hand_over()
                return
        request, head_end, body_end = self._request, self._head_end, self._body_end
        assert request is not None
        if len(buffer) < body_end:
            if self._body_timer is None:
                timeout_s = self._shared.server.body_timeout_s
                self._body_timer = self._loop.call_later(timeout_s, self._body_too_slow)
            return
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        body = buffer[head_end:body_end]
        fields_in = self._accept(request.fields, body) if self._read_body(body) else None
        if fields_in is None:
            self._hand_over()
            return
        self._request = self._parser = None  # the next request's head is read anew
        self._replying = True
        self._started = time.monotonic()
        self._shared.idle.discard(self)
        try:
            written = self._shared.server.submit_soon(**fields_in)
        except Exception as exc:
            self._not_written(exc, body_end)
            return
        # Not a task a request: a callback on the write's future (after the server's own,
        # which publishes `pending`).
        self._shared.in_flight.add(written)
        written.add_done_callback(functools.partial(self._written, body_end))
        written.add_done_callback(self._shared.in_flight.discard)

    def _read_head(self, head: bytes) -> bool:
        """llhttp reads the head; False if the request is not one answered here (a head llhttp
        refuses, a field given twice or one that aiohttp must see, no Host, no
        Content-Length, a body over the limit, not keep-alive)."""
        request = _Request()
        parser = httptools.HttpRequestParser(request)
        try:
            parser.feed_data(head)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            return False
        fields = request.fields
        if (
            request.not_ours
            or b"host" not in fields  # HTTP/1.1 requires it (aiohttp: 400)
            or fields.get(b"connection", b"keep-alive").lower() != b"keep-alive"
            or not parser.should_keep_alive()
            or b"content-length" not in fields  # llhttp read it as digits, within 2^64
            or int(fields[b"content-length"]) > self._shared.server.max_body_bytes
        ):
            return False
        self._request, self._parser = request, parser
        self._head_end = len(head)
        self._body_end = len(head) + int(fields[b"content-length"])
        return True

    def _read_body(self, body: bytes) -> bool:
        """llhttp reads the body: True if the message ends exactly where it does."""
        assert self._parser is not None and self._request is not None
        if body:
            try:
                self._parser.feed_data(body)
            except httptools.HttpParserError:
                return False
        return self._request.complete

    def _accept(self, fields: dict[bytes, bytes], raw: bytes) -> dict[str, Any] | None:
        """The enqueue's arguments, or None when the request is not one answered here."""
        try:
            return self._read_request(fields, raw)
        except Exception:  # whatever it is, aiohttp's handling judges the request again
            return None

    def _read_request(self, fields: dict[bytes, bytes], raw: bytes) -> dict[str, Any] | None:
        server = self._shared.server
        content_type = fields.get(b"content-type", b"").partition(b";")[0].strip().lower()
        if content_type != b"application/json":
            return None
        if not server.auth.enabled:
            if not server.auth.host_allowed(_text(fields[b"host"]), self._local):
                return None  # aiohttp refuses it (403)
        else:
            header = fields.get(b"authorization")
            if header is None or server.auth.access(_text(header)) is not Access.FULL:
                return None  # aiohttp answers it: 401, 403 or 429
        try:
            body = codec.loads(raw)
        except codec.JSONDecodeError:
            return None
        if not isinstance(body, dict) or nests_too_deep(raw, body):
            return None
        if field_with_inexact_integer(raw) is not None:
            return None  # aiohttp refuses it (422)
        key = fields.get(b"idempotency-key")
        trace = fields.get(b"traceparent")
        return parse_enqueue(
            body, None if key is None else _text(key), None if trace is None else _text(trace)
        )

    def _written(self, request_end: int, written: asyncio.Future[Enqueued]) -> None:
        error = written.exception() if not written.cancelled() else StorageUnavailable("stopped")
        if error is not None:
            self._not_written(error, request_end)
            return
        enqueued = written.result()
        job = enqueued.job
        body = codec.dumps(accepted(job, self._shared.poll_prefix))
        self._reply(202 if enqueued.created else 200, body, request_end)

    def _not_written(self, error: BaseException, request_end: int) -> None:
        if isinstance(error, _REFUSALS):
            self._replying = False
            self._hand_over()  # nothing was written: aiohttp tries again and answers
            return
        log.error("unhandled error in POST /jobs", exc_info=error)
        self._reply(500, error_body("internal", "internal server error", None), request_end)

    def _reply(self, status: int, body: bytes, request_end: int) -> None:
        self._replying = False
        self._buffer = self._buffer[request_end:]
        transport = self._transport
        if self._closed or transport is None:
            return  # the client went away; its job is committed all the same
        _write_reply(transport, status, body)
        if self._shared.server.access_log:
            log_access("POST", "/jobs", status, self._started, self._client)
        self._last_active = self._loop.time()
        self._shared.answered += 1
        if self._paused:
            self._paused = False
            transport.resume_reading()
        self._shared.idle.add(self)
        if self._buffer and b"\r\n\r\n" not in self._buffer and self._head_timer is None:
            self._start_head_timer()  # the next request began while this one was answered
        self._next_request()
        if self._eof and not self._replying and self._inner is None:
            transport.close()  # the client has said all it will: what it sent is answered

    def _hand_over(self) -> None:
        """aiohttp's protocol takes the connection from here, starting with what is buffered
        (which begins at a request's first byte)."""
        if self._transport is None or self._closed:
            return
        for timer in (self._body_timer, self._idle_timer):
            if timer is not None:
                timer.cancel()
        self._body_timer = self._idle_timer = None
        self._shared.idle.discard(self)
        self._shared.handed_over += 1
        inner = self._inner = self._shared.aiohttp_protocol()
        inner.connection_made(self._transport)
        buffered, self._buffer = self._buffer, b""
        if self._paused:
            self._paused = False
            self._transport.resume_reading()
        # The buffer begins at a request's first byte: the head timer of the first request
        # (running since the connection began) gives way to the watch's, per request.
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._watch = _AiohttpRequests(self)
        if buffered:
            self._follow(buffered)
            inner.data_received(buffered)
        if self._eof:
            inner.eof_received()
