"""bench/vs_trl.py's rounds: each round's ratios come from that round's own loops only (pure
arithmetic over the medians the GPU runs measure), and a loop that did not run gives no ratio."""

import pytest

from bench.vs_trl import round_ratios


def _round(**median_ms):
    return {name: {"summary": {"median_step_s": ms / 1000 if ms else None}} for name, ms in median_ms.items()}


def test_each_round_pairs_its_own_loops():
    rounds = [_round(trl=300, rl_console=240, rl_console_overlap=160), _round(trl=350, rl_console=250, rl_console_overlap=200)]
    got = round_ratios(rounds)
    assert got["rl-console step / TRL step"] == pytest.approx([0.8, 250 / 350])
    assert got["overlap steps/s / synchronous"] == pytest.approx([1.5, 1.25])


def test_a_missing_or_failed_loop_gives_no_ratio_for_that_round():
    rounds = [_round(rl_console=240, rl_console_overlap=160), _round(trl=300, rl_console=None, rl_console_overlap=150)]
    got = round_ratios(rounds)
    assert got == {"overlap steps/s / synchronous": pytest.approx([1.5])}


def test_the_summary_shows_a_stall_the_median_hides():
    from bench.vs_trl import summarize

    steps = [71.1] + [0.24] * 10 + [102.6] + [0.24] * 18  # the compiled run: step 1 compiles, step 12 compiled again
    rows = [{"step": i + 1, "step_s": s, "reward": 0.0} for i, s in enumerate(steps)]
    out = summarize({"rows": rows}, [])
    assert out["median_step_s"] == pytest.approx(0.24)
    assert (out["stalled_steps"], out["slowest_later_step_s"]) == (1, 102.6)
    assert out["stalled_s"] == pytest.approx(102.6) and out["mean_step_s"] > 3.5
    calm = summarize({"rows": [{"step": i + 1, "step_s": 0.24, "reward": 0.0} for i in range(30)]}, [])
    assert calm["stalled_steps"] == 0
