"""Limits on clients: open connections, header size, slow bodies."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvloop

from jobserver.server import JobServer

from ..conftest import ServerFactory, eventually


def host_port(base: str) -> tuple[str, int]:
    host, port = base.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


async def test_connections_past_the_limit_get_503_and_then_room_again(
    make_server: ServerFactory,
) -> None:
    server = await make_server(max_connections=3)
    [base] = await server.serve("127.0.0.1", 0)
    host, port = host_port(base)
    idle = [await asyncio.open_connection(host, port) for _ in range(3)]
    for r, w in idle:  # an answered request proves the server has counted the connection
        w.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert (await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)).startswith(b"HTTP/1.1 200")
    reader, writer = await asyncio.open_connection(host, port)
    head, _, body = (await asyncio.wait_for(reader.read(), 5)).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503")
    assert json.loads(body)["error"]["code"] == "unavailable"
    writer.close()
    for _, w in idle:
        w.close()

    async def healthz() -> int:  # the server frees the slots once it sees the closes
        async with aiohttp.ClientSession() as session, session.get(f"{base}/healthz") as resp:
            return resp.status

    await eventually(healthz, lambda status: status == 200)


async def test_oversized_headers_are_refused(make_server: ServerFactory) -> None:
    server = await make_server()
    [base] = await server.serve("127.0.0.1", 0)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/healthz", headers={"X-Big": "x" * 10_000}) as resp:
            assert resp.status in (400, 431)
        async with session.get(f"{base}/healthz") as resp:
            assert resp.status == 200


async def test_a_request_that_cannot_be_parsed_gets_a_json_error(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    server = await make_server()
    [base] = await server.serve("127.0.0.1", 0)
    host, port = host_port(base)
    cases = [  # (request head, field named, words of the message)
        (b"GARBAGE / HTTP/1.1\r\nHost: localhost\r\n\r\n", "request line", "method"),
        (
            b"POST /jobs HTTP/1.1\r\nHost: localhost\r\nContent-Length: abc\r\n\r\n",
            "headers",
            "Content-Length",
        ),
        (b"GET /jobs HTTP/1.1\r\nHost: localhost\r\nBad Header\r\n\r\n", "headers", "header"),
        (
            b"GET /jobs HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"x" * 10_000 + b"\r\n\r\n",
            "headers",
            "8190 bytes",
        ),
    ]
    for head, field, words in cases:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(head)
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(), 5)  # then the server hangs up
        writer.close()
        status_line, _, rest = reply.partition(b"\r\n")
        headers, _, body = rest.partition(b"\r\n\r\n")
        assert status_line.split()[1] == b"400", reply
        assert b"Content-Type: application/json" in headers, reply
        error = json.loads(body)["error"]
        assert (error["code"], error["field"]) == ("bad_request", field), error
        assert words in error["message"], error
    async with aiohttp.ClientSession() as session, session.get(f"{base}/healthz") as resp:
        assert resp.status == 200
    # Logged as the client's mistake: a line each, no error with a traceback.
    refused = [r for r in caplog.records if r.name == "jobserver.http.connections"]
    assert [r.levelno for r in refused] == [logging.INFO] * len(cases)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_body_sent_too_slowly_is_cut_off(make_server: ServerFactory) -> None:
    server = await make_server(body_timeout_s=0.3)
    [base] = await server.serve("127.0.0.1", 0)
    host, port = host_port(base)
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        b"POST /jobs HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n" + b'{"task": "ec'
    )
    await writer.drain()
    reply = await asyncio.wait_for(reader.read(4096), 5)
    head, _, body = reply.partition(b"\r\n\r\n")
    writer.close()
    assert head.startswith(b"HTTP/1.1 408") and b"Connection: close" in head
    assert json.loads(body)["error"]["field"] == "body"
    assert sum((await server.store.count_by_status()).values()) == 0


async def test_a_client_dribbling_its_request_head_is_cut_off(make_server: ServerFactory) -> None:
    server = await make_server(header_timeout_s=0.3)
    [base] = await server.serve("127.0.0.1", 0)
    host, port = host_port(base)
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")  # never finishes its headers
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
    writer.close()
    # a prompt client on a new connection, and keep-alive requests after the first, are fine
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            async with session.get(f"{base}/healthz") as resp:
                assert resp.status == 200
            await asyncio.sleep(0.2)


def test_under_uvloop_as_serve_runs_the_limit_and_the_fast_path_work(tmp_path: Path) -> None:
    """`jobserver serve` runs on uvloop, whose transports are not asyncio's classes."""

    async def scenario() -> tuple[bytes, bytes]:
        async with JobServer(db=tmp_path / "uv.db", max_connections=2) as server:
            [base] = await server.serve("127.0.0.1", 0)
            host, port = host_port(base)
            first = await asyncio.open_connection(host, port)
            body = b'{"task": "echo", "delay": 60}'
            first[1].write(
                b"POST /jobs HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            accepted = await asyncio.wait_for(first[0].readuntil(b"}"), 5)
            second = await asyncio.open_connection(host, port)
            second[1].write(
                b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"
            )  # counted once answered
            await asyncio.wait_for(second[0].readuntil(b"\r\n\r\n"), 5)
            reader, writer = await asyncio.open_connection(host, port)  # past the limit
            refused = await asyncio.wait_for(reader.read(), 5)
            for _, w in (first, second, (reader, writer)):
                w.close()
            return accepted, refused

    accepted, refused = uvloop.run(scenario())
    assert accepted.startswith(b"HTTP/1.1 202 Accepted")
    head, _, body = refused.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503")
    assert json.loads(body)["error"]["code"] == "unavailable"


FIRST_REQUESTS = {
    "answered by the fast path": (
        b"POST /jobs HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b'Content-Length: 29\r\n\r\n{"task": "echo", "delay": 60}',
        b"HTTP/1.1 202",
    ),
    # aiohttp's from then on: its requests had no deadline at all
    "handed to aiohttp": (b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n", b"HTTP/1.1 200"),
}


async def _answered_first(base: str, first: str) -> tuple[asyncio.StreamReader, Any]:
    host, port = host_port(base)
    reader, writer = await asyncio.open_connection(host, port)
    request, status = FIRST_REQUESTS[first]
    writer.write(request)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(status)
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    await reader.readexactly(length)
    return reader, writer


async def _cut_off_while_dribbling(
    reader: asyncio.StreamReader, writer: Any, pieces: list[bytes]
) -> None:
    """Send `pieces` 0.1 s apart (well within any idle time): the server must close."""

    async def dribble() -> None:
        for piece in pieces:
            writer.write(piece)
            await asyncio.sleep(0.1)

    dribbling = asyncio.create_task(dribble())
    try:
        assert await asyncio.wait_for(reader.read(), 3) == b""  # closed by the server
    finally:
        dribbling.cancel()
        writer.close()


@pytest.mark.parametrize("first", list(FIRST_REQUESTS))
async def test_a_later_request_head_dribbled_on_a_kept_alive_connection_is_cut_off(
    make_server: ServerFactory, first: str
) -> None:
    """After one quick request, a client sent a header byte every 20 s: the head deadline
    covered only a connection's first request (and none once aiohttp had the connection), and
    1,024 such connections held the server. Every request head now has the deadline."""
    server = await make_server(header_timeout_s=0.4)
    [base] = await server.serve("127.0.0.1", 0)
    reader, writer = await _answered_first(base, first)
    head = b"POST /jobs HTTP/1.1\r\nHost: localhost\r\nX-Slow: 1234567890"
    await _cut_off_while_dribbling(reader, writer, [bytes([b]) for b in head])  # never whole


async def test_a_body_dribbled_to_aiohttp_on_a_kept_alive_connection_is_cut_off(
    make_server: ServerFactory,
) -> None:
    server = await make_server(header_timeout_s=0.4, body_timeout_s=0.4)
    [base] = await server.serve("127.0.0.1", 0)
    reader, writer = await _answered_first(base, "handed to aiohttp")
    writer.write(
        b"POST /jobs/batch HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n"
    )
    await _cut_off_while_dribbling(reader, writer, [b" "] * 1000)


async def test_kept_alive_requests_to_aiohttp_in_their_time_are_all_answered(
    make_server: ServerFactory,
) -> None:
    # The deadlines follow each request: a connection whose requests come whole, slowly one
    # after another, and a pipelined pair, are answered in full.
    server = await make_server(header_timeout_s=0.3, body_timeout_s=0.3)
    [base] = await server.serve("127.0.0.1", 0)
    reader, writer = await _answered_first(base, "handed to aiohttp")
    try:
        for _ in range(3):
            await asyncio.sleep(0.4)  # longer than either deadline, between requests
            writer.write(FIRST_REQUESTS["handed to aiohttp"][0] * 2)
            for _ in range(2):
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                assert head.startswith(b"HTTP/1.1 200")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
    finally:
        writer.close()
