"""The OpenAPI 3.1 description of the HTTP API, built in code from the limits schema.py enforces.

`build_spec()` returns the document as a dict; the server serves it at `GET /openapi.json`
(computed once per application, with the server's own task names as the `task` enum).
tests/http/test_openapi.py keeps it true: every route is in it, and the real responses validate
against it; tests/http/test_schemathesis.py fuzzes the live server with it."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from .. import codec
from ..job_options import (
    BACKOFF_OPTIONS,
    BY_NAME,
    DEAD_LETTER_SELECTION,
    KEY_SETTINGS,
    MAX_FAIRNESS_KEY_LEN,
    MAX_ID,
    MAX_KEY_LEN,
    OPTIONS,
    QUEUE_SETTINGS,
    SCHEDULE_JOB_FIELDS,
    SCHEDULE_OPTIONS,
    Option,
)
from ..job_options import QUEUE_PATTERN as QUEUE_PATTERN_TEXT
from ..leasing import FAILURE, LEASE_REQUEST, LEASED, MAX_ITEMS, PROGRESS, RENEWAL
from ..models import JobState
from ..render import (
    ATTEMPT_RECORD,
    DEAD_LETTER_RECORD,
    JOB_RECORD,
    KEY_RECORD,
    QUEUE_RECORD,
    SCHEDULE_RECORD,
    STEP_RECORD,
)
from ..workflows import MAX_WORKFLOW_JOBS
from . import schema

SCHEMAS = "#/components/schemas/"
RESPONSES = "#/components/responses/"
PARAMETERS = "#/components/parameters/"
ERROR_CODES = [
    "timeout",
    "queue_full",
    "bad_json",
    "bad_body",
    "bad_request",
    "not_found",
    "method_not_allowed",
    "conflict",
    "too_large",
    "unsupported_media_type",
    "invalid",
    "unavailable",
    "internal",
    "http_error",
    "unauthorized",
    "forbidden",
    "host_not_allowed",
    "too_many_failures",
]
QUEUE_PATTERN = f"^{QUEUE_PATTERN_TEXT}$"
CURSOR_PATTERN = "^[0-9]{1,18}$"


def ref(name: str) -> dict[str, str]:
    return {"$ref": SCHEMAS + name}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with JSON null allowed too (a null optional field means "not given")."""
    out = dict(schema)
    kind = out["type"]
    out["type"] = [kind, "null"] if isinstance(kind, str) else [*kind, "null"]
    return out


def _json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": _json_content(schema)}


def _error_schema(*codes: str, batch: bool = False) -> dict[str, Any]:
    """An error body whose `code` is one of `codes`."""
    return {
        "allOf": [
            ref("BatchError" if batch else "Error"),
            {"properties": {"error": {"properties": {"code": {"enum": list(codes)}}}}},
        ]
    }


# -- schemas --------------------------------------------------------------------------------------
def _option_schema(option: Option) -> dict[str, Any]:
    """One job option's JSON schema, from its declaration (job_options.OPTIONS)."""
    kind = option.kind
    if kind == "backoff":
        return {"anyOf": [ref("Backoff"), {"type": "null"}], "description": option.description}
    out: dict[str, Any]
    if kind == "time":
        out = {"type": "string", "format": "date-time"}
    elif kind == "choice":
        # null in the enum too where null means "not given"
        out = {"type": "string", "enum": [*option.choices, *([None] if option.nullable else [])]}
    elif kind == "ids":
        item = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
        out = {"type": "array", "maxItems": option.max_len, "items": item}
    elif kind == "object":
        # Any names but `ctx` (refused with 422, field `kwargs.ctx`). Not said in the schema
        # (`propertyNames: {not: ...}`): generated clients read that as "no keys at all".
        out = {"type": "object", "additionalProperties": True}
    elif kind in ("integer", "number"):
        out = {"type": kind, "maximum": option.hi}
        out["exclusiveMinimum" if option.open_lo else "minimum"] = option.lo
    elif kind == "string":
        out = {"type": "string", "minLength": 1, "maxLength": option.max_len}
        if option.pattern is not None:
            out["pattern"] = f"^{option.pattern.pattern}$"
    else:
        out = {"type": kind}
    words = [option.description]
    if kind == "time":
        words.append("An RFC 3339 time with a zone.")
    words += [f"Not with `{BY_NAME[o].wire}`." for o in _excluded_by(option)]
    if option.default is not None:
        default = option.default
        text = default if isinstance(default, str) else codec.dumps(_plain(default)).decode()
        words.append(f"Default: `{text}`.")
    out["description"] = " ".join(words)
    return _nullable(out) if option.nullable else out


def _excluded_by(option: Option) -> list[str]:
    """The options not to give with this one (the rule is declared on one of the pair)."""
    return [o.name for o in OPTIONS if o.excludes == option.name] + (
        [option.excludes] if option.excludes else []
    )


def _plain(value: Any) -> Any:
    """A default as JSON would hold it."""
    if isinstance(value, tuple):
        return list(value)
    return dict(value) if isinstance(value, Mapping) else value


WORKFLOW_SETS = ("depends_on", "pass_result", "on_dependency_failure")  # a workflow's, not a job's


def _job_request(tasks: list[str] | None, *, in_workflow: bool = False) -> dict[str, Any]:
    properties = {
        o.wire: _option_schema(o) for o in OPTIONS if not (in_workflow and o.name in WORKFLOW_SETS)
    }
    if tasks is not None:
        properties["task"]["enum"] = tasks
    return {
        "type": "object",
        "description": (
            "A job to enqueue. Optional fields may be null, which means not given, except `args`,"
            " `kwargs` and `queue`. JSON values nest at most"
            f" {schema.MAX_NESTING} levels deep; NaN and Infinity are refused, and so are"
            " integers outside -2^63 to 2^64-1 (they would not be kept exactly: send them as"
            " strings)."
        ),
        "required": ["task"],
        "additionalProperties": False,
        "properties": properties,
        # pairs of options that exclude each other
        "allOf": [
            {
                "not": {
                    "required": [o.wire, BY_NAME[o.excludes].wire],
                    "properties": {
                        o.wire: {"type": _option_schema(o)["type"][0]},
                        BY_NAME[o.excludes].wire: {
                            "type": _option_schema(BY_NAME[o.excludes])["type"][0]
                        },
                    },
                }
            }
            for o in OPTIONS
            if o.excludes is not None
        ],
    }


def _backoff_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "Retry backoff; missing fields come from the task's policy.",
        "additionalProperties": False,
        "properties": {o.wire: _option_schema(o) for o in BACKOFF_OPTIONS},
    }


def _workflow_schemas(tasks: list[str] | None) -> dict[str, Any]:
    """WorkflowRequest, the body of POST /workflows: a job, or a chain, group or chord of
    WorkflowNodes, which may also give `on_dependency_failure` for every job of the workflow.
    A WorkflowNode is the same without that field: routes/workflows.post_workflow takes it off
    the root, and refuses it anywhere else."""
    policy = _option_schema(BY_NAME["on_dependency_failure"])
    policy["description"] = (
        "Only on the root (the body itself), for the whole workflow: what a dependency that"
        f" did not succeed does to the jobs after it. Default: `{policy['enum'][0]}`."
    )
    root_only = {"on_dependency_failure": policy}
    job = _job_request(tasks, in_workflow=True)
    job["properties"].update(root_only)
    nodes = {"type": "array", "minItems": 1, "items": ref("WorkflowNode")}

    def only(kind: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "required": [kind],
            "additionalProperties": False,
            "properties": {kind: schema, **root_only},
        }

    return {
        "WorkflowJob": job,
        "WorkflowRequest": {
            "description": (
                "A workflow: a job, or a chain, group or chord of nodes; the root alone may give"
                " `on_dependency_failure`, for all of its jobs. The body nests at most"
                f" {schema.MAX_NESTING} levels deep (JSON arrays and objects, the body itself"
                f" included) and holds at most {MAX_WORKFLOW_JOBS} jobs."
            ),
            "anyOf": [
                ref("WorkflowJob"),
                only("chain", nodes),
                only("group", nodes),
                only(
                    "chord",
                    {
                        "type": "object",
                        "required": ["group", "callback"],
                        "additionalProperties": False,
                        "properties": {"group": nodes, "callback": ref("WorkflowNode")},
                    },
                ),
            ],
        },
        "WorkflowNode": {
            "description": "A node inside a workflow: a job, chain, group or chord as the root"
            " is, without `on_dependency_failure`.",
            "allOf": [ref("WorkflowRequest")],
            "properties": {"on_dependency_failure": False},
        },
    }


def _schemas(tasks: list[str] | None, external_queues: list[str]) -> dict[str, Any]:
    timestamp = {"type": "string", "format": "date-time"}
    job_error = {
        "type": "object",
        "description": "The last failed attempt's error.",
        "required": ["type", "message"],
        "additionalProperties": False,
        "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
    }
    return {
        "JobRequest": _job_request(tasks),
        "Backoff": _backoff_schema(),
        "BatchRequest": {
            "type": "object",
            "required": ["jobs"],
            "additionalProperties": False,
            "properties": {
                "jobs": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": schema.MAX_BATCH,
                    "items": ref("JobRequest"),
                }
            },
        },
        "JobStatus": {"type": "string", "enum": [s.value for s in JobState]},
        "Accepted": {
            "type": "object",
            "required": ["id", "status", "poll_url"],
            "additionalProperties": False,
            "properties": {
                "id": {"type": "integer", "minimum": 1},
                "status": ref("JobStatus"),
                "poll_url": {"type": "string", "description": "Where to GET the job."},
            },
        },
        "BatchAccepted": {
            "type": "object",
            "required": ["ids", "created"],
            "additionalProperties": False,
            "properties": {
                "ids": {
                    "type": "array",
                    "minItems": 1,
                    "items": {"type": "integer", "minimum": 1},
                    "description": "The jobs' ids, in the order they were given.",
                },
                "created": {
                    "type": "array",
                    "items": {"type": "boolean"},
                    "description": "For each: false when an idempotency or unique key returned"
                    " an earlier job.",
                },
            },
        },
        "JobError": job_error,
        "Job": _record(
            {f.name: f.schema for f in JOB_RECORD},
            optional={
                "waiting": {
                    "anyOf": [ref("Waiting"), {"type": "null"}],
                    "description": "For a pending job: why it has not started.",
                }
            },
        ),
        "Waiting": {
            "type": "object",
            "required": ["code", "message"],
            "additionalProperties": False,
            "properties": {
                "code": {
                    "type": "string",
                    "enum": [
                        "scheduled",
                        "queue_paused",
                        "queue_concurrency_limit",
                        "queue_rate_limit",
                        "waiting_for_dependencies",
                        "due",
                    ],
                },
                "message": {"type": "string"},
                "until": {**timestamp, "description": "When it may start, if known."},
            },
        },
        **_workflow_schemas(tasks),
        "WorkflowAccepted": _record(
            {
                "id": {"type": "integer", "minimum": 1},
                "jobs": {"type": "array", "items": {"type": "integer"}},
                "poll_url": {"type": "string"},
            }
        ),
        "Workflow": _record(
            {
                "id": {"type": "integer", "minimum": 1},
                "status": {
                    "type": "string",
                    "enum": ["pending", "running", "succeeded", "failed", "cancelled"],
                },
                "jobs": {"type": "array", "items": ref("Job")},
            }
        ),
        "Queue": _record({f.name: f.schema for f in QUEUE_RECORD}),
        "QueueList": _record({"items": {"type": "array", "items": ref("Queue")}}),
        "Key": _record({f.name: f.schema for f in KEY_RECORD}),
        "KeySettings": {
            "type": "object",
            "description": "A fairness key's own settings to change; null gives one back to"
            " its queue's key_* default.",
            "additionalProperties": False,
            "properties": {o.wire: _option_schema(o) for o in KEY_SETTINGS},
        },
        "QueueSettings": {
            "type": "object",
            "description": "The settings to change; null lifts a limit.",
            "additionalProperties": False,
            "properties": {o.wire: _option_schema(o) for o in QUEUE_SETTINGS},
        },
        "ScheduleRequest": {
            "type": "object",
            "required": ["name", "task", "cron"],
            "additionalProperties": False,
            "properties": {
                **{name: _job_request(tasks)["properties"][name] for name in SCHEDULE_JOB_FIELDS},
                **{o.wire: _option_schema(o) for o in SCHEDULE_OPTIONS},
            },
        },
        "Schedule": _record({f.name: f.schema for f in SCHEDULE_RECORD}),
        "ScheduleList": _record({"items": {"type": "array", "items": ref("Schedule")}}),
        "DeadLetter": _record({f.name: f.schema for f in DEAD_LETTER_RECORD}),
        "Attempt": _record({f.name: f.schema for f in ATTEMPT_RECORD}),
        "Throughput": _record(
            {
                "bucket_s": {"type": "number", "description": "Seconds a bucket."},
                "points": {
                    "type": "array",
                    "items": _record(
                        {
                            "at": {**timestamp, "description": "The bucket's start."},
                            "succeeded": {"type": "integer", "minimum": 0},
                            "failed": {
                                "type": "integer",
                                "minimum": 0,
                                "description": "Failed for good.",
                            },
                        }
                    ),
                },
            }
        ),
        "PurgeRequest": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                o.wire: _option_schema(o)
                for o in DEAD_LETTER_SELECTION
                if o.name in ("limit", "dry_run")
            },
        },
        "PurgeResult": _record(
            {
                "matched": {"type": "integer", "minimum": 0},
                "more": {"type": "boolean", "description": "More are pending than `limit`."},
                "cancelled": {"type": "array", "items": {"type": "integer"}},
            }
        ),
        "DeadLetterSelection": {
            "type": "object",
            "description": "Which dead letters: each filter left out matches all.",
            "additionalProperties": False,
            "properties": {o.wire: _option_schema(o) for o in DEAD_LETTER_SELECTION},
        },
        **{
            name: _record(
                {
                    "matched": {"type": "integer", "minimum": 0},
                    "more": {"type": "boolean", "description": "More matched than `limit`."},
                    "dead_letter_ids": {"type": "array", "items": {"type": "integer"}},
                    "sample": {
                        "type": "array",
                        "items": ref("DeadLetter"),
                        "description": "The first of them, whole.",
                    },
                    done: {"type": "array", "items": {"type": "integer"}, "description": words},
                }
            )
            for name, done, words in (
                ("DeadLettersRequeued", "job_ids", "The new jobs (none in a dry run)."),
                ("DeadLettersDeleted", "deleted", "The dead letters deleted (none in a dry run)."),
            )
        },
        "Step": _record({f.name: f.schema for f in STEP_RECORD}),
        "StepList": _record(
            {
                "job_id": {"type": "integer", "minimum": 1},
                "items": {"type": "array", "items": ref("Step"), "description": "In order."},
            }
        ),
        "LeaseRequest": {
            "type": "object",
            "required": ["queues"],
            "additionalProperties": False,
            "properties": {
                **{o.wire: _option_schema(o) for o in LEASE_REQUEST},
                "queues": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 100,
                    # the server's external tasks' queues, when it has any (another is a 422)
                    "items": {"type": "string", "enum": external_queues}
                    if external_queues
                    else {"type": "string", "pattern": QUEUE_PATTERN},
                    "description": LEASE_REQUEST[0].description,
                },
            },
        },
        "Leases": _record(
            {
                "leases": {
                    "type": "array",
                    "items": _record(
                        {
                            "job": ref("Job"),
                            "lease_token": {
                                "type": "string",
                                "description": "Show it on every report of this job.",
                            },
                        }
                    ),
                }
            }
        ),
        **{
            name: {
                "type": "object",
                "required": ["items"],
                "additionalProperties": False,
                "properties": {
                    "items": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": MAX_ITEMS,
                        "description": "Each job at most once (a job named twice is a 422).",
                        "items": {
                            "type": "object",
                            "required": ["job_id", "lease_token", *required],
                            "additionalProperties": False,
                            "properties": {
                                **{o.wire: _option_schema(o) for o in (*LEASED, *fields)},
                                **extra,
                            },
                        },
                    },
                    **{o.wire: _option_schema(o) for o in body_fields},
                },
            }
            for name, fields, extra, required, body_fields in (
                ("LeasedJobs", (), {}, [], ()),
                ("LeaseRenewal", PROGRESS, {}, [], RENEWAL),
                (
                    "LeaseResults",
                    (),
                    {"result": {"description": "What the task returned: any JSON."}},
                    [],
                    (),
                ),
                ("LeaseFailures", FAILURE, {}, ["message"], ()),
            )
        },
        "LeasesRenewed": _record(
            {
                "renewed": {"type": "array", "items": {"type": "integer"}},
                "lost": {
                    "type": "array",
                    "items": {"type": "integer"},
                    "description": "No longer this worker's: stop them and report nothing.",
                },
                "cancel_requested": {
                    "type": "array",
                    "items": {"type": "integer"},
                    "description": "A client asked to cancel: stop them and release or fail.",
                },
            }
        ),
        "LeaseOutcomes": _record(
            {
                "items": {
                    "type": "array",
                    "items": _record(
                        {
                            "job_id": {"type": "integer", "minimum": 1},
                            "status": {
                                "type": "string",
                                "enum": ["succeeded", "pending", "failed", "cancelled", "lost"],
                                "description": "What the report did: the job's state now, or"
                                " `lost` when the lease was gone (nothing changed).",
                            },
                        }
                    ),
                }
            }
        ),
        "SignalRequest": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "payload": {
                    "description": "Any JSON (at most 64 KiB): what ctx.wait_for_event returns."
                }
            },
        },
        "SignalSent": _record(
            {
                "id": {"type": "integer", "minimum": 1},
                "key": {"type": "string"},
                "woken": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "Jobs that were waiting for the key, now due; 0: the signal"
                    " is kept for the next job that waits for it.",
                },
            }
        ),
        "AttemptList": _record(
            {
                "job_id": {"type": "integer", "minimum": 1},
                "items": {
                    "type": "array",
                    "items": ref("Attempt"),
                    "description": "First attempt first.",
                },
            }
        ),
        "JobPage": _page_schema("Job"),
        "DeadLetterPage": _page_schema("DeadLetter"),
        "Health": {
            "type": "object",
            "required": ["status"],
            "additionalProperties": False,
            "properties": {"status": {"const": "ok"}},
        },
        "Ready": {
            "type": "object",
            "required": ["status"],
            "additionalProperties": False,
            "properties": {"status": {"const": "ready"}},
        },
        "Error": {
            "type": "object",
            "required": ["error"],
            "additionalProperties": False,
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message", "field"],
                    "additionalProperties": False,
                    "properties": {
                        "code": {"type": "string", "enum": ERROR_CODES},
                        "message": {"type": "string"},
                        "field": {
                            "type": ["string", "null"],
                            "description": "The field, parameter or header at fault.",
                        },
                    },
                }
            },
        },
        "BatchError": {
            "type": "object",
            "description": "An error for a batch: `items` lists each invalid job (the first"
            f" {schema.MAX_ITEM_ERRORS}).",
            "required": ["error"],
            "additionalProperties": False,
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message", "field"],
                    "additionalProperties": False,
                    "properties": {
                        "code": {"type": "string", "enum": ERROR_CODES},
                        "message": {"type": "string"},
                        "field": {"type": ["string", "null"]},
                        "items": {
                            "type": "array",
                            "maxItems": schema.MAX_ITEM_ERRORS,
                            "items": {
                                "type": "object",
                                "required": ["index", "field", "message"],
                                "additionalProperties": False,
                                "properties": {
                                    "index": {"type": "integer", "minimum": 0},
                                    "field": {"type": ["string", "null"]},
                                    "message": {"type": "string"},
                                },
                            },
                        },
                    },
                }
            },
        },
    }


def _record(properties: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    """An object with exactly these fields, all of them always there (and the optional ones
    when they apply)."""
    return {
        "type": "object",
        "required": list(properties),
        "additionalProperties": False,
        "properties": {**properties, **(optional or {})},
    }


def _page_schema(item: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["items", "next_cursor"],
        "additionalProperties": False,
        "properties": {
            "items": {"type": "array", "items": ref(item), "description": "Newest first."},
            "next_cursor": {
                "anyOf": [{"type": "string", "pattern": CURSOR_PATTERN}, {"type": "null"}],
                "description": "Pass as `cursor` for the next page; null on the last page.",
            },
        },
    }


def _responses() -> dict[str, Any]:
    retry_after = {
        "Retry-After": {
            "description": "Seconds to wait before trying again.",
            "required": True,
            "schema": {"type": "string", "pattern": "^[0-9]+$"},
        }
    }
    allow = {
        "Allow": {
            "description": "The methods this path takes.",
            "required": True,
            "schema": {"type": "string"},
        }
    }
    return {
        "BadJson": _response(
            "The body is not valid JSON.", _error_schema("bad_json", "bad_request")
        ),
        "NotFound": _response("No such job, dead letter or route.", _error_schema("not_found")),
        "MethodNotAllowed": {
            **_response("Wrong method for this path.", _error_schema("method_not_allowed")),
            "headers": allow,
        },
        "Conflict": _response(
            "The request clashes with the current state.", _error_schema("conflict")
        ),
        "TooLarge": _response("The body is over the size limit.", _error_schema("too_large")),
        "UnsupportedMediaType": _response(
            "The body is not sent as application/json.", _error_schema("unsupported_media_type")
        ),
        "Invalid": _response(
            "A bad value; `field` names the field, query parameter or header.",
            _error_schema("invalid"),
        ),
        "BatchInvalid": _response(
            "A bad batch; nothing was enqueued.", _error_schema("invalid", batch=True)
        ),
        "Unavailable": {
            **_response("The database cannot take writes now.", _error_schema("unavailable")),
            "headers": retry_after,
        },
        "QueueFull": {
            **_response(
                "The queue holds its maximum of pending jobs; `field` is `queue`. (Or, with"
                " tokens set, `too_many_failures`: see the TooManyFailures response.)",
                _error_schema("queue_full", "too_many_failures"),
            ),
            "headers": retry_after,
        },
        "Unauthorized": {
            **_response(
                "Tokens are set and the request has no valid `Authorization: Bearer` token.",
                _error_schema("unauthorized"),
            ),
            "headers": {
                "WWW-Authenticate": {
                    "description": '`Bearer realm="jobserver"`.',
                    "required": True,
                    "schema": {"type": "string"},
                }
            },
        },
        "Forbidden": _response(
            "A read-only token on a write (`forbidden`), or, with no token set, a `Host` that"
            " is neither localhost nor a --server-name (`host_not_allowed`).",
            _error_schema("forbidden", "host_not_allowed"),
        ),
        "TooManyFailures": {
            **_response(
                "Too many failed authentications from this client; a valid token still gets in.",
                _error_schema("too_many_failures"),
            ),
            "headers": retry_after,
        },
    }


def _parameters() -> dict[str, Any]:
    def path_id(what: str) -> dict[str, Any]:
        return {
            "name": "id",
            "in": "path",
            "required": True,
            "description": f"The {what}'s id.",
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
        }

    return {
        "JobId": path_id("job"),
        "DeadLetterId": path_id("dead letter"),
        "WorkflowId": path_id("workflow"),
        "QueueName": {
            "name": "name",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "pattern": QUEUE_PATTERN},
        },
        "FairnessKey": {
            "name": "key",
            "in": "path",
            "required": True,
            "description": "The fairness key (percent-encoded).",
            "schema": {"type": "string", "minLength": 1, "maxLength": MAX_FAIRNESS_KEY_LEN},
        },
        "ScheduleName": {
            "name": "name",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "minLength": 1},
        },
        "Wait": {
            "name": "wait",
            "in": "query",
            "description": "Long-poll: wait up to this many seconds for the job to end.",
            "schema": {"type": "number", "minimum": 0, "maximum": schema.MAX_WAIT_S},
        },
        "Limit": {
            "name": "limit",
            "in": "query",
            "description": f"Page size. Default: {schema.DEFAULT_PAGE}.",
            "schema": {"type": "integer", "minimum": 1, "maximum": schema.MAX_PAGE},
        },
        "Cursor": {
            "name": "cursor",
            "in": "query",
            "description": "The `next_cursor` of the previous page.",
            "schema": {"type": "string", "pattern": CURSOR_PATTERN},
        },
        "IdempotencyKey": {
            "name": "Idempotency-Key",
            "in": "header",
            "description": "The same key with the same payload returns the original job (200);"
            " with another payload it is refused (409).",
            "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LEN},
        },
        "Traceparent": {
            "name": "traceparent",
            "in": "header",
            "description": "W3C trace context: the job's, unless the body gives `traceparent`;"
            " one that is not valid is ignored.",
            "schema": {"type": "string"},
        },
    }


# -- operations -----------------------------------------------------------------------------------
def _param(name: str) -> dict[str, str]:
    return {"$ref": PARAMETERS + name}


def _errors(*names: str) -> dict[str, Any]:
    status = {
        "BadJson": "400",
        "NotFound": "404",
        "Conflict": "409",
        "TooLarge": "413",
        "UnsupportedMediaType": "415",
        "Invalid": "422",
        "BatchInvalid": "422",
        "Unavailable": "503",
        "QueueFull": "429",
    }
    return {status[name]: {"$ref": RESPONSES + name} for name in names}


def _body(schema: str) -> dict[str, Any]:
    return {"required": True, "content": _json_content(ref(schema))}


BODY_ERRORS = ("BadJson", "TooLarge", "UnsupportedMediaType")


def _paths() -> dict[str, Any]:
    return {
        "/jobs": {
            "post": {
                "operationId": "enqueue",
                "tags": ["jobs"],
                "summary": "Enqueue a job",
                "description": "Answers once the job is committed. With `wait`, answers when"
                " the job ends (200 and the Job) or the wait runs out (the usual 202).",
                "parameters": [_param("Wait"), _param("IdempotencyKey"), _param("Traceparent")],
                "requestBody": _body("JobRequest"),
                "responses": {
                    "200": _response(
                        "An idempotency key matched an earlier job with the same payload (the"
                        " job's id), or the job ended within `wait` (the Job).",
                        {"anyOf": [ref("Accepted"), ref("Job")]},
                    ),
                    "202": _response("Enqueued.", ref("Accepted")),
                    **_errors(*BODY_ERRORS, "Conflict", "Invalid", "QueueFull", "Unavailable"),
                },
            },
            "get": {
                "operationId": "list_jobs",
                "tags": ["jobs"],
                "summary": "List jobs, newest first",
                "parameters": [
                    {"name": "status", "in": "query", "schema": ref("JobStatus")},
                    {"name": "queue", "in": "query", "schema": {"type": "string"}},
                    {"name": "task", "in": "query", "schema": {"type": "string"}},
                    {
                        "name": "search",
                        "in": "query",
                        "description": "A part of the task's or the queue's name, any case.",
                        "schema": {"type": "string", "minLength": 1, "maxLength": 200},
                    },
                    _param("Limit"),
                    _param("Cursor"),
                ],
                "responses": {
                    "200": _response("A page of jobs.", ref("JobPage")),
                    **_errors("Invalid", "Unavailable"),
                },
            },
        },
        "/jobs/batch": {
            "post": {
                "operationId": "enqueue_batch",
                "tags": ["jobs"],
                "summary": f"Enqueue 1 to {schema.MAX_BATCH} jobs in one transaction",
                "description": "Every job is valid and enqueued, or none is.",
                "requestBody": _body("BatchRequest"),
                "responses": {
                    "202": _response("Enqueued.", ref("BatchAccepted")),
                    **_errors(*BODY_ERRORS, "Conflict", "BatchInvalid", "QueueFull", "Unavailable"),
                },
            }
        },
        "/jobs/{id}": {
            "get": {
                "operationId": "get_job",
                "tags": ["jobs"],
                "summary": "Get a job",
                "parameters": [_param("JobId"), _param("Wait")],
                "responses": {
                    "200": _response(
                        "The job (with `wait`: once it ended, or as it stands).", ref("Job")
                    ),
                    **_errors("NotFound", "Invalid", "Unavailable"),
                },
            },
            "delete": {
                "operationId": "delete_job",
                "tags": ["jobs"],
                "summary": "Delete a finished job",
                "description": "Only a succeeded, failed or cancelled job (else 409).",
                "parameters": [_param("JobId")],
                "responses": {
                    "204": {"description": "Deleted."},
                    **_errors("NotFound", "Conflict", "Unavailable"),
                },
            },
        },
        "/jobs/{id}/cancel": {
            "post": {
                "operationId": "cancel_job",
                "tags": ["jobs"],
                "summary": "Cancel a job",
                "description": "A pending job is cancelled at once; a running one is asked to"
                " stop. Cancelling a cancelled job is fine; a succeeded or failed one is 409.",
                "parameters": [_param("JobId")],
                "responses": {
                    "200": _response("The job.", ref("Job")),
                    **_errors("NotFound", "Conflict", "Unavailable"),
                },
            }
        },
        "/jobs/{id}/attempts": {
            "get": {
                "operationId": "list_attempts",
                "tags": ["jobs"],
                "summary": "A job's history",
                "description": "Every attempt, first to last: start, end, the node that ran it,"
                " its outcome (running, succeeded, failed, cancelled, lease_expired) and its"
                " error with the task's traceback. Kept with the job and pruned with it.",
                "parameters": [_param("JobId")],
                "responses": {
                    "200": _response("The attempts.", ref("AttemptList")),
                    **_errors("NotFound", "Unavailable"),
                },
            }
        },
        "/jobs/{id}/steps": {
            "get": {
                "operationId": "list_steps",
                "tags": ["jobs"],
                "summary": "A job's durable steps",
                "description": "Each ctx.step, durable sleep and wait for a signal the task"
                " made, in order: its name, kind, status, kept result, attempt and times.",
                "parameters": [_param("JobId")],
                "responses": {
                    "200": _response("The steps.", ref("StepList")),
                    **_errors("NotFound", "Unavailable"),
                },
            }
        },
        "/signals/{key}": {
            "post": {
                "operationId": "send_signal",
                "tags": ["jobs"],
                "summary": "Send a signal to the jobs waiting for a key",
                "description": "Jobs suspended in ctx.wait_for_event(key) become due at once and"
                " the oldest takes the payload; with none waiting, it is kept for the next.",
                "parameters": [
                    {
                        "name": "key",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 200},
                    }
                ],
                "requestBody": _body("SignalRequest"),
                "responses": {
                    "202": _response("The signal.", ref("SignalSent")),
                    **_errors(*BODY_ERRORS, "Invalid", "Unavailable"),
                },
            }
        },
        "/leases": {
            "post": {
                "operationId": "lease_jobs",
                "tags": ["workers"],
                "summary": "Lease due jobs of external tasks",
                "description": "For a worker outside the server: up to `limit` due jobs of the"
                " given external tasks' queues, each running under a lease the worker renews"
                " and reports on with its token; with none due, waits up to `wait_s`. A worker"
                " token may call the /leases routes only.",
                "requestBody": _body("LeaseRequest"),
                "responses": {
                    "200": _response("The jobs leased (none if none came).", ref("Leases")),
                    **_errors(*BODY_ERRORS, "Invalid", "Unavailable"),
                },
            }
        },
        **{
            f"/leases/{action}": {
                "post": {
                    "operationId": operation,
                    "tags": ["workers"],
                    "summary": summary,
                    "requestBody": _body(request),
                    "responses": {
                        "200": _response("What each report did.", ref(answer)),
                        **_errors(*BODY_ERRORS, "Invalid", "Unavailable"),
                    },
                }
            }
            for action, operation, summary, request, answer in (
                (
                    "renew",
                    "renew_leases",
                    "Extend leases; learn which were lost or asked to cancel",
                    "LeaseRenewal",
                    "LeasesRenewed",
                ),
                (
                    "complete",
                    "complete_leased",
                    "Report leased jobs done, with their results",
                    "LeaseResults",
                    "LeaseOutcomes",
                ),
                (
                    "fail",
                    "fail_leased",
                    "Report leased jobs failed: retried by each job's policy, or dead-lettered",
                    "LeaseFailures",
                    "LeaseOutcomes",
                ),
                (
                    "release",
                    "release_leased",
                    "Give leased jobs back untried (their attempt does not count)",
                    "LeasedJobs",
                    "LeaseOutcomes",
                ),
            )
        },
        "/dead-letters": {
            "get": {
                "operationId": "list_dead_letters",
                "tags": ["dead-letters"],
                "summary": "List dead letters, newest first",
                "parameters": [
                    {"name": "task", "in": "query", "schema": {"type": "string"}},
                    {"name": "queue", "in": "query", "schema": {"type": "string"}},
                    _param("Limit"),
                    _param("Cursor"),
                ],
                "responses": {
                    "200": _response("A page of dead letters.", ref("DeadLetterPage")),
                    **_errors("Invalid", "Unavailable"),
                },
            }
        },
        **{
            f"/dead-letters/{action}": {
                "post": {
                    "operationId": f"{action}_dead_letters",
                    "tags": ["dead-letters"],
                    "summary": f"{action.capitalize()} the dead letters that match a filter",
                    "description": "In one transaction, up to `limit` of them, newest first;"
                    " with `dry_run`, nothing changes and the answer says which would be"
                    + (
                        " enqueued again (each as a new job, as one requeue does)."
                        if action == "requeue"
                        else " deleted."
                    ),
                    "requestBody": _body("DeadLetterSelection"),
                    "responses": {
                        "200": _response("What matched, and what was done.", ref(answer)),
                        **_errors(*BODY_ERRORS, "Invalid", "Unavailable"),
                    },
                }
            }
            for action, answer in (
                ("requeue", "DeadLettersRequeued"),
                ("delete", "DeadLettersDeleted"),
            )
        },
        "/dead-letters/{id}": {
            "get": {
                "operationId": "get_dead_letter",
                "tags": ["dead-letters"],
                "summary": "Get a dead letter",
                "parameters": [_param("DeadLetterId")],
                "responses": {
                    "200": _response("The dead letter.", ref("DeadLetter")),
                    **_errors("NotFound", "Unavailable"),
                },
            },
            "delete": {
                "operationId": "delete_dead_letter",
                "tags": ["dead-letters"],
                "summary": "Delete a dead letter",
                "parameters": [_param("DeadLetterId")],
                "responses": {
                    "204": {"description": "Deleted."},
                    **_errors("NotFound", "Unavailable"),
                },
            },
        },
        "/dead-letters/{id}/requeue": {
            "post": {
                "operationId": "requeue_dead_letter",
                "tags": ["dead-letters"],
                "summary": "Requeue a dead letter as a new job",
                "description": "The new job keeps the task, arguments, queue, priority,"
                " max_retries, timeout and backoff, with fresh attempts; the dead letter goes.",
                "parameters": [_param("DeadLetterId")],
                "responses": {
                    "202": _response("Enqueued.", ref("Accepted")),
                    **_errors("NotFound", "Unavailable"),
                },
            }
        },
        "/queues": {
            "get": {
                "operationId": "list_queues",
                "tags": ["queues"],
                "summary": "Every queue: depth by state, oldest due job, limits",
                "responses": {
                    "200": _response("The queues.", ref("QueueList")),
                    **_errors("Invalid", "Unavailable"),
                },
            }
        },
        "/queues/{name}": {
            "get": {
                "operationId": "get_queue",
                "tags": ["queues"],
                "summary": "One queue",
                "parameters": [_param("QueueName")],
                "responses": {
                    "200": _response("The queue.", ref("Queue")),
                    **_errors("NotFound", "Unavailable"),
                },
            },
            "patch": {
                "operationId": "configure_queue",
                "tags": ["queues"],
                "summary": "Set a queue's limits (creating it if new)",
                "parameters": [_param("QueueName")],
                "requestBody": _body("QueueSettings"),
                "responses": {
                    "200": _response("The queue.", ref("Queue")),
                    **_errors(*BODY_ERRORS, "NotFound", "Invalid", "Unavailable"),
                },
            },
        },
        "/queues/{name}/keys/{key}": {
            "get": {
                "operationId": "get_key",
                "tags": ["queues"],
                "summary": "One fairness key of a queue: its settings, running jobs, bucket",
                "parameters": [_param("QueueName"), _param("FairnessKey")],
                "responses": {
                    "200": _response("The key.", ref("Key")),
                    **_errors("NotFound", "Invalid", "Unavailable"),
                },
            },
            "patch": {
                "operationId": "configure_key",
                "tags": ["queues"],
                "summary": "Set a fairness key's own weight or limits",
                "parameters": [_param("QueueName"), _param("FairnessKey")],
                "requestBody": _body("KeySettings"),
                "responses": {
                    "200": _response("The key.", ref("Key")),
                    **_errors(*BODY_ERRORS, "NotFound", "Invalid", "Unavailable"),
                },
            },
        },
        "/queues/{name}/pause": {
            "post": {
                "operationId": "pause_queue",
                "tags": ["queues"],
                "summary": "Stop starting this queue's jobs",
                "parameters": [_param("QueueName")],
                "responses": {
                    "200": _response("The queue.", ref("Queue")),
                    **_errors("NotFound", "Unavailable"),
                },
            }
        },
        "/queues/{name}/resume": {
            "post": {
                "operationId": "resume_queue",
                "tags": ["queues"],
                "summary": "Start this queue's jobs again",
                "parameters": [_param("QueueName")],
                "responses": {
                    "200": _response("The queue.", ref("Queue")),
                    **_errors("NotFound", "Unavailable"),
                },
            }
        },
        "/queues/{name}/purge": {
            "post": {
                "operationId": "purge_queue",
                "tags": ["queues"],
                "summary": "Cancel the queue's pending jobs",
                "description": "Oldest first, up to `limit`, in one transaction; each as a"
                " cancel does (its dependants follow their policy). With `dry_run`, nothing"
                " changes and `matched` says how many would be cancelled.",
                "parameters": [_param("QueueName")],
                "requestBody": _body("PurgeRequest"),
                "responses": {
                    "200": _response("What was cancelled.", ref("PurgeResult")),
                    **_errors(*BODY_ERRORS, "NotFound", "Invalid", "Unavailable"),
                },
            }
        },
        "/schedules": {
            "post": {
                "operationId": "create_schedule",
                "tags": ["schedules"],
                "summary": "Create or replace a cron schedule",
                "requestBody": _body("ScheduleRequest"),
                "responses": {
                    "201": _response("Saved.", ref("Schedule")),
                    **_errors(*BODY_ERRORS, "Invalid", "Unavailable"),
                },
            },
            "get": {
                "operationId": "list_schedules",
                "tags": ["schedules"],
                "summary": "Every schedule",
                "responses": {
                    "200": _response("The schedules.", ref("ScheduleList")),
                    **_errors("Invalid", "Unavailable"),
                },
            },
        },
        "/schedules/{name}": {
            "get": {
                "operationId": "get_schedule",
                "tags": ["schedules"],
                "summary": "One schedule",
                "parameters": [_param("ScheduleName")],
                "responses": {
                    "200": _response("The schedule.", ref("Schedule")),
                    **_errors("NotFound", "Unavailable"),
                },
            },
            "delete": {
                "operationId": "delete_schedule",
                "tags": ["schedules"],
                "summary": "Delete a schedule",
                "parameters": [_param("ScheduleName")],
                "responses": {
                    "204": {"description": "Deleted."},
                    **_errors("NotFound", "Unavailable"),
                },
            },
        },
        "/workflows": {
            "post": {
                "operationId": "create_workflow",
                "tags": ["workflows"],
                "summary": "Enqueue a chain, group or chord in one transaction",
                "requestBody": _body("WorkflowRequest"),
                "responses": {
                    "202": _response("Enqueued.", ref("WorkflowAccepted")),
                    **_errors(*BODY_ERRORS, "Conflict", "Invalid", "QueueFull", "Unavailable"),
                },
            }
        },
        "/workflows/{id}": {
            "get": {
                "operationId": "get_workflow",
                "tags": ["workflows"],
                "summary": "A workflow's state and its jobs'",
                "parameters": [_param("WorkflowId")],
                "responses": {
                    "200": _response("The workflow.", ref("Workflow")),
                    **_errors("NotFound", "Unavailable"),
                },
            }
        },
        "/events": {
            "get": {
                "operationId": "events",
                "tags": ["jobs"],
                "summary": "Job transitions as Server-Sent Events",
                "description": "Each event: `id`, `event: job`, and data `{id, job_id, task,"
                " queue, state, attempt, at}`. Reconnect with `Last-Event-ID` (or"
                " `last_event_id`; 0 for all that is kept) to get what was missed, from the"
                " database's event log, across restarts, while retention keeps it; an"
                " `event: gap` says some of it no longer is. `task` and `queue` are null for"
                " a job deleted since. A comment line every 15 s keeps the connection alive.",
                "parameters": [
                    {"name": "queue", "in": "query", "schema": {"type": "string"}},
                    {"name": "task", "in": "query", "schema": {"type": "string"}},
                    {
                        "name": "job_id",
                        "in": "query",
                        "schema": {"type": "string", "pattern": CURSOR_PATTERN},
                    },
                    {
                        "name": "last_event_id",
                        "in": "query",
                        "schema": {"type": "string", "pattern": CURSOR_PATTERN},
                    },
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "schema": {"type": "string", "pattern": CURSOR_PATTERN},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "The stream; it ends when the server stops.",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    **_errors("Invalid"),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "tags": ["meta"],
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "The Prometheus text format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_errors("Unavailable"),
                },
            }
        },
        "/stats/throughput": {
            "get": {
                "operationId": "throughput",
                "tags": ["meta"],
                "summary": "Jobs that ended on this node, a bucket each over the last two minutes",
                "responses": {
                    "200": _response(
                        "Oldest bucket first, empty ones included.", ref("Throughput")
                    ),
                    **_errors("Invalid"),
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "tags": ["health"],
                "summary": "Liveness: answers while the process runs",
                "responses": {"200": _response("Alive.", ref("Health"))},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "tags": ["health"],
                "summary": "Readiness: the database takes writes",
                "responses": {
                    "200": _response("Ready.", ref("Ready")),
                    **_errors("Unavailable"),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "tags": ["meta"],
                "summary": "This document",
                "responses": {"200": _response("The OpenAPI 3.1 document.", {"type": "object"})},
            }
        },
    }


def _with_access_errors(paths: dict[str, Any]) -> dict[str, Any]:
    """What any operation may answer before it runs: 403 for a `Host` the server does not
    answer to (no token set) or a read-only token on a write; with tokens, 401 without a
    valid one and 429 after repeated failures (not on /healthz, which needs no token)."""
    for path, operations in paths.items():
        for operation in operations.values():
            responses = operation["responses"]
            responses.setdefault("403", {"$ref": RESPONSES + "Forbidden"})
            if path == "/healthz":
                continue
            responses.setdefault("401", {"$ref": RESPONSES + "Unauthorized"})
            # an enqueue's 429 (QueueFull) also says `too_many_failures`: one 429 an operation
            responses.setdefault("429", {"$ref": RESPONSES + "TooManyFailures"})
    return paths


def build_spec(
    tasks: Iterable[str] | None = None, external_queues: Iterable[str] = ()
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the HTTP API.

    `tasks`: the server's task names, listed as the values `task` takes; None leaves `task` any
    name (a name the server does not know is refused with 422). `external_queues`: the queues a
    lease may name (its external tasks'), likewise."""
    from .. import __version__

    names = None if tasks is None else sorted(set(tasks))
    # a deep copy: no two places in the document share one dict, whatever a caller changes
    return copy.deepcopy(
        {
            "openapi": "3.1.0",
            "info": {
                "title": "jobserver",
                "version": __version__,
                "summary": "A background-job server: durable SQLite queue and async workers.",
                "description": (
                    "Paths are relative to where the API is served (a host application may mount"
                    " it under a prefix). No string anywhere in a request (a job's args and"
                    " kwargs included) may contain the NUL character U+0000: such a request is a"
                    " 422 naming the field. Every error has the shape"
                    ' `{"error": {"code", "message", "field"}}`. A wrong method for a path is 405'
                    " with an `Allow` header (see the `MethodNotAllowed` response); an unknown"
                    " path is 404. Unknown body fields are refused with 422, and so are unknown"
                    " query parameters of the operations that declare query parameters. A server"
                    " error is 500 with the code `internal`."
                ),
                "license": {"name": "MIT", "identifier": "MIT"},
            },
            # Relative: the server that serves this document (under its mount prefix, if any).
            "servers": [{"url": "/", "description": "The server that serves this document."}],
            "tags": [
                {"name": "jobs", "description": "Enqueue, read, cancel and delete jobs."},
                {"name": "workflows", "description": "Chains, groups and chords of jobs."},
                {"name": "queues", "description": "Queue counts, limits, pause and resume."},
                {"name": "schedules", "description": "Cron schedules that enqueue jobs."},
                {"name": "dead-letters", "description": "Jobs that failed for good."},
                {"name": "workers", "description": "Workers outside the server lease jobs."},
                {"name": "health", "description": "Liveness and readiness probes."},
                {"name": "meta", "description": "This document and the metrics."},
            ],
            "paths": _with_access_errors(_paths()),
            # When the server has tokens, every operation but healthz needs one (401 without,
            # 403 for a read-only token on a write, 429 after repeated failures).
            "security": [{}, {"bearer": []}],
            "components": {
                "securitySchemes": {
                    "bearer": {
                        "type": "http",
                        "scheme": "bearer",
                        "description": "A token from --token, --read-token for GETs only, or"
                        " --worker-token for the /leases routes only.",
                    }
                },
                "schemas": _schemas(names, sorted(set(external_queues))),
                "responses": _responses(),
                "parameters": _parameters(),
            },
        }
    )
