"""engine.core = "own_process" on a GPU: the whole engine in a child process (`HostedEngine`), the
trainer's mirror shared with it by CUDA IPC. Runs where a CUDA GPU and vLLM are present; elsewhere it is
skipped with the reason."""

import os

import pytest

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the device: scripts/gpu_smoke.sh)"),
]

from tests.gpu.test_gpu_engine import _digest  # noqa: E402  (the same parameter digest)


@pytest.fixture(scope="module")
def engine(model_dir):
    os.environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")
    from backend.engine.hosted import HostedEngine
    from backend.engine.options import EngineOptions

    eng = HostedEngine(str(model_dir), EngineOptions(device="cuda", dtype="bfloat16", max_model_len=64,
                                                     gpu_memory_utilization=0.2, own_process=True))
    yield eng
    eng.shutdown()


def _worker_pid(worker):
    return os.getpid()


def test_the_engine_runs_in_another_process(engine):
    from backend.engine.base import Sampling

    assert engine.collective_rpc(_worker_pid) == [engine.pid] and engine.pid != os.getpid()
    assert "own process" in engine.info.name
    out = engine.generate([[1, 2, 3]], Sampling(n=2, temperature=1.0, top_p=1.0, top_k=-1, max_tokens=5, seed=0))
    assert len(out[0]) == 2 and all(1 <= len(c.token_ids) <= 5 for c in out[0])  # a random model may sample EOS
    assert all(c.logprobs_known is False or len(c.logprobs) == len(c.token_ids) for c in out[0])


def test_mirror_pushes_by_ipc_equal_load_weights_and_map_once(engine, model_dir):
    """Each push of a refreshed mirror leaves the child's parameters exactly as vLLM's
    load_weights of a fresh cast leaves them; the mirror is mapped at its first push only (the
    later ones send its id); the child's checksum of what it mapped equals the trainer's; the
    engine then serves the pushed weights (its log-probs match the trainer's)."""
    from transformers import AutoModelForCausalLM

    from backend.engine import weight_sync

    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).cuda().eval()
    mirror = weight_sync.Mirror(hf, "bfloat16")
    g = torch.Generator(device="cuda").manual_seed(7)
    methods, ids = [], []
    for v in range(4):
        with torch.no_grad():
            for p in hf.parameters():
                p.add_(torch.randn(p.shape, generator=g, device="cuda") * 0.02)
        named = mirror.refresh()
        checksum, _ = mirror.fingerprint()
        engine.sync_method = "copy_plan"
        methods.append(engine.push_weights(named, engine.weight_version() + 1, checksum).method)
        ids.append(engine._shared[1])
        mine = engine.collective_rpc(_digest)[0]
        engine.sync_method = "load_weights"  # a one-off list: mapped for this push only
        engine.push_weights(weight_sync.state_tensors(hf, "bfloat16"), engine.weight_version() + 1, checksum)
        engine.sync_method = "copy_plan"
        assert engine.collective_rpc(_digest)[0] == mine, f"push {v}: shared mirror + copy plan and load_weights disagree"
    assert len(set(ids)) == 1 and ids[0], ids  # one mapping for the mirror's whole life
    assert methods[-1].endswith("copy_plan"), methods
    # a wrong checksum is caught where the child verifies: the first push of a new mirror
    mirror2 = weight_sync.Mirror(hf, "bfloat16")
    with pytest.raises(Exception, match="checksum"):
        engine.push_weights(mirror2.refresh(), engine.weight_version() + 1, "0" * 16)
    assert engine._shared[0] is mirror2.named.token  # mapped: its next push sends the id only
    # and the engine serves what was pushed
    checksum, _ = mirror2.fingerprint()
    engine.push_weights(mirror2.refresh(), engine.weight_version() + 1, checksum)
    seqs = [[1, 5, 9, 13, 17, 21, 25], [2, 4, 8, 16, 32, 40]]  # ids inside the tiny vocabulary
    got = engine.prompt_logprobs(seqs)
    with torch.no_grad():
        want = []
        for seq in seqs:
            inp = torch.tensor([seq], device="cuda")
            logits = hf(input_ids=inp).logits[0, :-1].float()
            want.append(torch.log_softmax(logits, -1).gather(1, inp[0, 1:, None])[:, 0].tolist())
    diff = max(abs(a - b) for r1, r2 in zip(got, want) for a, b in zip(r1, r2))
    assert diff < 0.1, diff  # bf16 engine vs float32 trainer on a tiny random model

