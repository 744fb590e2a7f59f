"""Limits on what clients may hold open: connections, how long a request head may take, the
size of request lines and headers. (Body size, body deadline and JSON depth are checked where
the body is read, in api.py.) An idle keep-alive connection is closed after KEEPALIVE_S.
A request aiohttp cannot parse is answered here too, in the API's JSON error shape."""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus

import orjson
from aiohttp import http_exceptions, web, web_protocol

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 8190  # request line
MAX_HEADER_BYTES = 8190  # each header field
KEEPALIVE_S = 75.0

_REFUSED_BODY = (
    b'{"error":{"code":"unavailable","message":"too many open connections; try again",'
    b'"field":null}}'
)


class _Refuse(asyncio.Protocol):
    """Answers one 503 and hangs up: a connection past the limit never reaches the app."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            b"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
            % (len(_REFUSED_BODY), _REFUSED_BODY)
        )
        transport.close()


class _HeaderDeadline(asyncio.Protocol):
    """aiohttp's protocol, but a connection whose first request head (line and headers) has
    not arrived within `timeout_s` is closed: a client dribbling bytes cannot hold it."""

    def __init__(self, inner: asyncio.Protocol, timeout_s: float) -> None:
        self._inner = inner
        self._timeout_s = timeout_s
        self._timer: asyncio.TimerHandle | None = None
        self._tail = b""
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._timer = asyncio.get_running_loop().call_later(self._timeout_s, self._expire)
        self._inner.connection_made(transport)

    def _expire(self) -> None:
        self._timer = None
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        if self._timer is not None:
            self._tail = (self._tail + data)[-(len(data) + 3) :]
            if b"\r\n\r\n" in self._tail:
                self._timer.cancel()
                self._timer = None
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


# What part of the request a parse error is in, for the error's "field".
_PARSE_ERROR_FIELDS: tuple[tuple[type[Exception], str], ...] = (
    (http_exceptions.BadStatusLine, "request line"),  # method, target or version
    (http_exceptions.InvalidURLError, "request line"),
    (http_exceptions.LineTooLong, "headers"),
    (http_exceptions.InvalidHeader, "headers"),
    (http_exceptions.PayloadEncodingError, "body"),  # length, chunking, compression
)


class _JSONErrorsRequestHandler(web_protocol.RequestHandler):
    """aiohttp's protocol, but a request it cannot parse (a bad request line, header or length)
    gets the API's JSON error instead of aiohttp's plain text. Only the class changes (no new
    state), so a handler aiohttp built is switched to it."""

    __slots__ = ()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            return super().handle_error(request, status, exc, message)
        if request.writer.output_size > 0:  # part of a reply went out: no room for another
            raise ConnectionError("a response was sent already; cannot send the error")
        text = (message or HTTPStatus(status).phrase).strip().splitlines()[0].rstrip(":")
        # The client's mistake, not the server's: one line, not aiohttp's ERROR and traceback.
        log.info("refused a request from %s that is not valid HTTP: %s", request.remote, text)
        field = next((f for t, f in _PARSE_ERROR_FIELDS if isinstance(exc, t)), None)
        if field is None:  # aiohttp's generic parse error: say "headers" when it is about one
            lowered = text.lower()
            about_header = any(w in lowered for w in ("header", "content-length", "encoding"))
            field = "headers" if about_header else "request"
        body = {"error": {"code": "bad_request", "message": text, "field": field}}
        reply = web.Response(
            status=status, body=orjson.dumps(body), content_type="application/json"
        )
        reply.force_close()
        return reply


class ConnectionLimit:
    """A protocol factory for loop.create_server: aiohttp's, up to `limit` connections, each
    of which must send its first request head within `header_timeout_s`."""

    def __init__(self, server: web.Server, limit: int, header_timeout_s: float = 10.0) -> None:
        self.server = server
        self.limit = limit
        self.header_timeout_s = header_timeout_s

    def __call__(self) -> asyncio.BaseProtocol:
        if len(self.server.connections) >= self.limit:
            return _Refuse()
        handler = self.server()
        handler.__class__ = _JSONErrorsRequestHandler
        return _HeaderDeadline(handler, self.header_timeout_s)
