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
def model_dir(tmp_path_factory):
    from backend.training.tiny_model import TinyModelSpec, build_model

    # head size 64: supported by every CUDA attention backend
    return build_model(tmp_path_factory.mktemp("m") / "tiny", TinyModelSpec(hidden_size=256, num_heads=4, num_kv_heads=2))


@pytest.fixture(scope="module")
def engine(model_dir):
    os.environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")
    from backend.engine.local import LocalVLLMEngine

    eng = LocalVLLMEngine(str(model_dir), device="cuda", dtype="bfloat16", max_model_len=64, gpu_memory_utilization=0.2)
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


@pytest.mark.parametrize("method", ["load_weights", "reload_weights"])
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
    assert report.bytes == nbytes and report.method.endswith(method)


def test_nvml_stats_on_the_gpu():
    from backend.telemetry.gpu import probe, read_gpus

    nvml, handles, reason = probe()
    assert nvml is not None, reason
    gpus = read_gpus(nvml, handles, "test")
    assert gpus and gpus[0].mem_total_mb > 10_000 and gpus[0].power_w and gpus[0].temperature_c is not None
    assert "H100" in gpus[0].name or "H200" in gpus[0].name or gpus[0].name
