"""EngineOptions: the one object both engines are built with, made from the profile. Every [engine]
knob is either an engine option (and reaches it) or named as used elsewhere; unknown options and
out-of-range values are refused with the field named."""

import dataclasses

import pytest
from pydantic import ValidationError

from backend.engine.options import FROM_ENGINE_SECTION, NOT_ENGINE_OPTIONS, EngineOptions
from backend.settings import EngineSection, RunProfile

#: a value unlike the default for each [engine] field that is an engine option
CHANGED = {"max_model_len": 96, "enforce_eager": False, "kv_cache_gb": 2.5, "gpu_memory_utilization": 0.55}


def test_every_engine_section_field_is_an_option_or_named_as_not_one():
    fields = set(EngineSection.model_fields)
    assert not set(FROM_ENGINE_SECTION) & set(NOT_ENGINE_OPTIONS)
    missing = fields - set(FROM_ENGINE_SECTION) - set(NOT_ENGINE_OPTIONS)
    assert not missing, f"[engine] fields neither passed to the engine nor named in NOT_ENGINE_OPTIONS: {missing}"
    assert set(FROM_ENGINE_SECTION) <= set(EngineOptions.model_fields)
    assert set(CHANGED) == set(FROM_ENGINE_SECTION)


def test_each_profile_knob_reaches_the_options():
    profile = RunProfile(engine={"backend": "ray", "replicas": 2, **CHANGED}, run={"seed": 1234})
    o = EngineOptions.from_profile(profile, device="cuda", dtype="bfloat16", cache_root="/tmp/c")
    for name, value in CHANGED.items():
        assert getattr(o, name) == value, name
        assert value != EngineOptions.model_fields[name].default, f"{name}: pick a non-default value"
    assert (o.device, o.dtype, o.seed, o.cache_root, o.verify_received) == ("cuda", "bfloat16", 1234, "/tmp/c", False)


def test_defaults_are_the_profiles():
    o, e = EngineOptions(), EngineSection()
    for name in FROM_ENGINE_SECTION:
        assert getattr(o, name) == getattr(e, name), name
    assert o.seed == RunProfile().run.seed


def test_an_unknown_option_is_an_error():
    with pytest.raises(ValidationError, match="max_len") as err:
        EngineOptions(max_len=128)
    assert "Extra inputs are not permitted" in str(err.value)


@pytest.mark.parametrize("field,value", [("max_model_len", 2), ("gpu_memory_utilization", 0.99), ("device", "auto"),
                                         ("dtype", "fp8"), ("kv_cache_gb", 0)])
def test_an_out_of_range_value_is_refused_with_the_profiles_rule(field, value):
    with pytest.raises(ValidationError, match=field):
        EngineOptions(**{field: value})


def test_frozen_and_a_replicas_copy_differs_only_in_verify_received():
    o = EngineOptions(max_model_len=96, seed=3)
    with pytest.raises(ValidationError):
        o.max_model_len = 128  # type: ignore[misc]
    r = o.model_copy(update={"verify_received": True})  # what each Ray replica builds its engine with
    assert r.verify_received and r.model_dump(exclude={"verify_received"}) == o.model_dump(exclude={"verify_received"})


def test_options_travel_to_a_ray_actor_unchanged():
    """The options cross into each replica's process by pickle."""
    import pickle

    o = EngineOptions(device="cuda", dtype="float16", max_model_len=512, cache_root="/x")
    assert pickle.loads(pickle.dumps(o)) == o


@pytest.mark.parametrize("core, device, overlap, backend, want", [
    ("auto", "cuda", True, "local", True),  # an overlapped GPU run: the engine core leaves the trainer's interpreter
    ("auto", "cuda", False, "local", False),
    ("auto", "cpu", True, "local", False),
    ("auto", "cuda", True, "ray", False),  # a Ray replica is its own process already
    ("in_process", "cuda", True, "local", False),
    ("own_process", "cuda", False, "local", True),
])
def test_engine_core_resolves(core, device, overlap, backend, want):
    profile = RunProfile(engine={"core": core, "backend": backend}, training={"overlap": overlap})
    assert EngineOptions.from_profile(profile, device=device, dtype="bfloat16", cache_root=None).own_process is want


def test_own_process_with_ray_is_refused_with_the_reason():
    profile = RunProfile(engine={"core": "own_process", "backend": "ray"})
    with pytest.raises(ValueError, match="local backend"):
        EngineOptions.from_profile(profile, device="cuda", dtype="float32", cache_root=None)


def test_own_process_on_cpu_is_allowed():  # weights cross by copy there
    profile = RunProfile(engine={"core": "own_process"})
    assert EngineOptions.from_profile(profile, device="cpu", dtype="float32", cache_root=None).own_process is True


def test_an_engine_in_its_own_process_is_not_built_in_this_one():
    from backend.engine.base import EngineError
    from backend.engine.local import LocalVLLMEngine

    with pytest.raises(EngineError, match="HostedEngine"):
        LocalVLLMEngine("no-such-model", EngineOptions(device="cpu", own_process=True))


def test_a_measuring_step_asks_log_probs_of_its_first_prompts_only():
    """`Sampling.logprobs_prompts`: the step's first N prompts ask vLLM for sampling log-probs,
    counted across a Ray replica's chunk (`first_index`); seeds per prompt are unchanged."""
    from backend.engine.base import Sampling
    from backend.engine.local import request_params

    s = Sampling(n=2, temperature=1.0, max_tokens=4, seed=7, logprobs=True, logprobs_prompts=2)
    assert [p.logprobs for p in request_params(s, 4)] == [0, 0, None, None]
    chunk = dataclasses.replace(s, first_index=1)  # prompts 1..3 of the step on a second replica
    assert [p.logprobs for p in request_params(chunk, 3)] == [0, None, None]
    assert [p.seed for p in request_params(chunk, 3)] == [p.seed for p in request_params(s, 4)][1:]
    everyone = Sampling(n=2, temperature=1.0, max_tokens=4, seed=None, logprobs=True)
    assert [p.logprobs for p in request_params(everyone, 3)] == [0, 0, 0]
    unseeded = dataclasses.replace(everyone, logprobs_prompts=1)
    assert [(p.logprobs, p.seed) for p in request_params(unseeded, 2)] == [(0, None), (None, None)]
    assert [p.logprobs for p in request_params(dataclasses.replace(s, logprobs=False), 2)] == [None, None]
