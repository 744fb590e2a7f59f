"""Connections: limits on what clients may hold open (connections, the size of request lines
and headers), and aiohttp's protocol answering a request it cannot parse in the API's JSON
error shape. How long a request head may take is fast_path.py's to time; body size, body
deadline and JSON depth are checked where the body is read (schema.py, fast_path.py). An idle
keep-alive connection is closed after KEEPALIVE_S."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, cast

from aiohttp import http_exceptions, web, web_protocol

from .errors import error_body

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 8190  # request line
MAX_HEADER_BYTES = 8190  # each header field
KEEPALIVE_S = 75.0

_REFUSED_BODY = error_body("unavailable", "too many open connections; try again", None)


class _Refuse(asyncio.Protocol):
    """Answers one 503 and hangs up: a connection past the limit never reaches the app."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.WriteTransport subclasses, but have its methods
        transport = cast(asyncio.WriteTransport, transport)
        transport.write(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            b"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
            % (len(_REFUSED_BODY), _REFUSED_BODY)
        )
        transport.close()


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
        reply = web.Response(
            status=status,
            body=error_body("bad_request", text, field),
            content_type="application/json",
        )
        reply.force_close()
        return reply


def aiohttp_protocol(server: web.Server) -> asyncio.Protocol:
    """aiohttp's protocol for one connection, answering a request it cannot parse in JSON."""
    handler = server()
    handler.__class__ = _JSONErrorsRequestHandler
    return handler


class ConnectionLimit:
    """A protocol factory for loop.create_server: `connection(on_lost)` makes a connection's
    protocol, which calls `on_lost(itself)` when the connection ends; past `limit` open
    connections, a new one is answered 503 and closed."""

    def __init__(
        self, connection: Callable[[Callable[[Any], None]], asyncio.Protocol], limit: int
    ) -> None:
        self.connection = connection
        self.limit = limit
        self.open: set[Any] = set()

    def __call__(self) -> asyncio.BaseProtocol:
        if len(self.open) >= self.limit:
            return _Refuse()
        protocol = self.connection(self.open.discard)
        self.open.add(protocol)
        return protocol
