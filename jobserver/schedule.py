"""Cron arithmetic for schedules (croniter underneath). Pure: no I/O, times as epoch seconds."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

from .errors import ValidationError

MAX_CATCH_UP = 1_000  # ticks fired at once for a `catch_up` schedule that was down for long
MISFIRE_GRACE_S = 60.0  # a `skip` schedule still fires a tick this late (e.g. a slow restart)


# The @-names croniter reads; any other expression must have the five standard fields.
ALIASES = frozenset(
    {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
)


def check_cron(expr: str, timezone: str = "UTC") -> None:
    """Raise ValidationError (naming the field) unless `expr` is a five-field cron expression
    (or an @-name) that fires, in a zone that exists.

    croniter also reads six and seven fields, with a seconds field at the end (`*/10 * * * * *`
    would fire every second, not every ten minutes) and a year: too easy to get wrong to
    accept. An expression with no date (`0 0 30 2 *`) would never fire."""
    if not isinstance(expr, str) or not croniter.is_valid(expr):
        raise ValidationError("cron", f"not a valid cron expression: {expr!r}")
    text = expr.strip()
    if text.lower() not in ALIASES and len(text.split()) != 5:
        raise ValidationError(
            "cron",
            f"{expr!r} has {len(text.split())} fields; give the five of minute, hour, day of"
            " month, month and day of week",
        )
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError("timezone", f"unknown time zone {timezone!r}") from None
    try:
        croniter(text, datetime(2000, 1, 1, tzinfo=zone)).get_next(float)
    except CroniterBadDateError:
        raise ValidationError("cron", f"{expr!r} never fires (no such date)") from None


def next_tick(expr: str, after: float, timezone: str = "UTC") -> float:
    """The first tick strictly after `after`."""
    start = datetime.fromtimestamp(after, ZoneInfo(timezone))
    value: float = croniter(expr, start).get_next(float)
    return value


def ticks_to_fire(
    expr: str, timezone: str, due_at: float, now: float, missed: str
) -> tuple[list[float], float]:
    """The ticks to run now for a schedule due at `due_at`, and its next tick after `now`.

    `skip`: only the latest due tick, and only if it is at most MISFIRE_GRACE_S old; ticks
    missed while the server was down are dropped. `catch_up`: every due tick (up to a cap).
    """
    due: list[float] = []
    tick = due_at
    while tick <= now:
        due.append(tick)
        tick = next_tick(expr, tick, timezone)
        if len(due) > MAX_CATCH_UP:
            due.pop(0)
    if missed == "skip":
        due = [t for t in due[-1:] if now - t <= MISFIRE_GRACE_S]
    return due, tick
