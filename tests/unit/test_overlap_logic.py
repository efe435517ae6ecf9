"""Overlap scheduling (`backend.training.overlap`): the dataloader read one batch ahead, the
rollout generated ahead and when it may be used, never generating while weights are pushed,
the config it needs, and the shim that turns TRL's importance-sampling correction on."""

from __future__ import annotations

import inspect
import threading
import time
from types import SimpleNamespace

import pytest

from backend.engine.base import GeneratedCompletion, Sampling
from backend.training import overlap
from backend.training.overlap import Lookahead, Prefetcher, Rollout

S = Sampling(n=2, temperature=1.0, top_p=1.0, top_k=-1, max_tokens=4, seed=11, logprobs=True)


def _groups(prompt_ids, sampling):
    return [[GeneratedCompletion(token_ids=ids + [k], logprobs=[-0.5], text=f"{ids}/{k}", finish_reason="stop")
             for k in range(sampling.n)] for ids in prompt_ids]


def _job(step=3, prompts=("a", "b"), version=4, sampling=S):
    return Rollout(step=step, prompts=list(prompts), prompt_ids=[[ord(p)] for p in prompts], sampling=sampling,
                   weight_version=version)


# ---- the dataloader one batch ahead ------------------------------------------------------

def test_lookahead_shows_the_next_batch_and_hands_every_batch_over_once_in_order():
    la = Lookahead()
    it = iter([[1], [2], [3]])
    wrapped = la.wrap(it)
    assert la.upcoming() == [1]  # reading ahead starts with the epoch's first batch, which is still handed over
    assert next(wrapped) == [1]
    assert la.upcoming() == [2] and la.upcoming() == [2]  # looking does not consume
    assert la.wrap(it) is wrapped  # the trainer's next call with the same epoch iterator
    assert next(wrapped) == [2] and next(wrapped) == [3]
    assert la.upcoming() is None  # end of the epoch: nothing to generate ahead for
    with pytest.raises(StopIteration):
        next(wrapped)
    with pytest.raises(StopIteration):  # and stays exhausted without reading the source again
        next(wrapped)
    la.wrap(iter([[4], [5]]))  # the next epoch's iterator starts fresh
    assert next(la) == [4] and la.upcoming() == [5] and next(la) == [5]


def test_lookahead_through_the_trainers_own_batch_reader():
    """transformers' Trainer.get_batch_samples reads the step's batches through the wrapper:
    the batches the trainer gets are exactly the source's, and the one looked at is the next."""
    from transformers import Trainer

    la = Lookahead()
    fake_self = SimpleNamespace(_get_num_items_in_batch=lambda batches, device: None)
    source = iter([[{"prompt": f"p{i}"}] for i in range(4)])
    got = []
    for _ in range(4):
        batches, _n = Trainer.get_batch_samples(fake_self, la.wrap(source), 1, "cpu")
        got.extend(batches)
        nxt = la.upcoming()
        if len(got) < 4:
            assert nxt == [{"prompt": f"p{len(got)}"}]
    assert got == [[{"prompt": f"p{i}"}] for i in range(4)]


# ---- the rollout generated ahead -----------------------------------------------------------

def test_a_rollout_generated_ahead_is_taken_only_by_its_own_step():
    pf = Prefetcher(_groups)
    pf.start(_job())
    ahead, why = pf.take(3, ["a", "b"], [[97], [98]], S, weight_version=5)
    assert why == "" and ahead.groups[1][0].text == "[98]/0" and ahead.weight_version == 4 and ahead.generate_s > 0
    ahead, why = pf.take(4, ["a", "b"], [[97], [98]], S, weight_version=5)  # taken once
    assert ahead is None and why == "no rollout was generated ahead"
    pf.close()


@pytest.mark.parametrize("step, prompts, ids, sampling, version, match", [
    (3, ["a", "c"], [[97], [99]], S, 5, r"prompts differ .*group 1: 'b' generated ahead, 'c' now"),
    (3, ["a", "b"], [[97], [7]], S, 5, "same text, different token ids"),
    (3, ["a"], [[97]], S, 5, "2 prompts generated ahead, 1 now"),
    (3, ["a", "b"], [[97], [98]], Sampling(**{**S.__dict__, "temperature": 0.5}), 5, r"sampling changed .*temperature 1.0 -> 0.5"),
    (3, ["a", "b"], [[97], [98]], Sampling(**{**S.__dict__, "n": 4}), 5, r"n 2 -> 4"),
    (4, ["a", "b"], [[97], [98]], S, 5, "was for step 3, not 4"),
    (3, ["a", "b"], [[97], [98]], S, 6, "2 weight versions old"),
])
def test_a_rollout_that_does_not_fit_its_step_exactly_is_dropped_with_the_reason(step, prompts, ids, sampling, version, match):
    pf = Prefetcher(_groups)
    pf.start(_job())
    ahead, why = pf.take(step, prompts, ids, sampling, weight_version=version)
    assert ahead is None
    import re

    assert re.search(match, why), why
    pf.close()


def test_dropped_and_failed_rollouts_say_why_the_step_generates_its_own():
    pf = Prefetcher(_groups)
    pf.start(_job())
    pf.drop("weights resynced at the boundary")
    assert pf.take(3, ["a", "b"], [[97], [98]], S, 5) == (None, "weights resynced at the boundary")

    def broken(ids, sampling):
        raise RuntimeError("engine is dead: boom")

    pf = Prefetcher(broken)
    pf.start(_job())
    ahead, why = pf.take(3, ["a", "b"], [[97], [98]], S, 5)
    assert ahead is None and why == "the rollout generated ahead failed: RuntimeError: engine is dead: boom"
    pf.close()


def test_one_rollout_in_flight_at_a_time_and_close_waits_for_it():
    release = threading.Event()
    done = []

    def slow(ids, sampling):
        release.wait(5)
        done.append(True)
        return _groups(ids, sampling)

    pf = Prefetcher(slow)
    pf.start(_job())
    assert pf.in_flight
    with pytest.raises(RuntimeError, match="still in flight"):
        pf.start(_job(step=4))
    threading.Timer(0.2, release.set).start()
    pf.close()
    assert done == [True] and not pf.in_flight


class FakeEngine:
    """Records when it generates and when weights are pushed, from whichever thread."""

    def __init__(self):
        self.busy = threading.Lock()
        self.log: list[tuple[str, float, float]] = []
        self.overlapped = False

    def _use(self, what, seconds):
        if not self.busy.acquire(blocking=False):
            self.overlapped = True  # two calls inside the engine at once
            self.busy.acquire()
        t0 = time.perf_counter()
        time.sleep(seconds)
        self.log.append((what, t0, time.perf_counter()))
        self.busy.release()

    def generate(self, ids, sampling):
        self._use("generate", 0.15)
        return _groups(ids, sampling)

    def push_weights(self):
        self._use("push", 0.01)


def test_the_step_loop_never_pushes_weights_while_a_rollout_generates():
    """The boundary's order with a real StepLoop.sync: a rollout in flight is waited for before
    the push, whatever called the sync (step, resync, recovery)."""
    from backend.training.step import StepLoop

    engine = FakeEngine()
    loop = StepLoop.__new__(StepLoop)
    loop.prefetch = Prefetcher(engine.generate)
    loop.weight_version = 4
    pushed = []

    def push_weights(version, verify):
        engine.push_weights()
        pushed.append(version)
        raise _Stop  # the rest of sync (events, canary) is not what this test is about

    loop.session = SimpleNamespace(push_weights=push_weights)
    for step in range(3):
        loop.prefetch.start(_job(step=step))
        with pytest.raises(_Stop):
            loop.sync(verify=False, reason="step")
    loop.prefetch.close()
    assert pushed == [5, 5, 5] and not engine.overlapped
    kinds = [k for k, _, _ in engine.log]
    assert kinds == ["generate", "push"] * 3
    for (_, _, gen_end), (_, push_start, _) in zip(engine.log[::2], engine.log[1::2]):
        assert push_start >= gen_end


class _Stop(Exception):
    pass


# ---- what the step reports -------------------------------------------------------------------

def test_importance_statistics_count_what_trls_correction_masked_or_truncated():
    import torch

    out = {"importance_sampling_ratio": torch.tensor([[0.0], [1.2], [0.9], [0.0]]),
           "completion_mask": torch.ones(4, 3)}
    trainer = SimpleNamespace(vllm_importance_sampling_mode="sequence_mask",
                              vllm_importance_sampling_clip_min=None, vllm_importance_sampling_clip_max=3.0)
    assert overlap.importance_clipped(trainer, out) == 0.5
    out = {"importance_sampling_ratio": torch.tensor([[3.0, 1.0, 0.5], [1.0, 3.0, 9.9]]),
           "completion_mask": torch.tensor([[1, 1, 1], [1, 1, 0]])}
    trainer.vllm_importance_sampling_mode = "token_truncate"
    assert overlap.importance_clipped(trainer, out) == pytest.approx(2 / 5)  # the padded token does not count
    assert overlap.importance_clipped(trainer, {"completion_mask": torch.ones(1, 1)}) is None  # correction off


def test_a_prefetched_steps_times_show_only_the_wait_and_the_hidden_generation_separately():
    from backend.protocol import events as E
    from backend.training.trainer import RolloutBatch

    b = RolloutBatch(step=5, prompts=["a"], groups=_groups([[1]], S), weight_version=3, sampling=S, generate_s=0.4,
                     sync_s=0.05, prefetched=True, waited_s=0.1, staleness=1, is_clipped=0.25)
    times = E.StepTimes(generate=0.4, score=0.02, train=0.0, sync=0.05, total=0.6)
    logs = {"sampling/importance_sampling_ratio/min": 0.0, "sampling/importance_sampling_ratio/mean": 0.97,
            "sampling/importance_sampling_ratio/max": 2.5}
    f = overlap.metric_fields(b, logs, times, overlap=True)
    assert f["times"].generate == 0.1 and f["times"].train == pytest.approx(0.6 - 0.1 - 0.02 - 0.05)
    assert f["generate_hidden_s"] == pytest.approx(0.3) and f["staleness"] == 1 and f["prefetched"] is True
    assert (f["is_ratio_min"], f["is_ratio_mean"], f["is_ratio_max"], f["is_clipped_frac"]) == (0.0, 0.97, 2.5, 0.25)
    m = E.StepMetrics(step=5, reward_mean=0.5, reward_std=0.1).model_copy(update=f)
    assert E.StepMetrics.model_validate_json(m.model_dump_json()) == m  # the wire keeps every field
    sync = overlap.metric_fields(b, {}, times, overlap=False)
    assert "times" not in sync and "staleness" not in sync and sync["is_ratio_mean"] is None


# ---- what it needs from TRL and the profile ----------------------------------------------------

def test_overlap_refuses_trl_settings_that_generate_other_than_once_per_step():
    from backend.settings import load_profile
    from backend.training.factory import grpo_config

    for trl, match in [({"num_iterations": 2}, "num_iterations = 2"),
                       ({"vllm_importance_sampling_correction": False}, "importance-sampling correction")]:
        p = load_profile(None, training={"overlap": True}, trl={"loss_type": "dapo", **trl})
        with pytest.raises(ValueError, match=match):
            grpo_config(p, "/tmp/x", "cpu", [1.0], 10)
        load_profile(None, trl={"loss_type": "dapo", **trl})  # without overlap they are the user's choice
    args = grpo_config(load_profile(None, training={"overlap": True}), "/tmp/x", "cpu", [1.0], 10)
    assert args.vllm_importance_sampling_correction is True  # TRL's default, kept


def test_the_correction_shim_turns_on_trls_gate_and_keeps_trls_own_vllm_sync_out():
    from trl import GRPOTrainer

    from backend.training import trl_compat
    from backend.training.trainer import make_trainer_class

    # the gate is where the shim says it is: scoring computes the ratio and the loss applies it
    # only under `use_vllm and vllm_importance_sampling_correction`
    score_src = inspect.getsource(getattr(GRPOTrainer, trl_compat.SCORE_HOOK))
    loss_src = inspect.getsource(GRPOTrainer._compute_loss)
    gen_src = inspect.getsource(GRPOTrainer._generate)
    assert "self.use_vllm and self.vllm_importance_sampling_correction" in score_src
    assert 'per_token_loss * inputs["importance_sampling_ratio"]' in loss_src
    assert "self.use_vllm and self.state.global_step != self._last_loaded_step" in gen_src

    cls = make_trainer_class()
    t = cls.__new__(cls)
    t.state = SimpleNamespace(global_step=5)
    trl_compat.enable_sampling_correction(t)
    assert t.use_vllm is True and t._last_loaded_step == 5
    t._last_loaded_step = -1  # TRL's own bookkeeping cannot make it sync its (absent) vLLM
    t.state.global_step = 6
    assert t._last_loaded_step == 6
    assert trl_compat.problems() == []
