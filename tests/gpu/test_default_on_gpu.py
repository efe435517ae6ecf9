"""The embedded default (what `rl-console` runs with no profile) on a GPU, past many canary
checks: its bf16 engine's rounding grows as the policy sharpens, and a correct push must keep
passing (it failed the step-50 check before `canary.MOVED_FRACTION`)."""

import threading

import pytest

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the device: scripts/gpu_smoke.sh)"),
]


def test_embedded_default_learns_with_every_verified_sync_passing(rlc_home, tmp_path):
    from backend.controller import Controller
    from backend.runstore import RunStore
    from backend.settings import load_profile

    profile = load_profile(None, run={"max_steps": 100, "checkpoint_every": 0}, engine={"verify_every": 5})
    ctl = Controller(profile, run_id="gpu-default", run_dir=tmp_path, profile_name="default", store=RunStore(tmp_path / "events.db"))
    events = []
    ctl.bus.subscribe(events.append)
    worker = threading.Thread(target=ctl.run, daemon=True)
    worker.start()
    worker.join(timeout=400)
    assert not worker.is_alive(), "the run did not finish in 400 s"
    states = [e.state for e in events if e.kind == "state_changed"]
    synced = [e for e in events if e.kind == "weights_synced"]
    checked = [e for e in synced if "not canary-checked" not in e.method]
    assert states[-1] == "finished", [getattr(e, "reason", "") for e in events if e.kind == "state_changed"][-3:]
    assert ctl.session.device == "cuda" and ctl.session.dtype == "bfloat16"
    assert len(checked) >= 20 and all(e.verified for e in checked), [e.detail for e in checked if not e.verified]
    rewards = [e.reward_mean for e in events if e.kind == "step_metrics"]
    assert sum(rewards[-10:]) / 10 > sum(rewards[:10]) / 10 + 0.2, (rewards[:10], rewards[-10:])
