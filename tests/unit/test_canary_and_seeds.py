"""The weight canary's judgement and the per-prompt sampling seeds (pure logic)."""

import math
import random

import pytest

from backend.engine.base import request_seed
from backend.engine.canary import Canary, mean_abs_diff, pick_sequences


def _lp(seed, n=3, m=10, scale=3.0):
    rng = random.Random(seed)
    return [[-rng.random() * scale for _ in range(m)] for _ in range(n)]


def _noisy(lp, amp, seed):
    rng = random.Random(seed)
    return [[x + rng.uniform(-amp, amp) for x in row] for row in lp]


def test_canary_calibrates_then_passes_the_right_weights_and_refuses_stale_ones():
    c = Canary([[1, 2, 3]], tolerance=1e-3, noise_factor=3.0, max_noise=0.5)
    w0 = _lp(0)
    msg = c.calibrate(_noisy(w0, 0.08, 1), w0)  # bf16-like noise with identical weights
    assert 0.02 < c.noise_floor < 0.06 and "noise floor" in msg
    assert c.tolerance == pytest.approx(3 * c.noise_floor)
    # an update far larger than the noise: the engine that took it passes ...
    w1 = _noisy(w0, 1.0, 2)
    good = c.judge(_noisy(w1, 0.08, 3), w1)
    assert good.ok and good.distance <= good.tolerance and "previously verified" in good.detail
    # ... an engine that kept the old weights fails, and says it is closer to the old ones
    w2 = _noisy(w1, 1.0, 4)
    stale = c.judge(_noisy(w1, 0.08, 5), w2)
    assert not stale.ok and "not closer to the new weights" in stale.detail
    # a refused verdict does not move the reference: the next right push is judged against w1
    assert c.judge(_noisy(w2, 0.08, 6), w2).ok


def test_dtype_noise_grown_with_training_passes_when_tiny_against_the_move_but_not_a_partial_push():
    """The embedded default on an H200 at the step-50 check: floor 1.26e-3 at start (tolerance
    3.77e-3), then a correct bf16 engine 4.68e-3 from the new weights after they moved 3.87."""
    c = Canary([[1]], tolerance=1e-3, noise_factor=3.0, max_noise=0.5)
    w0 = _lp(20)
    c.calibrate(_noisy(w0, 2.52e-3, 21), w0)  # uniform noise of amplitude a: mean |Δ| ~ a/2
    tol = c.tolerance
    w1 = _noisy(w0, 7.7, 22)  # the policy moved far (mean |Δ| ~3.9)
    moved = mean_abs_diff(w0, w1)
    grown = c.judge(_noisy(w1, 2.5 * tol, 23), w1)  # noise above the start's tolerance, ~0.1-0.2% of the move
    assert grown.distance > tol and grown.ok, grown.detail
    assert "of how far the weights moved" in grown.detail
    assert grown.distance < 0.01 * moved
    # a push that left part of the model behind: half-way between the old and the new log-probs
    w2 = _noisy(w1, 7.7, 24)
    half = [[(a + b) / 2 for a, b in zip(ra, rb)] for ra, rb in zip(w2, w1)]
    assert not c.judge(half, w2).ok
    # and the stale engine is still refused
    w3 = _noisy(w2, 7.7, 25)
    assert not c.judge(_noisy(w2, 2.5 * tol, 26), w3).ok

    # checking every 5 syncs, step 10: 9.07e-3 from the new weights after a move of 0.65 (1.4%)
    c2 = Canary([[1]], tolerance=1e-3, noise_factor=3.0, max_noise=0.5)
    c2.calibrate(_noisy(w0, 2.52e-3, 27), w0)
    v1 = _noisy(w0, 1.3, 28)  # mean |Δ| ~0.65
    early = c2.judge(_noisy(v1, 2.4e-2, 29), v1)
    assert early.distance > c2.tolerance and 0.01 * mean_abs_diff(w0, v1) < early.distance, early.detail
    assert early.ok, early.detail


def test_canary_catches_a_perturbed_push_and_a_missing_value():
    c = Canary([[1, 2]], tolerance=1e-3, noise_factor=3.0, max_noise=0.5)
    w0 = _lp(7)
    c.calibrate(w0, w0)  # exact agreement: the tolerance is the profile's floor
    assert c.noise_floor == 0.0 and c.tolerance == 1e-3
    assert c.judge(_noisy(w0, 1e-4, 8), w0).ok
    assert not c.judge(_noisy(w0, 0.05, 9), w0).ok  # wrong values, same version
    broken = [row[:] for row in w0]
    broken[1][3] = math.nan
    assert not c.judge(broken, w0).ok and mean_abs_diff(broken, w0) == math.inf


def test_canary_refuses_to_start_when_identical_weights_disagree():
    c = Canary([[1]], tolerance=1e-3, noise_factor=3.0, max_noise=0.5)
    w0 = _lp(10)
    with pytest.raises(ValueError, match="do not run the same model"):
        c.calibrate(_lp(11), w0)


def test_small_moves_within_the_noise_are_reported_not_claimed():
    c = Canary([[1]], tolerance=1e-3, noise_factor=3.0, max_noise=0.5)
    w0 = _lp(12)
    c.calibrate(_noisy(w0, 0.08, 13), w0)
    w1 = _noisy(w0, 0.01, 14)
    v = c.judge(_noisy(w1, 0.08, 15), w1)
    assert v.ok and "within the tolerance" in v.detail


def test_pick_sequences_uses_prompt_tails_of_fixed_length():
    system = list(range(100, 130))  # a chat template's shared preamble
    prompts = [system + [1, 2, 3], system + [4, 5], [7]]
    seqs = pick_sequences(prompts, 8, 6)
    assert seqs[0] == system[-3:] + [1, 2, 3]
    assert seqs[1] == system[-4:] + [4, 5]
    assert seqs[2] == [7] * 6
    assert len({tuple(s) for s in seqs}) == 3


def test_request_seeds_differ_per_prompt_and_step_and_leave_room_for_the_group():
    g = 64
    seeds = [request_seed(base, i) for base in range(50) for i in range(64)]
    assert all(0 <= s < 2**62 for s in seeds)
    assert len(set(seeds)) == len(seeds)
    # vLLM uses s, s+1, ..., s+G-1 for the completions of one prompt: no two prompts' ranges overlap
    ordered = sorted(seeds)
    assert min(b - a for a, b in zip(ordered, ordered[1:])) > g
    assert request_seed(3, 5) == request_seed(3, 5)  # reproducible from the run's seed
