"""Schemathesis against the live server and the spec it serves at /openapi.json: every check,
positive and negative data, the examples, coverage and fuzzing phases; 0 failures."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from schemathesis import Case, GenerationMode

from jobserver import JobServer, api
from jobserver.api import DECIMAL, MAX_KEY_LEN, MAX_WAIT_S
from jobserver.errors import ValidationError

# Examples per operation in the fuzzing phase; for a longer run:
#   JOBSERVER_FUZZ_EXAMPLES=1000 JOBSERVER_FUZZ_SEED=7 pytest tests/test_schemathesis.py
MAX_EXAMPLES = int(os.environ.get("JOBSERVER_FUZZ_EXAMPLES", "50"))
SEED = int(os.environ.get("JOBSERVER_FUZZ_SEED", "20261127"))
# Long polls are real: a generated `wait` of 60 on a pending job holds the call for a minute.
# Valid waits are cut to this before the call (invalid ones are sent as generated).
TEST_WAIT_S = 0.05


class LiveServer:
    """A JobServer on 127.0.0.1 with its own event loop in a thread, so that the synchronous
    Schemathesis client can call it from the test's thread."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.url = ""
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="live-jobserver", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to the test's thread
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        # no hosts for the http task: generated jobs must not reach anything
        server = JobServer(db=self.db, http_allowed_hosts=(), grace_period_s=0.5)
        await server.start()
        try:
            [self.url] = await server.serve("127.0.0.1", 0)
            self._ready.set()
            await self._stop.wait()
        finally:
            await server.stop(grace_period_s=0.5)

    def __enter__(self) -> LiveServer:
        self._thread.start()
        if not self._ready.wait(30) or self._error is not None:
            raise RuntimeError("the live server did not start") from self._error
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        assert not self._thread.is_alive(), "the live server did not stop"
        if self._error is not None:
            raise self._error


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer(tmp_path_factory.mktemp("schemathesis") / "jobs.db") as server:
        yield server


@pytest.fixture(scope="module")
def api_schema(live_server: LiveServer) -> Any:
    config = schemathesis.Config(seed=SEED)
    schema = schemathesis.openapi.from_url(f"{live_server.url}/openapi.json", config=config)
    schema.config.update(base_url=live_server.url, request_timeout=10)
    schema.config.generation.update(
        modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
        max_examples=MAX_EXAMPLES,
        deterministic=True,
        database="none",
    )
    schema.config.phases.update(phases=["examples", "coverage", "fuzzing"])
    return schema


# Every operation: GET /openapi.json served the schema, which is left out unless a filter
# selects it.
schema = (
    schemathesis.pytest.from_fixture("api_schema")
    .include(path_regex="^/")
    .exclude(path="/events")  # a stream that ends only when the server stops; see test_events
)


def shorten_wait(case: Case) -> None:
    """Cut a valid long-poll `wait` to TEST_WAIT_S; leave anything else as generated."""
    query = case.query
    value = query.get("wait") if query else None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return
    text = str(value)
    if DECIMAL.fullmatch(text) and TEST_WAIT_S < float(text) <= MAX_WAIT_S:  # as api.py reads it
        query["wait"] = TEST_WAIT_S


def agree_on_the_idempotency_key(case: Case) -> None:
    """The spec cannot say that the Idempotency-Key header and the idempotency_key field, when
    both are valid, must be equal (the server refuses a disagreement with 422): make them so."""
    header = (case.headers or {}).get("Idempotency-Key")
    body = case.body.get("idempotency_key") if isinstance(case.body, dict) else None
    valid = [isinstance(k, str) and 1 <= len(k) <= MAX_KEY_LEN for k in (header, body)]
    if all(valid) and header != body:
        case.body["idempotency_key"] = header


def _valid_text(value: Any, max_len: int) -> bool:
    return isinstance(value, str) and 1 <= len(value) <= max_len


def _drop_what_needs_server_state(job: Any) -> None:
    """Fields whose validity the spec cannot express, dropped when they are otherwise valid
    (so a case stays negative if it was): a callback_url needs a webhook secret and an
    allowed host, depends_on ids that exist, a deadline after the job's start."""
    if not isinstance(job, dict):
        return
    if _valid_text(job.get("callback_url"), 2000):
        job.pop("callback_url")
    deps = job.get("depends_on")
    if (
        isinstance(deps, list)
        and len(deps) <= api.MAX_DEPENDENCIES
        and all(_whole(d) and 1 <= d < 10**18 for d in deps)
    ):
        job.pop("depends_on")
    if _valid_time(job.get("deadline")):
        job.pop("deadline")
    deadline_in = job.get("deadline_in")
    if _number(deadline_in) and 0 < deadline_in <= api.MAX_DELAY_S:
        job.pop("deadline_in")


def _valid_time(value: Any) -> bool:
    try:
        api.parse_rfc3339("deadline", value)
    except ValidationError:
        return False
    return True


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _whole(value: Any) -> bool:
    return _number(value) and float(value).is_integer()


def _walk_workflow(node: Any) -> None:
    if not isinstance(node, dict):
        return
    for kind in ("chain", "group"):
        if isinstance(node.get(kind), list):
            for item in node[kind]:
                _walk_workflow(item)
            return
    chord = node.get("chord")
    if isinstance(chord, dict):
        for item in chord.get("group") or []:
            _walk_workflow(item)
        _walk_workflow(chord.get("callback"))
        return
    _drop_what_needs_server_state(node)


def only_what_this_server_can_accept(case: Case) -> None:
    body = case.body
    path = case.operation.path
    if path == "/jobs":
        _drop_what_needs_server_state(body)
    elif path == "/jobs/batch" and isinstance(body, dict) and isinstance(body.get("jobs"), list):
        for item in body["jobs"]:
            _drop_what_needs_server_state(item)
    elif path == "/workflows":
        _walk_workflow(body)
    elif path == "/schedules" and isinstance(body, dict):
        # a cron expression and a time zone name are checked by their libraries, not a pattern
        if _valid_text(body.get("cron"), 200):
            body["cron"] = "*/5 * * * *"
        if _valid_text(body.get("timezone"), 100):
            body["timezone"] = "UTC"


@pytest.fixture
def lazy_schema_on_pytest_9_2(request: pytest.FixtureRequest) -> None:
    """schemathesis 4.32's lazy loader reads `node._nodeid`, which pytest 9.2 no longer has."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


@pytest.mark.usefixtures("lazy_schema_on_pytest_9_2")
@schema.parametrize()
def test_the_api_keeps_to_its_spec(case: Case) -> None:
    shorten_wait(case)
    agree_on_the_idempotency_key(case)
    only_what_this_server_can_accept(case)
    case.call_and_validate()
