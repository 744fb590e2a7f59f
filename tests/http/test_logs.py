"""Logs: job lines carry the job's fields (the traceback in one of its own), and the optional
access log has a line for each request, the fast path's included."""

from __future__ import annotations

import json
import logging

import aiohttp
import pytest

from jobserver import JobServer, JobState, PermanentError, SystemClock
from jobserver.logs import JsonFormatter, TextFormatter
from jobserver.tasks import Registry, task

from ..conftest import ServerFactory

reg = Registry()


@task(registry=reg, name="logs_refuse")
async def logs_refuse(reason: str) -> None:
    raise PermanentError(reason)


async def _served(make_server: ServerFactory, **kwargs: object) -> tuple[JobServer, str]:
    server = await make_server(tasks=list(reg), clock=SystemClock(), **kwargs)
    [address] = await server.serve("127.0.0.1", 0)
    return server, address


async def test_a_job_that_failed_for_good_logs_its_fields_and_traceback_apart(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server, _ = await _served(make_server)
    caplog.set_level(logging.WARNING, logger="jobserver.worker")
    job = await server.enqueue("logs_refuse", ["no card"], queue="billing")
    assert (await server.wait_for(job.id, 10)).status == JobState.FAILED
    [record] = [r for r in caplog.records if "failed for good" in r.getMessage()]
    fields = json.loads(JsonFormatter().format(record))
    assert {k: fields[k] for k in ("job_id", "task", "queue", "attempt", "error_type")} == {
        "job_id": job.id,
        "task": "logs_refuse",
        "queue": "billing",
        "attempt": 1,
        "error_type": "PermanentError",
    }
    assert "Traceback" in fields["traceback"] and "no card" in fields["traceback"]
    assert "Traceback" not in fields["message"]  # once in the message, now a field of its own
    text = TextFormatter("%(message)s").format(record)
    assert text.splitlines()[0] == fields["message"] and "    Traceback" in text


@pytest.mark.parametrize("on", [True, False])
async def test_the_access_log_has_a_line_for_each_request_when_on(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture, on: bool
) -> None:
    server, address = await _served(make_server, access_log=on)
    caplog.set_level(logging.INFO, logger="jobserver.access")
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{address}/jobs", json={"task": "logs_refuse", "args": ["x"]}
        ) as r:
            assert r.status == 202
            job_id = (await r.json())["id"]
        async with session.get(f"{address}/jobs/{job_id}?wait=0") as r:
            assert r.status == 200
        async with session.get(f"{address}/jobs/987654") as r:
            assert r.status == 404
    lines = [r for r in caplog.records if r.name == "jobserver.access"]
    if not on:
        assert lines == []
        return
    seen = [(r.method, r.path, r.status) for r in lines]  # type: ignore[attr-defined]
    assert seen == [
        ("POST", "/jobs", 202),  # answered by the fast path
        ("GET", f"/jobs/{job_id}?wait=0", 200),
        ("GET", "/jobs/987654", 404),
    ]
    assert server._listener is not None and server._listener.fast_path is not None
    assert server._listener.fast_path.answered == 1
    assert all(r.client == "127.0.0.1" and r.ms >= 0 for r in lines)  # type: ignore[attr-defined]
