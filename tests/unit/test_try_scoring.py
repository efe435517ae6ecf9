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
    # a function whose reason does not point at a column gets no hint (its bug is its own)
    mixed = with_column_hint({**why, "wrong_len": "returned 1 values for 2 completions"}, known, {})
    assert mixed["wrong_len"] == "returned 1 values for 2 completions" and mixed["correct_answer"] == hinted["correct_answer"]
    # with the column given, it scores, and nothing is reported
    why2: dict[str, str] = {}
    rewards2, _ = score([Row(row.prompt, {"answer": "5"})], [[_completion("5")]], funcs, names, [1.0, 1.0], why2)[0][0]
    assert rewards2 == {"correct_answer": 1.0, "number_only": 1.0} and why2 == {}


def test_a_reward_returning_the_wrong_shape_is_reported():
    def broken(prompts, completions, **kw):
        return [1.0]  # one value for two completions

    why: dict[str, str] = {}
    score([Row("p")], [[_completion("a"), _completion("b")]], [broken], ["broken"], [1.0], why)
    assert why == {"broken": "returned 1 values for 2 completions"}


def _flaky(prompts, completions, kind, **kw):
    if "boom" in kind:
        raise ValueError("cannot score a 'boom' prompt")
    return [float(len(c)) for c in completions]


def _slow(prompts, completions, kind, **kw):
    import time

    if "slow" in kind:
        time.sleep(3)
    return [1.0] * len(completions)


async def _async_judge(prompts, completions, **kw):
    return [0.5] * len(completions)


def test_probes_and_tries_say_why_a_users_function_gave_nothing_and_keep_the_rest():
    """The run's reward functions as the trainer holds them (wrapped by the step's recorder):
    one raising on one prompt, one past the timeout, an async one. The reasons are reported,
    the prompts the raising one can score keep their rewards, and the step's recorder is not
    touched (its failures would skip the next update)."""
    import time

    from backend.training.rewards import RewardRecorder

    step_recorder = RewardRecorder(timeout_s=0.5)
    funcs = [step_recorder.wrap(f) for f in (_flaky, _slow, _async_judge)]
    names = ["_flaky", "_slow", "_async_judge"]
    rows = [Row("a", {"kind": "ok"}), Row("b", {"kind": "boom"}), Row("c", {"kind": "ok"})]
    groups = [[_completion("xx")], [_completion("yyy")], [_completion("z")]]
    why: dict[str, str] = {}
    out = score(rows, groups, funcs, names, [1.0, 1.0, 1.0], why, timeout_s=0.5)
    assert [r[0][0]["_flaky"] for r in out] == [2.0, None, 1.0]  # only the 'boom' prompt lost its reward
    assert [r[0][0]["_async_judge"] for r in out] == [0.5, 0.5, 0.5]
    assert why == {"_flaky": "raised ValueError: cannot score a 'boom' prompt (on 1 of 3 prompts)"}
    assert step_recorder.failures == {} and step_recorder.values == {}

    t0 = time.perf_counter()
    why = {}
    out = score([Row("s", {"kind": "slow"})], [[_completion("q")]], funcs, names, [1.0, 1.0, 1.0], why, timeout_s=0.5)
    assert time.perf_counter() - t0 < 2.5  # abandoned at the timeout
    assert out[0][0][0]["_slow"] is None and why == {"_slow": "gave no answer within task.reward_timeout_s = 0.5 s"}
    assert step_recorder.failures == {}
