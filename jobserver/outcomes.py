"""How an attempt ended, as data: what the executor (in the server or in a child process)
hands the worker to record. Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import codec
from .models import error_info


@dataclass(frozen=True, slots=True)
class Succeeded:
    result: bytes  # JSON


@dataclass(frozen=True, slots=True)
class Failed:
    error: dict[str, Any]
    retryable: bool
    retry_delay_s: float | None = None  # asked for by the task with `raise Retry(delay_s=...)`


@dataclass(frozen=True, slots=True)
class Cancelled:
    reason: str  # "cancelled" (asked by a client) | "shutdown" | "lease_lost"


@dataclass(frozen=True, slots=True)
class Suspended:
    """The task slept or waits (durable.py): pending again until `until`, or until a signal to
    `waiting_for`."""

    until: float
    waiting_for: str | None = None


Outcome = Succeeded | Failed | Cancelled | Suspended


def returned(result: Any) -> Succeeded | Failed:
    """A task's return value as the outcome to store: its JSON, or a failure when JSON cannot
    carry it (not serialisable; NaN or Infinity, which the writer would turn into null)."""
    try:
        encoded = codec.dumps(result)
    except TypeError as exc:
        return Failed(
            error_info(exc, message=f"the task's result is not JSON serialisable: {exc}"),
            retryable=False,
        )
    # Checked only when a null was written: the usual result is not walked.
    if b"null" in encoded and codec.has_non_finite(result):
        return Failed(
            error_info(
                None,
                type_="InvalidResult",
                message="the task's result holds NaN or Infinity, which JSON cannot carry",
            ),
            retryable=False,
        )
    if codec.holds_nul(encoded):  # refused alike on every store (jsonb cannot hold one)
        return Failed(
            error_info(
                None,
                type_="InvalidResult",
                message="the task's result holds a NUL character, which no store keeps",
            ),
            retryable=False,
        )
    return Succeeded(encoded)
