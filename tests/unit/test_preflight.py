"""What a profile names outside itself (model directory, dataset file, task functions) is
checked before a run is created: each problem named, with where it was looked for."""

import pytest

from backend import preflight
from backend.settings import load_profile


def _profile(tmp_path, **sections):
    p = load_profile(None, **sections)
    p.run.workdir = str(tmp_path)
    return p


def test_the_embedded_default_and_a_packaged_model_pass(tmp_path):
    assert preflight.problems(_profile(tmp_path)) == []
    assert preflight.problems(_profile(tmp_path, model={"source": "smollm2-135m-instruct"})) == []


def test_a_missing_model_directory_is_named_with_where_it_was_looked_for(tmp_path):
    [why] = preflight.problems(_profile(tmp_path, model={"source": str(tmp_path / "no-such-model")}))
    assert why.startswith("model.source: directory not found: ") and str(tmp_path / "no-such-model") in why
    [why] = preflight.problems(_profile(tmp_path, model={"source": "./models/mine"}))
    assert "directory not found: ./models/mine (looked in " + str(tmp_path) in why
    assert "smollm2-135m-instruct" in why  # what it could have been


def test_a_directory_without_config_and_a_file_are_not_model_directories(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "weights.safetensors").write_bytes(b"x")
    [why] = preflight.problems(_profile(tmp_path, model={"source": "empty"}))
    assert "not a model directory (no config.json" in why
    [why] = preflight.problems(_profile(tmp_path, model={"source": str(tmp_path / "weights.safetensors")}))
    assert "is a file" in why
    (tmp_path / "empty" / "config.json").write_text("{}")
    assert preflight.problems(_profile(tmp_path, model={"source": "empty"})) == []  # relative to the workdir


def test_a_hub_id_must_already_be_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))
    [why] = preflight.problems(_profile(tmp_path, model={"source": "SomeOrg/some-model"}))
    assert "directory not found" in why and "Hugging Face cache" in why


def test_dataset_and_reward_functions_are_looked_up_before_the_run(tmp_path):
    (tmp_path / "mytask.py").write_text("def ok(completions, **kw):\n    return [0.0] * len(completions)\nNOT_CALLABLE = 3\n")
    (tmp_path / "data.jsonl").write_text('{"prompt": "a"}\n')
    good = _profile(tmp_path, task={"dataset": "data.jsonl", "reward_funcs": ["mytask:ok"]})
    assert preflight.problems(good) == []
    bad = _profile(tmp_path, task={"dataset": "missing.jsonl",
                                   "reward_funcs": ["mytask:nope", "no_such_module_xyz:f", "mytask:NOT_CALLABLE"]})
    found = preflight.problems(bad)
    assert len(found) == 4, found
    assert found[0] == f"task.dataset: file not found: missing.jsonl (looked in {tmp_path})"
    assert found[1].startswith("task.reward_funcs: module 'mytask' has no 'nope'")
    assert found[2].startswith("task.reward_funcs: cannot import module 'no_such_module_xyz'")
    assert "is not callable" in found[3]
    [why] = preflight.problems(_profile(tmp_path, task={"dataset": "mytask:missing_fn"}))
    assert why.startswith("task.dataset: module 'mytask' has no 'missing_fn'")
    [why] = preflight.problems(_profile(tmp_path, task={"dataset": "prompts.txt"}))
    assert "neither a .jsonl/.json/.parquet file nor `module:function`" in why


@pytest.fixture(autouse=True)
def _forget_task_modules():
    import sys

    yield
    sys.modules.pop("mytask", None)
