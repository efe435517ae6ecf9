"""The step loop's collector settings once a run is built: startup objects frozen out of the
collector's reach, young objects collected every YOUNG_GC_THRESHOLD allocations, and cyclic
garbage made after that still collected."""

import gc
import weakref

from backend.training.step import YOUNG_GC_THRESHOLD, settle_heap


class Node:
    pass


def test_settle_heap_freezes_startup_raises_the_young_threshold_and_still_collects_cycles():
    before = gc.get_threshold()
    try:
        settle_heap()
        assert gc.get_freeze_count() > 1000, "the objects alive at start are frozen"
        assert gc.get_threshold() == (YOUNG_GC_THRESHOLD, *before[1:])
        a, b = Node(), Node()
        a.other, b.other = b, a  # a cycle: only the collector can free it
        ref = weakref.ref(a)
        del a, b
        assert ref() is not None
        gc.collect()
        assert ref() is None, "cyclic garbage made after settle_heap is still collected"
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
