"""Process-wide tuning for a process that is a jobserver and nothing else (`jobserver serve`).

Embedded in someone else's program, jobserver leaves these settings to that program.
"""

from __future__ import annotations

import gc

# Generation 0 is collected every GEN0_THRESHOLD net allocations of container objects. At
# the default (700) a busy server spends a quarter of its event loop in the collector, for
# objects (requests, futures, rows) that reference counting frees anyway.
GEN0_THRESHOLD = 50_000


def tune_gc() -> None:
    """Collect young objects less often, and leave the start-up objects (modules, tasks,
    the application) out of every later collection."""
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
    gc.collect()
    gc.freeze()
