"""`jobserver serve`'s own POST /jobs (jobserver/http/fast_path.py): the plain successful enqueue is
answered without aiohttp, with the same reply; anything else goes to aiohttp, on the same
connection, and is answered as before. Raw sockets, so what is on the wire is what is checked."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import aiohttp
import pytest

from jobserver.http import listener as listener_module
from jobserver.server import JobServer

from ..conftest import ServerFactory

JOB = b'{"task": "echo", "args": [1], "delay": 3600}'
JSON = {"Content-Type": "application/json"}


def post(body: bytes = JOB, *, path: bytes = b"/jobs", headers: bytes = b"") -> bytes:
    return (
        b"POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n%s"
        b"Content-Length: %d\r\n\r\n%s" % (path, headers, len(body), body)
    )


GET_HEALTH = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"


class Conn:
    """One keep-alive connection; reads replies one at a time by their Content-Length."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, base: str) -> Conn:
        host, port = base.removeprefix("http://").rsplit(":", 1)
        return cls(*await asyncio.open_connection(host, int(port)))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def reply(self) -> tuple[int, dict[str, str], Any]:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 5)
        status_line, *lines = head.decode().split("\r\n")[:-2]
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        body = await asyncio.wait_for(self.reader.readexactly(int(headers["content-length"])), 5)
        return int(status_line.split()[1]), headers, json.loads(body)

    def close(self) -> None:
        self.writer.close()


async def serve(make_server: ServerFactory, **kwargs: Any) -> tuple[JobServer, str]:
    server = await make_server(**kwargs)
    [base] = await server.serve("127.0.0.1", 0)
    return server, base


def fast_answered(server: JobServer) -> int:
    assert server._listener is not None and server._listener.fast_path is not None
    return server._listener.fast_path.answered


async def test_a_plain_enqueue_is_answered_without_aiohttp_and_committed_first(
    make_server: ServerFactory,
) -> None:
    server, base = await serve(make_server)
    conn = await Conn.open(base)
    replies = []
    for _ in range(3):  # keep-alive: each request on the same connection
        await conn.send(post())
        replies.append(await conn.reply())
    conn.close()
    assert fast_answered(server) == 3
    ids = []
    for status, headers, body in replies:
        assert status == 202
        assert headers["content-type"] == "application/json"
        assert "date" in headers and "server" in headers
        assert body == {"id": body["id"], "status": "pending", "poll_url": f"/jobs/{body['id']}"}
        ids.append(body["id"])
        job = await server.store.get_job(body["id"])  # committed before the reply
        assert job is not None and (job.task, job.args) == ("echo", [1])
    assert len(set(ids)) == 3
    # the same reply aiohttp's handler gives (with the query string, it is aiohttp's)
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{base}/jobs?wait=0", data=JOB, headers=JSON) as resp,
    ):
        assert resp.status == 202
        theirs = await resp.json()
        assert resp.headers["Content-Type"] == "application/json"
    assert set(theirs) == set(replies[0][2])
    assert fast_answered(server) == 3


async def test_other_requests_go_to_aiohttp_on_the_same_connection_in_order(
    make_server: ServerFactory,
) -> None:
    server, base = await serve(make_server)
    conn = await Conn.open(base)
    # pipelined: an enqueue, a health check, another enqueue, in one write
    await conn.send(post() + GET_HEALTH + post(b'{"task": "echo", "args": [2]}'))
    first, health, second = [await conn.reply() for _ in range(3)]
    assert (first[0], health[0], second[0]) == (202, 200, 202)
    assert health[2]["status"] == "ok"
    assert second[2]["id"] == first[2]["id"] + 1
    await conn.send(post())  # the connection stays aiohttp's and keeps working
    assert (await conn.reply())[0] == 202
    conn.close()
    assert fast_answered(server) == 1
    assert server._listener is not None and server._listener.fast_path is not None
    assert server._listener.fast_path.handed_over == 1


@pytest.mark.parametrize(
    ("request_bytes", "status", "code", "field"),
    [
        (post(b'{"task": "nope"}'), 422, "invalid", "task"),
        (post(b'{"task": "echo", "priority": 1e9}'), 422, "invalid", "priority"),
        (post(b'{"task": "echo",'), 400, "bad_json", "body"),
        (post(b"[1, 2]"), 422, "invalid", "body"),
        (post(b"[" * 40 + b"]" * 40), 422, "invalid", "body"),
        (post(JOB).replace(b"application/json", b"text/plain"), 415, None, "Content-Type"),
        (post(b'{"task": "echo", "args": ["' + b"x" * 2_000_000 + b'"]}'), 413, "too_large", None),
    ],
)
async def test_a_refused_enqueue_gets_aiohttps_json_error_and_writes_nothing(
    make_server: ServerFactory, request_bytes: bytes, status: int, code: str | None, field: str
) -> None:
    server, base = await serve(make_server)
    conn = await Conn.open(base)
    await conn.send(request_bytes)
    got_status, headers, body = await conn.reply()
    conn.close()
    assert got_status == status, body
    assert headers["content-type"] == "application/json"
    if code is not None:
        assert body["error"]["code"] == code
    if field is not None:
        assert body["error"]["field"] == field
    assert sum((await server.store.count_by_status()).values()) == 0
    assert fast_answered(server) == 0


async def test_a_full_queue_is_refused_once_and_the_next_request_is_answered(
    make_server: ServerFactory,
) -> None:
    """A refusal from the store (here 429) leaves nothing written; aiohttp answers it."""
    server, base = await serve(make_server)
    conn = await Conn.open(base)
    await conn.send(post(b'{"task": "echo", "queue": "tiny", "delay": 60}'))
    assert (await conn.reply())[0] == 202
    await server.store.configure_queue("tiny", {"max_depth": 1}, server.clock.now())
    await conn.send(post(b'{"task": "echo", "queue": "tiny", "delay": 60}'))
    status, headers, body = await conn.reply()
    assert status == 429, body
    assert (body["error"]["code"], headers["retry-after"]) == ("queue_full", "1")
    conn.close()
    assert (await server.store.count_by_status())["pending"] == 1


async def test_connection_keep_alive_is_answered_here_and_close_by_aiohttp(
    make_server: ServerFactory,
) -> None:
    """Many clients (Python's requests, Node's agent) send `Connection: keep-alive`."""
    server, base = await serve(make_server)
    conn = await Conn.open(base)
    await conn.send(post(headers=b"Connection: keep-alive\r\n"))
    assert (await conn.reply())[0] == 202
    assert fast_answered(server) == 1
    await conn.send(post(headers=b"Connection: close\r\n"))
    status, headers, _ = await conn.reply()
    assert (status, headers.get("connection")) == (202, "close")
    assert await asyncio.wait_for(conn.reader.read(), 5) == b""  # closed after the reply
    conn.close()
    assert fast_answered(server) == 1
    assert (await server.store.count_by_status())["pending"] == 2


async def test_an_idempotency_key_header_is_honoured(make_server: ServerFactory) -> None:
    server, base = await serve(make_server)
    conn = await Conn.open(base)
    await conn.send(post(headers=b"Idempotency-Key: order-7\r\n"))
    first = await conn.reply()
    await conn.send(post(headers=b"Idempotency-Key: order-7\r\n"))
    again = await conn.reply()
    conn.close()
    assert (first[0], again[0]) == (202, 200)  # created, then the same job
    assert first[2]["id"] == again[2]["id"]
    assert fast_answered(server) == 2


async def test_with_tokens_only_a_full_token_is_answered_here(make_server: ServerFactory) -> None:
    server, base = await serve(make_server, tokens=["full-token"], read_tokens=["read-token"])
    cases = [
        (b"", 401),
        (b"Authorization: Bearer wrong\r\n", 401),
        (b"Authorization: Bearer read-token\r\n", 403),
        (b"Authorization: Bearer full-token\r\n", 202),
    ]
    for header, status in cases:
        conn = await Conn.open(base)
        await conn.send(post(headers=header))
        assert (await conn.reply())[0] == status, header
        conn.close()
    assert fast_answered(server) == 1
    assert (await server.store.count_by_status())["pending"] == 1


async def test_a_request_in_pieces_is_answered_when_whole(make_server: ServerFactory) -> None:
    server, base = await serve(make_server)
    conn = await Conn.open(base)
    whole = post()
    for piece in (whole[:7], whole[7:40], whole[40:-5], whole[-5:]):
        await conn.send(piece)
        await asyncio.sleep(0.02)
    status, _, body = await conn.reply()
    conn.close()
    assert status == 202 and await server.store.get_job(body["id"]) is not None
    assert fast_answered(server) == 1


async def test_chunked_and_expect_requests_are_aiohttps(make_server: ServerFactory) -> None:
    server, base = await serve(make_server)
    conn = await Conn.open(base)
    chunked = (
        b"POST /jobs HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(JOB), JOB)
    )
    await conn.send(chunked)
    assert (await conn.reply())[0] == 202
    conn.close()
    async with (
        aiohttp.ClientSession() as session,  # aiohttp's client sends Expect: 100-continue
        session.post(f"{base}/jobs", data=JOB, headers=JSON, expect100=True) as resp,
    ):
        assert resp.status == 202
    assert fast_answered(server) == 0
    assert (await server.store.count_by_status())["pending"] == 2


async def test_an_idle_connection_is_closed_after_the_keepalive_time(
    make_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listener_module, "KEEPALIVE_S", 0.3)
    _, base = await serve(make_server)
    conn = await Conn.open(base)
    await conn.send(post())
    assert (await conn.reply())[0] == 202
    assert await asyncio.wait_for(conn.reader.read(), 5) == b""  # closed by the server
    conn.close()


async def test_at_stop_requests_in_flight_are_answered_and_idle_connections_closed(
    make_server: ServerFactory,
) -> None:
    server, base = await serve(make_server)
    idle = await Conn.open(base)
    await idle.send(post())
    assert (await idle.reply())[0] == 202
    conns = [await Conn.open(base) for _ in range(20)]
    for conn in conns:
        conn.writer.write(post())
    await asyncio.gather(*(conn.writer.drain() for conn in conns))
    await asyncio.sleep(0)  # some are read, some not yet
    await server.stop(grace_period_s=0.5)
    assert await asyncio.wait_for(idle.reader.read(), 5) == b""  # closed by the server
    idle.close()
    answered = []
    for conn in conns:
        # one never read before the stop was not enqueued, and its client can tell
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            answered.append((await conn.reply())[2]["id"])
        conn.close()
    # each answered job was committed (checked on the store, opened again)
    await server.store.open()
    try:
        for job_id in answered:
            assert await server.store.get_job(job_id) is not None
    finally:
        await server.store.close()


def raw_post(head: bytes, body: bytes = JOB) -> bytes:
    """POST /jobs with exactly the header lines given (each ending CRLF), then the body."""
    return b"POST /jobs HTTP/1.1\r\n%s\r\n%s" % (head, body)


def _post(*lines: bytes, body: bytes = JOB) -> bytes:
    """raw_post with Host, Content-Type and a true Content-Length unless `lines` give them."""
    head = b"".join(line + b"\r\n" for line in lines)
    low = head.lower()
    if b"host:" not in low:
        head = b"Host: localhost\r\n" + head
    if b"content-type:" not in low:
        head += b"Content-Type: application/json\r\n"
    if b"content-length:" not in low and b"transfer-encoding:" not in low:
        head += b"Content-Length: %d\r\n" % len(body)
    return raw_post(head, body)


# Malformed and edge-case requests, each sent to the fast path's listener and to aiohttp
# alone. The first four the hand-written fast path answered itself (202) or dropped, where
# aiohttp answers 400.
EDGE_CASES = {
    "no Host": raw_post(b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(JOB)),
    "two Hosts": _post(b"Host: localhost", b"Host: y"),
    "a Content-Length of 5,000 digits": _post(b"Content-Length: " + b"9" * 5000),
    "gzip that is not gzip": _post(b"Content-Encoding: gzip"),
    "a space in a header name": _post(b"X Trace: 1"),
    "a space before the colon": _post(b"X-Trace : 1"),
    "a header line without a colon": _post(b"Bogus"),
    "a folded header line (obs-fold)": _post(b"X-Trace: 1", b"  2"),
    "a NUL in a header value": _post(b"X-Trace: a\x00b"),
    "a DEL in a header value": _post(b"X-Trace: a\x7fb"),
    "a Content-Length with a plus sign": _post(b"Content-Length: +%d" % len(JOB)),
    "a negative Content-Length": _post(b"Content-Length: -1"),
    "a Content-Length in hex": _post(b"Content-Length: 0x10"),
    "two Content-Lengths": _post(b"Content-Length: %d" % len(JOB), b"Content-Length: 1"),
    "a Content-Length and chunked": _post(
        b"Content-Length: %d" % len(JOB), b"Transfer-Encoding: chunked"
    ),
    "a list of lengths": _post(b"Content-Length: %d, %d" % (len(JOB), len(JOB))),
    "bare LF line ends": b"POST /jobs HTTP/1.1\nHost: localhost\nContent-Type: application/json"
    b"\nContent-Length: %d\n\n%s" % (len(JOB), JOB),
    "a header of 20 KB": _post(b"X-Big: " + b"a" * 20_000),
    # well formed: both accept them
    "header names in lower case": _post(
        b"host: localhost", b"content-type: application/json", b"content-length: %d" % len(JOB)
    ),
    "a Content-Length with leading zeros": _post(b"Content-Length: 000%d" % len(JOB)),
    "tabs around a value": _post(b"Content-Type:\tapplication/json\t"),
    "an unknown header": _post(b"X-Trace: abc"),
}


async def first_status(base: str, request: bytes) -> int | None:
    """The status of the first reply on a fresh connection (None: closed with no reply)."""
    conn = await Conn.open(base)
    try:
        await conn.send(request)
        head = await asyncio.wait_for(conn.reader.readuntil(b"\r\n\r\n"), 5)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    finally:
        conn.close()
    return int(head.split(b" ", 2)[1])


@pytest.mark.parametrize("case", sorted(EDGE_CASES))
async def test_an_edge_case_request_is_answered_as_aiohttp_answers_it(
    make_server: ServerFactory, case: str
) -> None:
    """The same bytes to the fast path's listener and to aiohttp alone: the same status, and
    nothing enqueued by either where it is an error."""
    server, fast = await serve(make_server)
    assert server._listener is not None and server._listener.fast_path is not None
    # aiohttp's own handler for the same application, on a listener of its own
    aiohttp_only = await asyncio.get_running_loop().create_server(
        server._listener.runner.server,  # type: ignore[arg-type]
        "127.0.0.1",
        0,
    )
    try:
        port = aiohttp_only.sockets[0].getsockname()[1]
        request = EDGE_CASES[case]
        expected = await first_status(f"http://127.0.0.1:{port}", request)
        assert await first_status(fast, request) == expected
    finally:
        aiohttp_only.close()
    created = (await server.store.count_by_status())["pending"]
    if expected is not None and expected < 300:
        assert created == 2  # one job each
    else:
        assert created == 0 and fast_answered(server) == 0
