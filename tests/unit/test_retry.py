"""Backoff and the retry decision (pure code)."""

from __future__ import annotations

import random

import pytest

from jobserver.models import Backoff
from jobserver.retry import GiveUp, RetryAt, decide, delay_for


@pytest.mark.parametrize("attempt", range(1, 15))
def test_full_jitter_stays_within_the_exponential_ceiling(attempt: int) -> None:
    policy = Backoff(base_s=1.0, factor=2.0, cap_s=300.0)
    rng = random.Random(attempt)
    ceiling = min(300.0, 2.0 ** (attempt - 1))
    delays = [delay_for(attempt, policy, rng) for _ in range(500)]
    assert all(0.0 <= d <= ceiling for d in delays)
    # full jitter spreads over the whole range, not just near the ceiling
    assert min(delays) < ceiling * 0.1
    assert max(delays) > ceiling * 0.9


def test_the_cap_holds_for_huge_attempt_numbers() -> None:
    policy = Backoff(base_s=1.0, factor=2.0, cap_s=300.0)
    assert delay_for(10_000, policy, random.Random(1)) <= 300.0


def test_decide() -> None:
    rng = random.Random(0)
    policy = Backoff(base_s=4.0, factor=2.0, cap_s=10.0)
    common = {"policy": policy, "rng": rng}
    assert decide(
        attempts=1, max_retries=0, retryable=True, requested_delay_s=None, **common
    ) == GiveUp("exhausted")
    assert decide(
        attempts=1, max_retries=5, retryable=False, requested_delay_s=None, **common
    ) == GiveUp("permanent")
    assert decide(
        attempts=2, max_retries=5, retryable=True, requested_delay_s=7.5, **common
    ) == RetryAt(7.5)
    retry = decide(attempts=2, max_retries=5, retryable=True, requested_delay_s=None, **common)
    assert isinstance(retry, RetryAt) and 0 <= retry.delay_s <= 8.0
    # the last allowed attempt failing exhausts the job, even if it asked for a retry
    assert decide(
        attempts=6, max_retries=5, retryable=True, requested_delay_s=1.0, **common
    ) == GiveUp("exhausted")
