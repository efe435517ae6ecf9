"""What a compiled update is built with: the policy handed to the trainer is in training mode
(TRL files each step's metrics by `trainer.model.training`), and the compile options rl-console
sets for accelerate leave a user's own choice in the environment alone."""

from __future__ import annotations

import pytest

from backend.__main__ import _parse_set
from backend.training import factory


def test_a_policy_loaded_from_disk_is_in_training_mode(tmp_path):
    from transformers import Qwen2Config, Qwen2ForCausalLM, PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models

    cfg = Qwen2Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, max_position_embeddings=32)
    Qwen2ForCausalLM(cfg).save_pretrained(tmp_path)
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"a": 0, "<unk>": 1}, unk_token="<unk>")))
    tok.save_pretrained(tmp_path)
    model, _ = factory.load_policy(str(tmp_path), "float32", "cpu")
    assert model.training and all(m.training for m in model.modules())


def test_compile_settings_default_to_one_compile_and_keep_the_users_choice():
    env: dict[str, str] = {}
    assert factory.compile_once_settings(env) == {"ACCELERATE_DYNAMO_USE_DYNAMIC": True,
                                                  "ACCELERATE_DYNAMO_USE_REGIONAL_COMPILATION": True}
    env = {"ACCELERATE_DYNAMO_USE_DYNAMIC": "Off"}
    assert factory.compile_once_settings(env)["ACCELERATE_DYNAMO_USE_DYNAMIC"] is False
    assert env["ACCELERATE_DYNAMO_USE_REGIONAL_COMPILATION"] == "true"


def test_the_start_up_line_says_what_applies():
    on = {"ACCELERATE_DYNAMO_USE_DYNAMIC": True, "ACCELERATE_DYNAMO_USE_REGIONAL_COMPILATION": True}
    said = factory.compile_note(on, resumed=False)
    assert "step 1 takes longer" in said and "a new sequence length does not compile again" in said
    assert "a batch without padding" in said and "regional" in said
    off = factory.compile_note({k: False for k in on}, resumed=True)
    assert "does not compile again" not in off and "each new longest sequence compiles" in off
    assert "step 1" not in off and "resumed run" in off and "regional compilation off" in off


def test_a_compile_variable_accelerate_would_refuse_is_named_before_the_run(tmp_path, monkeypatch):
    from backend import preflight
    from backend.settings import load_profile

    assert factory.compile_env_problem({"ACCELERATE_DYNAMO_USE_DYNAMIC": "yes"}) == ""
    why = factory.compile_env_problem({"ACCELERATE_DYNAMO_USE_DYNAMIC": "banana"})
    assert why.startswith("ACCELERATE_DYNAMO_USE_DYNAMIC='banana'") and "true" in why
    with pytest.raises(ValueError, match="banana"):
        factory.compile_once_settings({"ACCELERATE_DYNAMO_USE_REGIONAL_COMPILATION": "banana"})
    monkeypatch.setenv("ACCELERATE_DYNAMO_USE_DYNAMIC", "banana")
    compiled = load_profile(None, **_parse_set(["trl.torch_compile=true"]))
    assert any("ACCELERATE_DYNAMO_USE_DYNAMIC='banana'" in p for p in preflight.problems(compiled))
    assert not any("ACCELERATE" in p for p in preflight.problems(load_profile(None)))  # not compiled: not read
    said = preflight.report(preflight.problems(compiled))
    assert said.startswith("rl-console: an environment variable has a value that cannot be used; nothing was started")
    both = preflight.report(["task.dataset: x.jsonl is not there", *preflight.problems(compiled)])
    assert "the profile and the environment" in both and "x.jsonl" in both and "banana" in both
    assert "the profile names something" in preflight.report(["task.dataset: x.jsonl is not there"])


def test_a_trl_value_takes_the_type_of_grpoconfig_s_field():
    from backend.settings import ProfileError, load_profile

    assert load_profile(None, **_parse_set(["trl.torch_compile=off"])).trl["torch_compile"] is False
    assert load_profile(None, **_parse_set(["trl.torch_compile=yes"])).trl["torch_compile"] is True
    assert load_profile(None, **_parse_set(["trl.epsilon=0.3"])).trl["epsilon"] == 0.3
    with pytest.raises(ProfileError, match=r"trl.torch_compile = 'maybe': .*valid boolean.*torch_compile is bool"):
        load_profile(None, **_parse_set(["trl.torch_compile=maybe"]))
    with pytest.raises(ProfileError, match=r"trl.epsilon = 'abc'"):
        load_profile(None, **_parse_set(["trl.epsilon=abc"]))
