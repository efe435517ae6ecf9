"""bench/overlap_contention.py's gain bound: what overlapping one rollout with one update can
save at measured rates (pure arithmetic; the rates themselves are measured on a GPU)."""

import pytest

from bench.overlap_contention import overlap_gain


def test_no_slowdown_hides_the_shorter_half():
    assert overlap_gain(600, 120, 600, 120) == pytest.approx(720 / 600)


def test_each_half_at_half_speed_while_both_run_gains_nothing():
    # the GPU time-sliced evenly: while both run each goes at half speed, as if one after the other
    assert overlap_gain(600, 120, 1200, 240) == pytest.approx(1.0)


def test_update_slowed_while_rollout_runs():
    # the rollout ends at 200 ms, the update has done 200 * 600/1000 = 120 ms of its work by then
    assert overlap_gain(600, 100, 1000, 200) == pytest.approx(700 / (200 + 480))


def test_rollout_outlasting_the_update():
    # the update ends first at 300 ms; the rollout has done 300 * 400/800 = 150 of its 400 ms
    assert overlap_gain(200, 400, 300, 800) == pytest.approx(600 / (300 + 250))
