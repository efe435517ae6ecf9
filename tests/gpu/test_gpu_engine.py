"""GPU path: the CUDA build of vLLM, NVML stats. Runs where a CUDA GPU and vLLM are present
(the lent H100); elsewhere it is skipped with the reason."""

import os

import pytest

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the device: scripts/gpu_smoke.sh)"),
]


@pytest.fixture(scope="module")
def engine(model_dir):
    os.environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")
    from backend.engine.local import LocalVLLMEngine
    from backend.engine.options import EngineOptions

    eng = LocalVLLMEngine(str(model_dir), EngineOptions(device="cuda", dtype="bfloat16", max_model_len=64, gpu_memory_utilization=0.2))
    yield eng
    eng.shutdown()


def _hf_logprobs(model, seqs):
    out = []
    with torch.no_grad():
        for seq in seqs:
            inp = torch.tensor([seq], device="cuda")
            logits = model(input_ids=inp).logits[0, :-1].float()
            out.append(torch.log_softmax(logits, -1).gather(1, inp[0, 1:, None])[:, 0].tolist())
    return out


def test_generate_on_cuda(engine):
    from backend.engine.base import Sampling

    groups = engine.generate([[5, 6, 7], [8, 9]], Sampling(n=4, temperature=1.0, top_p=1.0, top_k=-1, max_tokens=8, seed=1))
    assert [len(g) for g in groups] == [4, 4]
    assert all(1 <= len(c.token_ids) <= 8 and len(c.logprobs) == len(c.token_ids) for g in groups for c in g)
    assert engine.info.device == "cuda" and "vllm" in engine.info.name


@pytest.mark.parametrize("method", ["load_weights", "reload_weights", "copy_plan"])
def test_each_weight_path_updates_in_place(engine, model_dir, method):
    from transformers import AutoModelForCausalLM

    from backend.engine import weight_sync

    if method not in engine.sync_methods:
        pytest.skip(f"this vLLM offers {engine.sync_methods}, not {method}")
    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).cuda().eval()
    torch.manual_seed(len(method))
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    seqs = [[5, 6, 7, 8, 9, 10, 11, 12], [13, 14, 15, 16, 17, 18]]
    before = engine.prompt_logprobs(seqs)
    want = _hf_logprobs(hf, seqs)
    engine.sync_method = method
    tensors = weight_sync.state_tensors(hf)
    checksum, nbytes = weight_sync.fingerprint(tensors)
    report = engine.push_weights(tensors, engine.weight_version() + 1, checksum)
    got = engine.prompt_logprobs(seqs)
    worst = max(abs(a - b) for w, g in zip(want, got) for a, b in zip(w, g))
    moved = max(abs(a - b) for w, g in zip(before, got) for a, b in zip(w, g))
    assert worst < 0.1, f"{method}: engine log-probs differ from the trainer's by {worst}"
    assert moved > 5 * worst  # the update really changed the engine
    assert report.bytes == nbytes and method.replace("_", " ") in report.method.replace("_", " ")
    engine.sync_method = engine.sync_methods[0]


def _digest(worker):
    """In the worker: per engine parameter, its sum and a position-weighted sum (float64)."""
    from backend.engine import vllm_compat

    out = []
    for name, p in vllm_compat.engine_model(worker).named_parameters():
        flat = p.detach().reshape(-1).double()
        w = torch.arange(flat.numel(), device=flat.device, dtype=torch.float64).remainder_(9973).add_(1)
        out.append((name, flat.sum().item(), (flat * w).sum().item()))
    return out




def _policy(model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).cuda().eval()


def test_copy_plan_is_the_default_and_bit_equal_to_load_weights_push_after_push(engine, model_dir):
    """float32 trainer, bf16 engine (the packed cast): every copy-plan push leaves the engine's
    parameters exactly as vLLM's own load_weights leaves them with the same tensors."""
    from backend.engine import weight_sync

    assert engine.sync_methods[0] == "copy_plan" and engine.sync_method == "copy_plan"
    hf = _policy(model_dir)
    g = torch.Generator(device="cuda").manual_seed(3)
    methods = []
    for v in range(3):
        with torch.no_grad():
            for p in hf.parameters():
                p.add_(torch.randn(p.shape, generator=g, device="cuda") * 0.02)
        tensors = weight_sync.state_tensors(hf, "bfloat16")
        per_tensor = [(n, t.detach().to(torch.bfloat16)) for n, t in hf.state_dict().items()]
        assert weight_sync.fingerprint(tensors) == weight_sync.fingerprint(per_tensor)  # the packed cast: same bytes
        on_cpu = [(n, t.cpu()) for n, t in tensors]
        assert weight_sync.fingerprint(tensors) == weight_sync.fingerprint(on_cpu)  # any device: the same checksum
        fp32 = weight_sync.state_tensors(hf)
        assert weight_sync.fingerprint(fp32) == weight_sync.fingerprint([(n, t.cpu()) for n, t in fp32])  # checkpoints
        checksum, _ = weight_sync.fingerprint(tensors)
        methods.append(engine.push_weights(tensors, engine.weight_version() + 1, checksum).method)
        mine = engine.llm.collective_rpc(_digest)[0]
        engine.sync_method = "load_weights"
        engine.push_weights(tensors, engine.weight_version() + 1, checksum)
        engine.sync_method = "copy_plan"
        assert engine.llm.collective_rpc(_digest)[0] == mine, f"push {v}: copy plan and load_weights disagree"
    assert methods[-1].endswith("copy_plan"), methods  # replayed, not only recorded
    plan = engine.llm.collective_rpc(weight_sync.plan_of)[0]
    assert plan is not None and plan.copies > 0


def test_mirror_pushes_are_bit_equal_to_load_weights_and_replay_from_kept_views(engine, model_dir):
    """The session's CUDA path: a persistent bf16 mirror refreshed in place each step. Every push
    leaves the engine exactly as vLLM's load_weights of a fresh cast leaves it, the checksum is
    the fresh cast's, and the copy plan keeps its source views for the mirror's later pushes."""
    from backend.engine import weight_sync

    hf = _policy(model_dir)
    mirror = weight_sync.Mirror(hf, "bfloat16")
    g = torch.Generator(device="cuda").manual_seed(5)
    methods = []
    for v in range(4):
        with torch.no_grad():
            for p in hf.parameters():
                p.add_(torch.randn(p.shape, generator=g, device="cuda") * 0.02)
        named = mirror.refresh()
        fresh = weight_sync.state_tensors(hf, "bfloat16")
        checksum, nbytes = mirror.fingerprint()
        assert (checksum, nbytes) == weight_sync.fingerprint(fresh)
        engine.sync_method = "copy_plan"
        methods.append(engine.push_weights(named, engine.weight_version() + 1, checksum).method)
        mine = engine.llm.collective_rpc(_digest)[0]
        engine.sync_method = "load_weights"
        engine.push_weights(fresh, engine.weight_version() + 1, checksum)
        engine.sync_method = "copy_plan"
        assert engine.llm.collective_rpc(_digest)[0] == mine, f"push {v}: mirror + copy plan and load_weights disagree"
    assert methods[-1].endswith("copy_plan"), methods
    plan = engine.llm.collective_rpc(weight_sync.plan_of)[0]
    assert plan._cached is not None and plan._cached[0] is mirror.named.token  # views kept for the mirror


def test_a_stale_push_is_refused_by_the_canary(engine, model_dir):
    """A push of the previous weights (a stale buffer, a lost update) after the trainer moved on
    must not pass: the canary sees the engine closer to the old weights than to the new."""
    from backend.engine import weight_sync
    from backend.engine.canary import Canary

    hf = _policy(model_dir)
    seqs = [[5 + (i * 11 + j * 3) % 40 for j in range(16)] for i in range(4)]  # the char vocabulary has 49 ids

    def trainer_lp():
        return _hf_logprobs(hf, seqs)

    def push():
        tensors = weight_sync.state_tensors(hf, "bfloat16")
        checksum, _ = weight_sync.fingerprint(tensors)
        engine.push_weights(tensors, engine.weight_version() + 1, checksum)
        return tensors

    push()  # bf16 noise grows with these large moves: the tolerance is the profile's kind (engine.canary_tolerance)
    canary = Canary(seqs, tolerance=0.05, noise_factor=3.0, max_noise=0.5)
    canary.calibrate(engine.prompt_logprobs(seqs), trainer_lp())
    old = push()
    g = torch.Generator(device="cuda").manual_seed(7)
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn(p.shape, generator=g, device="cuda") * 0.05)
    push()
    right = canary.judge(engine.prompt_logprobs(seqs), trainer_lp())
    assert right.ok, right.detail
    with torch.no_grad():  # the trainer moves on again...
        for p in hf.parameters():
            p.add_(torch.randn(p.shape, generator=g, device="cuda") * 0.05)
    engine.push_weights(old, engine.weight_version() + 1, weight_sync.fingerprint(old)[0])  # ...but stale bytes go out
    stale = canary.judge(engine.prompt_logprobs(seqs), trainer_lp())
    assert not stale.ok, stale.detail
    push()
    assert canary.judge(engine.prompt_logprobs(seqs), trainer_lp()).ok


def test_nvml_stats_on_the_gpu():
    from backend.telemetry.gpu import probe, read_gpus

    nvml, handles, reason = probe()
    assert nvml is not None, reason
    gpus = read_gpus(nvml, handles, "test")
    assert gpus and gpus[0].mem_total_mb > 10_000 and gpus[0].power_w and gpus[0].temperature_c is not None
    assert "H100" in gpus[0].name or "H200" in gpus[0].name or gpus[0].name
