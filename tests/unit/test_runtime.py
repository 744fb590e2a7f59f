"""`jobserver serve`'s process-wide tuning."""

from __future__ import annotations

import gc

from jobserver.runtime import GEN0_THRESHOLD, tune_gc


def test_tune_gc_raises_the_young_threshold_and_freezes_start_up_objects() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == (GEN0_THRESHOLD, *before[1:])
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
