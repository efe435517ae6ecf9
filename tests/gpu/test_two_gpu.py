"""Two GPUs of one host: the trainer's weights on cuda:0, a vLLM replica in a Ray actor on the
other GPU, weights over NCCL (`ray.weight_transport = "collective"`). Runs where 2+ CUDA GPUs,
vLLM and Ray are present (the lent nvidia-h200-x2); elsewhere it is skipped with the reason."""

import os

import pytest

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(torch.cuda.device_count() < 2,
                       reason="needs 2 CUDA GPUs (run on the device: scripts/gpu_smoke.sh two_gpu)"),
]

CANARY = [[5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16], [20, 21, 22, 23, 24, 25, 26, 27]]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from backend.training.tiny_model import TinyModelSpec, build_model

    return build_model(tmp_path_factory.mktemp("m") / "tiny", TinyModelSpec(hidden_size=256, num_heads=4, num_kv_heads=2))


@pytest.fixture(scope="module")
def engine(model_dir, tmp_path_factory):
    os.environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")
    import ray

    from backend.engine.options import EngineOptions
    from backend.engine.ray_engine import RayEngine
    from backend.settings import RaySection

    assert not ray.is_initialized()
    eng = RayEngine(str(model_dir), EngineOptions(device="cuda", dtype="bfloat16", max_model_len=64, gpu_memory_utilization=0.2),
                    replicas=1,
                    ray_settings=RaySection(num_cpus_per_engine=2, num_gpus_per_engine=1, weight_transport="collective"))
    yield eng
    eng.shutdown()


def _hf_logprobs(model, seqs):
    out = []
    with torch.no_grad():
        for seq in seqs:
            inp = torch.tensor([seq], device=model.device)
            logits = model(input_ids=inp).logits[0, :-1].float()
            out.append(torch.log_softmax(logits, -1).gather(1, inp[0, 1:, None])[:, 0].tolist())
    return out


def test_engine_runs_on_a_gpu_other_than_the_trainers(engine):
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    first = visible.split(",")[0] if visible else "0"
    assert engine.engine_gpus and first not in engine.engine_gpus  # the local cluster never saw the trainer's GPU
    st = engine.node_stats()[0]
    assert [str(g) for g in st["gpu_ids"]] == engine.engine_gpus[:1], st["gpu_ids"]
    assert len(st["gpus"]) >= 2  # NVML on the node reports both cards (merged by host and index in GpuStats)
    assert os.environ["NCCL_NVLS_ENABLE"] == "0"  # set for the trainer and inherited by the cluster


def test_nccl_push_is_verified_and_serves_the_trainers_weights(engine, model_dir):
    from transformers import AutoModelForCausalLM

    from backend.engine import weight_sync

    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).to("cuda:0").eval()
    g = torch.Generator(device="cuda:0").manual_seed(0)
    before = engine.prompt_logprobs(CANARY)
    for version in (1, 2):
        with torch.no_grad():
            for p in hf.parameters():
                p.add_(torch.randn(p.shape, generator=g, device="cuda:0").to(p.dtype) * 0.05)
        tensors = weight_sync.state_tensors(hf)
        assert tensors[0][1].device.type == "cuda"
        checksum, nbytes = weight_sync.fingerprint(tensors)
        report = engine.push_weights(tensors, version, checksum)
        assert report.method.startswith("nccl broadcast:") and report.bytes == nbytes, report.method
        assert engine.weight_versions() == [version]
        want, got = _hf_logprobs(hf, CANARY), engine.prompt_logprobs(CANARY)
        worst = max(abs(a - b) for w, x in zip(want, got) for a, b in zip(w, x))
        assert worst < 0.25, f"v{version}: engine differs from the trainer by {worst:.3f}"  # bf16 tolerance
    moved = max(abs(a - b) for x, y in zip(before, engine.prompt_logprobs(CANARY)) for a, b in zip(x, y))
    assert moved > 0.05  # the pushes changed what the engine serves
    # a wrong announced checksum is refused on arrival, and the next push forms a fresh group
    with pytest.raises(Exception, match="received checksum"):
        engine.push_weights(tensors, 3, "0" * 16)
    assert engine.push_weights(tensors, 3, checksum).method.startswith("nccl broadcast:")
    engine.pause()
    engine.resume()
