"""A user's reward function that raises, returns None, returns the wrong count, or hangs: the
batch gets NaN for it and the failure is named (the session then skips the update and pauses)."""

import asyncio
import math
import time

from backend.training.rewards import RewardRecorder

COMPLETIONS = ["a", "bb", "ccc"]


def _call(rec, func):
    wrapped = rec.wrap(func)
    return wrapped(prompts=["p"] * 3, completions=COMPLETIONS, completion_ids=[[1]] * 3)


def test_good_values_pass_through_and_none_elements_mean_not_applicable():
    rec = RewardRecorder(timeout_s=5)

    def length(prompts, completions, **kw):
        return [len(c) if c != "bb" else None for c in completions]

    assert _call(rec, length) == [1.0, None, 3.0] and rec.values["length"] == [1.0, None, 3.0] and not rec.failures


def test_each_kind_of_failure_is_named_and_becomes_nan():
    rec = RewardRecorder(timeout_s=0.5)

    def judge_down(prompts, completions, **kw):
        raise ConnectionError("judge at localhost:8000 refused")

    def forgot_return(prompts, completions, **kw):
        pass

    def one_short(prompts, completions, **kw):
        return [1.0, 0.0]

    def words(prompts, completions, **kw):
        return ["good"] * len(completions)

    def hangs(prompts, completions, **kw):
        time.sleep(3)
        return [1.0] * len(completions)

    t0 = time.perf_counter()
    for f in (judge_down, forgot_return, one_short, words, hangs):
        out = _call(rec, f)
        assert len(out) == 3 and all(math.isnan(v) for v in out), f.__name__
    assert time.perf_counter() - t0 < 2.5  # the hung function was abandoned at its timeout
    assert rec.failures["judge_down"] == "raised ConnectionError: judge at localhost:8000 refused"
    assert rec.failures["forgot_return"] == "returned None for 3 completions"
    assert rec.failures["one_short"] == "returned 2 values for 3 completions"
    assert rec.failures["words"] == "returned a string ('good') where a number belongs"
    assert "reward_timeout_s = 0.5 s" in rec.failures["hangs"]
    rec.reset()
    assert rec.failures == {}


def test_async_functions_fail_the_same_way():
    rec = RewardRecorder(timeout_s=0.2)

    async def slow_judge(prompts, completions, **kw):
        await asyncio.sleep(2)
        return [1.0] * len(completions)

    async def ok_judge(prompts, completions, **kw):
        return [0.5] * len(completions)

    run = lambda f: asyncio.run(rec.wrap(f)(prompts=["p"] * 3, completions=COMPLETIONS))  # noqa: E731
    assert all(math.isnan(v) for v in run(slow_judge)) and "timeout" in rec.failures["slow_judge"]
    assert run(ok_judge) == [0.5, 0.5, 0.5] and "ok_judge" not in rec.failures


def _thread_of(prompts, completions, **kw):
    import threading

    return [float(threading.get_ident())] * len(completions)


def test_a_users_function_runs_under_the_timeout_and_the_embedded_tasks_inline(monkeypatch):
    """A user's reward function runs on a thread the timeout can abandon; the embedded task's
    own functions (a few string comparisons) run on the caller's thread, no hand-off."""
    import threading

    from backend.settings import load_profile
    from backend.training import demo_task
    from backend.training.factory import load_task

    caller = float(threading.get_ident())
    rec = RewardRecorder(timeout_s=5)
    assert _call(rec, _thread_of)[0] != caller  # bounded by default
    assert rec.wrap(_thread_of, bounded=False)(prompts=["p"] * 3, completions=COMPLETIONS)[0] == caller

    users = load_task(load_profile(None, task={"reward_funcs": [f"{__name__}:_thread_of"]}), RewardRecorder(timeout_s=5))
    monkeypatch.setattr(demo_task, "REWARD_FUNCS", (_thread_of,))  # stands in for the embedded task's functions
    monkeypatch.setattr(demo_task, "REWARD_WEIGHTS", (1.0,))
    embedded = load_task(load_profile(None), RewardRecorder(timeout_s=5))
    call = dict(prompts=["a>"] * 3, completions=COMPLETIONS, completion_ids=[[1]] * 3)
    assert users.reward_funcs[0](**call)[0] != caller
    assert embedded.embedded and embedded.reward_funcs[0](**call)[0] == caller


def test_a_string_that_float_would_parse_is_still_a_failure():
    """`float("1")` is 1.0: a function returning text would otherwise train as if it scored."""
    rec = RewardRecorder(timeout_s=5)

    def quoted(prompts, completions, **kw):
        return ["1"] * len(completions)

    out = _call(rec, quoted)
    assert all(math.isnan(v) for v in out)
    assert rec.failures["quoted"] == "returned a string ('1') where a number belongs"


def test_changed_code_replaces_the_function_inside_the_same_wrapper(tmp_path, monkeypatch):
    """What TRL holds (the wrapper) and what the probes unwrap (`__wrapped__`) both take up the
    function from a module whose file changed; an unchanged module is not re-run."""
    import importlib
    import os
    import uuid

    from backend.training.rewards import RewardCode, load_callable

    mod = f"rlc_code_{uuid.uuid4().hex[:8]}"
    src = tmp_path / f"{mod}.py"
    src.write_text("RUNS = 1\ndef f(completions, **kw):\n    return [0.0] * len(completions)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    rec = RewardRecorder(timeout_s=5)
    wrapped = rec.wrap(load_callable(f"{mod}:f"))
    code = RewardCode([f"{mod}:f"], [wrapped])
    assert code.reload_changed() == [] and importlib.import_module(mod).RUNS == 1
    src.write_text("RUNS = 2\ndef f(completions, **kw):\n    return [1.0] * len(completions)\n")
    st = src.stat()
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert code.reload_changed() == [mod]
    assert wrapped(prompts=["p"] * 3, completions=COMPLETIONS) == [1.0, 1.0, 1.0] and not rec.failures
    assert wrapped.__wrapped__(completions=["a"]) == [1.0]
    assert code.reload_changed() == []  # nothing changed since
