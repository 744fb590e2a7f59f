"""Backoff and the retry decision after a failed attempt. Pure: no I/O."""

from __future__ import annotations

import random
from dataclasses import dataclass

from .models import Backoff


def delay_for(attempt: int, policy: Backoff, rng: random.Random) -> float:
    """Full-jitter delay before the retry that follows failed attempt number `attempt` (1-based)."""
    try:
        ceiling = min(policy.cap_s, policy.base_s * policy.factor ** max(0, attempt - 1))
    except OverflowError:  # factor ** attempt past a float's range: the cap applies anyway
        ceiling = policy.cap_s
    return rng.uniform(0.0, ceiling)


@dataclass(frozen=True, slots=True)
class RetryAt:
    delay_s: float


@dataclass(frozen=True, slots=True)
class GiveUp:
    reason: str  # "exhausted" | "permanent"


def decide(
    *,
    attempts: int,
    max_retries: int,
    retryable: bool,
    requested_delay_s: float | None,
    policy: Backoff,
    rng: random.Random,
) -> RetryAt | GiveUp:
    """After attempt `attempts` failed: retry later, or give up for good."""
    if not retryable:
        return GiveUp("permanent")
    if attempts > max_retries:
        return GiveUp("exhausted")
    if requested_delay_s is not None:
        return RetryAt(requested_delay_s)
    return RetryAt(delay_for(attempts, policy, rng))
