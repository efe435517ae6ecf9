"""What a compiled update is built with: the policy handed to the trainer is in training mode
(TRL files each step's metrics by `trainer.model.training`), and the compile options rl-console
sets for accelerate leave a user's own choice in the environment alone."""

from __future__ import annotations

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
    assert factory.compile_once_settings(env) == {"ACCELERATE_DYNAMO_USE_DYNAMIC": "true",
                                                  "ACCELERATE_DYNAMO_USE_REGIONAL_COMPILATION": "true"}
    env = {"ACCELERATE_DYNAMO_USE_DYNAMIC": "false"}
    assert factory.compile_once_settings(env)["ACCELERATE_DYNAMO_USE_DYNAMIC"] == "false"
    assert env["ACCELERATE_DYNAMO_USE_REGIONAL_COMPILATION"] == "true"
