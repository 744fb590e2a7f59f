"""The listening socket: `HttpListener` serves the app (aiohttp), behind the fast path for
single enqueues (fast_path.py) and the connection limits (connections.py)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aiohttp import web

from .app import create_app
from .connections import KEEPALIVE_S, MAX_HEADER_BYTES, MAX_LINE_BYTES, ConnectionLimit
from .context import poll_prefix
from .fast_path import FastEnqueue

if TYPE_CHECKING:
    from ..server import JobServer


class HttpListener:
    """The API served on a socket: `open()` listens, `close()` stops taking connections, lets
    the requests in flight be answered, then ends the rest."""

    def __init__(self, server: JobServer) -> None:
        self.server = server
        self.app = create_app(server)
        self.runner = web.AppRunner(
            self.app,
            access_log=None,
            handle_signals=False,
            max_line_size=MAX_LINE_BYTES,
            max_field_size=MAX_HEADER_BYTES,
            keepalive_timeout=KEEPALIVE_S,
        )
        self.fast_path: FastEnqueue | None = None
        self._socket: asyncio.Server | None = None

    async def open(self, host: str, port: int) -> list[str]:
        """Listen; returns the addresses listened on (http://host:port)."""
        await self.runner.setup()
        self.fast_path = FastEnqueue(
            self.server,
            self.runner.server,  # type: ignore[arg-type]
            poll_prefix(self.app),
            keepalive_s=KEEPALIVE_S,
            header_timeout_s=self.server.header_timeout_s,
        )
        factory = ConnectionLimit(self.fast_path.connection, self.server.max_connections)
        self._socket = await asyncio.get_running_loop().create_server(
            factory, host, port, backlog=1024, reuse_address=True
        )
        addresses = []
        for sock in self._socket.sockets:
            addr, bound_port = sock.getsockname()[:2]
            addresses.append(
                f"http://[{addr}]:{bound_port}" if ":" in addr else f"http://{addr}:{bound_port}"
            )
        return addresses

    async def close(self) -> None:
        if self._socket is not None:
            self._socket.close()  # no new connections
            self._socket = None
        if self.fast_path is not None:
            await self.fast_path.drain(timeout_s=10.0)  # its requests in flight are answered
            self.fast_path = None
        await self.runner.cleanup()  # lets requests in flight finish
