"""Schemathesis against the live server and the spec it serves at /openapi.json: every check,
positive and negative data, the examples, coverage and fuzzing phases; 0 failures.

The default run is the HTTP contract in short: the examples and coverage phases and a few fuzzed
cases per operation. The full fuzz (`pytest -m e2e`) makes MAX_EXAMPLES cases per operation.
A failure prints a curl command that replays it: the output is not sanitized (the generated
values are no secrets, and "[Filtered]" in their place would not replay)."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012
from schemathesis import Case, GenerationMode

from jobserver import JobServer, codec
from jobserver.errors import ValidationError
from jobserver.http import schema as fields
from jobserver.http.schema import DECIMAL, MAX_WAIT_S
from jobserver.job_options import MAX_DELAY_S, MAX_DEPENDENCIES, MAX_KEY_LEN, parse_rfc3339
from jobserver.tasks import external_task

# Fuzzed cases per operation: a few in the default run, MAX_EXAMPLES in the full one (-m e2e):
#   JOBSERVER_FUZZ_EXAMPLES=1000 JOBSERVER_FUZZ_SEED=7 pytest -m e2e tests/http/test_schemathesis.py
SHORT_EXAMPLES = 10
MAX_EXAMPLES = int(os.environ.get("JOBSERVER_FUZZ_EXAMPLES", "50"))
SEED = int(os.environ.get("JOBSERVER_FUZZ_SEED", "20261127"))
# The full fuzz's own budget (the whole run is one pytest item): pytest-timeout's default would
# strike inside a generated case, which Hypothesis then reports as that case being flaky.
FULL_RUN_TIMEOUT_S = 300 + 6 * MAX_EXAMPLES
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
        server = JobServer(
            db=self.db,
            http_allowed_hosts=(),
            grace_period_s=0.5,
            tasks=[external_task("resize", queue="images")],  # the queue a lease may name
        )
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


def configured_schema(server: LiveServer, max_examples: int) -> Any:
    config = schemathesis.Config(seed=SEED)
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json", config=config)
    schema.config.update(base_url=server.url, request_timeout=10)
    # the curl command printed for a failure sends the generated values, not "[Filtered]"
    schema.config.output.sanitization.update(enabled=False)
    schema.config.generation.update(
        modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
        max_examples=max_examples,
        deterministic=True,
        database="none",
        # NUL in any string is refused with a 422 by design (PostgreSQL cannot store it; the
        # spec's description says so and tests/http/test_keys.py tests it); JSON Schema has no
        # way to say "no NUL anywhere in args" that the generator would keep to.
        allow_x00=False,
    )
    schema.config.phases.update(phases=["examples", "coverage", "fuzzing"])
    return schema


@pytest.fixture(scope="module")
def api_schema(live_server: LiveServer) -> Any:
    return configured_schema(live_server, SHORT_EXAMPLES)


@pytest.fixture(scope="module")
def full_api_schema(live_server: LiveServer) -> Any:
    return configured_schema(live_server, MAX_EXAMPLES)


# Every operation: GET /openapi.json served the schema, which is left out unless a filter
# selects it.
def every_operation(fixture: str) -> Any:
    return (
        schemathesis.pytest.from_fixture(fixture)
        .include(path_regex="^/")
        .exclude(path="/events")  # a stream that ends only when the server stops; see test_events
    )


schema = every_operation("api_schema")
full_schema = every_operation("full_api_schema")


def shorten_wait(case: Case) -> None:
    """Cut a valid long-poll `wait` (a job's query, a lease's `wait_s`) to TEST_WAIT_S; leave
    anything else as generated."""
    body = case.body
    if isinstance(body, dict) and case.path == "/leases":
        wait_s = body.get("wait_s")
        if type(wait_s) in (int, float) and TEST_WAIT_S < wait_s <= 60:
            body["wait_s"] = TEST_WAIT_S
    query = case.query
    value = query.get("wait") if query else None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return
    text = str(value)
    if DECIMAL.fullmatch(text) and TEST_WAIT_S < float(text) <= MAX_WAIT_S:  # as schema.py reads it
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
    # An external task's jobs wait in its own queue, and no other task's may: the spec's
    # `queue` cannot tie itself to `task`.
    queue = job.get("queue")
    external = job.get("task") == "resize"
    if _valid_text(queue, 100) and (queue == "images") != external:
        job.pop("queue")
    deps = job.get("depends_on")
    if (
        isinstance(deps, list)
        and len(deps) <= MAX_DEPENDENCIES
        and all(_whole(d) and 1 <= d < 10**18 for d in deps)
    ):
        job.pop("depends_on")
    if _valid_time(job.get("deadline")):
        job.pop("deadline")
    deadline_in = job.get("deadline_in")
    if _number(deadline_in) and 0 < deadline_in <= MAX_DELAY_S:
        job.pop("deadline_in")


def _one_item_per_key(job: Any, keys: set[str]) -> None:
    """Items of a batch may share an idempotency key only with one payload (else 422), which
    the spec cannot say: a valid key an earlier item gave is dropped."""
    if not isinstance(job, dict) or not _valid_text(job.get("idempotency_key"), MAX_KEY_LEN):
        return
    if job["idempotency_key"] in keys:
        job.pop("idempotency_key")
    else:
        keys.add(job["idempotency_key"])


def _valid_time(value: Any) -> bool:
    try:
        parse_rfc3339("deadline", value)
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
        keys: set[str] = set()
        for item in body["jobs"]:
            _drop_what_needs_server_state(item)
            _one_item_per_key(item, keys)
    elif path == "/workflows":
        _walk_workflow(body)
    elif path.startswith("/leases/") and isinstance(body, dict):
        # In words only: a report names each job once (the spec cannot say unique by job_id)
        items = body.get("items")
        if isinstance(items, list) and all(isinstance(i, dict) for i in items):
            first: dict[Any, Any] = {}
            for item in items:
                job_id = item.get("job_id")
                number = isinstance(job_id, int | float) and not isinstance(job_id, bool)
                first.setdefault(float(job_id) if number else repr(job_id), item)
            if len(first) < len(items):
                body["items"] = list(first.values())
    elif path == "/schedules" and isinstance(body, dict):
        _drop_what_needs_server_state(body)
        # a cron expression and a time zone name are checked by their libraries, not a pattern
        if _valid_text(body.get("cron"), 200):
            body["cron"] = "*/5 * * * *"
        if _valid_text(body.get("timezone"), 100):
            body["timezone"] = "UTC"


def prepare(case: Case) -> None:
    """Make the generated case one this server can answer as the spec says. A component an edit
    changed is assigned back, which has Schemathesis validate it again: it takes a change made
    in place before the call as the value it generated, so a negative case that an edit made
    valid (dropping `deadline` and `deadline_in`, each valid, that it gave together) was still
    expected to be refused."""
    generated = {name: copy.deepcopy(getattr(case, name)) for name in ("query", "body")}
    shorten_wait(case)
    agree_on_the_idempotency_key(case)
    only_what_this_server_can_accept(case)
    for name, value in generated.items():
        if getattr(case, name) != value:
            setattr(case, name, getattr(case, name))


def holds_nul(value: Any) -> bool:
    """A NUL character in any string of `value`, an object's keys included."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(holds_nul(k) or holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(holds_nul(v) for v in value)
    return False


def nests_too_deep(body: Any) -> bool:
    return codec.nesting_depth(body, fields.MAX_NESTING + 1) > fields.MAX_NESTING


def check(case: Case, session: requests.Session) -> None:
    prepare(case)
    meta = case.meta
    if meta is not None and meta.generation.mode.is_positive and nests_too_deep(case.body):
        # The spec says in words only that a body nests at most MAX_NESTING levels deep (a
        # workflow's nodes count too): a valid body past that is refused, as the words say.
        response = case.call(session=session)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["field"] == "body", response.text
        return
    inexact = (
        fields.field_with_inexact_integer(json.dumps(case.body).encode())
        if meta is not None and meta.generation.mode.is_positive and isinstance(case.body, dict)
        else None
    )
    if inexact is not None:
        # Likewise in words: integers outside -2^63..2^64-1 are refused (not kept exactly).
        response = case.call(session=session)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["field"] == inexact, response.text
        return
    positive = meta is not None and meta.generation.mode.is_positive
    if positive and isinstance(case.body, dict | list) and holds_nul(case.body):
        # Likewise in words: no string may hold NUL (allow_x00 above keeps it out of values,
        # not out of the names of an object's keys).
        response = case.call(session=session)
        assert response.status_code == 422, response.text
        return
    case.call_and_validate(session=session)


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    """One connection kept alive for every case (Schemathesis opens one for each otherwise), and
    no proxy or .netrc look-up in the environment for each call."""
    with requests.Session() as session:
        session.trust_env = False
        yield session


@pytest.fixture
def lazy_schema_on_pytest_9_2(request: pytest.FixtureRequest) -> None:
    """schemathesis 4.32's lazy loader reads `node._nodeid`, which pytest 9.2 no longer has."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


@pytest.mark.usefixtures("lazy_schema_on_pytest_9_2")
@schema.parametrize()
def test_the_api_keeps_to_its_spec(case: Case, http: requests.Session) -> None:
    check(case, http)


@pytest.mark.e2e
@pytest.mark.timeout(FULL_RUN_TIMEOUT_S)
@pytest.mark.usefixtures("lazy_schema_on_pytest_9_2")
@full_schema.parametrize()
def test_the_api_keeps_to_its_spec_in_full(case: Case, http: requests.Session) -> None:
    check(case, http)


# -- POST /workflows: bodies the spec and the server once disagreed on ---------------------------
ECHO = {"task": "echo"}
ISSUE_16 = {
    "max_retries": None,
    "args": [[{}, [None, False, -1.0354104609481765e248]]],
    "run_at": None,
    "task": "echo",
    "unique_key": None,
    "timeout": 312672.7223594662,
    "kwargs": {"Inf": "BEGIN IMMEDIATE"},
}
WORKFLOW_BODIES: list[tuple[dict[str, Any], bool]] = [
    # the workflow's policy beside its root, as the client and `jobserver workflow` send it:
    # the spec used to refuse it (no such field on any node) while the server took it
    ({"chain": [ECHO, ECHO], "on_dependency_failure": "cancel"}, True),
    ({"group": [ECHO], "on_dependency_failure": "fail"}, True),
    ({"chord": {"group": [ECHO], "callback": ECHO}, "on_dependency_failure": "cancel"}, True),
    ({**ECHO, "on_dependency_failure": "cancel"}, True),
    ({"chain": [ECHO], "on_dependency_failure": None}, True),  # null: not given
    ({"chain": [ECHO], "on_dependency_failure": "ignore"}, False),
    # ... and on a job inside: the spec refused it, the server took it and ignored it
    ({"chain": [ECHO, {**ECHO, "on_dependency_failure": "cancel"}]}, False),
    ({"group": [{**ECHO, "on_dependency_failure": "fail"}]}, False),
    ({"chord": {"group": [ECHO], "callback": {**ECHO, "on_dependency_failure": "fail"}}}, False),
    ({"chain": [{"chain": [ECHO], "on_dependency_failure": "cancel"}]}, False),
    # issue 16's case, as generated: negative for giving both deadline and deadline_in. The
    # fuzz test dropped the two (each valid alone), and the server rightly took what was left.
    (
        ISSUE_16 | {"deadline": "1295-12-21T18:22:27+14:15", "deadline_in": 25596919.515404828},
        False,
    ),
    (ISSUE_16, True),
]


def post_json(url: str, body: Any) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def test_workflow_bodies_get_the_answer_the_spec_gives(live_server: LiveServer) -> None:
    with urllib.request.urlopen(f"{live_server.url}/openapi.json", timeout=10) as response:
        spec = json.loads(response.read())
    body_schema = spec["paths"]["/workflows"]["post"]["requestBody"]["content"]
    registry: Registry[Any] = Registry().with_resource(
        "urn:jobserver:openapi", DRAFT202012.create_resource(spec)
    )
    validator = Draft202012Validator(
        {"$ref": "urn:jobserver:openapi" + body_schema["application/json"]["schema"]["$ref"]},
        registry=registry,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )
    for body, valid in WORKFLOW_BODIES:
        assert validator.is_valid(body) == valid, f"the spec: {body}"
        status, answer = post_json(f"{live_server.url}/workflows", body)
        assert status == (202 if valid else 422), f"{body} -> {status} {answer}"
