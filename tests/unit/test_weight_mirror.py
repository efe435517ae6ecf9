"""weight_sync.Mirror: the policy's persistent copy in the engine's dtype, refreshed in place.
Its pushes must carry exactly what a fresh cast (`state_tensors`) carries, with the same
checksum, and it must notice a parameter whose storage was replaced. (On CUDA the session
uses it for the in-process engine; tests/gpu checks it against vLLM's load_weights.)"""

import pytest

torch = pytest.importorskip("torch")


def _model(tied: bool):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, tie_word_embeddings=tied)
    return Qwen2ForCausalLM(cfg).float()


def _step(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.01)


@pytest.mark.parametrize("tied", [True, False])
def test_each_refresh_pushes_what_a_fresh_cast_pushes(tied):
    from backend.engine import weight_sync

    model = _model(tied)
    mirror = weight_sync.Mirror(model, "bfloat16")
    first = mirror.refresh()
    seen = []
    for seed in range(3):
        _step(model, seed)
        named = mirror.refresh()
        fresh = weight_sync.state_tensors(model, "bfloat16")
        assert named is first and named.token is first.token  # the same list, storage and generation each push
        assert [n for n, _ in named] == [n for n, _ in fresh]
        for (name, a), (_, b) in zip(named, fresh):
            assert a.dtype == b.dtype == torch.bfloat16 and torch.equal(a, b), name
        assert mirror.fingerprint() == weight_sync.fingerprint(fresh)
        seen.append(mirror.fingerprint()[0])
    assert len(set(seen)) == 3  # new values, new checksum
    if tied:  # one view for both names of a tied weight: copied once
        views = dict(named)
        assert views["lm_head.weight"].data_ptr() == views["model.embed_tokens.weight"].data_ptr()
        assert len(mirror.dsts) == len({p.data_ptr() for p in model.parameters()})


def test_a_replaced_parameter_storage_is_noticed():
    from backend.engine import weight_sync

    model = _model(False)
    mirror = weight_sync.Mirror(model, "bfloat16")
    assert mirror.valid()
    w = model.model.layers[0].mlp.up_proj.weight
    w.data = w.data.clone() * 2  # what a wrapper re-placing a parameter does
    assert not mirror.valid()
    rebuilt = weight_sync.Mirror(model, "bfloat16")
    assert rebuilt.fingerprint() == weight_sync.fingerprint(weight_sync.state_tensors(model, "bfloat16"))


def test_tensors_already_in_the_engine_dtype_are_pushed_as_they_are():
    from backend.engine import weight_sync

    model = _model(False).to(torch.bfloat16)
    mirror = weight_sync.Mirror(model, "bfloat16")
    assert mirror.buffer is None and mirror.dsts == []
    live = {n: p.data_ptr() for n, p in model.state_dict().items()}
    assert all(t.data_ptr() == live[n] for n, t in mirror.refresh())
    assert mirror.fingerprint() == weight_sync.fingerprint(weight_sync.state_tensors(model, "bfloat16"))


def test_copy_plan_replays_a_mirror_from_kept_views_and_stays_exact():
    """CopyPlan on CPU with a loader shaped like vLLM's (a fused qkv parameter filled by narrowed
    copies): recorded once, then replayed; a mirror's pushes reuse their source views, and every
    replay equals a fresh run of the loader."""
    from backend.engine import weight_sync

    class Engine(torch.nn.Module):  # what vLLM holds: q, k, v fused into one parameter
        def __init__(self):
            super().__init__()
            self.qkv = torch.nn.Parameter(torch.zeros(12, 4, dtype=torch.bfloat16), requires_grad=False)
            self.out = torch.nn.Parameter(torch.zeros(4, 4, dtype=torch.bfloat16), requires_grad=False)

    def load(engine, named):
        parts = dict(named)
        for i, n in enumerate(("q", "k", "v")):
            engine.qkv.data.narrow(0, 4 * i, 4).copy_(parts[n])
        engine.out.data.copy_(parts["o"])

    class Policy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            for n in "qkvo":
                setattr(self, n, torch.nn.Parameter(torch.randn(4, 4)))

    policy, engine, check = Policy(), Engine(), Engine()
    mirror = weight_sync.Mirror(policy, "bfloat16")
    named = mirror.refresh()
    plan = weight_sync.CopyPlan.record(engine, named, lambda: load(engine, named))
    for seed in range(3):
        _step(policy, seed)
        named = mirror.refresh()
        assert plan.matches(named)
        plan.apply(named)
        load(check, named)
        assert torch.equal(engine.qkv, check.qkv) and torch.equal(engine.out, check.out)
        assert plan._cached is not None and plan._cached[0] is named.token
    kept = plan._cached[1]
    plan.apply(named)
    assert plan._cached[1] is kept  # the views were built once for this mirror
    fresh = weight_sync.state_tensors(policy, "bfloat16")  # a plain list: no views kept
    plan.apply(fresh)
    assert plan._cached is None and torch.equal(engine.qkv, check.qkv)
