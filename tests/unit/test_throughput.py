"""The dashboard chart's history, kept by the server (pure: times are given)."""

from __future__ import annotations

from jobserver.throughput import ThroughputHistory


def test_buckets_count_what_ended_and_keep_the_last_ones() -> None:
    history = ThroughputHistory(bucket_s=2.0, keep=3)
    for at, ok in ((100.1, True), (100.9, True), (101.5, False), (102.0, True), (99.0, True)):
        history.record(ok, at)  # 99.0 comes late, into an older bucket
    assert history.points(now=103.9) == [(98.0, 1, 0), (100.0, 2, 1), (102.0, 1, 0)]
    history.record(True, 108.5)  # three buckets on: the oldest fall out of the window
    assert history.points(now=109.0) == [(104.0, 0, 0), (106.0, 0, 0), (108.0, 1, 0)]
    assert len(history._buckets) <= 3
