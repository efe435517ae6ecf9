"""`trl.torch_compile = true` (TRL's pass-through to the trainer's model) on the real stack: the
compiled update still feeds the console's hooks. Overlapped, on the embedded default: the
operator is told that step 1 compiles, every step reports staleness and importance ratios,
the weights pushed to the engine are the trained ones (the checkpoint's checksum is verified
on resume), and a resumed run continues from its checkpoint under compile."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import backend_env

pytestmark = pytest.mark.integration
RLC = [sys.executable, "-m", "console.cli"]
ARGS = ["--set", "trl.torch_compile=true", "--set", "training.overlap=true", "--set", "training.prompts_per_step=4",
        "--set", "run.checkpoint_every=3", "--set", "telemetry.probe_every=0"]


def _run(args, home):
    out = subprocess.run(RLC + ["run", "--headless", "--json", *args], env=backend_env(home), capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    events = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    return events


def test_a_compiled_overlapped_run_reports_checkpoints_and_resumes(rlc_home):
    events = _run(["--max-steps", "3", *ARGS], rlc_home)
    said = [e["message"] for e in events if e["kind"] == "progress"]
    assert any("trl.torch_compile = true" in m and "step 1" in m for m in said), said[-6:]
    steps = [e for e in events if e["kind"] == "step_metrics"]
    assert [e["step"] for e in steps] == [1, 2, 3]
    assert all(e["staleness"] <= 1 for e in steps)
    assert all(e["is_ratio_mean"] is not None for e in steps if e["prefetched"]), steps
    assert any(e["prefetched"] for e in steps)
    run_id = next(e["run_id"] for e in events if e["kind"] == "run_started")
    last = [e for e in events if e["kind"] == "state_changed"][-1]
    assert (last["state"], last["step"]) == ("finished", 3) and "completed" in last["reason"], last

    resumed = _run(["--resume", run_id, "--max-steps", "5", *ARGS], rlc_home)
    said = [e["message"] for e in resumed if e["kind"] == "progress"]
    assert any("loaded step 3 weights" in m and "verified" in m for m in said), said
    assert [e["step"] for e in resumed if e["kind"] == "step_metrics"] == [4, 5]
    last = [e for e in resumed if e["kind"] == "state_changed"][-1]
    assert (last["state"], last["step"]) == ("finished", 5) and "completed" in last["reason"], last



def _recompiles(home) -> list[str]:
    """The guard failures torch logged in the run's backend.log (TORCH_LOGS=recompiles)."""
    logs = sorted(home.glob("runs/*/backend.log"), key=lambda p: p.stat().st_mtime)
    return [line.split("] ", 2)[-1] for line in logs[-1].read_text(errors="replace").splitlines() if "mismatch" in line]


def test_a_compiled_update_compiles_once_for_every_length(tmp_path):
    """With torch's defaults the first update compiles for its exact shapes, and the first step
    whose longest sequence differs compiles the forward and backward again (here, with
    ACCELERATE_DYNAMO_USE_DYNAMIC=false: step 3 took 29 s on CPU, "input_ids size mismatch";
    on one H200, SmolLM2's step 12 took 102 s). rl-console compiles with dynamic shapes and
    one decoder layer for all: no step after the first compiles for a new length, and every
    step reports its rewards."""
    home = tmp_path / "home"
    args = ["--max-steps", "4", "--set", "trl.torch_compile=true", "--set", "sampling.max_tokens=16",
            "--set", "run.checkpoint_every=0", "--set", "telemetry.probe_every=0"]
    out = subprocess.run(RLC + ["run", "--headless", "--json", *args], capture_output=True, text=True, timeout=600,
                         env=backend_env(home, TORCH_LOGS="recompiles"))
    assert out.returncode == 0, out.stderr[-3000:]
    events = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    said = [e["message"] for e in events if e["kind"] == "progress"]
    assert any("dynamic shapes: a new sequence length does not compile again" in m for m in said), said[-6:]
    steps = [e for e in events if e["kind"] == "step_metrics"]
    assert [e["step"] for e in steps] == [1, 2, 3, 4]
    assert all(set(e["rewards_by_function"]) == {"char_match", "clean_stop"} for e in steps), steps
    assert len({e["completion_length_mean"] for e in steps}) > 1  # the lengths moved: a static compile would not cover them
    assert not [r for r in _recompiles(home) if "size mismatch" in r], _recompiles(home)
    # each step says how much of it was compiling: step 1 did, within its train time; later ones barely
    first, later = steps[0]["times"], [e["times"] for e in steps[1:]]
    assert 0.5 < first["compile"] <= first["train"], first
    assert sum(t["compile"] for t in later) < first["compile"] / 2, later
