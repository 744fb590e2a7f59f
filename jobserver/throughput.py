"""How many jobs ended a moment, over the last two minutes: the dashboard's chart, kept by the
server so that it has a history when a page opens. Pure: times are given (a Transition's)."""

from __future__ import annotations

import math
from collections import OrderedDict

BUCKET_S = 2.0
KEEP = 60  # buckets: two minutes


class ThroughputHistory:
    """Jobs that succeeded and that failed for good, a BUCKET_S bucket each, the last KEEP."""

    def __init__(self, bucket_s: float = BUCKET_S, keep: int = KEEP) -> None:
        self.bucket_s = bucket_s
        self.keep = keep
        self._buckets: OrderedDict[int, list[int]] = OrderedDict()  # index -> [ok, failed]

    def record(self, succeeded: bool, at: float) -> None:
        index = math.floor(at / self.bucket_s)
        bucket = self._buckets.get(index)
        if bucket is None:
            bucket = self._buckets[index] = [0, 0]
            if len(self._buckets) > 1 and index < next(reversed(self._buckets)):
                self._buckets = OrderedDict(sorted(self._buckets.items()))  # a late one
            while len(self._buckets) > self.keep:
                self._buckets.popitem(last=False)
        bucket[0 if succeeded else 1] += 1

    def points(self, now: float) -> list[tuple[float, int, int]]:
        """(bucket start, succeeded, failed) for each of the last `keep` buckets up to `now`,
        oldest first, empty ones included."""
        last = math.floor(now / self.bucket_s)
        out = []
        for index in range(last - self.keep + 1, last + 1):
            ok, failed = self._buckets.get(index, (0, 0))
            out.append((index * self.bucket_s, ok, failed))
        return out
