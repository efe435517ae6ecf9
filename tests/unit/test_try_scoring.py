"""A playground request that a reward function cannot score says which and why (pure logic:
the shipped chat task's own reward functions and dataset, completions given)."""

from backend.engine.base import GeneratedCompletion
from backend.training import chat_task
from backend.training.probes import Row, dataset_columns, score, with_column_hint


def _completion(text: str) -> GeneratedCompletion:
    return GeneratedCompletion(token_ids=[1, 2], logprobs=[0.0, 0.0], text=text, finish_reason="stop")


def test_a_reward_needing_a_column_the_try_left_out_is_named_with_the_column():
    funcs, names = [chat_task.correct_answer, chat_task.number_only], ["correct_answer", "number_only"]
    row = Row([{"role": "user", "content": "What is 2+3? Reply with the number only."}])
    why: dict[str, str] = {}
    out = score([row], [[_completion("5")]], funcs, names, [1.0, 1.0], why)
    rewards, total = out[0][0]
    assert rewards == {"correct_answer": None, "number_only": 1.0} and total == 1.0
    assert list(why) == ["correct_answer"] and why["correct_answer"].startswith("raised TypeError")
    known = dataset_columns(chat_task.dataset(8))
    assert known == ["answer", "row_id"]
    hinted = with_column_hint(why, known, {})
    assert hinted["correct_answer"].endswith("; the request gave no answer, row_id (add --column answer=VALUE)")
    assert with_column_hint(why, known, {"answer": "5", "row_id": 1}) == why  # nothing left out: no hint
    # with the column given, it scores, and nothing is reported
    why2: dict[str, str] = {}
    rewards2, _ = score([Row(row.prompt, {"answer": "5"})], [[_completion("5")]], funcs, names, [1.0, 1.0], why2)[0][0]
    assert rewards2 == {"correct_answer": 1.0, "number_only": 1.0} and why2 == {}


def test_a_reward_returning_the_wrong_shape_is_reported():
    def broken(prompts, completions, **kw):
        return [1.0]  # one value for two completions

    why: dict[str, str] = {}
    score([Row("p")], [[_completion("a"), _completion("b")]], [broken], ["broken"], [1.0], why)
    assert why == {"broken": "returned list, not one reward per completion"}
