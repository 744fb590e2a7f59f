"""Limits on what clients may hold open: connections, and the size of request lines and
headers. (Body size and JSON depth are checked where the body is read, in api.py.)"""

from __future__ import annotations

import asyncio

from aiohttp import web

MAX_LINE_BYTES = 8190  # request line
MAX_HEADER_BYTES = 8190  # each header field

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


class ConnectionLimit:
    """A protocol factory for loop.create_server: aiohttp's, up to `limit` connections."""

    def __init__(self, server: web.Server, limit: int) -> None:
        self.server = server
        self.limit = limit

    def __call__(self) -> asyncio.BaseProtocol:
        if len(self.server.connections) >= self.limit:
            return _Refuse()
        protocol: asyncio.BaseProtocol = self.server()
        return protocol
