import tomllib
from pathlib import Path

import pytest

from backend.settings import ProfileError, RunProfile, load_profile

ROOT = Path(__file__).resolve().parents[2]


def test_embedded_default_loads_and_matches_profiles_default_toml():
    default = load_profile(None)
    from_file = load_profile(ROOT / "profiles" / "default.toml")
    assert default.model_dump() == from_file.model_dump()
    assert default.model.source == "embedded" and default.engine.backend == "local"


@pytest.mark.parametrize("path", sorted((ROOT / "profiles").glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_profile_validates(path):
    assert isinstance(load_profile(path), RunProfile)


def test_env_overrides_nest_with_double_underscore(monkeypatch, tmp_path):
    monkeypatch.setenv("RLC_SAMPLING__TEMPERATURE", "0.7")
    monkeypatch.setenv("RLC_TRAINING__LEARNING_RATE", "5e-4")
    p = load_profile(ROOT / "profiles" / "default.toml")
    assert p.sampling.temperature == 0.7 and p.training.learning_rate == 5e-4


def _write(tmp_path, text):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    return path


def test_unknown_field_names_file_field_and_allowed(tmp_path):
    path = _write(tmp_path, "[sampling]\ntemprature = 0.7\n")
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    msg = str(info.value)
    assert str(path) in msg and "sampling.temprature: unknown field" in msg and "temperature" in msg


def test_out_of_range_names_the_allowed_range(tmp_path):
    path = _write(tmp_path, "[sampling]\ntemperature = 9\n")
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    msg = str(info.value)
    assert str(path) in msg and "sampling.temperature = 9" in msg and "≤ 2.0" in msg


def test_wrong_type(tmp_path):
    path = _write(tmp_path, '[training]\nprompts_per_step = "many"\n')
    with pytest.raises(ProfileError, match=r"training.prompts_per_step = 'many': Input should be a valid integer"):
        load_profile(path)


def test_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(ProfileError, match="profile file not found"):
        load_profile(tmp_path / "nope.toml")
    with pytest.raises(ProfileError, match="not valid TOML"):
        load_profile(_write(tmp_path, "[run\n"))


def test_trl_section_is_checked_against_grpo_config(tmp_path):
    ok = load_profile(_write(tmp_path, '[trl]\nreport_to = ["tensorboard"]\nloss_type = "grpo"\n'))
    assert ok.trl == {"report_to": ["tensorboard"], "loss_type": "grpo"}
    with pytest.raises(ProfileError, match="unknown GRPOConfig field"):
        load_profile(_write(tmp_path, "[trl]\nnot_a_field = 1\n"))
    with pytest.raises(ProfileError, match="set them there"):
        load_profile(_write(tmp_path, "[trl]\ntemperature = 0.5\n"))


def test_embedded_model_head_size_checked(tmp_path):
    with pytest.raises(ProfileError, match="head sizes"):
        load_profile(_write(tmp_path, "[model.embedded]\nhidden_size = 64\nnum_heads = 4\n"))


def test_reward_specs_checked(tmp_path):
    with pytest.raises(ProfileError, match="module:function"):
        load_profile(_write(tmp_path, '[task]\nreward_funcs = ["nocolon"]\n'))
    with pytest.raises(ProfileError, match="reward_weights has 1 entries"):
        load_profile(_write(tmp_path, '[task]\nreward_funcs = ["a:b", "c:d"]\nreward_weights = [1.0]\n'))


def test_gpu_profile_is_a_real_model_profile():
    data = tomllib.loads((ROOT / "profiles" / "gpu-qwen2.5-0.5b.toml").read_text())
    p = load_profile(ROOT / "profiles" / "gpu-qwen2.5-0.5b.toml")
    assert p.model.source == data["model"]["source"] and p.engine.device == "cuda"
