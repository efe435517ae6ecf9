"""A user's own task: what is caught before a run builds anything on it — an empty file, a
prompt that is neither text nor chat messages (named by row), fewer rows than a step takes,
and a dataset without reward functions of its own."""

import json

import pytest

from backend.settings import ProfileError, load_profile
from backend.training.data import DatasetError, check_rows, load_dataset_spec


def _jsonl(tmp_path, rows, name="d.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_an_empty_file_says_so(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n  \n")
    with pytest.raises(DatasetError, match=r"^dataset file is empty: .*empty\.jsonl$"):
        load_dataset_spec(str(tmp_path / "empty.jsonl"))


@pytest.mark.parametrize("bad, why", [
    ("", "the prompt of row 2 is empty text"),
    (123, "the prompt of row 2 is int '123', not text or chat messages"),
    ([], "the prompt of row 2 is an empty list of messages"),
    (["hi"], 'the prompt of row 2 is a list but not of {"role": str, "content": str} messages'),
])
def test_a_bad_prompt_is_named_by_its_row(tmp_path, bad, why):
    spec = _jsonl(tmp_path, [{"prompt": "fine"}, {"prompt": bad}, {"prompt": "fine"}])
    with pytest.raises(DatasetError) as info:
        load_dataset_spec(spec)
    assert str(info.value) == f"dataset {spec!r}: {why}"


def test_text_and_chat_prompts_pass(tmp_path):
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2? ٢+٢ 🙂"}]
    assert len(load_dataset_spec(_jsonl(tmp_path, [{"prompt": chat}], "chat.jsonl"))) == 1
    assert len(load_dataset_spec(_jsonl(tmp_path, [{"prompt": "ｆｕｌｌｗｉｄｔｈ"}], "text.jsonl"))) == 1


def test_fewer_rows_than_a_step_takes_is_refused():
    with pytest.raises(DatasetError, match=r"has 1 row; a step takes training.prompts_per_step = 2 different prompts"):
        check_rows(1, 2, "one.jsonl")
    check_rows(2, 2, "two.jsonl")


def test_a_dataset_of_ones_own_needs_reward_functions_of_its_own():
    with pytest.raises(ProfileError, match="has a dataset of its own but no reward_funcs"):
        load_profile(None, task={"name": "mine", "dataset": "d.jsonl"})
    # the embedded task given prompts of one's own keeps its rewards, as documented
    assert load_profile(None, task={"dataset": "d.jsonl"}).task.reward_funcs == []
    assert load_profile(None, task={"name": "mine", "dataset": "d.jsonl", "reward_funcs": ["m:f"]}).task.name == "mine"
