"""fairness.py: tags, rooms and picks, directly (no store)."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from jobserver import fairness, flow
from jobserver.fairness import KeyOverride, KeyPolicy
from jobserver.models import QueueSettings


def test_a_key_starts_at_the_later_of_the_virtual_time_and_its_own_end() -> None:
    tags, ends = fairness.start_tags(10.0, ["a", "b", "a"], {"a": 12.0, "b": 3.0}, {})
    assert tags == [12.0, 10.0, 13.0]  # a is owed nothing; b's old end is forgotten
    assert ends == {"a": 14.0, "b": 11.0}


def test_a_weight_spaces_a_keys_jobs_closer() -> None:
    tags, _ = fairness.start_tags(0.0, ["gold"] * 4, {}, {"gold": 4.0})
    assert tags == [0.0, 0.25, 0.5, 0.75]


@given(
    st.lists(st.sampled_from("abcd"), min_size=1, max_size=60),
    st.dictionaries(st.sampled_from("abcd"), st.floats(0.5, 8)),
)
def test_backlogged_keys_get_turns_in_proportion_to_their_weights(
    keys: list[str], weights: dict[str, float]
) -> None:
    """Jobs all due at once, in any order: before any tag t, a key of weight w has exactly
    min(its jobs, ceil(t * w)) jobs, so taking jobs in tag order serves each key by weight."""
    tags, _ = fairness.start_tags(0.0, keys, {}, weights)
    for t in tags:
        for k in set(keys):
            before = sum(1 for tag, kk in zip(tags, keys, strict=True) if kk == k and tag < t)
            w = weights.get(k, 1.0)
            assert before == min(keys.count(k), math.ceil(t * w - 1e-9))


def test_the_policy_takes_a_keys_own_settings_over_the_queues() -> None:
    queue = QueueSettings(key_concurrency_limit=2, key_rate_limit=5.0)
    p = fairness.policy(queue, KeyOverride(weight=3.0, concurrency_limit=10))
    assert p == KeyPolicy(weight=3.0, concurrency_limit=10, rate_limit=5.0, rate_burst=None)
    assert fairness.policy(queue, None) == KeyPolicy(concurrency_limit=2, rate_limit=5.0)


def test_room_is_the_tighter_of_the_concurrency_and_the_rate_limits() -> None:
    p = KeyPolicy(concurrency_limit=3, rate_limit=1.0, rate_burst=10.0)
    assert fairness.room(p, running=1, tokens=5.0) == 2
    assert fairness.room(p, running=0, tokens=1.5) == 1
    assert fairness.room(p, running=3, tokens=5.0) == 0
    assert fairness.room(KeyPolicy(), running=100, tokens=None) is None


def test_a_bucket_refills_at_its_rate_up_to_its_size() -> None:
    p = KeyPolicy(rate_limit=2.0, rate_burst=4.0)
    assert flow.refill(p, None, None, 100.0) == 4.0  # never drawn: full
    assert flow.refill(p, 0.0, 100.0, 101.0) == 2.0
    assert flow.refill(p, 0.0, 100.0, 200.0) == 4.0
    assert fairness.rate_horizon_s([p, KeyPolicy(rate_limit=10.0)]) == 2.0  # 4 tokens at 2/s


def test_a_pick_stops_at_each_keys_room_and_names_the_keys_found_full() -> None:
    candidates = [(1, "a", 0.0), (2, "a", 1.0), (3, "b", 1.0), (4, "a", 2.0), (5, "c", 2.0)]
    rooms: dict[str, int | None] = {"a": 1}
    chosen, full = fairness.pick(candidates, rooms, None, 10)
    assert [c[0] for c in chosen] == [1, 3, 5]
    assert full == {"a"} and rooms["a"] == 0
    chosen, _ = fairness.pick(candidates, {}, 1, 10)  # a default room of one a key
    assert [c[0] for c in chosen] == [1, 3, 5]
    chosen, _ = fairness.pick(candidates, {}, None, 2)
    assert [c[0] for c in chosen] == [1, 2]


def test_the_busiest_keys_are_bounded_and_ordered() -> None:
    counts = [(f"k{i}", i, 1) for i in range(100)]
    top = fairness.busiest(counts, 3)
    assert [t["key"] for t in top] == ["k99", "k98", "k97"]


def test_a_key_held_by_its_own_limit_says_so() -> None:
    p = KeyPolicy(concurrency_limit=2)
    reason = fairness.waiting_reason("acme", "q", p, running=2, tokens=None, now=0.0)
    assert reason is not None and reason["code"] == "key_concurrency_limit"
    assert "acme" in str(reason["message"]) and "2 of 2" in str(reason["message"])
    rated = fairness.waiting_reason("acme", "q", KeyPolicy(rate_limit=4.0), 0, 0.5, now=10.0)
    assert rated is not None and rated["code"] == "key_rate_limit"
    assert rated["until"] == 10.0 + 0.125
    assert fairness.waiting_reason("acme", "q", p, running=1, tokens=None, now=0.0) is None
