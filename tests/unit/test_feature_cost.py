"""bench/feature_cost.py's meter: a feature's time is its own (what it calls that is timed apart
is subtracted), an inclusive feature keeps everything under it, and a hand-off keeps only its
own latency, not the work the other thread did meanwhile."""

import concurrent.futures
import time

from bench.feature_cost import Meter


def _busy(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


class Work:
    def outer(self):
        _busy(0.04)
        self.inner()

    def inner(self):
        _busy(0.02)

    def whole(self):
        _busy(0.02)
        self.inner()

    def hand_off(self, pool):
        return pool.submit(self.far).result()

    def far(self):
        time.sleep(0.2)


def test_exclusive_inclusive_and_hand_off_times():
    m = Meter()
    m.wrap(Work, "outer", "outer")
    m.wrap(Work, "inner", "inner")
    m.wrap(Work, "whole", "whole", inclusive=True)
    m.wrap(Work, "hand_off", "hand-off", minus_worker="far")
    m.worker(Work, "far", "far")
    w = Work()
    w.outer()
    w.whole()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        w.hand_off(pool)
    cpu = {k: v[0] for k, v in m.acc.items()}
    wall = {k: v[1] for k, v in m.acc.items()}
    assert 0.035 < cpu["outer"] < 0.055  # its own 40 ms, not the inner 20 ms
    assert 0.018 < cpu["inner"] < 0.03  # once: the call under "whole" belongs to "whole"
    assert 0.035 < cpu["whole"] < 0.055
    assert wall["hand-off"] < 0.05  # the 200 ms the worker slept is not the hand-off's
    m.end_step(1)
    assert m.steps[0]["features"]["outer"][0] == cpu["outer"] and m.acc == {}
    assert m.steps[0]["threads"]  # CPU per thread from /proc
