"""Fair shares between the keys of a queue (a tenant, a customer, an API account): who goes
next, and how many a key may start now. Pure: no I/O; lifecycle.claim calls it.

Keys share a queue by start-time fair queueing. Each keyed job gets a tag when it becomes
due (at its insert when it is due then, else when a claim stages it): the later of the
queue's virtual time and the end of its key's previous job, and the key's next job ends
1/weight after that. Claims take a queue's keyed jobs in tag order, so a key that floods the
queue lines its own jobs up far ahead while a quiet key's next job is tagged at the front: no
key waits behind another's backlog, and a backlogged key still takes whatever capacity no one
else asks for. The virtual time is the latest tag claimed, so an idle key saves no credit.
Claiming reads an index in tag order: it never scans the keys.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from . import flow
from .models import QueueSettings

T = TypeVar("T")

BUSIEST_KEYS = 10  # keys /queues/{name} and /metrics show: bounded, however many keys


@dataclass(frozen=True, slots=True)
class KeyOverride:
    """One key's own settings over its queue's defaults (None: the queue's)."""

    weight: float | None = None
    concurrency_limit: int | None = None
    rate_limit: float | None = None
    rate_burst: float | None = None

    @property
    def empty(self) -> bool:
        return (
            self.weight is None
            and self.concurrency_limit is None
            and self.rate_limit is None
            and self.rate_burst is None
        )


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    """What holds for one key: its override where set, its queue's defaults elsewhere."""

    weight: float = 1.0
    concurrency_limit: int | None = None
    rate_limit: float | None = None
    rate_burst: float | None = None

    @property
    def bucket_size(self) -> float:
        return flow.bucket_size(self)


@dataclass(slots=True)
class KeyState:
    """One key of a queue as /queues/{name}/keys/{key} shows it: its own settings, what holds
    for it, its running jobs and, when rate-limited, the tokens in its bucket."""

    queue: str
    key: str
    override: KeyOverride
    policy: KeyPolicy
    running: int
    rate_tokens: float | None


def policy(settings: QueueSettings, override: KeyOverride | None) -> KeyPolicy:
    o = override or KeyOverride()
    return KeyPolicy(
        weight=o.weight if o.weight is not None else 1.0,
        concurrency_limit=(
            o.concurrency_limit
            if o.concurrency_limit is not None
            else settings.key_concurrency_limit
        ),
        rate_limit=_either(o.rate_limit, settings.key_rate_limit),
        rate_burst=_either(o.rate_burst, settings.key_rate_burst),
    )


def _either(own: T | None, default: T | None) -> T | None:
    return own if own is not None else default


def start_tags(
    virtual_time: float,
    keys: Sequence[str],
    last_end: Mapping[str, float],
    weights: Mapping[str, float],
) -> tuple[list[float], dict[str, float]]:
    """Tags for jobs of `keys` (in order) becoming due now, and each key's new end: a key's
    job starts at the later of the virtual time and the end of the key's previous job."""
    ends = dict(last_end)
    tags = []
    for key in keys:
        start = max(virtual_time, ends.get(key, 0.0))
        tags.append(start)
        ends[key] = start + 1.0 / weights.get(key, 1.0)
    return tags, {key: ends[key] for key in dict.fromkeys(keys)}


def room(p: KeyPolicy, running: int, tokens: float | None) -> int | None:
    """How many more jobs of a key may start now (None: no limit of its own)."""
    left: int | None = None
    if p.concurrency_limit is not None:
        left = max(0, p.concurrency_limit - running)
    if p.rate_limit is not None and tokens is not None:
        by_rate = flow.whole_tokens(tokens)
        left = by_rate if left is None else min(left, by_rate)
    return left


def rate_horizon_s(policies: Iterable[KeyPolicy]) -> float | None:
    """How long after its last draw a key's bucket may still be short of full (None: no key
    is rate-limited): only buckets drawn from that recently need reading; the rest are full."""
    spans = [p.bucket_size / p.rate_limit for p in policies if p.rate_limit is not None]
    return max(spans) if spans else None


def pick(
    candidates: Sequence[tuple[int, str, float]],
    rooms: dict[str, int | None],
    default_room: int | None,
    limit: int,
) -> tuple[list[tuple[int, str, float]], set[str]]:
    """From (id, key, tag) in tag order, those each key's room allows, up to `limit`; also
    the keys found full (their later jobs are left, and a next read should skip them).
    `rooms` is updated: what a key has left after this pick."""
    chosen: list[tuple[int, str, float]] = []
    full: set[str] = set()
    for c in candidates:
        key = c[1]
        left = rooms.get(key, default_room)
        if left is not None and left <= 0:
            full.add(key)
            continue
        if left is not None:
            rooms[key] = left - 1
        chosen.append(c)
        if len(chosen) == limit:
            break
    return chosen, full


def busiest(counts: Iterable[tuple[str, int, int]], n: int) -> list[dict[str, object]]:
    """The `n` keys with the most jobs pending or running, most first (bounded: a queue of
    100,000 keys shows n, and /metrics gets n series, not one a key)."""
    ranked = sorted(counts, key=lambda c: (-(c[1] + c[2]), c[0]))[:n]
    return [
        {"key": key, "pending": pending, "running": running} for key, pending, running in ranked
    ]


def waiting_reason(
    key: str, queue: str, p: KeyPolicy, running: int, tokens: float | None, now: float
) -> dict[str, object] | None:
    """Why a due job of `key` waits, when its key's own limit is the reason."""
    if p.concurrency_limit is not None and running >= p.concurrency_limit:
        return {
            "code": "key_concurrency_limit",
            "message": f"key {key!r} of queue {queue!r} is running {running} of"
            f" {p.concurrency_limit} jobs",
        }
    if p.rate_limit is not None and tokens is not None and tokens < 1:
        return {
            "code": "key_rate_limit",
            "message": f"key {key!r} of queue {queue!r} is at its rate limit of {p.rate_limit:g}/s",
            "until": now + (1 - tokens) / p.rate_limit,
        }
    return None
