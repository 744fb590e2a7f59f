"""Every option of a new job (and every setting of a queue), declared once.

An `Option` is one field of a job request: its Python name (`JobServer.enqueue`, the client,
`workflows.job`), its name in the HTTP API, its type, bounds, default and meaning. From this
table, and nowhere else:
- the core checks a request (`check_options`, called by `JobServer.new_job`), naming the
  Python field in its `ValidationError`;
- the HTTP layer reads request bodies into Python names, says its errors in the API's names
  (`http/schema.py`) and writes the OpenAPI schema of a job request (`http/openapi.py`);
- the client builds request bodies (`client._job_body`).

Pure: no I/O. A time may be given as an aware datetime, RFC 3339 text or epoch seconds; it is
kept as epoch seconds.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any, Literal

from . import codec
from .errors import ValidationError
from .models import DEPENDENCY_FAILURE_POLICIES, MISSED_TICK_POLICIES, Backoff
from .render import MAX_TS, MIN_TS
from .tracing import TRACEPARENT

Kind = Literal[
    "string", "integer", "number", "boolean", "array", "object", "time", "choice", "ids", "backoff"
]

MAX_ID = 10**18 - 1  # ids are read from up to 18 digits
MAX_DELAY_S = 366 * 86400.0
MAX_TIMEOUT_S = 7 * 86400.0
MAX_KEY_LEN = 200
MAX_FAIRNESS_KEY_LEN = 200  # the jobs table checks it too
MAX_URL_LEN = 2000
MAX_DEPENDENCIES = 1000
MAX_TASK_NAME = 200
PRIORITY_RANGE = (-1000, 1000)
MAX_RETRIES_RANGE = (0, 100)
QUEUE_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,99}"
QUEUE_NAME = re.compile(QUEUE_PATTERN)

_EXPECTED = {
    "string": "must be a string",
    "integer": "must be an integer",
    "number": "must be a number",
    "boolean": "must be true or false",
    "array": "must be an array",
    "object": "must be an object",
    "time": "must be an RFC 3339 timestamp string",
}


@dataclass(frozen=True, slots=True)
class Option:
    name: str  # in Python
    wire: str  # in the HTTP API
    kind: Kind
    description: str  # in the API's words (it is the OpenAPI description)
    default: Any = None  # what leaving it out means; None: nothing (or the task's own)
    lo: float | None = None
    hi: float | None = None
    open_lo: bool = False  # `lo` itself is refused
    max_len: int | None = None  # strings: characters; ids: items
    pattern: re.Pattern[str] | None = None
    pattern_words: str = ""  # the pattern as the error says it
    choices: tuple[str, ...] = ()
    nullable: bool = True  # over HTTP, null means "not given"
    excludes: str | None = None  # the Python name of an option not to give with this one

    @property
    def expected(self) -> str:
        """What a value of the wrong type is told."""
        if self.kind == "choice":
            return f"must be one of {', '.join(self.choices)}"
        if self.kind == "ids":
            return f"must be an array of at most {self.max_len} job ids"
        if self.kind == "backoff":
            return "must be an object with base, factor and cap (seconds)"
        return _EXPECTED[self.kind]

    def check(self, value: Any) -> Any:
        """The value as stored (numbers widened, sequences as lists); ValidationError naming
        this option for a value of the wrong type or out of its bounds."""
        kind = self.kind
        if kind == "string":
            if not isinstance(value, str):
                raise ValidationError(self.name, self.expected)
            if "\x00" in value:  # PostgreSQL's text cannot hold it: refused on both stores
                raise ValidationError(self.name, "must not contain the NUL character")
            if self.pattern is not None:
                if self.pattern.fullmatch(value) is None:
                    raise ValidationError(self.name, f"must be {self.pattern_words}")
            elif not 1 <= len(value) <= (self.max_len or 0):
                raise ValidationError(self.name, f"must be 1 to {self.max_len} characters")
            return value
        if kind == "integer":
            return _integer(self.name, value, self.lo, self.hi)
        if kind == "number":
            return _number(self.name, value, self.lo, self.hi, self.open_lo)
        if kind == "boolean":
            if not isinstance(value, bool):
                raise ValidationError(self.name, self.expected)
            return value
        if kind == "array":
            if not isinstance(value, list | tuple):
                raise ValidationError(self.name, self.expected)
            return list(value)
        if kind == "object":
            if not isinstance(value, Mapping):
                raise ValidationError(self.name, self.expected)
            if "ctx" in value:
                raise ValidationError(f"{self.name}.ctx", "is reserved for the job context")
            return dict(value)
        if kind == "time":
            return _time(self.name, value)
        if kind == "choice":
            if value not in self.choices:
                raise ValidationError(self.name, self.expected)
            return value
        if kind == "ids":
            if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
                raise ValidationError(self.name, self.expected)
            if len(value) > (self.max_len or 0):
                raise ValidationError(self.name, self.expected)
            return [_integer(self.name, item, 1, MAX_ID) for item in value]
        return _backoff(self.name, value)


RFC3339_NO_ZONE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
)


RFC3339 = re.compile(RFC3339_NO_ZONE.pattern + r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})")


def parse_rfc3339(name: str, value: Any) -> float:
    """Epoch seconds from an RFC 3339 time with a zone (fromisoformat alone takes other ISO 8601
    forms too); a time outside years 1-9999 in UTC is taken as that bound."""
    if not isinstance(value, str):
        raise ValidationError(name, "must be an RFC 3339 timestamp string")
    if not RFC3339.fullmatch(value):
        if RFC3339_NO_ZONE.fullmatch(value):
            raise ValidationError(name, "must include a time zone (Z or +hh:mm)")
        raise ValidationError(name, "must be an RFC 3339 timestamp, e.g. 2030-01-01T12:00:00Z")
    try:
        when = datetime.fromisoformat(value.upper())
    except ValueError as exc:  # e.g. month 13, or a leap second (:60), which datetime cannot hold
        raise ValidationError(name, f"is not a valid time: {exc}") from None
    return min(max(when.timestamp(), MIN_TS), MAX_TS)


def _time(name: str, value: Any) -> float:
    """Epoch seconds from one of the three ways to give a time: an aware datetime, RFC 3339
    text (the API's way), or epoch seconds (JobServer.enqueue's first way, kept)."""
    if isinstance(value, str):
        return parse_rfc3339(name, value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValidationError(name, "must include a time zone (an aware datetime)")
        return min(max(value.timestamp(), MIN_TS), MAX_TS)
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ValidationError(name, "must be an aware datetime, RFC 3339 text or epoch seconds")
    return min(max(float(value), MIN_TS), MAX_TS)  # a time past year 9999 is its end


def _integer(name: str, value: Any, lo: float | None, hi: float | None) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON has one number type: 2.0 is the integer 2 (as JSON Schema says)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(name, "must be an integer")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ValidationError(name, f"must be between {lo:.0f} and {hi:.0f}")
    return value


def _number(name: str, value: Any, lo: float | None, hi: float | None, open_lo: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(name, "must be a number")
    number = float(value)
    low = -math.inf if lo is None else lo
    high = math.inf if hi is None else hi
    if not math.isfinite(number) or number > high or number < low or (open_lo and number == lo):
        bound = f"greater than {low:g}" if open_lo else f"at least {low:g}"
        raise ValidationError(name, f"must be {bound} and at most {high:g}")
    return number


BACKOFF_OPTIONS = (
    Option(
        "base_s",
        "base",
        "number",
        "Seconds before the first retry, at most.",
        lo=0.0,
        hi=3600.0,
        open_lo=True,
    ),
    Option(
        "factor",
        "factor",
        "number",
        "Each retry waits up to this many times longer.",
        lo=1.0,
        hi=10.0,
    ),
    Option(
        "cap_s",
        "cap",
        "number",
        "The longest wait between attempts, in seconds.",
        lo=0.0,
        hi=86400.0,
        open_lo=True,
    ),
)
BACKOFF_BY_NAME = {o.name: o for o in BACKOFF_OPTIONS}
BACKOFF_BY_WIRE = {o.wire: o for o in BACKOFF_OPTIONS}


def _backoff(name: str, value: Any) -> Backoff | dict[str, float]:
    """A Backoff as given, or the fields of a partial policy by their Python names (the rest
    come from the task's own policy)."""
    if isinstance(value, Backoff):
        return value
    if not isinstance(value, Mapping):
        raise ValidationError(name, "must be an object with base, factor and cap (seconds)")
    fields: dict[str, float] = {}
    for key, item in value.items():
        option = BACKOFF_BY_NAME.get(key)
        if option is None:
            raise ValidationError(f"{name}.{key}", "unknown field")
        if item is not None:
            fields[option.name] = _number(
                f"{name}.{option.name}", item, option.lo, option.hi, option.open_lo
            )
    return fields


OPTIONS = (
    Option(
        "task",
        "task",
        "string",
        "The name of a registered task.",
        max_len=MAX_TASK_NAME,
        nullable=False,
    ),
    Option("args", "args", "array", "Positional arguments.", default=(), nullable=False),
    Option(
        "kwargs",
        "kwargs",
        "object",
        "Keyword arguments; `ctx` is reserved for the job context.",
        default=MappingProxyType({}),
        nullable=False,
    ),
    Option(
        "queue",
        "queue",
        "string",
        "The queue the job waits in.",
        default="default",
        max_len=100,
        pattern=QUEUE_NAME,
        pattern_words="1-100 of A-Z a-z 0-9 _ . : - starting alphanumeric",
        nullable=False,
    ),
    Option(
        "priority",
        "priority",
        "integer",
        "Within its queue, of the due jobs, higher runs first.",
        default=0,
        lo=PRIORITY_RANGE[0],
        hi=PRIORITY_RANGE[1],
    ),
    Option(
        "delay_s",
        "delay",
        "number",
        "Seconds from now until the job is due.",
        lo=0.0,
        hi=MAX_DELAY_S,
        excludes="run_at",
    ),
    Option(
        "run_at",
        "run_at",
        "time",
        "When the job is due. A time outside years 1 to 9999 in UTC is taken as that bound.",
    ),
    Option(
        "max_retries",
        "max_retries",
        "integer",
        "Retries after the first attempt; default: the task's.",
        lo=MAX_RETRIES_RANGE[0],
        hi=MAX_RETRIES_RANGE[1],
    ),
    Option(
        "timeout_s",
        "timeout",
        "number",
        "Seconds an attempt may run; default: the task's.",
        lo=0.0,
        hi=MAX_TIMEOUT_S,
        open_lo=True,
    ),
    Option(
        "backoff",
        "backoff",
        "backoff",
        "How long to wait between attempts; fields left out come from the task's policy.",
    ),
    Option(
        "idempotency_key",
        "idempotency_key",
        "string",
        "Enqueueing again with the same key"
        " (within the key window) returns the first job. Also taken from the Idempotency-Key"
        " header, which must not differ from it.",
        max_len=MAX_KEY_LEN,
    ),
    Option(
        "deadline",
        "deadline",
        "time",
        "Do not start after this time: the job then fails"
        " as `expired`. Not before the job's start.",
        excludes="deadline_s",
    ),
    Option(
        "deadline_s",
        "deadline_in",
        "number",
        "The deadline in seconds from now.",
        lo=0.0,
        hi=MAX_DELAY_S,
        open_lo=True,
    ),
    Option(
        "unique_key",
        "unique_key",
        "string",
        "At most one pending or running job holds this"
        " key: while one does, enqueueing another returns it (200).",
        max_len=MAX_KEY_LEN,
    ),
    Option(
        "fairness_key",
        "fairness_key",
        "string",
        "The key (a tenant, a customer, an API account) whose fair share of its queue the"
        " job runs in: keys take turns, by weight, within their own limits.",
        max_len=MAX_FAIRNESS_KEY_LEN,
    ),
    Option(
        "depends_on",
        "depends_on",
        "ids",
        "Ids of existing jobs that must succeed first.",
        default=(),
        max_len=MAX_DEPENDENCIES,
    ),
    Option(
        "pass_result",
        "pass_result",
        "boolean",
        "Give the dependencies' result(s) as the first argument.",
        default=False,
    ),
    Option(
        "on_dependency_failure",
        "on_dependency_failure",
        "choice",
        "What a dependency that did not succeed does to this job.",
        default=DEPENDENCY_FAILURE_POLICIES[0],
        choices=DEPENDENCY_FAILURE_POLICIES,
    ),
    Option(
        "traceparent",
        "traceparent",
        "string",
        "W3C trace context (https://www.w3.org/TR/trace-context/) the job's attempts, its http"
        " calls and its webhook carry on; also taken from the `traceparent` header.",
        max_len=55,
        pattern=TRACEPARENT,
        pattern_words="a W3C traceparent: 00-<32 hex>-<16 hex>-<2 hex>",
    ),
    Option(
        "callback_url",
        "callback_url",
        "string",
        "POSTed the job's record, signed, when it"
        " ends (a host on the allow-list; the server needs a webhook secret).",
        max_len=MAX_URL_LEN,
    ),
)

BY_NAME = {o.name: o for o in OPTIONS}
BY_WIRE = {o.wire: o for o in OPTIONS}
# Python names that the API spells otherwise, sub-fields included: errors are renamed by it.
WIRE_NAMES = {o.name: o.wire for o in OPTIONS + BACKOFF_OPTIONS if o.name != o.wire}


_DEFAULTS = {o.name: o.default for o in OPTIONS}


def check_options(given: Mapping[str, Any]) -> dict[str, Any]:
    """Every option of a job request, each given one checked, each left out (or None) at its
    default; ValidationError naming the first bad one by its Python name."""
    checked = dict(_DEFAULTS)
    for name, value in given.items():
        if value is None:
            continue
        option = BY_NAME.get(name)
        if option is None:
            raise ValidationError(name, "unknown field")
        if option.excludes is not None and given.get(option.excludes) is not None:
            raise ValidationError(name, f"give {name} or {option.excludes}, not both")
        checked[name] = option.check(value)
    if checked["task"] is None:
        raise ValidationError("task", "is required")
    return checked


# A queue's settings (PATCH /queues/{name}, JobServer.configure_queue), declared the same way.
# Their API names are their Python names; null (None) lifts a limit.
def _limits(prefix: str, whose: str) -> tuple[Option, ...]:
    """A concurrency limit and a token bucket: a queue's, every key's of a queue, one key's."""
    return (
        Option(
            f"{prefix}concurrency_limit",
            f"{prefix}concurrency_limit",
            "integer",
            f"{whose} jobs running at once, on all nodes.",
            lo=1,
            hi=1_000_000,
        ),
        Option(
            f"{prefix}rate_limit",
            f"{prefix}rate_limit",
            "number",
            f"{whose} jobs started per second (a token bucket).",
            lo=0.0,
            hi=1_000_000.0,
            open_lo=True,
        ),
        Option(
            f"{prefix}rate_burst",
            f"{prefix}rate_burst",
            "number",
            f"{whose} jobs its bucket lets start at once.",
            lo=1.0,
            hi=1_000_000.0,
        ),
    )


QUEUE_SETTINGS = (
    Option("paused", "paused", "boolean", "A paused queue starts no job.", nullable=False),
    *_limits("", "The queue's"),
    Option(
        "max_depth",
        "max_depth",
        "integer",
        "Pending jobs the queue holds; an enqueue past it is refused (429).",
        lo=1,
        hi=10**12,
    ),
    # every fairness key's, unless a key sets its own (KEY_SETTINGS)
    *_limits("key_", "Each fairness key's"),
)
QUEUE_SETTINGS_BY_NAME = {o.name: o for o in QUEUE_SETTINGS}

# A fairness key's own settings (PATCH /queues/{name}/keys/{key}, JobServer.configure_key);
# None gives the setting back to its queue's default.
KEY_SETTINGS = (
    Option(
        "weight",
        "weight",
        "number",
        "The key's share against the queue's other keys (1 each by default): weight 5 runs"
        " five of its jobs for one of a weight-1 key's, while both have jobs due.",
        lo=0.0,
        hi=1_000_000.0,
        open_lo=True,
    ),
    *_limits("", "The key's"),
)
KEY_SETTINGS_BY_NAME = {o.name: o for o in KEY_SETTINGS}


def check_key_settings(changes: Mapping[str, Any]) -> dict[str, Any]:
    """A key's settings to change, checked; None gives one back to the queue's default."""
    return _check_given(changes, KEY_SETTINGS_BY_NAME, keep_none=True)


MAX_SIGNAL_BYTES = 64 * 1024  # a signal's payload, as JSON


SIGNAL_KEY = Option(
    "key",
    "key",
    "string",
    "The key a signal is sent to, as ctx.wait_for_event names it.",
    max_len=200,
    nullable=False,
)


def check_signal_key(key: Any) -> str:
    """The key a signal is sent to (POST /signals/{key}, ctx.wait_for_event)."""
    return SIGNAL_KEY.check(key)  # type: ignore[no-any-return]


def check_signal_payload(payload: Any) -> bytes:
    """A signal's payload as JSON (kept until a waiting job takes it)."""
    try:
        encoded = codec.dumps(payload)
    except TypeError as exc:
        raise ValidationError("payload", f"must be JSON: {exc}") from None
    if len(encoded) > MAX_SIGNAL_BYTES:
        raise ValidationError("payload", f"must be at most {MAX_SIGNAL_BYTES} bytes as JSON")
    if codec.holds_nul(encoded):
        raise ValidationError("payload", "must not contain the NUL character (\\u0000)")
    return encoded


def check_fairness_key(key: Any) -> str:
    """A key named in a path or a call: the fairness_key option's rule."""
    return BY_NAME["fairness_key"].check(key)  # type: ignore[no-any-return]


def check_queue_settings(changes: Mapping[str, Any]) -> dict[str, Any]:
    """The settings to change, checked; None lifts a limit. ValidationError names the first
    bad one."""
    return _check_given(changes, QUEUE_SETTINGS_BY_NAME, keep_none=True)


def check_given(given: Mapping[str, Any], declared: Mapping[str, Option]) -> dict[str, Any]:
    """Each given field checked by its declaration (None: not given); ValidationError naming
    the first unknown or bad one."""
    return _check_given(given, declared, keep_none=False)


def _check_given(
    given: Mapping[str, Any], declared: Mapping[str, Option], *, keep_none: bool
) -> dict[str, Any]:
    """Each given field checked by its declaration; None is kept (`keep_none`: it means
    "lift") or left out (it means "not given"), refused where the field may not be null."""
    checked: dict[str, Any] = {}
    for name, value in given.items():
        option = declared.get(name)
        if option is None:
            raise ValidationError(name, "unknown field")
        if value is None:
            if not option.nullable:
                raise ValidationError(name, option.expected)
            if keep_none:
                checked[name] = None
            continue
        checked[name] = option.check(value)
    return checked


# A schedule's own fields (POST /schedules, JobServer.save_schedule); its job's are OPTIONS'
# task, args, kwargs, queue and priority.
SCHEDULE_NAME = re.compile(r"(?!task:)[A-Za-z0-9][A-Za-z0-9_.:\-]{0,99}")
SCHEDULE_JOB_FIELDS = ("task", "args", "kwargs", "queue", "priority")
SCHEDULE_OPTIONS = (
    Option(
        "name",
        "name",
        "string",
        "The schedule's name; saving a schedule of that name again replaces it.",
        max_len=100,
        pattern=SCHEDULE_NAME,
        pattern_words="1-100 of A-Z a-z 0-9 _ . : - starting alphanumeric (not task:...)",
        nullable=False,
    ),
    Option(
        "cron",
        "cron",
        "string",
        "A cron expression of five fields, e.g. `*/5 * * * *`, or an @-name such as @daily.",
        max_len=200,
        nullable=False,
    ),
    Option(
        "timezone",
        "timezone",
        "string",
        "An IANA zone the cron is read in.",
        default="UTC",
        max_len=100,
    ),
    Option(
        "missed",
        "missed",
        "choice",
        "Ticks missed while the server was down: skipped (a tick up to 60 s late still runs),"
        " or all run.",
        default=MISSED_TICK_POLICIES[0],
        choices=MISSED_TICK_POLICIES,
    ),
    Option("paused", "paused", "boolean", "A paused schedule enqueues nothing.", default=False),
)
SCHEDULE_BY_NAME = {o.name: o for o in SCHEDULE_OPTIONS}


def check_schedule(given: Mapping[str, Any]) -> dict[str, Any]:
    """A schedule's fields and its job's, checked, each left out at its default;
    ValidationError naming the first bad one."""
    job = check_options({k: v for k, v in given.items() if k in SCHEDULE_JOB_FIELDS})
    own = {k: v for k, v in given.items() if k not in SCHEDULE_JOB_FIELDS}
    checked = _check_given(own, SCHEDULE_BY_NAME, keep_none=False)
    for option in SCHEDULE_OPTIONS:
        if option.name not in checked:
            if not option.nullable:
                raise ValidationError(option.name, "is required")
            checked[option.name] = option.default
    return {
        **{k: job[k] for k in SCHEDULE_JOB_FIELDS},
        "args": list(job["args"]),
        "kwargs": dict(job["kwargs"]),
        **checked,
    }


# Which dead letters a bulk action takes (POST /dead-letters/requeue and /delete,
# JobServer.requeue_dead_letters and delete_dead_letters): every filter left out matches all.
MAX_BULK = 10_000
DEAD_LETTER_SELECTION = (
    Option("task", "task", "string", "Only this task's.", max_len=MAX_TASK_NAME),
    dataclasses.replace(
        BY_NAME["queue"], description="Only this queue's.", default=None, nullable=True
    ),
    Option(
        "error_type",
        "error_type",
        "string",
        "Only those whose error has this type, e.g. `TimeoutError`.",
        max_len=200,
    ),
    Option("failed_after", "failed_after", "time", "Only those that failed at or after this."),
    Option("failed_before", "failed_before", "time", "Only those that failed before this."),
    Option(
        "limit",
        "limit",
        "integer",
        "At most this many, newest first; the answer says whether more matched.",
        default=1000,
        lo=1,
        hi=MAX_BULK,
    ),
    Option(
        "dry_run",
        "dry_run",
        "boolean",
        "Change nothing: only count and show which would be taken.",
        default=False,
    ),
)
DEAD_LETTER_SELECTION_BY_NAME = {o.name: o for o in DEAD_LETTER_SELECTION}


def check_dead_letter_selection(given: Mapping[str, Any]) -> dict[str, Any]:
    """Every field of a dead-letter selection, checked, each left out (or None) at its
    default; ValidationError naming the first bad one."""
    defaults = {o.name: o.default for o in DEAD_LETTER_SELECTION}
    return {**defaults, **_check_given(given, DEAD_LETTER_SELECTION_BY_NAME, keep_none=False)}
