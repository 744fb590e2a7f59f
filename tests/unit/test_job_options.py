"""Each job option is declared once (jobserver/job_options.py): the core's checks, the HTTP
API's names and OpenAPI schema, and the client's arguments all follow that table."""

from __future__ import annotations

import inspect
import math
from datetime import UTC, datetime
from typing import Any

import pytest

from jobserver.client import AsyncClient, Client, _job_body, _workflow_node
from jobserver.errors import ValidationError
from jobserver.http.errors import in_api_names
from jobserver.http.openapi import build_spec
from jobserver.http.schema import parse_enqueue
from jobserver.job_options import BY_NAME, OPTIONS, QUEUE_SETTINGS, Option, check_options
from jobserver.models import Backoff

POSITIONAL = {"task", "args", "kwargs"}


@pytest.mark.parametrize("method", [Client.enqueue, AsyncClient.enqueue])
def test_the_clients_enqueue_takes_exactly_the_declared_options(method: Any) -> None:
    params = inspect.signature(method).parameters
    keyword = {n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert keyword == {o.name for o in OPTIONS} - POSITIONAL
    assert [n for n in params if n in POSITIONAL] == ["task", "args", "kwargs"]


def test_the_openapi_job_request_has_exactly_the_declared_fields_in_the_apis_names() -> None:
    spec = build_spec(["echo"])
    job = spec["components"]["schemas"]["JobRequest"]
    assert list(job["properties"]) == [o.wire for o in OPTIONS]
    assert job["properties"]["delay"]["maximum"] == BY_NAME["delay_s"].hi
    assert job["properties"]["timeout"]["exclusiveMinimum"] == 0
    assert "Not with `run_at`." in job["properties"]["delay"]["description"]
    assert "Not with `delay`." in job["properties"]["run_at"]["description"]
    backoff = spec["components"]["schemas"]["Backoff"]["properties"]
    assert list(backoff) == ["base", "factor", "cap"]


def _too_low(option: Option) -> Any:
    assert option.lo is not None
    if option.kind == "integer":
        return int(option.lo) - 1
    return option.lo if option.open_lo else math.nextafter(option.lo, -math.inf)


NUMERIC = [o for o in OPTIONS if o.kind in ("integer", "number")]


@pytest.mark.parametrize("option", NUMERIC, ids=[o.name for o in NUMERIC])
def test_the_core_holds_each_numeric_option_to_its_declared_bounds(option: Option) -> None:
    assert option.hi is not None
    assert check_options({"task": "t", option.name: option.hi})[option.name] == option.hi
    for bad in (_too_low(option), option.hi + 1, "1", True):
        with pytest.raises(ValidationError) as caught:
            check_options({"task": "t", option.name: bad})
        assert caught.value.field == option.name


def test_the_core_names_python_fields_and_the_api_names_its_own() -> None:
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"delay_s": 1, "run_at": 5.0}, "delay_s", "delay"),
        ({"deadline": 5.0, "deadline_s": 1}, "deadline", "deadline"),
        ({"timeout_s": 0}, "timeout_s", "timeout"),
        ({"backoff": {"base_s": 0}}, "backoff.base_s", "backoff.base"),
        ({"backoff": {"bogus": 1}}, "backoff.bogus", "backoff.bogus"),
        ({"kwargs": {"ctx": 1}}, "kwargs.ctx", "kwargs.ctx"),
        ({"queue": "no spaces"}, "queue", "queue"),
        ({"priority": 10**6}, "priority", "priority"),
        ({"depends_on": [0]}, "depends_on", "depends_on"),
        ({"on_dependency_failure": "ignore"}, "on_dependency_failure", "on_dependency_failure"),
    ]
    for given, python_field, api_field in cases:
        with pytest.raises(ValidationError) as caught:
            check_options({"task": "t", **given})
        assert caught.value.field == python_field, given
        assert in_api_names(caught.value).field == api_field, given
    with pytest.raises(ValidationError) as caught:
        check_options({"task": "t", "deadline": 5.0, "deadline_s": 1})
    # the Python API's error speaks Python (it once said `deadline_in`), the API's its own
    assert caught.value.message == "give deadline or deadline_s, not both"
    assert in_api_names(caught.value).message == "give deadline or deadline_in, not both"


def test_renaming_leaves_a_clients_quoted_value_alone() -> None:
    renamed = in_api_names(ValidationError("task", "unknown task 'delay_s' (not delay_s)"))
    assert renamed.message == "unknown task 'delay_s' (not delay)"


def test_a_request_body_and_the_clients_body_are_each_others_mirror() -> None:
    """The client writes what parse_enqueue reads: each option back under its Python name."""
    when = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    options: dict[str, Any] = {
        "queue": "mail",
        "priority": 5,
        "run_at": when,
        "max_retries": 2,
        "timeout_s": 9.5,
        "backoff": Backoff(base_s=2, factor=3, cap_s=60),
        "idempotency_key": "k",
        "deadline_s": 30,
        "unique_key": "u",
        "depends_on": [7, 8],
        "pass_result": True,
        "on_dependency_failure": "cancel",
        "callback_url": "https://example.com/done",
    }
    body = _job_body("send", [1], {"to": "a"}, **options)
    assert set(body) == {BY_NAME[n].wire for n in options} | POSITIONAL
    back = parse_enqueue(body, None)
    assert check_options(back)["run_at"] == when.timestamp()
    assert back["backoff"] == {"base_s": 2, "factor": 3, "cap_s": 60}
    assert check_options(back)["timeout_s"] == 9.5
    for name in set(options) - {"run_at", "backoff"}:
        assert back[name] == options[name], name
    # a workflow's job is written the same way
    assert _workflow_node({"task": "send", "args": (1,), "kwargs": {"to": "a"}, **options}) == body


def test_null_means_not_given_except_where_declared_otherwise() -> None:
    assert parse_enqueue({"task": "t", "priority": None}, None) == {"task": "t"}
    for wire in ("args", "kwargs", "queue"):
        with pytest.raises(ValidationError) as caught:
            parse_enqueue({"task": "t", wire: None}, None)
        assert caught.value.field == wire


def test_the_openapi_queue_settings_are_the_declared_ones() -> None:
    props = build_spec(["echo"])["components"]["schemas"]["QueueSettings"]["properties"]
    assert list(props) == [o.wire for o in QUEUE_SETTINGS]
    assert props["rate_limit"]["exclusiveMinimum"] == 0
    assert props["paused"] == {"type": "boolean", "description": QUEUE_SETTINGS[0].description}


def test_a_time_is_an_aware_datetime_rfc_3339_text_or_epoch_seconds() -> None:
    when = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    for given in (when, "2030-01-02T03:04:05Z", "2030-01-02T04:04:05+01:00", when.timestamp()):
        assert check_options({"task": "t", "run_at": given})["run_at"] == when.timestamp()
    for bad in (datetime(2030, 1, 2), "2030-01-02T03:04:05", "tomorrow", float("nan"), True):
        with pytest.raises(ValidationError) as caught:
            check_options({"task": "t", "deadline": bad})
        assert caught.value.field == "deadline"
    with pytest.raises(ValidationError) as caught:  # over HTTP, text only
        parse_enqueue({"task": "t", "run_at": when.timestamp()}, None)
    assert caught.value.field == "run_at"
