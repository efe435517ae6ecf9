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
