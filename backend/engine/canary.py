"""The weight canary: does the engine serve the weights the trainer just pushed?

A max-abs-diff of log-probs against a fixed constant cannot tell "same weights, other
kernels" from "wrong weights": a real bf16 model on a GPU differs from its float32 master
copy by up to ~0.4 on low-probability tokens with correct weights, while a stale engine
after a few small updates may differ by less. So the canary

1. **calibrates its noise floor** when both sides hold known-identical weights (the engine
   as loaded from disk, the trainer as loaded from the same files, before any update):
   the mean |Δ log-prob| over the canary tokens is what kernels and dtype alone produce;
2. judges a push by the **mean** |Δ| over all canary tokens (a distance between the two
   distributions of log-probs, not the single worst token), against
   `max(canary_tolerance, canary_noise_factor × floor)`;
3. when the trainer's log-probs of the previously verified weights are known, reports how
   far the engine is from those too, and refuses an engine that is not closer to the new
   weights than to the old ones once the weights moved more than the tolerance;
4. once the weights moved that far, also passes an engine above the tolerance but within
   `MOVED_FRACTION` (10%) of the move: the floor was measured on the untrained model, and a
   bf16 engine's rounding grows as the policy sharpens (the embedded default on an H200 with
   correct weights: mean |Δ| 4.7e-3 at step 50 after a move of 3.9, 9.1e-3 at step 10 after a
   move of 0.65 (1.4%), against a start tolerance of 3.8e-3). A stale engine sits ~100% of the
   move away, a half-applied push ~50%.

What it cannot do: in bf16 the noise floor (mean ~0.04 on SmolLM2-135M, max ~0.5) hides
updates that move the log-probs less than that (measured: a push after a 0.3% weight
perturbation is indistinguishable from a skipped one). Those versions are told apart by
the checksum of what a Ray replica received and the weight version the engine reports,
not by the canary.

The numbers here are pure Python; the forward passes live in the session (trainer) and
the engine (`prompt_logprobs`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

LogProbs = list[list[float]]

#: how close to the new weights, as a share of how far they moved since the last verified push,
#: an engine above the calibrated tolerance may be and still pass (see 4. above)
MOVED_FRACTION = 0.1


def mean_abs_diff(a: LogProbs, b: LogProbs) -> float:
    """Mean |a - b| over every token of every sequence; inf if any value is missing or not finite."""
    total, count = 0.0, 0
    for ra, rb in zip(a, b):
        if len(ra) != len(rb):
            return math.inf
        for x, y in zip(ra, rb):
            d = abs(x - y)
            if not math.isfinite(d):
                return math.inf
            total += d
            count += 1
    return total / count if count else math.inf


def max_abs_diff(a: LogProbs, b: LogProbs) -> float:
    worst = 0.0
    for ra, rb in zip(a, b):
        for x, y in zip(ra, rb):
            d = abs(x - y)
            worst = d if not math.isfinite(d) else max(worst, d)
    return worst


@dataclass
class CanaryVerdict:
    ok: bool
    distance: float  # mean |Δ| engine vs the trainer's new weights
    tolerance: float
    detail: str


class Canary:
    """Holds the canary sequences, the calibrated noise floor and the last verified log-probs."""

    def __init__(self, sequences: list[list[int]], *, tolerance: float, noise_factor: float, max_noise: float) -> None:
        self.sequences = sequences
        self.min_tolerance = tolerance
        self.noise_factor = noise_factor
        self.max_noise = max_noise
        self.noise_floor: float | None = None
        self.noise_max: float | None = None
        self._previous: LogProbs | None = None  # the trainer's log-probs at the last verified push

    @property
    def tolerance(self) -> float:
        floor = self.noise_floor or 0.0
        return max(self.min_tolerance, self.noise_factor * floor)

    def calibrate(self, engine_lp: LogProbs, trainer_lp: LogProbs) -> str:
        """Both sides hold the same weights: what is left is kernel and dtype noise.

        Raises ValueError when even identical weights disagree beyond `max_noise`: then the
        engine does not run the trainer's model (another model, tokenizer or dtype mix-up),
        and no later check would mean anything.
        """
        floor = mean_abs_diff(engine_lp, trainer_lp)
        if not floor <= self.max_noise:
            raise ValueError(
                f"the engine and the trainer disagree on the same weights: mean |Δ log-prob| {floor:.3g} over "
                f"{sum(len(s) for s in engine_lp)} canary tokens (engine.canary_max_noise {self.max_noise:g}); "
                "they do not run the same model (check model.source, the tokenizer and model.dtype)"
            )
        self.noise_floor = floor
        self.noise_max = max_abs_diff(engine_lp, trainer_lp)
        self._previous = trainer_lp
        return (f"canary noise floor: mean |Δ log-prob| {floor:.2e} (max {self.noise_max:.2e}) with identical weights; "
                f"tolerance {self.tolerance:.2e}")

    def judge(self, engine_lp: LogProbs, trainer_lp: LogProbs) -> CanaryVerdict:
        """Is the engine serving `trainer_lp`'s weights (and not the previously verified ones)?"""
        tol = self.tolerance
        d_new = mean_abs_diff(engine_lp, trainer_lp)
        worst = max_abs_diff(engine_lp, trainer_lp)
        ok = d_new <= tol
        detail = f"canary mean |Δ log-prob| {d_new:.2e} (max {worst:.2e}; tol {tol:.2e}"
        detail += f", noise floor {self.noise_floor:.2e})" if self.noise_floor is not None else ")"
        prev = self._previous
        if prev is not None:
            moved = mean_abs_diff(prev, trainer_lp)
            d_prev = mean_abs_diff(engine_lp, prev)
            if moved > tol:
                detail += f"; {d_prev:.2e} from the previously verified weights (they moved {moved:.2e})"
                if not d_new < d_prev:
                    ok = False
                    detail += ": the engine is not closer to the new weights than to the old"
                elif not ok and d_new <= MOVED_FRACTION * moved:
                    # the floor was measured on the untrained model; as the policy sharpens, a
                    # bf16 engine's rounding moves its log-probs more with correct weights
                    ok = True
                    detail += (f": above the start's tolerance, but {d_new / moved:.2%} of how far the weights moved "
                               f"(within {MOVED_FRACTION:.0%}): the engine holds the new weights")
            else:  # bf16 noise hides small moves: what the engine received is proven by the checksum
                detail += f"; the weights moved {moved:.2e} since the last check, within the tolerance"
        if ok:
            self._previous = trainer_lp
        return CanaryVerdict(ok=ok, distance=d_new, tolerance=tol, detail=detail)


def pick_sequences(encoded_prompts: list[list[int]], count: int, length: int) -> list[list[int]]:
    """Canary sequences from real prompts: the tail of each (a chat template's shared system
    preamble is the same in every prompt; the tail is the user's own text), repeated to length."""
    out = []
    for ids in encoded_prompts[:count]:
        if not ids:
            continue
        seq = list(ids[-length:])
        while len(seq) < length:
            seq = seq + list(ids[: length - len(seq)])
        out.append(seq)
    return out
